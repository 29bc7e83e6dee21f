//! COPY heredocs, --parents, --exclude, ADD --chown on archives, --platform and -q.

use kiln_integration::*;
use serde_json::json;

#[test]
fn heredocs() {
    let sb = Sandbox::new();
    let img = sb.build(
        "FROM scratch
ENV NAME=world
COPY <<EOF /greet
hello $NAME
EOF
COPY <<\"EOF\" /raw
hello $NAME
EOF
COPY --chmod=755 <<-EOT /usr/bin/script.sh
\t#!/bin/sh
\techo hi
\tEOT
COPY <<one.txt <<two.txt /multi/
first
one.txt
second
two.txt
",
        "heredoc",
    );
    assert_eq!(img.file_str("greet"), "hello world\n", "an unquoted delimiter expands variables");
    assert_eq!(img.file_str("raw"), "hello $NAME\n", "a quoted delimiter keeps the text literal");
    assert_eq!(img.file_str("usr/bin/script.sh"), "#!/bin/sh\necho hi\n", "<<- strips leading tabs");
    assert_eq!(img.entry("usr/bin/script.sh").unwrap().mode, 0o755);
    assert_eq!(img.file_str("multi/one.txt"), "first\n");
    assert_eq!(img.file_str("multi/two.txt"), "second\n");
    assert_eq!(img.entry("greet").map(|e| (e.uid, e.gid)), Some((0, 0)));
}

#[test]
fn parents_and_exclude() {
    let sb = Sandbox::new();
    for f in ["a/b/c.txt", "a/b/d.md", "x/y.txt", "x/z/w.txt", "top.txt"] {
        sb.write(&format!("ctx/{f}"), f);
    }
    let img = sb.build(
        "FROM scratch
COPY --parents a/b/c.txt x/y.txt /p/
COPY --parents x/*/w.txt /pw/
COPY --exclude=**/*.md a /ex/
COPY --exclude=z --exclude=y.txt x /ex2/
",
        "parents",
    );
    assert_eq!(img.file_str("p/a/b/c.txt"), "a/b/c.txt");
    assert_eq!(img.file_str("p/x/y.txt"), "x/y.txt");
    assert!(img.entry("p/c.txt").is_none() && img.entry("p/a/b/d.md").is_none(), "{:?}", img.paths());
    assert_eq!(img.file_str("pw/x/z/w.txt"), "x/z/w.txt");
    assert_eq!(img.file_str("ex/b/c.txt"), "a/b/c.txt");
    assert!(img.entry("ex/b/d.md").is_none(), "--exclude=**/*.md applies at any depth: {:?}", img.paths());
    assert!(img.entry("ex2/y.txt").is_none() && img.entry("ex2/z").is_none(), "{:?}", img.paths());
}

#[test]
fn add_chown_applies_to_extracted_entries() {
    let sb = Sandbox::new();
    sb.write("src/d/f.txt", "f\n");
    sb.symlink("f.txt", "src/d/l");
    sb.tool("tar", &["-C", "src", "-czf", "ctx/a.tgz", "d"]).ok();
    let img = sb.build("FROM scratch\nADD --chown=77:88 a.tgz /x/\n", "addchown");
    for p in ["x/d", "x/d/f.txt", "x/d/l"] {
        let e = img.entry(p).unwrap_or_else(|| panic!("{p} missing: {:?}", img.paths()));
        assert_eq!((e.uid, e.gid), (77, 88), "{p}");
    }
}

#[test]
fn platform_and_quiet() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.dockerfile(BUSYBOX_DOCKERFILE);
    let ctx = sb.ctx();
    let out = sb.kiln(&["build", "-q", "--platform", "linux/arm64", "-t", "arm", ctx.to_str().unwrap()]);
    out.ok();
    let img = sb.image("arm");
    assert_eq!(out.stdout.trim(), img.id(), "-q prints only the id\n{}", out.transcript());
    assert_eq!(out.stdout.lines().count(), 1);
    assert_eq!(img.config["architecture"], "arm64");
    assert_eq!(img.config["os"], "linux");
    let sk = sb
        .tool("skopeo", &["inspect", "--override-arch", "arm64", &format!("oci:{}:arm:latest", sb.store().display())]);
    sk.ok();
    assert_eq!(sk.json()["Architecture"], json!("arm64"));
    let desc = find_descriptor(&sb.store(), "arm:latest");
    if !desc["platform"].is_null() {
        assert_eq!(desc["platform"]["architecture"], "arm64", "index.json platform agrees with the config");
    }
}
