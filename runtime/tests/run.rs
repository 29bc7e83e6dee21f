//! Real RUN steps over a busybox rootfs. This binary is its own helper (it
//! calls `dispatch_helper` first), and re-runs itself as `--case NAME ROOTFS`
//! for each case: directly, and when run as root also as an unprivileged user
//! with a subuid range (full map) and one without (single-id map).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_runtime::{Network, Output, RunSpec, Stream};

const HOSTNAME: &str = "kiln-test-host";
const FULL_USER: &str = "kilnrt";
const SINGLE_USER: &str = "kilnrt1";
/// chown to unmapped ids, by relative path, through a symlink (absolute, so
/// it resolves in the step's root), of a symlink itself, to 0, and a chmod
/// after a chown.
const FAKE_CHOWN_SCRIPT: &str = "set -e; rm -rf /tmp/fc; mkdir /tmp/fc; cd /tmp/fc; touch f z; mkdir d; \
    ln -s f symlink; ln -s /tmp/fc/f abslink; \
    chown 4242:4243 f; chown -h 7:7 symlink; chown 4242:4244 abslink; chown 0:0 z; chown 1000 d; chmod 2750 d; \
    touch up; chown 4242:4242 ../../../../../tmp/fc/up; \
    ls -ln /tmp/fc/f; stat -c %u:%g f z";

/// What a step sees of kiln's own state: its descriptors (as `ls` lists
/// them, its own directory handle being 3), fd 8, the signal lines of its
/// status, and whether two pipelines whose reader exits early end: busybox
/// `yes` stops on EPIPE, but `base64` only ends when SIGPIPE kills it
/// (`timeout` kills it otherwise: status 137).
const CLEAN_SCRIPT: &str = "echo FDS $(ls /proc/self/fd); \
    if [ -e /proc/self/fd/8 ]; then echo FD8 open; else echo FD8 none; fi; \
    grep -E '^Sig(Ign|Blk):' /proc/self/status | tr -d '\\t'; \
    echo YES $(timeout -s KILL 30 sh -c 'yes | head -c 1'); \
    timeout -s KILL 30 sh -c 'base64 /dev/urandom | head -c 1000 >/dev/null'; echo B64 $?";

fn main() {
    if let Some(code) = kiln_runtime::dispatch_helper() {
        std::process::exit(code);
    }
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--case") {
        std::process::exit(case_main(&args[2], Path::new(&args[3])));
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let failures = outer();
    if failures > 0 {
        eprintln!("{failures} check(s) failed");
        std::process::exit(1);
    }
    println!("test result: ok");
}

// ---------------------------------------------------------------- inner side

/// Runs inside the namespace: prints `OUT:`/`ERR:` lines, then `CODE: n` or
/// `SETUP: message`.
fn case_main(name: &str, rootfs: &Path) -> i32 {
    let mode = kiln_runtime::detect();
    match kiln_runtime::enter_user_namespace(&mode) {
        Ok(Some(code)) => return code,
        Ok(None) => {}
        Err(err) => {
            println!("SETUP: {err}");
            return 0;
        }
    }
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let mut spec = RunSpec::new(rootfs, Vec::new());
    spec.hostname = HOSTNAME.into();
    spec.env.push("HOME=/root".into());
    match name {
        "basic" => {
            spec.argv = sh("echo hi; id -u; hostname; echo $$; ls /dev; tr '\\0' ' ' </proc/1/cmdline; echo; \
                            echo oops >&2; cat /proc/self/uid_map; grep -c . /etc/hosts; touch /sys/x 2>/dev/null || echo sys-ro; pwd");
            spec.cwd = "/work/dir".into();
        }
        "exit3" => spec.argv = sh("exit 3"),
        "netnone" => {
            spec.network = Network::None;
            spec.argv = sh("ifconfig | grep -o '^[a-z0-9]*'; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
        }
        "user" => {
            match kiln_runtime::user::resolve(rootfs, "alice") {
                Ok(user) => spec.user = user,
                Err(err) => {
                    println!("SETUP: {err}");
                    return 0;
                }
            }
            spec.argv = sh("id -u; id -g; id -G; touch /tmp/by-alice; stat -c %u:%g /tmp/by-alice");
        }
        "chown" => spec.argv = sh("touch /tmp/f && chown 4242:4242 /tmp/f && stat -c %u:%g /tmp/f"),
        "fakechown" => {
            // As the engine does: intercept only where other ids do not exist.
            spec.fake_chown = matches!(mode, kiln_runtime::MapMode::Single);
            spec.argv = sh(FAKE_CHOWN_SCRIPT);
        }
        "notfound" => spec.argv = vec!["no-such-command".into()],
        // Started by `run_case_leaky`: fd 8 open, SIGHUP and SIGPIPE ignored.
        "clean" => spec.argv = sh(CLEAN_SCRIPT),
        "kill" => {
            spec.argv = sh("sleep 4321 & sleep 4322; echo not-killed");
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(700));
                kiln_runtime::kill_running_steps();
            });
        }
        other => {
            println!("SETUP: unknown case {other}");
            return 0;
        }
    }
    let mut print = |stream: Stream, line: &str| match stream {
        Stream::Stdout => println!("OUT: {line}"),
        Stream::Stderr => println!("ERR: {line}"),
    };
    match kiln_runtime::run(&spec, Output::Lines(&mut print)) {
        Ok(code) => println!("CODE: {code}"),
        Err(err) => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            println!("SETUP: {text}");
        }
    }
    0
}

// ---------------------------------------------------------------- outer side

struct CaseResult {
    out: Vec<String>,
    err: Vec<String>,
    code: Option<i32>,
    setup: Option<String>,
    raw: String,
}

struct Checker {
    failures: usize,
    label: String,
}

impl Checker {
    fn check(&mut self, ok: bool, what: &str, result: &CaseResult) {
        if ok {
            println!("ok   [{}] {what}", self.label);
        } else {
            self.failures += 1;
            println!("FAIL [{}] {what}\n---- output ----\n{}----------------", self.label, result.raw);
        }
    }
}

fn outer() -> usize {
    let root = nix::unistd::Uid::effective().is_root();
    let mut failures = 0;
    let mut who: Vec<Option<&str>> = vec![None];
    if root {
        ensure_user(FULL_USER, true);
        ensure_user(SINGLE_USER, false);
        who.push(Some(FULL_USER));
        who.push(Some(SINGLE_USER));
    }
    let scratch = tempfile::Builder::new().prefix("kiln-run-test").tempdir().expect("create a scratch dir");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = scratch.path().join("run-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).expect("copy the test binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    for user in who {
        let rootfs = scratch.path().join(format!("rootfs-{}", user.unwrap_or("self")));
        make_rootfs(&rootfs);
        if let Some(user) = user {
            let status = Command::new("chown").args(["-R", user]).arg(&rootfs).status().unwrap();
            assert!(status.success());
        }
        let mode = match user {
            None if root => "root",
            None => "self",
            Some(FULL_USER) => "full",
            Some(_) => "single",
        };
        let mut c = Checker { failures: 0, label: mode.to_string() };
        let run = |name: &str| run_case(&exe, user, name, &rootfs, false);
        let run_leaky = |name: &str| run_case(&exe, user, name, &rootfs, true);
        check_cases(&mut c, mode, &rootfs, &run, &run_leaky);
        // No placeholder survives: the image had no /proc, /sys, /dev,
        // /etc/hosts, /etc/resolv.conf, /work.
        let mut left: Vec<String> = std::fs::read_dir(&rootfs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut etc: Vec<String> = std::fs::read_dir(rootfs.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        etc.sort();
        let dummy = CaseResult {
            out: vec![],
            err: vec![],
            code: None,
            setup: None,
            raw: format!("/: {left:?}\n/etc: {etc:?}\n"),
        };
        c.check(left == ["bin", "etc", "tmp", "work"], "only the image's dirs and the created WORKDIR remain", &dummy);
        c.check(etc == ["group", "passwd"], "no stub /etc/hosts or /etc/resolv.conf", &dummy);
        failures += c.failures;
    }
    failures
}

fn check_cases(
    c: &mut Checker,
    mode: &str,
    rootfs: &Path,
    run: &dyn Fn(&str) -> CaseResult,
    run_leaky: &dyn Fn(&str) -> CaseResult,
) {
    let full = mode == "full" || mode == "root";
    let r = run("basic");
    c.check(r.code == Some(0), "basic step exits 0", &r);
    c.check(r.out.first().map(String::as_str) == Some("hi"), "echo hi", &r);
    c.check(r.out.get(1).map(String::as_str) == Some("0"), "runs as uid 0", &r);
    c.check(r.out.get(2).map(String::as_str) == Some(HOSTNAME), "hostname is set", &r);
    c.check(r.out.get(3).map(String::as_str) == Some("1"), "the command is PID 1", &r);
    for node in ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd"] {
        c.check(r.out.iter().any(|l| l.split_whitespace().any(|w| w == node)), &format!("/dev/{node} exists"), &r);
    }
    c.check(r.out.iter().any(|l| l.starts_with("sh -c echo hi")), "/proc/1/cmdline is the command", &r);
    c.check(r.err == ["oops"], "stderr arrives as its own stream", &r);
    c.check(r.out.iter().any(|l| l == "sys-ro"), "/sys is read-only", &r);
    c.check(r.out.last().map(String::as_str) == Some("/work/dir"), "missing WORKDIR is created and entered", &r);
    if Path::new("/etc/hosts").exists() {
        let n = std::fs::read_to_string("/etc/hosts").unwrap().lines().filter(|l| !l.is_empty()).count();
        c.check(r.out.iter().any(|l| *l == n.to_string()), "the host's /etc/hosts is bound", &r);
    }
    match mode {
        "full" => c.check(
            r.out.iter().filter(|l| l.split_whitespace().count() == 3).count() >= 2,
            "uid_map is the full map",
            &r,
        ),
        "single" => {
            c.check(r.out.iter().filter(|l| l.split_whitespace().count() == 3).count() == 1, "uid_map has one line", &r)
        }
        _ => {}
    }

    let r = run("exit3");
    c.check(r.code == Some(3), "exit 3 propagates", &r);
    // The command is PID 1 of its namespace, so only a signal from outside
    // can kill it: the "kill" case below shows 128 + n.
    let r = run("notfound");
    c.check(
        r.setup.as_deref().is_some_and(|s| s.contains("not found in $PATH")),
        "a missing command is a setup error",
        &r,
    );

    let r = run("netnone");
    c.check(r.code == Some(0), "network none step runs", &r);
    c.check(
        r.out.iter().filter(|l| !l.is_empty()).all(|l| l == "lo") && r.out.iter().filter(|l| *l == "lo").count() == 2,
        "network none: only lo, and it is up",
        &r,
    );

    let r = run("chown");
    if full {
        c.check(r.out == ["4242:4242"], "chown to 4242 works under the full map", &r);
    } else {
        c.check(r.code != Some(0), "chown to 4242 fails under the single-id map", &r);
    }
    let r = run("fakechown");
    let rootfs = rootfs.join("tmp/fc");
    let record = |name: &str| {
        xattr::get(rootfs.join(name), "user.containers.override_stat")
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let mode_of =
        |name: &str| std::fs::metadata(rootfs.join(name)).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0);
    c.check(r.code == Some(0), "chown to other ids in RUN exits 0", &r);
    if mode == "single" {
        c.check(r.out.get(1..) == Some(&["0:0".to_string(), "0:0".into()]), "the step still sees uid 0", &r);
        let want = format!("4242:4244:0{:o}", mode_of("f"));
        c.check(record("f") == Some(want), "chown to unmapped ids is recorded in override_stat", &r);
        c.check(record("z").is_none(), "chown to 0 records nothing", &r);
        let want = format!("4242:4242:0{:o}", mode_of("up"));
        c.check(record("up") == Some(want), "`..` in a relative path stops at the step's root", &r);
        c.check(record("d").as_deref() == Some("1000:0:02750"), "chmod after chown updates the recorded mode", &r);
    } else if full {
        c.check(
            r.out.get(1..) == Some(&["4242:4244".to_string(), "0:0".into()]),
            "chown is real under the full map",
            &r,
        );
        c.check(record("f").is_none() && record("d").is_none(), "nothing is recorded under the full map", &r);
    }

    let r = run("user");
    if full {
        c.check(
            r.out.get(..3) == Some(&["1000".to_string(), "1000".into(), "1000 10 29".into()]),
            "USER alice: uid, gid, supplementary groups",
            &r,
        );
        c.check(r.out.get(3).map(String::as_str) == Some("1000:1000"), "files written by USER alice are hers", &r);
    } else {
        c.check(
            r.setup.as_deref().is_some_and(|s| s.contains("mapped")),
            "USER alice cannot be set under the single-id map",
            &r,
        );
    }

    // Whatever kiln inherited stays with kiln.
    let r = run_leaky("clean");
    c.check(r.code == Some(0), "the clean-start step exits 0", &r);
    let field = |key: &str| r.out.iter().find_map(|l| l.strip_prefix(key)).map(str::trim).unwrap_or("missing");
    c.check(
        field("FDS ").split_whitespace().all(|fd| ["0", "1", "2", "3"].contains(&fd)),
        "the command has only descriptors 0-2",
        &r,
    );
    c.check(field("FD8 ") == "none", "a descriptor kiln inherited does not reach the command", &r);
    c.check(field("SigIgn:") == "0000000000000000", "no signal is ignored", &r);
    c.check(field("SigBlk:") == "0000000000000000", "no signal is blocked", &r);
    c.check(field("YES ") == "y", "`yes | head -c 1` ends", &r);
    c.check(field("B64 ") == "0", "`base64 /dev/urandom | head -c 1000` ends: SIGPIPE is at its default", &r);

    let started = std::time::Instant::now();
    let r = run("kill");
    c.check(r.code == Some(128 + 9) && started.elapsed().as_secs() < 4, "kill_running_steps ends the step", &r);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    c.check(!ps.lines().any(|l| l.starts_with("sleep 432")), "no process of the killed step survives", &r);
}

/// Runs one case as `user`; `leaky` starts it from a shell that left fd 8
/// open on / and SIGHUP and SIGPIPE ignored, as a careless caller would.
fn run_case(exe: &Path, user: Option<&str>, name: &str, rootfs: &Path, leaky: bool) -> CaseResult {
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]);
            c
        }
        // `env` runs the next word as the program.
        None => Command::new("env"),
    };
    if leaky {
        cmd.args(["sh", "-c", "exec 8</; trap '' HUP PIPE; exec \"$0\" \"$@\""]);
    }
    cmd.arg(exe).arg("--case").arg(name).arg(rootfs).current_dir("/");
    let out = cmd.output().expect("run a case");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut r =
        CaseResult { out: vec![], err: vec![], code: None, setup: None, raw: format!("{stdout}[stderr]\n{stderr}") };
    for line in stdout.lines() {
        if let Some(l) = line.strip_prefix("OUT: ") {
            r.out.push(l.to_string());
        } else if line == "OUT:" {
            r.out.push(String::new());
        } else if let Some(l) = line.strip_prefix("ERR: ") {
            r.err.push(l.to_string());
        } else if let Some(l) = line.strip_prefix("CODE: ") {
            r.code = l.parse().ok();
        } else if let Some(l) = line.strip_prefix("SETUP: ") {
            r.setup = Some(l.to_string());
        }
    }
    r
}

/// A rootfs of Debian's static busybox: /bin with every applet, /etc/passwd
/// and /etc/group, /tmp; no /proc, /sys, /dev, /etc/hosts or resolv.conf.
fn make_rootfs(rootfs: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox-static is installed");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nalice:x:1000:\nwheel:x:10:alice\naudio:x:29:alice\n").unwrap();
}

/// Creates `name` once; with a subuid/subgid range, or with none at all.
fn ensure_user(name: &str, with_range: bool) {
    use kiln_integration::users::{ensure_user, SubIds};
    ensure_user(name, if with_range { SubIds::Range } else { SubIds::None });
}
