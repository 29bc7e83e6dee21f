//! Running one RUN step: the engine spawns a fresh kiln in a hidden helper
//! mode with the serialized spec on its stdin. The single-threaded helper
//! unshares mount/PID/UTS/IPC (and net), forks once so the command is PID 1,
//! mounts, pivot_roots, sets ids and execs; it returns the command's status.

mod command;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::SigSet;
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, ForkResult};

use crate::fake_chown;
use crate::mounts;
use crate::network;
use crate::spec::{Network, RunSpec};
use crate::sys;
use crate::userns::exit_code;
use crate::RuntimeError;
use command::command_main;
pub use command::find_executable;

/// The hidden argv[1] that selects the step helper.
pub const RUN_HELPER_ARG: &str = "__kiln-run-helper";
/// The descriptor on which the helper reports a setup failure (text); EOF
/// without text means the command was exec'd.
const REPORT_FD: i32 = 3;
/// The descriptor the helper reads its JSON spec from (stdin stays the
/// command's).
const SPEC_FD: i32 = 4;
/// With a terminal: a unix socket on which the command's side sends the
/// pseudo-terminal master it made inside the container.
const CONSOLE_FD: i32 = 5;
/// With a private network: a unix socket on which the helper says its
/// network namespace exists (`N`) and waits until the forwarder set it up (`G`).
const NET_FD: i32 = 6;
/// Exit code of a helper whose setup failed (docker uses 125 likewise).
const SETUP_FAILED: i32 = 125;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where the command's output goes.
pub enum Output<'a> {
    /// The step writes straight to kiln's stdout and stderr.
    Inherit,
    /// Each line (without its newline) is handed to the callback, e.g. to
    /// prefix it with the step.
    Lines(&'a mut dyn FnMut(Stream, &str)),
}

/// Runs the step with `/proc/self/exe` as the helper (the kiln binary, whose
/// `main` calls `dispatch_helper` first). Returns the command's exit code
/// (128 + n when killed by signal n). Mount points the image lacked are
/// created for the run and removed before returning.
pub fn run(spec: &RunSpec, output: Output<'_>) -> Result<i32, RuntimeError> {
    run_with_helper(Path::new("/proc/self/exe"), spec, output)
}

/// `run` with an explicit helper executable.
pub fn run_with_helper(helper: &Path, spec: &RunSpec, output: Output<'_>) -> Result<i32, RuntimeError> {
    let net = network::PrivateNet::prepare(spec)?;
    let spec = net.as_ref().map_or_else(|| std::borrow::Cow::Borrowed(spec), |n| std::borrow::Cow::Owned(n.spec(spec)));
    let created = mounts::prepare(&spec).map_err(|(path, source)| RuntimeError::Prepare { path, source })?;
    let result = run_prepared(helper, &spec, output, net.as_ref());
    mounts::cleanup(&spec, &created);
    result
}

fn run_prepared(
    helper: &Path,
    spec: &RunSpec,
    output: Output<'_>,
    net: Option<&network::PrivateNet>,
) -> Result<i32, RuntimeError> {
    let piped = matches!(output, Output::Lines(_));
    let mut spawned = spawn_helper(helper, spec, Stdio::null(), piped, None, net)?;
    let result = (|| {
        let report = spawned.read_report()?;
        if let Output::Lines(callback) = output {
            pump_lines(spawned.child.stdout.take(), spawned.child.stderr.take(), callback);
        }
        let status = spawned.child.wait().map_err(RuntimeError::Wait)?;
        check_report(report, status)?;
        Ok(exit_code(status))
    })();
    spawned.finish(result.is_err());
    result
}

/// A helper process that was given its spec.
pub(crate) struct Spawned {
    pub child: std::process::Child,
    report: Option<std::os::fd::OwnedFd>,
    /// The private network's forwarder, stopped after the helper.
    network: Option<network::Running>,
}

/// Starts the helper with the spec on `SPEC_FD`, the report pipe on
/// `REPORT_FD` and, for a terminal, the console socket on `CONSOLE_FD`.
pub(crate) fn spawn_helper(
    helper: &Path,
    spec: &RunSpec,
    stdin: Stdio,
    piped: bool,
    console: Option<std::os::fd::OwnedFd>,
    net: Option<&network::PrivateNet>,
) -> Result<Spawned, RuntimeError> {
    let json = serde_json::to_vec(spec).map_err(RuntimeError::Spec)?;
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::Pipe)?;
    let (spec_r, spec_w) = pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::Pipe)?;
    let mut cmd = Command::new(helper);
    cmd.arg(RUN_HELPER_ARG).stdin(stdin);
    if piped {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut fds = vec![(report_w, REPORT_FD), (spec_r, SPEC_FD)];
    if let Some(console) = console {
        fds.push((console, CONSOLE_FD));
    }
    let net_sock = match net {
        Some(_) => {
            let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .map_err(RuntimeError::Pipe)?;
            fds.push((theirs, NET_FD));
            Some(ours)
        }
        None => None,
    };
    // The step dies with this process; the spawning thread waits for it.
    sys::die_with_parent(&mut cmd);
    sys::pass_fds(&mut cmd, fds);
    let spawned = cmd.spawn();
    drop(cmd);
    let child = spawned.map_err(|source| RuntimeError::Spawn { what: "for a RUN step", source })?;
    crate::lifetime::step_started(child.id());
    let mut spawned = Spawned { child, report: Some(report_r), network: None };
    // An interrupt that came while this step was being started found no
    // step to kill: stop it here (`kill_running_steps` sees it otherwise).
    if let Some(sig) = crate::lifetime::interrupted() {
        spawned.finish(true);
        return Err(RuntimeError::Spawn {
            what: "for a RUN step",
            source: crate::lifetime::Interrupted::Signal(sig).into_io(),
        });
    }
    // The spec is small; a helper that died early shows up as EPIPE here
    // and as its report below.
    if let Err(e) = File::from(spec_w).write_all(&json) {
        spawned.finish(true);
        return Err(RuntimeError::HelperIo(e));
    }
    if let (Some(net), Some(sock)) = (net, net_sock) {
        let mut sock = File::from(sock);
        let mut byte = [0u8; 1];
        // EOF instead: the helper failed before, and its report says why.
        if matches!(sock.read(&mut byte), Ok(1)) {
            match net.start(spawned.child.id(), &spec.ports) {
                Ok(running) => spawned.network = Some(running),
                Err(e) => {
                    spawned.finish(true);
                    return Err(e.into());
                }
            }
            if let Err(e) = sock.write_all(b"G") {
                spawned.finish(true);
                return Err(RuntimeError::HelperIo(e));
            }
        }
    }
    Ok(spawned)
}

impl Spawned {
    /// Waits until the command was exec'd (EOF, empty report) or the setup
    /// failed (the report says why).
    pub fn read_report(&mut self) -> Result<String, RuntimeError> {
        let mut report = String::new();
        if let Some(fd) = self.report.take() {
            File::from(fd).read_to_string(&mut report).map_err(RuntimeError::HelperIo)?;
        }
        Ok(report)
    }

    /// Kills the helper if asked (after an error), reaps it and forgets it.
    pub fn finish(&mut self, kill: bool) {
        if kill {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        crate::lifetime::step_ended(self.child.id());
        // The forwarder goes with the step: killed, reaped, its files removed.
        drop(self.network.take());
    }
}

/// A failed setup's report as an error: exec failures keep the command's
/// exit code (127 not found, 126 not executable), as docker and podman.
pub(crate) fn check_report(report: String, status: std::process::ExitStatus) -> Result<(), RuntimeError> {
    if report.is_empty() {
        return Ok(());
    }
    let message = report.trim_end().to_string();
    match exit_code(status) {
        code @ (126 | 127) => Err(RuntimeError::Exec { code, message }),
        _ => Err(RuntimeError::Setup { message }),
    }
}

/// Hands every line of both streams to `callback` on this thread, as they come.
fn pump_lines(
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    callback: &mut dyn FnMut(Stream, &str),
) {
    let (tx, rx) = std::sync::mpsc::channel::<(Stream, String)>();
    let mut readers = Vec::new();
    let streams: [(Stream, Option<Box<dyn Read + Send>>); 2] = [
        (Stream::Stdout, stdout.map(|s| Box::new(s) as Box<dyn Read + Send>)),
        (Stream::Stderr, stderr.map(|s| Box::new(s) as Box<dyn Read + Send>)),
    ];
    for (which, reader) in streams {
        let Some(reader) = reader else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                if tx.send((which, text.to_string())).is_err() {
                    break;
                }
                line.clear();
            }
        }));
    }
    drop(tx);
    for (which, line) in rx {
        callback(which, &line);
    }
    for reader in readers {
        let _ = reader.join();
    }
}

/// The helper process's body (argv[1] == RUN_HELPER_ARG).
pub(crate) fn helper_main() -> i32 {
    let mut report = sys::inherited_fd(REPORT_FD).map(File::from);
    match helper(&mut report) {
        Ok(code) => code,
        Err(message) => {
            send_report(&mut report, &message);
            SETUP_FAILED
        }
    }
}

fn send_report(report: &mut Option<File>, message: &str) {
    match report {
        Some(f) => {
            let _ = f.write_all(message.as_bytes());
        }
        None => eprintln!("kiln: {message}"),
    }
}

fn helper(report: &mut Option<File>) -> Result<i32, String> {
    let mut json = Vec::new();
    let spec_fd = sys::inherited_fd(SPEC_FD).ok_or("the run spec descriptor is missing")?;
    File::from(spec_fd).read_to_end(&mut json).map_err(|e| format!("read the run spec: {e}"))?;
    let spec: RunSpec = serde_json::from_slice(&json).map_err(|e| format!("parse the run spec: {e}"))?;
    let mut console = match spec.tty {
        Some(_) => Some(File::from(sys::inherited_fd(CONSOLE_FD).ok_or("the console socket is missing")?)),
        None => None,
    };
    // If kiln dies, the helper dies, and with it the command (below).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("set the parent-death signal: {e}"))?;
    let mut flags =
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network.isolated() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare mount, PID, UTS, IPC namespaces: {e}"))?;
    if spec.network.isolated() {
        sys::loopback_up().map_err(|e| format!("bring up lo: {e}"))?;
    }
    if spec.network == Network::Private {
        // kiln starts the forwarder for this namespace now; go on once it
        // configured the network (a failure ends this process instead).
        let mut sock = File::from(sys::inherited_fd(NET_FD).ok_or("the network socket is missing")?);
        sock.write_all(b"N").map_err(|e| format!("ask for the private network: {e}"))?;
        let mut byte = [0u8; 1];
        match sock.read(&mut byte) {
            Ok(1) => {}
            _ => return Err("the private network could not be set up".to_string()),
        }
    }
    // Blocked before the fork so none is lost; the command unblocks them.
    let signals = helper_signals();
    signals.thread_block().map_err(|e| format!("block signals: {e}"))?;
    let chown = if spec.fake_chown && fake_chown::supported() {
        let supervisor = fake_chown::Supervisor::new()
            .map_err(|e| format!("prepare to record chown to unmapped ids: read /proc: {e}"))?;
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|e| format!("create a socket pair for the chown supervisor: {e}"))?;
        Some((supervisor, ours, theirs))
    } else {
        None
    };
    match sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => match command_main(&spec, console.take(), chown.map(|(_, _, theirs)| theirs)) {
            Ok(never) => match never {},
            Err((code, message)) => {
                send_report(report, &message);
                std::process::exit(code);
            }
        },
        ForkResult::Parent { child } => {
            // Only the command's side may hold the report pipe now, so its
            // exec shows up as EOF.
            // A process that unshared its PID namespace cannot start
            // threads, so the supervisor runs here until PID 1 exits.
            let supervise = match chown {
                Some((supervisor, ours, theirs)) => {
                    // Only PID 1 may hold its end: its exit or exec then ends
                    // the supervisor's wait for the listener.
                    drop(theirs);
                    match sys::pidfd_open(child) {
                        Ok(pidfd) => Some((supervisor, ours, pidfd)),
                        Err(e) => {
                            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                            let _ = waitpid(child, None);
                            return Err(format!("watch the command's process: {e}"));
                        }
                    }
                }
                None => None,
            };
            drop(report.take());
            drop(console.take());
            if let Some((supervisor, sock, pidfd)) = supervise {
                // Until PID 1 exits; kiln's signals wait (blocked) meanwhile,
                // and a killed kiln still ends the step (parent-death signal).
                supervisor.serve(sock, child, &pidfd);
            }
            wait_forwarding(child, &signals)
        }
    }
}

/// What the helper forwards to the command, plus SIGCHLD to notice its end.
fn helper_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGCHLD] {
        set.add(sig);
    }
    set
}

/// Waits for the command, passing on the signals kiln sends. Signals the
/// kernel generated (a terminal's Ctrl-C reaches the whole process group)
/// are not passed on: kiln got the same one and decides.
fn wait_forwarding(child: nix::unistd::Pid, signals: &SigSet) -> Result<i32, String> {
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("wait for the command: {e}")),
        }
        let Ok(sfd) = &sfd else {
            // No signalfd: just wait.
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("wait for the command: {e}")),
            }
        };
        if let Ok(Some(info)) = sfd.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo != libc::SIGCHLD && info.ssi_pid != 0 {
                if let Ok(sig) = Signal::try_from(signo) {
                    let _ = nix::sys::signal::kill(child, sig);
                }
            }
        }
    }
}
