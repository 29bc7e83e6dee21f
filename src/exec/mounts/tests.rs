use super::*;
use crate::dockerfile::ast::MountKind;

/// A typed mount as the planner makes it from `opts`.
fn mount(kind: MountKind, opts: &str) -> Mount {
    crate::plan::mounts::typed_for_tests(kind, opts).unwrap()
}

struct Fixture {
    store: tempfile::TempDir,
    scratch: tempfile::TempDir,
    context: tempfile::TempDir,
    secrets: HashMap<String, SecretSource>,
    ssh: HashMap<String, PathBuf>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            store: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
            context: tempfile::tempdir().unwrap(),
            secrets: HashMap::new(),
            ssh: HashMap::new(),
        }
    }
    fn prepare(&self, mounts: &[Mount]) -> Result<Prepared, MountError> {
        let dir = self.context.path();
        let open = || BuildContext::from_dir(dir, BuildContext::find_ignore_file(dir, None).as_deref()).unwrap();
        let from = |from: &CopyFrom, _source: &str| -> Result<Arc<BuildContext>, String> {
            if *from == CopyFrom::Image("stage".into()) {
                Ok(Arc::new(open()))
            } else {
                Err("no such stage".into())
            }
        };
        let context = open();
        let src = MountSources {
            store_root: self.store.path(),
            scratch: self.scratch.path(),
            context: &context,
            from: &from,
            secrets: &self.secrets,
            ssh: &self.ssh,
        };
        prepare(mounts, &src, "/work")
    }
}

#[test]
fn cache_ids_are_one_path_component() {
    let root = Path::new("/s");
    assert_eq!(cache_mount_dir(root, "/root/.cache"), Path::new("/s/kiln/cache-mounts/%2Froot%2F.cache"));
    assert_eq!(cache_mount_dir(root, ".."), Path::new("/s/kiln/cache-mounts/%2E."));
    assert_eq!(cache_mount_dir(root, "go-build"), Path::new("/s/kiln/cache-mounts/go-build"));
}

#[test]
fn cache_mounts_persist_per_id_with_owner_and_mode() {
    let f = Fixture::new();
    let p = f.prepare(&[mount(MountKind::Cache, "target=cache,mode=0700")]).unwrap();
    let m = &p.mounts[0];
    assert_eq!(m.target, "/work/cache");
    assert_eq!(m.source, cache_mount_dir(f.store.path(), "/work/cache"));
    assert!(!m.readonly);
    assert_eq!(fs::metadata(&m.source).unwrap().permissions().mode() & 0o7777, 0o700);
    fs::write(m.source.join("kept"), "1").unwrap();
    drop(p);
    let again = f.prepare(&[mount(MountKind::Cache, "target=/elsewhere,id=/work/cache,ro")]).unwrap();
    assert!(again.mounts[0].source.join("kept").exists());
    assert!(again.mounts[0].readonly);
}

#[test]
fn a_locked_private_cache_gives_a_fresh_dir() {
    let f = Fixture::new();
    let first = f.prepare(&[mount(MountKind::Cache, "target=/c,sharing=locked")]).unwrap();
    fs::write(first.mounts[0].source.join("x"), "1").unwrap();
    let second = f.prepare(&[mount(MountKind::Cache, "target=/c,sharing=private")]).unwrap();
    assert_ne!(second.mounts[0].source, first.mounts[0].source);
    assert!(!second.mounts[0].source.join("x").exists());
    drop(second);
    drop(first);
    let third = f.prepare(&[mount(MountKind::Cache, "target=/c,sharing=private")]).unwrap();
    assert!(third.mounts[0].source.join("x").exists());
    // Ids that look like lock files or share a stem get their own dirs and locks.
    let _a = f.prepare(&[mount(MountKind::Cache, "target=/x,id=a.b,sharing=locked")]).unwrap();
    let b = f.prepare(&[mount(MountKind::Cache, "target=/x,id=a,sharing=private")]).unwrap();
    assert_eq!(b.mounts[0].source, cache_mount_dir(f.store.path(), "a"));
}

#[test]
fn binds_leave_out_what_the_ignore_file_excludes() {
    let f = Fixture::new();
    let c = f.context.path();
    fs::create_dir_all(c.join("src/sub")).unwrap();
    fs::write(c.join("src/a"), "a").unwrap();
    fs::write(c.join("src/secret.key"), "k").unwrap();
    fs::write(c.join("src/sub/b.key"), "b").unwrap();
    fs::write(c.join("src/sub/keep.key"), "keep").unwrap();
    fs::set_permissions(c.join("src/a"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(c.join(".dockerignore"), "**/*.key\n!src/sub/keep.key\n").unwrap();
    for opts in ["target=/s,source=src", "target=/s,source=src,rw", "target=/s,from=stage,source=src"] {
        let p = f.prepare(&[mount(MountKind::Bind, opts)]).unwrap();
        let m = &p.mounts[0].source;
        assert!(m.starts_with(f.scratch.path()), "{opts}: a filtered view, not the context itself");
        assert_eq!(fs::read_to_string(m.join("a")).unwrap(), "a", "{opts}");
        assert_eq!(fs::metadata(m.join("a")).unwrap().permissions().mode() & 0o7777, 0o640, "{opts}");
        assert_eq!(fs::read_to_string(m.join("sub/keep.key")).unwrap(), "keep", "{opts}");
        assert!(!m.join("secret.key").exists(), "{opts}: an ignored file is not in the mount");
        assert!(!m.join("sub/b.key").exists(), "{opts}");
    }
    // An ignored source cannot be mounted, as it cannot be copied.
    let err = f.prepare(&[mount(MountKind::Bind, "target=/s,source=src/secret.key")]).err().unwrap();
    assert!(err.to_string().contains("excluded"), "{err}");
    // A single visible file is mounted as that file.
    let p = f.prepare(&[mount(MountKind::Bind, "target=/s,source=src/a")]).unwrap();
    assert_eq!(fs::read_to_string(&p.mounts[0].source).unwrap(), "a");
}

#[test]
fn binds_are_read_only_in_the_context_and_rw_ones_are_copies() {
    let f = Fixture::new();
    fs::create_dir(f.context.path().join("src")).unwrap();
    fs::write(f.context.path().join("src/a"), "a").unwrap();
    let p = f.prepare(&[mount(MountKind::Bind, "target=/s,source=src")]).unwrap();
    assert_eq!(p.mounts[0].source, f.context.path().canonicalize().unwrap().join("src"));
    assert!(p.mounts[0].readonly);
    let rw = f.prepare(&[mount(MountKind::Bind, "target=/s,from=stage,rw")]).unwrap();
    assert!(!rw.mounts[0].readonly);
    assert!(rw.mounts[0].source.starts_with(f.scratch.path()));
    assert_eq!(fs::read_to_string(rw.mounts[0].source.join("src/a")).unwrap(), "a");
    assert!(f
        .prepare(&[mount(MountKind::Bind, "target=/s,source=../..")])
        .is_ok_and(|p| p.mounts[0].source == f.context.path().canonicalize().unwrap()));
    std::os::unix::fs::symlink("/etc", f.context.path().join("out")).unwrap();
    assert!(f.prepare(&[mount(MountKind::Bind, "target=/s,source=out")]).is_err());
    assert!(matches!(f.prepare(&[mount(MountKind::Bind, "target=/s,from=nope")]), Err(MountError::From(_))));
}

#[test]
fn secrets_become_files_or_env_and_missing_ones_are_skipped_unless_required() {
    let mut f = Fixture::new();
    let file = f.context.path().join("token");
    fs::write(&file, "s3cret").unwrap();
    f.secrets.insert("tok".into(), SecretSource::File(file));
    let p = f.prepare(&[mount(MountKind::Secret, "id=tok"), mount(MountKind::Secret, "id=tok,env=TOKEN")]).unwrap();
    assert_eq!(p.mounts.len(), 1);
    assert_eq!(p.mounts[0].target, "/run/secrets/tok");
    assert_eq!(fs::read_to_string(&p.mounts[0].source).unwrap(), "s3cret");
    assert_eq!(fs::metadata(&p.mounts[0].source).unwrap().permissions().mode() & 0o777, 0o400);
    assert_eq!(p.env, vec!["TOKEN=s3cret".to_string()]);
    assert!(f.prepare(&[mount(MountKind::Secret, "id=other")]).unwrap().mounts.is_empty());
    assert!(matches!(f.prepare(&[mount(MountKind::Secret, "id=other,required")]), Err(MountError::MissingSecret(_))));
}

#[test]
fn ssh_sets_the_agent_socket() {
    let mut f = Fixture::new();
    f.ssh.insert("default".into(), PathBuf::from("/tmp/agent.sock"));
    let p = f.prepare(&[mount(MountKind::Ssh, "")]).unwrap();
    assert_eq!(p.mounts[0].target, "/run/buildkit/ssh_agent.0");
    assert_eq!(p.env, vec!["SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".to_string()]);
    assert!(f.prepare(&[mount(MountKind::Ssh, "id=other")]).unwrap().mounts.is_empty());
    assert!(f.prepare(&[mount(MountKind::Ssh, "id=other,required=true")]).is_err());
}

#[test]
fn tmpfs_sizes() {
    let f = Fixture::new();
    let p = f.prepare(&[mount(MountKind::Tmpfs, "target=/t,size=64m")]).unwrap();
    assert_eq!(p.mounts[0].kind, kiln_runtime::MountKind::Tmpfs { size: Some(64 << 20) });
}

#[test]
fn secret_and_ssh_flags() {
    assert_eq!(parse_secret("id=a,src=/f").unwrap(), ("a".into(), SecretSource::File("/f".into())));
    assert_eq!(parse_secret("id=a,env=V").unwrap(), ("a".into(), SecretSource::Env("V".into())));
    assert_eq!(parse_secret("id=A").unwrap(), ("A".into(), SecretSource::Env("A".into())));
    assert_eq!(parse_secret("id=a,type=file").unwrap(), ("a".into(), SecretSource::File("a".into())));
    assert!(parse_secret("src=/f").is_err());
    assert!(parse_secret("id=a,bogus=1").is_err());
    assert_eq!(parse_ssh("default=/s.sock").unwrap(), ("default".into(), PathBuf::from("/s.sock")));
    assert!(parse_ssh("=/x").is_err());
}
