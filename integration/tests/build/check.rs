//! `kiln build --check`: plans without building, reports Dockerfile errors
//! like a compiler, and touches nothing.

use kiln_integration::*;

/// Runs `--check` with a store path that must not come into existence.
fn check(sb: &Sandbox, dockerfile: &str, extra: &[&str]) -> Output {
    sb.dockerfile(dockerfile);
    let store = sb.path("never-created");
    let ctx = sb.ctx();
    let mut args = vec!["--root", store.to_str().unwrap(), "build", "--check"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let out = sb.kiln_raw(&args, None, &[]);
    assert!(!store.exists(), "--check created the store directory\n{}", out.transcript());
    out
}

/// Asserts a compiler-style report: `error: Dockerfile:LINE:COL: ...`, the
/// source line, and a caret.
#[track_caller]
fn assert_located(out: &Output, line: usize, source_line: &str, needles: &[&str]) {
    assert!(!out.success(), "expected failure\n{}", out.transcript());
    assert_eq!(out.code(), Some(1), "{}", out.transcript());
    // The file is named as given on the command line (here a path ending in ctx/Dockerfile).
    let first = out.stderr.lines().next().unwrap_or_default();
    let marker = format!("Dockerfile:{line}:");
    assert!(first.starts_with("error: "), "{}", out.transcript());
    let at = first.find(&marker).unwrap_or_else(|| panic!("first stderr line lacks {marker:?}\n{}", out.transcript()));
    let col: String = first[at + marker.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
    assert!(!col.is_empty(), "no column after the line\n{}", out.transcript());
    assert!(out.stderr.contains(source_line), "the source line is quoted\n{}", out.transcript());
    assert!(
        out.stderr.lines().any(|l| l.trim_start().starts_with('^') || l.contains(" ^")),
        "no caret\n{}",
        out.transcript()
    );
    for n in needles {
        assert!(out.stderr.contains(n), "stderr lacks {n:?}\n{}", out.transcript());
    }
}

#[test]
fn check_prints_the_expanded_plan() {
    let sb = Sandbox::new();
    let out = check(
        &sb,
        "ARG BASE=scratch
FROM ${BASE} AS first
ARG DIR=/default
ENV APP=myapp
WORKDIR ${DIR}/${APP}
COPY f.txt ${APP}.txt
LABEL v=${DIR}
",
        &["--build-arg", "DIR=/from-cli"],
    );
    out.ok();
    let steps: Vec<&str> =
        out.stdout.lines().filter(|l| l.contains("STEP") || l.contains("WORKDIR") || l.contains("COPY")).collect();
    assert!(out.stdout.contains("/from-cli/myapp"), "WORKDIR is shown expanded\n{}", out.transcript());
    assert!(out.stdout.contains("myapp.txt"), "COPY's destination is shown expanded\n{}", out.transcript());
    assert!(out.stdout.contains("v=/from-cli"), "LABEL is shown expanded\n{}", out.transcript());
    assert!(!steps.is_empty(), "{}", out.transcript());
    // Nothing was read from the context (f.txt does not exist) and nothing built.
    assert!(!sb.exists("ctx/f.txt"));
}

#[test]
fn check_reports_errors_with_locations() {
    let sb = Sandbox::new();
    assert_located(&check(&sb, "LABEL a=b\n", &[]), 1, "LABEL a=b", &["FROM"]);
    assert_located(
        &check(&sb, "FROM scratch\nCOPPY a.txt /b\n", &[]),
        2,
        "COPPY a.txt /b",
        &["COPPY", "did you mean", "COPY"],
    );
    assert_located(
        &check(&sb, "FROM scratch\nCOPY --chmood=755 a.txt /b\n", &[]),
        2,
        "COPY --chmood=755 a.txt /b",
        &["chmood"],
    );
    assert_located(&check(&sb, "FROM scratch\nCOPY <<EOF /x\nhello\n", &[]), 2, "COPY <<EOF /x", &["EOF"]);
    assert_located(&check(&sb, "FROM scratch\nSHELL /bin/sh -c\n", &[]), 2, "SHELL /bin/sh -c", &["JSON"]);
    assert_located(&check(&sb, "FROM scratch\nSHELL [\"/bin/sh\", \"-c\"\n", &[]), 2, "SHELL [", &["JSON"]);

    let out = check(&sb, "FROM scratch AS a\nLABEL x=1\n", &["--target", "nope"]);
    assert_eq!(out.code(), Some(1), "{}", out.transcript());
    assert!(out.stderr.starts_with("error:") && out.stderr.contains("nope"), "{}", out.transcript());

    // The same errors fail a real build, before anything is written.
    sb.dockerfile("FROM scratch\nCOPPY a.txt /b\n");
    let ctx = sb.ctx();
    let out = sb.kiln(&["build", "-t", "x", ctx.to_str().unwrap()]);
    assert_located(&out, 2, "COPPY a.txt /b", &["did you mean"]);
    assert!(
        !sb.path("store/index.json").exists()
            || !std::fs::read_to_string(sb.path("store/index.json")).unwrap().contains("x:latest")
    );
}

#[test]
fn check_on_a_valid_multistage_file_with_target() {
    let sb = Sandbox::new();
    let out = check(&sb, "FROM scratch AS a\nLABEL a=1\nFROM scratch AS b\nCOPY --from=a / /\n", &["--target", "a"]);
    out.ok();
    assert!(out.stdout.contains("a=1"), "{}", out.transcript());
}
