//! A store on a full disk: kiln's store on a small tmpfs (mounted as root,
//! owned by the test user), a build whose layer does not fit. The error says
//! the disk is full and names the store; the images built before are intact
//! and run; what the failed build wrote is gone once `system prune` and
//! `system check --repair` ran, and the space is free again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_integration::{is_root, Sandbox, RUN_BASE};

/// Unmounts the tmpfs on drop, failed test or not (before the sandbox goes).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes free on the file system holding `path`.
fn avail(path: &Path) -> u64 {
    let out = Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().expect("run df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

/// Regular files under `dir` (recursively), as paths.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(files_under(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn a_full_disk_fails_the_build_cleanly_and_frees_its_space() {
    if !is_root() {
        eprintln!("skipping: mounting the small tmpfs store needs root (CI runs the tests as root)");
        return;
    }
    let sb = Sandbox::new();
    sb.busybox_context();
    let small = sb.mkdir("small");
    let (uid, gid) = sb.ids();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size=40m,mode=0700,uid={uid},gid={gid}"), "kiln-disk-full"])
        .arg(&small)
        .status()
        .expect("run mount");
    assert!(st.success(), "mount a tmpfs on {}", small.display());
    let _mount = Mount(small.clone());
    let store = small.join("store");
    let root = store.to_str().unwrap();
    let ctx = sb.ctx();
    let build = |file: &str, tag: &str| {
        sb.kiln_raw(
            &["--root", root, "build", "-f", &format!("{}/{file}", ctx.display()), "-t", tag, ctx.to_str().unwrap()],
            None,
            &[],
        )
    };

    sb.write("ctx/early.Dockerfile", format!("{RUN_BASE}RUN echo early > /early\n"));
    build("early.Dockerfile", "early").ok();
    let before = avail(&small);

    // Incompressible data that fits once (in the RUN's upper dir) but not
    // twice (upper dir plus the layer blob).
    let mb = (before * 6 / 10) >> 20;
    sb.write(
        "ctx/full.Dockerfile",
        format!("FROM early\nRUN dd if=/dev/urandom of=/fill bs=1M count={mb} 2>/dev/null && echo wrote\n"),
    );
    let full = build("full.Dockerfile", "full");
    assert!(!full.success(), "a {mb} MiB layer fit into {before} free bytes?\n{}", full.transcript());
    let err = full.stderr.to_lowercase();
    assert!(
        err.contains("no space left on device") || err.contains("disk is full"),
        "the error does not say the disk is full:\n{}",
        full.transcript()
    );
    assert!(full.stderr.contains(root), "the error does not name the store {root}:\n{}", full.transcript());

    // The earlier image is intact and runs.
    let img = kiln_integration::read_image(&store, "early:latest");
    assert_eq!(img.file_str("early"), "early\n");
    let ran = sb.kiln_raw(&["--root", root, "run", "early", "cat", "/early"], None, &[]);
    ran.ok();
    assert_eq!(ran.stdout, "early\n", "{}", ran.transcript());

    // Cleanup frees what the failed build wrote: no partial blob, no scratch dir.
    sb.kiln_raw(&["--root", root, "system", "prune", "-f"], None, &[]).ok();
    let repair = sb.kiln_raw(&["--root", root, "system", "check", "--repair"], None, &[]);
    repair.ok();
    sb.kiln_raw(&["--root", root, "system", "check"], None, &[]).ok();
    let partial: Vec<PathBuf> = files_under(&store.join("kiln/tmp"))
        .into_iter()
        .filter(|p| fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    assert!(partial.is_empty(), "temp files left in the store: {partial:?}");
    let after = avail(&small);
    assert!(after + (1 << 20) >= before, "{} bytes free after cleanup, {before} before the failed build", after);
    // And the store still builds.
    build("early.Dockerfile", "early2").ok();
}
