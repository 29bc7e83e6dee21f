//! Heredocs in RUN, COPY, ADD and ONBUILD triggers: markers, bodies, tab
//! stripping, quoting, spans and errors.

use kiln::dockerfile::{self, CmdLine, Command, CopyCmd, Dockerfile, Heredoc, RunCmd};

fn parse(src: &str) -> Dockerfile {
    match dockerfile::parse(src, "Dockerfile") {
        Ok(d) => d,
        Err(e) => panic!("{}", e.render(src)),
    }
}

fn run(src: &str, n: usize) -> RunCmd {
    match parse(src).instructions.swap_remove(n).command {
        Command::Run(r) => r,
        other => panic!("not RUN: {other:?}"),
    }
}

fn copy(src: &str, n: usize) -> CopyCmd {
    match parse(src).instructions.swap_remove(n).command {
        Command::Copy(c) | Command::Add(c) => c,
        other => panic!("not COPY/ADD: {other:?}"),
    }
}

fn doc(name: &str, content: &str, expand: bool, strip_tabs: bool) -> Heredoc {
    Heredoc { name: name.into(), content: content.into(), expand, strip_tabs }
}

#[test]
fn simple_run_heredoc() {
    let r = run("FROM a\nRUN <<EOF\necho hi\nEOF\n", 1);
    assert_eq!(r.cmd, CmdLine::Shell("<<EOF".into()));
    assert_eq!(r.heredocs, vec![doc("EOF", "echo hi\n", true, false)]);
}

#[test]
fn empty_body() {
    let r = run("FROM a\nRUN <<EMPTY\nEMPTY\n", 1);
    assert_eq!(r.heredocs, vec![doc("EMPTY", "", true, false)]);
}

#[test]
fn file_descriptor_prefix() {
    let r = run("FROM a\nRUN 3<<EOF cat /dev/fd/3\nx\nEOF\n", 1);
    assert_eq!(r.heredocs, vec![doc("EOF", "x\n", true, false)]);
}

#[test]
fn several_heredocs_one_line() {
    let r = run("FROM a\nRUN <<A cat && cat <<B\none\nA\ntwo\nB\nRUN after\n", 1);
    assert_eq!(r.heredocs, vec![doc("A", "one\n", true, false), doc("B", "two\n", true, false)]);
    assert_eq!(r.cmd, CmdLine::Shell("<<A cat && cat <<B".into()));
}

#[test]
fn bodies_may_hold_the_other_delimiter() {
    let c = copy("FROM a\nCOPY <<X <<Y /dest\nY\nX\nX\nY\n", 1);
    assert_eq!(c.heredocs, vec![doc("X", "Y\n", true, false), doc("Y", "X\n", true, false)]);
    assert_eq!(c.sources, vec!["<<X", "<<Y"]);
    assert_eq!(c.dest, "/dest");
}

#[test]
fn dash_strips_leading_tabs_from_body_and_terminator() {
    let r = run("FROM a\nRUN <<-EOF\n\t\tbaz\n\tquux\n  spaces stay\n\tEOF\n", 1);
    assert_eq!(r.heredocs, vec![doc("EOF", "baz\nquux\n  spaces stay\n", true, true)]);
}

#[test]
fn without_dash_tabs_stay_and_indented_terminator_is_body() {
    let d = parse("FROM a\nRUN <<EOF\n\tfoo\n\tEOF\nEOF\n");
    let Command::Run(r) = &d.instructions[1].command else { panic!() };
    assert_eq!(r.heredocs[0].content, "\tfoo\n\tEOF\n");
    assert_eq!(d.instructions[1].span.end_line, 5);
}

#[test]
fn quoted_delimiters_turn_off_expansion() {
    for (marker, strip) in [("<<'EOF'", false), ("<<\"EOF\"", false), ("<<-'EOF'", true), ("<<E\"O\"F", false)] {
        let src = format!("FROM a\nRUN {marker}\n$HOME\nEOF\n");
        let r = run(&src, 1);
        assert_eq!(r.heredocs, vec![doc("EOF", "$HOME\n", false, strip)], "{marker}");
    }
    let r = run("FROM a\nRUN <<EOF\n$HOME\nEOF\n", 1);
    assert!(r.heredocs[0].expand);
}

#[test]
fn original_excludes_bodies() {
    let d = parse("FROM a\nCOPY --chmod=755 <<EOF /run.sh\n#!/bin/sh\necho hi\nEOF\n");
    assert_eq!(d.instructions[1].original, "COPY --chmod=755 <<EOF /run.sh");
}

#[test]
fn span_covers_body_and_terminator() {
    let d = parse("FROM a\n\nRUN <<EOF\na\nb\nEOF\nRUN next\n");
    let s = d.instructions[1].span;
    assert_eq!((s.line, s.column, s.end_line), (3, 1, 6));
    assert_eq!(d.instructions[2].span.line, 7);
}

#[test]
fn body_lines_are_not_dockerfile_syntax() {
    let r = run("FROM a\nRUN <<EOF\n# not a comment here\nRUN not an instruction \\\n\n  indented\nEOF\n", 1);
    assert_eq!(r.heredocs[0].content, "# not a comment here\nRUN not an instruction \\\n\n  indented\n");
}

#[test]
fn heredoc_after_a_continued_command_line() {
    let d = parse("FROM a\nRUN <<EOF \\\n  bash -ex\necho hi\nEOF\n");
    let Command::Run(r) = &d.instructions[1].command else { panic!() };
    assert_eq!(r.cmd, CmdLine::Shell("<<EOF   bash -ex".into()));
    assert_eq!(r.heredocs[0].content, "echo hi\n");
    assert_eq!(d.instructions[1].span.end_line, 5);
}

#[test]
fn heredoc_with_mount_flag() {
    let r = run("FROM a\nRUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n", 1);
    assert_eq!(r.mounts.len(), 1);
    assert_eq!(r.heredocs, vec![doc("MOUNT", "echo hello\n", true, false)]);
}

#[test]
fn exec_form_has_no_heredocs() {
    let d = parse("FROM a\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\nCOPY [\"<<EOF\", \"/d\"]\n");
    for i in &d.instructions[1..3] {
        let Command::Run(r) = &i.command else { panic!() };
        assert!(r.heredocs.is_empty());
    }
    let Command::Copy(c) = &d.instructions[3].command else { panic!() };
    assert!(c.heredocs.is_empty());
    assert_eq!(c.sources, vec!["<<EOF"]);
}

#[test]
fn quoted_markers_are_not_heredocs() {
    for src in [
        "FROM a\nRUN \"<<NOHEREDOC\"\n",
        "FROM a\nRUN '<<EOF'\n",
        "FROM a\nRUN echo x<<EOF\n",
        "FROM a\nRUN echo \"open <<EOF\n",
    ] {
        let r = run(src, 1);
        assert!(r.heredocs.is_empty(), "{src}");
    }
}

#[test]
fn quoted_word_then_real_marker() {
    let r = run("FROM a\nRUN echo \"<<X\" <<EOF\nbody\nEOF\n", 1);
    assert_eq!(r.heredocs, vec![doc("EOF", "body\n", true, false)]);
}

#[test]
fn crlf_terminator_and_body() {
    let r = run("FROM a\r\nRUN <<EOF\r\nline\r\nEOF\r\nRUN x\r\n", 1);
    assert_eq!(r.heredocs[0].content, "line\r\n");
}

#[test]
fn terminator_at_end_of_file_without_newline() {
    let d = parse("FROM a\nCOPY <<EOF /x\ncontent\nEOF");
    let Command::Copy(c) = &d.instructions[1].command else { panic!() };
    assert_eq!(c.heredocs[0].content, "content\n");
}

#[test]
fn add_heredoc() {
    let c = copy("FROM a\nADD <<EOF /etc/motd\nwelcome\nEOF\n", 1);
    assert_eq!(c.sources, vec!["<<EOF"]);
    assert_eq!(c.heredocs, vec![doc("EOF", "welcome\n", true, false)]);
}

#[test]
fn copy_mixes_files_and_heredocs() {
    let c = copy("FROM a\nCOPY a.txt <<-'B' c.txt /dir/\n\tbody\nB\n", 1);
    assert_eq!(c.sources, vec!["a.txt", "<<B", "c.txt"]);
    assert_eq!(c.heredocs, vec![doc("B", "body\n", false, true)]);
}

#[test]
fn onbuild_trigger_heredoc() {
    let d = parse("FROM a\nONBUILD RUN <<EOF\necho later\nEOF\nRUN now\n");
    let i = &d.instructions[1];
    assert_eq!(i.span.end_line, 4);
    let Command::Onbuild(inner) = &i.command else { panic!() };
    assert_eq!(inner.span.end_line, 4);
    let Command::Run(r) = &inner.command else { panic!() };
    assert_eq!(r.heredocs[0].content, "echo later\n");
    assert_eq!(d.instructions[2].span.line, 5);
}

#[test]
fn other_instructions_do_not_take_heredocs() {
    let err = dockerfile::parse("FROM a\nUSER <<INVALID\nINVALID\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (3, 1));
    let d = parse("FROM a\nENV A=<<EOF\n");
    assert_eq!(d.instructions.len(), 2);
}

#[test]
fn unterminated_heredoc_points_at_marker() {
    let err = dockerfile::parse("FROM a\nRUN echo && <<EOF cat\nbody\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (2, 13));
    assert!(err.message.contains("unterminated heredoc"));
    let err = dockerfile::parse("FROM a\nRUN <<A <<B\na\nA\nb\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (2, 9));
    assert!(err.message.contains("<<B"));
}

#[test]
fn unterminated_when_terminator_is_indented_without_dash() {
    let err = dockerfile::parse("FROM a\nCOPY <<EOF /x\n  EOF\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (2, 6));
}

#[test]
fn heredoc_as_destination_is_an_error() {
    let err = dockerfile::parse("FROM a\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (2, 8));
    assert!(err.message.contains("destination"));
}

#[test]
fn names_with_dots_and_digits() {
    let r = run("FROM a\nRUN python3 <<script.py\nprint(1)\nscript.py\n", 1);
    assert_eq!(r.heredocs[0].name, "script.py");
}

#[test]
fn heredoc_in_continued_copy_with_flags() {
    let d = parse("FROM a\nCOPY --chown=1:1 \\\n     <<EOF /etc/conf\nkey=value\nEOF\n");
    let Command::Copy(c) = &d.instructions[1].command else { panic!() };
    assert_eq!(c.chown.as_deref(), Some("1:1"));
    assert_eq!(c.heredocs[0].content, "key=value\n");
    assert_eq!(d.instructions[1].span.end_line, 5);
}
