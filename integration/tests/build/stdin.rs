//! Reading the Dockerfile, or the whole context, from stdin.

use kiln_integration::*;
use serde_json::json;

const DF: &str = "FROM scratch\nCOPY f.txt /f.txt\nCOPY dir /dir/\nLABEL from=stdin\n";

fn context(sb: &Sandbox) {
    sb.write("ctx/f.txt", "f\n");
    sb.write_mode("ctx/dir/run.sh", "#!/bin/sh\n", 0o755);
}

fn check(img: &Image) {
    assert_eq!(img.file_str("f.txt"), "f\n");
    assert_eq!(img.file_str("dir/run.sh"), "#!/bin/sh\n");
    assert_eq!(img.entry("dir/run.sh").unwrap().mode, 0o755);
    assert_eq!(img.runtime()["Labels"], json!({"from": "stdin"}));
}

#[test]
fn dockerfile_on_stdin() {
    let sb = Sandbox::new();
    context(&sb);
    // A different Dockerfile in the context must be ignored.
    sb.dockerfile("FROM scratch\nLABEL from=file\n");
    let ctx = sb.ctx();
    let out = sb.kiln_stdin(&["build", "-f", "-", "-t", "s1", ctx.to_str().unwrap()], DF);
    out.ok();
    let img = sb.image("s1");
    check(&img);
    assert_eq!(out.last_line(), img.id());
}

#[test]
fn context_tar_on_stdin() {
    let sb = Sandbox::new();
    context(&sb);
    sb.dockerfile(DF);
    sb.tool("tar", &["-C", "ctx", "-cf", "ctx.tar", "."]).ok();
    sb.tool("tar", &["-C", "ctx", "-czf", "ctx.tar.gz", "."]).ok();
    let mut failures = Vec::new();
    for (file, tag) in [("ctx.tar.gz", "gz"), ("ctx.tar", "plain")] {
        let bytes = std::fs::read(sb.path(file)).unwrap();
        let out = sb.kiln_stdin(&["build", "-t", tag, "-"], bytes);
        if !out.success() {
            failures.push(format!("{file} on stdin: {}\n{}", out.command, out.transcript()));
            continue;
        }
        let img = sb.image(tag);
        check(&img);
        assert_eq!(out.last_line(), img.id());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // -f names the Dockerfile inside the tar.
    sb.write("ctx/other/Alt.Dockerfile", "FROM scratch\nCOPY f.txt /alt.txt\n");
    sb.tool("tar", &["-C", "ctx", "-cf", "alt.tar", "."]).ok();
    let bytes = std::fs::read(sb.path("alt.tar")).unwrap();
    sb.kiln_stdin(&["build", "-f", "other/Alt.Dockerfile", "-t", "alt", "-"], bytes).ok();
    assert_eq!(sb.image("alt").file_str("alt.txt"), "f\n");
}

#[test]
fn bare_dockerfile_as_context_and_both_on_stdin() {
    let sb = Sandbox::new();
    let out = sb.kiln_stdin(&["build", "-t", "bare", "-"], "FROM scratch\nLABEL bare=yes\n");
    out.ok();
    assert_eq!(sb.image("bare").runtime()["Labels"], json!({"bare": "yes"}));
    // A bare Dockerfile has no context to COPY from.
    let out = sb.kiln_stdin(&["build", "-t", "bare2", "-"], "FROM scratch\nCOPY f.txt /\n");
    out.fails_with(1).stderr_has(&["f.txt"]);
    // The Dockerfile and the context cannot both come from stdin.
    let out = sb.kiln_stdin(&["build", "-f", "-", "-t", "both", "-"], "FROM scratch\n");
    assert!(!out.success(), "{}", out.transcript());
    assert!(out.stderr.contains("stdin"), "{}", out.transcript());
}
