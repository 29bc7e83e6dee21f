//! `kiln build` options that shape the result: `--iidfile`, `--label`,
//! `--annotation`, `--squash`, `--layers=false` and `--source-date-epoch`
//! (and `SOURCE_DATE_EPOCH`), with docker/buildah semantics.

use kiln_integration::*;
use serde_json::{json, Value};

#[test]
fn iidfile_labels_and_annotations() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let df = "FROM scratch\nLABEL a=df keep=df\nCOPY f.txt /f.txt\n";
    let (out, img) = sb.build_with(
        df,
        "opts",
        &[
            "--iidfile",
            "id.txt",
            "--label",
            "a=cli",
            "--label",
            "b=",
            "--annotation",
            "org.example.one=1",
            "--annotation",
            "org.example.two=x=y",
            "--output",
            "type=oci,dest=out",
        ],
    );
    let iid = std::fs::read_to_string(sb.path("id.txt")).expect("read the iidfile");
    assert_eq!(iid, format!("sha256:{}", img.id()), "{}", out.transcript());

    // --label goes over the Dockerfile's LABEL.
    assert_eq!(img.runtime()["Labels"], json!({"a": "cli", "b": "", "keep": "df"}));

    let want = json!({"org.example.one": "1", "org.example.two": "x=y"});
    assert_eq!(img.manifest["annotations"], want, "manifest annotations");
    // The store's index entry and the exported layout's carry them too.
    for layout in [sb.store(), sb.path("out")] {
        let entry = find_descriptor(&layout, &normalize_tag("opts"));
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&entry["annotations"][k], v, "index entry in {}: {entry}", layout.display());
        }
    }
    let exported = read_image(&sb.path("out"), &normalize_tag("opts"));
    assert_eq!(exported.manifest["annotations"], want);
    assert_eq!(exported.id(), img.id());

    // Without the flags nothing of that is there.
    let plain = sb.build(df, "plain");
    assert_eq!(plain.runtime()["Labels"], json!({"a": "df", "keep": "df"}));
    assert_eq!(plain.manifest.get("annotations"), None);
}

#[test]
fn malformed_labels_and_annotations_are_refused() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let df = "FROM scratch\nCOPY f.txt /f.txt\n";
    sb.try_build(df, "bad", &["--label", "novalue"]).fails_with(1).stderr_has(&["--label", "novalue"]);
    sb.try_build(df, "bad", &["--annotation", "=v"]).fails_with(1).stderr_has(&["--annotation"]);
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    sb.kiln_env(&["build", "-t", "bad", ctx], &[("SOURCE_DATE_EPOCH", "yesterday")])
        .fails_with(1)
        .stderr_has(&["SOURCE_DATE_EPOCH", "yesterday"]);
    // Empty means unset, as the reproducible-builds spec says.
    sb.kiln_env(&["build", "-t", "empty-epoch", ctx], &[("SOURCE_DATE_EPOCH", "")]).ok();
}

/// A base image built by kiln with several layers, holding files the
/// squashed part deletes, replaces or keeps.
fn squash_base(sb: &Sandbox) -> Image {
    sb.busybox_context();
    let base = format!(
        "{RUN_BASE}\
RUN mkdir -p /base/dir/sub && echo keep > /base/keep && echo gone > /base/gone && echo old > /base/dir/sub/old
RUN echo more > /base/more
"
    );
    let img = sb.build(&base, "squash-base");
    assert!(img.layers.len() >= 4, "the base has several layers");
    img
}

const SQUASHED: &str = "FROM squash-base
RUN rm /base/gone && echo a > /a && echo tmp > /tmp/t
COPY f.txt /f.txt
RUN echo b > /b && rm /a /tmp/t && echo changed > /base/more
ENV X=1
RUN rm -rf /base/dir
RUN mkdir -p /base/dir && echo new > /base/dir/new && ln /f.txt /hard
";

#[test]
fn squash_merges_the_final_stages_own_layers_keeping_the_base() {
    let sb = Sandbox::new();
    let base = squash_base(&sb);
    sb.write("ctx/f.txt", "f\n");
    let plain = sb.build(SQUASHED, "unsquashed");
    let (out, squashed) = sb.build_with(SQUASHED, "squashed", &["--squash"]);

    assert_eq!(plain.layers.len(), base.layers.len() + 5);
    assert_eq!(squashed.layers.len(), base.layers.len() + 1, "{}", out.transcript());
    let digests = |img: &Image, n: usize| img.layers[..n].iter().map(|l| l.digest.clone()).collect::<Vec<_>>();
    assert_eq!(
        digests(&squashed, base.layers.len()),
        digests(&base, base.layers.len()),
        "base layers kept as they are"
    );

    // Same filesystem, same history (only one entry of the squashed part makes a layer).
    assert_same_summary(&fs_summary(&plain), &fs_summary(&squashed), "unsquashed vs squashed");
    let paths = squashed.paths();
    for gone in ["base/gone", "a", "tmp/t", "base/dir/sub", "base/dir/sub/old"] {
        assert!(!paths.contains(gone), "{gone} was deleted but the squashed image has it");
    }
    assert_eq!(squashed.file_str("base/dir/new"), "new\n");
    assert_eq!(squashed.file_str("base/more"), "changed\n");
    assert_eq!(squashed.file_str("base/keep"), "keep\n");
    assert_eq!(squashed.file_str("hard"), "f\n");
    let created_by = |img: &Image| img.history().iter().map(|h| h["created_by"].clone()).collect::<Vec<Value>>();
    assert_eq!(created_by(&squashed), created_by(&plain));
    // The squashed layer keeps the whiteout for the base's file.
    let top = squashed.layers.last().unwrap();
    assert!(top.paths().contains("base/.wh.gone"), "whiteout for a base file: {:?}", top.paths());
    // It runs in a container as is.
    sb.kiln(&["run", "--rm", "squashed", "/bin/cat", "/base/dir/new"]).ok();

    // A hard link outlives its target's removal: squashed, it becomes the file.
    let with_rm = format!("{SQUASHED}RUN rm /f.txt\n");
    let (out, squashed) = sb.build_with(&with_rm, "squashed-rm", &["--squash"]);
    assert_eq!(squashed.layers.len(), base.layers.len() + 1, "{}", out.transcript());
    assert!(!squashed.paths().contains("f.txt"));
    assert_eq!(squashed.file_str("hard"), "f\n");
    sb.build(&with_rm, "unsquashed-rm");
    for tag in ["squashed-rm", "unsquashed-rm"] {
        let out = sb.kiln(&["run", "--rm", tag, "/bin/cat", "/hard"]);
        out.ok();
        assert_eq!(out.stdout, "f\n", "{tag}");
    }
}

#[test]
fn layers_false_gives_one_layer_per_stage() {
    let sb = Sandbox::new();
    for f in ["f1", "f2", "f3", "f4"] {
        sb.write(&format!("ctx/{f}"), format!("{f}\n"));
    }
    sb.mkdir("ctx/d");
    sb.write("ctx/d/in", "in\n");
    let df = "FROM scratch AS a\nCOPY f1 /f1\nCOPY d /d\nCOPY f2 /d/f2\nFROM a\nCOPY f3 /f3\nENV X=1\nCOPY f4 /f4\n";
    let per_step = sb.build(df, "per-step");
    let (out, per_stage) = sb.build_with(df, "per-stage", &["--layers=false"]);
    assert_eq!(per_step.layers.len(), 5);
    assert_eq!(per_stage.layers.len(), 2, "one layer for stage a, one for the final stage\n{}", out.transcript());
    assert_same_summary(&fs_summary(&per_step), &fs_summary(&per_stage), "--layers vs --layers=false");
    let (_, stage_a) = sb.build_with(df, "stage-a", &["--layers", "false", "--target", "a"]);
    assert_eq!(stage_a.layers.len(), 1);
    assert_eq!(per_stage.layers[0].digest, stage_a.layers[0].digest);
    // A second build gives the same image (steps come from the cache).
    let (_, again) = sb.build_with(df, "per-stage-again", &["--layers=false"]);
    assert_eq!(again.id(), per_stage.id());
}

const EPOCH: u64 = 1_700_000_000;

#[test]
fn source_date_epoch_makes_builds_reproducible() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/f.txt", "f\n");
    let df = format!("{RUN_BASE}COPY f.txt /app/f.txt\nRUN echo hi > /hi && rm /app/f.txt && mkdir /made\n");
    let epoch = EPOCH.to_string();
    let (_, first) = sb.build_with(&df, "sde1", &["--no-cache", "--source-date-epoch", &epoch]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    sb.write("ctx/f.txt", "f\n"); // same content, a new mtime
                                  // From the environment this time; the id is the same.
    sb.dockerfile(&df);
    let ctx = sb.ctx();
    let out =
        sb.kiln_env(&["build", "-t", "sde2", "--no-cache", ctx.to_str().unwrap()], &[("SOURCE_DATE_EPOCH", &epoch)]);
    out.ok();
    let second = sb.image("sde2");
    assert_eq!(first.id(), second.id(), "two builds with the same epoch\n{}", out.transcript());
    assert_eq!(first.manifest_digest, second.manifest_digest);

    // The flag wins over the environment.
    sb.dockerfile(&df);
    let out = sb.kiln_env(
        &["build", "-t", "sde3", "--no-cache", "--source-date-epoch", &epoch, ctx.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "12345")],
    );
    out.ok();
    assert_eq!(sb.image("sde3").id(), first.id());
    // buildah's name for the flag.
    let (out, fourth) = sb.build_with(&df, "sde4", &["--no-cache", "--timestamp", &epoch]);
    assert_eq!(fourth.id(), first.id(), "--timestamp is --source-date-epoch\n{}", out.transcript());

    for layer in &first.layers {
        for e in &layer.entries {
            assert!(e.mtime <= EPOCH, "{} in layer {} has mtime {} > {EPOCH}", e.path, layer.digest, e.mtime);
        }
    }
    let created = "2023-11-14T22:13:20";
    assert!(first.config["created"].as_str().unwrap().starts_with(created), "created: {}", first.config["created"]);
    for h in first.history() {
        assert!(h["created"].as_str().unwrap().starts_with(created), "history created: {h}");
    }

    // Without an epoch, two builds differ (the test above is not vacuous).
    let (_, a) = sb.build_with(&df, "now1", &["--no-cache"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, b) = sb.build_with(&df, "now2", &["--no-cache"]);
    assert_ne!(a.id(), b.id());
}

#[test]
fn layers_false_with_run_steps_keeps_deletions_right() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{}\
RUN echo x > /x && echo y > /y && mkdir -p /d/sub && echo old > /d/sub/old
RUN rm /x
FROM first
RUN rm /y && rm -rf /d && mkdir /d && echo new > /d/new
RUN echo z > /z
",
        RUN_BASE.replacen("FROM scratch", "FROM scratch AS first", 1)
    );
    let per_step = sb.build(&df, "run-per-step");
    let (out, per_stage) = sb.build_with(&df, "run-per-stage", &["--layers=false"]);
    assert_eq!(per_stage.layers.len(), 2, "{}", out.transcript());
    assert_same_summary(&fs_summary(&per_step), &fs_summary(&per_stage), "--layers vs --layers=false with RUN");
    // The first stage stands on scratch: nothing to hide, so no whiteouts.
    let first = &per_stage.layers[0];
    assert!(
        first.entries.iter().all(|e| !e.path.rsplit('/').next().unwrap().starts_with(".wh.")),
        "{:?}",
        first.paths()
    );
    assert!(!first.paths().contains("x"));
    // The second keeps the whiteouts that hide the first stage's files.
    let second = per_stage.layers[1].paths();
    assert!(second.contains(".wh.y"), "{second:?}");
    let paths = per_stage.paths();
    for gone in ["x", "y", "d/sub", "d/sub/old"] {
        assert!(!paths.contains(gone), "{gone} is in the image");
    }
    assert_eq!(per_stage.file_str("d/new"), "new\n");
}

/// `--add-host`, `--ulimit` and `--shm-size` reach every RUN, as docker build
/// gives them, and are part of the RUN's cache key (BuildKit keeps them in
/// the exec op): the same flags hit, other flags run the step again.
#[test]
fn add_host_ulimit_and_shm_size_reach_run() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{RUN_BASE}RUN (grep -E 'db\\.local|v6\\.local|gw\\.local' /etc/hosts || true) > /hosts \
         && ulimit -n > /nofile && ulimit -Hn > /nofile-hard \
         && df -k /dev/shm | tail -n 1 | awk '{{print $2}}' > /shm\n"
    );
    let flags = [
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "v6.local=fd00::1",
        "--add-host",
        "gw.local:host-gateway",
        "--ulimit",
        "nofile=256:512",
        "--shm-size",
        "16m",
    ];
    let (out, img) = sb.build_with(&df, "extras", &flags);
    assert_eq!(
        img.file_str("hosts"),
        "10.1.2.3\tdb.local\nfd00::1\tv6.local\n127.0.0.1\tgw.local\n",
        "{}",
        out.transcript()
    );
    assert_eq!(img.file_str("nofile"), "256\n");
    assert_eq!(img.file_str("nofile-hard"), "512\n");
    assert_eq!(img.file_str("shm"), "16384\n");
    assert!(!img.fs().contains_key("etc/hosts"), "the bound hosts file stays out of the layer");

    let (again, _) = sb.build_with(&df, "extras", &flags);
    assert!(again.stdout.contains("Using cache"), "same flags: cached\n{}", again.transcript());
    let (other, img) = sb.build_with(&df, "extras", &["--ulimit", "nofile=128:512"]);
    assert!(!other.stdout.lines().any(|l| l.contains("Using cache") && l.contains("grep")), "{}", other.transcript());
    assert_eq!(img.file_str("nofile"), "128\n");
    assert_eq!(img.file_str("hosts"), "", "no added hosts without --add-host");

    // Mistakes are named before anything runs.
    for (flag, value, says) in [
        ("--add-host", "nocolon", "expected NAME:IP"),
        ("--add-host", "db:999.1.1.1", "is not an IP address"),
        ("--ulimit", "nofiles=1", "unknown limit"),
        ("--ulimit", "nofile=10:5", "above the hard limit"),
    ] {
        let out = sb.try_build(&df, "bad", &[flag, value]);
        assert!(!out.status.success() && out.stderr.contains(says), "{flag} {value}\n{}", out.transcript());
    }
}
