//! Planner tests. `df` is a tiny test-only reader for the subset of
//! Dockerfile syntax these tests use (one instruction a line, heredoc bodies
//! for COPY), so the tests do not depend on the real parser.

use std::collections::HashMap;

use super::*;
use crate::dockerfile::ast::*;
// The Dockerfile's mounts; the plan's typed ones are `crate::plan::Mount`.
use crate::dockerfile::ast::Mount;
use crate::image::config::ContainerConfig;

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    for ch in text.chars() {
        match quote {
            Some(q) if ch == q => quote = None,
            None if ch == '"' || ch == '\'' => quote = Some(ch),
            None if ch.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                continue;
            }
            _ => {}
        }
        word.push(ch);
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn pairs(text: &str) -> Vec<KeyValue> {
    words(text)
        .into_iter()
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap_or((&w, ""));
            KeyValue { key: k.to_string(), value: v.to_string() }
        })
        .collect()
}

fn copy_cmd(args: &[String], heredocs: Vec<Heredoc>) -> CopyCmd {
    let mut copy = CopyCmd {
        sources: Vec::new(),
        dest: String::new(),
        heredocs,
        from: None,
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: Vec::new(),
        checksum: None,
        keep_git_dir: None,
        unpack: None,
    };
    let mut rest = Vec::new();
    for arg in args {
        match arg.strip_prefix("--").and_then(|f| f.split_once('=').or(Some((f, "")))) {
            Some(("from", v)) => copy.from = Some(v.into()),
            Some(("chown", v)) => copy.chown = Some(v.into()),
            Some(("chmod", v)) => copy.chmod = Some(v.into()),
            Some(("exclude", v)) => copy.exclude.push(v.into()),
            Some(("checksum", v)) => copy.checksum = Some(v.into()),
            Some(("unpack", v)) => copy.unpack = Some(v == "true"),
            Some(("link", _)) => copy.link = true,
            _ => rest.push(arg.clone()),
        }
    }
    copy.dest = rest.pop().unwrap_or_default();
    copy.sources = rest;
    copy
}

fn command(line: &str, heredocs: Vec<Heredoc>) -> Command {
    let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let w = words(rest);
    match keyword.to_ascii_uppercase().as_str() {
        "FROM" => {
            let mut platform = None;
            let mut w = w.into_iter().peekable();
            if let Some(p) = w.peek().and_then(|first| first.strip_prefix("--platform=")).map(str::to_string) {
                platform = Some(p);
                w.next();
            }
            let image = w.next().unwrap_or_default();
            let alias = w.nth(1);
            Command::From { image, alias, platform }
        }
        "ARG" => Command::Arg(
            w.iter()
                .map(|d| match d.split_once('=') {
                    Some((k, v)) => ArgDecl { name: k.into(), default: Some(v.into()) },
                    None => ArgDecl { name: d.clone(), default: None },
                })
                .collect(),
        ),
        "ENV" => Command::Env(pairs(rest)),
        "LABEL" => Command::Label(pairs(rest)),
        "RUN" => {
            let mut mounts = Vec::new();
            let mut text = rest;
            while let Some(after) = text.strip_prefix("--mount=") {
                let (spec, tail) = after.split_once(' ').unwrap_or((after, ""));
                let options = spec
                    .split(',')
                    .filter(|f| !f.starts_with("type="))
                    .map(|f| match f.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (f.to_string(), None),
                    })
                    .collect();
                mounts.push(Mount { kind: MountKind::Bind, options });
                text = tail;
            }
            Command::Run(RunCmd { cmd: CmdLine::Shell(text.into()), heredocs, mounts, network: None, security: None })
        }
        "CMD" => Command::Cmd(CmdLine::Shell(rest.into())),
        "WORKDIR" => Command::Workdir(rest.into()),
        "USER" => Command::User(rest.into()),
        "EXPOSE" => Command::Expose(w),
        "VOLUME" => Command::Volume(w),
        "STOPSIGNAL" => Command::StopSignal(rest.into()),
        "SHELL" => Command::Shell(w),
        "HEALTHCHECK" if rest == "NONE" => Command::Healthcheck(None),
        "HEALTHCHECK" => Command::Healthcheck(Some(HealthSpec {
            test: CmdLine::Shell(rest.trim_start_matches("CMD ").into()),
            interval: Some(30_000_000_000),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: Some(3),
        })),
        "ONBUILD" => Command::Onbuild(Box::new(instruction(rest, 0, Vec::new()))),
        "COPY" => Command::Copy(copy_cmd(&w, heredocs)),
        "ADD" => Command::Add(copy_cmd(&w, heredocs)),
        other => panic!("test reader does not know {other}"),
    }
}

fn instruction(line: &str, number: usize, heredocs: Vec<Heredoc>) -> Instruction {
    let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
    Instruction {
        span: Span { line: number, column: 1, end_line: number },
        original: format!("{} {}", keyword.to_ascii_uppercase(), rest),
        command: command(line, heredocs),
    }
}

fn df(text: &str) -> Dockerfile {
    let mut instructions = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_start()));
    while let Some((number, line)) = lines.next() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut heredocs = Vec::new();
        for word in words(line).iter().filter(|w| w.starts_with("<<")) {
            let raw = word.trim_start_matches("<<");
            let name = raw.trim_matches(|c| c == '"' || c == '\'').to_string();
            let mut content = String::new();
            for (_, body) in lines.by_ref() {
                if body == name {
                    break;
                }
                content.push_str(body);
                content.push('\n');
            }
            heredocs.push(Heredoc { name: name.clone(), content, expand: raw == name, strip_tabs: false });
        }
        instructions.push(instruction(line, number, heredocs));
    }
    Dockerfile { path: "Dockerfile".into(), directives: Directives::default(), instructions }
}

fn opts(build_args: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        build_args: build_args.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect(),
        target: None,
        platform: Some("linux/amd64".into()),
    }
}

fn no_images(_: &str) -> Option<Vec<String>> {
    None
}

/// Base images with the env `lookup` gives and no ONBUILD triggers.
fn envs(lookup: impl Fn(&str) -> Option<Vec<String>>) -> impl Fn(&str, Option<&Platform>) -> Option<ContainerConfig> {
    move |reference, _| lookup(reference).map(|env| ContainerConfig { env: Some(env), ..Default::default() })
}

fn plan_text(text: &str, o: &PlanOptions) -> BuildPlan {
    plan(&df(text), o, &envs(no_images)).unwrap_or_else(|err| panic!("plan failed: {err}"))
}

fn plan_err(text: &str, o: &PlanOptions) -> DockerfileError {
    plan(&df(text), o, &envs(no_images)).expect_err("plan should fail")
}

fn last_stage(p: &BuildPlan) -> &Stage {
    &p.stages[p.target]
}

fn users(stage: &Stage) -> Vec<String> {
    stage
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::User(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

fn env_steps(stage: &Stage) -> Vec<(String, String)> {
    stage
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Env(pairs) => Some(pairs.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn run_step(stage: &Stage, n: usize) -> &RunStep {
    stage
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Run(r) => Some(r),
            _ => None,
        })
        .nth(n)
        .expect("run step")
}

fn copy_step(stage: &Stage, n: usize) -> &CopyStep {
    stage
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Copy(c) => Some(c),
            _ => None,
        })
        .nth(n)
        .expect("copy step")
}

// --- ARG scoping, from the Dockerfile reference's ARG section ---

#[test]
fn arg_is_visible_only_after_its_declaration() {
    let text = "FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username";
    let p = plan_text(text, &opts(&[("username", "what_user")]));
    assert_eq!(users(last_stage(&p)), ["some_user", "what_user"]);
    let p = plan_text(text, &opts(&[]));
    assert_eq!(users(last_stage(&p)), ["some_user", ""]);
}

#[test]
fn arg_goes_out_of_scope_at_the_end_of_its_stage() {
    let text = "FROM busybox\nARG SETTINGS\nUSER $SETTINGS\nFROM busybox\nUSER x$SETTINGS";
    let p = plan_text(text, &opts(&[("SETTINGS", "s")]));
    assert_eq!(users(&p.stages[0]), ["s"]);
    assert_eq!(users(&p.stages[1]), ["x"]);
}

#[test]
fn meta_args_reach_from_and_redeclared_args_only() {
    let text = "ARG VERSION=latest\nFROM busybox:$VERSION\nUSER v$VERSION\nARG VERSION\nUSER v$VERSION";
    let p = plan_text(text, &opts(&[]));
    let stage = last_stage(&p);
    assert_eq!(stage.base, Base::Image("busybox:latest".into()));
    assert_eq!(stage.original, "FROM busybox:latest");
    assert_eq!(users(stage), ["v", "vlatest"]);

    let p = plan_text(text, &opts(&[("VERSION", "1.36")]));
    assert_eq!(last_stage(&p).base, Base::Image("busybox:1.36".into()));
    assert_eq!(users(last_stage(&p)), ["v", "v1.36"]);
}

#[test]
fn meta_arg_defaults_expand_with_earlier_meta_args() {
    let text = "ARG REG=docker.io\nARG IMG=${REG}/library/alpine\nFROM $IMG";
    let p = plan_text(text, &opts(&[("REG", "quay.io")]));
    assert_eq!(last_stage(&p).base, Base::Image("quay.io/library/alpine".into()));
}

#[test]
fn arg_default_is_expanded_and_build_arg_wins() {
    let text = "FROM scratch\nENV BASE=/opt\nARG DIR=$BASE/app\nWORKDIR $DIR";
    let p = plan_text(text, &opts(&[]));
    let workdir = last_stage(&p).steps.iter().find_map(|s| match &s.kind {
        StepKind::Workdir(w) => Some(w.clone()),
        _ => None,
    });
    assert_eq!(workdir.as_deref(), Some("/opt/app"));
    let p = plan_text(text, &opts(&[("DIR", "/srv")]));
    assert_eq!(last_stage(&p).steps[2].original, "WORKDIR /srv");
}

// --- ENV and ARG precedence ---

#[test]
fn env_overrides_arg_declared_before_it() {
    let text = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nUSER $CONT_IMG_VER";
    let p = plan_text(text, &opts(&[("CONT_IMG_VER", "v2.0.1")]));
    assert_eq!(users(last_stage(&p)), ["v1.0.0"]);
}

#[test]
fn env_can_default_from_arg() {
    let text = "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\nUSER $CONT_IMG_VER";
    assert_eq!(users(last_stage(&plan_text(text, &opts(&[("CONT_IMG_VER", "v2.0.1")])))), ["v2.0.1"]);
    assert_eq!(users(last_stage(&plan_text(text, &opts(&[])))), ["v1.0.0"]);
}

/// BuildKit adds a valued ARG to the build's env over an ENV before it (the
/// classic builder kept the ENV); a later ENV wins again; an ARG without a
/// value changes nothing; the image's env keeps the ENV either way.
#[test]
fn arg_after_env_overrides_it_until_the_next_env_buildkit() {
    let text = "FROM scratch\nENV X=env\nARG X=arg\nUSER $X\nRUN echo $X\nENV X=again\nUSER $X\nRUN echo $X";
    let p = plan_text(text, &opts(&[("X", "cli")]));
    let stage = last_stage(&p);
    assert_eq!(users(stage), ["cli", "again"]);
    assert_eq!(run_step(stage, 0).build_args.to_vec(), [("X".to_string(), "cli".to_string())]);
    assert_eq!(run_step(stage, 0).args_over_env, ["X"], "the RUN runs with the ARG's value");
    assert!(run_step(stage, 1).args_over_env.is_empty());
    assert_eq!(env_steps(stage), [("X".to_string(), "env".to_string()), ("X".into(), "again".into())]);
    // The base image's env is an env too; a valueless ARG leaves it.
    let base = |_: &str| Some(vec!["HOME=/root".to_string(), "LANG=C".to_string()]);
    let text = "FROM img\nARG HOME=/arg\nARG LANG\nUSER $HOME:$LANG";
    let p = plan(&df(text), &opts(&[]), &envs(base)).unwrap();
    assert_eq!(users(last_stage(&p)), ["/arg:C"]);
}

#[test]
fn env_pairs_see_the_env_from_before_the_instruction() {
    let text = "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc";
    let p = plan_text(text, &opts(&[]));
    let env = env_steps(last_stage(&p));
    assert_eq!(env[2], ("def".to_string(), "hello".to_string()));
    assert_eq!(env[3], ("ghi".to_string(), "bye".to_string()));
    assert_eq!(last_stage(&p).steps[1].original, "ENV abc=bye def=hello");
}

#[test]
fn base_image_env_is_used_and_path_defaults() {
    let text = "FROM golang:1.22\nENV PATH=/app/bin:$PATH GO=$GOLANG_VERSION\nFROM scratch\nENV P=$PATH";
    let lookup = |image: &str| {
        (image == "golang:1.22").then(|| vec!["GOLANG_VERSION=1.22.5".to_string(), "PATH=/go/bin".into()])
    };
    let mut o = opts(&[]);
    o.target = Some("0".into());
    // --target takes a stage name, not an index.
    assert!(plan(&df(text), &o, &envs(lookup)).is_err());
    o.target = None;
    let p = plan(&df(text), &o, &envs(lookup)).unwrap();
    // Stage 0 is not needed by the last stage, so its image is not looked up.
    let env0 = env_steps(&p.stages[0]);
    assert_eq!(env0[0].1, format!("/app/bin:{}", args::DEFAULT_PATH));
    assert_eq!(env_steps(&p.stages[1])[0].1, args::DEFAULT_PATH);

    let text = "FROM golang:1.22\nENV PATH=/app/bin:$PATH GO=$GOLANG_VERSION";
    let p = plan(&df(text), &o, &envs(lookup)).unwrap();
    assert_eq!(env_steps(&p.stages[0]), [("PATH".into(), "/app/bin:/go/bin".into()), ("GO".into(), "1.22.5".into())]);
}

#[test]
fn run_build_args_in_order_with_values_and_proxies() {
    let text = "FROM scratch\nARG A=1\nARG B\nARG C=3\nARG A=one\nRUN echo $A";
    let o = opts(&[("HTTP_PROXY", "http://proxy:3128"), ("C", "three")]);
    let p = plan_text(text, &o);
    let run = run_step(last_stage(&p), 0);
    assert_eq!(
        run.build_args.to_vec(),
        [
            ("A".to_string(), "one".to_string()),
            ("C".into(), "three".into()),
            ("HTTP_PROXY".into(), "http://proxy:3128".into())
        ]
    );
    assert_eq!(run.cmd, CmdLine::Shell("echo $A".into()), "RUN text is never expanded");
    assert_eq!(last_stage(&p).steps[4].original, "RUN echo $A");
    assert!(p.unused_build_args.is_empty(), "{:?}", p.unused_build_args);
}

#[test]
fn predefined_platform_args() {
    let text = "FROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETARCH\nARG TARGETOS\nUSER $TARGETOS-$TARGETARCH-$BUILDOS";
    let mut o = opts(&[]);
    o.platform = Some("linux/arm64".into());
    let p = plan_text(text, &o);
    let stage = last_stage(&p);
    assert_eq!(stage.platform, Some(Platform::host()));
    assert_eq!(users(stage), ["linux-arm64-"], "BUILDOS is not declared in the stage");
    assert_eq!(stage.original, format!("FROM --platform={} golang AS build", Platform::host()));
}

#[test]
fn unused_build_args_are_reported() {
    let text = "ARG META\nFROM scratch AS a\nARG USED\nFROM scratch AS b\nARG ONLY_IN_B";
    let mut o = opts(&[
        ("META", "1"),
        ("USED", "2"),
        ("ONLY_IN_B", "3"),
        ("NOPE", "4"),
        ("no_proxy", "x"),
        ("TARGETOS", "linux"),
    ]);
    o.target = Some("A".into());
    let p = plan_text(text, &o);
    assert_eq!(p.target, 0);
    assert_eq!(p.unused_build_args, ["ONLY_IN_B", "NOPE"]);
}

// --- stages, deps and targets ---

#[test]
fn multi_stage_deps_and_needed() {
    let text = "\
FROM golang AS Build
RUN go build
FROM alpine AS tools
FROM build AS test
RUN go test
FROM scratch
COPY --from=BUILD /app /app
RUN --mount=type=bind,from=tools,target=/t true
COPY --from=0 /x /x
COPY --from=alpine:3 /etc/passwd /etc/passwd";
    let p = plan_text(text, &opts(&[]));
    assert_eq!(p.stages[0].name.as_deref(), Some("build"));
    assert_eq!(p.stages[2].base, Base::Stage(0));
    assert_eq!(p.stages[2].deps, [0]);
    assert_eq!(p.stages[3].deps, [0, 1]);
    assert_eq!(p.target, 3);
    assert_eq!(p.needed, [0, 1, 3]);
    let last = last_stage(&p);
    assert_eq!(copy_step(last, 0).from, Some(CopyFrom::Stage(0)));
    assert_eq!(copy_step(last, 2).from, Some(CopyFrom::Image("alpine:3".into())));

    let mut o = opts(&[]);
    o.target = Some("test".into());
    let p = plan_text(text, &o);
    assert_eq!((p.target, p.needed.clone()), (2, vec![0, 2]));
}

#[test]
fn unknown_target_lists_stage_names() {
    let mut o = opts(&[]);
    o.target = Some("tset".into());
    let err = plan_err("FROM a AS build\nFROM b AS test", &o);
    assert_eq!(err.message, "target stage \"tset\" could not be found");
    let help = err.help.unwrap();
    assert!(help.contains("build, test") && help.contains("did you mean \"test\""), "{help}");
}

#[test]
fn duplicate_and_invalid_stage_names() {
    let err = plan_err("FROM a AS x\nFROM b AS X", &opts(&[]));
    assert_eq!((err.line, err.message.contains("duplicate stage name \"x\"")), (2, true));
    let err = plan_err("FROM a AS 1x", &opts(&[]));
    assert!(err.message.contains("invalid name for build stage"), "{err}");
}

#[test]
fn copy_from_must_name_an_earlier_stage() {
    let err = plan_err("FROM a AS one\nCOPY --from=two /a /a\nFROM b AS two", &opts(&[]));
    assert_eq!(err.line, 2);
    assert!(err.message.contains("needs to be defined before current stage \"one\""), "{err}");
    let err = plan_err("FROM a\nCOPY --from=0 /a /a", &opts(&[]));
    assert!(err.message.contains("defined before"), "{err}");
    let err = plan_err("FROM a\nFROM b\nCOPY --from=7 /a /a", &opts(&[]));
    assert_eq!(err.message, "invalid stage index 7");
    let err = plan_err("ARG S=x\nFROM a AS x\nFROM b\nCOPY --from=$S /a /a", &opts(&[]));
    assert!(err.message.contains("variable expansion is not supported"), "{err}");
    assert!(err.help.unwrap().contains("FROM ${VAR} AS name"));
}

#[test]
fn from_a_later_stage_name_is_an_image() {
    let p = plan_text("FROM later\nFROM scratch AS later", &opts(&[]));
    assert_eq!(p.stages[0].base, Base::Image("later".into()));
}

#[test]
fn blank_base_and_no_from_are_errors() {
    let err = plan_err("ARG IMG\nFROM $IMG", &opts(&[]));
    assert!(err.message.contains("should not be blank"), "{err}");
    let err = plan_err("ARG A=1", &opts(&[]));
    assert!(err.message.contains("no FROM"), "{err}");
    let err = plan_err("ENV A=1\nFROM scratch", &opts(&[]));
    assert!(err.message.contains("ENV before the first FROM"), "{err}");
}

#[test]
fn errors_in_unneeded_stages_are_ignored() {
    let text = "FROM a AS release\nUSER ${VERSION:?set VERSION}\nFROM b AS dev\nUSER dev";
    let p = plan_text(text, &opts(&[]));
    assert!(p.stages[0].steps.is_empty());
    let mut o = opts(&[]);
    o.target = Some("release".into());
    let err = plan_err(text, &o);
    assert_eq!(err.line, 2);
    assert!(err.message.contains("VERSION: set VERSION"), "{err}");
}

#[test]
fn child_stage_inherits_env_args_and_onbuild() {
    let text = "\
FROM scratch AS base
ARG MODE=debug
ENV HOME=/root
ONBUILD COPY app $HOME/app
FROM base
USER $MODE:$HOME";
    let p = plan_text(text, &opts(&[]));
    let child = last_stage(&p);
    assert_eq!(child.deps, [0]);
    assert_eq!(copy_step(child, 0).dest, "/root/app", "the trigger runs first, expanded in the child");
    assert_eq!(users(child), ["debug:/root"]);
    assert!(matches!(&p.stages[0].steps[2].kind, StepKind::Onbuild(t) if t == "COPY app $HOME/app"));
}

/// BuildKit dispatches an image's ONBUILD triggers in the child stage:
/// `--build-arg`s and meta args reach a trigger's ARG, the image's env its
/// expansion, what the triggers declare is seen by the stage's own
/// instructions, and a `COPY --from` in a trigger makes that stage needed.
#[test]
fn image_triggers_are_planned_in_the_child_stage() {
    let text = "\
ARG G=global
FROM scratch AS tools
FROM scratch AS unused
FROM base
USER $MODE:$SEEN";
    let triggers = ["ARG MODE=debug", "ARG G", "ENV SEEN=$MODE-$HOME-$G", "COPY --from=tools /t /t"];
    let info = |r: &str, _: Option<&Platform>| {
        (r == "base").then(|| ContainerConfig {
            env: Some(vec!["HOME=/home/x".into()]),
            on_build: Some(triggers.iter().map(|t| t.to_string()).collect()),
            ..Default::default()
        })
    };
    let p = plan(&df(text), &opts(&[("MODE", "cli")]), &info).unwrap();
    let child = last_stage(&p);
    assert!(child.base_read);
    assert_eq!(child.deps, [0], "the trigger's COPY --from needs the tools stage");
    assert!(p.needed.contains(&0) && !p.needed.contains(&1));
    assert_eq!(env_steps(child), [("SEEN".to_string(), "cli-/home/x-global".to_string())]);
    assert_eq!(copy_step(child, 0).from, Some(CopyFrom::Stage(0)));
    assert_eq!(users(child), ["cli:cli-/home/x-global"], "the stage sees what the triggers declared");
    assert!(child.steps[..4].iter().all(|s| s.span.line == 4), "trigger steps point at the FROM");
    assert!(matches!(&child.steps[0].kind, StepKind::Arg(a) if a == &[("MODE".to_string(), Some("cli".to_string()))]));

    // A base that cannot be read is planned without env and triggers; the
    // executor then refuses it if it has triggers.
    let unread = plan(&df(text), &opts(&[]), &envs(no_images)).unwrap();
    assert!(!last_stage(&unread).base_read);
    assert_eq!(last_stage(&unread).steps.len(), 1);

    // A trigger that cannot run is an error at the FROM.
    let bad = |_: &str, _: Option<&Platform>| {
        Some(ContainerConfig { on_build: Some(vec!["FROM other".into()]), ..Default::default() })
    };
    let err = plan(&df("FROM base\n"), &opts(&[]), &bad).unwrap_err();
    assert_eq!(err.line, 1);
    assert!(err.message.contains("ONBUILD trigger that cannot run"), "{}", err.message);
}

// --- normalisation ---

#[test]
fn expose_is_normalised_and_expanded() {
    let text = "FROM scratch\nENV PORTS=\"80 443/TCP\"\nEXPOSE $PORTS 53/UDP 8000-8002 80";
    let p = plan_text(text, &opts(&[]));
    let step = &last_stage(&p).steps[1];
    let StepKind::Expose(ports) = &step.kind else { panic!("{step:?}") };
    assert_eq!(ports, &["80/tcp", "443/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]);
    assert_eq!(step.original, "EXPOSE 80/tcp 443/tcp 53/udp 8000/tcp 8001/tcp 8002/tcp");
    let err = plan_err("FROM scratch\nEXPOSE 80/icmp", &opts(&[]));
    assert!(err.message.contains("invalid protocol"), "{err}");
}

#[test]
fn healthcheck_forms() {
    let p =
        plan_text("FROM scratch\nHEALTHCHECK CMD curl -f http://localhost/ || exit 1\nHEALTHCHECK NONE", &opts(&[]));
    let stage = last_stage(&p);
    let StepKind::Healthcheck(h) = &stage.steps[0].kind else { panic!() };
    assert_eq!(h.test, ["CMD-SHELL", "curl -f http://localhost/ || exit 1"]);
    assert_eq!((h.interval, h.retries), (Some(30_000_000_000), Some(3)));
    let StepKind::Healthcheck(h) = &stage.steps[1].kind else { panic!() };
    assert_eq!(h.test, ["NONE"]);
    let exec = healthcheck_exec();
    assert_eq!(exec.test, ["CMD", "/bin/check", "--fast"]);
}

fn healthcheck_exec() -> HealthConfig {
    let mut d = df("FROM scratch\nHEALTHCHECK CMD x");
    if let Command::Healthcheck(Some(spec)) = &mut d.instructions[1].command {
        spec.test = CmdLine::Exec(vec!["/bin/check".into(), "--fast".into()]);
    }
    let p = plan(&d, &opts(&[]), &envs(no_images)).unwrap();
    match &p.stages[0].steps[0].kind {
        StepKind::Healthcheck(h) => h.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn copy_expands_words_and_flags() {
    let text = "FROM scratch\nARG U=1000\nENV D=/usr/bin\nCOPY --chown=$U:$U --chmod=755 \"my app\" ${D}/\nADD --unpack=false x.tar /";
    let p = plan_text(text, &opts(&[]));
    let stage = last_stage(&p);
    let copy = copy_step(stage, 0);
    assert_eq!(copy.sources, ["my app"]);
    assert_eq!(copy.dest, "/usr/bin/");
    assert_eq!(copy.chown.as_deref(), Some("1000:1000"));
    assert_eq!(copy.chmod.as_deref(), Some("755"));
    assert!(!copy.is_add && !copy.unpack);
    assert_eq!(stage.steps[2].original, "COPY --chown=1000:1000 --chmod=755 my app /usr/bin/");
    let add = copy_step(stage, 1);
    assert!(add.is_add && !add.unpack);
    let p = plan_text("FROM scratch\nADD x.tar /", &opts(&[]));
    assert!(copy_step(last_stage(&p), 0).unpack, "ADD unpacks by default");
}

#[test]
fn copy_heredocs_expand_unless_quoted() {
    let text = "\
FROM scratch
ARG NAME=kiln
COPY <<EOF <<'RAW' /etc/
hello \"$NAME\"
EOF
keep $NAME
RAW";
    let p = plan_text(text, &opts(&[]));
    let stage = last_stage(&p);
    let copy = copy_step(stage, 0);
    assert!(copy.sources.is_empty());
    assert_eq!(copy.heredocs.len(), 2);
    assert_eq!(copy.heredocs[0].content, "hello \"kiln\"\n");
    assert_eq!(copy.heredocs[1].content, "keep $NAME\n");
    assert_eq!(stage.steps[1].original, "COPY <<EOF <<'RAW' /etc/");
}

#[test]
fn run_heredocs_and_cmd_stay_raw() {
    let text = "FROM scratch\nARG X=1\nRUN <<EOF\necho $X\nEOF\nCMD echo $X";
    let p = plan_text(text, &opts(&[]));
    let stage = last_stage(&p);
    assert_eq!(run_step(stage, 0).heredocs[0].content, "echo $X\n");
    assert!(matches!(&stage.steps[2].kind, StepKind::Cmd(CmdLine::Shell(s)) if s == "echo $X"));
}

#[test]
fn run_mount_values_expand_but_from_is_literal() {
    let text = "FROM scratch AS tools\nFROM scratch\nARG CACHE=/root/.cache\nRUN --mount=type=cache,target=$CACHE,id=c1 --mount=from=tools,target=/t true";
    let p = plan_text(text, &opts(&[]));
    let run = run_step(last_stage(&p), 0);
    assert_eq!(run.mounts_written[0].options[0], ("target".to_string(), Some("/root/.cache".to_string())));
    assert_eq!(last_stage(&p).deps, [0]);
    let tools = crate::plan::MountFrom { name: "tools".into(), source: CopyFrom::Stage(0) };
    assert!(
        matches!(&run.mounts[1], crate::plan::Mount::Bind { from: Some(f), .. } if *f == tools),
        "from= names the stage"
    );
    let err = plan_err("FROM scratch\nARG T=x\nRUN --mount=from=$T,target=/t true", &opts(&[]));
    assert!(err.message.contains("doesn't support variable expansion"), "{err}");
}

#[test]
fn metadata_instructions_expand() {
    let text = "FROM scratch\nARG V=/data\nARG SIG=TERM\nLABEL \"org.version\"=$V x=\"a b\"\nVOLUME $V /logs\nSTOPSIGNAL SIG$SIG\nWORKDIR $V/app\nUSER ${V#/}";
    let p = plan_text(text, &opts(&[]));
    let originals: Vec<&str> = last_stage(&p).steps.iter().map(|s| s.original.as_str()).collect();
    assert_eq!(
        originals,
        [
            "ARG V=/data",
            "ARG SIG=TERM",
            "LABEL org.version=/data x=a b",
            "VOLUME /data /logs",
            "STOPSIGNAL SIGTERM",
            "WORKDIR /data/app",
            "USER data"
        ]
    );
    let err = plan_err("FROM scratch\nSTOPSIGNAL SIGNOPE", &opts(&[]));
    assert!(err.message.contains("invalid signal"), "{err}");
    let err = plan_err("FROM scratch\nVOLUME $NOTHING", &opts(&[]));
    assert!(err.message.contains("VOLUME specified can not be an empty string"), "{err}");
}

#[test]
fn expansion_errors_point_at_the_instruction() {
    let err = plan_err("FROM scratch\n\nUSER ${NAME:?is required}", &opts(&[]));
    assert_eq!((err.file.as_str(), err.line, err.column), ("Dockerfile", 3, 1));
    assert!(err.message.starts_with("expand USER arguments:"), "{err}");
    assert!(err.message.contains("NAME: is required"), "{err}");
}

#[test]
fn display_numbers_steps_across_needed_stages() {
    let text = "FROM golang:1.22 AS build\nWORKDIR /src\nRUN go build -o /app\nFROM alpine AS unused\nRUN true\nFROM scratch\nCOPY --from=build /app /usr/bin/app";
    let mut o = opts(&[("EXTRA", "1")]);
    o.platform = None;
    let p = plan_text(text, &o);
    let shown = p.to_string();
    let expected = "\
stage 0 \"build\" (from image golang:1.22)
STEP 1/5: FROM golang:1.22 AS build
STEP 2/5: WORKDIR /src
STEP 3/5: RUN go build -o /app
stage 2 (from scratch)
STEP 4/5: FROM scratch
STEP 5/5: COPY --from=build /app /usr/bin/app
target: stage 2
warning: build args not consumed by any needed stage: EXTRA
";
    assert_eq!(shown, expected);
}

#[test]
fn plan_is_serializable() {
    let p = plan_text("FROM scratch\nENV A=1", &opts(&[]));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["stages"][0]["steps"][0]["original"], "ENV A=1");
    let _unused: HashMap<String, String> = HashMap::new();
}

#[test]
fn chown_ids_beyond_32_bits_are_refused_when_planning() {
    let e = plan_err("FROM scratch\nARG U=99999999999\nCOPY --chown=$U a /b\n", &PlanOptions::default());
    assert!(e.to_string().contains("\"99999999999\" is not a valid user or group id"), "{e}");
    assert_eq!(e.line, 3);
}

/// A `--mount` option that is wrong once expanded fails when planning,
/// at its line, before anything runs; the message is the one the executor
/// gave when it checked options.
#[test]
fn invalid_mount_options_fail_when_planning_at_their_line() {
    let planned = |text: &str| {
        let parsed = crate::dockerfile::parse(text, "Dockerfile").unwrap();
        plan(&parsed, &opts(&[]), &envs(no_images))
    };
    let cases = [
        (
            "ARG M=999\nRUN --mount=type=cache,target=/c,mode=$M true",
            3,
            "RUN --mount type=cache: mode=\"999\" is not a number",
        ),
        (
            "RUN true\nRUN --mount=type=tmpfs,target=/t,size=lots true",
            3,
            "RUN --mount type=tmpfs: size=\"lots\" is not a size",
        ),
        ("RUN --mount=type=bind,source=src true", 2, "RUN --mount type=bind: target is required"),
        ("ARG S=sometimes\nRUN --mount=type=cache,target=/c,sharing=$S true", 3, "expected shared, private or locked"),
        ("ARG RO=maybe\nRUN --mount=type=secret,id=s,required=$RO true", 3, "required=\"maybe\" is not a boolean"),
    ];
    for (body, line, message) in cases {
        let err = planned(&format!("FROM scratch\n{body}\n")).expect_err(body);
        assert_eq!(err.line, line, "{body}");
        assert!(err.message.contains(message), "{body}: {}", err.message);
    }
    let ok = planned("FROM scratch\nARG C=/root/.cache\nRUN --mount=type=cache,dst=$C,sharing=locked true\n").unwrap();
    let run = run_step(last_stage(&ok), 0);
    assert!(
        matches!(&run.mounts[..], [crate::plan::Mount::Cache { target, sharing: crate::plan::Sharing::Locked, id: None, .. }]
        if target == "/root/.cache")
    );
}
