//! The examples of the Dockerfile reference's instruction sections, retyped
//! (names and values changed) and checked against the AST.

use kiln::dockerfile::{self, ArgDecl, CmdLine, Command, CopyCmd, Dockerfile, Instruction, KeyValue, MountKind};

fn parse(src: &str) -> Dockerfile {
    match dockerfile::parse(src, "Dockerfile") {
        Ok(d) => d,
        Err(e) => panic!("{}", e.render(src)),
    }
}

fn cmds(src: &str) -> Vec<Command> {
    parse(src).instructions.into_iter().map(|i| i.command).collect()
}

fn nth(src: &str, n: usize) -> Instruction {
    parse(src).instructions.swap_remove(n)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: v.into() }
}

fn shell(s: &str) -> CmdLine {
    CmdLine::Shell(s.into())
}

fn exec(v: &[&str]) -> CmdLine {
    CmdLine::Exec(v.iter().map(|s| s.to_string()).collect())
}

fn copy_of(c: &Command) -> &CopyCmd {
    match c {
        Command::Copy(c) | Command::Add(c) => c,
        other => panic!("not COPY/ADD: {other:?}"),
    }
}

#[test]
fn format_comment_and_hash_in_argument() {
    let c = cmds("FROM alpine\n# a note\nRUN echo 'we run # of things'\n");
    assert_eq!(c.len(), 2);
    let Command::Run(run) = &c[1] else { panic!() };
    assert_eq!(run.cmd, shell("echo 'we run # of things'"));
}

#[test]
fn format_comment_inside_continuation_is_removed() {
    let a = nth("FROM alpine\nRUN echo hi \\\n# dropped\nthere\n", 1);
    let b = nth("FROM alpine\nRUN echo hi \\\nthere\n", 1);
    assert_eq!(a.command, b.command);
    assert_eq!(a.original, "RUN echo hi there");
    assert_eq!(a.span.end_line, 4);
}

#[test]
fn format_leading_whitespace_is_ignored() {
    let a = cmds("FROM alpine\n        # indented comment\n    RUN echo one\nRUN echo two\n");
    let b = cmds("FROM alpine\n# indented comment\nRUN echo one\nRUN echo two\n");
    assert_eq!(a, b);
}

#[test]
fn format_whitespace_in_arguments_is_kept() {
    let c = cmds("FROM alpine\nRUN echo \"\\\n     hi\\\n     there\"\n");
    let Command::Run(run) = &c[1] else { panic!() };
    assert_eq!(run.cmd, shell("echo \"     hi     there\""));
}

#[test]
fn directive_examples() {
    let d = parse("# syntax=docker/dockerfile:1\nFROM a\n").directives;
    assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
    let d = parse("# escape=\\\nFROM a\n").directives;
    assert_eq!(d.escape, '\\');
    let d = parse("# escape=`\nFROM a\n").directives;
    assert_eq!(d.escape, '`');
    let d = parse("# check=skip=JSONArgsRecommended,StageNameCasing\nFROM a\n").directives;
    assert_eq!(d.check.as_deref(), Some("skip=JSONArgsRecommended,StageNameCasing"));
    let d = parse("# check=skip=JSONArgsRecommended;error=true\nFROM a\n").directives;
    assert_eq!(d.check.as_deref(), Some("skip=JSONArgsRecommended;error=true"));
}

#[test]
fn directive_with_continuation_is_just_a_comment() {
    // `# direc \` is a comment; the next line is then an instruction.
    let err = dockerfile::parse("# direc \\\ntive=value\nFROM a\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (2, 1));
    assert!(err.message.contains("unknown instruction"));
}

#[test]
fn directive_twice_is_an_error() {
    let err = dockerfile::parse("# syntax=one\n# syntax=two\n\nFROM img\n", "Dockerfile").unwrap_err();
    assert_eq!(err.line, 2);
}

#[test]
fn directive_after_instruction_or_comment_is_a_comment() {
    assert_eq!(parse("FROM img\n# escape=`\n").directives.escape, '\\');
    assert_eq!(parse("# about this file\n# escape=`\nFROM img\n").directives.escape, '\\');
    assert_eq!(parse("# unknowndirective=value\n# syntax=value\nFROM img\n").directives.syntax, None);
}

#[test]
fn escape_windows_example_without_directive() {
    // BuildKit does not treat an escaped escape (`c:\\`) as a continuation, so
    // the COPY stands alone; the final `c:\` continues into the end of the
    // file, which ends the RUN there (BuildKit accepts it).
    let src = "FROM microsoft/nanoserver\nCOPY testfile.txt c:\\\\\nRUN dir c:\\\n";
    let d = parse(src);
    assert_eq!(d.instructions.len(), 3);
    assert_eq!(d.instructions[2].original, "RUN dir c:");
    let d = parse("FROM microsoft/nanoserver\nCOPY testfile.txt c:\\\\\nRUN dir c:\\\nRUN next\n");
    assert_eq!(d.instructions.len(), 3);
    assert_eq!(copy_of(&d.instructions[1].command).dest, "c:\\\\");
    assert_eq!(d.instructions[2].original, "RUN dir c:RUN next");
}

#[test]
fn escape_windows_example_with_backtick() {
    let c = parse("# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
    assert_eq!(c.instructions.len(), 3);
    let copy = copy_of(&c.instructions[1].command);
    assert_eq!(copy.sources, vec!["testfile.txt"]);
    assert_eq!(copy.dest, "c:\\");
    assert_eq!(c.instructions[2].command, Command::Run(run_shell("dir c:\\")));
}

fn run_shell(s: &str) -> dockerfile::RunCmd {
    dockerfile::RunCmd { cmd: shell(s), heredocs: vec![], mounts: vec![], network: None, security: None }
}

#[test]
fn environment_replacement_example_keeps_words_raw() {
    let c = cmds("FROM busybox\nENV FOO=/bar\nWORKDIR ${FOO}   # WORKDIR /bar\nADD . $FOO       # ADD . /bar\nCOPY \\$FOO /quux # COPY $FOO /quux\n");
    assert_eq!(c[1], Command::Env(vec![kv("FOO", "/bar")]));
    assert_eq!(c[2], Command::Workdir("${FOO}   # WORKDIR /bar".into()));
    let add = copy_of(&c[3]);
    assert_eq!(add.sources, vec![".", "$FOO", "#", "ADD", "."]);
    assert_eq!(add.dest, "/bar");
}

#[test]
fn env_same_instruction_values() {
    let c = cmds("FROM a\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n");
    assert_eq!(c[2], Command::Env(vec![kv("abc", "bye"), kv("def", "$abc")]));
}

#[test]
fn exec_form_examples() {
    let c = cmds("FROM a\nENTRYPOINT [\"/bin/bash\", \"-c\", \"echo hello\"]\nRUN [ \"echo\", \"$HOME\" ]\nRUN [ \"sh\", \"-c\", \"echo $HOME\" ]\n");
    assert_eq!(c[1], Command::Entrypoint(exec(&["/bin/bash", "-c", "echo hello"])));
    let Command::Run(r) = &c[2] else { panic!() };
    assert_eq!(r.cmd, exec(&["echo", "$HOME"]));
    let Command::Run(r) = &c[3] else { panic!() };
    assert_eq!(r.cmd, exec(&["sh", "-c", "echo $HOME"]));
}

#[test]
fn exec_form_backslashes() {
    let c = cmds(
        "FROM a\nRUN [\"c:\\windows\\system32\\tasklist.exe\"]\nRUN [\"c:\\\\windows\\\\system32\\\\tasklist.exe\"]\n",
    );
    let Command::Run(r) = &c[1] else { panic!() };
    assert_eq!(r.cmd, shell("[\"c:\\windows\\system32\\tasklist.exe\"]"));
    let Command::Run(r) = &c[2] else { panic!() };
    assert_eq!(r.cmd, exec(&["c:\\windows\\system32\\tasklist.exe"]));
}

#[test]
fn shell_form_continuation_equals_one_line() {
    let a = nth("FROM a\nRUN source $HOME/.bashrc && \\\necho $HOME\n", 1);
    let b = nth("FROM a\nRUN source $HOME/.bashrc && echo $HOME\n", 1);
    assert_eq!(a.command, b.command);
    assert_eq!(a.original, b.original);
}

#[test]
fn shell_form_heredoc_example() {
    let i = nth("FROM a\nRUN <<EOF\n  source $HOME/.bashrc\n  echo $HOME\nEOF\n", 1);
    let Command::Run(r) = &i.command else { panic!() };
    assert_eq!(r.cmd, shell("<<EOF"));
    assert_eq!(r.heredocs[0].content, "  source $HOME/.bashrc\n  echo $HOME\n");
    assert_eq!(i.span.end_line, 5);
}

#[test]
fn different_shell_example() {
    let c = cmds("FROM a\nSHELL [\"/bin/bash\", \"-c\"]\nRUN echo hello\n");
    assert_eq!(c[1], Command::Shell(vec!["/bin/bash".into(), "-c".into()]));
}

#[test]
fn from_forms() {
    let c = cmds("FROM ubuntu\nFROM --platform=linux/arm64 ubuntu:22.04 AS base\nFROM ubuntu@sha256:abcd as Other\n");
    assert_eq!(c[0], Command::From { image: "ubuntu".into(), alias: None, platform: None });
    assert_eq!(
        c[1],
        Command::From {
            image: "ubuntu:22.04".into(),
            alias: Some("base".into()),
            platform: Some("linux/arm64".into())
        }
    );
    assert_eq!(c[2], Command::From { image: "ubuntu@sha256:abcd".into(), alias: Some("Other".into()), platform: None });
}

#[test]
fn from_stage_chain_example() {
    let src = "FROM ubuntu AS base\nRUN apt-get update && apt-get install -y shared-tooling\n\nFROM base AS dev\nRUN apt-get install -y dev-tooling\n\nFROM base AS prod\nCOPY --from=build /app /app\n";
    let c = cmds(src);
    assert_eq!(c.len(), 6);
    assert_eq!(copy_of(&c[5]).from.as_deref(), Some("build"));
}

#[test]
fn from_platform_variable() {
    let c = cmds("FROM --platform=$BUILDPLATFORM golang AS build\n");
    assert_eq!(
        c[0],
        Command::From { image: "golang".into(), alias: Some("build".into()), platform: Some("$BUILDPLATFORM".into()) }
    );
}

#[test]
fn arg_before_from_examples() {
    let c = cmds("ARG  CODE_VERSION=latest\nFROM base:${CODE_VERSION}\nCMD  /code/run-app\n\nFROM extras:${CODE_VERSION}\nCMD  /code/run-extras\n");
    assert_eq!(c[0], Command::Arg(vec![ArgDecl { name: "CODE_VERSION".into(), default: Some("latest".into()) }]));
    assert_eq!(c[1], Command::From { image: "base:${CODE_VERSION}".into(), alias: None, platform: None });
    assert_eq!(c[2], Command::Cmd(shell("/code/run-app")));
    let c = cmds("ARG VERSION=latest\nFROM busybox:$VERSION\nARG VERSION\nRUN echo $VERSION > image_version\n");
    assert_eq!(c[2], Command::Arg(vec![ArgDecl { name: "VERSION".into(), default: None }]));
}

#[test]
fn run_heredoc_example() {
    let i = nth("FROM a\nRUN <<EOF\napt-get update\napt-get install -y curl\nEOF\n", 1);
    let Command::Run(r) = &i.command else { panic!() };
    assert_eq!(r.heredocs[0].content, "apt-get update\napt-get install -y curl\n");
    assert_eq!(i.original, "RUN <<EOF");
}

#[test]
fn run_device_is_rejected_with_a_clear_error() {
    let err = dockerfile::parse("FROM a\nRUN --device=nvidia.com/gpu=all ./llama\n", "Dockerfile").unwrap_err();
    assert_eq!((err.line, err.column), (2, 5));
    assert!(err.message.contains("--device") && err.message.contains("RUN"));
}

#[test]
fn run_mount_bind_from_stages() {
    let src = "FROM scratch AS model\nFROM scratch AS prompt\nCOPY <<EOF prompt.txt\nQ: list ten things.\nA:\n[\n\nEOF\n\nFROM img\nRUN --mount=from=model,target=/models \\\n    --mount=from=prompt,target=/tmp \\\n    ./run -m /models/m.gguf -f /tmp/prompt.txt\n";
    let d = parse(src);
    let copy = copy_of(&d.instructions[2].command);
    assert_eq!(copy.heredocs[0].content, "Q: list ten things.\nA:\n[\n\n");
    let Command::Run(r) = &d.instructions[4].command else { panic!() };
    assert_eq!(r.mounts.len(), 2);
    assert!(r.mounts.iter().all(|m| m.kind == MountKind::Bind));
    assert_eq!(
        r.mounts[1].options,
        vec![("from".into(), Some("prompt".into())), ("target".into(), Some("/tmp".into()))]
    );
    assert_eq!(r.cmd, shell("./run -m /models/m.gguf -f /tmp/prompt.txt"));
    assert_eq!(d.instructions[4].span.line, 11);
    assert_eq!(d.instructions[4].span.end_line, 13);
}

#[test]
fn run_mount_cache_examples() {
    let c = cmds("FROM golang\nRUN --mount=type=cache,target=/root/.cache/go-build \\\n  go build ...\n");
    let Command::Run(r) = &c[1] else { panic!() };
    assert_eq!(r.mounts[0].kind, MountKind::Cache);
    assert_eq!(r.mounts[0].options, vec![("target".into(), Some("/root/.cache/go-build".into()))]);
    let c = cmds("FROM ubuntu\nRUN rm -f /etc/apt/apt.conf.d/docker-clean; echo 'Keep \"true\";' > /etc/apt/keep\nRUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n  --mount=type=cache,target=/var/lib/apt,sharing=locked \\\n  apt-get update && apt-get --no-install-recommends install -y gcc\n");
    let Command::Run(r) = &c[2] else { panic!() };
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(r.mounts[1].options[1], ("sharing".into(), Some("locked".into())));
    assert_eq!(r.cmd, shell("apt-get update && apt-get --no-install-recommends install -y gcc"));
}

#[test]
fn run_mount_secret_and_ssh_examples() {
    let c = cmds("FROM python:3\nRUN pip install awscli\nRUN --mount=type=secret,id=aws,target=/root/.aws/credentials \\\n  aws s3 cp s3://bucket/x .\nRUN --mount=type=secret,id=API_KEY,env=API_KEY \\\n    some-command --token-from-env $API_KEY\nRUN --mount=type=ssh \\\n  ssh -q -T git@gitlab.com 2>&1 | tee /hello\n");
    let Command::Run(r) = &c[2] else { panic!() };
    assert_eq!(r.mounts[0].kind, MountKind::Secret);
    let Command::Run(r) = &c[3] else { panic!() };
    assert_eq!(
        r.mounts[0].options,
        vec![("id".into(), Some("API_KEY".into())), ("env".into(), Some("API_KEY".into()))]
    );
    let Command::Run(r) = &c[4] else { panic!() };
    assert_eq!(r.mounts[0].kind, MountKind::Ssh);
    assert!(r.mounts[0].options.is_empty());
}

#[test]
fn run_network_and_security_examples() {
    let c = cmds("FROM python:3.6\nADD mypackage.tgz wheels/\nRUN --network=none pip install --find-links wheels mypackage\nRUN --network=host echo\nRUN --network=default echo\nRUN --security=insecure cat /proc/self/status | grep CapEff\nRUN --security=sandbox true\n");
    let nets: Vec<Option<String>> = c[2..5]
        .iter()
        .map(|c| match c {
            Command::Run(r) => r.network.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(nets, vec![Some("none".into()), Some("host".into()), Some("default".into())]);
    let Command::Run(r) = &c[5] else { panic!() };
    assert_eq!(r.security.as_deref(), Some("insecure"));
    assert_eq!(r.cmd, shell("cat /proc/self/status | grep CapEff"));
    let Command::Run(r) = &c[6] else { panic!() };
    assert_eq!(r.security.as_deref(), Some("sandbox"));
}

#[test]
fn cmd_forms() {
    let c = cmds(
        "FROM a\nCMD [\"executable\",\"param1\",\"param2\"]\nCMD [\"param1\",\"param2\"]\nCMD command param1 param2\n",
    );
    assert_eq!(c[1], Command::Cmd(exec(&["executable", "param1", "param2"])));
    assert_eq!(c[2], Command::Cmd(exec(&["param1", "param2"])));
    assert_eq!(c[3], Command::Cmd(shell("command param1 param2")));
}

#[test]
fn label_examples() {
    let c = cmds("FROM a\nLABEL \"com.example.vendor\"=\"ACME Incorporated\"\nLABEL com.example.label-with-value=\"foo\"\nLABEL version=\"1.0\"\nLABEL description=\"This text illustrates \\\nthat label-values can span multiple lines.\"\n");
    assert_eq!(c[1], Command::Label(vec![kv("\"com.example.vendor\"", "\"ACME Incorporated\"")]));
    assert_eq!(c[2], Command::Label(vec![kv("com.example.label-with-value", "\"foo\"")]));
    assert_eq!(c[3], Command::Label(vec![kv("version", "\"1.0\"")]));
    assert_eq!(
        c[4],
        Command::Label(vec![kv("description", "\"This text illustrates that label-values can span multiple lines.\"")])
    );
}

#[test]
fn label_multiple() {
    let want = Command::Label(vec![
        kv("multi.label1", "\"value1\""),
        kv("multi.label2", "\"value2\""),
        kv("other", "\"value3\""),
    ]);
    assert_eq!(cmds("FROM a\nLABEL multi.label1=\"value1\" multi.label2=\"value2\" other=\"value3\"\n")[1], want);
    assert_eq!(
        cmds("FROM a\nLABEL multi.label1=\"value1\" \\\n      multi.label2=\"value2\" \\\n      other=\"value3\"\n")[1],
        want
    );
}

#[test]
fn maintainer_and_its_label_replacement() {
    let c = cmds(
        "FROM a\nMAINTAINER Jane Doe <jane@example.org>\nLABEL org.opencontainers.image.authors=\"jane@example.org\"\n",
    );
    assert_eq!(c[1], Command::Maintainer("Jane Doe <jane@example.org>".into()));
    assert_eq!(c[2], Command::Label(vec![kv("org.opencontainers.image.authors", "\"jane@example.org\"")]));
}

#[test]
fn expose_examples() {
    let c = cmds("FROM a\nEXPOSE 80/udp\nEXPOSE 80/tcp\nEXPOSE 80 443\nEXPOSE $PORT\n");
    assert_eq!(c[1], Command::Expose(vec!["80/udp".into()]));
    assert_eq!(c[2], Command::Expose(vec!["80/tcp".into()]));
    assert_eq!(c[3], Command::Expose(vec!["80".into(), "443".into()]));
    assert_eq!(c[4], Command::Expose(vec!["$PORT".into()]));
}

#[test]
fn env_examples() {
    let c = cmds("FROM a\nENV MY_NAME=\"John Doe\"\nENV MY_DOG=Rex\\ The\\ Dog\nENV MY_CAT=fluffy\nENV MY_NAME=\"John Doe\" MY_DOG=Rex\\ The\\ Dog \\\n    MY_CAT=fluffy\n");
    assert_eq!(c[1], Command::Env(vec![kv("MY_NAME", "\"John Doe\"")]));
    assert_eq!(c[2], Command::Env(vec![kv("MY_DOG", "Rex\\ The\\ Dog")]));
    assert_eq!(c[3], Command::Env(vec![kv("MY_CAT", "fluffy")]));
    assert_eq!(
        c[4],
        Command::Env(vec![kv("MY_NAME", "\"John Doe\""), kv("MY_DOG", "Rex\\ The\\ Dog"), kv("MY_CAT", "fluffy")])
    );
}

#[test]
fn env_alternative_syntax() {
    let c = cmds("FROM a\nENV MY_VAR my-value\nENV ONE TWO= THREE=world\n");
    assert_eq!(c[1], Command::Env(vec![kv("MY_VAR", "my-value")]));
    assert_eq!(c[2], Command::Env(vec![kv("ONE", "TWO= THREE=world")]));
}

#[test]
fn env_and_arg_for_one_command() {
    let c = cmds("FROM a\nRUN DEBIAN_FRONTEND=noninteractive apt-get update && apt-get install -y x\nARG DEBIAN_FRONTEND=noninteractive\n");
    assert_eq!(
        c[2],
        Command::Arg(vec![ArgDecl { name: "DEBIAN_FRONTEND".into(), default: Some("noninteractive".into()) }])
    );
}

#[test]
fn add_sources() {
    let c = cmds("FROM a\nADD file1.txt file2.txt /usr/src/things/\nADD https://example.com/archive.zip /usr/src/things/\nADD git@github.com:user/repo.git /usr/src/things/\nADD *.png /dest/\nADD index.?s /dest/\nADD arr[[]0].txt /dest/\nADD test.txt /abs/\nADD test.txt rel/\n");
    assert_eq!(copy_of(&c[1]).sources, vec!["file1.txt", "file2.txt"]);
    assert_eq!(copy_of(&c[1]).dest, "/usr/src/things/");
    assert_eq!(copy_of(&c[2]).sources, vec!["https://example.com/archive.zip"]);
    assert_eq!(copy_of(&c[3]).sources, vec!["git@github.com:user/repo.git"]);
    assert_eq!(copy_of(&c[6]).sources, vec!["arr[[]0].txt"]);
    assert_eq!(copy_of(&c[8]).dest, "rel/");
}

#[test]
fn add_git_with_fragment_and_keep_git_dir() {
    let c = cmds("FROM alpine\nADD git@github.com:moby/buildkit.git#v0.14.1:docs /buildkit-docs\nADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1 /buildkit\n");
    assert_eq!(copy_of(&c[1]).keep_git_dir, None);
    assert_eq!(copy_of(&c[2]).keep_git_dir, Some(true));
    assert!(matches!(c[2], Command::Add(_)));
}

#[test]
fn add_checksum() {
    let c = cmds("FROM a\nADD --checksum=be1f38e https://github.com/moby/buildkit.git#v0.26.2 /\nADD --checksum=sha256:2445 https://mirror.example/linux-0.01.tar.gz /\n");
    assert_eq!(copy_of(&c[1]).checksum.as_deref(), Some("be1f38e"));
    assert_eq!(copy_of(&c[2]).checksum.as_deref(), Some("sha256:2445"));
}

#[test]
fn add_unpack() {
    let c = cmds("FROM alpine\n# fetch and unpack\nADD --unpack=true https://example.com/archive.tar.gz /download\n# local tar, kept packed\nADD --unpack=false my-archive.tar.gz .\nADD --unpack x.tar /\nADD y.tar /\n");
    let unpack: Vec<Option<bool>> = c[1..].iter().map(|c| copy_of(c).unpack).collect();
    assert_eq!(unpack, vec![Some(true), Some(false), Some(true), None]);
}

#[test]
fn copy_from_examples() {
    let c = cmds("FROM golang AS build\nWORKDIR /app\nRUN --mount=type=bind,target=. go build -o /myapp ./cmd\n\nCOPY --from=build /myapp /usr/bin/\nCOPY --from=nginx:latest /etc/nginx/nginx.conf /nginx.conf\n");
    let Command::Run(r) = &c[2] else { panic!() };
    assert_eq!(r.mounts[0].kind, MountKind::Bind);
    assert_eq!(copy_of(&c[3]).from.as_deref(), Some("build"));
    assert_eq!(copy_of(&c[4]).from.as_deref(), Some("nginx:latest"));
    assert_eq!(copy_of(&c[4]).dest, "/nginx.conf");
}

#[test]
fn copy_chmod_examples() {
    let c = cmds("FROM a\nCOPY --chmod=755 app.sh /app/\nCOPY --chmod=644 file.txt /data/\nARG MODE=440\nCOPY --chmod=$MODE . .\nCOPY --chmod=+x script.sh /app/\nCOPY --chmod=u=rwX,go=rX . /app/\nCOPY --chmod=g=u config/ /config/\n");
    let modes: Vec<String> = [1, 2, 4, 5, 6, 7].iter().map(|&i| copy_of(&c[i]).chmod.clone().unwrap()).collect();
    assert_eq!(modes, vec!["755", "644", "$MODE", "+x", "u=rwX,go=rX", "g=u"]);
}

#[test]
fn copy_chown_examples() {
    let c = cmds("FROM a\nCOPY --chown=55:mygroup files* /somedir/\nCOPY --chown=bin files* /somedir/\nCOPY --chown=1 files* /somedir/\nCOPY --chown=10:11 files* /somedir/\nCOPY --chown=myuser:mygroup --chmod=644 files* /somedir/\n");
    let owners: Vec<String> = c[1..].iter().map(|c| copy_of(c).chown.clone().unwrap()).collect();
    assert_eq!(owners, vec!["55:mygroup", "bin", "1", "10:11", "myuser:mygroup"]);
    assert_eq!(copy_of(&c[5]).chmod.as_deref(), Some("644"));
    assert_eq!(copy_of(&c[5]).sources, vec!["files*"]);
}

#[test]
fn copy_link_examples() {
    let c = cmds("FROM alpine\nCOPY --link /foo /bar\nCOPY --link=false a b\nCOPY --link=TRUE a b\nCOPY a b\n");
    let links: Vec<bool> = c[1..].iter().map(|c| copy_of(c).link).collect();
    assert_eq!(links, vec![true, false, true, false]);
}

#[test]
fn copy_parents_examples() {
    let c = cmds("FROM scratch\n\nCOPY ./x/a.txt ./y/a.txt /no_parents/\nCOPY --parents ./x/a.txt ./y/a.txt /parents/\nCOPY --parents ./x/./y/*.txt /parents/\nCOPY --parents ./src/**/*.txt /parents/\n");
    assert!(!copy_of(&c[1]).parents);
    assert!(copy_of(&c[2]).parents);
    assert_eq!(copy_of(&c[3]).sources, vec!["./x/./y/*.txt"]);
    assert_eq!(copy_of(&c[4]).sources, vec!["./src/**/*.txt"]);
}

#[test]
fn copy_exclude_examples() {
    let c = cmds("FROM scratch\n\nCOPY --exclude=*.txt hom* /mydir/\nCOPY --exclude=*.txt --exclude=*.md hom* /mydir/\nADD --exclude=*.log logs/ /l/\n");
    assert_eq!(copy_of(&c[1]).exclude, vec!["*.txt"]);
    assert_eq!(copy_of(&c[2]).exclude, vec!["*.txt", "*.md"]);
    assert_eq!(copy_of(&c[3]).exclude, vec!["*.log"]);
}

#[test]
fn copy_json_form_for_spaces() {
    let c = cmds("FROM a\nCOPY [\"my file.txt\", \"other one\", \"/dest dir/\"]\n");
    assert_eq!(copy_of(&c[1]).sources, vec!["my file.txt", "other one"]);
    assert_eq!(copy_of(&c[1]).dest, "/dest dir/");
}

#[test]
fn copy_multistage_example() {
    let c = cmds("# syntax=docker/dockerfile:1\nFROM alpine AS build\nCOPY . .\nRUN apk add clang\nRUN clang -o /hello hello.c\n\nFROM scratch\nCOPY --from=build /hello /\n");
    assert_eq!(c.len(), 6);
    assert_eq!(copy_of(&c[5]).sources, vec!["/hello"]);
}

#[test]
fn entrypoint_examples() {
    let c = cmds("FROM ubuntu\nENTRYPOINT [\"top\", \"-b\"]\nCMD [\"-c\"]\n");
    assert_eq!(c[1], Command::Entrypoint(exec(&["top", "-b"])));
    assert_eq!(c[2], Command::Cmd(exec(&["-c"])));
    let c = cmds("FROM debian:stable\nRUN apt-get update && apt-get install -y --force-yes apache2\nEXPOSE 80 443\nVOLUME [\"/var/www\", \"/var/log/apache2\", \"/etc/apache2\"]\nENTRYPOINT [\"/usr/sbin/apache2ctl\", \"-D\", \"FOREGROUND\"]\n");
    assert_eq!(c[3], Command::Volume(vec!["/var/www".into(), "/var/log/apache2".into(), "/etc/apache2".into()]));
    let c = cmds("FROM ubuntu\nENTRYPOINT exec top -b\n");
    assert_eq!(c[1], Command::Entrypoint(shell("exec top -b")));
}

#[test]
fn cmd_double_dash_ends_flags() {
    let d = parse("FROM ubuntu\nENTRYPOINT top -b\nCMD -- --ignored-param1\n");
    assert_eq!(d.instructions[2].command, Command::Cmd(shell("--ignored-param1")));
    assert_eq!(d.instructions[2].original, "CMD -- --ignored-param1");
}

#[test]
fn volume_examples() {
    let c = cmds("FROM ubuntu\nRUN mkdir /myvol\nRUN echo \"hello world\" > /myvol/greeting\nVOLUME /myvol\nVOLUME [\"/data\"]\nVOLUME /var/log /var/db\n");
    assert_eq!(c[3], Command::Volume(vec!["/myvol".into()]));
    assert_eq!(c[4], Command::Volume(vec!["/data".into()]));
    assert_eq!(c[5], Command::Volume(vec!["/var/log".into(), "/var/db".into()]));
}

#[test]
fn user_examples() {
    let c = cmds("FROM microsoft/windowsservercore\n# make a user\nRUN net user /add patrick\n# use it\nUSER patrick\nUSER 1000:1000\nUSER app:staff\n");
    assert_eq!(c[2], Command::User("patrick".into()));
    assert_eq!(c[3], Command::User("1000:1000".into()));
    assert_eq!(c[4], Command::User("app:staff".into()));
}

#[test]
fn workdir_examples() {
    let c = cmds("FROM a\nWORKDIR /a\nWORKDIR b\nWORKDIR c\nRUN pwd\nENV DIRPATH=/path\nWORKDIR $DIRPATH/$DIRNAME\n");
    assert_eq!(c[1], Command::Workdir("/a".into()));
    assert_eq!(c[3], Command::Workdir("c".into()));
    assert_eq!(c[6], Command::Workdir("$DIRPATH/$DIRNAME".into()));
}

#[test]
fn arg_examples() {
    let c =
        cmds("FROM busybox\nARG user1\nARG buildno\n# ...\nARG user1=someuser\nARG buildno=1\nARG a=1 b c=\"x y\"\n");
    assert_eq!(c[1], Command::Arg(vec![ArgDecl { name: "user1".into(), default: None }]));
    assert_eq!(c[3], Command::Arg(vec![ArgDecl { name: "user1".into(), default: Some("someuser".into()) }]));
    assert_eq!(
        c[5],
        Command::Arg(vec![
            ArgDecl { name: "a".into(), default: Some("1".into()) },
            ArgDecl { name: "b".into(), default: None },
            ArgDecl { name: "c".into(), default: Some("\"x y\"".into()) },
        ])
    );
}

#[test]
fn arg_scope_example() {
    let c = cmds("FROM busybox\nUSER ${username:-some_user}\nARG username\nUSER $username\n");
    assert_eq!(c[1], Command::User("${username:-some_user}".into()));
    assert_eq!(c[3], Command::User("$username".into()));
}

#[test]
fn arg_env_interaction_examples() {
    let c = cmds("FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}\nRUN echo $CONT_IMG_VER\n");
    assert_eq!(c[2], Command::Env(vec![kv("CONT_IMG_VER", "${CONT_IMG_VER:-v1.0.0}")]));
    let c = cmds("FROM alpine\nARG TARGETPLATFORM\nRUN echo \"I'm building for $TARGETPLATFORM\"\n");
    let Command::Run(r) = &c[2] else { panic!() };
    assert_eq!(r.cmd, shell("echo \"I'm building for $TARGETPLATFORM\""));
}

#[test]
fn arg_keep_git_dir_example() {
    let c = cmds("# syntax=docker/dockerfile:1\nFROM alpine\nWORKDIR /src\nRUN --mount=target=. \\\n  make REVISION=$(git rev-parse HEAD) build\n");
    let Command::Run(r) = &c[2] else { panic!() };
    assert_eq!(r.mounts[0].options, vec![("target".into(), Some(".".into()))]);
    assert_eq!(r.cmd, shell("make REVISION=$(git rev-parse HEAD) build"));
}

#[test]
fn onbuild_examples() {
    let d = parse("FROM a\nONBUILD ADD . /app/src\nONBUILD RUN /usr/local/bin/python-build --dir /app/src\n");
    let Command::Onbuild(inner) = &d.instructions[1].command else { panic!() };
    assert_eq!(copy_of(&inner.command).sources, vec!["."]);
    assert_eq!(inner.original, "ADD . /app/src");
    assert_eq!(d.instructions[1].original, "ONBUILD ADD . /app/src");
    assert_eq!((inner.span.line, inner.span.column), (2, 9));
    let Command::Onbuild(inner) = &d.instructions[2].command else { panic!() };
    assert_eq!(inner.command, Command::Run(run_shell("/usr/local/bin/python-build --dir /app/src")));
}

#[test]
fn onbuild_with_from_flags() {
    let d = parse("# syntax=docker/dockerfile:1.11\nFROM alpine AS baseimage\nONBUILD COPY --from=build /usr/bin/app /app\nONBUILD RUN --mount=from=config,target=/opt/appconfig ls\n");
    let Command::Onbuild(inner) = &d.instructions[1].command else { panic!() };
    assert_eq!(copy_of(&inner.command).from.as_deref(), Some("build"));
    let Command::Onbuild(inner) = &d.instructions[2].command else { panic!() };
    let Command::Run(r) = &inner.command else { panic!() };
    assert_eq!(r.mounts[0].options[0], ("from".into(), Some("config".into())));
}

#[test]
fn onbuild_limitations() {
    for (src, what) in [
        ("FROM a\nONBUILD ONBUILD RUN x\n", "ONBUILD ONBUILD"),
        ("FROM a\nONBUILD FROM b\n", "FROM isn't allowed"),
        ("FROM a\nONBUILD maintainer me\n", "MAINTAINER isn't allowed"),
    ] {
        let err = dockerfile::parse(src, "Dockerfile").unwrap_err();
        assert!(err.message.contains(what), "{}", err.message);
        assert_eq!((err.line, err.column), (2, 9));
    }
}

#[test]
fn stopsignal_examples() {
    let c = cmds("FROM a\nSTOPSIGNAL SIGKILL\nSTOPSIGNAL 9\n");
    assert_eq!(c[1], Command::StopSignal("SIGKILL".into()));
    assert_eq!(c[2], Command::StopSignal("9".into()));
}

#[test]
fn healthcheck_example() {
    let c = cmds("FROM a\nHEALTHCHECK --interval=5m --timeout=3s \\\n  CMD curl -f http://localhost/ || exit 1\n");
    let Command::Healthcheck(Some(h)) = &c[1] else { panic!() };
    assert_eq!(h.test, shell("curl -f http://localhost/ || exit 1"));
    assert_eq!(h.interval, Some(300_000_000_000));
    assert_eq!(h.timeout, Some(3_000_000_000));
    assert_eq!(h.start_period, None);
    assert_eq!(h.retries, None);
}

#[test]
fn healthcheck_all_options_and_none() {
    let c = cmds("FROM a\nHEALTHCHECK --interval=30s --timeout=30s --start-period=0s --start-interval=5s --retries=3 CMD [\"/bin/check-running\"]\nHEALTHCHECK CMD /bin/check-running\nHEALTHCHECK NONE\n");
    let Command::Healthcheck(Some(h)) = &c[1] else { panic!() };
    assert_eq!(h.test, exec(&["/bin/check-running"]));
    assert_eq!(
        (h.interval, h.timeout, h.start_period, h.start_interval, h.retries),
        (Some(30_000_000_000), Some(30_000_000_000), Some(0), Some(5_000_000_000), Some(3))
    );
    let Command::Healthcheck(Some(h)) = &c[2] else { panic!() };
    assert_eq!(h.test, shell("/bin/check-running"));
    assert_eq!(c[3], Command::Healthcheck(None));
}

#[test]
fn shell_examples() {
    let src = "FROM microsoft/windowsservercore\n\n# cmd /S /C echo default\nRUN echo default\n\nRUN powershell -command Write-Host default\n\nSHELL [\"powershell\", \"-command\"]\nRUN Write-Host hello\n\nSHELL [\"cmd\", \"/S\", \"/C\"]\nRUN echo hello\n";
    let c = cmds(src);
    assert_eq!(c[3], Command::Shell(vec!["powershell".into(), "-command".into()]));
    assert_eq!(c[5], Command::Shell(vec!["cmd".into(), "/S".into(), "/C".into()]));
    let c =
        cmds("FROM a\nRUN [\"powershell\", \"-command\", \"Execute-MyCmdlet\", \"-param1 \\\"c:\\\\foo.txt\\\"\"]\n");
    let Command::Run(r) = &c[1] else { panic!() };
    assert_eq!(r.cmd, exec(&["powershell", "-command", "Execute-MyCmdlet", "-param1 \"c:\\foo.txt\""]));
}

#[test]
fn shell_with_backtick_escape_example() {
    let src = "# escape=`\n\nFROM microsoft/nanoserver\nSHELL [\"powershell\",\"-command\"]\nRUN New-Item -ItemType Directory C:\\Example\nADD Execute-MyCmdlet.ps1 c:\\example\\\nRUN c:\\example\\Execute-MyCmdlet -sample 'hello world'\n";
    let c = cmds(src);
    assert_eq!(c.len(), 5);
    assert_eq!(copy_of(&c[3]).dest, "c:\\example\\");
    assert_eq!(c[4], Command::Run(run_shell("c:\\example\\Execute-MyCmdlet -sample 'hello world'")));
}

#[test]
fn heredoc_examples() {
    let d = parse("# syntax=docker/dockerfile:1\nFROM debian\nRUN <<EOT bash\n  set -ex\n  apt-get update\n  apt-get install -y vim\nEOT\n");
    let Command::Run(r) = &d.instructions[1].command else { panic!() };
    assert_eq!(r.cmd, shell("<<EOT bash"));
    assert_eq!(r.heredocs[0].content, "  set -ex\n  apt-get update\n  apt-get install -y vim\n");

    let d = parse("FROM python:3.6\nRUN <<EOT\n#!/usr/bin/env python\nprint(\"hello world\")\nEOT\n");
    let Command::Run(r) = &d.instructions[1].command else { panic!() };
    assert_eq!(r.heredocs[0].content, "#!/usr/bin/env python\nprint(\"hello world\")\n");

    let d =
        parse("FROM alpine\nRUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n");
    let Command::Run(r) = &d.instructions[1].command else { panic!() };
    assert_eq!(
        r.heredocs.iter().map(|h| (h.name.as_str(), h.content.as_str())).collect::<Vec<_>>(),
        vec![("FILE1", "I am\nfirst\n"), ("FILE2", "I am\nsecond\n")]
    );
    assert_eq!(d.instructions[1].span.end_line, 8);
}

#[test]
fn heredoc_inline_file_examples() {
    let d = parse("FROM alpine\nCOPY <<EOF greeting.txt\nhello world\nEOF\n");
    let c = copy_of(&d.instructions[1].command);
    assert_eq!(c.sources, vec!["<<EOF"]);
    assert_eq!(c.dest, "greeting.txt");
    assert_eq!(c.heredocs[0].content, "hello world\n");

    let d = parse(
        "FROM alpine\nARG FOO=bar\nCOPY <<-EOT /script.sh\n\techo \"hello ${FOO}\"\nEOT\nENTRYPOINT ash /script.sh\n",
    );
    let c = copy_of(&d.instructions[2].command);
    assert_eq!(c.heredocs[0].content, "echo \"hello ${FOO}\"\n");
    assert!(c.heredocs[0].expand && c.heredocs[0].strip_tabs);
    assert_eq!(d.instructions[3].command, Command::Entrypoint(shell("ash /script.sh")));

    let d = parse("FROM alpine\nARG FOO=bar\nCOPY <<-\"EOT\" /script.sh\n  echo \"hello ${FOO}\"\nEOT\n");
    let c = copy_of(&d.instructions[2].command);
    assert!(!c.heredocs[0].expand);
    assert_eq!(c.heredocs[0].content, "  echo \"hello ${FOO}\"\n");
    assert_eq!(d.instructions[2].original, "COPY <<-\"EOT\" /script.sh");
}
