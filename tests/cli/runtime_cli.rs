//! `kiln unshare` and `kiln info` for real. As root, the checks run as two
//! unprivileged users the test creates: one with a subuid/subgid range (full
//! map), one without (single-id map and its warning). Otherwise they run as
//! the calling user, whatever its setup.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FULL_USER: &str = "kilnrt";
const SINGLE_USER: &str = "kilnrt1";

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A copy of the kiln binary that any user can run.
fn kiln_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("kiln-cli-test").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, exe)
}

fn kiln_as(user: Option<&str>, exe: &Path, args: &[&str]) -> Output {
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(args).current_dir("/").env_remove("KILN_USERNS").env_remove("RUST_LOG");
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn map_lines(stdout: &str) -> Vec<Vec<u64>> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().filter_map(|w| w.parse().ok()).collect::<Vec<u64>>())
        .filter(|f| f.len() == 3)
        .collect()
}

/// Creates `name` once, with a subuid/subgid range or with none at all.
fn ensure_user(name: &str, with_range: bool) {
    use kiln_integration::users::{ensure_user, SubIds};
    ensure_user(name, if with_range { SubIds::Range } else { SubIds::None });
}

fn uid_of(user: &str) -> u64 {
    text(&Command::new("id").args(["-u", user]).output().unwrap().stdout).trim().parse().unwrap()
}

#[test]
fn unshare_with_a_subuid_range_gives_the_full_map() {
    if !is_root() {
        eprintln!("skipped: creating the test user needs root");
        return;
    }
    ensure_user(FULL_USER, true);
    let (_dir, exe) = kiln_copy();
    let out =
        kiln_as(Some(FULL_USER), &exe, &["unshare", "sh", "-c", "id -u; echo $KILN_UNSHARE; cat /proc/self/uid_map"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("0"), "uid 0 inside");
    assert_eq!(lines.next(), Some("1"), "KILN_UNSHARE=1");
    let maps = map_lines(&stdout);
    assert_eq!(maps[0], vec![0, uid_of(FULL_USER), 1], "0 is the caller");
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let first = subuid.lines().find_map(|l| l.strip_prefix(&format!("{FULL_USER}:"))).unwrap();
    let start: u64 = first.split(':').next().unwrap().parse().unwrap();
    assert_eq!(maps[1][..2], [1, start], "1.. is the first subuid range");
    assert!(!text(&out.stderr).contains("single-id"), "no fallback warning: {}", text(&out.stderr));

    // Files of other owners can be made inside, and show their ids there.
    let out = kiln_as(
        Some(FULL_USER),
        &exe,
        &["unshare", "sh", "-c", "f=$(mktemp); chown 4242:4243 $f && stat -c %u:%g $f; rm -f $f"],
    );
    assert_eq!(text(&out.stdout).trim(), "4242:4243", "{}", text(&out.stderr));

    // The exit code comes back.
    let out = kiln_as(Some(FULL_USER), &exe, &["unshare", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn unshare_without_a_range_falls_back_to_a_single_id_with_a_warning() {
    if !is_root() {
        eprintln!("skipped: creating the test user needs root");
        return;
    }
    ensure_user(SINGLE_USER, false);
    let (_dir, exe) = kiln_copy();
    let out = kiln_as(Some(SINGLE_USER), &exe, &["unshare", "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().next(), Some("0"));
    assert_eq!(map_lines(&stdout), vec![vec![0, uid_of(SINGLE_USER), 1]]);
    assert_eq!(stderr.matches("single-id map").count(), 1, "one warning: {stderr}");
    // The suggested range is the first one no user has (other test users
    // hold 100000-…), the same for uids and gids, and names the user.
    let range =
        stderr.split("usermod --add-subuids ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a range");
    assert!(stderr.contains(&format!("--add-subgids {range} {SINGLE_USER}")), "{stderr}");
}

#[test]
fn info_reports_the_environment() {
    let (_dir, exe) = kiln_copy();
    let mut runs = vec![(None, if is_root() { "root" } else { "" })];
    if is_root() {
        ensure_user(FULL_USER, true);
        ensure_user(SINGLE_USER, false);
        runs.push((Some(FULL_USER), "full subuid/subgid map"));
        runs.push((Some(SINGLE_USER), "single-id map"));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    for (user, mode) in runs {
        let out = kiln_as(user, &exe, &["info"]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains(release.trim()), "{stdout}");
        let line = |key: &str| {
            stdout.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in {stdout}")).to_string()
        };
        assert!(line("user namespace:").contains(mode), "{stdout}");
        for key in ["uid map:", "gid map:", "max_user_namespaces:", "overlay in user namespace:", "whiteouts", "store:"]
        {
            line(key);
        }
        if user == Some(FULL_USER) {
            assert!(
                line("uid map:").starts_with(&format!("uid map:                    0 {} 1, 1 ", uid_of(FULL_USER))),
                "{stdout}"
            );
        }
        // This kernel (>= 5.11) mounts overlay in a user namespace and allows whiteouts.
        assert!(line("overlay in user namespace:").ends_with("yes"), "{stdout}");
        assert!(line("whiteouts").ends_with("yes"), "{stdout}");
    }
}

#[test]
fn unshare_forwards_sigterm_to_the_command() {
    if !is_root() {
        eprintln!("skipped: creating the test user needs root");
        return;
    }
    ensure_user(FULL_USER, true);
    let (_dir, exe) = kiln_copy();
    let mut runuser = Command::new("runuser")
        .args(["-u", FULL_USER, "--"])
        .arg(&exe)
        .args(["unshare", "sleep", "4711"])
        .current_dir("/")
        .spawn()
        .unwrap();
    // The front-end is runuser's child; the command is the front-end's.
    let children = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let mut front = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        front = children(runuser.id()).first().copied().filter(|f| !children(*f).is_empty());
        if front.is_some() {
            break;
        }
    }
    let front = front.expect("kiln unshare started its command");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(front as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = runuser.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "the command died of the forwarded SIGTERM");
}
