//! The harness itself: tools run unprivileged in a private sandbox, and the
//! layer reader agrees with the system `tar`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use kiln_integration::*;

#[test]
fn commands_run_as_an_unprivileged_user_in_a_private_sandbox() {
    let sb = Sandbox::new();
    let out = sb.sh("id -u; id -g; echo $HOME; echo $XDG_DATA_HOME; pwd");
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let (uid, gid) = sb.ids();
    assert_eq!(lines[0], uid.to_string());
    assert_eq!(lines[1], gid.to_string());
    assert_ne!(lines[0], "0", "kiln must not run as root in these tests");
    assert!(lines[2].starts_with(sb.root().to_str().unwrap()), "HOME is outside the sandbox: {}", lines[2]);
    assert!(lines[3].starts_with(sb.root().to_str().unwrap()), "XDG_DATA_HOME is outside the sandbox");
    assert_eq!(lines[4], sb.root().to_str().unwrap());

    let md = std::fs::metadata(sb.root()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o700, "the sandbox must be private");
    assert_eq!((md.uid(), md.gid()), (uid, gid));

    // Files the harness writes belong to the user, who can read and replace them.
    sb.write("ctx/a/b.txt", "x");
    sb.sh("cat ctx/a/b.txt && echo y > ctx/a/b.txt && mkdir ctx/a/c").ok();
    assert_eq!(std::fs::read_to_string(sb.path("ctx/a/b.txt")).unwrap(), "y\n");

    if sb.drops_privileges() {
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
        let subgid = std::fs::read_to_string("/etc/subgid").unwrap();
        assert_eq!(subuid.lines().filter(|l| l.starts_with("kilntest:")).count(), 1, "{subuid}");
        assert_eq!(subgid.lines().filter(|l| l.starts_with("kilntest:")).count(), 1, "{subgid}");
        // The user really cannot read what is private to root.
        let out = sb.sh("cat /etc/shadow");
        assert!(!out.success(), "the test user can read /etc/shadow: {}", out.transcript());
        sb.sh("test -x bin/kiln").ok();
    }
}

#[test]
fn the_layer_reader_agrees_with_system_tar() {
    let sb = Sandbox::new();
    sb.write_mode("src/d/exec.sh", "#!/bin/sh\n", 0o751);
    sb.write("src/d/plain", "plain\n");
    sb.symlink("plain", "src/d/link");
    sb.mkdir("src/d/empty");
    sb.chmod("src/d/empty", 0o1777);
    sb.tool("tar", &["-C", "src", "-czf", "t.tar.gz", "d"]).ok();
    let listing = sb.tool("tar", &["-tzvf", "t.tar.gz"]);
    listing.ok();
    let entries = tar_entries(&decompress_any(&std::fs::read(sb.path("t.tar.gz")).unwrap()));
    let names: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
    for line in listing.stdout.lines() {
        let name = line.split_whitespace().nth(5).unwrap().trim_end_matches('/');
        assert!(names.contains(&name.to_string()), "{name} missing from {names:?}");
    }
    let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(get("d/exec.sh").mode, 0o751);
    assert_eq!(get("d/empty").mode, 0o1777);
    assert_eq!(get("d/empty").kind, Kind::Dir);
    assert_eq!(get("d/link").kind, Kind::Symlink);
    assert_eq!(get("d/link").link.as_deref(), Some("plain"));
    assert_eq!(get("d/plain").data, b"plain\n");
}
