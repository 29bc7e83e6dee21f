use super::*;

fn state() -> StageState {
    StageState::new(ImageConfig::default(), Vec::new())
}

#[test]
fn env_replaces_in_place() {
    let mut env = vec!["A=1".to_string(), "B=2".to_string()];
    set_env(&mut env, "A", "3");
    set_env(&mut env, "C", "x=y");
    assert_eq!(env, ["A=3", "B=2", "C=x=y"]);
}

#[test]
fn env_steps_replace_in_place() {
    let mut s = state();
    s.config.config.env = Some(vec!["PATH=/bin".into(), "A=1".into(), "A=2".into(), "NOVALUE".into()]);
    s.apply_metadata(&StepKind::Env(vec![("A".into(), "3".into()), ("B".into(), "4".into())]));
    s.apply_metadata(&StepKind::Env(vec![("B".into(), "5".into()), ("NOVALUE".into(), "6".into())]));
    assert_eq!(s.config.config.env.unwrap(), ["PATH=/bin", "A=3", "A=2", "NOVALUE=6", "B=5"]);
}

#[test]
fn records_hold_what_a_step_added() {
    let mut s = state();
    s.key = "parent".into();
    s.push_history("t0", "FROM x", false);
    let mark = s.mark();
    let label = StepKind::Label(vec![("a".into(), "b".into())]);
    s.apply_metadata(&label);
    s.push_history("t1", "LABEL a=b", true);
    let record = s.record(mark, "parent");
    assert_eq!(record.parent, "parent");
    assert!(record.layers.is_empty() && record.diff_ids.is_empty());
    assert_eq!(record.history.len(), 1);

    // Replayed on the state the step started from, it gives the same state.
    let mut other = state();
    other.push_history("t0", "FROM x", false);
    assert!(other.restore(&label, record.clone(), "k".into()));
    assert_eq!(other.config, s.config);
    assert_eq!(other.key, "k");

    // A record with a layer cannot be a LABEL's.
    let mut bogus = record;
    bogus.layers.push(Descriptor::new("x", "sha256:00".into(), 1));
    bogus.diff_ids.push("sha256:00".into());
    let mut third = state();
    assert!(!third.restore(&label, bogus, "k".into()));
    assert!(third.config.config.labels.is_none());
}

#[test]
fn created_by_like_buildkit() {
    let mut s = state();
    let by = |s: &mut StageState, kind: StepKind, original: &str| {
        s.apply_metadata(&kind);
        s.created_by(&kind, original)
    };
    assert_eq!(
        by(&mut s, StepKind::Cmd(CmdLine::Shell("echo \"hi\"".into())), "CMD echo \"hi\"").unwrap(),
        r#"CMD ["/bin/sh" "-c" "echo \"hi\""]"#
    );
    assert_eq!(
        by(&mut s, StepKind::Entrypoint(CmdLine::Exec(vec!["/e".into(), "a\tb".into()])), "").unwrap(),
        r#"ENTRYPOINT ["/e" "a\tb"]"#
    );
    assert_eq!(by(&mut s, StepKind::Shell(vec!["/bin/bash".into(), "-c".into()]), "").unwrap(), "SHELL [/bin/bash -c]");
    assert_eq!(by(&mut s, StepKind::Volume(vec!["/data".into(), "/c".into()]), "").unwrap(), "VOLUME [/data /c]");
    assert_eq!(
        by(&mut s, StepKind::Expose(vec!["80/tcp".into(), "53/udp".into()]), "").unwrap(),
        "EXPOSE [80/tcp 53/udp]"
    );
    let h = HealthConfig {
        test: vec!["CMD-SHELL".into(), "curl -f x".into()],
        interval: Some(90_000_000_000),
        timeout: Some(1_500_000_000),
        start_period: None,
        start_interval: Some(250_000_000),
        retries: Some(3),
    };
    assert_eq!(
        by(&mut s, StepKind::Healthcheck(h), "").unwrap(),
        "HEALTHCHECK {Test:[CMD-SHELL curl -f x] Interval:1m30s Timeout:1.5s StartPeriod:0s StartInterval:250ms Retries:3}"
    );
    assert_eq!(by(&mut s, StepKind::Onbuild("RUN x".into()), "ONBUILD RUN x"), None);
    assert_eq!(by(&mut s, StepKind::Arg(vec![("A".into(), Some("1".into()))]), "ARG A=1").unwrap(), "ARG A=1");
    assert_eq!(by(&mut s, StepKind::Env(vec![("A".into(), "1".into())]), "ENV A=1").unwrap(), "ENV A=1");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(5_000_000_000), "5s");
}

#[test]
fn workdir_applies_its_config_and_leaves_the_directory_to_the_executor() {
    let mut s = state();
    assert!(!s.apply_metadata(&StepKind::Workdir("/app".into())));
    assert!(!s.apply_metadata(&StepKind::Workdir("sub".into())));
    assert_eq!(s.workdir(), "/app/sub");
}

#[test]
fn workdir_joins_and_cleans() {
    assert_eq!(join_workdir("/", "app"), "/app");
    assert_eq!(join_workdir("/a/b", "../c/./d"), "/a/c/d");
    assert_eq!(join_workdir("/a", "/x/"), "/x");
    assert_eq!(join_workdir("/", ".."), "/");
}

#[test]
fn shell_form_uses_current_shell() {
    let mut s = state();
    s.apply_metadata(&StepKind::Cmd(CmdLine::Shell("echo hi".into())));
    assert_eq!(s.config.config.cmd.clone().unwrap(), ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(s.config.config.args_escaped, Some(true), "BuildKit marks every CMD ArgsEscaped");
    s.apply_metadata(&StepKind::Shell(vec!["/bin/bash".into(), "-ec".into()]));
    s.apply_metadata(&StepKind::Entrypoint(CmdLine::Shell("run".into())));
    assert_eq!(s.config.config.entrypoint.clone().unwrap(), ["/bin/bash", "-ec", "run"]);
    // CMD was set in this stage, so ENTRYPOINT keeps it.
    assert!(s.config.config.cmd.is_some());
}

#[test]
fn entrypoint_clears_inherited_cmd() {
    let mut s = state();
    s.config.config.cmd = Some(vec!["base".into()]);
    s.apply_metadata(&StepKind::Entrypoint(CmdLine::Exec(vec!["/app".into()])));
    assert_eq!(s.config.config.cmd, None);
}
