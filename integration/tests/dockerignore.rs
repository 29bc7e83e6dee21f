//! .dockerignore and <Dockerfile>.dockerignore decide what the context holds.

use kiln_integration::*;

fn populate(sb: &Sandbox) {
    for f in [
        "ctx/a.log",
        "ctx/keep.log",
        "ctx/sub/b.log",
        "ctx/main.c",
        "ctx/notes.txt",
        "ctx/tmp/x",
        "ctx/a/b/tmp/y",
        "ctx/a/b/tmpfile",
        "ctx/docs/readme.md",
        "ctx/sub/docs/keep.md",
    ] {
        sb.write(f, f);
    }
}

#[test]
fn dockerignore_patterns_exceptions_and_dirs() {
    let sb = Sandbox::new();
    populate(&sb);
    sb.write("ctx/.dockerignore", "# comment\n*.log\n!keep.log\n**/tmp\ndocs/\n");
    let img = sb.build("FROM scratch\nCOPY . /app/\n", "ign");
    let paths = img.paths();
    let has = |p: &str| paths.contains(&format!("app/{p}"));
    for kept in ["keep.log", "sub/b.log", "main.c", "notes.txt", "a/b/tmpfile", "sub/docs/keep.md"] {
        assert!(has(kept), "{kept} must be in the image: {paths:?}");
    }
    for gone in ["a.log", "tmp", "tmp/x", "a/b/tmp", "a/b/tmp/y", "docs", "docs/readme.md"] {
        assert!(!has(gone), "{gone} is ignored but is in the image: {paths:?}");
    }
    // Contents are the context's.
    assert_eq!(img.file_str("app/sub/b.log"), "ctx/sub/b.log");

    // An ignored file cannot be named by COPY either.
    sb.dockerfile("FROM scratch\nCOPY a.log /\n");
    let ctx = sb.ctx();
    let out = sb.kiln(&["build", "-t", "ign2", ctx.to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["a.log", "Dockerfile:2"]);
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    let sb = Sandbox::new();
    populate(&sb);
    sb.write("ctx/.dockerignore", "*.log\n");
    sb.write("ctx/build/app.Dockerfile", "FROM scratch\nCOPY . /app/\n");
    sb.write("ctx/build/app.Dockerfile.dockerignore", "*.txt\nbuild\n");
    let ctx = sb.ctx();
    let df = sb.path("ctx/build/app.Dockerfile");
    sb.kiln(&["build", "-f", df.to_str().unwrap(), "-t", "spec", ctx.to_str().unwrap()]).ok();
    let paths = sb.image("spec").paths();
    assert!(!paths.contains("app/notes.txt"), "the Dockerfile's own ignore file excludes *.txt: {paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("app/build")), "{paths:?}");
    assert!(paths.contains("app/a.log"), "the context's .dockerignore is not used when a Dockerfile-specific one exists");
    assert!(paths.contains("app/keep.log"));

    // Without the specific file the context's applies again.
    std::fs::remove_file(sb.path("ctx/build/app.Dockerfile.dockerignore")).unwrap();
    sb.kiln(&["build", "-f", df.to_str().unwrap(), "-t", "ctxign", ctx.to_str().unwrap()]).ok();
    let paths = sb.image("ctxign").paths();
    assert!(!paths.contains("app/a.log"), "{paths:?}");
    assert!(paths.contains("app/notes.txt"), "{paths:?}");
}
