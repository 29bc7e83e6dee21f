//! Descriptors kiln never meant to pass on.
//!
//! A caller may start kiln with descriptors open beyond 0–2 (`exec 8<dir`
//! in a shell, a leaky parent). A RUN step must not see them: through
//! `/proc/self/fd/8` it would reach the host directory and every file below
//! it. kiln keeps them for its own use, since a path such as `/dev/fd/8`
//! (bash's `<(…)`) on its command line must still open, but marks them
//! close-on-exec the moment it starts ([`hide_inherited`]), so no program
//! it runs inherits them; the front-end hands them on explicitly to the
//! engine it re-executes in the user namespace, and nowhere else. A step's
//! command then execs with nothing open but 0–2 ([`cloexec_from`]), whatever
//! else the helper held.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::sys;

/// The descriptors this process inherited open across exec, by number.
static INHERITED: OnceLock<Vec<RawFd>> = OnceLock::new();

/// Marks every descriptor from `first` up close-on-exec: one close_range
/// call, or on kernels before 5.11 one fcntl per descriptor that /proc
/// lists (or, without /proc, per number below the open-files limit).
///
/// Closing them outright would break what still needs them until exec:
/// the pipe whose EOF tells kiln the command was exec'd.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    match sys::close_range_cloexec(first) {
        Ok(()) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {}
        Err(e) => return Err(e),
    }
    match open_fds() {
        Some(fds) => {
            for fd in fds.into_iter().filter(|fd| *fd >= first) {
                set_cloexec(fd, true)?;
            }
        }
        None => {
            // Linux's default ceiling (fs.nr_open) bounds an unlimited limit.
            let limit = RawFd::try_from(sys::open_files_limit()?.min(1 << 20)).unwrap_or(1 << 20);
            for fd in first..limit {
                match set_cloexec(fd, true) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// The open descriptors as /proc/self/fd lists them; `None` without /proc.
fn open_fds() -> Option<Vec<RawFd>> {
    let listed: Vec<RawFd> =
        std::fs::read_dir("/proc/self/fd").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    // The listing's own directory descriptor is closed by now.
    Some(listed.into_iter().filter(|fd| fcntl(*fd, FcntlArg::F_GETFD).is_ok()).collect())
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).map_err(io::Error::from)?);
    let wanted = if on { flags | FdFlag::FD_CLOEXEC } else { flags - FdFlag::FD_CLOEXEC };
    if wanted != flags {
        fcntl(fd, FcntlArg::F_SETFD(wanted)).map_err(io::Error::from)?;
    }
    Ok(())
}

/// At start-up (from `dispatch_helper`, before any thread): notes which
/// descriptors from 3 up this process inherited open across exec and marks
/// them close-on-exec. Descriptors kiln handed itself (the namespace sync
/// pipes) were taken over and marked before this runs.
pub(crate) fn hide_inherited() {
    let inherited = match open_fds() {
        Some(fds) => fds
            .into_iter()
            .filter(|fd| *fd > 2)
            .filter(|fd| {
                fcntl(*fd, FcntlArg::F_GETFD).is_ok_and(|f| !FdFlag::from_bits_truncate(f).contains(FdFlag::FD_CLOEXEC))
            })
            .collect(),
        None => Vec::new(),
    };
    for fd in &inherited {
        let _ = set_cloexec(*fd, true);
    }
    // Without /proc nothing was listed: still none may leak.
    let _ = cloexec_from(3);
    let _ = INHERITED.set(inherited);
}

/// The descriptors (3 and up) this process inherited, now close-on-exec.
pub fn inherited() -> &'static [RawFd] {
    INHERITED.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Lets the inherited descriptors through exec again, for a program that
/// is the user's own (`kiln unshare`'s shell), as any shell would pass them.
pub fn restore_inherited() {
    for fd in inherited() {
        let _ = set_cloexec(*fd, false);
    }
}

/// Copies of the inherited descriptors, each paired with its own number,
/// for `sys::pass_fds`: the engine that kiln re-executes in the user
/// namespace gets them at the same numbers (a `/dev/fd/N` argument names
/// the same file there). Numbers in `taken` are kiln's own in that child.
pub(crate) fn inherited_for_child(taken: &[RawFd]) -> Vec<(OwnedFd, RawFd)> {
    inherited()
        .iter()
        .filter(|fd| !taken.contains(fd))
        .filter_map(|fd| match sys::dup_cloexec(*fd) {
            Ok(copy) => Some((copy, *fd)),
            // Closed meanwhile: nothing to pass.
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => None,
            Err(e) => {
                log::debug!("cannot pass inherited descriptor {fd} on: {e}");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// `cloexec_from` touches every descriptor of the test process.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn is_cloexec(fd: RawFd) -> bool {
        FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap()).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn cloexec_from_marks_every_descriptor_from_first_up() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = std::fs::File::open("/").unwrap();
        let b = std::fs::File::open("/").unwrap();
        set_cloexec(a.as_raw_fd(), false).unwrap();
        set_cloexec(b.as_raw_fd(), false).unwrap();
        let (low, high) = if a.as_raw_fd() < b.as_raw_fd() { (a, b) } else { (b, a) };
        cloexec_from(high.as_raw_fd()).unwrap();
        assert!(is_cloexec(high.as_raw_fd()));
        assert!(!is_cloexec(low.as_raw_fd()), "descriptors below `first` keep their flag");
        // Still open: marked, not closed.
        assert!(fcntl(high.as_raw_fd(), FcntlArg::F_GETFD).is_ok());
    }

    /// Only what this test holds is checked: other tests in this binary
    /// open and close descriptors on their own threads meanwhile, so "every
    /// listed descriptor is still open" cannot be asserted here.
    #[test]
    fn open_fds_lists_an_open_descriptor_and_not_a_closed_one() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let f = std::fs::File::open("/").unwrap();
        // A number far above anything the tests open is never in use.
        let closed: RawFd = 900_000;
        assert!(fcntl(closed, FcntlArg::F_GETFD).is_err());
        let fds = open_fds().expect("/proc is mounted");
        assert!(fds.contains(&f.as_raw_fd()));
        assert!(!fds.contains(&closed));
    }

    #[test]
    fn set_cloexec_both_ways() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let f = std::fs::File::open("/").unwrap();
        set_cloexec(f.as_raw_fd(), false).unwrap();
        assert!(!is_cloexec(f.as_raw_fd()));
        set_cloexec(f.as_raw_fd(), true).unwrap();
        assert!(is_cloexec(f.as_raw_fd()));
    }
}
