//! A kiln build or run dies with the kiln process the user started: a
//! SIGKILL of that one process (or of its whole process group) leaves no
//! process behind (engine, RUN tree, fuse-overlayfs) and no tag appears
//! later; Ctrl-C and SIGTERM unwind, print one line, exit 130/143 and leave
//! no temp files, mounts or processes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_integration::{require_fuse, require_tool, static_busybox, Sandbox};

/// How long the dying may take.
const GRACE: Duration = Duration::from_secs(5);

/// A process as /proc shows it: its parent, state and start time (which,
/// with the pid, names it even if the pid is reused).
#[derive(Debug, Clone)]
struct Proc {
    ppid: u32,
    state: char,
    start: u64,
}

fn proc_stat(pid: u32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc { state: f[0].chars().next()?, ppid: f[1].parse().ok()?, start: f[19].parse().ok()? })
}

fn all_procs() -> BTreeMap<u32, Proc> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .collect()
}

/// `pid` and every process below it, with their start times.
fn tree(pid: u32) -> BTreeMap<u32, u64> {
    let procs = all_procs();
    let mut found = BTreeMap::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Some(info) = procs.get(&p) {
            if found.insert(p, info.start).is_none() {
                todo.extend(procs.iter().filter(|(_, i)| i.ppid == p).map(|(c, _)| *c));
            }
        }
    }
    found
}

/// Whether the process is still running (a zombie has finished: this
/// machine's init may never reap what was reparented to it).
fn running(pid: u32, start: u64) -> bool {
    proc_stat(pid).is_some_and(|p| p.start == start && p.state != 'Z')
}

/// Live processes whose command line mentions the sandbox (kiln itself,
/// fuse-overlayfs with its layer paths).
fn sandbox_procs(sb: &Sandbox) -> Vec<String> {
    let needle = sb.root().to_string_lossy().into_owned();
    all_procs()
        .into_iter()
        .filter(|(_, p)| p.state != 'Z')
        .filter_map(|(pid, _)| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&needle).then(|| format!("{pid}: {cmd}"))
        })
        .collect()
}

/// Waits until nothing of `before` (a process tree taken before the kill)
/// runs and no process mentions the sandbox; panics listing what is left.
#[track_caller]
fn assert_all_gone(sb: &Sandbox, before: &BTreeMap<u32, u64>, what: &str) {
    let deadline = Instant::now() + GRACE;
    loop {
        let left: Vec<String> = before
            .iter()
            .filter(|(pid, start)| running(**pid, **start))
            .map(|(pid, _)| {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!("{pid}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
            })
            .chain(sandbox_procs(sb))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: processes still running {GRACE:?} later:\n{}", left.join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Mounts live in kiln's own mount namespace, gone with its processes;
    // none may have reached the host's.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = sb.root().to_string_lossy().into_owned();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(leaked.is_empty(), "{what}: mounts left on the host:\n{}", leaked.join("\n"));
}

/// Temp files and half-made layer dirs in the store.
fn leftovers(sb: &Sandbox) -> Vec<String> {
    let store = sb.store();
    let mut out = Vec::new();
    for (dir, prefixes) in
        [("kiln/tmp", &["blob-", "build-", ".tmp-"][..]), ("kiln/layers", &[".step-", ".unpack-"][..])]
    {
        let Ok(entries) = fs::read_dir(store.join(dir)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| name.starts_with(p)) {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    out
}

/// A context with busybox, and a base image `base` with its applets
/// installed, so the builds below start at their slow step.
fn prepare(sb: &Sandbox) {
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.build(
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        "base",
    );
}

/// `kiln --root STORE ARGS` as the test user, its own process group leader,
/// output to `<sandbox>/NAME.out` and `.err`. In root mode setpriv execs
/// kiln, so the child's pid is the kiln the user would see.
fn start(sb: &Sandbox, args: &[&str], name: &str) -> Child {
    let store = sb.store();
    let setpriv = require_tool("setpriv");
    let mut cmd = if sb.drops_privileges() {
        let mut c = Command::new(setpriv);
        c.args(["--reuid", "kilntest", "--regid", "kilntest", "--init-groups", "--"]).arg(sb.kiln_path());
        c
    } else {
        Command::new(sb.kiln_path())
    };
    cmd.arg("--root")
        .arg(&store)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", sb.path("home"))
        .env("XDG_DATA_HOME", sb.path("home/.local/share"))
        .env("XDG_CONFIG_HOME", sb.path("home/.config"))
        .env("XDG_RUNTIME_DIR", sb.path("run"))
        .env("TMPDIR", sb.path("tmp"))
        .current_dir(sb.root())
        .stdin(Stdio::null())
        .stdout(fs::File::create(sb.path(&format!("{name}.out"))).unwrap())
        .stderr(fs::File::create(sb.path(&format!("{name}.err"))).unwrap())
        .process_group(0);
    cmd.spawn().expect("start kiln")
}

/// Waits until `<sandbox>/NAME.out` has a line containing `needle`.
#[track_caller]
fn wait_for_output(sb: &Sandbox, child: &mut Child, name: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = fs::read_to_string(sb.path(&format!("{name}.out"))).unwrap_or_default();
        if out.lines().any(|l| l.contains(needle)) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let err = fs::read_to_string(sb.path(&format!("{name}.err"))).unwrap_or_default();
            panic!("kiln ended ({status}) before printing {needle:?}:\n{out}\n{err}");
        }
        assert!(Instant::now() < deadline, "kiln never printed {needle:?}:\n{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// Sends `sig` to `pid` (a negative pid: its process group), as root or as
/// the same user as kiln.
fn signal(pid: i32, sig: i32) {
    let out =
        Command::new(require_tool("kill")).args(["-s", &sig.to_string(), "--", &pid.to_string()]).output().unwrap();
    assert!(out.status.success(), "kill -s {sig} -- {pid}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits for `child` (at most a minute); its exit code, or 128 + the signal.
fn wait_code(child: &mut Child) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        }
        assert!(Instant::now() < deadline, "kiln did not end within a minute of the signal");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds `dockerfile` as `victim`, waits for `ready` in its output, then
/// SIGKILLs the top kiln process (or its whole group) and checks that
/// nothing is left running and that the tag never appears, even after the
/// build would have finished.
fn sigkill_build(dockerfile: &str, extra: &[&str], ready: &str, group: bool) {
    let sb = Sandbox::new();
    prepare(&sb);
    sb.dockerfile(dockerfile);
    let ctx = sb.ctx();
    let mut args = vec!["build", "-t", "victim"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let mut child = start(&sb, &args, "build");
    wait_for_output(&sb, &mut child, "build", ready);
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id() as i32;
    let before = tree(child.id());
    assert!(before.len() >= 3, "expected kiln, its engine and the RUN step running: {before:?}");
    signal(if group { -pid } else { pid }, SIGKILL);
    assert_eq!(wait_code(&mut child), 128 + SIGKILL);
    assert_all_gone(&sb, &before, if group { "SIGKILL of the group" } else { "SIGKILL of the top kiln" });
    // Long enough for the build to have finished and tagged, had anything
    // of it survived.
    std::thread::sleep(Duration::from_secs(7));
    let images = sb.kiln(&["images"]);
    images.ok();
    assert!(!images.stdout.contains("victim"), "a killed build tagged its image:\n{}", images.transcript());
    // The store still works: the next build clears what the killed one left.
    let again = sb.kiln(&["build", "--build-arg", "WAIT=0", "-t", "after", ctx.to_str().unwrap()]);
    again.ok();
    assert!(leftovers(&sb).is_empty(), "{:?}", leftovers(&sb));
}

const SLEEPY: &str = "FROM base\nARG WAIT=6\nRUN echo started && sleep $WAIT && echo finished > /finished\n";

#[test]
fn sigkill_of_the_top_kiln_stops_the_build() {
    sigkill_build(SLEEPY, &[], "started", false);
}

#[test]
fn sigkill_of_the_top_kiln_stops_the_build_with_fuse_overlayfs() {
    let probe = Sandbox::new();
    require_fuse(&probe);
    sigkill_build(SLEEPY, &["--storage-driver", "fuse-overlayfs"], "started", false);
}

#[test]
fn sigkill_of_the_process_group_stops_the_build() {
    sigkill_build(SLEEPY, &["--storage-driver", "fuse-overlayfs"], "started", true);
}

#[test]
fn sigkill_of_the_top_kiln_while_a_big_file_is_written() {
    let df = "FROM base\nARG WAIT=6\nRUN echo started && head -c 1500000000 /dev/urandom > /big; \
              sleep $WAIT; rm -f /big\n";
    sigkill_build(df, &[], "started", false);
}

/// Interrupts a build with `sig` sent to `to_group` or the top process,
/// once `ready` shows; checks the one line, the exit code, and that
/// nothing is left: processes, mounts, temp files, a tag.
fn interrupt_build(sig: i32, to_group: bool, dockerfile: &str, extra: &[&str], ready: &str) {
    let sb = Sandbox::new();
    prepare(&sb);
    sb.dockerfile(dockerfile);
    let ctx = sb.ctx();
    let mut args = vec!["build", "-t", "victim"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let mut child = start(&sb, &args, "build");
    wait_for_output(&sb, &mut child, "build", ready);
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id() as i32;
    let before = tree(child.id());
    let started = Instant::now();
    signal(if to_group { -pid } else { pid }, sig);
    let code = wait_code(&mut child);
    let took = started.elapsed();
    let err = fs::read_to_string(sb.path("build.err")).unwrap();
    let out = fs::read_to_string(sb.path("build.out")).unwrap();
    assert_eq!(code, 128 + sig, "exit code after signal {sig}:\n{out}\n{err}");
    // What was stopped (the running RUN, with its step number), then what the store holds.
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 2, "stderr:\n{err}");
    // The interrupted RUN is the Dockerfile's last instruction.
    let steps = dockerfile.trim_end().lines().count();
    let run = dockerfile.trim_end().lines().last().unwrap();
    let stopped = format!("interrupted: STEP {steps}/{steps}: {run} (after ");
    assert!(lines[0].starts_with(&stopped) && lines[0].ends_with("s)"), "expected {stopped:?}…, stderr:\n{err}");
    assert_eq!(lines[1], "interrupted: nothing was tagged; the store is intact", "stderr:\n{err}");
    assert!(took < Duration::from_secs(20), "kiln took {took:?} to stop");
    assert_all_gone(&sb, &before, "after the interrupt");
    assert!(leftovers(&sb).is_empty(), "temp files left: {:?}", leftovers(&sb));
    let images = sb.kiln(&["images"]);
    assert!(!images.stdout.contains("victim"), "{}", images.transcript());
    let check = sb.kiln(&["system", "check"]);
    check.ok();
    assert!(check.stdout.contains("store is consistent"), "{}", check.transcript());
}

#[test]
fn ctrl_c_unwinds_prints_one_line_and_cleans_up() {
    // A terminal's Ctrl-C reaches the whole foreground process group.
    interrupt_build(SIGINT, true, SLEEPY.replace("WAIT=6", "WAIT=30").as_str(), &[], "started");
}

#[test]
fn sigterm_unwinds_prints_one_line_and_cleans_up_with_fuse_overlayfs() {
    let probe = Sandbox::new();
    require_fuse(&probe);
    let df = SLEEPY.replace("WAIT=6", "WAIT=30");
    interrupt_build(SIGTERM, false, &df, &["--storage-driver", "fuse-overlayfs"], "started");
}

#[test]
fn ctrl_c_during_a_big_commit_leaves_no_partial_blob() {
    // The RUN ends at once; its 300 MB of random data then take seconds to
    // compress into the store, and the interrupt lands there.
    let df = "FROM base\nRUN head -c 300000000 /dev/urandom > /big && echo written\n";
    interrupt_build(SIGINT, true, df, &[], "written");
}

#[test]
fn kiln_run_killed_leaves_nothing() {
    let fuse = ["--storage-driver", "fuse-overlayfs"];
    for (sig, group, driver) in [
        (SIGKILL, false, &[][..]),
        (SIGKILL, true, &[][..]),
        (SIGTERM, false, &[][..]),
        (SIGKILL, false, &fuse[..]),
        (SIGTERM, false, &fuse[..]),
    ] {
        let sb = Sandbox::new();
        if !driver.is_empty() {
            require_fuse(&sb);
        }
        prepare(&sb);
        // The command is PID 1 of its container, which ignores SIGTERM
        // unless it handles it (as under docker): this one does.
        let script = "trap 'exit 143' TERM; echo started; sleep 30 & wait";
        let mut args = vec!["run"];
        args.extend_from_slice(driver);
        args.extend_from_slice(&["base", "sh", "-c", script]);
        let mut child = start(&sb, &args, "run");
        wait_for_output(&sb, &mut child, "run", "started");
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id() as i32;
        let before = tree(child.id());
        assert!(before.len() >= 3, "expected kiln, its engine and the command running: {before:?}");
        signal(if group { -pid } else { pid }, sig);
        let code = wait_code(&mut child);
        assert_eq!(code, 128 + sig, "signal {sig} (group: {group}, {driver:?})");
        assert_all_gone(&sb, &before, &format!("kiln run after signal {sig} (group: {group}, {driver:?})"));
        if sig != SIGKILL {
            assert!(leftovers(&sb).is_empty(), "temp files left: {:?}", leftovers(&sb));
        }
    }
}
