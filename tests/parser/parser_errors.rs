//! Every error the parser reports: message, help and exact position.

use kiln::dockerfile::{self, DockerfileError};

fn err(src: &str) -> DockerfileError {
    match dockerfile::parse(src, "build/Dockerfile.dev") {
        Ok(d) => panic!("expected an error, got {d:?}"),
        Err(e) => e,
    }
}

/// Asserts line, column and that the message holds `needle`.
fn at(src: &str, line: usize, column: usize, needle: &str) -> DockerfileError {
    let e = err(src);
    assert_eq!((e.line, e.column), (line, column), "position of {:?} in {src:?}", e.message);
    assert!(e.message.contains(needle), "{:?} does not contain {needle:?}", e.message);
    assert_eq!(e.file, "build/Dockerfile.dev");
    e
}

#[test]
fn unknown_instruction_with_suggestion() {
    let e = at("FROM a\nRUNN echo\n", 2, 1, "unknown instruction \"RUNN\"");
    assert_eq!(e.help.as_deref(), Some("did you mean \"RUN\"?"));
    let e = at("FROM a\n   coppy a b\n", 2, 4, "unknown instruction \"coppy\"");
    assert_eq!(e.help.as_deref(), Some("did you mean \"COPY\"?"));
    let e = at("FORM alpine\n", 1, 1, "unknown instruction");
    assert_eq!(e.help.as_deref(), Some("did you mean \"FROM\"?"));
    let e = at("FROM a\nWORKDRI /x\n", 2, 1, "unknown");
    assert_eq!(e.help.as_deref(), Some("did you mean \"WORKDIR\"?"));
}

#[test]
fn unknown_instruction_without_close_match() {
    let e = at("FROM a\nXYZZY plugh\n", 2, 1, "unknown instruction \"XYZZY\"");
    assert!(e.help.unwrap().contains("instructions are"));
}

#[test]
fn unknown_onbuild_trigger() {
    let e = at("FROM a\nONBUILD RUM x\n", 2, 9, "unknown instruction \"RUM\"");
    assert_eq!(e.help.as_deref(), Some("did you mean \"RUN\"?"));
}

#[test]
fn shell_needs_json() {
    at("FROM a\nSHELL /bin/bash -c\n", 2, 7, "JSON");
    at("FROM a\nSHELL [\"/bin/bash\", '-c']\n", 2, 7, "JSON");
    at("FROM a\nSHELL []\n", 2, 1, "at least one argument");
    at("FROM a\nSHELL\n", 2, 1, "at least one argument");
    at("FROM a\nSHELL [\"sh\", 1]\n", 2, 7, "strings only");
}

#[test]
fn json_with_non_strings() {
    at("FROM a\nRUN [\"echo\", 1]\n", 2, 5, "strings only");
    at("FROM a\nCMD [true]\n", 2, 5, "strings only");
    at("FROM a\nENTRYPOINT [null]\n", 2, 12, "strings only");
    at("FROM a\nVOLUME [1]\n", 2, 8, "strings only");
    at("FROM a\nCOPY [\"a\", {}]\n", 2, 6, "strings only");
}

#[test]
fn flag_not_taken_names_flag_and_instruction() {
    let e = at("FROM a\nCOPY --foo=bar a b\n", 2, 6, "--foo");
    assert!(e.message.contains("COPY"));
    at("FROM a\nADD --from=x a b\n", 2, 5, "unknown flag --from for ADD");
    at("FROM a\nCOPY --checksum=sha256:1 a b\n", 2, 6, "unknown flag --checksum for COPY");
    at("FROM a\nCOPY --unpack a b\n", 2, 6, "--unpack");
    at("FROM a\nADD --parents a b\n", 2, 5, "--parents");
    at("FROM --platform=x --from=y a\n", 1, 19, "unknown flag --from for FROM");
    let e = at("FROM a\nENV --x=1 A=b\n", 2, 5, "unknown flag --x for ENV");
    assert_eq!(e.help.as_deref(), Some("ENV takes no flags"));
    at("FROM a\nCMD --help\n", 2, 5, "unknown flag --help for CMD");
    at("FROM a\nONBUILD --x RUN y\n", 2, 9, "ONBUILD");
    at("FROM a\nHEALTHCHECK --intervals=1s CMD x\n", 2, 13, "--intervals");
}

#[test]
fn flag_errors_in_continuation_lines_point_at_the_flag() {
    at(
        "FROM a\nRUN --network=none \\\n    --mout=type=cache,target=/x \\\n    make\n",
        3,
        5,
        "unknown flag --mout for RUN",
    );
    let e = err("FROM a\nRUN --network=none \\\n    --mout=type=cache,target=/x \\\n    make\n");
    assert_eq!(e.help.as_deref(), Some("did you mean --mount?"));
}

#[test]
fn flag_value_missing() {
    at("FROM a\nCOPY --from a b\n", 2, 6, "missing a value on flag --from");
    at("FROM a\nCOPY --chown a b\n", 2, 6, "--chown");
    at("FROM a\nRUN --mount echo\n", 2, 5, "--mount");
    at("FROM --platform alpine\n", 1, 6, "--platform");
    at("FROM a\nCOPY --link= a b\n", 2, 6, "missing a value on flag --link");
    at("FROM a\nHEALTHCHECK --retries CMD x\n", 2, 13, "--retries");
    at("FROM a\nCOPY --exclude= a b\n", 2, 6, "--exclude");
}

#[test]
fn bad_flag_values() {
    at("FROM a\nCOPY --link=yes a b\n", 2, 6, "boolean");
    at("FROM a\nADD --keep-git-dir=maybe a b\n", 2, 5, "boolean");
    at("FROM a\nCOPY --from=a --from=b a b\n", 2, 15, "duplicate flag --from");
    at("FROM a\nRUN --network=bridge x\n", 2, 5, "network");
    at("FROM a\nRUN --security=privileged x\n", 2, 5, "security");
}

#[test]
fn mount_errors() {
    at("FROM a\nRUN --mount=type=nfs,target=/x echo\n", 2, 5, "unsupported mount type");
    at("FROM a\nRUN --network=none --mount=target=/x,colour=red echo\n", 2, 20, "colour");
    at("FROM a\nRUN --mount=type=bind,mode=0700,target=/x echo\n", 2, 5, "mode");
    at("FROM a\nRUN --mount=type=cache,sharing=sometimes,target=/x echo\n", 2, 5, "sharing");
    at("FROM a\nRUN --mount=target echo\n", 2, 5, "key=value");
    at("FROM a\nRUN --mount= echo\n", 2, 5, "mount");
}

#[test]
fn missing_arguments() {
    at("FROM\n", 1, 1, "FROM requires");
    at("FROM a\nCOPY onlyone\n", 2, 6, "COPY requires at least two arguments");
    at("FROM a\nADD --chown=1 onlyone\n", 2, 15, "ADD requires at least two arguments");
    at("FROM a\nCOPY\n", 2, 1, "COPY requires");
    at("FROM a\nCOPY [\"one\"]\n", 2, 6, "two arguments");
    at("FROM a\nRUN\n", 2, 1, "RUN requires");
    at("FROM a\nRUN --network=none\n", 2, 1, "RUN requires");
    at("FROM a\nRUN []\n", 2, 1, "RUN requires");
    at("FROM a\nCMD\n", 2, 1, "CMD requires");
    at("FROM a\nENTRYPOINT \n", 2, 1, "ENTRYPOINT requires");
    at("FROM a\nENV\n", 2, 1, "ENV requires");
    at("FROM a\nLABEL\n", 2, 1, "LABEL requires");
    at("ARG\nFROM a\n", 1, 1, "ARG requires");
    at("FROM a\nWORKDIR\n", 2, 1, "WORKDIR requires");
    at("FROM a\nUSER\n", 2, 1, "USER requires");
    at("FROM a\nSTOPSIGNAL\n", 2, 1, "STOPSIGNAL requires");
    at("FROM a\nMAINTAINER\n", 2, 1, "MAINTAINER requires");
    at("FROM a\nEXPOSE\n", 2, 1, "EXPOSE requires");
    at("FROM a\nVOLUME\n", 2, 1, "VOLUME requires");
    at("FROM a\nVOLUME []\n", 2, 1, "VOLUME requires");
    at("FROM a\nONBUILD\n", 2, 1, "ONBUILD requires");
    at("FROM a\nHEALTHCHECK\n", 2, 1, "HEALTHCHECK requires");
    at("FROM a\nHEALTHCHECK CMD\n", 2, 13, "missing command after HEALTHCHECK CMD");
    at("FROM a\nHEALTHCHECK CMD []\n", 2, 13, "missing command");
}

#[test]
fn key_value_errors() {
    let e = at("FROM a\nENV a=b c\n", 2, 9, "can't find = in \"c\"");
    assert!(e.help.is_some());
    at("FROM a\nLABEL x=1 \\\n  y\n", 3, 3, "can't find = in \"y\"");
    at("FROM a\nENV lonely\n", 2, 5, "missing a value");
    at("FROM a\nLABEL lonely\n", 2, 7, "missing a value");
    at("FROM a\nENV =x\n", 2, 5, "ENV names can not be blank");
    at("FROM a\nLABEL a=1 =x\n", 2, 11, "LABEL names can not be blank");
    at("ARG a =b\nFROM x\n", 1, 7, "ARG names can not be blank");
}

/// BuildKit accepts an escape at the end of the file (also when only blank
/// or comment lines follow it): the instruction ends with what was joined.
#[test]
fn end_of_file_after_continuation_is_accepted() {
    use kiln::dockerfile::{CmdLine, Command};
    for (src, want) in [
        ("FROM a\nRUN echo hi \\", "echo hi"),
        ("FROM a\nRUN echo hi \\\n", "echo hi"),
        ("FROM a\nRUN a \\\n  b \\\n\n# only a comment\n", "a   b"),
    ] {
        let df = dockerfile::parse(src, "Dockerfile").unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!(df.instructions.len(), 2, "{src:?}");
        match &df.instructions[1].command {
            Command::Run(run) => assert_eq!(run.cmd, CmdLine::Shell(want.to_string()), "{src:?}"),
            other => panic!("{src:?}: expected RUN, got {other:?}"),
        }
    }
}

#[test]
fn no_from() {
    at("", 1, 1, "no FROM instruction");
    at("# just a comment\n\n", 1, 1, "no FROM instruction");
    at("ARG A=1\nARG B\n", 1, 1, "no FROM instruction");
}

#[test]
fn instruction_before_first_from() {
    let e = at("ARG V=1\nRUN echo $V\nFROM a\n", 2, 1, "RUN instruction before the first FROM");
    assert!(e.help.unwrap().contains("ARG"));
    at("# c\n  ENV A=b\nFROM a\n", 2, 3, "ENV instruction before the first FROM");
    at("ONBUILD RUN x\nFROM a\n", 1, 1, "ONBUILD");
    at("LABEL a=b\n", 1, 1, "LABEL instruction before the first FROM");
}

#[test]
fn bad_escape_directive() {
    let e = at("# escape=/\nFROM a\n", 1, 10, "escape");
    assert!(e.help.unwrap().contains('`'));
    at("#escape = ab\nFROM a\n", 1, 11, "escape");
}

#[test]
fn repeated_directive() {
    at("# escape=`\n# Escape=\\\nFROM a\n", 2, 1, "only one escape parser directive");
}

#[test]
fn from_shapes() {
    at("FROM a b\n", 1, 8, "one or three arguments");
    at("FROM a AS\n", 1, 8, "one or three");
    at("FROM a BS b\n", 1, 8, "one or three");
    at("FROM a AS b c\n", 1, 8, "one or three");
    at("FROM a AS 1stage\n", 1, 11, "invalid name for build stage");
    at("FROM a AS st@ge\n", 1, 11, "invalid name");
}

#[test]
fn healthcheck_values() {
    at("FROM a\nHEALTHCHECK --interval=5 CMD x\n", 2, 13, "invalid --interval");
    at("FROM a\nHEALTHCHECK --timeout=abc CMD x\n", 2, 13, "invalid --timeout");
    at("FROM a\nHEALTHCHECK --start-period=1d CMD x\n", 2, 13, "start-period");
    at("FROM a\nHEALTHCHECK --interval=500us CMD x\n", 2, 13, "less than 1ms");
    at("FROM a\nHEALTHCHECK --interval=-1s CMD x\n", 2, 13, "less than 1ms");
    at("FROM a\nHEALTHCHECK --retries=three CMD x\n", 2, 13, "--retries");
    at("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, 13, "negative");
    at("FROM a\nHEALTHCHECK --retries=99999999999 CMD x\n", 2, 13, "--retries");
    at("FROM a\nHEALTHCHECK PING x\n", 2, 13, "unknown type \"PING\"");
    at("FROM a\nHEALTHCHECK NONE now\n", 2, 18, "takes no arguments");
    at("FROM a\nHEALTHCHECK --retries=1 NONE\n", 2, 1, "takes no flags");
}

#[test]
fn empty_volume_entry() {
    at("FROM a\nVOLUME [\"/a\", \" \"]\n", 2, 8, "empty string");
}

#[test]
fn error_rendering() {
    let src = "FROM a\n  RUNN echo\n";
    let e = err(src);
    assert_eq!(e.to_string(), "build/Dockerfile.dev:2:3: unknown instruction \"RUNN\" (did you mean \"RUN\"?)");
    let r = e.render(src);
    assert!(r.contains(" 2 |   RUNN echo\n"));
    assert!(r.contains("   |   ^\n"));
    assert!(r.contains("help: did you mean \"RUN\"?"));
}

#[test]
fn chown_ids_beyond_4294967294() {
    let e = at("FROM a\nCOPY --chown=99999999999 x /x\n", 2, 6, "invalid --chown");
    assert!(e.message.contains("numeric ids go from 0 to 4294967294"), "{}", e.message);
    assert!(e.help.unwrap().contains("ids from 0 to 4294967294"));
    at("FROM a\nADD --chown=root:4294967295 x /x\n", 2, 5, "invalid --chown");
    at("FROM a\nRUN --mount=type=cache,target=/c,gid=4294967295 x\n", 2, 5, "not a valid user or group id");
}
