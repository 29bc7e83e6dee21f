use super::*;
use crate::spec::MountSpec;

fn spec(root: &Path) -> RunSpec {
    RunSpec::new(root, vec!["true".into()])
}

#[test]
fn plan_has_the_standard_mounts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(&spec(dir.path()));
    let targets: Vec<&str> = plan.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(&targets[..3], ["/proc", "/sys", "/dev"]);
    for node in DEV_NODES {
        let m = plan.iter().find(|m| m.target == format!("/dev/{node}")).unwrap();
        assert!(matches!(&m.kind, Kind::Bind { source, .. } if *source == Path::new("/dev").join(node)));
        assert!(!m.in_image, "/dev/{node} lives in the /dev tmpfs");
    }
    let sys = &plan[1];
    assert!(sys.readonly && matches!(&sys.kind, Kind::Bind { recursive: true, .. }));
    let pts = plan.iter().find(|m| m.target == "/dev/pts").unwrap();
    assert!(
        matches!(&pts.kind, Kind::Fs { fstype: "devpts", data, .. } if data.contains("newinstance") && data.contains("ptmxmode=0666"))
    );
    let ptmx = plan.iter().find(|m| m.target == "/dev/ptmx").unwrap();
    assert_eq!(ptmx.kind, Kind::Symlink { to: "pts/ptmx" });
    assert!(plan.iter().any(|m| m.target == "/dev/shm" && matches!(m.kind, Kind::Fs { fstype: "tmpfs", .. })));
    // /dev/pts comes after /dev, /dev/ptmx after /dev/pts.
    let pos = |t: &str| targets.iter().position(|x| *x == t).unwrap();
    assert!(pos("/dev") < pos("/dev/pts") && pos("/dev/pts") < pos("/dev/ptmx"));
    if Path::new("/etc/hosts").exists() {
        let hosts = plan.iter().find(|m| m.target == "/etc/hosts").unwrap();
        assert!(hosts.readonly && hosts.in_image && hosts.optional && hosts.target_type == TargetType::File);
    }
}

#[test]
fn resolv_and_hosts_only_when_asked_and_extra_binds_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path());
    s.bind_resolv_hosts = false;
    s.mounts.push(MountSpec {
        source: dir.path().to_path_buf(),
        target: "/cache".into(),
        readonly: true,
        kind: Default::default(),
    });
    let plan = plan(&s);
    assert!(!plan.iter().any(|m| m.target.starts_with("/etc")));
    let last = plan.last().unwrap();
    assert_eq!(last.target, "/cache");
    assert!(last.readonly && last.in_image && last.target_type == TargetType::Dir);
}

#[test]
fn placeholders_are_created_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("proc")).unwrap();
    std::fs::create_dir(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let s = spec(root);
    let expected: Vec<PathBuf> = ["/sys", "/dev"]
        .into_iter()
        .chain(Path::new("/etc/resolv.conf").exists().then_some("/etc/resolv.conf"))
        .map(PathBuf::from)
        .collect();
    assert_eq!(placeholders(&s), expected);
    let created = prepare(&s).unwrap();
    assert_eq!(created.iter().map(|c| c.path.clone()).collect::<Vec<_>>(), expected);
    assert!(root.join("sys").is_dir() && root.join("dev").is_dir());
    assert!(placeholders(&s).is_empty());
    cleanup(&s, &created);
    assert!(!root.join("sys").exists() && !root.join("dev").exists() && !root.join("etc/resolv.conf").exists());
    assert!(root.join("proc").is_dir() && root.join("etc/hosts").is_file(), "the image's own files stay");
}

#[test]
fn placeholders_never_leave_the_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = dir.path();
    // /etc is an absolute symlink: it must resolve inside the rootfs.
    std::os::unix::fs::symlink(outside.path(), root.join("etc")).unwrap();
    let mut s = spec(root);
    s.bind_resolv_hosts = true;
    let created = prepare(&s).unwrap();
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing created outside");
    cleanup(&s, &created);
}

#[test]
fn a_filled_placeholder_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = spec(root);
    let created = prepare(&s).unwrap();
    std::fs::write(root.join("dev/keep"), "x").unwrap();
    cleanup(&s, &created);
    assert!(root.join("dev/keep").exists());
    assert!(!root.join("sys").exists());
}

#[test]
fn tmpfs_mounts_are_fresh_filesystems_with_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path());
    let kind = crate::spec::MountKind::Tmpfs { size: Some(1 << 20) };
    s.mounts.push(MountSpec { source: PathBuf::new(), target: "/scratch".into(), readonly: false, kind });
    let last = plan(&s).pop().unwrap();
    assert_eq!(last.target, "/scratch");
    assert!(last.in_image && last.target_type == TargetType::Dir);
    assert!(matches!(last.kind, Kind::Fs { fstype: "tmpfs", ref data, .. } if data == "size=1048576"));
}

#[test]
fn mount_specs_without_a_kind_are_binds() {
    let json = r#"{"source":"/x","target":"/y","readonly":false}"#;
    let m: MountSpec = serde_json::from_str(json).unwrap();
    assert_eq!(m.kind, crate::spec::MountKind::Bind);
}
