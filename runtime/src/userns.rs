//! Re-executing kiln inside a user + mount namespace (like containers/storage's
//! re-exec): the unprivileged front-end spawns a fresh copy of itself whose
//! first action is `unshare`, writes its id maps, then releases it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::{pipe2, Gid, Pid, Uid};

use crate::idmap::{format_maps, IdMap, MapMode, INSIDE_ENV};
use crate::sys;
use crate::RuntimeError;

/// Environment variable that tells a fresh kiln process to unshare and wait
/// for its maps (read first thing by `dispatch_helper`).
const SYNC_ENV: &str = "_KILN_USERNS_SYNC";
/// The front-end's pid, which the child checks is still its parent once it
/// has set its parent-death signal.
const PARENT_ENV: &str = "_KILN_USERNS_PARENT";
/// Descriptor the child reads the release byte from.
const RELEASE_FD: i32 = 3;
/// Descriptor the child reports "unshared" (or an error) on.
const READY_FD: i32 = 4;

/// As real root kiln needs no user namespace, but its overlay mounts must
/// still never show up on the host (or outlive a killed build): give the
/// process its own mount namespace with private propagation. Call it before
/// any thread starts.
pub fn private_mount_namespace() -> Result<(), RuntimeError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(RuntimeError::MountNamespace)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(RuntimeError::MountNamespace)
}

/// Whether this process runs inside kiln's user namespace.
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// Enters the user namespace by re-running this program inside one.
///
/// Returns `Ok(None)` when no namespace is needed (real root, or already
/// inside): the caller continues. Otherwise runs the same command line in a
/// child inside the namespace and returns `Ok(Some(code))` for the caller to
/// exit with.
pub fn enter_user_namespace(mode: &MapMode) -> Result<Option<i32>, RuntimeError> {
    if inside() {
        return Ok(None);
    }
    let (uids, gids) = match mode {
        MapMode::Root => return Ok(None),
        MapMode::Unavailable { reason } => return Err(RuntimeError::Unavailable { reason: reason.clone() }),
        MapMode::Full { uids, gids } => (uids.clone(), gids.clone()),
        MapMode::Single => (mode.uid_maps(Uid::effective().as_raw()), mode.gid_maps(Gid::effective().as_raw())),
    };
    // Root (of a container without CAP_SYS_ADMIN) writes a full map itself;
    // anyone else needs the setuid/file-capability helpers.
    let full = matches!(mode, MapMode::Full { .. }) && !Uid::effective().is_root();
    let command = |mode: &MapMode| {
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "kiln".into());
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(arg0).args(args).env(SYNC_ENV, "1").env(INSIDE_ENV, mode.name());
        cmd.env(PARENT_ENV, std::process::id().to_string());
        cmd
    };
    let status = match run_in_namespace(command(mode), |pid| write_maps(pid, full, &uids, &gids)) {
        // The helpers exist but may not map: in a container, a setuid
        // newuidmap (root there lacks CAP_SYS_ADMIN over the new namespace)
        // or no-new-privileges (file capabilities do not apply). The first
        // child was killed before it did anything; the single-id map needs
        // no helper.
        Err(RuntimeError::MapToolFailed { tool, stderr, .. }) if full => {
            log::warn!(
                "{tool} could not write the subordinate id map ({stderr}): using a single-id map, so only uid/gid 0 \
                 exist in RUN steps; in a container, give newuidmap and newgidmap file capabilities (cap_setuid+ep, \
                 cap_setgid+ep) instead of the setuid bit, and do not set no-new-privileges"
            );
            let single = MapMode::Single;
            let (uids, gids) = (single.uid_maps(Uid::effective().as_raw()), single.gid_maps(Gid::effective().as_raw()));
            run_in_namespace(command(&single), |pid| write_maps(pid, false, &uids, &gids))?
        }
        other => other?,
    };
    Ok(Some(exit_code(status)))
}

/// Spawns `cmd` (a program that calls `dispatch_helper` first) with the
/// descriptors this process inherited, lets `write_maps` map its namespace,
/// releases it and waits, forwarding SIGINT, SIGTERM and SIGHUP.
///
/// The child dies with this process (parent-death signal): call it from the
/// thread that lives longest, as `main` does (it waits here until the end).
pub(crate) fn run_in_namespace(
    mut cmd: Command,
    write_maps: impl FnOnce(u32) -> Result<(), RuntimeError>,
) -> Result<ExitStatus, RuntimeError> {
    let (release_r, release_w) = pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::Pipe)?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::Pipe)?;
    let mut fds = vec![(release_r, RELEASE_FD), (ready_w, READY_FD)];
    // The engine is still kiln: what the caller left open (a `/dev/fd/N`
    // argument) must open there too. Nothing else kiln runs gets them.
    fds.extend(crate::fds::inherited_for_child(&[RELEASE_FD, READY_FD]));
    sys::die_with_parent(&mut cmd);
    sys::pass_fds(&mut cmd, fds);

    // Block the signals we forward before the child exists, so none is lost;
    // the child starts with an empty mask (std resets it on spawn).
    let forwarded = forwarded_signals();
    let mut old_mask = SigSet::empty();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut old_mask));
    let result = spawn_and_release(&mut cmd, release_w, ready_r, write_maps);
    drop(cmd);
    let result = result.and_then(|child| wait_forwarding(child, &forwarded));
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    result
}

fn spawn_and_release(
    cmd: &mut Command,
    release_w: OwnedFd,
    ready_r: OwnedFd,
    write_maps: impl FnOnce(u32) -> Result<(), RuntimeError>,
) -> Result<Child, RuntimeError> {
    let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn { what: "in a user namespace", source })?;
    // Close our copies of the child's ends (held by the command's closure)
    // so a dying child shows up as EOF.
    let mut ready = File::from(ready_r);
    let mut report = Vec::new();
    let mut first = [0u8; 1];
    let got = ready.read(&mut first).map_err(RuntimeError::HelperIo)?;
    if got == 0 || first[0] != b'R' {
        let _ = ready.read_to_end(&mut report);
        let _ = child.kill();
        let _ = child.wait();
        let mut message = String::from_utf8_lossy(&first[..got]).into_owned();
        message.push_str(&String::from_utf8_lossy(&report));
        if message.is_empty() {
            message = "it exited early".into();
        }
        return Err(RuntimeError::ChildSetup { message });
    }
    if let Err(err) = write_maps(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err);
    }
    let mut release = File::from(release_w);
    release.write_all(b"G").map_err(RuntimeError::HelperIo)?;
    Ok(child)
}

fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGCHLD] {
        set.add(sig);
    }
    set
}

fn wait_forwarding(mut child: Child, set: &SigSet) -> Result<ExitStatus, RuntimeError> {
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        if let Some(status) = child.try_wait().map_err(RuntimeError::Wait)? {
            return Ok(status);
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => continue,
            Ok(sig) => {
                let _ = kill(pid, sig);
            }
        }
    }
}

/// Exit code of a finished process: its code, or 128 + the signal number.
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn write_maps(pid: u32, full: bool, uids: &[IdMap], gids: &[IdMap]) -> Result<(), RuntimeError> {
    if full {
        // Both at once: each is a setuid program's start-up, and they write different files.
        let uid_tool = spawn_map_tool("newuidmap", pid, uids)?;
        let gid_done = spawn_map_tool("newgidmap", pid, gids).and_then(|c| finish_map_tool("newgidmap", pid, c));
        finish_map_tool("newuidmap", pid, uid_tool)?;
        gid_done
    } else if Uid::effective().is_root() {
        // CAP_SETUID and CAP_SETGID over the parent namespace: setgroups stays allowed.
        write_proc(pid, "uid_map", &format_maps(uids))?;
        write_proc(pid, "gid_map", &format_maps(gids))
    } else {
        write_proc(pid, "setgroups", "deny\n")?;
        write_proc(pid, "uid_map", &format_maps(uids))?;
        write_proc(pid, "gid_map", &format_maps(gids))
    }
}

fn spawn_map_tool(tool: &str, pid: u32, maps: &[IdMap]) -> Result<std::process::Child, RuntimeError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([m.container.to_string(), m.host.to_string(), m.size.to_string()]);
    }
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.spawn().map_err(|source| RuntimeError::MapTool { tool: tool.into(), pid, source })
}

fn finish_map_tool(tool: &str, pid: u32, child: std::process::Child) -> Result<(), RuntimeError> {
    let out = child.wait_with_output().map_err(|source| RuntimeError::MapTool { tool: tool.into(), pid, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(RuntimeError::MapToolFailed { tool: tool.into(), pid, stderr });
    }
    Ok(())
}

fn write_proc(pid: u32, file: &str, text: &str) -> Result<(), RuntimeError> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::write(&path, text).map_err(|source| RuntimeError::WriteMap { path, source })
}

/// The child half, run by `dispatch_helper` before anything else: unshare,
/// report, wait for the maps, make mounts private. Returns an exit code when
/// the process must stop.
pub(crate) fn child_side_if_requested() -> Option<i32> {
    std::env::var_os(SYNC_ENV)?;
    std::env::remove_var(SYNC_ENV);
    crate::lifetime::set_forwarded_by_parent();
    // Die with the kiln the user started, whatever kills it (set before the
    // exec too; set again here so it holds whatever the exec did).
    let parent = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse::<i32>().ok());
    std::env::remove_var(PARENT_ENV);
    let Some(parent) = parent else {
        eprintln!("kiln: user namespace helper started without its parent's pid");
        return Some(125);
    };
    if let Err(message) = crate::lifetime::bind_to_parent(Pid::from_raw(parent)) {
        eprintln!("kiln: {message}");
        return Some(125);
    }
    let (Some(release), Some(ready)) = (sys::inherited_fd(RELEASE_FD), sys::inherited_fd(READY_FD)) else {
        eprintln!("kiln: user namespace helper started without its sync pipes");
        return Some(125);
    };
    let mut ready = File::from(ready);
    if let Err(err) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        let _ = write!(ready, "unshare(CLONE_NEWUSER|CLONE_NEWNS): {err}");
        return Some(125);
    }
    if ready.write_all(b"R").is_err() {
        return Some(125);
    }
    drop(ready);
    let mut go = [0u8; 1];
    match File::from(release).read(&mut go) {
        Ok(1) if go[0] == b'G' => {}
        // The parent failed to map us and has reported why.
        _ => return Some(125),
    }
    // Drop the host's supplementary groups (unmapped, shown as nobody);
    // refused in single-id mode, where setgroups is denied, which is fine.
    let _ = nix::unistd::setgroups(&[]);
    // Mounts made inside must never propagate back to the host's namespace.
    if let Err(err) = mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>) {
        eprintln!("kiln: make mounts private in the user namespace: {err}");
        return Some(125);
    }
    None
}
