//! Mounting a step's filesystem: kernel overlay, fuse-overlayfs, or the plain copy driver.
//!
//! Kernel overlay: the new mount API first (fsopen + one `fsconfig lowerdir+` per layer, kernel ≥ 6.8), so
//! no option string has to fit in a page; on older kernels mount(2) with one string, and when that string
//! would not fit a page, the lowers are named by short symlinks (`<work>.l/0`, `1`, …) and the mount is made
//! from a child process that chdirs there, as containers/storage does. Inside a user namespace the mount
//! uses `userxattr`, and always `index=off,metacopy=off,redirect_dir=off`-equivalents where the kernel
//! takes them, so the upper holds whole files and whiteouts only, which `diff::write_diff` understands.
//!
//! Kernel overlay mounts are `volatile` where the kernel knows the option (5.10 and later): unmounting an
//! overlay otherwise syncs the whole filesystem its upper dir is on (every dirty page on the disk, not only
//! the step's), which made each RUN wait for the disk. What a step wrote reaches the store's durable form as
//! its blob, written and fsynced at commit; the upper, adopted as the layer's dir, is like any unpacked
//! layer tree (see RELIABILITY.md: not synced, and rebuilt from the blob when in doubt).

use std::fmt;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use crate::naive;
pub use crate::namespace::in_user_namespace;
use crate::sys;
use crate::whiteout::XattrPrefix;

/// A storage driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    Overlay,
    FuseOverlayfs,
    /// The plain copy driver.
    Vfs,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::FuseOverlayfs => "fuse-overlayfs",
            Driver::Vfs => "vfs",
        }
    }

    /// Whether a root made with this driver is a copy of its lowers (vfs) rather than a view stacked on
    /// them: a caller that needs only part of the layers does better to copy just that part.
    pub fn copies(self) -> bool {
        self == Driver::Vfs
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Driver {
    type Err = MountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "overlay" | "overlay2" => Ok(Driver::Overlay),
            "fuse-overlayfs" => Ok(Driver::FuseOverlayfs),
            "vfs" => Ok(Driver::Vfs),
            other => Err(MountError::UnknownDriver(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("unknown storage driver {0:?} (expected overlay, fuse-overlayfs or vfs)")]
    UnknownDriver(String),
    #[error("mount overlay at {}", .target.display())]
    Overlay {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount fuse-overlayfs at {}: {stderr}", .target.display())]
    Fuse { target: PathBuf, stderr: String },
    #[error("run fuse-overlayfs")]
    FuseSpawn(#[source] std::io::Error),
    #[error("copy the lower layers to {}", .target.display())]
    Snapshot {
        target: PathBuf,
        #[source]
        source: naive::SnapshotError,
    },
    #[error("prepare {}", .path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmount {}", .target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A mounted step filesystem; unmounted when dropped (errors then are logged), or by [`MountGuard::unmount`].
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    driver: Driver,
    mounted: bool,
    /// fuse-overlayfs serving the mount (run in the foreground, so it dies with kiln).
    daemon: Option<FuseDaemon>,
}

impl MountGuard {
    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Unmounts now, reporting failure.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.mounted = false;
        let result = unmount_target(self.driver, &self.target);
        if let Some(daemon) = self.daemon.take() {
            daemon.reap(result.is_ok());
        }
        result
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let mut unmounted = !self.mounted;
        if self.mounted {
            match unmount_target(self.driver, &self.target) {
                Ok(()) => unmounted = true,
                Err(e) => log::warn!("{e}"),
            }
        }
        if let Some(daemon) = self.daemon.take() {
            daemon.reap(unmounted);
        }
    }
}

/// A fuse-overlayfs process kept in the foreground (`-f`), started with a
/// parent-death signal from a thread that lives as long as kiln: a
/// daemonized one would outlive a killed kiln forever, holding kiln's mount
/// namespace (and so its own mount) alive.
#[derive(Debug)]
struct FuseDaemon {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl FuseDaemon {
    /// Waits for the daemon to exit after its mount is gone (killing it if
    /// it lingers, or right away when the unmount failed).
    fn reap(mut self, unmounted: bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while unmounted && std::time::Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stderr.take() {
            let _ = reader.join();
        }
    }
}

fn unmount_target(driver: Driver, target: &Path) -> Result<(), MountError> {
    let err = |source| MountError::Unmount { target: target.into(), source };
    match driver {
        Driver::Vfs => Ok(()),
        Driver::Overlay => nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(|e| err(e.into())),
        Driver::FuseOverlayfs => match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(_) => {
                let status = Command::new("fusermount3").arg("-u").arg(target).status().map_err(err)?;
                if status.success() {
                    Ok(())
                } else {
                    Err(err(std::io::Error::other(format!("fusermount3 -u exited with {status}"))))
                }
            }
        },
    }
}

/// Mounts `lowers` (topmost first) with `upper` and `work` at `target` using `driver`. For [`Driver::Vfs`]
/// the merged lowers are copied into `target` and the diff is taken with [`naive::diff_to_layer`]; `upper`
/// and `work` are not used.
pub fn mount(
    driver: Driver,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<MountGuard, MountError> {
    let mut daemon = None;
    match driver {
        Driver::Overlay => mount_overlay(lowers, upper, work, target)?,
        Driver::FuseOverlayfs => daemon = Some(mount_fuse(lowers, upper, work, target)?),
        Driver::Vfs => {
            naive::snapshot(lowers, target, &XattrPrefix::for_current_namespace())
                .map_err(|source| MountError::Snapshot { target: target.into(), source })?;
        }
    }
    Ok(MountGuard { target: target.into(), driver, mounted: true, daemon })
}

/// Overlay needs at least one lower; a step on `scratch` gets an empty one next to the work dir.
fn lowers_or_empty(lowers: &[PathBuf], work: &Path) -> Result<Vec<PathBuf>, MountError> {
    if !lowers.is_empty() {
        return Ok(lowers.to_vec());
    }
    let empty = PathBuf::from(format!("{}.empty", work.display()));
    fs::create_dir_all(&empty).map_err(|source| MountError::Prepare { path: empty.clone(), source })?;
    Ok(vec![empty])
}

fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), MountError> {
    let lowers = lowers_or_empty(lowers, work)?;
    match mount_overlay_fsconfig(&lowers, upper, work, target) {
        Ok(()) => Ok(()),
        // EINVAL from `lowerdir+` (kernel < 6.8), ENOSYS from fsopen (kernel < 5.2).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            log::debug!("fsconfig lowerdir+ unavailable ({e}); using mount(2)");
            mount_overlay_legacy(&lowers, upper, work, target)
        }
        Err(source) => Err(MountError::Overlay { target: target.into(), source }),
    }
}

/// The options beyond the directories: no index, no metacopy, no redirects (which userxattr refuses
/// anyway), so the upper holds plain files and whiteouts; `volatile` (see the module docs) when asked.
fn extra_options(volatile: bool) -> Vec<(&'static str, Option<&'static str>)> {
    let mut opts = vec![("index", Some("off")), ("metacopy", Some("off"))];
    if volatile {
        opts.push(("volatile", None));
    }
    if in_user_namespace() {
        opts.push(("userxattr", None));
    } else {
        opts.push(("redirect_dir", Some("off")));
    }
    opts
}

fn mount_overlay_fsconfig(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> std::io::Result<()> {
    let fs_ctx = sys::fsopen("overlay")?;
    let fd = fs_ctx.as_fd();
    for lower in lowers {
        sys::fsconfig_set_string(fd, "lowerdir+", lower.as_os_str().as_bytes())?;
    }
    sys::fsconfig_set_string(fd, "upperdir", upper.as_os_str().as_bytes())?;
    sys::fsconfig_set_string(fd, "workdir", work.as_os_str().as_bytes())?;
    // Every kernel with `lowerdir+` (6.8) knows `volatile` (5.10).
    for (key, value) in extra_options(true) {
        match value {
            Some(v) => sys::fsconfig_set_string(fd, key, v.as_bytes())?,
            None => sys::fsconfig_set_flag(fd, key)?,
        }
    }
    sys::fsconfig_create(fd)?;
    let mnt = sys::fsmount(fd)?;
    sys::move_mount(mnt.as_fd(), target)
}

/// The most option bytes mount(2) takes: one page, NUL included.
fn page_limit() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |p| p as usize) - 1
}

fn legacy_data(lowerdir: &str, upper: &Path, work: &Path, volatile: bool) -> String {
    let mut data = format!("lowerdir={lowerdir},upperdir={},workdir={}", upper.display(), work.display());
    for (key, value) in extra_options(volatile) {
        match value {
            Some(v) => data.push_str(&format!(",{key}={v}")),
            None => data.push_str(&format!(",{key}")),
        }
    }
    data
}

/// Mounts overlay with mount(2) and one option string, for kernels without `lowerdir+`; public so tests can
/// exercise it on new kernels. When the absolute lower paths do not fit a page, they are replaced by short
/// symlinks in `<work>.l/`, resolved relative to that directory by a child process that chdirs there.
pub fn mount_overlay_legacy(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), MountError> {
    match mount_legacy_with(lowers, upper, work, target, true) {
        // A kernel older than 5.10 refuses the option it does not know.
        Err(MountError::Overlay { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
            log::debug!("overlay refused volatile ({source}); mounting without it");
            mount_legacy_with(lowers, upper, work, target, false)
        }
        other => other,
    }
}

fn mount_legacy_with(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<(), MountError> {
    let lowers = lowers_or_empty(lowers, work)?;
    let overlay_err = |source| MountError::Overlay { target: target.into(), source };
    let joined: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let data = legacy_data(&joined.join(":"), upper, work, volatile);
    if data.len() <= page_limit() {
        return nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| overlay_err(e.into()));
    }
    let links = PathBuf::from(format!("{}.l", work.display()));
    let prep = |source| MountError::Prepare { path: links.clone(), source };
    if links.exists() {
        fs::remove_dir_all(&links).map_err(prep)?;
    }
    fs::create_dir_all(&links).map_err(prep)?;
    let mut short = Vec::new();
    for (i, lower) in lowers.iter().enumerate() {
        let name = format!("{i:x}");
        std::os::unix::fs::symlink(lower, links.join(&name)).map_err(prep)?;
        short.push(name);
    }
    let abs = |p: &Path| if p.is_absolute() { Ok(p.to_path_buf()) } else { std::env::current_dir().map(|c| c.join(p)) };
    let upper = abs(upper).map_err(prep)?;
    let work_abs = abs(work).map_err(prep)?;
    let target_abs = abs(target).map_err(prep)?;
    let data = legacy_data(&short.join(":"), &upper, &work_abs, volatile);
    if data.len() > page_limit() {
        return Err(overlay_err(std::io::Error::other(format!(
            "{} lower layers do not fit the mount options even with short names",
            lowers.len()
        ))));
    }
    sys::mount_overlay_from_dir(&links, &target_abs, &data).map_err(overlay_err)
}

/// How long fuse-overlayfs may take to mount.
const FUSE_MOUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn mount_fuse(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<FuseDaemon, MountError> {
    use std::os::unix::fs::MetadataExt;
    let lowers = lowers_or_empty(lowers, work)?;
    let joined: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let opts = format!("lowerdir={},upperdir={},workdir={}", joined.join(":"), upper.display(), work.display());
    let prep = |source| MountError::Prepare { path: target.into(), source };
    // The mount shows as the target changing device.
    let before = fs::metadata(target).map_err(prep)?.dev();
    let mut cmd = Command::new("fuse-overlayfs");
    cmd.arg("-f").arg("-o").arg(&opts).arg(target);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    sys::tie_to_process(&mut cmd);
    let mut child = spawn_tied(cmd).map_err(MountError::FuseSpawn)?;
    let stderr = child.stderr.take().map(|mut pipe| {
        quiet_thread("kiln-fuse-stderr", move || {
            let mut text = Vec::new();
            let _ = std::io::Read::read_to_end(&mut pipe, &mut text);
            text
        })
    });
    let stderr = match stderr {
        Some(Ok(reader)) => Some(reader),
        Some(Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(MountError::FuseSpawn(e));
        }
        None => None,
    };
    let mut daemon = FuseDaemon { child, stderr };
    let deadline = std::time::Instant::now() + FUSE_MOUNT_TIMEOUT;
    loop {
        if fs::metadata(target).is_ok_and(|m| m.dev() != before) {
            return Ok(daemon);
        }
        let exited = daemon.child.try_wait().map_err(MountError::FuseSpawn)?;
        if exited.is_some() || std::time::Instant::now() > deadline {
            let _ = daemon.child.kill();
            let status = daemon.child.wait().map_err(MountError::FuseSpawn)?;
            let text = daemon.stderr.take().and_then(|r| r.join().ok()).unwrap_or_default();
            let mut stderr = String::from_utf8_lossy(&text).trim().to_string();
            if stderr.is_empty() {
                stderr = match exited {
                    Some(_) => format!("fuse-overlayfs exited with {status}"),
                    None => format!("fuse-overlayfs did not mount within {}s", FUSE_MOUNT_TIMEOUT.as_secs()),
                };
            }
            return Err(MountError::Fuse { target: target.into(), stderr });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Starts a helper thread with every signal blocked: signals meant for kiln
/// (SIGCHLD, or a SIGTERM that `kiln run` reads from a signalfd to pass on)
/// must not be taken, and acted on by default, by a thread that does not
/// want them. It starts with the mask already set (blocked here around the
/// spawn); programs it spawns start with none blocked (std resets the mask).
fn quiet_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut old = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old));
    let started = std::thread::Builder::new().name(name.into()).spawn(f);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    started
}

/// Spawns `cmd` from one thread that lives as long as this process, so a
/// parent-death signal set for it fires when kiln dies, not when the thread
/// that asked for the mount ends (the signal belongs to the spawning thread).
fn spawn_tied(cmd: Command) -> std::io::Result<std::process::Child> {
    use std::sync::mpsc;
    type Request = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<Option<mpsc::Sender<Request>>>> = std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        // The sender stays in the static, so the thread never ends.
        let started = quiet_thread("kiln-fuse-spawner", move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        std::sync::Mutex::new(started.ok().map(|_| tx))
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = match spawner.lock() {
        Ok(guard) => guard.as_ref().map(|tx| tx.send((cmd, reply_tx)).is_ok()).unwrap_or(false),
        Err(_) => false,
    };
    if !sent {
        return Err(std::io::Error::other("the thread that starts fuse-overlayfs is not running"));
    }
    reply_rx.recv().map_err(|_| std::io::Error::other("the thread that starts fuse-overlayfs is gone"))?
}

/// Picks the best driver that works here, probing with scratch directories under `probe_dir` (which should
/// be on the store's filesystem): kernel overlay, then fuse-overlayfs, then vfs.
pub fn detect_driver_in(probe_dir: &Path) -> Driver {
    for driver in [Driver::Overlay, Driver::FuseOverlayfs] {
        if driver == Driver::FuseOverlayfs && !fuse_available() {
            continue;
        }
        match probe(driver, probe_dir) {
            Ok(()) => return driver,
            Err(e) => log::debug!("storage driver {driver} unavailable: {e}"),
        }
    }
    Driver::Vfs
}

/// [`detect_driver_in`] the system's temporary directory.
pub fn detect_driver() -> Driver {
    detect_driver_in(&std::env::temp_dir())
}

fn fuse_available() -> bool {
    fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok()
        && Command::new("fuse-overlayfs").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn probe(driver: Driver, probe_dir: &Path) -> Result<(), MountError> {
    let base = probe_dir.join(format!(".kiln-probe-{}-{}", std::process::id(), driver.name()));
    let prep = |source| MountError::Prepare { path: base.clone(), source };
    let dirs = ["lower", "upper", "work", "merged"].map(|d| base.join(d));
    for d in &dirs {
        fs::create_dir_all(d).map_err(prep)?;
    }
    let result = mount(driver, &[dirs[0].clone()], &dirs[1], &dirs[2], &dirs[3]).and_then(MountGuard::unmount);
    let _ = fs::remove_dir_all(&base);
    result
}
