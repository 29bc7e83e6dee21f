//! What a stage passes on and what it keeps to itself, as BuildKit's
//! dispatcher scopes it: ENV, USER, WORKDIR and (BuildKit only) ARG go on
//! to `FROM stage`; a global ARG reaches no stage that does not declare it;
//! an ARG without a value sets nothing in RUN's environment; ONBUILD
//! triggers inherited through stages run in the child, with the stages
//! they name.

use kiln_integration::*;
use serde_json::json;

/// `VAR=value` lines of an `env` dump, by name.
fn env_of(dump: &str, name: &str) -> Option<String> {
    dump.lines().find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// The child of a stage gets its ENV, USER and WORKDIR in its config, and
/// its ARGs for RUN and expansion but not in the config: BuildKit's child
/// state starts from the parent's (dispatchState.init, moby/buildkit#1977,
/// documented since moby/buildkit#5381), where the classic builder dropped
/// the ARGs at the end of the stage. A global ARG stays unset until the
/// stage declares it; a bare `ARG` of a parent's ARG keeps its value.
#[test]
fn env_and_arg_go_on_to_a_child_stage_buildkit() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let base = RUN_BASE.replacen("FROM scratch", "FROM scratch AS base", 1);
    let df = format!(
        "ARG GLOBAL=g
{base}\
ENV FROM_ENV=e
ARG STAGE_ARG=s
USER 1234
WORKDIR /w
RUN env > /tmp/env-base
FROM base AS child
RUN env > /tmp/env-child
LABEL seen=\"[$GLOBAL|$STAGE_ARG|$FROM_ENV]\"
ARG GLOBAL
ARG STAGE_ARG
RUN echo \"[$GLOBAL|$STAGE_ARG]\" > /tmp/redeclared
"
    );
    let img = sb.build(&df, "scoped");
    let base_env = img.file_str("tmp/env-base");
    assert_eq!(env_of(&base_env, "STAGE_ARG").as_deref(), Some("s"), "{base_env}");
    assert_eq!(env_of(&base_env, "GLOBAL"), None, "a global ARG is not in a stage that does not declare it");
    let child_env = img.file_str("tmp/env-child");
    assert_eq!(env_of(&child_env, "FROM_ENV").as_deref(), Some("e"), "{child_env}");
    assert_eq!(env_of(&child_env, "STAGE_ARG").as_deref(), Some("s"), "the parent stage's ARG goes on");
    assert_eq!(env_of(&child_env, "GLOBAL"), None);
    assert_eq!(img.runtime()["Labels"]["seen"], "[|s|e]");
    assert_eq!(img.file_str("tmp/redeclared"), "[g|s]\n");
    let history = img.created_by();
    assert!(
        history.contains(&"RUN |1 STAGE_ARG=s /bin/sh -c env > /tmp/env-child # buildkit".to_string()),
        "{history:#?}"
    );
    assert_eq!(
        history[history.len() - 3..],
        [
            "ARG GLOBAL=g",
            "ARG STAGE_ARG",
            "RUN |2 STAGE_ARG=s GLOBAL=g /bin/sh -c echo \"[$GLOBAL|$STAGE_ARG]\" > /tmp/redeclared # buildkit"
        ]
    );
    assert_eq!(img.runtime()["User"], "1234");
    assert_eq!(img.runtime()["WorkingDir"], "/w");
    let env = img.runtime()["Env"].as_array().unwrap().clone();
    assert!(env.contains(&json!("FROM_ENV=e")), "{env:?}");
    assert!(!env.iter().any(|e| e.as_str().unwrap().starts_with("STAGE_ARG")), "{env:?}");
}

/// testEmptyStringArgInEnv and testExportedHistoryFlattenArgs: `ARG FOO`
/// with no value and no --build-arg leaves FOO unset for RUN, `ARG BAR=`
/// sets it empty; an ARG declared twice is listed once in RUN's history
/// entry, where it was first declared, with its last value.
#[test]
fn args_without_value_are_unset_and_redeclared_args_listed_once_buildkit() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let img = sb.build(
        &format!(
            "{RUN_BASE}\
ARG FOO
ARG BAR=
ARG foo=bar
ARG bar=123
ARG foo=bar2
RUN env > /env.txt
"
        ),
        "argenv",
    );
    let env = img.file_str("env.txt");
    assert_eq!(env_of(&env, "FOO"), None, "{env}");
    assert_eq!(env_of(&env, "BAR").as_deref(), Some(""), "{env}");
    assert_eq!(env_of(&env, "foo").as_deref(), Some("bar2"));
    assert_eq!(env_of(&env, "bar").as_deref(), Some("123"));
    let history = img.created_by();
    assert_eq!(
        history[3..],
        [
            "ARG FOO",
            "ARG BAR=",
            "ARG foo=bar",
            "ARG bar=123",
            "ARG foo=bar2",
            "RUN |4 FOO= BAR= foo=bar2 bar=123 /bin/sh -c env > /env.txt # buildkit",
        ]
    );
}

/// testOnBuildInheritedStageRun / testOnBuildInheritedStageWithFrom: a
/// stage's ONBUILD RUN and ONBUILD COPY --from=<stage> fire in a stage
/// built FROM it, before that stage's own steps; and (testOnBuildNewDeps)
/// a trigger in an image may name a stage of the child's Dockerfile, which
/// is then built first.
#[test]
fn onbuild_triggers_run_in_child_stages_with_the_stages_they_name() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/file", "12");
    let base = RUN_BASE.replacen("FROM scratch", "FROM scratch AS base", 1);
    let img = sb.build(
        &format!(
            "FROM scratch AS src
COPY file /in/file
{base}\
ONBUILD RUN mkdir -p /out && echo -n 11 >> /out/foo
ONBUILD COPY --from=src /in/file /out/copied
FROM base AS mid
RUN cp /out/foo /out/bar && cp /out/copied /out/copied2
FROM scratch
COPY --from=mid /out /
"
        ),
        "obstages",
    );
    assert_eq!(img.file_str("foo"), "11", "the RUN trigger ran once");
    assert_eq!(img.file_str("bar"), "11");
    assert_eq!(img.file_str("copied2"), "12", "the COPY --from trigger ran before the stage's own RUN");

    // An image whose trigger reads from a stage it cannot know of.
    let parent = sb.build(
        &format!("{RUN_BASE}ONBUILD RUN --mount=type=bind,target=/in,from=inputstage cat /in/foo > /bar\n"),
        "obdeps",
    );
    assert_eq!(parent.runtime()["OnBuild"].as_array().map(Vec::len), Some(1));
    let child =
        sb.build("FROM scratch AS inputstage\nCOPY file /foo\nFROM obdeps\nRUN cat /bar > /bar2\n", "obdeps-child");
    assert_eq!(child.file_str("bar"), "12");
    assert_eq!(child.file_str("bar2"), "12");
}
