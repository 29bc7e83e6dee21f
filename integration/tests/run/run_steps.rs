//! RUN as a build step: VOLUME semantics, failures, networking, the layer
//! cache, and the resulting image running rootless under runc.

use std::collections::BTreeSet;

use kiln_integration::*;

/// After `VOLUME /data`, what RUN changes under /data is discarded, while
/// COPY into it is kept (docker's and buildah's behaviour).
#[test]
fn volume_discards_run_changes_but_keeps_copy() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/f", "copied\n");
    let df = format!(
        "{RUN_BASE}\
RUN mkdir /data && echo before > /data/keep
VOLUME /data
RUN echo x > /data/run-f && echo changed > /data/keep && echo outside > /outside
COPY f /data/f
RUN cat /data/f > /seen && ls /data > /listing
"
    );
    let img = sb.build(&df, "vol");
    let fs = img.fs();
    assert_eq!(img.file_str("data/keep"), "before\n", "a RUN after VOLUME changed the volume's content");
    assert!(!fs.contains_key("data/run-f"), "a file RUN wrote into the volume is in the image");
    assert_eq!(img.file_str("outside"), "outside\n", "the RUN's changes outside the volume are kept");
    assert_eq!(img.file_str("data/f"), "copied\n", "COPY into the volume is kept");
    assert_eq!(img.file_str("seen"), "copied\n", "a later RUN sees what COPY put into the volume");
    assert_eq!(img.runtime()["Volumes"], serde_json::json!({"/data": {}}));
}

/// `RUN exit 3` fails the build at its line with the command and the code,
/// and the store keeps the image the tag named before.
#[test]
fn failing_run_reports_line_and_code_and_keeps_the_store() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let good = sb.build(&format!("{RUN_BASE}RUN echo good > /state\n"), "keep:1");
    let listed_before = sb.kiln(&["images", "-q", "--no-trunc"]);
    listed_before.ok();

    // RUN_BASE is four lines; `RUN exit 3` is line 6.
    let df = format!("{RUN_BASE}RUN echo partial > /state\nRUN exit 3\nRUN echo never > /never\n");
    let out = sb.try_build(&df, "keep:1", &[]);
    assert!(!out.success(), "the build must fail\n{}", out.transcript());
    assert_ne!(out.code(), Some(0));
    out.stderr_has(&["RUN exited with code 3: exit 3", "Dockerfile:6", "RUN exit 3"]);
    assert!(!out.stdout.contains("Successfully tagged"), "{}", out.transcript());
    assert!(
        !out.stdout.contains("echo never") && !out.stdout.contains("STEP 7/"),
        "the build went on after the failure\n{}",
        out.transcript()
    );

    let after = sb.image("keep:1");
    assert_eq!(after.manifest_digest, good.manifest_digest, "the failed build moved the tag");
    assert_eq!(after.file_str("state"), "good\n");
    let listed_after = sb.kiln(&["images", "-q", "--no-trunc"]);
    listed_after.ok();
    assert_eq!(listed_before.stdout, listed_after.stdout, "the failed build changed the image list");

    // A shell killed by a signal: the RUN's shell reports 128+9, as in docker.
    // (The RUN's own process is PID 1 of its namespace, which ignores signals
    // it has no handler for, so the kill goes to a child shell; `&&` keeps
    // busybox sh from exec'ing that child in its own place.)
    let out = sb.try_build(&format!("{RUN_BASE}RUN sh -c 'kill -9 $$' && echo not reached\n"), "keep:1", &[]);
    assert!(!out.success(), "a RUN whose command was killed must fail the build\n{}", out.transcript());
    out.stderr_has(&["RUN exited with code 137"]);
    assert_eq!(sb.image("keep:1").manifest_digest, good.manifest_digest);
}

/// Interface names in `ip link` output (`2: eth0@if3: <…>` → `eth0`).
fn interfaces(ip_link: &str) -> BTreeSet<String> {
    ip_link
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

/// `--network=none` leaves only the loopback device; by default RUN shares
/// the host's network namespace (no slirp4netns or pasta needed).
#[test]
fn network_none_and_host() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!("{RUN_BASE}RUN --network=none ip link > /net-none\nRUN ip link > /net-default\nRUN --network=host ip link > /net-host\n");
    let img = sb.build(&df, "net");
    let host = sb.tool("busybox", &["ip", "link"]);
    host.ok();
    let host = interfaces(&host.stdout);
    assert!(host.contains("lo"), "{host:?}");
    let none = interfaces(&img.file_str("net-none"));
    assert_eq!(none, BTreeSet::from(["lo".to_string()]), "--network=none:\n{}", img.file_str("net-none"));
    assert_eq!(interfaces(&img.file_str("net-default")), host, "the default network is the host's");
    assert_eq!(interfaces(&img.file_str("net-host")), host, "--network=host");
}

/// A second identical build takes every step from the cache and gives the
/// same image; changing one context file makes the COPY that reads it and
/// every later step miss, saying why.
#[test]
fn layer_cache_hits_and_misses() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/a.txt", "a1\n");
    sb.write("ctx/b.txt", "b1\n");
    let df = format!(
        "{RUN_BASE}\
COPY a.txt /a.txt
RUN cat /a.txt > /copy-a
COPY b.txt /b.txt
RUN cat /b.txt > /copy-b && cat /proc/sys/kernel/random/uuid > /stamp
ENV DONE=1
"
    );
    let (first, img1) = sb.build_with(&df, "c", &[]);
    assert!(!first.stdout.contains("Using cache"), "a fresh store has no cache\n{}", first.transcript());

    let (second, img2) = sb.build_with(&df, "c", &[]);
    let steps = second.stdout.lines().filter(|l| l.starts_with("STEP ")).count();
    let hits = second.stdout.lines().filter(|l| l.starts_with("--> Using cache")).count();
    assert_eq!(hits, steps - 1, "every step but FROM scratch comes from the cache\n{}", second.transcript());
    assert!(!second.stdout.contains("cache miss"), "{}", second.transcript());
    assert_eq!(img2.id(), img1.id(), "an identical build gives the same image id");

    sb.write("ctx/b.txt", "b2\n");
    let (third, img3) = sb.build_with(&df, "c", &[]);
    // Per step: did it hit, and what miss line did it print.
    let mut per_step: Vec<(String, bool, Vec<String>)> = Vec::new();
    for l in third.stdout.lines() {
        if l.starts_with("STEP ") {
            per_step.push((l.to_string(), false, Vec::new()));
        } else if let Some(cur) = per_step.last_mut() {
            if l.starts_with("--> Using cache") {
                cur.1 = true;
            } else if l.starts_with("--> cache miss") {
                cur.2.push(l.to_string());
            }
        }
    }
    let first_miss = per_step.iter().position(|s| s.0.contains("COPY b.txt")).unwrap();
    for (i, (step, hit, misses)) in per_step.iter().enumerate().skip(1) {
        if i < first_miss {
            assert!(hit, "{step} should come from the cache\n{}", third.transcript());
        } else {
            assert!(!hit, "{step} must not come from the cache after b.txt changed\n{}", third.transcript());
        }
        if i == first_miss {
            assert!(
                misses.iter().any(|m| m.contains("cache miss: file b.txt changed")),
                "{step}: no `cache miss: file b.txt changed` line\n{}",
                third.transcript()
            );
        }
    }
    assert_ne!(img3.id(), img1.id());
    assert_eq!(img3.file_str("copy-b"), "b2\n");
    assert_eq!(img3.file_str("copy-a"), "a1\n");
    assert_ne!(img3.file("stamp"), img1.file("stamp"), "the RUN after the changed COPY ran again");
    // The layers before the changed COPY are shared.
    let shared = img1.layers.iter().zip(&img3.layers).take_while(|(a, b)| a.digest == b.digest).count();
    assert_eq!(shared, 5, "the layers of busybox, --install, /tmp, COPY a.txt and RUN cat /a.txt are reused");
}

/// The image kiln built with RUN steps runs rootless: exported as an OCI
/// layout, unpacked by `umoci unpack --rootless` and run by runc (crun 1.8
/// refuses this host's hybrid cgroups).
#[test]
fn image_with_run_layers_runs_under_runc() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{RUN_BASE}\
RUN echo hello from a RUN layer > /msg && touch /owned && chown 4242:4242 /owned && rm /bin/vi
CMD [\"/bin/sh\", \"-c\", \"cat /msg; stat -c %u /owned; test -e /bin/vi || echo vi gone\"]
"
    );
    sb.dockerfile(&df);
    let out_dir = sb.path("out");
    let ctx = sb.ctx();
    sb.kiln(&["build", "-t", "app", "-o", &format!("type=oci,dest={}", out_dir.display()), ctx.to_str().unwrap()]).ok();
    sb.validate_layout(&out_dir, "app:latest");
    sb.tool("umoci", &["unpack", "--rootless", "--image", &format!("{}:app:latest", out_dir.display()), "bundle"]).ok();
    assert!(!sb.exists("bundle/rootfs/bin/vi"), "umoci applied the whiteout of /bin/vi");
    let cfg_path = sb.path("bundle/config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

    let state = sb.path("run/runc");
    let bundle = sb.path("bundle");
    let run = sb.tool(
        "runc",
        &["--root", state.to_str().unwrap(), "run", "--bundle", bundle.to_str().unwrap(), "kiln-it-run-steps"],
    );
    run.ok();
    // umoci's rootless unpack maps every owner to the unpacking user, who is
    // root in runc's rootless container.
    assert_eq!(run.stdout, "hello from a RUN layer\n0\nvi gone\n", "{}", run.transcript());
}

/// SIGTERM to kiln during a RUN kills the step's whole process tree and
/// leaves the store as it was: the tag keeps its image and the next build
/// works.
#[test]
fn sigterm_during_run_kills_the_step() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let good = sb.build(&format!("{RUN_BASE}RUN echo good > /state\n"), "keep:1");
    // Sleep lengths no other test uses, to find this step's processes.
    let (a, b) =
        (format!("{}", 40_000 + std::process::id() % 10_000), format!("{}", 50_000 + std::process::id() % 10_000));
    sb.dockerfile(&format!("{RUN_BASE}RUN echo started; sleep {a} & sleep {b}; echo never > /never\n"));
    let ctx = sb.ctx();
    let mut child = sb.spawn_kiln(&["build", "-t", "keep:1", ctx.to_str().unwrap()], "term");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(sb.path("term.out")).unwrap_or_default().contains("started") {
        assert!(std::time::Instant::now() < deadline, "the RUN step never started");
        assert!(child.try_wait().unwrap().is_none(), "kiln ended before the step ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    while pids_with_cmdline(&["sleep", &b]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the step's sleep never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln did not end within 20 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success(), "a build stopped by SIGTERM must not succeed");
    // Give the tree a moment to go, then look for survivors.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let script = format!("echo started; sleep {a} & sleep {b}; echo never > /never");
    let shells = pids_with_cmdline(&["/bin/sh", "-c", &script]);
    let sleeps: Vec<u32> = [&a, &b].iter().flat_map(|n| pids_with_cmdline(&["sleep", n])).collect();
    if !shells.is_empty() || !sleeps.is_empty() {
        // Clean up what this test started, by pid: the step's shell (PID 1
        // of its namespace, which takes the rest with it) and its sleeps.
        let mut report = String::new();
        for pid in shells.iter().chain(&sleeps) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).unwrap_or("?").trim().to_string();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            report.push_str(&format!(
                "pid {pid} (parent {ppid}): {}\n",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
        for pid in shells.iter().chain(&sleeps) {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        panic!("the RUN step's processes outlived kiln after SIGTERM:\n{report}");
    }
    assert_eq!(sb.image("keep:1").manifest_digest, good.manifest_digest, "the stopped build moved the tag");
    let again = sb.build(&format!("{RUN_BASE}RUN echo after > /state\n"), "keep:2");
    assert_eq!(again.file_str("state"), "after\n");
}

/// What the RUN process sees: build args and ENV, WORKDIR (created when
/// missing), SHELL, its own hostname, the host's resolv.conf (not committed),
/// the /dev nodes, a read-only /sys, and being PID 1.
#[test]
fn run_environment() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let df = format!(
        "{RUN_BASE}\
ARG A=default
ARG B
ENV E=fromenv
WORKDIR /made/here
SHELL [\"/bin/ash\", \"-e\", \"-c\"]
RUN pwd > /pwd && echo \"$A|$B|$E\" > /env && echo $$ > /pid && cat /proc/1/cmdline | tr '\\0' ' ' > /cmdline \\
 && hostname > /hostname && cat /etc/resolv.conf > /resolv && ls /dev > /devlist \\
 && (touch /sys/kiln-probe 2>/dev/null && echo writable || echo read-only) > /sys-state \\
 && (echo x > /dev/full 2>/dev/null; echo $? > /full-rc) && head -c 16 /dev/urandom | wc -c > /urandom
"
    );
    sb.dockerfile(&df);
    let ctx = sb.ctx();
    sb.kiln(&["build", "-t", "env", "--build-arg", "B=cli", ctx.to_str().unwrap()]).ok();
    let img = sb.image("env");
    assert_eq!(img.file_str("pwd"), "/made/here\n");
    assert_eq!(img.entry("made/here").expect("WORKDIR is created").kind, Kind::Dir);
    assert_eq!(img.file_str("env"), "default|cli|fromenv\n", "build args and ENV reach RUN");
    assert_eq!(img.file_str("pid"), "1\n", "the RUN command is PID 1 of its namespace");
    assert!(img.file_str("cmdline").starts_with("/bin/ash -e -c pwd"), "SHELL: {}", img.file_str("cmdline"));
    let hostname = img.file_str("hostname");
    assert!(!hostname.trim().is_empty(), "RUN has a hostname");
    if let Ok(host_resolv) = std::fs::read_to_string("/etc/resolv.conf") {
        assert_eq!(img.file_str("resolv"), host_resolv, "RUN sees the host's /etc/resolv.conf");
    }
    let dev: Vec<String> = img.file_str("devlist").lines().map(str::to_string).collect();
    for node in ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm"] {
        assert!(dev.iter().any(|d| d == node), "/dev/{node} missing in RUN: {dev:?}");
    }
    assert_eq!(img.file_str("sys-state"), "read-only\n", "/sys is read-only in RUN");
    assert_ne!(img.file_str("full-rc"), "0\n", "/dev/full refuses writes");
    assert_eq!(img.file_str("urandom").trim(), "16");
    // Build args stay out of the image config; ENV is in it.
    let env: Vec<String> =
        img.runtime()["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert!(env.contains(&"E=fromenv".to_string()), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("A=") || e.starts_with("B=")), "{env:?}");
    // Nothing of the RUN sandbox is committed.
    let fs = img.fs();
    for p in ["etc/resolv.conf", "etc/hosts", "etc/hostname", "sys/kiln-probe", "dev/null", "proc/1"] {
        assert!(!fs.contains_key(p), "{p} was committed into the image");
    }
}

/// COPY onto a base whose destination goes through a symlink resolves the
/// link inside the image, never on the host, even for an absolute link that
/// names a real host directory.
#[test]
fn copy_through_a_symlink_of_the_base_stays_in_the_image() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/f", "payload\n");
    let host_dir = sb.mkdir("host-target");
    let df = format!(
        "{RUN_BASE}\
RUN mkdir /real && ln -s /real /link && ln -s {host} /escape && ln -s ../real /rel
COPY f /link/f
COPY f /escape/f
COPY f /rel/g
",
        host = host_dir.display()
    );
    let img = sb.build(&df, "links");
    assert!(!host_dir.join("f").exists(), "COPY followed an image symlink onto the host");
    assert_eq!(img.file_str("real/f"), "payload\n");
    assert_eq!(img.file_str("real/g"), "payload\n");
    let escaped = format!("{}/f", host_dir.display()).trim_start_matches('/').to_string();
    assert_eq!(img.file_str(&escaped), "payload\n", "the absolute link resolves inside the image");
    assert_eq!(img.entry("link").unwrap().kind, Kind::Symlink, "the symlink itself is kept");
}
