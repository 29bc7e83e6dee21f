//! Dockerfiles are untrusted input: whatever their shape, parsing and
//! planning (`kiln build --check`) end with a plan or an error that names
//! the line, never a stack overflow, and take time linear in their size.
//!
//! Each test runs on a test thread (2 MiB of stack, less than the main
//! thread's 8), so recursion that only just fits on the main thread fails
//! here first.

use std::time::{Duration, Instant};

use kiln::dockerfile::{self, DockerfileError};
use kiln::plan::{self, BuildPlan, PlanOptions, StepKind};

fn opts() -> PlanOptions {
    PlanOptions { build_args: Vec::new(), target: None, platform: Some("linux/amd64".into()) }
}

fn plan_of(text: &str) -> Result<BuildPlan, DockerfileError> {
    let df = dockerfile::parse(text, "Dockerfile")?;
    plan::plan(&df, &opts(), &|_: &str, _: Option<&kiln::image::platform::Platform>| None)
}

fn plan_ok(text: &str) -> BuildPlan {
    plan_of(text).unwrap_or_else(|e| panic!("plan failed: {e}"))
}

/// Asserts the error's line and column and that the message holds `needle`.
fn plan_err(text: &str, line: usize, column: usize, needle: &str) -> DockerfileError {
    let err = match plan_of(text) {
        Ok(_) => panic!("expected an error for {:?}…", &text[..text.len().min(80)]),
        Err(e) => e,
    };
    assert_eq!((err.line, err.column), (line, column), "position of {:?}", err.message);
    assert!(err.message.contains(needle), "{:?} does not contain {needle:?}", err.message);
    err
}

/// `${X:-${X:-…a…}}`, `depth` levels.
fn nested(depth: usize) -> String {
    format!("{}a{}", "${X:-".repeat(depth), "}".repeat(depth))
}

#[test]
fn deeply_nested_substitutions_are_an_error_naming_the_line() {
    let deep = nested(10_000);
    let cases = [
        (format!("FROM scratch\nENV Y={deep}\n"), 2),
        (format!("FROM scratch\nLABEL \"k\"=\"{deep}\"\n"), 2),
        (format!("FROM scratch\nWORKDIR /{deep}\n"), 2),
        (format!("FROM scratch\nARG A={deep}\n"), 2),
        (format!("FROM scratch\nCOPY {deep} /dst\n"), 2),
        (format!("FROM scratch\nRUN --mount=type=cache,target=/{deep} true\n"), 2),
        (format!("FROM scratch\nCOPY <<EOF /f\n{deep}\nEOF\n"), 2),
        (format!("ARG A={deep}\nFROM scratch\n"), 1),
        (format!("FROM {deep}\n"), 1),
    ];
    for (text, line) in cases {
        let err = plan_err(&text, line, 1, "nested more than 100 levels deep");
        assert!(err.to_string().len() < 400, "the error quotes only the start of the word: {err}");
    }
    // Within the limit, nesting works as in docker.
    let plan = plan_ok(&format!("FROM scratch\nENV Y={}\n", nested(99)));
    assert!(matches!(&plan.stages[0].steps[0].kind, StepKind::Env(pairs) if pairs[0].1 == "a"));
}

#[test]
fn expansion_that_doubles_per_line_stops_at_its_limit() {
    let mut text = String::from("FROM scratch\nENV A0=xxxxxxxxxxxxxxxx\n");
    for i in 1..40 {
        text.push_str(&format!("ENV A{i}=$A{p}$A{p}\n", p = i - 1));
    }
    // 16 bytes doubled 16 times is 1 MiB; the next line passes the limit.
    plan_err(&text, 19, 1, "grows the word by more than 1048576 bytes");
}

#[test]
fn other_nested_shapes_end_cleanly() {
    // Deep JSON: not an exec-form array (serde_json stops at 128 levels), so
    // shell form, as docker reads text that is no JSON array.
    let brackets = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let plan = plan_ok(&format!("FROM scratch\nCMD {brackets}\nENTRYPOINT {brackets}\n"));
    assert_eq!(plan.stages[0].steps.len(), 2);
    let err = plan_of(&format!("FROM scratch\nSHELL {brackets}\n")).expect_err("SHELL needs an array");
    assert!(err.line == 2 && err.message.contains("JSON form"), "{err}");
    // ONBUILD cannot nest.
    assert!(dockerfile::parse("FROM a\nONBUILD ONBUILD ONBUILD RUN x\n", "Dockerfile").is_err());
    // Many heredocs on one line, a long chain of stages, a long continued line.
    let names: Vec<String> = (0..5000).map(|i| format!("<<E{i}")).collect();
    let bodies: String = (0..5000).map(|i| format!("x\nE{i}\n")).collect();
    plan_ok(&format!("FROM scratch\nCOPY {} /\n{bodies}", names.join(" ")));
    let mut chain = String::from("FROM scratch AS s0\n");
    for i in 0..10_000 {
        chain.push_str(&format!("FROM s{i} AS s{}\n", i + 1));
    }
    assert_eq!(plan_ok(&chain).needed.len(), 10_001);
    let continued = format!("FROM scratch\nRUN echo \\\n{}  y\n", "  x \\\n".repeat(50_000));
    plan_ok(&continued);
}

/// A Dockerfile of `n` lines made by `line(i)` after `FROM scratch`.
fn lines(n: usize, line: impl Fn(usize) -> String) -> String {
    let mut text = String::from("FROM scratch\n");
    for i in 0..n {
        text.push_str(&line(i));
        text.push('\n');
    }
    text
}

/// Planning 16,000 ENV, ARG or LABEL lines took 23 s to minutes when each
/// line copied every variable. Linear, it takes well under a second even
/// in a debug build; the bound is loose so a busy machine cannot flake it,
/// and a quadratic planner misses it by far (speed is measured by
/// `make bench`, this only catches the quadratic shape).
#[test]
fn thousands_of_variables_plan_in_linear_time() {
    const N: usize = 16_000;
    let shapes: [(&str, String); 6] = [
        ("ENV", lines(N, |i| format!("ENV V{i}=value{i} W{i}=$V{}", i.saturating_sub(1)))),
        ("ARG", lines(N, |i| format!("ARG A{i}=value{i}"))),
        ("LABEL", lines(N, |i| format!("LABEL l{i}=value{i}"))),
        ("meta ARG", format!("{}FROM scratch\n", (0..N).map(|i| format!("ARG A{i}=$A0{i}\n")).collect::<String>())),
        ("EXPOSE", "FROM scratch\n".to_string() + &"EXPOSE 1-65535/udp\n".repeat(2)),
        // Each RUN sees every ARG before it; copying them per RUN took
        // quadratic memory (8,000 pairs: 3.5 GB).
        ("ARG and RUN", lines(N, |i| format!("ARG A{i}=value{i}\nRUN true"))),
    ];
    for (what, text) in shapes {
        let started = Instant::now();
        let plan = plan_ok(&text);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "{N} {what} lines took {took:?}");
        if what == "ARG and RUN" {
            let StepKind::Run(last) = &plan.stages[0].steps[2 * N - 1].kind else { panic!("not a RUN step") };
            let args = last.build_args.to_vec();
            assert_eq!((args.len(), &args[N - 1].1), (N, &format!("value{}", N - 1)));
        }
        if what == "ENV" {
            let StepKind::Env(last) = &plan.stages[0].steps[N - 1].kind else { panic!("not an ENV step") };
            // Each line sees the variables the lines before it set.
            assert_eq!(last[1], (format!("W{}", N - 1), format!("value{}", N - 2)));
        }
    }
}

#[test]
fn chown_ids_beyond_the_kernels_are_refused_at_parse_time() {
    for (text, column) in [
        ("FROM scratch\nCOPY --chown=99999999999 a /a\n", 6),
        ("FROM scratch\nADD --chown=4294967295 a /a\n", 5),
        ("FROM scratch\nCOPY --chown=app:99999999999 a /a\n", 6),
        ("FROM scratch\nCOPY --chown=1:4294967295 a /a\n", 6),
    ] {
        let err = dockerfile::parse(text, "Dockerfile").expect_err(text);
        assert_eq!((err.line, err.column), (2, column), "{err}");
        assert!(err.message.contains("numeric ids go from 0 to 4294967294"), "{err}");
    }
    for text in [
        "FROM scratch\nRUN --mount=type=cache,target=/c,uid=4294967295 true\n",
        "FROM scratch\nRUN --mount=type=secret,id=s,gid=99999999999 true\n",
    ] {
        let err = dockerfile::parse(text, "Dockerfile").expect_err(text);
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("not a valid user or group id"), "{err}");
    }
    // The largest valid id, and names, still parse and plan.
    plan_ok("FROM scratch\nCOPY --chown=4294967294:4294967294 a /a\nADD --chown=app:staff a /b\n");
    plan_ok("FROM scratch\nRUN --mount=type=cache,target=/c,uid=4294967294,gid=0 true\n");
}

#[test]
fn chown_ids_from_variables_are_refused_at_plan_time() {
    plan_err("FROM scratch\nARG U=99999999999\nCOPY --chown=$U a /a\n", 3, 1, "numeric ids go from 0 to 4294967294");
    plan_err(
        "FROM scratch\nENV G=4294967295\nADD --chown=app:${G} a /a\n",
        3,
        1,
        "numeric ids go from 0 to 4294967294",
    );
    plan_err(
        "FROM scratch\nARG U=4294967295\nRUN --mount=type=cache,target=/c,uid=$U true\n",
        3,
        1,
        "not a valid user or group id",
    );
    plan_ok("FROM scratch\nARG U=1000\nCOPY --chown=$U:$U a /a\n");
}
