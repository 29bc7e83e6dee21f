//! Raw system calls that nix does not wrap: openat2, the new mount API (fsopen, fsconfig, fsmount,
//! move_mount), and whiteout creation with mknodat. Every `unsafe` block of the crate lives here.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// Stable kernel ABI values (include/uapi/linux/openat2.h, mount.h); spelled out so the crate does not
// depend on which libc release exports them.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// The argument of openat2(2), `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub fn path_cstring(p: &Path) -> io::Result<CString> {
    cstring(p.as_os_str().as_bytes())
}

fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("kernel returned an out-of-range fd"))?;
    // SAFETY: the kernel just returned this fd to us, so it is open and owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unit_result(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// openat2(2): opens `path` relative to `dir` with the given `O_*` flags and `RESOLVE_*` rules.
pub fn openat2(dir: BorrowedFd<'_>, path: &Path, flags: i32, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    let c = path_cstring(path)?;
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: u64::from(mode), resolve };
    loop {
        // SAFETY: `c` is a valid NUL-terminated string and `how` a correctly laid out `open_how` that
        // outlive the call; the size passed is the struct's size.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match fd_result(ret) {
            // openat2 returns EAGAIN when a concurrent rename raced a RESOLVE_IN_ROOT walk; retrying is
            // what the man page asks for.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            r => return r,
        }
    }
}

/// mknodat(2) of an overlay whiteout: a character device 0:0 named `name` in `dir`.
pub fn mknod_whiteout(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a valid C string for the duration of the call; the fd is borrowed, open.
    let ret = unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), libc::S_IFCHR, 0) };
    unit_result(libc::c_long::from(ret))
}

/// mknodat(2) of any node type (`mode` includes the `S_IF*` type bits).
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: `name` is a valid C string for the duration of the call; the fd is borrowed, open.
    let ret = unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) };
    unit_result(libc::c_long::from(ret))
}

/// fsopen(2): a filesystem context for `fstype`.
pub fn fsopen(fstype: &str) -> io::Result<OwnedFd> {
    let c = cstring(fstype.as_bytes())?;
    // SAFETY: `c` is a valid C string that outlives the call.
    fd_result(unsafe { libc::syscall(libc::SYS_fsopen, c.as_ptr(), FSOPEN_CLOEXEC) })
}

/// fsconfig(2) FSCONFIG_SET_STRING: sets option `key` to `value` (bytes, e.g. a path).
pub fn fsconfig_set_string(fs: BorrowedFd<'_>, key: &str, value: &[u8]) -> io::Result<()> {
    let k = cstring(key.as_bytes())?;
    let v = cstring(value)?;
    // SAFETY: both strings are valid C strings that outlive the call; aux must be 0 for this command.
    unit_result(unsafe {
        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0)
    })
}

/// fsconfig(2) FSCONFIG_SET_FLAG: sets the boolean option `key`.
pub fn fsconfig_set_flag(fs: BorrowedFd<'_>, key: &str) -> io::Result<()> {
    let k = cstring(key.as_bytes())?;
    // SAFETY: `k` is a valid C string that outlives the call; value must be NULL and aux 0 for a flag.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FLAG,
            k.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
}

/// fsconfig(2) FSCONFIG_CMD_CREATE: creates the superblock from the options set so far.
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: key and value must be NULL and aux 0 for this command; the fd is borrowed, open.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
}

/// fsmount(2): a detached mount of the created filesystem context.
pub fn fsmount(fs: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments; the fd is borrowed, open.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

/// move_mount(2): attaches the detached mount `mnt` at `target`.
pub fn move_mount(mnt: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let empty = cstring(b"")?;
    let t = path_cstring(target)?;
    // SAFETY: both strings are valid C strings that outlive the call; AT_FDCWD makes `t` cwd-relative.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// mount(2) of overlay with `data`, whose relative lower paths are resolved against `dir`: a forked child
/// chdirs there and mounts, so the caller's (possibly multi-threaded) cwd never changes. The child shares
/// the caller's mount namespace, so the mount is visible to it.
pub fn mount_overlay_from_dir(dir: &Path, target: &Path, data: &str) -> io::Result<()> {
    // Everything the child touches is prepared before fork: after fork in a multi-threaded process only
    // async-signal-safe calls (chdir, mount, _exit) may run.
    let dir_c = path_cstring(dir)?;
    let target_c = path_cstring(target)?;
    let data_c = cstring(data.as_bytes())?;
    let fstype = cstring(b"overlay")?;
    // SAFETY: fork has no memory-safety preconditions; the child below only makes async-signal-safe calls
    // with pointers prepared before the fork, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on valid C strings; the child never returns from this block.
        unsafe {
            if libc::chdir(dir_c.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let ret = libc::mount(fstype.as_ptr(), target_c.as_ptr(), fstype.as_ptr(), 0, data_c.as_ptr().cast());
            libc::_exit(if ret == 0 { 0 } else { *libc::__errno_location() });
        }
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    } else {
        Err(io::Error::other("overlay mount helper was killed"))
    }
}

/// Makes the spawned child die (SIGKILL) when the spawning thread exits and
/// gives it a session of its own, so a terminal's Ctrl-C, meant for kiln,
/// does not reach it (kiln unmounts it while unwinding). It fails to start
/// when this process is gone by the time it runs.
pub fn tie_to_process(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec in the child and calls
    // only setsid, prctl and getppid, which are async-signal-safe; it
    // allocates nothing (errors come from raw errno values).
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
