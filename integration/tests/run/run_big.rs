//! Size and count: a 64 MiB file and 20,000 small files made by RUN come out
//! whole, under each storage driver.

use kiln_integration::*;

const BIG: usize = 64 << 20;
const MANY: usize = 20_000;

fn dockerfile() -> String {
    format!(
        "{RUN_BASE}\
RUN dd if=/dev/zero of=/big bs=1M count=64 && printf tail >> /big
RUN mkdir /many && cd /many && seq 1 {MANY} | xargs touch && echo last > /many/{MANY}
"
    )
}

fn check(driver: &str) {
    let sb = Sandbox::new();
    sb.busybox_context();
    if driver == "fuse-overlayfs" {
        require_fuse(&sb);
    }
    let started = std::time::Instant::now();
    let (_, img) = sb.build_with(&dockerfile(), "big", &["--storage-driver", driver]);
    eprintln!("{driver}: built in {:?}", started.elapsed());

    let big = img.file("big");
    assert_eq!(big.len(), BIG + 4, "{driver}: size of /big");
    let mut expected = vec![0u8; BIG];
    expected.extend_from_slice(b"tail");
    assert!(big == expected, "{driver}: /big is not 64 MiB of zeros and `tail`");

    let many = img.layer_by("mkdir /many");
    let names: std::collections::BTreeSet<String> =
        many.entries.iter().filter_map(|e| e.path.strip_prefix("many/").map(str::to_string)).collect();
    let want: std::collections::BTreeSet<String> = (1..=MANY).map(|i| i.to_string()).collect();
    assert_eq!(names.len(), MANY, "{driver}: entries under /many");
    assert!(names == want, "{driver}: /many does not hold exactly 1..{MANY}");
    assert_eq!(img.file_str(&format!("many/{MANY}")), "last\n", "{driver}");
    assert_eq!(img.file(&format!("many/{}", MANY / 2)), b"", "{driver}");
    // Only the files the step made, plus the directory itself (stray
    // top-level whiteouts are the fuse-overlayfs bug of
    // run_layers::no_stray_whiteouts_under_fuse_overlayfs, not counted twice).
    let made = many.entries.iter().filter(|e| !e.path.starts_with(".wh.")).count();
    assert_eq!(made, MANY + 1, "{driver}: {:?}", many.entries.iter().take(5).map(|e| &e.path).collect::<Vec<_>>());
}

#[test]
fn big_file_and_many_files_under_overlay() {
    check("overlay");
}

// Slow: 20,000 file creations through FUSE take 30 s or more on two busy cores.
#[test]
#[cfg_attr(not(kiln_slow), ignore = "slow; set KILN_SLOW_TESTS=1 to run")]
fn big_file_and_many_files_under_fuse_overlayfs() {
    check("fuse-overlayfs");
}

// Slow: the copy driver snapshots and compares the whole tree.
#[test]
#[cfg_attr(not(kiln_slow), ignore = "slow; set KILN_SLOW_TESTS=1 to run")]
fn big_file_and_many_files_under_vfs() {
    check("vfs");
}
