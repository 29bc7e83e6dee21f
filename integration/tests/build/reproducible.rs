//! Reproducible images: with SOURCE_DATE_EPOCH two users, each with a store
//! of their own, build the same Dockerfile and context at different times
//! and get the same manifest digest and byte-identical exports; and
//! `kiln build --verify-reproducible` tells a reproducible build from one
//! that is not, naming the file that differs.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kiln_integration::*;

const EPOCH: u64 = 1_700_000_000;
const CREATED: &str = "2023-11-14T22:13:20Z";

/// RUN steps writing files (one with a future mtime), WORKDIR and COPY
/// creating directories, ADD of a local tar, COPY --from another stage.
const DOCKERFILE: &str = "FROM scratch AS base
COPY busybox /bin/busybox
RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]
RUN mkdir -m 1777 /tmp
FROM base AS build
RUN mkdir -p /out/deep && echo built > /out/deep/file && ln -s file /out/deep/link && touch -d 2030-01-01 /out/future
FROM base
WORKDIR /app/work
COPY f.txt /opt/nested/dir/
ADD local.tar /extracted/
COPY --from=build /out /out
RUN echo ran > ran.txt && mkdir -p /var/made
";

/// The context: busybox, f.txt and local.tar (made here with the host's tar).
fn context(sb: &Sandbox) {
    sb.busybox_context();
    sb.write("ctx/f.txt", "f\n");
    sb.write("tarsrc/sub/a", "x\n");
    sb.tool("tar", &["-cf", "ctx/local.tar", "-C", "tarsrc", "."]).ok();
    sb.dockerfile(DOCKERFILE);
}

/// The same context in `other`, written now (new mtimes), then every entry
/// moved an hour later still, as a later checkout would have it.
fn same_context_later(sb: &Sandbox, other: &Sandbox) {
    other.busybox_context();
    other.write("ctx/f.txt", "f\n");
    other.write("ctx/local.tar", fs::read(sb.path("ctx/local.tar")).unwrap());
    other.dockerfile(DOCKERFILE);
    let later = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    other.sh(&format!("find ctx -exec touch -h -d @{later} {{}} +")).ok();
}

fn outputs(sb: &Sandbox) -> Vec<String> {
    let out = sb.path("out");
    vec![
        "-o".into(),
        format!("type=oci,dest={}/layout,name=img:1", out.display()),
        "-o".into(),
        format!("type=oci-archive,dest={}/img.oci.tar,name=img:1", out.display()),
        "-o".into(),
        format!("type=docker-archive,dest={}/img.docker.tar,name=img:1", out.display()),
    ]
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.insert(p.strip_prefix(dir).unwrap().display().to_string(), fs::read(&p).unwrap());
            }
        }
    }
    all
}

#[test]
fn two_users_two_stores_later_give_the_same_image_and_exports() {
    let a = Sandbox::new();
    // Another user where the tests can create one (it has no subordinate
    // ids, so its builds also run in the single-id map); else another store.
    let b = Sandbox::without_subids().unwrap_or_default();
    context(&a);
    let epoch = EPOCH.to_string();
    let mut args = vec!["--source-date-epoch", &epoch];
    let a_outputs = outputs(&a);
    args.extend(a_outputs.iter().map(String::as_str));
    let (out_a, img_a) = a.build_with(DOCKERFILE, "repro", &args);

    // What the first build holds: every timestamp is the epoch at most,
    // and what kiln creates carries the epoch itself.
    let fs_a = img_a.fs();
    for dir in ["app", "app/work", "opt", "opt/nested", "opt/nested/dir"] {
        assert_eq!(fs_a[dir].mtime, EPOCH, "/{dir} was made by kiln: it carries the epoch\n{}", out_a.transcript());
    }
    assert_eq!(fs_a["out/future"].mtime, EPOCH, "a later mtime from RUN is clamped");
    assert_eq!(img_a.file_str("extracted/sub/a"), "x\n");
    assert_eq!(img_a.file_str("app/work/ran.txt"), "ran\n");
    assert_eq!(fs_a["out/deep/link"].link.as_deref(), Some("file"));
    for layer in &img_a.layers {
        for e in &layer.entries {
            assert!(e.mtime <= EPOCH, "{} in layer {} has mtime {} > {EPOCH}", e.path, layer.digest, e.mtime);
        }
    }
    assert_eq!(img_a.config["created"], CREATED);
    for h in img_a.history() {
        assert_eq!(h["created"], CREATED, "{h}");
    }

    // The other user, later, from the environment rather than the flag.
    same_context_later(&a, &b);
    let ctx_b = b.ctx();
    let b_outputs = outputs(&b);
    let mut args_b = vec!["build", "-t", "repro"];
    args_b.extend(b_outputs.iter().map(String::as_str));
    args_b.push(ctx_b.to_str().unwrap());
    let store_b = b.store();
    let mut all = vec!["--root", store_b.to_str().unwrap()];
    all.extend(args_b);
    let out_b = b.kiln_raw(&all, None, &[("SOURCE_DATE_EPOCH", &epoch)]);
    out_b.ok();
    let img_b = b.image("repro");
    if is_root() {
        assert_ne!(a.ids(), b.ids(), "two users");
    }
    assert_eq!(
        img_b.manifest_digest,
        img_a.manifest_digest,
        "the same manifest from another user's store, later\n{}\n{}",
        out_a.transcript(),
        out_b.transcript()
    );
    for archive in ["img.oci.tar", "img.docker.tar"] {
        let (fa, fb) = (fs::read(a.path("out").join(archive)).unwrap(), fs::read(b.path("out").join(archive)).unwrap());
        assert!(fa == fb, "{archive} differs between the two builds ({} vs {} bytes)", fa.len(), fb.len());
    }
    let (la, lb) = (files(&a.path("out/layout")), files(&b.path("out/layout")));
    assert_eq!(la.keys().collect::<Vec<_>>(), lb.keys().collect::<Vec<_>>(), "the OCI layouts hold the same files");
    for (name, bytes) in &la {
        assert!(bytes == &lb[name], "{name} differs between the two OCI layouts");
    }
}

fn leftovers(sb: &Sandbox) -> Vec<String> {
    fs::read_dir(sb.store().join("kiln/tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("verify-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn verify_reproducible_passes_with_the_digest_a_build_gives() {
    let sb = Sandbox::new();
    context(&sb);
    let epoch = EPOCH.to_string();
    let (_, img) = sb.build_with(DOCKERFILE, "normal", &["--source-date-epoch", &epoch]);
    let tags_before = index_manifests(&sb.store()).len();

    let ctx = sb.ctx();
    let out = sb.kiln(&[
        "build",
        "--verify-reproducible",
        "--source-date-epoch",
        &epoch,
        "-t",
        "not-tagged",
        ctx.to_str().unwrap(),
    ]);
    out.ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("reproducible:"))
        .unwrap_or_else(|| panic!("no verdict\n{}", out.transcript()));
    assert!(
        line.contains(&img.manifest_digest),
        "the digest both builds gave is the one a plain build gives: {line}\n{}",
        out.transcript()
    );
    assert!(out.stdout.contains("build 2 of 2"), "{}", out.transcript());
    assert_eq!(index_manifests(&sb.store()).len(), tags_before, "--verify-reproducible tags nothing");
    assert!(leftovers(&sb).is_empty(), "scratch stores removed: {:?}", leftovers(&sb));

    // Without an epoch the builds differ, as expected: file mtimes and
    // `created` are the build time.
    let out = sb.kiln(&["build", "--verify-reproducible", ctx.to_str().unwrap()]);
    out.fails_with(1);
    assert!(out.stderr.contains("not reproducible"), "{}", out.transcript());
    let first = out
        .stderr
        .lines()
        .find(|l| l.starts_with("first difference:"))
        .unwrap_or_else(|| panic!("{}", out.transcript()));
    assert!(first.contains("mtime differs") || first.contains("created"), "{first}\n{}", out.transcript());
    assert!(out.stderr.contains("hint: set --source-date-epoch"), "{}", out.transcript());
}

#[test]
fn verify_reproducible_names_the_file_a_step_makes_differ() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/f.txt", "f\n");
    let df = format!("{RUN_BASE}COPY f.txt /f.txt\nRUN date +%s%N > /f\nRUN echo same > /g\n");
    sb.dockerfile(&df);
    let ctx = sb.ctx();
    let out =
        sb.kiln(&["build", "--verify-reproducible", "--source-date-epoch", &EPOCH.to_string(), ctx.to_str().unwrap()]);
    out.fails_with(1);
    let first = out
        .stderr
        .lines()
        .find(|l| l.starts_with("first difference:"))
        .unwrap_or_else(|| panic!("{}", out.transcript()));
    assert!(first.contains("layer 5 of 6"), "the RUN's layer: {first}");
    assert!(first.contains("RUN /bin/sh -c date"), "the step: {first}");
    assert!(first.contains("/f: content differs"), "{first}");
    assert!(leftovers(&sb).is_empty(), "scratch stores removed: {:?}", leftovers(&sb));
}

/// As BuildKit's exporter: the base image's history keeps its times (it is an
/// input, and the base's own config shows it), through a stage built FROM it
/// too; the entries of this build carry the epoch.
#[test]
fn the_epoch_keeps_the_base_image_history() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    // Built now, without an epoch: its entries are later than the epoch.
    let base = sb.build("FROM scratch\nCOPY f.txt /f\nENV A=1\n", "base");
    let base_history = base.history();
    assert_eq!(base_history.len(), 2);
    let epoch = EPOCH.to_string();
    let (_, img) = sb.build_with(
        "FROM base AS s1\nCOPY f.txt /g\nFROM s1\nENV B=2\n",
        "on-base",
        &["--source-date-epoch", &epoch],
    );
    let history = img.history();
    assert_eq!(history.len(), 4);
    assert_eq!(history[..2], base_history[..], "the base image's entries, times included");
    assert_ne!(base_history[0]["created"], CREATED);
    for h in &history[2..] {
        assert_eq!(h["created"], CREATED, "{h}");
    }
    assert_eq!(img.config["created"], CREATED);
}

/// As in BuildKit: the epoch is the build arg SOURCE_DATE_EPOCH (a stage that
/// declares it sees it), and `--build-arg SOURCE_DATE_EPOCH=N` sets the epoch.
#[test]
fn the_epoch_is_the_source_date_epoch_build_arg() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!("{RUN_BASE}ARG SOURCE_DATE_EPOCH\nRUN echo \"$SOURCE_DATE_EPOCH\" > /e\n");
    let (out, img) = sb.build_with(&df, "flag", &["--source-date-epoch", "1600000000"]);
    assert_eq!(img.file_str("e"), "1600000000\n", "{}", out.transcript());
    let (out, img) = sb.build_with(&df, "arg", &["--build-arg", "SOURCE_DATE_EPOCH=1600000000"]);
    assert_eq!(img.config["created"], "2020-09-13T12:26:40Z", "the build arg sets the epoch\n{}", out.transcript());
    assert_eq!(img.file_str("e"), "1600000000\n");
    // A Dockerfile that does not declare it: no "not consumed" warning.
    let (out, _) = sb.build_with(RUN_BASE, "undeclared", &["--source-date-epoch", "1600000000"]);
    assert!(!out.stderr.contains("not consumed"), "{}", out.transcript());
}
