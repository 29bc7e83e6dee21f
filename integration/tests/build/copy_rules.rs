//! COPY/ADD rules taken from BuildKit's dockerfile frontend tests and its
//! copy (tonistiigi/fsutil copy.Copy, solver/llbsolver/file docopy), each
//! checked on the built image's files: type, mode, owner, content, target.
//! Where the classic builder did otherwise, the test name says so.

use std::os::unix::fs::MetadataExt;

use kiln_integration::*;

pub(crate) fn entry(img: &Image, p: &str) -> Entry {
    img.entry(p).unwrap_or_else(|| panic!("{p} missing: {:?}", img.paths()))
}

/// testEmptyWildcard: `COPY foo nomatch* /` copies foo. A COPY of nothing at
/// all succeeds too (BuildKit's AllowEmptyWildcard; the classic builder
/// failed with "no source files were specified"), with a warning here.
#[test]
fn unmatched_wildcards_are_skipped_and_a_copy_of_nothing_warns_as_buildkit_does() {
    let sb = Sandbox::new();
    sb.write("ctx/package.json", "{}\n");
    sb.write("ctx/src/index.js", "js\n");
    let (out, img) = sb.build_with(
        "FROM scratch
WORKDIR /app
COPY package.json yarn.lock* ./
COPY nomatch* /none/
COPY src/*.ts missing-dir/* /none2/
COPY package.json *.lock /single
",
        "wild",
        &[],
    );
    assert_eq!(img.file_str("app/package.json"), "{}\n");
    assert!(!img.paths().iter().any(|p| p.contains("yarn")), "{:?}", img.paths());
    assert!(
        img.entry("none").is_none() && img.entry("none2").is_none(),
        "nothing was copied, so no destination is made: {:?}",
        img.paths()
    );
    assert_eq!(entry(&img, "single").kind, Kind::File, "one source left: the destination is that file");
    assert_eq!(img.file_str("single"), "{}\n");
    out.stderr_has(&["Dockerfile:4", "nomatch*", "Dockerfile:5", "src/*.ts missing-dir/*", "nothing was copied"]);
    assert!(
        !out.stderr.contains("Dockerfile:3:"),
        "a wildcard left unmatched next to a copied source is no news\n{}",
        out.transcript()
    );

    // testCopyWildcardCache: a file that comes to match later is copied, not a cache hit.
    let df = std::fs::read_to_string(sb.path("ctx/Dockerfile")).unwrap();
    sb.write("ctx/yarn.lock", "lock\n");
    let (_, img) = sb.build_with(&df, "wild2", &[]);
    assert_eq!(img.file_str("app/yarn.lock"), "lock\n");

    // A plain name still has to exist, even next to a wildcard that matched.
    let out = sb.try_build("FROM scratch\nCOPY package.json yarn.lock* missing.txt ./\n", "bad", &[]);
    out.fails_with(1).stderr_has(&["Dockerfile:2", "missing.txt", "not found"]);
}

/// testCopyChownExistingDir / testCopyChownCreateDest: the directory a
/// directory's contents are copied into is made 0755 and owned by root (or
/// --chown), whatever the source directory's own mode; the directories
/// inside keep theirs; an existing destination keeps its mode and owner.
/// The classic builder gave the destination the source directory's mode.
#[test]
fn a_copied_directory_gets_a_new_0755_root_destination_as_buildkit_does_not_the_classic_builder() {
    let sb = Sandbox::new();
    sb.write("ctx/top.txt", "top\n");
    sb.write_mode("ctx/sub/inner.sh", "#!/bin/sh\n", 0o750);
    sb.chmod("ctx/sub", 0o750);
    sb.write("ctx/private/p.txt", "p\n");
    sb.chmod("ctx/private", 0o700);
    sb.mkdir("ctx/empty");
    sb.chmod("ctx/empty", 0o1777);
    sb.mkdir("ctx/keep");
    sb.dockerfile("FROM scratch\n");
    // The context directory itself as a user's umask 077 leaves it.
    sb.chmod("ctx", 0o700);
    sb.chmod("ctx/Dockerfile", 0o600);
    let img = sb.build(
        "FROM scratch
COPY --chmod=700 keep /kept/
COPY . /app
COPY . /deep/er/app/
COPY --chown=1000:1001 private /owned
COPY --chmod=750 private /octal
COPY --chmod=go-w private /symbolic
COPY private /kept
COPY --chown=7:8 top.txt /chowned/new/
",
        "dirs",
    );
    let ctx_mtime = std::fs::metadata(sb.ctx()).unwrap().mtime() as u64;
    let app = entry(&img, "app");
    assert_eq!((app.kind, app.mode, app.uid, app.gid), (Kind::Dir, 0o755, 0, 0), "not the context dir's 0700");
    assert_eq!(app.mtime, ctx_mtime, "BuildKit gives it the source directory's mtime");
    let meta = |p: &str| {
        let e = entry(&img, p);
        (e.kind, e.mode, e.uid, e.gid)
    };
    assert_eq!(meta("app/sub"), (Kind::Dir, 0o750, 0, 0), "directories inside keep their modes");
    assert_eq!(meta("app/private"), (Kind::Dir, 0o700, 0, 0));
    assert_eq!(meta("app/empty"), (Kind::Dir, 0o1777, 0, 0), "an empty directory is copied, sticky bit and all");
    assert_eq!(meta("app/sub/inner.sh"), (Kind::File, 0o750, 0, 0));
    for d in ["deep", "deep/er", "deep/er/app"] {
        assert_eq!(meta(d), (Kind::Dir, 0o755, 0, 0), "{d}");
    }
    assert_eq!(img.file_str("deep/er/app/top.txt"), "top\n");
    assert_eq!(entry(&img, "deep/er/app").mtime, ctx_mtime, "made for the slash, then given the source's mtime");
    assert_eq!(meta("owned"), (Kind::Dir, 0o755, 1000, 1001), "made for --chown's owner");
    assert_eq!(meta("owned/p.txt"), (Kind::File, 0o644, 1000, 1001));
    for d in ["chowned", "chowned/new"] {
        assert_eq!(meta(d), (Kind::Dir, 0o755, 7, 8), "{d}: directories made for a file are --chown's too");
    }
    assert_eq!(meta("octal"), (Kind::Dir, 0o750, 0, 0), "an octal --chmod makes it with that mode");
    assert_eq!(meta("symbolic"), (Kind::Dir, 0o755, 0, 0), "a symbolic --chmod is for the copied entries only");
    assert_eq!(meta("symbolic/p.txt"), (Kind::File, 0o644, 0, 0));
    assert_eq!(meta("kept"), (Kind::Dir, 0o700, 0, 0), "an existing destination keeps its own mode");
    let private_mtime = std::fs::metadata(sb.path("ctx/private")).unwrap().mtime() as u64;
    assert_eq!(entry(&img, "kept").mtime, private_mtime, "and takes the source directory's mtime");
    assert_eq!(img.file_str("kept/p.txt"), "p\n");
}

/// testCopyChmod: `COPY --chmod=777 foo /parent/foo` makes /parent 0777 and
/// `--chmod=770 foo /parent/sub/foo` makes /parent/sub 0770 (fsutil
/// "copy: fix custom chmod for parent directories"); a symbolic mode leaves
/// new parents 0755. The classic builder made them all 0755.
#[test]
fn octal_chmod_also_makes_the_missing_parents_as_buildkit_does() {
    let sb = Sandbox::new();
    sb.write_mode("ctx/foo", "foo-contents", 0o600);
    sb.write_mode("ctx/bar", "bar-contents", 0o700);
    let img = sb.build(
        "FROM scratch
COPY --chmod=0644 foo /
COPY --chmod=777 bar /baz
COPY --chmod=0 foo /foobis
COPY --chmod=777 foo /parent/foo
COPY --chmod=770 foo /parent/sub/foo
COPY --chmod=u+x foo /symbolic/parent/foo
COPY --chmod=700 foo /slash/
",
        "chmod",
    );
    let mode = |p: &str| entry(&img, p).mode;
    assert_eq!(mode("foo"), 0o644);
    assert_eq!(mode("baz"), 0o777);
    assert_eq!(mode("foobis"), 0o000);
    assert_eq!(mode("parent"), 0o777);
    assert_eq!(mode("parent/sub"), 0o770);
    assert_eq!(mode("parent/sub/foo"), 0o770);
    assert_eq!(mode("symbolic"), 0o755);
    assert_eq!(mode("symbolic/parent"), 0o755);
    assert_eq!(mode("symbolic/parent/foo"), 0o700);
    assert_eq!(mode("slash"), 0o700, "a destination made for its trailing slash too");
    assert_eq!(img.file_str("parent/sub/foo"), "foo-contents");
}

/// fsutil's copy refuses to put a directory where the image has a file or a
/// symlink ("cannot copy to non-directory", moby/moby#47367: `COPY rootfs /`
/// onto Debian 12's `/bin -> usr/bin`) and a file where it has a directory
/// ("cannot replace to directory ... with file"). The classic builder
/// replaced the symlink with a directory (moby/moby#41035).
#[test]
fn a_directory_never_replaces_a_file_or_symlink_nor_a_file_a_directory_as_buildkit_does_not_the_classic_builder() {
    let sb = Sandbox::new();
    sb.write("ctx/base/usr/bin/sh", "sh\n");
    sb.symlink("usr/bin", "ctx/base/bin");
    sb.write("ctx/base/etc/motd", "motd\n");
    sb.write("ctx/base/etc/issue", "issue\n");
    sb.symlink("issue", "ctx/base/etc/issue.link");
    sb.write("ctx/base/d/keep", "keep\n");
    sb.write("ctx/f.txt", "f\n");
    sb.write("ctx/rootfs/bin/foo.sh", "foo\n");
    sb.write("ctx/dfile/d", "a file named d\n");
    sb.write("ctx/motddir/etc/motd/x", "x\n");
    sb.build("FROM scratch\nCOPY base/ /\n", "base");

    // What works: a file onto a symlinked directory, or into an existing one; a file replaces a file.
    let img = sb.build(
        "FROM base\nCOPY rootfs/bin/foo.sh /bin\nCOPY f.txt /d\nCOPY f.txt /etc/motd\nCOPY f.txt /etc/issue.link\n",
        "ok",
    );
    let link = entry(&img, "etc/issue.link");
    assert_eq!(
        (link.kind, link.link.as_deref()),
        (Kind::Symlink, Some("issue")),
        "a link to a file is followed, not replaced"
    );
    assert_eq!(img.file_str("etc/issue"), "f\n");
    assert_eq!(entry(&img, "bin").kind, Kind::Symlink);
    assert_eq!(img.file_str("usr/bin/foo.sh"), "foo\n");
    assert_eq!(img.file_str("d/f.txt"), "f\n");
    assert_eq!(img.file_str("d/keep"), "keep\n");
    assert_eq!(img.file_str("etc/motd"), "f\n");

    for (line, needles) in [
        ("COPY rootfs /", vec!["Dockerfile:2", "/bin", "symbolic link"]),
        ("COPY dfile/ /", vec!["Dockerfile:2", "/d", "directory"]),
        ("COPY motddir /", vec!["Dockerfile:2", "/etc/motd", "file"]),
        ("COPY f.txt /etc/motd/", vec!["Dockerfile:2", "/etc/motd", "not a directory"]),
        ("COPY f.txt /etc/motd/sub.txt", vec!["Dockerfile:2", "etc/motd", "not a directory"]),
    ] {
        let out = sb.try_build(&format!("FROM base\n{line}\n"), "refused", &[]);
        out.fails_with(1).stderr_has(&needles);
    }
    assert!(
        !std::fs::read_to_string(sb.store().join("index.json")).unwrap().contains("refused"),
        "a refused build tagged an image"
    );
}

/// testCopyThroughSymlinkContext / testCopySymlinks: a symlink named as the
/// source (or on the way to it) is followed and its target copied under the
/// name given; symlinks inside a copied directory stay links. Hard links
/// inside a copied directory stay hard links; empty directories and names
/// with spaces are copied as they are; a socket becomes an empty file.
#[test]
fn source_symlinks_hard_links_empty_dirs_and_spaces() {
    let sb = Sandbox::new();
    sb.write("ctx/sub/real.txt", "real\n");
    sb.symlink("sub", "ctx/link");
    sb.symlink("sub/real.txt", "ctx/filelink");
    sb.symlink("real.txt", "ctx/sub/inner-link");
    sb.write("ctx/hard/one", "same inode\n");
    std::fs::hard_link(sb.path("ctx/hard/one"), sb.path("ctx/hard/two")).unwrap();
    sb.write("ctx/other/one", "other\n");
    sb.mkdir("ctx/tree/empty");
    sb.write("ctx/tree/with space.txt", "spaced\n");
    sb.write("ctx/a file.txt", "a file\n");
    // testCopySymlinks: links matched by a wildcard are followed too, through chains.
    sb.write("ctx/ls/lfile", "lfile-contents");
    sb.write("ctx/ls/subfile", "subfile-contents");
    sb.write("ctx/ls/baz", "baz-contents");
    sb.symlink("subfile", "ctx/ls/l0");
    sb.symlink("second", "ctx/ls/l1");
    sb.symlink("baz", "ctx/ls/second");
    // testCopySocket: a socket in the context lands as an empty regular file.
    let _listener = std::os::unix::net::UnixListener::bind(sb.path("ctx/tree/socket.sock")).unwrap();
    let img = sb.build(
        r#"FROM scratch
COPY link/real.txt /through/
COPY filelink /followed
COPY filelink /dir/
COPY link /linkdir/
COPY hard /hard/
COPY tree /tree/
COPY ["a file.txt", "/spaced dest/"]
COPY ls/l* /alllinks/
COPY hard hard /hard2/
COPY hard other /hard3/
"#,
        "links",
    );
    assert_eq!(img.file_str("through/real.txt"), "real\n");
    assert_eq!(entry(&img, "followed").kind, Kind::File, "the named link is followed");
    assert_eq!(img.file_str("followed"), "real\n");
    assert_eq!(entry(&img, "dir/filelink").kind, Kind::File, "and keeps the name it was given");
    assert_eq!(img.file_str("linkdir/real.txt"), "real\n", "a linked directory's contents are copied");
    let inner = entry(&img, "linkdir/inner-link");
    assert_eq!((inner.kind, inner.link.as_deref()), (Kind::Symlink, Some("real.txt")), "links inside stay links");
    let (one, two) = (entry(&img, "hard/one"), entry(&img, "hard/two"));
    let kinds = [one.kind, two.kind];
    assert!(kinds.contains(&Kind::File) && kinds.contains(&Kind::Hardlink), "{kinds:?}");
    let link = if one.kind == Kind::Hardlink { &one } else { &two };
    assert!(["hard/one", "hard/two"].contains(&link.link.as_deref().unwrap().trim_start_matches('/')), "{link:?}");
    assert_eq!(img.file_str("hard/one"), "same inode\n");
    assert_eq!(img.file_str("hard/two"), "same inode\n");
    // A later source replacing one of the links leaves the other its content.
    assert_eq!(img.file_str("hard3/one"), "other\n");
    assert_eq!(img.file_str("hard3/two"), "same inode\n");
    // The same directory twice: copied over itself, never a link to itself.
    for p in ["hard2/one", "hard2/two"] {
        assert_eq!(img.file_str(p), "same inode\n", "{p}");
        let e = entry(&img, p);
        assert!(e.kind == Kind::File || e.link.as_deref().map(|l| l.trim_start_matches('/')) != Some(p), "{e:?}");
    }
    assert_eq!(entry(&img, "tree/empty").kind, Kind::Dir);
    assert_eq!(img.file_str("tree/with space.txt"), "spaced\n");
    assert_eq!(img.file_str("spaced dest/a file.txt"), "a file\n");
    for (name, want) in [("l0", "subfile-contents"), ("l1", "baz-contents"), ("lfile", "lfile-contents")] {
        let e = entry(&img, &format!("alllinks/{name}"));
        assert_eq!(e.kind, Kind::File, "{name}");
        assert_eq!(img.file_str(&format!("alllinks/{name}")), want);
    }
    let sock = entry(&img, "tree/socket.sock");
    assert_eq!((sock.kind, sock.size), (Kind::File, 0));
}

/// testCopyParents / testCopyRelativeParents: `--parents` keeps the source's
/// path under the destination, from the pivot `/./` on when there is one;
/// the directories on that path take the source directories' modes.
#[test]
fn parents_keep_the_path_from_the_pivot_as_buildkit_does() {
    let sb = Sandbox::new();
    sb.write("ctx/foo1/foo2/bar", "testing");
    sb.write("ctx/foo1/foo2/baz", "testing2");
    sb.chmod("ctx/foo1", 0o700);
    sb.write("ctx/test/a/b/c/d/foo", "foo");
    sb.write("ctx/test/a/b/c/d/e/bay", "bay");
    sb.write("ctx/test/a/b2/c/d/e/bar", "bar");
    let img = sb.build(
        "FROM scratch
COPY --parents foo1/foo2/bar /
WORKDIR /test
COPY --parents foo1/foo2/ba* .
COPY --parents test/a/b/./c/d /middle/
COPY --parents test/a/b/c/d/. /end/
COPY --parents test/a/./*/c /wildcard/
COPY --parents test/a/b9*/c /nomatch/
",
        "parents",
    );
    assert_eq!(img.file_str("foo1/foo2/bar"), "testing");
    assert_eq!(entry(&img, "foo1").mode, 0o700, "the source directory's mode");
    assert_eq!(img.file_str("test/foo1/foo2/bar"), "testing");
    assert_eq!(img.file_str("test/foo1/foo2/baz"), "testing2");
    assert_eq!(img.file_str("middle/c/d/foo"), "foo");
    assert_eq!(entry(&img, "middle/c/d/e").kind, Kind::Dir);
    assert!(img.entry("middle/test").is_none() && img.entry("middle/a").is_none(), "{:?}", img.paths());
    assert_eq!(img.file_str("end/test/a/b/c/d/foo"), "foo");
    assert_eq!(img.file_str("wildcard/b/c/d/foo"), "foo");
    assert_eq!(img.file_str("wildcard/b2/c/d/e/bar"), "bar");
    assert_eq!(entry(&img, "nomatch").kind, Kind::Dir, "the destination is made even when nothing matches");
    assert!(!img.paths().iter().any(|p| p.starts_with("nomatch/")), "{:?}", img.paths());
}

/// `COPY --link` copies onto an empty tree laid over the image: a symlink
/// in the base on the destination path is not followed but replaced by a
/// directory ("the destination path created with --link will always be a
/// path containing only directories"), and an existing directory without a
/// trailing slash does not catch the file; parent directories on the way
/// are new ones that hide the base's modes. With --chmod, BuildKit drops --link.
#[test]
fn copy_link_does_not_look_at_the_base_as_buildkit_does() {
    let sb = Sandbox::new();
    sb.write("ctx/base/real/keep.txt", "keep\n");
    sb.symlink("real", "ctx/base/app");
    sb.write("ctx/base/real2/keep.txt", "keep\n");
    sb.symlink("real2", "ctx/base/app2");
    sb.mkdir("ctx/base/tmp");
    sb.chmod("ctx/base/tmp", 0o1777);
    sb.write("ctx/f.txt", "f\n");
    sb.build("FROM scratch\nCOPY base/ /\n", "base");
    let img = sb.build(
        "FROM base
COPY --link f.txt /app/
COPY --chmod=644 --link f.txt /app2/
COPY --link f.txt /real
COPY --link f.txt /tmp/f.txt
",
        "linked",
    );
    assert_eq!(
        entry(&img, "tmp").mode,
        0o755,
        "the reference's /tmp caveat: --link lays a new 0755 /tmp over the 1777 one"
    );
    assert_eq!(img.file_str("tmp/f.txt"), "f\n");
    assert_eq!(entry(&img, "app").kind, Kind::Dir, "--link replaced the symlink by a directory");
    assert_eq!(img.file_str("app/f.txt"), "f\n");
    assert_eq!(entry(&img, "real").kind, Kind::File, "--link does not see that /real is a directory");
    assert_eq!(img.file_str("real"), "f\n");
    assert_eq!(entry(&img, "app2").kind, Kind::Symlink, "with --chmod the link in the base is followed");
    assert_eq!(img.file_str("real2/f.txt"), "f\n");
    // Without --link the symlink is followed into /real.
    let plain = sb.build("FROM base\nCOPY f.txt /app/\n", "unlinked");
    assert_eq!(entry(&plain, "app").kind, Kind::Symlink);
    assert_eq!(plain.file_str("real/f.txt"), "f\n");
}

/// solver/llbsolver/file/unpack.go: a local archive is extracted into the
/// destination, made 0755 (owned by --chown's owner), with the archive's own
/// modes: --chmod is not applied to what it holds, only --chown is. A file
/// that is no archive gets --chmod as COPY gives it.
#[test]
fn add_chmod_leaves_an_extracted_archives_modes_as_buildkit_does() {
    let sb = Sandbox::new();
    sb.write_mode("src/d/run.sh", "#!/bin/sh\n", 0o750);
    sb.write_mode("src/d/data.txt", "data\n", 0o600);
    sb.tool("tar", &["-C", "src", "-czf", "ctx/a.tgz", "d"]).ok();
    sb.write("ctx/plain.txt", "plain\n");
    let img = sb.build(
        "FROM scratch
ADD --chmod=700 --chown=5:6 a.tgz /x/
ADD --chmod=700 a.tgz /y/sub
ADD --chmod=700 plain.txt /p.txt
",
        "addchmod",
    );
    let meta = |p: &str| {
        let e = entry(&img, p);
        (e.kind, e.mode, e.uid, e.gid)
    };
    assert_eq!(meta("x"), (Kind::Dir, 0o755, 5, 6));
    assert_eq!(meta("x/d/run.sh"), (Kind::File, 0o750, 5, 6));
    assert_eq!(meta("x/d/data.txt"), (Kind::File, 0o600, 5, 6));
    assert_eq!(
        meta("y/sub"),
        (Kind::Dir, 0o755, 0, 0),
        "without a slash too, the destination is the directory extracted into"
    );
    assert_eq!(meta("y/sub/d/run.sh").1, 0o750);
    assert_eq!(img.file_str("y/sub/d/data.txt"), "data\n");
    assert_eq!(meta("p.txt"), (Kind::File, 0o700, 0, 0));
}

/// --exclude patterns follow .dockerignore's rules, relative to the
/// directory copied (moby/buildkit#5509: `*.1` excludes only the top level,
/// `**/*.1` every level; testExcludedFilesOnCopy). A file a wildcard source
/// names is excluded too, as the reference's `COPY --exclude=*.txt hom*`
/// example says (BuildKit itself still copies it: moby/buildkit#5489, open).
#[test]
fn exclude_patterns_are_relative_to_the_copied_directory() {
    let sb = Sandbox::new();
    for f in ["dir1/a.1", "dir1/a.2", "dir1/dir2/a.1", "dir1/dir2/a.2", "home.txt", "home.md"] {
        sb.write(&format!("ctx/{f}"), f);
    }
    let img = sb.build(
        "FROM scratch
COPY --exclude=*.1 dir1 /a/
COPY --exclude=**/*.1 dir1 /b/
COPY --exclude=*/*.2 dir1 /c/
COPY --exclude=*.txt hom* /mydir/
",
        "exclude",
    );
    let under = |d: &str| -> Vec<String> {
        img.paths().into_iter().filter_map(|p| p.strip_prefix(&format!("{d}/")).map(str::to_string)).collect()
    };
    assert_eq!(under("a"), ["a.2", "dir2", "dir2/a.1", "dir2/a.2"]);
    assert_eq!(under("b"), ["a.2", "dir2", "dir2/a.2"]);
    assert_eq!(under("c"), ["a.1", "a.2", "dir2", "dir2/a.1"], "*/*.2 is dir1-relative: dir1/a.2 is not dir2/a.2");
    assert_eq!(under("mydir"), ["home.md"]);
}

/// testDockerfileAddArchiveWildcard: `ADD *.tar /dest` without a slash
/// extracts every archive into /dest (the classic builder wanted a slash);
/// a file after an archive goes into the directory it made.
#[test]
fn add_archive_wildcard_extracts_each_into_the_destination_as_buildkit_does() {
    let sb = Sandbox::new();
    sb.write("src1/foo", "content0");
    sb.write("src2/bar", "content1");
    sb.tool("tar", &["-C", "src1", "-cf", "ctx/t.tar", "foo"]).ok();
    sb.tool("tar", &["-C", "src2", "-cf", "ctx/b.tar", "bar"]).ok();
    sb.write("ctx/note.txt", "note\n");
    let img = sb.build("FROM scratch\nADD *.tar /dest\nADD t.tar note.txt /mixed\n", "addwild");
    assert_eq!(img.file_str("dest/foo"), "content0");
    assert_eq!(img.file_str("dest/bar"), "content1");
    assert_eq!(entry(&img, "mixed").kind, Kind::Dir);
    assert_eq!(img.file_str("mixed/foo"), "content0");
    assert_eq!(img.file_str("mixed/note.txt"), "note\n");
}
