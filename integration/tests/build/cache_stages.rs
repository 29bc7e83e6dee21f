//! The layer cache and multi-stage features of issue 5, without RUN: miss
//! explanations, --no-cache-filter, --build-context, ONBUILD from an image
//! base, unused build-arg warnings and predefined platform args.

use kiln_integration::Sandbox;

fn build(sb: &Sandbox, extra: &[&str]) -> kiln_integration::Output {
    let ctx = sb.ctx();
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    sb.kiln(&args)
}

#[test]
fn misses_say_why_and_repeat_builds_hit() {
    let sb = Sandbox::new();
    sb.write("ctx/a.txt", "a\n");
    sb.write("ctx/b.txt", "b\n");
    sb.dockerfile("FROM scratch\nARG V=1\nCOPY a.txt /a\nLABEL v=$V\nCOPY b.txt /b\n");
    let first = build(&sb, &["-t", "c"]);
    first.ok();
    let second = build(&sb, &["-t", "c"]);
    second.ok();
    assert_eq!(second.stdout.matches("--> Using cache").count(), 4, "{}", second.transcript());
    assert_eq!(first.last_line(), second.last_line(), "a fully cached build gives the same image id");

    // Content change: the COPY of b misses and says which file.
    sb.write("ctx/b.txt", "changed\n");
    let third = build(&sb, &["-t", "c"]);
    third.ok();
    assert!(third.stdout.contains("--> cache miss: file b.txt changed (content)"), "{}", third.transcript());
    assert_eq!(third.stdout.matches("--> Using cache").count(), 3, "{}", third.transcript());

    // Mode change only.
    sb.chmod("ctx/a.txt", 0o755);
    let fourth = build(&sb, &["-t", "c"]);
    assert!(fourth.stdout.contains("--> cache miss: file a.txt changed (mode)"), "{}", fourth.transcript());

    // A build arg change: the LABEL that uses it misses and names the arg.
    let fifth = build(&sb, &["-t", "c", "--build-arg", "V=2"]);
    fifth.ok();
    assert!(fifth.stdout.contains("cache miss: the instruction changed (was `LABEL v=1`)"), "{}", fifth.transcript());

    // --no-cache runs everything.
    let sixth = build(&sb, &["-t", "c", "--no-cache"]);
    assert_eq!(sixth.stdout.matches("Using cache").count(), 0, "{}", sixth.transcript());
}

#[test]
fn no_cache_filter_rebuilds_only_that_stage() {
    let sb = Sandbox::new();
    sb.write("ctx/a.txt", "a\n");
    sb.dockerfile("FROM scratch AS one\nCOPY a.txt /a\nFROM scratch AS two\nCOPY --from=one /a /b\n");
    build(&sb, &["-t", "f"]).ok();
    let out = build(&sb, &["-t", "f", "--no-cache-filter", "two"]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let hits: Vec<&&str> = lines.iter().filter(|l| l.contains("Using cache")).collect();
    assert_eq!(hits.len(), 1, "{}", out.transcript());
    assert!(hits[0].starts_with("[1/2]"), "only stage one is cached: {}", out.transcript());
}

#[test]
fn build_contexts_name_directories_and_images() {
    let sb = Sandbox::new();
    sb.write("extra/e.txt", "extra\n");
    sb.write("ctx/f.txt", "f\n");
    sb.build("FROM scratch\nCOPY f.txt /base-file\n", "basis:1");
    sb.dockerfile("FROM base\nCOPY --from=more e.txt /e.txt\n");
    let extra = sb.path("extra");
    let more = format!("more={}", extra.display());
    let out = build(&sb, &["-t", "bc", "--build-context", &more, "--build-context", "base=docker-image://basis:1"]);
    out.ok();
    let fs = sb.image("bc").fs();
    assert!(fs.contains_key("base-file") && fs.contains_key("e.txt"), "{:?}", fs.keys().collect::<Vec<_>>());
    // --check accepts the names it is given and refuses the ones it is not.
    let ctx = sb.ctx();
    sb.kiln(&["build", "--check", "--build-context", &more, ctx.to_str().unwrap()]).ok();
    let bad = sb.kiln(&["build", "--check", ctx.to_str().unwrap()]);
    assert!(!bad.success() && bad.stderr.contains("COPY --from=more: no stage has that name"), "{}", bad.transcript());
}

#[test]
fn onbuild_triggers_of_an_image_base_run_first() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    sb.build("FROM scratch\nONBUILD COPY f.txt /from-trigger\nONBUILD LABEL triggered=yes\n", "parent:1");
    let child = sb.build("FROM parent:1\nCOPY f.txt /own\n", "child:1");
    let fs = child.fs();
    assert!(fs.contains_key("from-trigger") && fs.contains_key("own"));
    assert_eq!(child.runtime()["Labels"]["triggered"], "yes");
    assert!(child.runtime().get("OnBuild").is_none_or(|v| v.is_null()), "triggers are not inherited");
}

#[test]
fn unused_build_args_warn_and_platform_args_expand() {
    let sb = Sandbox::new();
    sb.dockerfile(
        "FROM scratch\nARG TARGETARCH\nARG TARGETPLATFORM\nLABEL arch=$TARGETARCH platform=$TARGETPLATFORM\n",
    );
    let out = build(&sb, &["-t", "p", "--platform", "linux/arm64", "--build-arg", "NOBODY=1"]);
    out.ok();
    assert!(out.stderr.contains("build args were not consumed: [NOBODY]"), "{}", out.transcript());
    let img = sb.image("p");
    assert_eq!(img.runtime()["Labels"]["arch"], "arm64");
    assert_eq!(img.runtime()["Labels"]["platform"], "linux/arm64");
    assert_eq!(img.config["architecture"], "arm64");
}

/// A 10-step Dockerfile rebuilt unchanged runs no step; touching a file that
/// .dockerignore excludes keeps every hit, even for `COPY . /app`.
#[test]
fn unchanged_ten_steps_run_nothing_and_ignored_files_do_not_count() {
    let sb = Sandbox::new();
    sb.write("ctx/.dockerignore", "*.log\n");
    sb.write("ctx/app.txt", "app\n");
    sb.write("ctx/debug.log", "noise 1\n");
    sb.dockerfile(
        "FROM scratch\nARG V=1\nCOPY . /app\nENV A=1\nLABEL l=1\nWORKDIR /app\nCOPY app.txt /copy\n\
         USER 1000\nEXPOSE 80\nCMD [\"/x\"]\nSTOPSIGNAL SIGINT\n",
    );
    build(&sb, &["-t", "ten"]).ok();
    let again = build(&sb, &["-t", "ten"]);
    again.ok();
    assert_eq!(again.stdout.matches("--> Using cache").count(), 10, "{}", again.transcript());
    assert!(!again.stdout.contains("cache miss"), "{}", again.transcript());
    sb.write("ctx/debug.log", "noise 2, much longer than before\n");
    let touched = build(&sb, &["-t", "ten"]);
    touched.ok();
    assert_eq!(touched.stdout.matches("--> Using cache").count(), 10, "{}", touched.transcript());
    assert!(!sb.image("ten").fs().contains_key("app/debug.log"));
}
