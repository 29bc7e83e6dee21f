//! Dockerfile rules as BuildKit applies them, end to end as the unprivileged
//! test user: WORKDIR creating its directory (through symlinks, owned by the
//! USER), heredoc scripts with a shebang, ARG and ONBUILD history, ONBUILD
//! triggers not carried over, a continuation at the end of the file, USER
//! resolution at RUN, and `kiln history` against the layers.

use kiln_integration::*;
use serde_json::{json, Value};

/// The history entries after the base's, as (created_by, empty_layer).
fn own_history(img: &Image, skip: usize) -> Vec<(String, bool)> {
    img.history()
        .iter()
        .skip(skip)
        .map(|h| (h["created_by"].as_str().unwrap_or_default().to_string(), h["empty_layer"] == json!(true)))
        .collect()
}

fn h(text: &str, empty: bool) -> (String, bool) {
    (text.to_string(), empty)
}

/// `WORKDIR /app` then `COPY f.txt /app`: BuildKit makes /app a directory
/// when WORKDIR runs (a layer and a non-empty history entry with the
/// absolute path), so the file lands in /app/f.txt. `WORKDIR /` writes no
/// layer; a WORKDIR that exists writes an empty one; relative ones join.
#[test]
fn workdir_creates_its_directory_as_a_layer_buildkit() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let df = "FROM scratch
ENV BASE=/srv
WORKDIR /app
COPY f.txt /app
WORKDIR /
WORKDIR $BASE/x
WORKDIR ../y/./z
WORKDIR /app
";
    let (_, img) = sb.build_with(df, "wd", &["--source-date-epoch", "1000"]);
    let app = img.entry("app").expect("/app exists");
    assert_eq!((app.kind, app.mode, app.uid, app.gid), (Kind::Dir, 0o755, 0, 0), "WORKDIR makes a 0755 root directory");
    assert_eq!(app.mtime, 1000, "the directory carries the build time (SOURCE_DATE_EPOCH)");
    assert_eq!(img.file_str("app/f.txt"), "f\n", "COPY into the WORKDIR's path lands inside it");
    for d in ["srv", "srv/x", "srv/y", "srv/y/z"] {
        assert_eq!(img.entry(d).map(|e| (e.kind, e.mode)), Some((Kind::Dir, 0o755)), "{d}");
    }
    assert_eq!(img.runtime()["WorkingDir"], "/app");
    assert_eq!(
        own_history(&img, 0),
        [
            h("ENV BASE=/srv", true),
            h("WORKDIR /app", false),
            h("COPY f.txt /app # buildkit", false),
            h("WORKDIR /", true),
            h("WORKDIR /srv/x", false),
            h("WORKDIR /srv/y/z", false),
            h("WORKDIR /app", false),
        ]
    );
    // One layer per non-empty entry; the last WORKDIR found /app and wrote an empty layer.
    assert_eq!(img.layers.len(), 5);
    assert!(img.layers[4].entries.is_empty(), "{:?}", img.layers[4].paths());
    assert_eq!(img.layers[0].paths(), ["app".to_string()].into());

    // Unchanged, every step is a cache hit and the image is the same.
    let again = sb.try_build(df, "wd", &["--source-date-epoch", "1000"]);
    again.ok();
    assert_eq!(again.stdout.matches("--> Using cache").count(), 7, "{}", again.transcript());
    assert_eq!(sb.image("wd").id(), img.id());

    // `kiln history` pairs each entry with its layer: WORKDIR / shows no size.
    let out = sb.kiln(&["history", "--no-trunc", "--human=false", "--format", "{{.CreatedBy}}|{{.Size}}", "wd"]);
    out.ok();
    let rows: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(rows.len(), 7, "{}", out.stdout);
    assert_eq!(rows[3], "WORKDIR /|0");
    assert!(rows[4].starts_with("COPY f.txt /app # buildkit|") && !rows[4].ends_with("|0"), "{}", rows[4]);
    assert_eq!(rows[6], "ENV BASE=/srv|0");
}

/// A stage FROM another stage starts in that stage's WORKDIR: a relative
/// WORKDIR joins it, and the directory the first stage made is there.
#[test]
fn workdir_in_a_stage_from_a_previous_stage() {
    let sb = Sandbox::new();
    let img = sb.build("FROM scratch AS a\nWORKDIR /a\nFROM a\nWORKDIR b\n", "wdstage");
    assert_eq!(img.runtime()["WorkingDir"], "/a/b");
    assert_eq!(img.entry("a").map(|e| e.kind), Some(Kind::Dir));
    assert_eq!(img.entry("a/b").map(|e| e.kind), Some(Kind::Dir));
    assert_eq!(own_history(&img, 0), [h("WORKDIR /a", false), h("WORKDIR /a/b", false)]);
}

/// A file where WORKDIR wants a directory is an error naming it, as
/// BuildKit's mkdir fails with "not a directory".
#[test]
fn workdir_over_a_file_fails() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let out = sb.try_build("FROM scratch\nCOPY f.txt /app\nWORKDIR /app/sub\n", "bad", &[]);
    assert!(!out.success(), "{}", out.transcript());
    out.stderr_has(&["Dockerfile:3", "/app exists in the image and is not a directory"]);
}

/// The directories WORKDIR creates belong to the USER in effect, looked up
/// as BuildKit's file operations look it up: a name through /etc/passwd
/// (uid and gid), a number as both uid and gid, `user:group` by name, and a
/// name the image does not know as root (no error: only RUN needs it).
/// testWorkdirExists: a directory that exists keeps its owner and mode.
#[test]
fn workdir_directories_belong_to_the_user_buildkit() {
    let sb = Sandbox::new();
    sb.write("ctx/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n");
    sb.write("ctx/group", "root:x:0:\nstaff:x:50:\napp:x:1001:\n");
    sb.mkdir("ctx/mydir");
    let img = sb.build(
        "FROM scratch
COPY passwd /etc/passwd
COPY group /etc/group
COPY --chown=1000:1001 --chmod=700 mydir /mydir/
WORKDIR /mydir
USER 3000
WORKDIR /mydir
USER app
WORKDIR /home/app/work
USER 2000
WORKDIR /numeric
USER app:staff
WORKDIR /grouped
USER ghost
WORKDIR /ghost
",
        "wduser",
    );
    let owner = |p: &str| img.entry(p).map(|e| (e.uid, e.gid)).unwrap_or_else(|| panic!("{p} missing"));
    assert_eq!(owner("home"), (1000, 1001), "missing parents are created for the user too");
    assert_eq!(owner("home/app/work"), (1000, 1001));
    assert_eq!(owner("numeric"), (2000, 2000), "a uid is the gid too");
    assert_eq!(owner("grouped"), (1000, 50));
    assert_eq!(owner("ghost"), (0, 0), "an unknown name is root for WORKDIR");
    let mydir = img.entry("mydir").unwrap();
    assert_eq!((mydir.uid, mydir.gid, mydir.mode), (1000, 1001, 0o700), "an existing directory is left as it is");
    assert_eq!(img.runtime()["User"], "ghost");
}

/// `WORKDIR /app`, `COPY f.txt /app`, then RUN: the RUN runs in /app,
/// which holds f.txt. `RUN ln -sf /var/lib/tempest /tempest` then
/// `WORKDIR /tempest`: the symlink is resolved inside the image and its
/// target created; RUN runs there. A symlink that climbs out with `..`
/// stays inside the image.
#[test]
fn workdir_through_a_symlink_in_the_image() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/f.txt", "f\n");
    let df = format!(
        "{RUN_BASE}\
WORKDIR /app
COPY f.txt /app
RUN pwd > /app-pwd && cat f.txt >> /app-pwd
RUN ln -sf /var/lib/tempest /tempest && ln -s ../../../../../outside /climb
WORKDIR /tempest
RUN pwd > /pwd && touch here
WORKDIR /climb/in
RUN touch there
"
    );
    let img = sb.build(&df, "wdlink");
    assert_eq!(img.file_str("app-pwd"), "/app\nf\n", "issue 12 item 2: the COPY went into WORKDIR /app, RUN ran there");
    assert_eq!(img.entry("tempest").map(|e| e.kind), Some(Kind::Symlink), "the symlink stays");
    assert_eq!(img.entry("var/lib/tempest").map(|e| (e.kind, e.mode)), Some((Kind::Dir, 0o755)));
    // The step runs in the directory the link leads to (no PWD is set, so
    // the shell reports the physical path, as under runc).
    assert_eq!(img.file_str("pwd"), "/var/lib/tempest\n");
    assert!(img.entry("var/lib/tempest/here").is_some(), "{:?}", img.paths());
    assert!(img.entry("outside/in/there").is_some(), "{:?}", img.paths());
    assert!(!sb.root().join("outside").exists() && !std::path::Path::new("/outside").exists());
    assert_eq!(img.runtime()["WorkingDir"], "/climb/in");
}

/// BuildKit runs a RUN that is one heredoc starting with `#!` as a script
/// file (`/dev/pipes/EOF`) with its interpreter; without a shebang the body
/// runs in the shell; `cmd <<EOF` feeds the body to the command's stdin.
#[test]
fn heredoc_with_shebang_runs_as_a_script_buildkit() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{RUN_BASE}\
ENV WHO=env
RUN <<EOF
#!/bin/busybox sh
set -o pipefail
echo \"$0 $WHO\" > /script
EOF
RUN <<EOF
echo \"$0\" > /shell
EOF
RUN cat <<EOF > /fed
fed $WHO
EOF
RUN <<-'EOT'
\t#!/bin/busybox sh
\techo \"$0\" > /chomped
\tEOT
RUN printf '#!/bin/sh\\necho \"interp $*\" > /interp\\n' > /bin/myinterp && chmod 755 /bin/myinterp
RUN <<EOF
#!/bin/myinterp --flag
not a shell command
EOF
USER 1234
RUN <<EOF
#!/bin/busybox sh
id -u > /tmp/as-user
EOF
"
    );
    let img = sb.build(&df, "heredoc-run");
    assert_eq!(img.file_str("script"), "/dev/pipes/EOF env\n", "the script ran as a file with its interpreter");
    assert_eq!(img.file_str("shell"), "/bin/sh\n", "a heredoc without shebang runs in the shell");
    assert_eq!(img.file_str("fed"), "fed env\n", "cmd <<EOF reads the body on stdin");
    assert_eq!(img.file_str("chomped"), "/dev/pipes/EOT\n", "<<- strips tabs before the shebang check");
    assert_eq!(img.file_str("interp"), "interp --flag /dev/pipes/EOF\n", "the kernel ran the shebang's interpreter");
    assert_eq!(img.file_str("tmp/as-user"), "1234\n", "a non-root USER can run the script");
    assert!(img.entry("dev/pipes").is_none(), "the script mount is not committed: {:?}", img.paths());
    let history = img.created_by();
    assert!(history.iter().any(|h| h == "RUN /bin/sh -c /dev/pipes/EOF # buildkit"), "{history:#?}");
    assert!(history.iter().any(|h| h == "RUN /bin/sh -c cat <<EOF > /fed\nfed $WHO\nEOF # buildkit"), "{history:#?}");
    assert!(history.iter().any(|h| h == "RUN /bin/sh -c echo \"$0\" > /shell\n # buildkit"), "{history:#?}");
}

/// ARG leaves an empty-layer history entry `ARG NAME=value` (the value in
/// effect: `--build-arg`, else the expanded default, else the global one),
/// as BuildKit and buildah record it; ARGs before FROM and the predefined
/// proxy args leave none. RUN lists the ARGs in scope as BuildKit does.
#[test]
fn arg_history_entries_buildkit() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "ARG GLOBAL=g
{RUN_BASE}\
ARG A=1
ARG B
ARG C=$A-x GLOBAL
ARG NOVALUE
ENV A=env
RUN true
"
    );
    sb.dockerfile(&df);
    let ctx = sb.ctx();
    sb.kiln(&[
        "build",
        "-t",
        "args",
        "--build-arg",
        "B=cli",
        "--build-arg",
        "HTTP_PROXY=http://proxy:3128",
        ctx.to_str().unwrap(),
    ])
    .ok();
    let img = sb.image("args");
    // RUN_BASE is COPY, RUN, RUN: three entries before.
    assert_eq!(
        own_history(&img, 3),
        [
            h("ARG A=1", true),
            h("ARG B=cli", true),
            h("ARG C=1-x GLOBAL=g", true),
            h("ARG NOVALUE", true),
            h("ENV A=env", true),
            h("RUN |5 A=env B=cli C=1-x GLOBAL=g NOVALUE= /bin/sh -c true # buildkit", false),
        ]
    );
    assert!(!img.created_by().iter().any(|h| h.contains("PROXY") || h.contains("proxy")), "{:#?}", img.created_by());
    let out = sb.kiln(&["history", "--no-trunc", "--human=false", "--format", "{{.CreatedBy}}|{{.Size}}", "args"]);
    out.ok();
    let rows: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(rows.len(), img.history().len(), "{}", out.stdout);
    assert!(rows[1..6].iter().all(|r| r.ends_with("|0")), "{}", out.stdout);
    assert!(rows[0].starts_with("RUN |5 A=env") && !rows[0].ends_with("|0"), "the RUN has a layer: {}", out.stdout);
}

/// Triggers fire once: a child of an image with ONBUILD runs them, and its
/// config keeps only its own ONBUILDs, so a grandchild runs only those.
/// ONBUILD itself leaves no history entry (BuildKit records none).
#[test]
fn onbuild_triggers_are_cleared_after_they_fire() {
    let sb = Sandbox::new();
    sb.write("ctx/g", "g\n");
    let parent =
        sb.build("FROM scratch\nONBUILD COPY g /from-trigger\nONBUILD LABEL trig=1\nLABEL parent=1\n", "parent");
    assert_eq!(parent.runtime()["OnBuild"], json!(["COPY g /from-trigger", "LABEL trig=1"]));
    assert_eq!(parent.created_by(), ["LABEL parent=1"], "ONBUILD has no history entry");

    let child = sb.build("FROM parent\nONBUILD LABEL own=1\n", "child");
    assert_eq!(child.runtime()["OnBuild"], json!(["LABEL own=1"]), "the parent's triggers are gone");
    assert_eq!(child.file_str("from-trigger"), "g\n");
    assert_eq!(child.runtime()["Labels"], json!({"parent": "1", "trig": "1"}));
    assert_eq!(child.created_by(), ["LABEL parent=1", "COPY g /from-trigger # buildkit", "LABEL trig=1"]);

    let grandchild = sb.build("FROM child\n", "grandchild");
    assert_eq!(grandchild.runtime()["OnBuild"], Value::Null);
    assert_eq!(grandchild.layers.len(), child.layers.len(), "the parent's COPY trigger did not run again");
    assert_eq!(grandchild.runtime()["Labels"], json!({"parent": "1", "trig": "1", "own": "1"}));
    assert_eq!(grandchild.created_by().len(), 4);

    // The same through stages of one Dockerfile.
    let staged = sb.build(
        "FROM scratch AS base\nONBUILD LABEL fired=base\nFROM base AS mid\nLABEL mid=1\nFROM mid\nLABEL last=1\n",
        "staged",
    );
    assert_eq!(staged.runtime()["OnBuild"], Value::Null, "{}", staged.config);
    assert_eq!(staged.runtime()["Labels"], json!({"fired": "base", "mid": "1", "last": "1"}));
    assert_eq!(staged.created_by(), ["LABEL fired=base", "LABEL mid=1", "LABEL last=1"]);
}

/// An image's triggers run in the child as BuildKit dispatches them: a
/// trigger's ARG takes the child build's `--build-arg`, its ENV expands
/// with the image's env, and the child's own instructions see both.
#[test]
fn onbuild_triggers_with_arg_and_env() {
    let sb = Sandbox::new();
    let parent = sb.build(
        "FROM scratch\nENV BASE=img\nONBUILD ARG GREETING=hi\nONBUILD ENV SEEN=${GREETING}-${BASE}\nONBUILD COPY <<EOF /note\n$SEEN\nEOF\n",
        "obparent",
    );
    // A trigger with a heredoc keeps its body, as BuildKit stores it.
    assert_eq!(parent.runtime()["OnBuild"][2], "COPY <<EOF /note\n$SEEN\nEOF");
    sb.dockerfile("FROM obparent\nLABEL l=$SEEN g=$GREETING\n");
    let ctx = sb.ctx();
    sb.kiln(&["build", "-t", "obchild", "--build-arg", "GREETING=cli", ctx.to_str().unwrap()]).ok();
    let child = sb.image("obchild");
    assert_eq!(child.runtime()["Labels"], json!({"l": "cli-img", "g": "cli"}));
    assert_eq!(child.runtime()["Env"], json!([SCRATCH_PATH_ENV, "BASE=img", "SEEN=cli-img"]));
    assert_eq!(child.runtime()["OnBuild"], Value::Null);
    assert_eq!(child.file_str("note"), "cli-img\n", "the heredoc trigger ran, expanded in the child");
    assert_eq!(
        child.created_by(),
        [
            "ENV BASE=img",
            "ARG GREETING=cli",
            "ENV SEEN=cli-img",
            "COPY <<EOF /note # buildkit",
            "LABEL l=cli-img g=cli"
        ]
    );
}

/// `COPY f /f \` or `RUN something \` as the file's last line builds, as
/// docker accepts it.
#[test]
fn continuation_at_end_of_file_is_accepted() {
    let sb = Sandbox::new();
    sb.write("ctx/f", "f\n");
    let img = sb.build("FROM scratch\nCOPY f \\\n  /f \\", "cont");
    assert_eq!(img.file_str("f"), "f\n");
    sb.busybox_context();
    let img = sb.build(&format!("{RUN_BASE}RUN echo ok \\\n  > /ok \\\n"), "cont-run");
    assert_eq!(img.file_str("ok"), "ok\n");
}

/// USER at RUN: an unknown name fails the RUN (BuildKit: "unable to find
/// user"), a USER never used by a RUN is fine, and numeric ids need no
/// passwd entry (`uid` alone runs with gid 0, `uid:gid` with both).
#[test]
fn user_resolution_at_run() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let img = sb.build(
        &format!(
            "{RUN_BASE}\
USER 1234
RUN id -u > /tmp/u && id -g >> /tmp/u
USER 1234:5678
RUN id -u > /tmp/ug && id -g >> /tmp/ug
USER nobody-here
"
        ),
        "users",
    );
    assert_eq!(img.file_str("tmp/u"), "1234\n0\n");
    assert_eq!(img.file_str("tmp/ug"), "1234\n5678\n");
    assert_eq!(img.runtime()["User"], "nobody-here", "USER alone needs no passwd entry");
    let out = sb.try_build(&format!("{RUN_BASE}USER nobody-here\nRUN true\n"), "users2", &[]);
    assert!(!out.success(), "{}", out.transcript());
    out.stderr_has(&["Dockerfile:6", "find user nobody-here", "/etc/passwd"]);
    // An unknown group fails the same way (BuildKit: "unable to find group").
    let out = sb.try_build(&format!("{RUN_BASE}USER 1234:nogroup-here\nRUN true\n"), "users3", &[]);
    assert!(!out.success(), "{}", out.transcript());
    out.stderr_has(&["Dockerfile:6", "nogroup-here", "/etc/group"]);
}

/// BuildKit's testUserAdditionalGids (containerd's CVE-2023-25173 fix): a
/// RUN's groups are its user's /etc/group memberships plus its primary
/// group; the default user is uid 0 looked up like any other; a uid
/// without an entry runs with gid 0 and group 0.
#[test]
fn run_user_groups_buildkit() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n");
    sb.write("ctx/group", "root:x:0:\ndaemon:x:1:\nwheel:x:10:root\n");
    let img = sb.build(
        &format!(
            "{RUN_BASE}\
COPY passwd group /etc/
RUN id > /tmp/default
USER 1234
RUN id > /tmp/uid
USER 1234:1234
RUN id > /tmp/uidgid
USER daemon
RUN id > /tmp/daemon
"
        ),
        "groups",
    );
    assert_eq!(img.file_str("tmp/default"), "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n");
    assert_eq!(img.file_str("tmp/uid"), "uid=1234 gid=0(root) groups=0(root)\n");
    assert_eq!(img.file_str("tmp/uidgid"), "uid=1234 gid=1234 groups=1234\n");
    assert_eq!(img.file_str("tmp/daemon"), "uid=1(daemon) gid=1(daemon) groups=1(daemon)\n");
}

/// Between an ENV and an ARG of the same name the later wins for expansion
/// and RUN, as BuildKit dispatches them (the classic builder let ENV win
/// whatever the order); the image's env keeps the ENV's value.
#[test]
fn later_arg_overrides_env_for_run_buildkit() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let img = sb.build(
        &format!(
            "{RUN_BASE}\
ENV MODE=env
ARG MODE=arg
RUN echo \"$MODE\" > /tmp/arg && echo {{$MODE}} > /tmp/expanded
ENV MODE=env2
RUN echo \"$MODE\" > /tmp/env
"
        ),
        "argenv",
    );
    assert_eq!(img.file_str("tmp/arg"), "arg\n", "the ARG after the ENV is what RUN sees");
    assert_eq!(img.file_str("tmp/env"), "env2\n", "a later ENV wins again");
    assert_eq!(img.runtime()["Env"], json!([SCRATCH_PATH_ENV, "MODE=env2"]));
    let history = img.created_by();
    assert!(
        history.contains(
            &"RUN |1 MODE=arg /bin/sh -c echo \"$MODE\" > /tmp/arg && echo {$MODE} > /tmp/expanded # buildkit"
                .to_string()
        ),
        "{history:#?}"
    );
    assert!(
        history.contains(&"RUN |1 MODE=env2 /bin/sh -c echo \"$MODE\" > /tmp/env # buildkit".to_string()),
        "{history:#?}"
    );
}
