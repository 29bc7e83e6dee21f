//! Running a command attached to kiln's own terminal (`kiln run`): stdio
//! inherited (stdin only with `RunSpec::stdin`), or a pseudo-terminal made
//! in the container whose master kiln relays, with the host terminal in raw
//! mode and window-size changes passed on. SIGINT, SIGTERM and SIGHUP go to
//! the command, which is killed when it has not ended 10 s later (or at a
//! second one), as `docker stop` does; its exit code comes back.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::unistd::Pid;

use crate::child::{check_report, spawn_helper, Spawned};
use crate::spec::{RunSpec, TtySize};
use crate::userns::exit_code;
use crate::{mounts, sys, RuntimeError};

/// Bytes of terminal input kept while the command does not read them.
const MAX_PENDING: usize = 64 * 1024;

/// Runs `spec` attached to this process's stdio (see the module doc) with
/// `/proc/self/exe` as the helper. Returns the command's exit code (128 + n
/// when killed by signal n).
///
/// The calling process must be single-threaded, or have SIGINT, SIGTERM,
/// SIGHUP, SIGWINCH and SIGCHLD blocked in every other thread: they are
/// read from a signalfd while the command runs.
pub fn run_attached(spec: &RunSpec) -> Result<i32, RuntimeError> {
    run_attached_with_helper(Path::new("/proc/self/exe"), spec)
}

/// `run_attached` with an explicit helper executable.
pub fn run_attached_with_helper(helper: &Path, spec: &RunSpec) -> Result<i32, RuntimeError> {
    let net = crate::network::PrivateNet::prepare(spec)?;
    let spec = net.as_ref().map_or_else(|| std::borrow::Cow::Borrowed(spec), |n| std::borrow::Cow::Owned(n.spec(spec)));
    let created = mounts::prepare(&spec).map_err(|(path, source)| RuntimeError::Prepare { path, source })?;
    let result = attached(helper, &spec, net.as_ref());
    mounts::cleanup(&spec, &created);
    result
}

/// The size of the terminal on kiln's stdin (else stdout), for `RunSpec::tty`.
pub fn terminal_size() -> Option<TtySize> {
    [std::io::stdin().as_fd(), std::io::stdout().as_fd()]
        .iter()
        .find_map(|fd| sys::window_size(fd).ok())
        .map(|(rows, cols)| TtySize { rows, cols })
}

/// Whether kiln's stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    nix::unistd::isatty(std::io::stdin().as_raw_fd()).unwrap_or(false)
}

fn attached(helper: &Path, spec: &RunSpec, net: Option<&crate::network::PrivateNet>) -> Result<i32, RuntimeError> {
    let mut signals = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGWINCH, Signal::SIGCHLD] {
        signals.add(sig);
    }
    let _mask = MaskGuard::block(&signals)?;
    let sfd =
        SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(RuntimeError::Relay)?;
    let (console, console_child) = match spec.tty {
        Some(_) => {
            let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .map_err(RuntimeError::Console)?;
            (Some(a), Some(b))
        }
        None => (None, None),
    };
    let stdin = if spec.stdin && spec.tty.is_none() { Stdio::inherit() } else { Stdio::null() };
    let mut spawned = spawn_helper(helper, spec, stdin, false, console_child, net)?;
    let result = attached_spawned(&mut spawned, spec, &sfd, console);
    spawned.finish(result.is_err());
    result
}

fn attached_spawned(
    spawned: &mut Spawned,
    spec: &RunSpec,
    sfd: &SignalFd,
    console: Option<OwnedFd>,
) -> Result<i32, RuntimeError> {
    let report = spawned.read_report()?;
    if !report.is_empty() {
        let status = spawned.child.wait().map_err(RuntimeError::Wait)?;
        check_report(report, status)?;
    }
    let master = match console {
        Some(console) => Some(receive_master(&console)?),
        None => None,
    };
    let status = match master {
        Some(master) => {
            // Raw mode only when kiln's input goes to the command: with -t
            // alone, Ctrl-C stays a signal that kiln forwards.
            let _raw = if spec.stdin { RawMode::enter() } else { None };
            relay(&mut spawned.child, sfd, File::from(master), spec.stdin)?
        }
        None => wait(&mut spawned.child, sfd)?,
    };
    Ok(exit_code(status))
}

fn receive_master(console: &OwnedFd) -> Result<OwnedFd, RuntimeError> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    // The command's side sent it before exec, and exec already happened.
    let msg = recvmsg::<()>(
        console.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(RuntimeError::Console)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(RuntimeError::Console)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received.into_iter().map(sys::received_fd));
        }
    }
    fds.into_iter().next().ok_or(RuntimeError::Console(Errno::EBADMSG))
}

/// How long the command has to end after kiln passed on SIGINT, SIGTERM
/// or SIGHUP before it is killed (`docker stop`'s default): a PID 1 that
/// installed no handler ignores them, and kiln must still stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// When to kill the command: set by the first stop signal passed on.
#[derive(Default)]
struct Stop {
    deadline: Option<Instant>,
}

impl Stop {
    /// After a stop signal was passed on: the first starts the grace period,
    /// a second one kills at once.
    fn requested(&mut self, child: &Child) {
        match self.deadline {
            None => self.deadline = Some(Instant::now() + STOP_GRACE),
            Some(_) => kill_now(child),
        }
    }

    /// The poll timeout until the deadline.
    fn timeout(&self) -> PollTimeout {
        match self.deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as u16;
                PollTimeout::from(ms)
            }
        }
    }

    /// Kills the command once the grace period is over.
    fn enforce(&self, child: &Child) {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            kill_now(child);
        }
    }
}

/// SIGKILL to the helper: its PID 1 follows (parent-death signal), and with
/// it the whole PID namespace.
fn kill_now(child: &Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
}

/// Waits for the helper, forwarding signals.
fn wait(child: &mut Child, sfd: &SignalFd) -> Result<ExitStatus, RuntimeError> {
    let mut stop = Stop::default();
    loop {
        if let Some(status) = child.try_wait().map_err(RuntimeError::Wait)? {
            return Ok(status);
        }
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, stop.timeout()) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::Relay(e)),
        }
        handle_signals(child, sfd, None, &mut stop);
        stop.enforce(child);
    }
}

/// Copies the master's output to stdout and (with `input`) stdin to the
/// master until the helper exits; then drains what the command left.
fn relay(child: &mut Child, sfd: &SignalFd, mut master: File, input: bool) -> Result<ExitStatus, RuntimeError> {
    set_nonblocking(master.as_fd()).map_err(RuntimeError::Relay)?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut master_open = true;
    let mut stdin_open = input;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stop = Stop::default();
    loop {
        if let Some(status) = child.try_wait().map_err(RuntimeError::Wait)? {
            if master_open {
                drain(&mut master, &mut stdout, &mut buf);
            }
            return Ok(status);
        }
        let mut master_flags = PollFlags::empty();
        if master_open {
            master_flags |= PollFlags::POLLIN;
            if !pending.is_empty() {
                master_flags |= PollFlags::POLLOUT;
            }
        }
        let want_stdin = stdin_open && pending.len() < MAX_PENDING;
        let (sig_ev, master_ev, stdin_ev) = {
            // Only the descriptors of interest: a hung-up one would make
            // poll return at once, forever.
            let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            if master_open {
                fds.push(PollFd::new(master.as_fd(), master_flags));
            }
            if want_stdin {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, stop.timeout()) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(RuntimeError::Relay(e)),
            }
            let ev = |i: usize| fds.get(i).and_then(|f| f.revents()).unwrap_or(PollFlags::empty());
            let stdin_index = if master_open { 2 } else { 1 };
            (
                ev(0),
                if master_open { ev(1) } else { PollFlags::empty() },
                if want_stdin { ev(stdin_index) } else { PollFlags::empty() },
            )
        };
        if !sig_ev.is_empty() {
            handle_signals(child, sfd, Some(&master), &mut stop);
        }
        stop.enforce(child);
        if master_open && master_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            master_open = copy_out(&mut master, &mut stdout, &mut buf);
        }
        if master_open && master_ev.contains(PollFlags::POLLOUT) && !pending.is_empty() {
            match master.write(&pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {
                }
                Err(_) => master_open = false,
            }
        }
        if want_stdin && stdin_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // End of input reads as end-of-file at the terminal (^D).
                    pending.push(0x04);
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        if !master_open {
            pending.clear();
        }
    }
}

/// Copies what the master has now; false once the terminal is gone (EIO
/// after the last slave descriptor closed).
fn copy_out(master: &mut File, out: &mut impl Write, buf: &mut [u8]) -> bool {
    loop {
        match master.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

fn drain(master: &mut File, out: &mut impl Write, buf: &mut [u8]) {
    let _ = copy_out(master, out, buf);
}

/// Handles every queued signal: window changes go to the terminal, the
/// rest to the helper (which passes them to the command). A signal the
/// kernel generated while kiln's own parent forwards signals is that
/// parent's business: it will forward the same one.
fn handle_signals(child: &Child, sfd: &SignalFd, master: Option<&File>, stop: &mut Stop) {
    while let Ok(Some(info)) = sfd.read_signal() {
        let signo = info.ssi_signo as i32;
        match Signal::try_from(signo) {
            Ok(Signal::SIGCHLD) => {}
            Ok(Signal::SIGWINCH) => {
                if let (Some(master), Some(size)) = (master, terminal_size()) {
                    let _ = sys::set_window_size(master, size.rows, size.cols);
                }
            }
            Ok(sig) => {
                if info.ssi_pid == 0 && crate::lifetime::forwarded_by_parent() {
                    continue;
                }
                let _ = kill(Pid::from_raw(child.id() as i32), sig);
                stop.requested(child);
            }
            Err(_) => {}
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

/// Blocks signals in this thread until dropped.
struct MaskGuard {
    old: SigSet,
}

impl MaskGuard {
    fn block(set: &SigSet) -> Result<MaskGuard, RuntimeError> {
        let old = set.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK).map_err(RuntimeError::Relay)?;
        Ok(MaskGuard { old })
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = self.old.thread_set_mask();
    }
}

/// The host terminal in raw mode (keys go to the container's terminal
/// unchanged) until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}
