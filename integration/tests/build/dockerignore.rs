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
    assert!(
        paths.contains("app/a.log"),
        "the context's .dockerignore is not used when a Dockerfile-specific one exists"
    );
    assert!(paths.contains("app/keep.log"));

    // Without the specific file the context's applies again.
    std::fs::remove_file(sb.path("ctx/build/app.Dockerfile.dockerignore")).unwrap();
    sb.kiln(&["build", "-f", df.to_str().unwrap(), "-t", "ctxign", ctx.to_str().unwrap()]).ok();
    let paths = sb.image("ctxign").paths();
    assert!(!paths.contains("app/a.log"), "{paths:?}");
    assert!(paths.contains("app/notes.txt"), "{paths:?}");
}

#[test]
fn containerignore_when_there_is_no_dockerignore() {
    let sb = Sandbox::new();
    populate(&sb);
    sb.write("ctx/.containerignore", "*.log\n");
    let paths = sb.build("FROM scratch\nCOPY . /app/\n", "cign").paths();
    assert!(!paths.contains("app/a.log"), ".containerignore must exclude a.log: {paths:?}");
    assert!(paths.contains("app/sub/b.log"), "*.log matches at the root only: {paths:?}");
    assert!(paths.contains("app/notes.txt"), "{paths:?}");

    // Both files: .dockerignore's rules, and only those, apply.
    sb.write("ctx/.dockerignore", "*.txt\n");
    let paths = sb.build("FROM scratch\nCOPY . /app/\n", "both").paths();
    assert!(paths.contains("app/a.log"), ".containerignore is not read when .dockerignore exists: {paths:?}");
    assert!(!paths.contains("app/notes.txt"), "{paths:?}");
}

#[test]
fn ignorefile_flag_overrides_both() {
    let sb = Sandbox::new();
    populate(&sb);
    sb.write("ctx/.dockerignore", "*.txt\n");
    sb.write("ctx/.containerignore", "*.log\n");
    let rules = sb.write("rules.ignore", "main.c\ndocs\n");
    let (_, img) = sb.build_with("FROM scratch\nCOPY . /app/\n", "flag", &["--ignorefile", rules.to_str().unwrap()]);
    let paths = img.paths();
    assert!(!paths.contains("app/main.c"), "--ignorefile excludes main.c: {paths:?}");
    assert!(!paths.contains("app/docs/readme.md"), "{paths:?}");
    assert!(paths.contains("app/notes.txt"), "the context's .dockerignore is not used with --ignorefile: {paths:?}");
    assert!(paths.contains("app/a.log"), "nor its .containerignore: {paths:?}");

    // A context that comes whole (here a tar on stdin) takes it over its own too.
    sb.tool("tar", &["-C", "ctx", "-cf", "ctx.tar", "."]).ok();
    let tar = std::fs::read(sb.path("ctx.tar")).unwrap();
    sb.kiln_stdin(&["build", "--ignorefile", rules.to_str().unwrap(), "-t", "tarflag", "-"], tar).ok();
    let paths = sb.image("tarflag").paths();
    assert!(!paths.contains("app/main.c"), "{paths:?}");
    assert!(paths.contains("app/notes.txt") && paths.contains("app/a.log"), "{paths:?}");

    let missing = sb.path("nope.ignore");
    sb.try_build("FROM scratch\nCOPY . /app/\n", "nofile", &["--ignorefile", missing.to_str().unwrap()])
        .fails_with(1)
        .stderr_has(&["--ignorefile", "nope.ignore"]);
}
