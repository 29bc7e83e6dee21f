//! `kiln system check [--repair]` as the unprivileged test user, on layer
//! dirs a real RUN made: files of subordinate ids and a mode-000 directory,
//! which the user cannot remove from outside kiln's user namespace.

use std::path::PathBuf;

use kiln_integration::*;

fn layer_dirs(sb: &Sandbox) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(sb.store().join("kiln/layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().len() == 64)
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn repair_removes_broken_layer_dirs_of_subordinate_ids_and_the_next_build_rebuilds_them() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let dockerfile = format!(
        "{RUN_BASE}RUN mkdir -p /home/u/deep /locked && echo x > /home/u/deep/f \
         && chown -R 1000:1000 /home/u && chmod 700 /home/u && chmod 000 /locked\n"
    );
    sb.build(&dockerfile, "owned:1");
    let clean = sb.kiln(&["system", "check"]);
    clean.ok();
    assert!(clean.stdout.starts_with("store is consistent ("), "{}", clean.transcript());

    let dirs = layer_dirs(&sb);
    assert!(dirs.len() >= 3, "RUN steps leave layer dirs: {dirs:?}");
    // The last RUN's layer dir holds /home/u (uid 1000 of the image) and /locked.
    let last = dirs.iter().find(|d| d.join("diff/home/u").exists()).expect("the chown step's layer dir").clone();
    let first = dirs.iter().find(|d| **d != last).unwrap().clone();
    if sb.drops_privileges() {
        // Outside the namespace the user cannot remove it (what rmi and prune hit).
        let rm = sb.sh(&format!("rm -rf {} 2>&1", last.join("diff/home").display()));
        assert!(!rm.success(), "the test user removed sub-id files outside the namespace:\n{}", rm.transcript());
        assert!(last.join("diff/home/u").exists());
    }
    // Half-removed (no marker) and mislabelled layer dirs, as a kill can leave them.
    std::fs::remove_file(last.join("verified")).unwrap();
    std::fs::write(first.join("verified"), format!("sha256:{}\n", "0".repeat(64))).unwrap();

    let check = sb.kiln(&["system", "check"]);
    check.fails_with(1);
    assert!(
        check.stdout.contains(&format!("{}: layer dir without its `verified` marker", last.display())),
        "{}",
        check.transcript()
    );
    assert!(
        check.stdout.contains(&format!("{}: layer dir whose marker names", first.display())),
        "{}",
        check.transcript()
    );

    let repair = sb.kiln(&["system", "check", "--repair"]);
    repair.ok();
    for dir in [&first, &last] {
        assert!(repair.stdout.contains(&format!("removed {}: ", dir.display())), "{}", repair.transcript());
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
    assert!(repair.last_line().starts_with("store is consistent"), "{}", repair.transcript());
    sb.kiln(&["system", "check"]).ok();

    // The image is intact: a build on it unpacks the layers again and sees every file.
    let next =
        sb.build(&format!("{dockerfile}RUN test -f /home/u/deep/f && test -d /locked && touch /after\n"), "next:1");
    let fs = next.fs();
    for path in ["home/u/deep/f", "locked", "after", "bin/busybox"] {
        assert!(fs.contains_key(path), "{path} missing: {:?}", fs.keys().collect::<Vec<_>>());
    }
    assert_eq!(fs["home/u/deep/f"].uid, 1000);
    sb.kiln(&["system", "check"]).ok();
}

/// A build killed (the whole process group, SIGKILL) in the middle of a RUN
/// leaves leftovers that `system check` names; `--repair` removes them, from
/// inside the namespace, and the next build is complete.
#[test]
fn check_names_what_a_killed_build_left_and_repair_clears_it() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.dockerfile(&format!(
        "{RUN_BASE}RUN mkdir -p /data && for i in 1 2 3 4 5 6 7 8; do echo $i > /data/$i; done && chown -R 1000 /data\n\
         ARG WAIT=60\n\
         RUN mkdir /late && chown 1000 /late && echo started > /started && sleep $WAIT\n"
    ));
    let kiln = sb.kiln_path().to_str().unwrap().to_string();
    let (store, ctx) = (sb.store(), sb.ctx());
    let script = format!(
        "setsid {kiln} --root {store} build -t killed {ctx} > build.log 2>&1 &\n\
         pid=$!\n\
         for i in $(seq 1 600); do grep -q 'RUN mkdir /late' build.log && break; sleep 0.1; done\n\
         sleep 1\n\
         env kill -9 -- -$pid\n\
         wait $pid\n\
         cat build.log",
        store = store.display(),
        ctx = ctx.display()
    );
    let killed = sb.sh(&script);
    assert!(killed.stdout.contains("RUN mkdir /late"), "the build never reached the slow step:\n{}", killed.stdout);
    assert!(!killed.stdout.contains("Successfully tagged"), "the build was not killed:\n{}", killed.stdout);

    let check = sb.kiln(&["system", "check"]);
    check.fails_with(1);
    let step = check
        .stdout
        .lines()
        .find(|l| l.contains("/kiln/layers/.step-") && l.ends_with(": left behind by an interrupted kiln"));
    assert!(step.is_some(), "the killed RUN's step dir is named:\n{}", check.transcript());
    assert!(check.stdout.contains("/kiln/tmp/build-"), "the build's scratch dir is named:\n{}", check.transcript());

    let repair = sb.kiln(&["system", "check", "--repair"]);
    repair.ok();
    assert!(
        repair.stdout.contains("removed ") && repair.last_line().starts_with("store is consistent"),
        "{}",
        repair.transcript()
    );
    let left: Vec<String> = std::fs::read_dir(store.join("kiln/layers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(std::fs::read_dir(store.join("kiln/tmp")).unwrap().count(), 0);

    let again = sb.kiln(&["build", "--build-arg", "WAIT=0", "-t", "killed", ctx.to_str().unwrap()]);
    again.ok();
    let fs = sb.image("killed").fs();
    let data: Vec<&String> = fs.keys().filter(|k| k.starts_with("data/")).collect();
    assert_eq!(data.len(), 8, "{data:?}");
    assert!(fs.contains_key("started") && fs.contains_key("late"));
    sb.kiln(&["system", "check"]).ok();
}

/// The layer dirs of a stage no image is made of (a multi-stage build's
/// builder) are used by the build cache: a check right after the build is clean.
#[test]
fn layer_dirs_of_a_builder_stage_are_the_build_caches() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let builder = RUN_BASE.replacen("FROM scratch", "FROM scratch AS builder", 1);
    sb.build(
        &format!("{builder}RUN echo built > /artifact\nFROM scratch\nCOPY --from=builder /artifact /artifact\n"),
        "multi:1",
    );
    let dirs = layer_dirs(&sb);
    assert!(dirs.len() >= 3, "the builder's RUN steps leave layer dirs: {dirs:?}");
    let check = sb.kiln(&["system", "check"]);
    check.ok();
    assert!(check.stdout.contains(&format!("{} layer dirs)", dirs.len())), "{}", check.transcript());
}
