//! COPY --chown and --chmod: numbers, names from the image's own /etc/passwd
//! and /etc/group, octal and symbolic modes (checked against chmod(1)).

use std::os::unix::fs::PermissionsExt;

use kiln_integration::*;

fn with_accounts(sb: &Sandbox) {
    sb.fixture("passwd", "ctx/passwd");
    sb.fixture("group", "ctx/group");
    sb.write("ctx/f.txt", "file\n");
    sb.write_mode("ctx/tool.sh", "#!/bin/sh\n", 0o755);
    sb.write("ctx/dir/a.txt", "a\n");
    sb.write_mode("ctx/dir/sub/b.sh", "#!/bin/sh\n", 0o700);
}

/// The uid, gid of a name in a fixture database, read with awk (not kiln).
fn id_in(sb: &Sandbox, file: &str, name: &str, field: usize) -> u64 {
    // The sandbox copy: the checkout may not be readable by the test user.
    let copy = sb.path(&format!("ctx/{file}"));
    let out = sb.tool("awk", &["-F:", &format!("$1 == \"{name}\" {{ print ${field} }}"), copy.to_str().unwrap()]);
    out.ok();
    out.stdout.trim().parse().unwrap_or_else(|_| panic!("{name} not in fixture {file}"))
}

const CHOWN_STEPS: &str = "COPY --chown=1000:1001 f.txt /n/numeric.txt
COPY --chown=4321 f.txt /n/uid-only.txt
COPY --chown=app f.txt /n/user.txt
COPY --chown=app:builders f.txt /n/user-group.txt
COPY --chown=www-data:0 f.txt /n/name-num.txt
COPY --chown=33:builders dir /n/dir/
COPY f.txt /n/default.txt
";

fn assert_owners(sb: &Sandbox, img: &Image) {
    let app = id_in(sb, "passwd", "app", 3);
    let app_gid = id_in(sb, "passwd", "app", 4);
    assert_eq!(app, app_gid, "the fixture keeps app's primary group equal to its uid");
    let builders = id_in(sb, "group", "builders", 3);
    let www = id_in(sb, "passwd", "www-data", 3);
    let owner = |p: &str| {
        let e = img.entry(p).unwrap_or_else(|| panic!("{p} missing: {:?}", img.paths()));
        (e.uid, e.gid)
    };
    assert_eq!(owner("n/numeric.txt"), (1000, 1001));
    assert_eq!(owner("n/uid-only.txt"), (4321, 4321), "a uid alone is used for the group too");
    assert_eq!(owner("n/user.txt"), (app, app));
    assert_eq!(owner("n/user-group.txt"), (app, builders));
    assert_eq!(owner("n/name-num.txt"), (www, 0));
    assert_eq!(owner("n/dir/a.txt"), (33, builders));
    assert_eq!(owner("n/dir/sub"), (33, builders));
    assert_eq!(owner("n/dir/sub/b.sh"), (33, builders));
    // The context files belong to the build user, yet land as root without --chown.
    assert_eq!(owner("n/default.txt"), (0, 0));
    assert_eq!(owner("etc/passwd"), (0, 0));
}

#[test]
fn chown_names_from_the_base_image() {
    let sb = Sandbox::new();
    with_accounts(&sb);
    sb.build("FROM scratch\nCOPY passwd /etc/passwd\nCOPY group /etc/group\n", "accounts");
    let img = sb.build(&format!("FROM accounts\n{CHOWN_STEPS}"), "own");
    assert_owners(&sb, &img);
}

#[test]
fn chown_names_from_an_earlier_copy_in_the_same_stage() {
    let sb = Sandbox::new();
    with_accounts(&sb);
    let img = sb.build(&format!("FROM scratch\nCOPY passwd /etc/passwd\nCOPY group /etc/group\n{CHOWN_STEPS}"), "own");
    assert_owners(&sb, &img);
}

#[test]
fn chown_names_from_an_earlier_stage_used_as_base() {
    let sb = Sandbox::new();
    with_accounts(&sb);
    let img =
        sb.build(&format!("FROM scratch AS accounts\nCOPY passwd group /etc/\n\nFROM accounts\n{CHOWN_STEPS}"), "own");
    assert_owners(&sb, &img);
}

#[test]
fn chown_unknown_names_fail_naming_them() {
    let sb = Sandbox::new();
    with_accounts(&sb);
    let ctx = sb.ctx();
    for (line, name) in
        [("COPY --chown=nosuchuser f.txt /x", "nosuchuser"), ("COPY --chown=app:nosuchgroup f.txt /x", "nosuchgroup")]
    {
        sb.dockerfile(&format!("FROM scratch\nCOPY passwd /etc/passwd\nCOPY group /etc/group\n{line}\n"));
        let out = sb.kiln(&["build", "-t", "bad", ctx.to_str().unwrap()]);
        out.fails_with(1).stderr_has(&[name, "Dockerfile:4"]);
        assert!(out.stderr.starts_with("error:"), "{}", out.transcript());
    }
    // No /etc/passwd in the image at all: names cannot resolve.
    sb.dockerfile("FROM scratch\nCOPY --chown=app f.txt /x\n");
    sb.kiln(&["build", "-t", "bad", ctx.to_str().unwrap()]).fails_with(1).stderr_has(&["app", "Dockerfile:2"]);
    assert!(
        !sb.path("store/index.json").exists()
            || !std::fs::read_to_string(sb.path("store/index.json")).unwrap().contains("bad:latest")
    );
}

/// The mode chmod(1) gives a file of mode `from` for `spec`.
fn chmod_says(sb: &Sandbox, from: u32, spec: &str, dir: bool) -> u32 {
    let p = if dir { sb.mkdir("chmod-probe") } else { sb.write_mode("chmod-probe", "", from) };
    sb.chmod("chmod-probe", from);
    sb.tool("chmod", &[spec, p.to_str().unwrap()]).ok();
    let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777;
    if dir {
        std::fs::remove_dir(&p).unwrap();
    } else {
        std::fs::remove_file(&p).unwrap();
    }
    mode
}

#[test]
fn chmod_octal_and_symbolic_on_files_and_dirs() {
    let sb = Sandbox::new();
    with_accounts(&sb);
    let img = sb.build(
        "FROM scratch
COPY --chmod=600 f.txt /m/octal.txt
COPY --chmod=0755 f.txt /m/octal4.txt
COPY --chmod=4755 tool.sh /m/setuid.sh
COPY --chmod=u+x,g-r f.txt /m/sym.txt
COPY --chmod=go-rwx tool.sh /m/sym-tool.sh
COPY --chmod=a+X f.txt /m/bigx.txt
COPY --chmod=750 dir /m/octal-dir/
COPY --chmod=a+X,g-w dir /m/sym-dir/
COPY --chmod=440 f.txt /m/new/parents/deep.txt
",
        "mode",
    );
    let mode = |p: &str| img.entry(p).unwrap_or_else(|| panic!("{p} missing: {:?}", img.paths())).mode;
    assert_eq!(mode("m/octal.txt"), 0o600);
    assert_eq!(mode("m/octal4.txt"), 0o755);
    assert_eq!(mode("m/setuid.sh"), 0o4755);
    assert_eq!(mode("m/sym.txt"), chmod_says(&sb, 0o644, "u+x,g-r", false));
    assert_eq!(mode("m/sym-tool.sh"), chmod_says(&sb, 0o755, "go-rwx", false));
    assert_eq!(mode("m/bigx.txt"), chmod_says(&sb, 0o644, "a+X", false), "X adds nothing to a plain file");
    // Octal applies to everything copied, files and dirs alike.
    assert_eq!(mode("m/octal-dir/a.txt"), 0o750);
    assert_eq!(mode("m/octal-dir/sub"), 0o750);
    assert_eq!(mode("m/octal-dir/sub/b.sh"), 0o750);
    // Symbolic applies to each entry's own mode.
    assert_eq!(mode("m/sym-dir/a.txt"), chmod_says(&sb, 0o644, "a+X,g-w", false));
    assert_eq!(mode("m/sym-dir/sub"), chmod_says(&sb, 0o755, "a+X,g-w", true));
    assert_eq!(mode("m/sym-dir/sub/b.sh"), chmod_says(&sb, 0o700, "a+X,g-w", false));
    // Missing parents take an octal --chmod too, as BuildKit makes them
    // (the classic builder made them 0755): /m came with the first step's 600.
    assert_eq!(mode("m/new/parents/deep.txt"), 0o440);
    for (d, want) in [("m", 0o600), ("m/new", 0o440), ("m/new/parents", 0o440)] {
        let e = img.entry(d).unwrap_or_else(|| panic!("parent {d} has no entry: {:?}", img.paths()));
        assert_eq!((e.kind, e.mode, e.uid, e.gid), (Kind::Dir, want, 0, 0), "{d}");
    }
    // Content untouched by chmod.
    assert_eq!(img.file_str("m/sym.txt"), "file\n");
}

#[test]
fn invalid_chmod_is_rejected_with_location() {
    let sb = Sandbox::new();
    with_accounts(&sb);
    let ctx = sb.ctx();
    sb.dockerfile("FROM scratch\nCOPY --chmod=u+q f.txt /x\n");
    sb.kiln(&["build", "-t", "bad", ctx.to_str().unwrap()]).fails_with(1).stderr_has(&["u+q", "Dockerfile:2"]);
    sb.dockerfile("FROM scratch\nCOPY --chmod=999 f.txt /x\n");
    sb.kiln(&["build", "-t", "bad", ctx.to_str().unwrap()]).fails_with(1).stderr_has(&["999", "Dockerfile:2"]);
}

/// solver/llbsolver/ops/user_linux.go readUser: a name takes its uid and
/// primary gid from the image's /etc/passwd (even where they differ), a
/// number is the uid and the gid alike whatever passwd says, and a group
/// part replaces the gid. testDockerfileAddChownExpand: --chown expands
/// an ENV and an ARG set by --build-arg.
#[test]
fn chown_name_takes_the_primary_group_and_a_uid_alone_its_own_number() {
    let sb = Sandbox::new();
    sb.write("ctx/passwd", "root:x:0:0:root:/root:/bin/sh\nsvc:x:1500:1600::/srv:/bin/sh\n");
    sb.write("ctx/group", "root:x:0:\nsvcgrp:x:1600:\ngrp:x:1700:svc\n");
    sb.write("ctx/f.txt", "f\n");
    let (_, img) = sb.build_with(
        "FROM scratch
COPY passwd group /etc/
COPY --chown=svc f.txt /a
COPY --chown=1500 f.txt /b
COPY --chown=svc:grp f.txt /c
COPY --chown=1500:grp f.txt /d
COPY --chown=svc:42 f.txt /e
ARG group
ENV owner=svc
ADD --chown=${owner}:${group} f.txt /expanded
",
        "primary",
        &["--build-arg", "group=grp"],
    );
    let owner = |p: &str| img.entry(p).map(|e| (e.uid, e.gid)).unwrap_or_else(|| panic!("{p} missing"));
    assert_eq!(owner("a"), (1500, 1600), "svc's primary group, not its uid");
    assert_eq!(owner("b"), (1500, 1500), "a uid alone is its own gid even when passwd knows it");
    assert_eq!(owner("c"), (1500, 1700));
    assert_eq!(owner("d"), (1500, 1700));
    assert_eq!(owner("e"), (1500, 42));
    assert_eq!(owner("expanded"), (1500, 1700));
}
