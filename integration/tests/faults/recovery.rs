//! A build killed with SIGKILL in the middle of a RUN step leaves the store
//! consistent, and the next build reuses every step that had finished.

use kiln_integration::{static_busybox, Sandbox};

#[test]
fn kill_9_mid_build_keeps_the_store_and_the_finished_steps() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.write("ctx/data.txt", "some data\n");
    // An earlier image in the same store must survive the killed build.
    sb.build("FROM scratch\nCOPY data.txt /data.txt\n", "earlier:1");

    sb.dockerfile(
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN echo finished > /finished\n\
         ARG WAIT=60\n\
         RUN echo started > /started && sleep $WAIT\n",
    );
    let kiln = sb.kiln_path().to_str().unwrap().to_string();
    let store = sb.store();
    let ctx = sb.ctx();
    // setsid: the build gets its own process group, so the kill reaches the
    // user-namespace child and the step too, as a crash of the whole tree would.
    let script = format!(
        "setsid {kiln} --root {store} build -t rec {ctx} > build.log 2>&1 &\n\
         pid=$!\n\
         for i in $(seq 1 600); do grep -q 'RUN echo started' build.log && break; sleep 0.1; done\n\
         sleep 1\n\
         env kill -9 -- -$pid\n\
         wait $pid\n\
         for i in $(seq 1 100); do pgrep -g $pid > /dev/null || break; sleep 0.1; done\n\
         cat build.log",
        store = store.display(),
        ctx = ctx.display()
    );
    let killed = sb.sh(&script);
    let log = killed.stdout.clone();
    assert!(log.contains("RUN echo started"), "the build never reached the slow step:\n{log}");
    assert!(!log.contains("Successfully tagged"), "the build was not killed:\n{log}");

    // The store still reads: the earlier image is intact and valid.
    let images = sb.kiln(&["images"]);
    images.ok();
    assert!(images.stdout.contains("earlier"), "{}", images.transcript());
    let store_ref = format!("oci:{}:earlier:1", store.display());
    sb.tool("skopeo", &["inspect", &store_ref]).ok();

    // The next build reuses the three finished steps and completes. (The
    // script waited for the whole killed group to be gone: a process still
    // exiting holds the builds lock, and the next build would then leave its
    // leftovers for later.)
    let again = sb.kiln(&["build", "--build-arg", "WAIT=0", "-t", "rec", ctx.to_str().unwrap()]);
    again.ok();
    let out = again.stdout.clone();
    assert_eq!(out.matches("--> Using cache").count(), 3, "{}", again.transcript());
    let image = sb.image("rec");
    let fs = image.fs();
    assert!(fs.contains_key("finished") && fs.contains_key("started"), "{:?}", fs.keys().collect::<Vec<_>>());
    // What the killed build left in the store was cleared by the next one.
    let layers = store.join("kiln/layers");
    let leftovers: Vec<String> = std::fs::read_dir(&layers)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!leftovers.iter().any(|n| n.starts_with(".step-") || n.starts_with(".unpack-")), "{leftovers:?}");
}
