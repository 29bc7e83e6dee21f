//! PID 1 of the step: the console, the mounts, pivot_root into the rootfs,
//! the step's ids, then exec.

use std::ffi::CString;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::{Gid, Uid};

use super::SETUP_FAILED;
use crate::spec::{RunSpec, TtySize};
use crate::{fake_chown, fds, mounts, sys};

/// PID 1 of the step: set up and exec; returns only on failure, with the
/// exit code and the message to report. With `chown_sock`, chown is
/// intercepted and the listener sent there (see `fake_chown`).
pub(super) fn command_main(
    spec: &RunSpec,
    console: Option<File>,
    chown_sock: Option<OwnedFd>,
) -> Result<std::convert::Infallible, (i32, String)> {
    let fail = |what: &str, e: &dyn std::fmt::Display| (SETUP_FAILED, format!("{what}: {e}"));
    // If the helper dies (killed with the build), the whole step dies.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| fail("set the parent-death signal", &e))?;
    // Its own session: a terminal's Ctrl-C reaches kiln, not the command
    // directly (kiln forwards it), and a pseudo-terminal can become its
    // controlling terminal.
    let _ = nix::unistd::setsid();
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| fail("make mounts private", &e))?;
    let rootfs = spec.rootfs.as_path();
    mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| fail(&format!("bind the rootfs {}", rootfs.display()), &e))?;
    let root = File::open(rootfs).map_err(|e| fail(&format!("open the rootfs {}", rootfs.display()), &e))?;
    mounts::apply(&root, &mounts::plan(spec)).map_err(|e| (SETUP_FAILED, e))?;
    pivot_into(&root).map_err(|e| fail("pivot_root into the rootfs", &e))?;
    // The UTS namespace is the step's own, so only a seccomp filter refuses
    // this: podman's default profile allows sethostname only with
    // CAP_SYS_ADMIN in the container. The step then keeps the container's
    // name, as a step under `docker build --network=host` keeps the host's.
    match nix::unistd::sethostname(&spec.hostname) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(fail("set the hostname", &e)),
    }
    match (spec.tty, console) {
        (Some(size), Some(console)) => {
            attach_terminal(&console, size, spec.user.uid).map_err(|e| fail("set up the terminal", &e))?
        }
        _ if spec.stdin => {}
        _ => {
            let devnull = File::open("/dev/null").map_err(|e| fail("open /dev/null", &e))?;
            nix::unistd::dup2(devnull.as_raw_fd(), 0).map_err(|e| fail("redirect stdin", &e))?;
        }
    }
    if spec.create_cwd {
        std::fs::create_dir_all(&spec.cwd)
            .map_err(|e| fail(&format!("create the working directory {}", spec.cwd), &e))?;
    }
    // Before dropping to the step's user: lowering works either way, and
    // root in the namespace may raise a soft limit up to the hard one.
    crate::ulimit::apply(&spec.ulimits).map_err(|e| (SETUP_FAILED, e))?;
    // Out of the bounding set before the ids change, so no exec (setuid
    // programs included) brings a dropped capability back.
    crate::caps::limit_bounding(spec.caps).map_err(|e| (SETUP_FAILED, e))?;
    set_ids(spec)?;
    nix::unistd::chdir(spec.cwd.as_str())
        .map_err(|e| fail(&format!("change to the working directory {}", spec.cwd), &e))?;
    // The command starts as under docker or buildah: every signal at its
    // default action and none blocked. This helper is a Rust program, which
    // ignores SIGPIPE (so `base64 /dev/urandom | head -c 1` would never end),
    // and kiln's caller may have ignored others (nohup); an ignored signal
    // stays ignored across exec.
    sys::default_signal_actions();
    SigSet::empty().thread_set_mask().map_err(|e| fail("unblock signals", &e))?;
    if let Some(sock) = chown_sock {
        // Last, so no setup call above waits on the supervisor.
        fake_chown::install(&sock).map_err(|e| fail("intercept chown for the single-id map", &e))?;
    }
    // After the chown interception, which needs CAP_SYS_ADMIN to go without
    // no_new_privs (setuid programs would stop working).
    crate::caps::limit_sets(spec.caps).map_err(|e| (SETUP_FAILED, e))?;
    // Nothing but 0-2 survives the exec, whatever this process holds (the
    // report pipe stays open until then, so its EOF still means "exec'd").
    fds::cloexec_from(3).map_err(|e| fail("mark descriptors close-on-exec", &e))?;
    exec(spec)
}

/// Makes a pseudo-terminal in the container's own devpts (so `tty` names a
/// /dev/pts path that exists there), sends its master to kiln over
/// `console`, and makes the slave the controlling terminal and stdio.
fn attach_terminal(console: &File, size: TtySize, uid: u32) -> Result<(), String> {
    let master =
        posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(|e| format!("open /dev/ptmx: {e}"))?;
    grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| format!("open {name}: {e}"))?;
    // The command's user owns its terminal, as with podman (best effort:
    // in a single-id namespace only root exists).
    let _ = nix::unistd::fchown(slave.as_raw_fd(), Some(Uid::from_raw(uid)), None);
    sys::set_window_size(&slave, size.rows, size.cols).map_err(|e| format!("set the window size: {e}"))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        console.as_raw_fd(),
        &[IoSlice::new(b"T")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send the terminal to kiln: {e}"))?;
    drop(master);
    sys::set_controlling_terminal(&slave).map_err(|e| format!("make {name} the controlling terminal: {e}"))?;
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(|e| format!("attach {name} as descriptor {fd}: {e}"))?;
    }
    Ok(())
}

fn pivot_into(root: &File) -> nix::Result<()> {
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(root))?;
    nix::unistd::pivot_root(".", ".")?;
    // The old root is now stacked on "."; detach it without letting the
    // unmount propagate anywhere.
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)?;
    umount2(".", MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")
}

fn set_ids(spec: &RunSpec) -> Result<(), (i32, String)> {
    let user = &spec.user;
    let groups: Vec<Gid> = user.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // In single-id mode setgroups is denied; only fail when groups were asked for.
        if !groups.is_empty() {
            return Err((
                SETUP_FAILED,
                format!(
                    "set supplementary groups {:?} (are they mapped in the user namespace?): {e}",
                    user.additional_gids
                ),
            ));
        }
    }
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| (SETUP_FAILED, format!("set gid {} (is it mapped in the user namespace?): {e}", user.gid)))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| (SETUP_FAILED, format!("set uid {} (is it mapped in the user namespace?): {e}", user.uid)))
}

/// Finds `name` the way execvp would, in the spec's PATH (inside the rootfs).
pub fn find_executable(name: &str, path: Option<&str>) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = path.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| p.is_file() && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
}

fn exec(spec: &RunSpec) -> Result<std::convert::Infallible, (i32, String)> {
    let name = spec.argv.first().ok_or((SETUP_FAILED, "exec: the command is empty".to_string()))?;
    let program = find_executable(name, spec.env_value("PATH"))
        .ok_or_else(|| (127, format!("exec {name}: executable file not found in $PATH")))?;
    let cstr =
        |s: &[u8]| CString::new(s).map_err(|_| (SETUP_FAILED, "exec: an argument contains a NUL byte".to_string()));
    let program_c = cstr(program.as_os_str().as_bytes())?;
    let argv = spec.argv.iter().map(|a| cstr(a.as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let env = spec.env.iter().map(|e| cstr(e.as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let err = nix::unistd::execve(&program_c, &argv, &env).unwrap_err();
    let code = if err == nix::errno::Errno::ENOENT { 127 } else { 126 };
    Err((code, format!("exec {}: {err}", program.display())))
}
