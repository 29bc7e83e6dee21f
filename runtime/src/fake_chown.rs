//! chown in single-id mode. Only uid/gid 0 exist in the user namespace, so a
//! RUN step's `chown 4242 /f` would fail with EINVAL and break the build.
//! The step's PID 1 installs a seccomp filter that turns the chown and chmod
//! families into user notifications, and hands the listener to the helper
//! (its parent), which answers them:
//!
//! - chown to ids the namespace has runs unchanged (the kernel continues it);
//! - chown to ids it lacks is recorded on the file as
//!   `user.containers.override_stat` = `uid:gid:0mode`, the containers/storage
//!   convention the layer writer turns back into the entry's owner and mode,
//!   and reported as success. Symlinks, fifos, sockets and devices cannot
//!   carry `user.*` xattrs: their chown succeeds without a record;
//! - chmod of a file with a record updates the recorded mode (the layer takes
//!   the mode from there), then runs unchanged.
//!
//! The step itself keeps seeing the real owner: `stat` in this and later RUN
//! steps shows uid 0 for such files, while the image gets the recorded owner.
//!
//! Paths are resolved through /proc/PID/{root,cwd,fd/N} of the calling task,
//! absolute ones inside its root (RESOLVE_IN_ROOT); for relative ones the
//! supervisor first makes its own root the step's (chroot), so `..` and
//! absolute symlinks met on the way land where the step's lookup would.
//! Known limit: tools that stat a file and pass the owner they saw back to
//! chown (busybox `chown :G`) pass uid 0 and so replace a recorded uid.
//! Whenever the supervisor cannot decide (an unreadable path, a vanished
//! file, a task it cannot see), it lets the kernel run the
//! call (SECCOMP_USER_NOTIF_FLAG_CONTINUE), which then fails or succeeds
//! exactly as without the filter.

mod decode;
mod filter;
mod record;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use xattr::FileExt as _;

use crate::fake_ids::{self, IdCall};
use crate::idmap::{parse_proc_map, IdMap};
use crate::sys;
use decode::{decode, Op, Target};
use filter::AUDIT_ARCH;
pub use filter::{install, supported};
use record::{format_override, mode_after_chown, parse_override};

/// The xattr rootless container tools record an owner in (kiln-overlay's
/// `OVERRIDE_STAT_XATTR`, which the layer writer applies).
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// The longest path the kernel accepts, NUL included (PATH_MAX).
const PATH_MAX: usize = 4096;

fn is_mapped(maps: &[IdMap], id: u32) -> bool {
    maps.iter().any(|m| id >= m.container && id - m.container < m.size)
}

// ------------------------------------------------------------ the supervisor

/// What to answer a notification.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Let the kernel run the call as if unfiltered.
    Continue,
    /// The call is done: return 0.
    Done,
    /// The call is done: return this value.
    Value(u64),
    /// The call failed with this errno.
    Error(i32),
}

/// The helper's side. Made before the fork, while /proc is still the one
/// whose pids the notifications carry (the step mounts its own /proc, which
/// the helper shares after pivot_root).
pub struct Supervisor {
    proc_dir: OwnedFd,
    uids: Vec<IdMap>,
    gids: Vec<IdMap>,
    /// This process's root is the step's: relative lookups are safe.
    rooted: bool,
    /// The ids processes set that the namespace lacks (see `fake_ids`).
    ids: std::cell::RefCell<fake_ids::Table>,
}

impl Supervisor {
    pub fn new() -> io::Result<Supervisor> {
        let proc_dir = File::open("/proc")?.into();
        let read = |name: &str| std::fs::read_to_string(Path::new("/proc/self").join(name)).map(|t| parse_proc_map(&t));
        Ok(Supervisor {
            proc_dir,
            uids: read("uid_map")?,
            gids: read("gid_map")?,
            rooted: false,
            ids: Default::default(),
        })
    }

    /// Receives the listener from the step's PID 1 and answers notifications
    /// until that process exits (`pidfd` becomes readable). Returns at once
    /// when PID 1 sent no listener (its setup failed before).
    pub fn serve(mut self, sock: OwnedFd, child: nix::unistd::Pid, pidfd: &impl AsFd) {
        let Ok(Some(listener)) = sys::recv_fd(&sock) else { return };
        drop(sock);
        // PID 1 sends the listener after pivot_root, so its root is final now.
        match self.enter_root_of(child) {
            Ok(()) => self.rooted = true,
            Err(e) => eprintln!("kiln: enter the step's root to follow its chown calls: {e}"),
        }
        loop {
            let mut fds =
                [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let revents = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
            let (listener_events, exited) = (revents(&fds[0]), !revents(&fds[1]).is_empty());
            if exited {
                return;
            }
            if listener_events.contains(PollFlags::POLLIN) {
                self.answer_next(&listener);
            } else if !listener_events.is_empty() {
                // POLLHUP: no task uses the filter any more.
                return;
            }
        }
    }

    fn answer_next(&self, listener: &OwnedFd) {
        let notif = match sys::seccomp_recv(listener) {
            Ok(n) => n,
            // The caller was killed before we got to it.
            Err(_) => return,
        };
        let reply = self.answer(listener, &notif);
        let (val, error, flags) = match reply {
            Reply::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            Reply::Done => (0, 0, 0),
            Reply::Value(v) => (v as i64, 0, 0),
            Reply::Error(errno) => (0, -errno, 0),
        };
        let resp = libc::seccomp_notif_resp { id: notif.id, val, error, flags };
        // ENOENT: the caller died meanwhile; nothing to tell anyone.
        let _ = sys::seccomp_send(listener, &resp);
    }

    /// Makes this process's root the step's, so that `..` and absolute
    /// symlinks met in relative lookups resolve as the step's would.
    /// (pivot_root already moved it there, as it moves every process of the
    /// mount namespace whose root was the old one; this does not rely on it.)
    fn enter_root_of(&self, pid: nix::unistd::Pid) -> io::Result<()> {
        let name = format!("{pid}/root");
        let root = sys::openat2(&self.proc_dir, Path::new(&name), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        nix::unistd::fchdir(root.as_raw_fd()).map_err(io::Error::from)?;
        nix::unistd::chroot(".").map_err(io::Error::from)
    }

    fn answer(&self, listener: &OwnedFd, notif: &libc::seccomp_notif) -> Reply {
        if notif.data.arch != AUDIT_ARCH || notif.pid == 0 {
            return Reply::Continue;
        }
        if let Some(call) = fake_ids::decode(notif.data.nr as i64, &notif.data.args) {
            return self.answer_ids(listener, notif, call);
        }
        let Some(call) = decode(notif.data.nr as i64, &notif.data.args) else {
            return Reply::Continue;
        };
        let valid = || sys::seccomp_id_valid(listener, notif.id);
        let Ok(target) = self.open_target(notif.pid, call.target, valid) else {
            return Reply::Continue;
        };
        match call.op {
            Op::Chown { uid, gid } => match self.chown(&target, uid, gid) {
                Ok(reply) => reply,
                Err(err) => {
                    // The step asked for an owner the namespace lacks and it
                    // cannot be recorded: say so, but do not fail the build.
                    eprintln!("kiln: could not record the owner of a file chown'ed in RUN: {err}");
                    Reply::Done
                }
            },
            Op::Chmod { mode } => {
                if let Err(err) = self.chmod(&target, mode) {
                    eprintln!("kiln: could not update the recorded mode of a file chmod'ed in RUN: {err}");
                }
                Reply::Continue
            }
        }
    }

    /// set*id and get*id calls: ids the namespace has are the kernel's
    /// business until a process sets one it lacks; from then on its ids are
    /// remembered here and its get*id calls answered from them.
    fn answer_ids(&self, listener: &OwnedFd, notif: &libc::seccomp_notif, call: IdCall) -> Reply {
        let valid = || sys::seccomp_id_valid(listener, notif.id);
        let proc_text = |name: &str| -> Option<String> {
            let fd = sys::openat2(&self.proc_dir, Path::new(name), libc::O_RDONLY, 0).ok()?;
            std::io::read_to_string(File::from(fd)).ok()
        };
        let Some(status) = proc_text(&format!("{}/status", notif.pid)) else { return Reply::Continue };
        let Some(key) =
            proc_text(&format!("{}/stat", notif.pid)).and_then(|stat| fake_ids::process_key(&status, &stat))
        else {
            return Reply::Continue;
        };
        if !valid() {
            return Reply::Continue;
        }
        self.learn_ancestry(key, &status, &proc_text);
        let known = self.ids.borrow().get(key).cloned();
        let pick = |ids: &fake_ids::Ids, effective: bool| if effective { ids.e } else { ids.r };
        let kind = |c: &fake_ids::Creds, group: bool| if group { c.gids } else { c.uids };
        match call {
            IdCall::Get { group, effective } => match known {
                Some(c) => Reply::Value(pick(&kind(&c, group), effective) as u64),
                None => Reply::Continue,
            },
            IdCall::GetRes { group, addrs } => match known {
                Some(c) => {
                    let ids = kind(&c, group);
                    let values = [ids.r, ids.e, ids.s];
                    let words: Vec<(u64, Vec<u8>)> =
                        addrs.iter().zip(values).map(|(a, v)| (*a, v.to_ne_bytes().to_vec())).collect();
                    self.write_memory(notif.pid, &words, valid).map_or(Reply::Error(libc::EFAULT), |()| Reply::Done)
                }
                None => Reply::Continue,
            },
            IdCall::GetGroups { size, list } => match known {
                Some(c) => {
                    let n = c.groups.len() as u64;
                    if size as i32 == 0 {
                        Reply::Value(n)
                    } else if (size as i32) < 0 || (size as u32 as u64) < n {
                        Reply::Error(libc::EINVAL)
                    } else {
                        let bytes = c.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
                        self.write_memory(notif.pid, &[(list, bytes)], valid)
                            .map_or(Reply::Error(libc::EFAULT), |()| Reply::Value(n))
                    }
                }
                None => Reply::Continue,
            },
            IdCall::SetGroups { size, list } => {
                let n = size as i32;
                if !(0..=65536).contains(&n) {
                    return Reply::Error(libc::EINVAL);
                }
                let Ok(bytes) = self.read_memory(notif.pid, list, n as usize * 4, valid) else {
                    return Reply::Error(libc::EFAULT);
                };
                let groups = bytes.chunks_exact(4).map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]])).collect();
                let current = known.unwrap_or_else(|| fake_ids::Creds::root(fake_ids::groups_of(&status)));
                match fake_ids::set_groups(&current, groups) {
                    Ok(next) => {
                        self.ids.borrow_mut().set(key, now_ticks(&proc_text), next);
                        Reply::Done
                    }
                    Err(errno) => Reply::Error(errno),
                }
            }
            set => {
                let mapped = |group: bool, id: u32| is_mapped(if group { &self.gids } else { &self.uids }, id);
                if known.is_none() && fake_ids::kernel_can(set, mapped) {
                    return Reply::Continue;
                }
                let current = known.unwrap_or_else(|| fake_ids::Creds::root(fake_ids::groups_of(&status)));
                let result = fake_ids::apply(&current, set);
                if let IdCall::SetFs { group, .. } = set {
                    // setfsuid returns the previous value and never fails.
                    let previous = kind(&current, group).fs as u64;
                    if let Ok(next) = result {
                        self.ids.borrow_mut().set(key, now_ticks(&proc_text), next);
                    }
                    return Reply::Value(previous);
                }
                match result {
                    Ok(next) => {
                        self.ids.borrow_mut().set(key, now_ticks(&proc_text), next);
                        Reply::Done
                    }
                    Err(errno) => Reply::Error(errno),
                }
            }
        }
    }

    /// A process met for the first time takes what its parent had when it
    /// started, the parent's found the same way (up to the step's PID 1, or
    /// a process already known).
    fn learn_ancestry(&self, key: fake_ids::ProcessKey, status: &str, proc_text: &dyn Fn(&str) -> Option<String>) {
        let mut chain = vec![key];
        let mut parent = fake_ids::parent_of(status);
        // Bounded: a step's process tree is not deeper than this in practice,
        // and each level costs two /proc reads once per process.
        while let Some(ppid) = parent.filter(|p| *p > 0) {
            if self.ids.borrow().known(*chain.last().expect("not empty")) || chain.len() > 64 {
                break;
            }
            let Some(pstatus) = proc_text(&format!("{ppid}/status")) else { break };
            let Some(pkey) = proc_text(&format!("{ppid}/stat")).and_then(|st| fake_ids::process_key(&pstatus, &st))
            else {
                break;
            };
            chain.push(pkey);
            parent = fake_ids::parent_of(&pstatus);
        }
        // From the oldest ancestor down, each child takes its parent's ids
        // as of its own start.
        let mut ids = self.ids.borrow_mut();
        for pair in chain.windows(2).rev() {
            let (child, parent) = (pair[0], pair[1]);
            if ids.known(child) {
                continue;
            }
            let inherited = ids.at(parent, child.1).cloned();
            ids.inherit(child, inherited);
        }
        if !ids.known(key) {
            ids.inherit(key, None);
        }
    }

    fn open_mem(&self, pid: u32, flags: libc::c_int, valid: impl Fn() -> bool) -> io::Result<File> {
        let mem = File::from(sys::openat2(&self.proc_dir, Path::new(&format!("{pid}/mem")), flags, 0)?);
        if !valid() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(mem)
    }

    fn read_memory(&self, pid: u32, addr: u64, len: usize, valid: impl Fn() -> bool) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        if len > 0 {
            self.open_mem(pid, libc::O_RDONLY, valid)?.read_exact_at(&mut buf, addr)?;
        }
        Ok(buf)
    }

    fn write_memory(&self, pid: u32, words: &[(u64, Vec<u8>)], valid: impl Fn() -> bool) -> io::Result<()> {
        let mem = self.open_mem(pid, libc::O_RDWR, valid)?;
        for (addr, bytes) in words {
            mem.write_all_at(bytes, *addr)?;
        }
        Ok(())
    }

    /// An O_PATH descriptor of the file the call names, resolved as the
    /// calling task would. `valid` confirms the task still waits in the call,
    /// so the /proc/PID entries opened before it were the caller's.
    fn open_target(&self, pid: u32, target: Target, valid: impl Fn() -> bool) -> io::Result<OwnedFd> {
        let opath = |dir: &OwnedFd, name: &str| sys::openat2(dir, Path::new(name), libc::O_PATH, 0);
        let (dirfd, addr, follow, empty_ok) = match target {
            Target::Fd(fd) => {
                let file = opath(&self.proc_dir, &format!("{pid}/fd/{fd}"))?;
                return if valid() { Ok(file) } else { Err(io::Error::from_raw_os_error(libc::ESRCH)) };
            }
            Target::Path { dirfd, addr, follow, empty_ok } => (dirfd, addr, follow, empty_ok),
        };
        let mem = File::from(sys::openat2(&self.proc_dir, Path::new(&format!("{pid}/mem")), libc::O_RDONLY, 0)?);
        if !valid() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let path = read_c_string(&mem, addr)?;
        let absolute = path.first() == Some(&b'/');
        if !absolute && !self.rooted {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let base = match (absolute, dirfd) {
            (true, _) => format!("{pid}/root"),
            (false, None) => format!("{pid}/cwd"),
            (false, Some(fd)) => format!("{pid}/fd/{fd}"),
        };
        let base = opath(&self.proc_dir, &base)?;
        if !valid() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if path.is_empty() {
            return if empty_ok { Ok(base) } else { Err(io::Error::from_raw_os_error(libc::ENOENT)) };
        }
        let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
        let path = Path::new(std::ffi::OsStr::from_bytes(&path));
        if absolute {
            sys::open_in_root(&base, path, flags, 0)
        } else {
            sys::openat2(&base, path, flags, libc::RESOLVE_NO_MAGICLINKS)
        }
    }

    /// A readable descriptor of `target` for the xattr calls (which refuse
    /// O_PATH ones), or `None` for files that cannot carry `user.*` xattrs.
    fn reopen(&self, target: &OwnedFd, st: &libc::stat) -> io::Result<Option<File>> {
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFREG && kind != libc::S_IFDIR {
            return Ok(None);
        }
        let name = format!("self/fd/{}", target.as_raw_fd());
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        sys::openat2(&self.proc_dir, Path::new(&name), flags, 0).map(|fd| Some(File::from(fd)))
    }

    fn chown(&self, target: &OwnedFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<Reply> {
        let st = nix::sys::stat::fstat(target.as_raw_fd()).map_err(io::Error::from)?;
        let file = self.reopen(target, &st)?;
        let recorded = match &file {
            Some(f) => f.get_xattr(OVERRIDE_STAT_XATTR)?.and_then(|v| parse_override(&v)),
            None => None,
        };
        let (cur_uid, cur_gid, cur_mode) = recorded.unwrap_or((st.st_uid, st.st_gid, st.st_mode & 0o7777));
        let (uid, gid) = (uid.unwrap_or(cur_uid), gid.unwrap_or(cur_gid));
        if is_mapped(&self.uids, uid) && is_mapped(&self.gids, gid) {
            if let (Some(f), Some(_)) = (&file, recorded) {
                f.remove_xattr(OVERRIDE_STAT_XATTR)?;
            }
            return Ok(Reply::Continue);
        }
        let Some(file) = file else {
            return Ok(Reply::Done);
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let mode = if is_dir { cur_mode } else { mode_after_chown(cur_mode) };
        file.set_xattr(OVERRIDE_STAT_XATTR, format_override(uid, gid, mode).as_bytes())?;
        Ok(Reply::Done)
    }

    fn chmod(&self, target: &OwnedFd, mode: u32) -> io::Result<()> {
        let st = nix::sys::stat::fstat(target.as_raw_fd()).map_err(io::Error::from)?;
        let Some(file) = self.reopen(target, &st)? else {
            return Ok(());
        };
        if let Some((uid, gid, _)) = file.get_xattr(OVERRIDE_STAT_XATTR)?.and_then(|v| parse_override(&v)) {
            file.set_xattr(OVERRIDE_STAT_XATTR, format_override(uid, gid, mode).as_bytes())?;
        }
        Ok(())
    }
}

/// Clock ticks since boot now, as process start times count them.
fn now_ticks(proc_text: &dyn Fn(&str) -> Option<String>) -> u64 {
    proc_text("uptime").as_deref().and_then(fake_ids::uptime_ticks).unwrap_or(u64::MAX)
}

/// Reads a NUL-terminated string at `addr` of the task whose memory `mem`
/// is, page by page (the string may end just before an unmapped page).
fn read_c_string(mem: &File, addr: u64) -> io::Result<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let chunk = (PAGE - at % PAGE) as usize;
        let mut buf = vec![0u8; chunk.min(PATH_MAX - out.len())];
        let n = mem.read_at(&mut buf, at)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

#[cfg(test)]
mod tests;
