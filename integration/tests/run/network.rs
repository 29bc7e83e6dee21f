//! Networks and capabilities of RUN steps and `kiln run`, as the
//! unprivileged test user: `--network none|private` on build, `kiln run -p`
//! through pasta and through slirp4netns (forced with KILN_NETWORK_HELPER),
//! and `--cap-add/--cap-drop`.

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_integration::*;
use nix::sys::signal::Signal;

/// A python3 http.server bound to the host's loopback, serving `dir`.
struct HostServer {
    child: Child,
    port: u16,
}

impl HostServer {
    fn start(dir: &Path) -> HostServer {
        let python = require_tool("python3");
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the host's http.server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        HostServer { child, port }
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// `kiln --root STORE ARGS` with `KILN_NETWORK_HELPER=helper`.
fn kiln_with(sb: &Sandbox, helper: &str, args: &[&str]) -> Output {
    let store = sb.store();
    let mut all = vec!["--root", store.to_str().unwrap()];
    all.extend_from_slice(args);
    sb.kiln_raw(&all, None, &[("KILN_NETWORK_HELPER", helper)])
}

/// Processes whose command line mentions `needle` (the sandbox's path is in
/// kiln's, pasta's and slirp4netns's).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if pid == std::process::id().to_string() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{pid}: {text}"));
        }
    }
    found
}

/// Files the private network left anywhere in the store.
fn network_leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with("kiln-net-") {
            found.push(path.display().to_string());
        } else if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            found.extend(network_leftovers(&path));
        }
    }
    found
}

/// The network interfaces a RUN step sees, from /proc/net/dev (per
/// network namespace; /sys is the host's).
const LIST_IFACES: &str = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort";

fn build_network_modes(helper: &str) {
    build_network_modes_in(&Sandbox::new(), helper);
}

fn build_network_modes_in(sb: &Sandbox, helper: &str) {
    sb.busybox_context();
    let www = sb.mkdir("www");
    std::fs::write(www.join("hello.txt"), format!("hello over {helper}\n")).unwrap();
    let server = HostServer::start(&www);
    sb.dockerfile(&format!(
        "{RUN_BASE}\
         ARG PORT\n\
         RUN --network=none {LIST_IFACES} > /none.txt\n\
         RUN {LIST_IFACES} > /private.txt && cat /etc/resolv.conf > /resolv.txt && \
             grep -e host.containers.internal -e added.example -e gw.example /etc/hosts > /hosts.txt && \
             wget -q -O /got.txt http://host.containers.internal:$PORT/hello.txt\n\
         RUN --network=host {LIST_IFACES} > /host.txt\n"
    ));
    let ctx = sb.ctx();
    let port = server.port.to_string();
    let out = kiln_with(
        sb,
        helper,
        &[
            "build",
            "--network",
            "private",
            "--add-host",
            "gw.example:host-gateway",
            "--add-host",
            "added.example:10.1.2.3",
            "--build-arg",
            &format!("PORT={port}"),
            "-t",
            "net",
            ctx.to_str().unwrap(),
        ],
    );
    out.ok();
    let img = sb.image("net");
    assert_eq!(img.file_str("none.txt"), "lo\n", "--network=none has only lo");
    let private = img.file_str("private.txt");
    let ifaces: Vec<&str> = private.lines().collect();
    assert!(ifaces.contains(&"lo") && ifaces.len() == 2, "a private RUN has lo and one interface: {private:?}");
    let host_ifaces = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert!(
        host_ifaces.contains(&format!("{}:", ifaces.iter().find(|i| **i != "lo").unwrap())) || helper == "slirp4netns"
    );
    assert_eq!(img.file_str("got.txt"), format!("hello over {helper}\n"), "the host's server answered");
    let dns = if helper == "pasta" { "169.254.1.1" } else { "10.0.2.3" };
    assert!(img.file_str("resolv.txt").starts_with(&format!("nameserver {dns}\n")), "{}", img.file_str("resolv.txt"));
    // --add-host adds to the private network's hosts file, which names the host.
    let hosts = img.file_str("hosts.txt");
    assert!(hosts.contains("\thost.containers.internal host.docker.internal\n"), "{hosts}");
    assert!(hosts.ends_with("10.1.2.3\tadded.example\n"), "{hosts}");
    // host-gateway is the host as the private network reaches it, not the step's own loopback.
    let ip_of = |name: &str| hosts.lines().find(|l| l.contains(name)).and_then(|l| l.split_whitespace().next());
    assert_eq!(ip_of("gw.example"), ip_of("host.containers.internal"), "{hosts}");
    assert_ne!(ip_of("gw.example"), Some("127.0.0.1"), "{hosts}");
    if helper == "slirp4netns" {
        assert!(hosts.starts_with("10.0.2.2\thost.containers.internal"), "{hosts}");
        assert_eq!(ifaces, ["lo", "tap0"]);
    }
    // RUN --network=host wins over the build's --network: the host's interfaces.
    let mut host: Vec<String> =
        host_ifaces.lines().skip(2).map(|l| l.split(':').next().unwrap().trim().to_string()).collect();
    host.sort();
    assert_eq!(img.file_str("host.txt"), host.join("\n") + "\n");
    let root = sb.root().display().to_string();
    assert_eq!(processes_with(&root), Vec::<String>::new(), "nothing of the build is left running");
    assert_eq!(network_leftovers(&sb.store()), Vec::<String>::new());
}

#[test]
fn build_network_none_and_private_with_pasta() {
    build_network_modes("pasta");
}

#[test]
fn build_network_none_and_private_with_slirp4netns() {
    build_network_modes("slirp4netns");
}

/// With no subordinate ids (a single-id user namespace) the private network
/// works the same.
#[test]
fn build_network_private_in_single_id_mode() {
    let Some(sb) = Sandbox::without_subids() else {
        eprintln!("NOTICE: skipped: the tests run unprivileged as a user with a subuid range");
        return;
    };
    build_network_modes_in(&sb, "pasta");
    build_network_modes_in(&Sandbox::without_subids().unwrap(), "slirp4netns");
}

/// GET / on the host's port, as curl would; `None` while nothing answers.
fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

fn run_publish(helper: &str) {
    run_publish_then(helper, Signal::SIGTERM);
}

fn run_publish_then(helper: &str, signal: Signal) {
    let sb = Sandbox::new();
    sb.busybox_context();
    let docroot = format!("/www/{helper}");
    sb.build(
        &format!(
            "{RUN_BASE}RUN mkdir -p {docroot} && echo served-by-kiln-{helper} > {docroot}/index.html\n\
             CMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"{docroot}\"]\n"
        ),
        "site",
    );
    let port = free_port();
    let store = sb.store();
    let publish = format!("{port}:80");
    let args: Vec<&OsStr> =
        ["--root", store.to_str().unwrap(), "run", "-p", &publish, "site"].into_iter().map(OsStr::new).collect();
    let mut cmd = sb.kiln_command(&args);
    cmd.env("KILN_NETWORK_HELPER", helper)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut kiln = cmd.spawn().expect("start kiln run");
    let _group = KillGroup(kiln.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Some(answer) = http_get(port) {
            break answer;
        }
        if let Some(status) = kiln.try_wait().unwrap() {
            let out = kiln.wait_with_output().unwrap();
            panic!(
                "kiln run ended ({status}) before serving:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "nothing served on localhost:{port} within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.starts_with("HTTP/1.") && answer.lines().next().unwrap().contains(" 200 "), "{answer}");
    assert!(answer.ends_with(&format!("served-by-kiln-{helper}\n")), "{answer}");
    let httpd = format!("httpd -f -p 80 -h {docroot}");
    // (httpd forks one process per connection, which may still be ending.)
    assert!(!processes_with(&httpd).is_empty(), "the container runs while kiln does");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(kiln.id() as i32), signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = kiln.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "kiln run did not stop within 20 s of {signal}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = kiln.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let root = sb.root().display().to_string();
    if signal == Signal::SIGKILL {
        // What kiln started dies with it (parent-death signals): the engine,
        // the container and the forwarder, within moments.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(processes_with(&root).is_empty() && processes_with(&httpd).is_empty()) {
            assert!(
                Instant::now() < deadline,
                "left running 5 s after SIGKILL of kiln: {:?} {:?}",
                processes_with(&root),
                processes_with(&httpd)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        // busybox httpd as PID 1 installs no SIGTERM handler, so the signal
        // kiln passed on is ignored; kiln kills it 10 s later, as `docker stop`
        // does, and reports 128 + SIGKILL as docker does.
        assert_eq!(status.code(), Some(137), "{stderr}");
        assert_eq!(processes_with(&root), Vec::<String>::new(), "kiln and its forwarder are gone");
        assert_eq!(processes_with(&httpd), Vec::<String>::new(), "the container is gone");
        assert_eq!(network_leftovers(&sb.store()), Vec::<String>::new(), "no file of the network is left");
    }
    // The port closes with the forwarder (a process being reaped may hold it a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = TcpListener::bind(("0.0.0.0", port)) {
        if Instant::now() > deadline {
            let ss = Command::new("ss").args(["-ltnpe", &format!("sport = :{port}")]).output().unwrap();
            panic!("the published port {port} is still in use ({e}):\n{}", String::from_utf8_lossy(&ss.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(http_get(port).is_none());
}

/// Kills a process group when dropped, so a failing test leaves no server behind.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn run_publish_with_pasta_serves_until_sigterm() {
    run_publish("pasta");
}

#[test]
fn run_publish_with_slirp4netns_serves_until_sigterm() {
    run_publish("slirp4netns");
}

#[test]
fn sigkill_of_kiln_run_leaves_no_container_or_forwarder() {
    run_publish_then("pasta", Signal::SIGKILL);
    run_publish_then("slirp4netns", Signal::SIGKILL);
}

use std::os::unix::process::CommandExt;

/// CapEff of a RUN step's shell, from /proc/self/status.
fn cap_eff(img: &Image, file: &str) -> String {
    let text = img.file_str(file);
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no CapEff in {text:?}"))
}

#[test]
fn capabilities_follow_docker_and_key_the_cache() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.dockerfile(&format!(
        "{RUN_BASE}RUN cat /proc/self/status > /status && \
         (ping -c 1 -W 2 127.0.0.1 >/dev/null 2>/ping.err && echo ok || echo failed) > /ping\n"
    ));
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    let build = |tag: &str, extra: &[&str]| {
        let mut args = vec!["build", "--network", "none", "-t", tag];
        args.extend_from_slice(extra);
        args.push(ctx);
        let out = sb.kiln(&args);
        out.ok();
        (sb.image(tag), out)
    };
    let (default, _) = build("default", &[]);
    assert_eq!(cap_eff(&default, "status"), "00000000a80425fb", "docker's default set");
    assert_eq!(default.file_str("ping"), "ok\n", "NET_RAW is in the default set: ping works");
    let (tweaked, out) = build("tweaked", &["--cap-add", "NET_ADMIN", "--cap-drop", "CAP_NET_RAW"]);
    // Only the COPY comes from the cache: every RUN's key has the capabilities.
    assert_eq!(out.stdout.matches("Using cache").count(), 1, "{}", out.transcript());
    assert_eq!(cap_eff(&tweaked, "status"), "00000000a80415fb", "NET_ADMIN added, NET_RAW dropped");
    assert_eq!(tweaked.file_str("ping"), "failed\n", "without NET_RAW ping cannot open its raw socket");
    assert_ne!(default.id(), tweaked.id(), "the capabilities are part of the RUN's cache key");
    let bnd = tweaked.file_str("status");
    assert!(bnd.contains("CapBnd:\t00000000a80415fb"), "the bounding set is limited too: {bnd}");
    // The same flags again: the step comes from the cache.
    let (again, out) = build("again", &["--cap-drop", "NET_RAW", "--cap-add", "net_admin"]);
    assert_eq!(again.id(), tweaked.id());
    assert_eq!(out.stdout.matches("Using cache").count(), 4, "{}", out.transcript());

    // kiln run: --cap-drop ALL leaves only what --cap-add gives.
    let run = sb.kiln(&[
        "run",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        "default",
        "grep",
        "Cap",
        "/proc/self/status",
    ]);
    run.ok();
    assert!(run.stdout.contains("CapEff:\t0000000000000400"), "{}", run.transcript());
    let bad = sb.kiln(&["run", "--cap-add", "NET_ADMINN", "default", "true"]);
    bad.fails_with(125).stderr_has(&["unknown capability \"NET_ADMINN\""]);
}

#[test]
fn missing_forwarder_and_bad_flags_are_explained() {
    let sb = Sandbox::new();
    sb.build_busybox("bb");
    let store = sb.store();
    let root = store.to_str().unwrap();
    // Neither forwarder on PATH: the message names both packages and the apt line.
    let out = sb.kiln_raw(&["--root", root, "run", "--network", "private", "bb"], None, &[("PATH", "/nonexistent")]);
    out.fails_with(125).stderr_has(&[
        "pasta or slirp4netns",
        "sudo apt-get install passt",
        "sudo apt-get install slirp4netns",
    ]);
    let out = sb.kiln(&["run", "-p", "8080:80", "--network", "host", "bb"]);
    out.fails_with(125).stderr_has(&["--network host"]);
    let out = sb.kiln(&["run", "-p", "80", "bb"]);
    assert!(!out.success());
    out.stderr_has(&["give the host port too"]);
    // A port another program has: kiln says so, with either forwarder.
    let busy = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let publish = format!("{}:80", busy.local_addr().unwrap().port());
    for helper in ["pasta", "slirp4netns"] {
        let out = kiln_with(&sb, helper, &["run", "-p", &publish, "bb"]);
        out.fails_with(125).stderr_has(&[&format!("publish {publish}/tcp"), "in use?"]);
    }
    drop(busy);
    let info = sb.kiln(&["info"]);
    info.ok();
    let line =
        info.stdout.lines().find(|l| l.starts_with("private network:")).expect("kiln info reports the forwarder");
    assert!(line.contains("pasta (") && line.contains("also slirp4netns"), "{line}");
    let info = sb.kiln_raw(&["--root", root, "info"], None, &[("KILN_NETWORK_HELPER", "slirp4netns")]);
    assert!(
        info.stdout.contains("slirp4netns (/usr/bin/slirp4netns), from KILN_NETWORK_HELPER"),
        "{}",
        info.transcript()
    );
}
