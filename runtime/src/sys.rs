//! The runtime crate's only `unsafe`: the few calls nix wraps as unsafe or
//! lacks. Each function states why its use is sound.
//!
//! Long because the rule is one home for all `unsafe` of the crate, so that
//! a reviewer finds every unsafe block and its SAFETY comment in one file.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::ForkResult;

/// Forks the calling process.
///
/// Callers must be single-threaded: kiln only forks inside its hidden helper
/// modes, which `dispatch_helper` enters before any thread exists.
pub fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: the helper process has exactly one thread (it is a fresh exec of
    // kiln that dispatched before starting any), so the child inherits no lock
    // held by another thread and may run arbitrary code.
    unsafe { nix::unistd::fork() }
}

/// Makes `fds` appear in the spawned child at the given descriptor numbers,
/// and starts the child with no signal blocked.
///
/// The descriptors are moved into the command, so they stay open until the
/// `Command` is dropped (drop it right after `spawn` to close the parent's
/// copies).
pub fn pass_fds(cmd: &mut Command, fds: Vec<(OwnedFd, RawFd)>) {
    let pairs: Vec<(RawFd, RawFd)> = fds.iter().map(|(fd, target)| (fd.as_raw_fd(), *target)).collect();
    // Keep the owners alive inside the closure: the raw numbers stay valid
    // for as long as the command lives.
    let owners = fds;
    let mut temps: Vec<RawFd> = vec![-1; pairs.len()];
    // SAFETY: the closure runs between fork and exec in the child and calls
    // only fcntl, dup2, sigemptyset and pthread_sigmask, which are
    // async-signal-safe; it allocates nothing (`temps` was sized before the
    // fork), and a zeroed sigset_t is valid storage for sigemptyset.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &owners;
            // First move every source above the targets, so one pair's
            // dup2 cannot overwrite another pair's source.
            for (i, &(src, _)) in pairs.iter().enumerate() {
                let temp = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100);
                if temp == -1 {
                    return Err(io::Error::last_os_error());
                }
                temps[i] = temp;
            }
            for (i, &(_, dst)) in pairs.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(temps[i], dst) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            // The parent blocks the signals it forwards; the child must
            // start with none blocked (std keeps the mask across spawn).
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the spawned child die (SIGKILL) when the thread spawning it exits,
/// and fail to start if this process is already gone by the time it runs.
///
/// The parent-death signal belongs to the spawning *thread*: spawn from a
/// thread that outlives the child (one that waits for it). It survives the
/// exec of kiln itself, which is neither set-id nor file-capable.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec in the child and calls
    // only prctl and getppid, which are async-signal-safe; it allocates
    // nothing (the error is built from a raw errno).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nothing would
            // ever send the signal.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Takes ownership of a descriptor number inherited from the parent.
///
/// Returns `None` when the number is not an open descriptor.
pub fn inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    // Mark it close-on-exec so the command we finally exec does not see it.
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    // SAFETY: the descriptor is open (F_GETFD succeeded) and was handed to
    // this process by its parent for this purpose alone; nothing else in the
    // process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` as if `root` were `/`: `..` and symlinks (absolute ones too)
/// cannot leave `root` (openat2 with `RESOLVE_IN_ROOT`, Linux 5.6).
pub fn open_in_root(root: &impl AsFd, path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    openat2_how(root, path, flags, mode, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` below `dir` with openat2 and the given `RESOLVE_*` flags;
/// `resolve` 0 resolves like openat.
pub fn openat2(dir: &impl AsFd, path: &Path, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    openat2_how(dir, path, flags, 0, resolve)
}

fn openat2_how(
    dir: &impl AsFd,
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain old data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 { mode as u64 } else { 0 };
    how.resolve = resolve;
    let mut attempts = 0;
    loop {
        attempts += 1;
        // SAFETY: the path is a valid NUL-terminated string, `how` is a fully
        // initialised open_how whose size we pass, and the return value is
        // checked before being wrapped.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_fd().as_raw_fd(),
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel just returned this new descriptor to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let err = io::Error::last_os_error();
        let retry = matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN));
        if !retry || attempts >= 16 {
            return Err(err);
        }
    }
}

/// Brings the loopback interface of the current network namespace up (a new
/// namespace starts with `lo` down), like docker's `--network=none`.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the result is checked and owned.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo" that outlives both calls;
    // SIOCGIFFLAGS/SIOCSIFFLAGS read and write only its flags member, and
    // the union access reads the member the kernel just filled in.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restores the default action for SIGPIPE, which the Rust runtime sets to
/// "ignore": `kiln images | head` should end kiln quietly, as it ends any
/// other command-line tool, instead of failing on every later write.
pub fn default_sigpipe() {
    // SAFETY: called once at the start of main, before any thread exists;
    // setting a signal's disposition to SIG_DFL installs no Rust handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Marks every descriptor from `first` up close-on-exec with one call
/// (close_range with `CLOSE_RANGE_CLOEXEC`, Linux 5.11); older kernels fail
/// with ENOSYS or EINVAL, and the caller falls back to one fcntl per descriptor.
pub fn close_range_cloexec(first: RawFd) -> io::Result<()> {
    let first = libc::c_uint::try_from(first).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: close_range takes no pointers. With CLOSE_RANGE_CLOEXEC it
    // closes nothing, it only sets a flag, so every descriptor this process
    // owns (OwnedFd, File) stays valid.
    let ret = unsafe {
        libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_uint)
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new close-on-exec descriptor (the lowest from 3 up) for the same open
/// file as the inherited descriptor number `fd`.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    let new = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(io::Error::from)?;
    // SAFETY: fcntl just created this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The soft limit on open descriptors (RLIMIT_NOFILE): no descriptor this
/// process opens from now on is numbered at or above it.
pub fn open_files_limit() -> io::Result<u64> {
    // SAFETY: rlimit is plain old data; all-zero is a valid value.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively
    // borrowed `limit` and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur as u64)
}

/// Sets the action of every signal to its default (SIG_DFL), undoing what
/// this process inherited or set: the Rust runtime ignores SIGPIPE, a
/// `nohup` caller ignores SIGHUP, and ignored signals survive exec. Only for
/// a process about to exec: Rust's own handlers (stack-overflow reporting)
/// are gone too.
///
/// It calls the kernel directly: glibc's sigaction refuses the two signals
/// it reserves for itself (32 and 33), and glibc's posix_spawn leaves them
/// ignored in the programs it starts (a Rust or Python parent's children),
/// so a command would otherwise inherit them ignored through kiln.
pub fn default_signal_actions() {
    // The kernel's struct sigaction (handler, flags, restorer, mask, in an
    // order that differs between architectures) is all zeros for SIG_DFL
    // with no flags and an empty mask, whatever the order: 64 zero bytes
    // cover it everywhere.
    let action = [0u64; 8];
    // The kernel's sigset_t: _NSIG / 8 bytes.
    #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
    const SIGSET_SIZE: usize = 16;
    #[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
    const SIGSET_SIZE: usize = 8;
    for sig in 1..=(SIGSET_SIZE * 8) as libc::c_int {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel sigaction from `action`,
        // which is larger than it and outlives the call, and writes nothing
        // (the old action pointer is null). SIG_DFL runs no code of ours in
        // a signal context, and this process is single-threaded and about to
        // exec, so no libc state depends on the handlers replaced.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                SIGSET_SIZE,
            );
        }
    }
}

/// Makes the terminal `fd` the controlling terminal of the calling process,
/// which must be a session leader without one (after `setsid`).
pub fn set_controlling_terminal(fd: &impl AsFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal the
    // terminal from another session); no memory is passed.
    let ret = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSCTTY, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The size of the terminal `fd` (rows, columns).
pub fn window_size(fd: &impl AsFd) -> io::Result<(u16, u16)> {
    // SAFETY: winsize is plain old data; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid, exclusively
    // borrowed `ws` and nothing else.
    let ret = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// Sets the size of the terminal `fd` (its foreground process group gets SIGWINCH).
pub fn set_window_size(fd: &impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ only reads one winsize from the valid `ws`.
    let ret = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of a descriptor that arrived in an SCM_RIGHTS message.
pub fn received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed this descriptor in our table when the
    // message was received; nothing else in the process knows its number.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Installs a seccomp filter on the calling thread and returns its user
/// notification listener (`SECCOMP_FILTER_FLAG_NEW_LISTENER`, Linux 5.0).
///
/// Without CAP_SYS_ADMIN in the current user namespace the kernel demands
/// no_new_privs; it is set only then, so setuid programs keep working for
/// callers that are root in their namespace.
pub fn install_seccomp_listener(program: &[libc::sock_filter]) -> io::Result<OwnedFd> {
    let len = libc::c_ushort::try_from(program.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr() as *mut libc::sock_filter };
    let install = || {
        // SAFETY: `prog` points at `len` valid instructions that outlive the
        // call (the kernel copies them); the result is checked before use.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        }
    };
    let mut ret = install();
    if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EACCES) {
        nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
        ret = install();
    }
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new listener descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Waits for the next seccomp user notification (retrying on EINTR).
pub fn seccomp_recv(listener: &impl AsFd) -> io::Result<libc::seccomp_notif> {
    loop {
        // SAFETY: seccomp_notif is plain old data, and the kernel insists on
        // an all-zero one.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into the valid, exclusively
        // borrowed `notif`; the ioctl number encodes that size.
        let ret =
            unsafe { libc::ioctl(listener.as_fd().as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif as *mut _) };
        if ret == 0 {
            return Ok(notif);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Answers a seccomp user notification.
pub fn seccomp_send(listener: &impl AsFd, resp: &libc::seccomp_notif_resp) -> io::Result<()> {
    // SAFETY: SEND only reads one seccomp_notif_resp from the valid `resp`.
    let ret = unsafe { libc::ioctl(listener.as_fd().as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, resp as *const _) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether notification `id` is still pending: its task still waits in the
/// system call, so a pid looked up since the notification still names it.
pub fn seccomp_id_valid(listener: &impl AsFd, id: u64) -> bool {
    // SAFETY: ID_VALID only reads the u64 that `id` provides.
    unsafe { libc::ioctl(listener.as_fd().as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id as *const u64) == 0 }
}

/// Sends `fd` over a unix socket (SCM_RIGHTS).
pub fn send_fd(sock: &impl AsFd, fd: &impl AsFd) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_fd().as_raw_fd()];
    let iov = [io::IoSlice::new(b"F")];
    loop {
        match sendmsg::<()>(sock.as_fd().as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map(drop).map_err(io::Error::from),
        }
    }
}

/// Receives one descriptor sent with [`send_fd`];
/// `None` when the peer closed its end without sending one.
pub fn recv_fd(sock: &impl AsFd) -> io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    loop {
        let msg = match recvmsg::<()>(sock.as_fd().as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other.map_err(io::Error::from)?,
        };
        let mut received = None;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS just installed this descriptor in our
                    // table for us alone; wrapping it makes sure it is closed.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    received.get_or_insert(owned);
                }
            }
        }
        return Ok(received);
    }
}

/// A descriptor that becomes readable when process `pid` exits
/// (pidfd_open, Linux 5.3).
pub fn pidfd_open(pid: nix::unistd::Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers; the result is checked and owned.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Removes capability `cap` from the calling thread's bounding set.
pub fn drop_bounding_cap(cap: u32) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes plain integers and no pointers.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empties the calling thread's ambient capability set.
pub fn clear_ambient_caps() -> io::Result<()> {
    // SAFETY: PR_CAP_AMBIENT takes plain integers and no pointers.
    let ret = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `__user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// The kernel's `__user_cap_data_struct`; version 3 takes two (bits 0-31, 32-63).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The calling thread's effective and permitted capability sets.
pub fn get_caps() -> io::Result<(u64, u64)> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes one header (version) and two data structs into
    // the valid, exclusively borrowed buffers, which match the kernel's
    // layout for version 3.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| (lo as u64) | ((hi as u64) << 32);
    Ok((join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted)))
}

/// Sets the calling thread's effective, permitted and inheritable sets.
pub fn set_caps(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e, p, i) = (split(effective), split(permitted), split(inheritable));
    let data = [
        CapData { effective: e.0, permitted: p.0, inheritable: i.0 },
        CapData { effective: e.1, permitted: p.1, inheritable: i.1 },
    ];
    // SAFETY: capset reads one header and two data structs in the kernel's
    // version-3 layout from valid buffers that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
