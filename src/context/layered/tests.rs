use super::*;
use std::os::unix::fs::symlink;

fn view(layers: &[&Path]) -> LayerView {
    LayerView::new(layers.iter().map(|p| p.to_path_buf()).collect(), XattrPrefix::user())
}

fn rels(v: &LayerView, word: &str) -> Vec<String> {
    v.resolve_source(word).unwrap().into_iter().map(|m| m.rel.to_string()).collect()
}

fn walked(v: &LayerView, word: &str) -> Vec<(String, String)> {
    let m = v.resolve_source(word).unwrap().remove(0);
    v.walk(&m)
        .unwrap()
        .into_iter()
        .map(|e| {
            let content = if e.metadata.is_file() { fs::read_to_string(&e.host).unwrap() } else { String::new() };
            (e.rel.to_string(), content)
        })
        .collect()
}

/// An xattr whiteout, as the applier writes one where mknod is refused.
fn whiteout(dir: &Path, name: &str) {
    let p = dir.join(name);
    fs::write(&p, "").unwrap();
    xattr::set(&p, "user.overlay.whiteout", b"y").unwrap();
    xattr::set(dir, "user.overlay.opaque", b"x").unwrap();
}

#[test]
fn upper_layers_win_and_directories_merge() {
    let (lo, hi) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(lo.path().join("d")).unwrap();
    fs::write(lo.path().join("d/a"), "lo-a").unwrap();
    fs::write(lo.path().join("d/b"), "lo-b").unwrap();
    fs::create_dir_all(hi.path().join("d")).unwrap();
    fs::write(hi.path().join("d/b"), "hi-b").unwrap();
    fs::write(hi.path().join("d/c"), "hi-c").unwrap();
    let v = view(&[hi.path(), lo.path()]);
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(walked(&v, "d"), pairs(&[("a", "lo-a"), ("b", "hi-b"), ("c", "hi-c")]));
    assert_eq!(walked(&v, "/d/b"), pairs(&[("", "hi-b")]));
    assert_eq!(rels(&v, "d/[ab]"), vec!["d/a", "d/b"]);
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_entries() {
    let (lo, hi) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in ["gone", "opq", "keep"] {
        fs::create_dir_all(lo.path().join(d)).unwrap();
        fs::write(lo.path().join(d).join("old"), "old").unwrap();
    }
    fs::create_dir_all(hi.path().join("keep")).unwrap();
    whiteout(&hi.path().join("keep"), "old");
    whiteout(hi.path(), "gone");
    fs::create_dir_all(hi.path().join("opq")).unwrap();
    fs::write(hi.path().join("opq/new"), "new").unwrap();
    xattr::set(hi.path().join("opq"), "user.overlay.opaque", b"y").unwrap();
    let v = view(&[hi.path(), lo.path()]);
    assert!(matches!(v.resolve_source("gone/old"), Err(ContextError::SourceNotFound { .. })));
    assert!(matches!(v.resolve_source("keep/old"), Err(ContextError::SourceNotFound { .. })));
    assert!(matches!(v.resolve_source("opq/old"), Err(ContextError::SourceNotFound { .. })));
    assert_eq!(walked(&v, "opq"), vec![("new".to_string(), "new".to_string())]);
    assert!(walked(&v, "keep").is_empty());
    assert_eq!(rels(&v, "*"), vec!["keep", "opq"]);
}

#[test]
fn a_file_hides_a_lower_directory() {
    let (lo, hi) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(lo.path().join("x")).unwrap();
    fs::write(lo.path().join("x/secret"), "s").unwrap();
    fs::write(hi.path().join("x"), "file").unwrap();
    let v = view(&[hi.path(), lo.path()]);
    assert!(v.resolve_source("x/secret").is_err());
    assert_eq!(walked(&v, "x"), vec![(String::new(), "file".to_string())]);
}

#[test]
fn symlinks_resolve_inside_the_view() {
    let (lo, hi, host) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(lo.path().join("real")).unwrap();
    fs::write(lo.path().join("real/f"), "inside").unwrap();
    fs::write(host.path().join("f"), "host").unwrap();
    symlink("/real", hi.path().join("abs")).unwrap();
    symlink("../../../real/f", hi.path().join("rel")).unwrap();
    symlink(host.path(), hi.path().join("out")).unwrap();
    // A lower layer's symlink under an upper layer's directory is hidden, never followed.
    fs::create_dir_all(hi.path().join("d")).unwrap();
    symlink(host.path(), lo.path().join("d2")).unwrap();
    fs::create_dir_all(hi.path().join("d2")).unwrap();
    let v = view(&[hi.path(), lo.path()]);
    assert_eq!(walked(&v, "abs/f"), vec![(String::new(), "inside".to_string())]);
    assert_eq!(walked(&v, "rel"), vec![(String::new(), "inside".to_string())]);
    assert!(v.resolve_source("out/f").is_err());
    assert!(v.resolve_source("d2/f").is_err());
    assert!(walked(&v, "d2").is_empty());
    // A symlink inside a copied directory is listed, not followed.
    let m = v.resolve_source(".").unwrap().remove(0);
    let out = v.walk(&m).unwrap();
    let link = out.iter().find(|e| e.rel == "out").unwrap();
    assert_eq!(link.link_target.as_deref(), Some(host.path()));
}

#[test]
fn materialize_copies_only_the_named_subtree() {
    let (lo, hi, dest) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fs::create_dir_all(lo.path().join("out/sub")).unwrap();
    fs::write(lo.path().join("out/sub/a"), "a").unwrap();
    fs::write(lo.path().join("out/gone"), "g").unwrap();
    fs::write(lo.path().join("elsewhere"), "e").unwrap();
    fs::create_dir_all(hi.path().join("out")).unwrap();
    whiteout(&hi.path().join("out"), "gone");
    symlink("sub/a", hi.path().join("out/link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(lo.path().join("out/sub"), fs::Permissions::from_mode(0o555)).unwrap();
    let v = view(&[hi.path(), lo.path()]);
    v.materialize("/out/", dest.path()).unwrap();
    let d = dest.path();
    assert_eq!(fs::read_to_string(d.join("out/sub/a")).unwrap(), "a");
    assert_eq!(fs::read_link(d.join("out/link")).unwrap(), Path::new("sub/a"));
    assert!(!d.join("out/gone").exists() && !d.join("elsewhere").exists());
    assert_eq!(fs::metadata(d.join("out/sub")).unwrap().permissions().mode() & 0o777, 0o555);
}

#[test]
fn loops_end() {
    let l = tempfile::tempdir().unwrap();
    symlink("b", l.path().join("a")).unwrap();
    symlink("a", l.path().join("b")).unwrap();
    let v = view(&[l.path()]);
    assert!(matches!(v.resolve_source("a"), Err(ContextError::SymlinkLoop { .. })));
}
