//! Kernel facts for `kiln info` and the mode decision, each tried for real in
//! a short-lived child (`/proc/self/exe __kiln-probe WHAT DIR`) so the
//! engine's own process never changes namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{mknod, Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::idmap::{self, IdMap, MapMode};

/// The hidden argv[1] that selects a probe.
pub const PROBE_ARG: &str = "__kiln-probe";

/// What `kiln info` shows about the environment.
#[derive(Debug, Clone)]
pub struct Report {
    pub kernel: String,
    pub mode: MapMode,
    /// The maps kiln uses (the ones in effect when already inside).
    pub uid_maps: Vec<IdMap>,
    pub gid_maps: Vec<IdMap>,
    pub max_user_namespaces: Option<u64>,
    pub unprivileged_userns_clone: Option<u64>,
    pub apparmor_restrict: Option<u64>,
    /// Overlay with `userxattr` mounts in a user namespace (or as root).
    pub overlay_in_userns: Result<(), String>,
    /// An unprivileged `mknod c 0 0` (overlay whiteout) works.
    pub whiteouts: Result<(), String>,
}

/// Gathers the report; the overlay and whiteout probes work in a scratch
/// directory under `scratch_parent` (use the store's filesystem: that is the
/// one overlay must work on).
pub fn gather(scratch_parent: &Path) -> Report {
    let mode = detect();
    let (uid_maps, gid_maps) = if crate::userns::inside() {
        let read = |p: &str| idmap::parse_proc_map(&std::fs::read_to_string(p).unwrap_or_default());
        (read("/proc/self/uid_map"), read("/proc/self/gid_map"))
    } else {
        (mode.uid_maps(Uid::effective().as_raw()), mode.gid_maps(Gid::effective().as_raw()))
    };
    let number = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse().ok());
    let runnable = !matches!(mode, MapMode::Unavailable { .. });
    let skipped = || Err("user namespaces are unavailable".to_string());
    Report {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        uid_maps,
        gid_maps,
        max_user_namespaces: number("/proc/sys/user/max_user_namespaces"),
        unprivileged_userns_clone: number("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restrict: number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        overlay_in_userns: if runnable { probe("overlay", scratch_parent) } else { skipped() },
        whiteouts: if runnable { probe("whiteout", scratch_parent) } else { skipped() },
        mode,
    }
}

/// Whether this process can create a user namespace and use its
/// capabilities (what Ubuntu's AppArmor restriction takes away).
pub fn userns_works() -> Result<(), String> {
    probe("userns", &std::env::temp_dir())
}

fn probe(what: &str, parent: &Path) -> Result<(), String> {
    let dir = scratch_dir(parent).map_err(|e| format!("create a scratch directory in {}: {e}", parent.display()))?;
    let out = Command::new("/proc/self/exe").arg(PROBE_ARG).arg(what).arg(&dir).output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| format!("start the probe: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(if text.is_empty() { format!("probe exited with {}", out.status) } else { text })
}

fn scratch_dir(parent: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(parent)?;
    for n in 0..100 {
        let dir = parent.join(format!(".kiln-probe-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
}

/// The probe child's body: `args` are WHAT and DIR. Exit 0 when it worked,
/// else 1 with the reason on stderr.
pub(crate) fn helper_main(args: &[String]) -> i32 {
    let (Some(what), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: {PROBE_ARG} userns|overlay|whiteout DIR");
        return 2;
    };
    match run_probe(what, Path::new(dir)) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

fn run_probe(what: &str, dir: &Path) -> Result<(), String> {
    let userns = enter_own_namespace()?;
    match what {
        "userns" => mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::empty(), None::<&str>)
            .map_err(|e| format!("mount tmpfs in a user namespace: {e}")),
        "overlay" => {
            for sub in ["lower", "upper", "work", "merged"] {
                std::fs::create_dir(dir.join(sub)).map_err(|e| format!("create {sub}: {e}"))?;
            }
            let mut data = format!(
                "lowerdir={},upperdir={},workdir={}",
                dir.join("lower").display(),
                dir.join("upper").display(),
                dir.join("work").display()
            );
            if userns {
                data.push_str(",userxattr");
            }
            mount(Some("overlay"), &dir.join("merged"), Some("overlay"), MsFlags::empty(), Some(data.as_str()))
                .map_err(|e| format!("mount overlay ({data}): {e}"))
        }
        "whiteout" => mknod(&dir.join("wh"), SFlag::S_IFCHR, Mode::from_bits_truncate(0o000), 0)
            .map_err(|e| format!("mknod c 0 0: {e}")),
        other => Err(format!("unknown probe {other}")),
    }
}

/// Enters a private mount namespace, inside a new user namespace with a
/// single-id map unless already privileged. Returns whether a user
/// namespace was created.
fn enter_own_namespace() -> Result<bool, String> {
    let (uid, gid) = (Uid::effective().as_raw(), Gid::effective().as_raw());
    // Root without CAP_SYS_ADMIN (an unprivileged container's) cannot
    // unshare a mount namespace by itself: it probes from a user namespace,
    // as its builds run.
    let fresh = uid != 0 || unshare(CloneFlags::CLONE_NEWNS).is_err();
    if fresh {
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("unshare a user namespace: {e}"))?;
        let write = |file: &str, text: String| {
            std::fs::write(format!("/proc/self/{file}"), text).map_err(|e| format!("write /proc/self/{file}: {e}"))
        };
        write("setgroups", "deny".into())?;
        write("uid_map", format!("0 {uid} 1"))?;
        write("gid_map", format!("0 {gid} 1"))?;
    }
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("make mounts private: {e}"))?;
    Ok(fresh || !initial_user_namespace())
}

/// Whether this process is in the initial user namespace (the identity map).
fn initial_user_namespace() -> bool {
    let maps = idmap::parse_proc_map(&std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default());
    maps == [IdMap { container: 0, host: 0, size: u32::MAX }]
}

static DETECTED: std::sync::OnceLock<MapMode> = std::sync::OnceLock::new();

/// The mode for this run, decided once; a fallback's warning is logged the
/// first time.
pub fn detect() -> MapMode {
    DETECTED
        .get_or_init(|| {
            let facts = idmap::gather_facts(userns_works);
            let (mode, warning) = idmap::decide(&facts);
            if let Some(warning) = warning {
                log::warn!("{warning}");
            }
            log::info!("user namespace mode: {}", mode.name());
            mode
        })
        .clone()
}
