//! Line-level syntax: keywords, whitespace, continuations, escapes, JSON vs
//! shell form, flags, spans and `original` text.

use kiln::dockerfile::{self, ArgDecl, CmdLine, Command, Dockerfile, KeyValue};

fn parse(src: &str) -> Dockerfile {
    match dockerfile::parse(src, "Dockerfile") {
        Ok(d) => d,
        Err(e) => panic!("{}", e.render(src)),
    }
}

fn run_cmd(src: &str, n: usize) -> CmdLine {
    match parse(src).instructions.swap_remove(n).command {
        Command::Run(r) => r.cmd,
        other => panic!("not RUN: {other:?}"),
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: v.into() }
}

#[test]
fn keywords_are_case_insensitive() {
    let d = parse("from alpine AS b\nrUn echo\nCopy a b\nenv A=1\n");
    let kws: Vec<&str> = d.instructions.iter().map(|i| i.command.keyword()).collect();
    assert_eq!(kws, vec!["FROM", "RUN", "COPY", "ENV"]);
    assert_eq!(d.instructions[1].original, "RUN echo");
    assert_eq!(d.instructions[2].original, "COPY a b");
}

#[test]
fn path_and_default_directives() {
    let d = dockerfile::parse("FROM a\n", "sub/Containerfile").unwrap();
    assert_eq!(d.path, "sub/Containerfile");
    assert_eq!(d.directives, dockerfile::Directives::default());
}

#[test]
fn spans_with_leading_whitespace_and_tabs() {
    let d = parse("FROM a\n\n   \tRUN x\n");
    let s = d.instructions[1].span;
    assert_eq!((s.line, s.column, s.end_line), (3, 5, 3));
}

#[test]
fn original_normalises_keyword_spacing_only() {
    let d = parse("FROM a\nrun    echo   hi  \n");
    assert_eq!(d.instructions[1].original, "RUN echo   hi");
    assert_eq!(run_cmd("FROM a\nrun    echo   hi  \n", 1), CmdLine::Shell("echo   hi".into()));
    assert_eq!(parse("FROM a\nRUN\techo\n").instructions[1].original, "RUN echo");
}

#[test]
fn original_keeps_flags() {
    let d = parse("FROM --platform=linux/amd64 a\nCOPY --chown=1:1 a b /dst/\n");
    assert_eq!(d.instructions[0].original, "FROM --platform=linux/amd64 a");
    assert_eq!(d.instructions[1].original, "COPY --chown=1:1 a b /dst/");
}

#[test]
fn continuation_with_trailing_blanks_after_escape() {
    assert_eq!(run_cmd("FROM a\nRUN a \\  \t\n b\n", 1), CmdLine::Shell("a  b".into()));
}

#[test]
fn continuation_skips_blank_and_comment_lines() {
    let d = parse("FROM a\nRUN a \\\n\n   \n   # indented comment\nb\nRUN c\n");
    assert_eq!(
        d.instructions[1].command,
        Command::Run(dockerfile::RunCmd {
            cmd: CmdLine::Shell("a b".into()),
            heredocs: vec![],
            mounts: vec![],
            network: None,
            security: None,
        })
    );
    assert_eq!(d.instructions[1].span.end_line, 6);
    assert_eq!(d.instructions[2].span.line, 7);
}

#[test]
fn escape_alone_on_a_line_continues() {
    assert_eq!(run_cmd("FROM a\nRUN a \\\n\\\nb\n", 1), CmdLine::Shell("a b".into()));
}

#[test]
fn escaped_escape_ends_the_line() {
    assert_eq!(run_cmd("FROM a\nRUN echo \\\\\nRUN x\n", 1), CmdLine::Shell("echo \\\\".into()));
}

#[test]
fn backslash_is_plain_under_backtick_escape() {
    let d = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\nENV P=a` b\n");
    assert_eq!(d.instructions[1].command.keyword(), "RUN");
    assert_eq!(d.instructions[1].original, "RUN dir c:\\   /w");
    assert_eq!(d.instructions[2].command, Command::Env(vec![kv("P", "a` b")]));
}

#[test]
fn continued_keyword_line() {
    let d = parse("FROM a\nRUN \\\n  echo hi\n");
    assert_eq!(d.instructions[1].original, "RUN echo hi");
    assert_eq!(run_cmd("FROM a\nRUN \\\n  echo hi\n", 1), CmdLine::Shell("echo hi".into()));
}

#[test]
fn json_exec_and_fallbacks() {
    let src = "FROM a\nRUN [\"a\", \"b c\"]\nRUN [ \"a\" ]  \nRUN [\"a\"] trailing\nRUN ['a']\nRUN [not json\nRUN [\"a\\u0041\"]\nRUN []x\n";
    let d = parse(src);
    let got: Vec<CmdLine> = d.instructions[1..]
        .iter()
        .map(|i| match &i.command {
            Command::Run(r) => r.cmd.clone(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            CmdLine::Exec(vec!["a".into(), "b c".into()]),
            CmdLine::Exec(vec!["a".into()]),
            CmdLine::Shell("[\"a\"] trailing".into()),
            CmdLine::Shell("['a']".into()),
            CmdLine::Shell("[not json".into()),
            CmdLine::Exec(vec!["aA".into()]),
            CmdLine::Shell("[]x".into()),
        ]
    );
}

#[test]
fn cmd_and_entrypoint_empty_exec_arrays() {
    let d = parse("FROM a\nCMD []\nENTRYPOINT []\n");
    assert_eq!(d.instructions[1].command, Command::Cmd(CmdLine::Exec(vec![])));
    assert_eq!(d.instructions[2].command, Command::Entrypoint(CmdLine::Exec(vec![])));
}

#[test]
fn json_over_continuation_lines() {
    let d = parse("FROM a\nCMD [\"a\", \\\n     \"b\"]\n");
    assert_eq!(d.instructions[1].command, Command::Cmd(CmdLine::Exec(vec!["a".into(), "b".into()])));
}

#[test]
fn volume_json_and_words() {
    let d = parse("FROM a\nVOLUME [\" /padded \"]\nVOLUME a  b\tc\nVOLUME [oops\n");
    assert_eq!(d.instructions[1].command, Command::Volume(vec!["/padded".into()]));
    assert_eq!(d.instructions[2].command, Command::Volume(vec!["a".into(), "b".into(), "c".into()]));
    assert_eq!(d.instructions[3].command, Command::Volume(vec!["[oops".into()]));
}

#[test]
fn flag_quotes_are_removed() {
    let d = parse("FROM a\nCOPY --chown=\"1:1\" --chmod='644' a b\n");
    let Command::Copy(c) = &d.instructions[1].command else { panic!() };
    assert_eq!((c.chown.as_deref(), c.chmod.as_deref()), (Some("1:1"), Some("644")));
}

#[test]
fn flags_across_continuations() {
    let d = parse("FROM \\\n  --platform=linux/arm64 \\\n  alpine \\\n  AS base\n");
    assert_eq!(
        d.instructions[0].command,
        Command::From { image: "alpine".into(), alias: Some("base".into()), platform: Some("linux/arm64".into()) }
    );
    assert_eq!(d.instructions[0].span.end_line, 4);
}

#[test]
fn empty_string_flag_counts_as_absent() {
    let d = parse("FROM --platform= a\nCOPY --from= a b\n");
    assert_eq!(d.instructions[0].command, Command::From { image: "a".into(), alias: None, platform: None });
    let Command::Copy(c) = &d.instructions[1].command else { panic!() };
    assert_eq!(c.from, None);
}

#[test]
fn single_dash_is_an_argument() {
    let d = parse("FROM a\nCMD -x\nENTRYPOINT - foo\n");
    assert_eq!(d.instructions[1].command, Command::Cmd(CmdLine::Shell("-x".into())));
}

#[test]
fn copy_defaults() {
    let d = parse("FROM a\nCOPY a b\nADD c d\n");
    let Command::Copy(c) = &d.instructions[1].command else { panic!() };
    assert!(!c.link && !c.parents && c.exclude.is_empty() && c.from.is_none() && c.checksum.is_none());
    assert_eq!((c.keep_git_dir, c.unpack), (None, None));
    let Command::Add(a) = &d.instructions[2].command else { panic!() };
    assert_eq!((a.keep_git_dir, a.unpack), (None, None));
}

#[test]
fn copy_shell_form_splits_on_whitespace_only() {
    let d = parse("FROM a\nCOPY \"a b\" /d\n");
    let Command::Copy(c) = &d.instructions[1].command else { panic!() };
    assert_eq!(c.sources, vec!["\"a", "b\""]);
}

#[test]
fn env_keeps_quotes_and_escapes_raw() {
    let d = parse("FROM a\nENV A='single $x' B=\"double \\\" q\" C=a\\ b D= E=\"\"\n");
    assert_eq!(
        d.instructions[1].command,
        Command::Env(vec![
            kv("A", "'single $x'"),
            kv("B", "\"double \\\" q\""),
            kv("C", "a\\ b"),
            kv("D", ""),
            kv("E", "\"\""),
        ])
    );
}

#[test]
fn env_value_with_equals_signs() {
    let d = parse("FROM a\nENV OPTS=--a=1,b=2\n");
    assert_eq!(d.instructions[1].command, Command::Env(vec![kv("OPTS", "--a=1,b=2")]));
}

#[test]
fn legacy_env_and_label_keep_inner_spacing() {
    let d = parse("FROM a\nENV PATH  /usr/bin:$PATH   and more\nLABEL maintainer  \"Jane D\"\n");
    assert_eq!(d.instructions[1].command, Command::Env(vec![kv("PATH", "/usr/bin:$PATH   and more")]));
    assert_eq!(d.instructions[2].command, Command::Label(vec![kv("maintainer", "\"Jane D\"")]));
}

#[test]
fn arg_quoted_default() {
    let d = parse("ARG MSG=\"hello world\" OTHER='x'\nFROM a\n");
    assert_eq!(
        d.instructions[0].command,
        Command::Arg(vec![
            ArgDecl { name: "MSG".into(), default: Some("\"hello world\"".into()) },
            ArgDecl { name: "OTHER".into(), default: Some("'x'".into()) },
        ])
    );
}

#[test]
fn arg_with_empty_default() {
    let d = parse("ARG EMPTY=\nFROM a\n");
    assert_eq!(
        d.instructions[0].command,
        Command::Arg(vec![ArgDecl { name: "EMPTY".into(), default: Some(String::new()) }])
    );
}

#[test]
fn single_argument_instructions_take_the_whole_text() {
    let d = parse("FROM a\nWORKDIR /path with spaces\nUSER  app : group \nSTOPSIGNAL SIGRTMIN+3\n");
    assert_eq!(d.instructions[1].command, Command::Workdir("/path with spaces".into()));
    assert_eq!(d.instructions[2].command, Command::User("app : group".into()));
    assert_eq!(d.instructions[3].command, Command::StopSignal("SIGRTMIN+3".into()));
}

#[test]
fn healthcheck_durations() {
    let d = parse("FROM a\nHEALTHCHECK --interval=1m30s --timeout=500ms --start-period=1.5h --retries=0 CMD true\nhealthcheck --interval=0 cmd [\"true\"]\nHEALTHCHECK none\n");
    let Command::Healthcheck(Some(h)) = &d.instructions[1].command else { panic!() };
    assert_eq!(h.interval, Some(90_000_000_000));
    assert_eq!(h.timeout, Some(500_000_000));
    assert_eq!(h.start_period, Some(5_400_000_000_000));
    assert_eq!(h.retries, Some(0));
    let Command::Healthcheck(Some(h)) = &d.instructions[2].command else { panic!() };
    assert_eq!((h.interval, &h.test), (Some(0), &CmdLine::Exec(vec!["true".into()])));
    assert_eq!(d.instructions[3].command, Command::Healthcheck(None));
}

#[test]
fn healthcheck_cmd_falls_back_to_shell_form() {
    let d = parse("FROM a\nHEALTHCHECK CMD [broken\n");
    let Command::Healthcheck(Some(h)) = &d.instructions[1].command else { panic!() };
    assert_eq!(h.test, CmdLine::Shell("[broken".into()));
}

#[test]
fn onbuild_inner_original_and_span() {
    let d = parse("FROM a\n  onbuild   run echo hi\n");
    let i = &d.instructions[1];
    assert_eq!(i.original, "ONBUILD run echo hi");
    let Command::Onbuild(inner) = &i.command else { panic!() };
    assert_eq!(inner.original, "RUN echo hi");
    assert_eq!((inner.span.line, inner.span.column), (2, 13));
}

#[test]
fn crlf_and_bom() {
    let d = parse("\u{feff}FROM a\r\nRUN a \\\r\n  b\r\nENV X=1\r\n");
    assert_eq!(d.instructions.len(), 3);
    assert_eq!(d.instructions[1].original, "RUN a   b");
    assert_eq!(d.instructions[2].command, Command::Env(vec![kv("X", "1")]));
}

#[test]
fn last_line_without_newline() {
    let d = parse("FROM a\nCMD x");
    assert_eq!(d.instructions[1].command, Command::Cmd(CmdLine::Shell("x".into())));
}

#[test]
fn directive_values_are_trimmed_and_names_any_case() {
    let d = parse("#SYNTAX = docker/dockerfile:1.7   \n# Check=error=true\nFROM a\n");
    assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1.7"));
    assert_eq!(d.directives.check.as_deref(), Some("error=true"));
}

#[test]
fn directive_lines_after_blank_line_are_comments() {
    let d = parse("\n# escape=`\nFROM a\nRUN x \\\n y\n");
    assert_eq!(d.directives.escape, '\\');
    assert_eq!(d.instructions.len(), 2);
}

#[test]
fn unicode_positions_are_in_characters() {
    let e = dockerfile::parse("FROM a\nLABEL ñame=1 ü\n", "D").unwrap_err();
    assert_eq!((e.line, e.column), (2, 14));
}

#[test]
fn many_stages_and_the_ast_serializes() {
    let d = parse("ARG BASE=alpine\nFROM $BASE AS one\nRUN --mount=type=cache,target=/c <<EOF\nx\nEOF\nFROM one\nCOPY --from=one / /\n");
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains("\"Cache\"") && json.contains("\"one\""));
}
