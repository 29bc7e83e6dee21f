//! Where COPY puts things: trailing slashes, WORKDIR, several sources,
//! directory contents, wildcards, symlinks on both sides.

use kiln_integration::*;

fn files(sb: &Sandbox) {
    sb.write("ctx/f.txt", "f\n");
    sb.write("ctx/g.txt", "g\n");
    sb.write("ctx/h.md", "h\n");
    sb.write("ctx/dir/a.txt", "a\n");
    sb.write_mode("ctx/dir/sub/b.sh", "b\n", 0o755);
    sb.write("ctx/dir2/sub/b.sh", "b2\n");
}

#[test]
fn destination_rules() {
    let sb = Sandbox::new();
    files(&sb);
    let img = sb.build(
        "FROM scratch
COPY f.txt /slash/
COPY f.txt /noslash
COPY f.txt g.txt /multi/
COPY dir /contents/
COPY dir /contents-noslash
WORKDIR /work
COPY f.txt rel/
COPY g.txt .
COPY h.md named
WORKDIR sub
COPY f.txt ./
COPY *.txt /wild/
COPY [fh].* /class/
COPY dir*/sub/b.sh /deepwild/
COPY di? /q/
",
        "dest",
    );
    let kind = |p: &str| img.entry(p).map(|e| e.kind);
    assert_eq!(kind("slash"), Some(Kind::Dir));
    assert_eq!(img.file_str("slash/f.txt"), "f\n");
    assert_eq!(kind("noslash"), Some(Kind::File), "without a slash the destination is the file itself");
    assert_eq!(img.file_str("noslash"), "f\n");
    assert_eq!(img.file_str("multi/f.txt"), "f\n");
    assert_eq!(img.file_str("multi/g.txt"), "g\n");

    // A directory source copies its contents, not the directory itself.
    for d in ["contents", "contents-noslash"] {
        assert_eq!(img.file_str(&format!("{d}/a.txt")), "a\n");
        assert_eq!(img.file_str(&format!("{d}/sub/b.sh")), "b\n");
        assert_eq!(img.entry(&format!("{d}/sub/b.sh")).unwrap().mode, 0o755);
        assert!(img.entry(&format!("{d}/dir")).is_none(), "{d}/dir must not exist: {:?}", img.paths());
    }

    // Relative destinations are under WORKDIR (which is created).
    assert_eq!(kind("work"), Some(Kind::Dir));
    assert_eq!(img.file_str("work/rel/f.txt"), "f\n");
    assert_eq!(img.file_str("work/g.txt"), "g\n");
    assert_eq!(kind("work/named"), Some(Kind::File));
    assert_eq!(img.file_str("work/named"), "h\n");
    assert_eq!(img.file_str("work/sub/f.txt"), "f\n", "a relative WORKDIR is relative to the previous one");
    assert_eq!(img.runtime()["WorkingDir"], "/work/sub");

    // Wildcards.
    let under = |d: &str| -> Vec<String> {
        img.paths().into_iter().filter_map(|p| p.strip_prefix(&format!("{d}/")).map(str::to_string)).collect()
    };
    assert_eq!(under("wild"), ["f.txt", "g.txt"]);
    assert_eq!(under("class"), ["f.txt", "h.md"]);
    assert_eq!(img.file_str("deepwild/b.sh"), "b2\n", "of several matches with one name, the last wins");
    // `di?` matches dir (a directory: contents copied); dir2 does not match.
    assert_eq!(img.file_str("q/a.txt"), "a\n");
    assert_eq!(img.file_str("q/sub/b.sh"), "b\n");
}

/// BuildKit copies each source (and each wildcard match) on its own, in
/// order: without a trailing slash the first file becomes the destination
/// and each next one replaces it (moby/moby#47064). The classic builder
/// refused instead ("the destination must be a directory and end with a /").
#[test]
fn several_sources_without_a_slash_replace_each_other_as_buildkit_does_not_the_classic_builder() {
    let sb = Sandbox::new();
    files(&sb);
    let ctx = sb.ctx();
    sb.dockerfile(
        "FROM scratch
COPY f.txt g.txt /multi
COPY *.txt /testdir
COPY dir f.txt /mixed
COPY h*.md /one
",
    );
    let out = sb.kiln(&["build", "-t", "multi", ctx.to_str().unwrap()]);
    out.ok();
    let img = sb.image("multi");
    let kind = |p: &str| img.entry(p).map(|e| e.kind);
    assert_eq!(kind("multi"), Some(Kind::File));
    assert_eq!(img.file_str("multi"), "g\n", "the last source wins");
    assert_eq!(kind("testdir"), Some(Kind::File));
    assert_eq!(img.file_str("testdir"), "g\n", "wildcard matches go in name order, the last wins");
    // A directory first makes the destination a directory; the file then goes into it.
    assert_eq!(kind("mixed"), Some(Kind::Dir));
    assert_eq!(img.file_str("mixed/a.txt"), "a\n");
    assert_eq!(img.file_str("mixed/f.txt"), "f\n");
    assert_eq!(img.file_str("one"), "h\n", "one wildcard match is fine without a slash");
    // kiln says what happened, with the place in the Dockerfile.
    out.stderr_has(&["Dockerfile:2", "/multi", "Dockerfile:3", "/testdir", "end the destination with /"]);
    assert!(!out.stderr.contains("Dockerfile:4"), "{}", out.transcript());

    // A file first, then a directory onto it: BuildKit's "cannot copy to non-directory".
    sb.dockerfile("FROM scratch\nCOPY f.txt dir /bad\n");
    let out = sb.kiln(&["build", "-t", "bad", ctx.to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["Dockerfile:2", "/bad", "directory"]);
}

#[test]
fn context_symlinks_are_copied_as_symlinks_and_never_followed() {
    let sb = Sandbox::new();
    let secret = format!("SECRET-{}", std::process::id());
    sb.write("outside.txt", &secret);
    sb.write("ctx/links/f.txt", "f\n");
    sb.symlink("f.txt", "ctx/links/rel");
    sb.symlink("../../outside.txt", "ctx/links/out");
    sb.symlink(sb.path("outside.txt").to_str().unwrap(), "ctx/links/abs-host");
    sb.symlink("/etc/passwd", "ctx/links/abs");
    sb.symlink("sub", "ctx/links/dirlink");
    sb.write("ctx/links/sub/x", "x\n");
    let img = sb.build("FROM scratch\nCOPY links /s/\nCOPY . /all/\n", "links");
    for prefix in ["s", "all/links"] {
        let link = |name: &str| {
            let e = img.entry(&format!("{prefix}/{name}")).unwrap_or_else(|| panic!("{prefix}/{name} missing"));
            assert_eq!(e.kind, Kind::Symlink, "{prefix}/{name}");
            e.link.clone().unwrap()
        };
        assert_eq!(link("rel"), "f.txt");
        assert_eq!(link("out"), "../../outside.txt");
        assert_eq!(link("abs-host"), sb.path("outside.txt").to_str().unwrap());
        assert_eq!(link("abs"), "/etc/passwd");
        assert_eq!(link("dirlink"), "sub");
        assert_eq!(img.file_str(&format!("{prefix}/sub/x")), "x\n");
    }
    for layer in &img.layers {
        for e in &layer.entries {
            assert!(!String::from_utf8_lossy(&e.data).contains(&secret), "{} holds the outside file's content", e.path);
        }
    }
}

#[test]
fn copy_through_a_symlink_in_the_base_image_stays_inside_the_image() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    sb.write("ctx/g.txt", "g\n");
    sb.write("ctx/base/real/keep.txt", "keep\n");
    sb.symlink("real", "ctx/base/app");
    sb.symlink("/real", "ctx/base/abs");
    // A link to a real host directory: writing through it must not touch the host.
    let host_dir = sb.mkdir("hostdir");
    sb.symlink(host_dir.to_str().unwrap(), "ctx/base/escape");
    sb.build("FROM scratch\nCOPY base/ /\n", "base");
    let img = sb.build(
        "FROM base
COPY g.txt /app/
COPY f.txt /abs/f2.txt
COPY f.txt /app/sub/deep.txt
COPY g.txt /escape/
",
        "through",
    );
    assert_eq!(img.entry("app").unwrap().kind, Kind::Symlink, "the link itself is not replaced");
    assert_eq!(img.entry("app").unwrap().link.as_deref(), Some("real"));
    assert_eq!(img.entry("abs").unwrap().kind, Kind::Symlink);
    assert_eq!(img.file_str("real/g.txt"), "g\n");
    assert_eq!(img.file_str("real/f2.txt"), "f\n");
    assert_eq!(img.file_str("real/sub/deep.txt"), "f\n");
    assert_eq!(img.file_str("real/keep.txt"), "keep\n");
    assert!(img.entry("app/g.txt").is_none(), "nothing is written under the link's own path");
    assert_eq!(img.entry("escape").unwrap().kind, Kind::Symlink);
    let inside = format!("{}/g.txt", host_dir.to_str().unwrap().trim_start_matches('/'));
    assert_eq!(img.file_str(&inside), "g\n", "the link resolves inside the image");
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0, "kiln wrote through a symlink onto the host");
}

/// testWorkdirCopyIgnoreRelative, testEmptyDestDir, testCopyLinkDotDestDir,
/// testCopyLinkEmptyDestDir: a `--from` source is found from that stage's
/// root whatever its WORKDIR; an empty destination (`$empty`) and `.` are
/// the WORKDIR, with or without --link.
#[test]
fn from_sources_start_at_the_root_and_empty_destinations_are_the_workdir() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let img = sb.build(
        "FROM scratch AS base
WORKDIR /foo
COPY f.txt /
FROM scratch
COPY --from=base f.txt .
WORKDIR /var/www
ENV empty=\"\"
COPY f.txt $empty
COPY --from=base /f.txt ./from.txt
COPY --link f.txt ./linked/
WORKDIR /link-dot
COPY --link f.txt .
WORKDIR /link-empty
COPY --link f.txt $empty
",
        "rel",
    );
    assert_eq!(img.file_str("f.txt"), "f\n", "base's /f.txt, not /foo/f.txt, and `.` is / before any WORKDIR");
    assert!(img.entry("foo").is_none(), "{:?}", img.paths());
    assert_eq!(img.file_str("var/www/f.txt"), "f\n");
    assert_eq!(img.entry("var/www").map(|e| e.kind), Some(Kind::Dir));
    assert_eq!(img.file_str("var/www/from.txt"), "f\n");
    assert_eq!(img.file_str("var/www/linked/f.txt"), "f\n");
    assert_eq!(img.file_str("link-dot/f.txt"), "f\n");
    assert_eq!(img.file_str("link-empty/f.txt"), "f\n");
}

/// testSymlinkDestination: `COPY foo /symlink/` where the base has
/// `/symlink -> ../tmp/symlink-target`, a link that climbs above the root
/// to a directory that does not exist: the link resolves inside the image
/// (`..` stops at /), the missing target is made and the file lands there.
#[test]
fn copy_into_a_dangling_symlink_makes_its_target_inside_the_image() {
    let sb = Sandbox::new();
    sb.write("ctx/foo", "content0");
    sb.symlink("../tmp/symlink-target", "ctx/base/symlink");
    sb.build("FROM scratch\nCOPY base/ /\n", "base");
    let img = sb.build("FROM base\nCOPY foo /symlink/\n", "dangling");
    let link = img.entry("symlink").expect("the link stays");
    assert_eq!((link.kind, link.link.as_deref()), (Kind::Symlink, Some("../tmp/symlink-target")));
    assert_eq!(img.file_str("tmp/symlink-target/foo"), "content0");
    assert_eq!(img.entry("tmp/symlink-target").map(|e| (e.kind, e.mode)), Some((Kind::Dir, 0o755)));
}
