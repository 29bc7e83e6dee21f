//! Tests of the build context on real directories and archives.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use bstr::ByteSlice;

use super::*;

fn write(root: &Path, rel: &str, body: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

fn ctx_with(root: &Path, ignore: &str) -> BuildContext {
    write(root, ".dockerignore", ignore);
    let file = BuildContext::find_ignore_file(root, None);
    BuildContext::from_dir(root, file.as_deref()).unwrap()
}

fn rels(ms: &[SourceMatch]) -> Vec<&str> {
    ms.iter().map(|m| m.rel.to_str().unwrap()).collect()
}

fn walked(ctx: &BuildContext, word: &str) -> Vec<String> {
    let ms = ctx.resolve_source(word).unwrap();
    assert_eq!(ms.len(), 1, "{word}");
    ctx.walk(&ms[0]).unwrap().into_iter().map(|e| e.rel.to_str().unwrap().to_string()).collect()
}

/// A small project tree used by several tests.
fn project() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    write(r, "a.txt", "a");
    write(r, "b.txt", "b");
    write(r, "c.md", "c");
    write(r, "secret.txt", "s");
    write(r, "src/main.rs", "m");
    write(r, "src/lib.rs", "l");
    write(r, "src/sub/deep.txt", "d");
    write(r, "docs/README.md", "r");
    write(r, "docs/guide.md", "g");
    write(r, "x/one/f.txt", "1");
    write(r, "x/two/f.txt", "2");
    write(r, "x/three/g.txt", "3");
    tmp
}

#[test]
fn wildcards_match_per_component_and_skip_ignored() {
    let tmp = project();
    let ctx = ctx_with(tmp.path(), "secret.txt\n");
    assert_eq!(rels(&ctx.resolve_source("*.txt").unwrap()), ["a.txt", "b.txt"]);
    assert_eq!(rels(&ctx.resolve_source("?.txt").unwrap()), ["a.txt", "b.txt"]);
    assert_eq!(rels(&ctx.resolve_source("[ac].*").unwrap()), ["a.txt", "c.md"]);
    assert_eq!(rels(&ctx.resolve_source("x/*/f.txt").unwrap()), ["x/one/f.txt", "x/two/f.txt"]);
    assert_eq!(rels(&ctx.resolve_source("src/*").unwrap()), ["src/lib.rs", "src/main.rs", "src/sub"]);
    assert!(ctx.resolve_source("src/sub").unwrap()[0].is_dir);
    // Hidden files match `*` as in Go.
    assert!(rels(&ctx.resolve_source("*").unwrap()).contains(&".dockerignore"));
    // A wildcard that matches nothing names nothing (BuildKit skips it); ignored files never match.
    assert!(ctx.resolve_source("*.nothing").unwrap().is_empty());
    assert!(ctx.resolve_source("nodir/*.txt").unwrap().is_empty());
    assert!(ctx.resolve_source("secret.*").unwrap().is_empty());
    assert!(matches!(ctx.resolve_source("[z-a]"), Err(ContextError::BadWildcard { .. })));
}

#[test]
fn plain_paths_and_escapes() {
    let tmp = project();
    let ctx = ctx_with(tmp.path(), "secret.txt\ndocs\n!docs/README.md\n");
    let m = &ctx.resolve_source("a.txt").unwrap()[0];
    assert_eq!(m.rel, "a.txt");
    assert_eq!(m.host, ctx.root().join("a.txt"));
    assert!(!m.is_dir);
    // `..` and a leading `/` cannot leave the root.
    assert_eq!(ctx.resolve_source("../a.txt").unwrap()[0].rel, "a.txt");
    assert_eq!(ctx.resolve_source("/../../src/../a.txt").unwrap()[0].rel, "a.txt");
    let root = &ctx.resolve_source("..").unwrap()[0];
    assert_eq!((root.rel.to_str().unwrap(), root.is_dir), ("", true));
    assert_eq!(root.host, ctx.root());
    assert_eq!(ctx.resolve_source(".").unwrap()[0].rel, "");

    let err = ctx.resolve_source("secret.txt").unwrap_err();
    assert_eq!(
        err.to_string(),
        "COPY failed: file not found in build context or excluded by .dockerignore: stat secret.txt: file does not exist"
    );
    assert!(matches!(ctx.resolve_source("missing"), Err(ContextError::SourceNotFound { .. })));
    assert!(matches!(ctx.resolve_source("a.txt/x"), Err(ContextError::SourceNotFound { .. })));
    // An excluded dir with a re-included file still exists, holding only it.
    assert_eq!(walked(&ctx, "docs"), ["README.md"]);
    assert!(matches!(ctx.resolve_source("docs/guide.md"), Err(ContextError::SourceNotFound { .. })));
    assert_eq!(ctx.resolve_source("docs/README.md").unwrap().len(), 1);
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let tmp = project();
    let r = tmp.path();
    // A file outside the context that must never be reached.
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "stolen", "host secret");
    write(r, "stolen", "in-context");
    symlink(outside.path().join("stolen"), r.join("abs_out")).unwrap();
    symlink("../../../../../../stolen", r.join("rel_out")).unwrap();
    symlink("/src", r.join("srclink")).unwrap();
    symlink("sub/deep.txt", r.join("src/deeplink")).unwrap();
    symlink("loop2", r.join("loop1")).unwrap();
    symlink("loop1", r.join("loop2")).unwrap();
    symlink("/nowhere", r.join("dangling")).unwrap();
    write(outside.path(), "only-outside", "x");
    symlink(outside.path().join("only-outside"), r.join("abs_missing")).unwrap();
    let ctx = BuildContext::from_dir(r, None).unwrap();
    let root = ctx.root().to_path_buf();

    let m = &ctx.resolve_source("rel_out").unwrap()[0];
    assert_eq!(m.host, root.join("stolen"));
    assert_eq!(fs::read_to_string(&m.host).unwrap(), "in-context");
    // The absolute target is taken relative to the root: the path exists
    // only outside, so the source is not found.
    assert!(matches!(ctx.resolve_source("abs_missing"), Err(ContextError::SourceNotFound { .. })));
    assert!(matches!(ctx.resolve_source("abs_out"), Err(ContextError::SourceNotFound { .. })));
    // The same absolute target, recreated inside the root, is what it names.
    let inside = root.join(outside.path().strip_prefix("/").unwrap());
    write(&inside, "stolen", "in-root copy");
    let m = &ctx.resolve_source("abs_out").unwrap()[0];
    assert_eq!(m.host, inside.join("stolen"));
    assert_eq!(fs::read_to_string(&m.host).unwrap(), "in-root copy");
    // A directory link is followed, within the root, and the final link too.
    let m = &ctx.resolve_source("srclink/deeplink").unwrap()[0];
    assert_eq!(m.rel, "srclink/deeplink");
    assert_eq!(m.host, root.join("src/sub/deep.txt"));
    assert_eq!(rels(&ctx.resolve_source("srclink/*.rs").unwrap()), ["srclink/lib.rs", "srclink/main.rs"]);
    assert!(matches!(ctx.resolve_source("loop1"), Err(ContextError::SymlinkLoop { .. })));
    assert!(matches!(ctx.resolve_source("dangling"), Err(ContextError::SourceNotFound { .. })));
    // Walking lists links as links and does not follow them.
    let entries = ctx.walk(&ctx.resolve_source("src").unwrap()[0]).unwrap();
    let link = entries.iter().find(|e| e.rel == "deeplink").unwrap();
    assert!(link.metadata.file_type().is_symlink());
    assert_eq!(link.link_target.as_deref(), Some(Path::new("sub/deep.txt")));
    // A link whose target is ignored leads nowhere.
    let ctx = ctx_with(r, "src/sub\n");
    assert!(matches!(ctx.resolve_source("src/deeplink"), Err(ContextError::SourceNotFound { .. })));
    // An ignored link is not in the context, even if its target is.
    let ctx = ctx_with(r, "srclink\n");
    assert!(matches!(ctx.resolve_source("srclink/main.rs"), Err(ContextError::SourceNotFound { .. })));
    assert!(ctx.resolve_source("srclink/*.rs").unwrap().is_empty());
}

#[test]
fn walk_order_and_ignore() {
    let tmp = project();
    write(tmp.path(), "src.txt", "s");
    let ctx = ctx_with(tmp.path(), "**/*.md\n!docs/README.md\nsrc/sub\n");
    assert_eq!(walked(&ctx, "src"), ["lib.rs", "main.rs"]);
    assert_eq!(walked(&ctx, "docs"), ["README.md"]);
    let all = walked(&ctx, ".");
    let want = [
        ".dockerignore",
        "a.txt",
        "b.txt",
        "docs",
        "docs/README.md",
        "secret.txt",
        "src",
        "src/lib.rs",
        "src/main.rs",
        "src.txt",
        "x",
        "x/one",
        "x/one/f.txt",
        "x/three",
        "x/three/g.txt",
        "x/two",
        "x/two/f.txt",
    ];
    assert_eq!(all, want);
    // A file source walks to itself.
    let entries = ctx.walk(&ctx.resolve_source("a.txt").unwrap()[0]).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].rel, "");
    assert!(entries[0].metadata.is_file());
}

#[test]
fn excluded_parents_listed_only_with_included_children() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    write(r, "vendor/a/LICENSE", "l");
    write(r, "vendor/a/code.go", "c");
    write(r, "vendor/b/code.go", "c");
    write(r, "keep.txt", "k");
    let ctx = ctx_with(r, "vendor\n!vendor/*/LICENSE\n.dockerignore\n");
    assert_eq!(walked(&ctx, "."), ["keep.txt", "vendor", "vendor/a", "vendor/a/LICENSE"]);
    assert!(matches!(ctx.resolve_source("vendor/b"), Err(ContextError::SourceNotFound { .. })));
    assert_eq!(rels(&ctx.resolve_source("vendor/*").unwrap()), ["vendor/a"]);
}

#[test]
fn ignore_file_choice() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    write(r, "Dockerfile", "FROM scratch");
    write(r, "build/app.Dockerfile", "FROM scratch");
    assert_eq!(BuildContext::find_ignore_file(r, Some(&r.join("Dockerfile"))), None);
    // podman's and buildah's name is read when docker's is missing...
    write(r, ".containerignore", "c");
    assert_eq!(BuildContext::find_ignore_file(r, Some(&r.join("Dockerfile"))), Some(r.join(".containerignore")));
    // ...and docker's wins when both exist.
    write(r, ".dockerignore", "x");
    assert_eq!(BuildContext::find_ignore_file(r, Some(&r.join("Dockerfile"))), Some(r.join(".dockerignore")));
    write(r, "build/app.Dockerfile.dockerignore", "y");
    let df = r.join("build/app.Dockerfile");
    assert_eq!(BuildContext::find_ignore_file(r, Some(&df)), Some(r.join("build/app.Dockerfile.dockerignore")));
    assert_eq!(BuildContext::find_ignore_file(r, None), Some(r.join(".dockerignore")));
    let bad = r.join("bad.dockerignore");
    fs::write(&bad, "[").unwrap();
    assert!(matches!(BuildContext::from_dir(r, Some(&bad)), Err(ContextError::ParseIgnore { .. })));
    assert!(matches!(BuildContext::from_dir(&r.join("Dockerfile"), None), Err(ContextError::NotADirectory { .. })));
}

#[test]
fn empty_context() {
    let ctx = BuildContext::empty();
    let ms = ctx.resolve_source(".").unwrap();
    assert!(ctx.walk(&ms[0]).unwrap().is_empty());
    assert!(matches!(ctx.resolve_source("a"), Err(ContextError::SourceNotFound { .. })));
    assert!(ctx.resolve_source("*").unwrap().is_empty());
}

// ---- archives ----

/// Appends an entry with the raw name `name`, bypassing the tar crate's
/// own path checks, as a hostile archive would.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    body: &[u8],
    link: Option<&str>,
    mode: u32,
) {
    let mut h = tar::Header::new_gnu();
    {
        let bytes = &mut h.as_old_mut().name;
        bytes[..name.len()].copy_from_slice(name.as_bytes());
    }
    if let Some(link) = link {
        let bytes = &mut h.as_old_mut().linkname;
        bytes[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(body.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, body).unwrap();
}

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "Dockerfile", tar::EntryType::Regular, b"FROM scratch\n", None, 0o644);
    raw_entry(&mut b, ".dockerignore", tar::EntryType::Regular, b"**/*.log\n", None, 0o644);
    raw_entry(&mut b, "./app/", tar::EntryType::Directory, b"", None, 0o750);
    raw_entry(&mut b, "app/run.sh", tar::EntryType::Regular, b"#!/bin/sh\n", None, 0o755);
    raw_entry(&mut b, "app/debug.log", tar::EntryType::Regular, b"noise", None, 0o644);
    raw_entry(&mut b, "app/link", tar::EntryType::Symlink, b"", Some("/etc/passwd"), 0o777);
    raw_entry(&mut b, "app/hard", tar::EntryType::Link, b"", Some("app/run.sh"), 0o755);
    b.into_inner().unwrap()
}

fn check_sample(ctx: &BuildContext) {
    let root = ctx.root();
    assert_eq!(fs::read_to_string(root.join("Dockerfile")).unwrap(), "FROM scratch\n");
    let run = fs::symlink_metadata(root.join("app/run.sh")).unwrap();
    assert_eq!(run.permissions().mode() & 0o7777, 0o755);
    assert_eq!(fs::symlink_metadata(root.join("app")).unwrap().permissions().mode() & 0o7777, 0o750);
    assert_eq!(fs::read_link(root.join("app/link")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(fs::read_to_string(root.join("app/hard")).unwrap(), "#!/bin/sh\n");
    assert!(ctx.ignore().matches("app/debug.log"));
    assert_eq!(walked(ctx, "app"), ["hard", "link", "run.sh"]);
    // The link to /etc/passwd resolves inside the extracted root.
    assert!(matches!(ctx.resolve_source("app/link"), Err(ContextError::SourceNotFound { .. })));
}

#[test]
fn tar_plain_gzip_zstd_xz_bzip2() {
    let tar = sample_tar();
    check_sample(&BuildContext::from_tar(&tar[..], true).unwrap());

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    check_sample(&BuildContext::from_tar(&gz.finish().unwrap()[..], true).unwrap());

    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    check_sample(&BuildContext::from_tar(&zst[..], true).unwrap());

    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).unwrap();
    check_sample(&BuildContext::from_tar(&xz.finish().unwrap()[..], true).unwrap());

    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    check_sample(&BuildContext::from_tar(&bz.finish().unwrap()[..], true).unwrap());

    // Without `ignore`, the archive's .dockerignore does not apply.
    let ctx = BuildContext::from_tar(&tar[..], false).unwrap();
    assert!(!ctx.ignore().matches("app/debug.log"));
}

#[test]
fn tar_reads_containerignore_when_there_is_no_dockerignore() {
    let tar = |names: &[(&str, &[u8])]| {
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, "a.log", tar::EntryType::Regular, b"a", None, 0o644);
        raw_entry(&mut b, "b.txt", tar::EntryType::Regular, b"b", None, 0o644);
        for (name, body) in names {
            raw_entry(&mut b, name, tar::EntryType::Regular, body, None, 0o644);
        }
        b.into_inner().unwrap()
    };
    let ctx = BuildContext::from_tar(&tar(&[(".containerignore", b"*.log\n")])[..], true).unwrap();
    assert!(ctx.ignore().matches("a.log"));
    assert!(!ctx.ignore().matches("b.txt"));
    let both = tar(&[(".containerignore", b"*.log\n"), (".dockerignore", b"*.txt\n")]);
    let ctx = BuildContext::from_tar(&both[..], true).unwrap();
    assert!(!ctx.ignore().matches("a.log"), ".dockerignore wins over .containerignore");
    assert!(ctx.ignore().matches("b.txt"));
}

#[test]
fn temp_dir_is_removed_with_the_context() {
    let ctx = BuildContext::from_tar(&sample_tar()[..], true).unwrap();
    let root = ctx.root().to_path_buf();
    assert!(root.exists());
    drop(ctx);
    assert!(!root.exists());
}

#[test]
fn tar_rejects_escapes() {
    for name in ["../evil", "a/../../evil", "/abs/evil"] {
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, name, tar::EntryType::Regular, b"x", None, 0o644);
        let err = BuildContext::from_tar(&b.into_inner().unwrap()[..], true).unwrap_err();
        assert!(matches!(err, ContextError::UnsafeEntry { .. }), "{name}: {err}");
    }
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "f", tar::EntryType::Regular, b"x", None, 0o644);
    raw_entry(&mut b, "h", tar::EntryType::Link, b"", Some("../../etc/passwd"), 0o644);
    assert!(matches!(
        BuildContext::from_tar(&b.into_inner().unwrap()[..], true),
        Err(ContextError::UnsafeEntry { .. })
    ));
}

#[test]
fn tar_does_not_write_through_symlinks() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().to_string();

    // A symlinked directory, then a file "inside" it.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "escape", tar::EntryType::Symlink, b"", Some(&target), 0o777);
    raw_entry(&mut b, "escape/pwned", tar::EntryType::Regular, b"pwned", None, 0o644);
    let err = BuildContext::from_tar(&b.into_inner().unwrap()[..], true).unwrap_err();
    assert!(matches!(err, ContextError::UnsafeEntry { .. }), "{err}");
    assert!(!outside.path().join("pwned").exists());

    // A symlink to a file, then a regular file of the same name: the link
    // is replaced, its target untouched.
    let victim = outside.path().join("victim");
    fs::write(&victim, "original").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "file", tar::EntryType::Symlink, b"", Some(victim.to_str().unwrap()), 0o777);
    raw_entry(&mut b, "file", tar::EntryType::Regular, b"overwritten", None, 0o644);
    let ctx = BuildContext::from_tar(&b.into_inner().unwrap()[..], true).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
    assert_eq!(fs::read_to_string(ctx.root().join("file")).unwrap(), "overwritten");

    // A hard link to a symlink links the symlink, never its target.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "sym", tar::EntryType::Symlink, b"", Some(victim.to_str().unwrap()), 0o777);
    raw_entry(&mut b, "hard", tar::EntryType::Link, b"", Some("sym"), 0o644);
    let ctx = BuildContext::from_tar(&b.into_inner().unwrap()[..], true).unwrap();
    assert!(fs::symlink_metadata(ctx.root().join("hard")).unwrap().file_type().is_symlink());

    // A relative link climbing out, then a directory through it.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "up", tar::EntryType::Symlink, b"", Some("../../../../../../tmp"), 0o777);
    raw_entry(&mut b, "up/kiln-evil-dir/", tar::EntryType::Directory, b"", None, 0o755);
    assert!(BuildContext::from_tar(&b.into_inner().unwrap()[..], true).is_err());
    assert!(!Path::new("/tmp/kiln-evil-dir").exists());
}

#[test]
fn tar_garbage_is_an_error() {
    let junk = vec![0x42u8; 1024];
    assert!(BuildContext::from_tar(&junk[..], true).is_err());
    let bad_gz = [0x1f, 0x8b, 0, 1, 2, 3, 4, 5];
    assert!(BuildContext::from_tar(&bad_gz[..], true).is_err());
}

/// A context holding names that are not UTF-8: two files that differ only in
/// such a byte, and a directory with such a name.
fn raw_names(ignore: &[u8]) -> tempfile::TempDir {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    let p = |b: &[u8]| r.join(std::ffi::OsStr::from_bytes(b));
    fs::write(p(b"x\xff"), "ff").unwrap();
    fs::write(p(b"x\xfe"), "fe").unwrap();
    fs::create_dir(p(b"d\xfd")).unwrap();
    fs::write(p(b"d\xfd/in\xfc"), "in").unwrap();
    symlink(std::ffi::OsStr::from_bytes(b"x\xff"), p(b"l\xfb")).unwrap();
    fs::write(r.join(".dockerignore"), ignore).unwrap();
    tmp
}

fn raw_ctx(tmp: &tempfile::TempDir) -> BuildContext {
    BuildContext::from_dir(tmp.path(), BuildContext::find_ignore_file(tmp.path(), None).as_deref()).unwrap()
}

#[test]
fn names_that_are_not_utf8_are_walked_exactly() {
    let tmp = raw_names(b"");
    let ctx = raw_ctx(&tmp);
    let m = ctx.resolve_source(".").unwrap();
    let got: Vec<bstr::BString> = ctx.walk(&m[0]).unwrap().into_iter().map(|e| e.rel).collect();
    let want: Vec<&[u8]> = vec![b".dockerignore", b"d\xfd", b"d\xfd/in\xfc", b"l\xfb", b"x\xfe", b"x\xff"];
    assert_eq!(got, want);
    // A wildcard matches both by their bytes, and each resolves to its own file.
    let ms = ctx.resolve_source("x*").unwrap();
    let got: Vec<(&[u8], String)> =
        ms.iter().map(|m| (m.rel.as_slice(), fs::read_to_string(&m.host).unwrap())).collect();
    assert_eq!(got, vec![(&b"x\xfe"[..], "fe".to_string()), (&b"x\xff"[..], "ff".to_string())]);
    let ms = ctx.resolve_source("d?/*").unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].rel, &b"d\xfd/in\xfc"[..]);
}

#[test]
fn a_dockerignore_line_with_a_raw_name_excludes_only_that_name() {
    let tmp = raw_names(b"x\xff\nd\xfd\n");
    let ctx = raw_ctx(&tmp);
    let m = ctx.resolve_source(".").unwrap();
    let got: Vec<bstr::BString> = ctx.walk(&m[0]).unwrap().into_iter().map(|e| e.rel).collect();
    let want: Vec<&[u8]> = vec![b".dockerignore", b"l\xfb", b"x\xfe"];
    assert_eq!(got, want);
    assert!(matches!(ctx.resolve_source("x*").unwrap().as_slice(), [only] if only.rel == b"x\xfe"[..]));
}

#[test]
fn the_source_digest_tells_names_that_are_not_utf8_apart() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = raw_names(b"");
    let ctx = raw_ctx(&tmp);
    let mut stat = stat_cache::StatCache::default();
    let before = digest::sources(&ctx, &[".".into()], &mut stat).unwrap();
    assert!(before.files.contains_key(b"x\xff".as_slice()) && before.files.contains_key(b"x\xfe".as_slice()));
    assert_ne!(before.files[b"x\xff".as_slice()], before.files[b"x\xfe".as_slice()]);
    // Shown escaped in the build log, never collapsed into one U+FFFD name.
    let shown = before.shown();
    assert!(shown.contains_key("x\\xff") && shown.contains_key("x\\xfe"), "{shown:?}");
    // Swapping the two files' contents changes the key: names are not confused.
    let p = |b: &[u8]| tmp.path().join(std::ffi::OsStr::from_bytes(b));
    fs::write(p(b"x\xff"), "fe").unwrap();
    fs::write(p(b"x\xfe"), "ff").unwrap();
    let swapped = digest::sources(&ctx, &[".".into()], &mut stat).unwrap();
    assert_ne!(before.digest(), swapped.digest());
    fs::write(p(b"x\xff"), "ff").unwrap();
    fs::write(p(b"x\xfe"), "fe").unwrap();
    assert_eq!(before.digest(), digest::sources(&ctx, &[".".into()], &mut stat).unwrap().digest());
}
