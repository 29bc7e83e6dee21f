//! How long a kiln process may go on: the one home of "is this work still
//! wanted?".
//!
//! The engine in the user namespace is a child of the kiln the user started
//! (the front-end). It dies with it: the parent-death signal is set between
//! fork and exec (`sys::die_with_parent`) and again first thing in
//! the child, which then checks that its parent is still the front-end (the
//! front-end may have died before the first `prctl`). A signal can still be
//! on its way while the engine writes, so every store change that makes
//! work visible (a tag, an `index.json` write) first asks [`still_wanted`]:
//! false once the front-end is gone or an interrupt arrived.
//!
//! Interrupts (SIGINT, SIGTERM, SIGHUP) are turned into a flag by
//! [`handle_interrupts`]: running RUN steps are killed and the engine unwinds
//! at its next check (step boundaries, blob writes), removing its temp files
//! and mounts on the way out. A second interrupt stops at once.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use crate::sys;

/// The process this one must not outlive, when it has one.
struct Parent {
    pid: Pid,
    /// Readable once the parent has exited (pidfd_open, Linux 5.3); without
    /// it, `getppid` changing says the same.
    pidfd: Option<OwnedFd>,
}

static PARENT: OnceLock<Parent> = OnceLock::new();
/// The first interrupting signal's number, 0 while none arrived.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// Why the work is no longer wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Interrupted {
    #[error("interrupted by {}", signal_name(*.0))]
    Signal(i32),
    #[error("the kiln process that started this one is gone")]
    ParentGone,
}

impl Interrupted {
    /// The exit code for it: 128 + the signal (SIGKILL's for a gone parent).
    pub fn exit_code(self) -> i32 {
        match self {
            Interrupted::Signal(sig) => 128 + sig,
            Interrupted::ParentGone => 128 + libc::SIGKILL,
        }
    }

    /// As an I/O error, for loops that only speak `io::Result`. Its kind is
    /// not `Interrupted`, which `write_all` and `io::copy` would retry.
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}

/// Ties this process to `parent`: sets the parent-death signal to SIGKILL
/// and checks that `parent` is still the parent (it may have died before
/// the signal was set). Call it single-threaded, first thing in a helper mode.
pub(crate) fn bind_to_parent(parent: Pid) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("set the parent-death signal: {e}"))?;
    if nix::unistd::getppid() != parent {
        return Err(format!("the kiln process {parent} that started this one is gone"));
    }
    let pidfd = sys::pidfd_open(parent).ok();
    let _ = PARENT.set(Parent { pid: parent, pidfd });
    Ok(())
}

/// The pid of the process this one must not outlive, if any.
pub fn parent() -> Option<Pid> {
    PARENT.get().map(|p| p.pid)
}

/// Whether the process this one belongs to (see [`bind_to_parent`]) still
/// runs; true when there is none.
pub fn parent_alive() -> bool {
    let Some(parent) = PARENT.get() else { return true };
    if let Some(pidfd) = &parent.pidfd {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(_) => {}
        }
    }
    nix::unistd::getppid() == parent.pid
}

/// The interrupting signal, once one arrived (see [`handle_interrupts`]).
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Whether to go on: no interrupt arrived and the front-end still runs.
pub fn still_wanted() -> bool {
    ensure_still_wanted().is_ok()
}

/// [`still_wanted`] as a result, for `?` at step boundaries and before every
/// change that makes work visible (a tag, an index write).
pub fn ensure_still_wanted() -> Result<(), Interrupted> {
    if let Some(sig) = interrupted() {
        return Err(Interrupted::Signal(sig));
    }
    if !parent_alive() {
        return Err(Interrupted::ParentGone);
    }
    Ok(())
}

/// The cheap check for long copy loops: only the interrupt flag (a dead
/// front-end kills this process with its parent-death signal anyway).
pub fn check_interrupted() -> io::Result<()> {
    match interrupted() {
        Some(sig) => Err(Interrupted::Signal(sig).into_io()),
        None => Ok(()),
    }
}

/// Whether `err` (or what it wraps) says the work was interrupted.
pub fn is_interruption(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<Interrupted>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<Interrupted>()) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// Turns SIGINT, SIGTERM and SIGHUP into the interrupt flag for the rest of
/// this process: the first one kills the running RUN steps and sets the
/// flag, so the work unwinds (and cleans up) at its next check; a second
/// one ends the process at once with 128 + the first signal.
///
/// Call it before any other thread exists: the signals are blocked in the
/// calling thread, and threads started later inherit that. Programs kiln
/// starts get an empty mask (std resets it).
pub fn handle_interrupts() -> io::Result<()> {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block().map_err(io::Error::from)?;
    let mut sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)?;
    std::thread::Builder::new().name("kiln-signals".into()).spawn(move || watch(&mut sfd))?;
    Ok(())
}

fn watch(sfd: &mut SignalFd) {
    // Interrupts that count toward "again": with a front-end, only those it
    // forwarded (a terminal's Ctrl-C reaches this process straight from the
    // kernel too, and a `kill` of the process group twice), so one Ctrl-C
    // counts once.
    static COUNTED: AtomicU32 = AtomicU32::new(0);
    loop {
        let info = match sfd.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        let sig = info.ssi_signo as i32;
        let front_end = parent().map(|p| p.as_raw() as u32);
        let from_kernel = info.ssi_pid == 0;
        let counted = match front_end {
            // The front-end forwards what it gets, the terminal's too. The
            // terminal's own copy still interrupts (it is not counted): a
            // forwarded signal that arrives while the terminal's is pending
            // merges into it and keeps the terminal's sender, so skipping
            // it would lose that Ctrl-C.
            Some(front_end) if forwarded_by_parent() => !from_kernel && info.ssi_pid == front_end,
            _ => true,
        };
        let first = INTERRUPTED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        kill_running_steps();
        if !counted {
            continue;
        }
        if COUNTED.fetch_add(1, Ordering::SeqCst) >= 1 && !first {
            eprintln!("interrupted again: stopping now; the store is intact, the next build removes temp files");
            std::process::exit(128 + interrupted().unwrap_or(sig));
        }
    }
}

/// The helper processes of the steps running now, by pid.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Notes a step's helper so that an interruption can stop it.
pub(crate) fn step_started(pid: u32) {
    if let Ok(mut running) = RUNNING.lock() {
        running.push(pid);
    }
}

/// Forgets a step's helper once it was waited for.
pub(crate) fn step_ended(pid: u32) {
    if let Ok(mut running) = RUNNING.lock() {
        running.retain(|p| *p != pid);
    }
}

/// Kills every running step (for Ctrl-C / SIGTERM handling): the helper dies,
/// its PID-1 child gets SIGKILL through the parent-death signal, and the
/// kernel kills the rest of the step's PID namespace.
pub fn kill_running_steps() {
    let pids = RUNNING.lock().map(|p| p.clone()).unwrap_or_default();
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Set when this process was started by `enter_user_namespace`, whose
/// front-end forwards SIGINT, SIGTERM and SIGHUP to it.
static FORWARDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that a kiln front-end started this process and forwards signals.
pub(crate) fn set_forwarded_by_parent() {
    FORWARDED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a kiln front-end started this process and forwards signals to
/// it (so a terminal's Ctrl-C, which reaches both, arrives twice).
pub fn forwarded_by_parent() -> bool {
    FORWARDED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Interrupted::Signal(libc::SIGINT).exit_code(), 130);
        assert_eq!(Interrupted::Signal(libc::SIGTERM).exit_code(), 143);
        assert_eq!(Interrupted::ParentGone.exit_code(), 137);
    }

    #[test]
    fn an_interruption_is_found_through_io_errors_and_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("write layer")]
        struct Outer(#[source] io::Error);
        let wrapped = Outer(Interrupted::Signal(libc::SIGINT).into_io());
        assert!(is_interruption(&wrapped));
        let plain = Outer(io::Error::other("disk full"));
        assert!(!is_interruption(&plain));
        // Loops that retry ErrorKind::Interrupted must not retry this one.
        assert_ne!(Interrupted::Signal(libc::SIGTERM).into_io().kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn without_a_parent_or_a_signal_the_work_is_wanted() {
        // Test processes are not bound to a front-end and install no handler.
        assert!(parent_alive());
        assert_eq!(interrupted(), None);
        assert!(still_wanted());
        assert!(check_interrupted().is_ok());
    }
}
