//! The RUN process's mounts as data: `plan` lists them, `prepare`/`cleanup`
//! create and remove the mount points the image lacks (so no stub is ever
//! committed), and `apply` performs them in the step's mount namespace.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::spec::{MountKind, RunSpec};
use crate::sys;

/// What is mounted at a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A fresh procfs for the step's PID namespace (falls back to binding the
    /// host's when refused, as in nested containers).
    Proc,
    /// A fresh filesystem of this type with these options.
    Fs { fstype: &'static str, data: String, flags: MsFlags },
    /// A bind mount of a host path (recursive for directories).
    Bind { source: PathBuf, recursive: bool },
    /// A symlink created inside a tmpfs of the plan.
    Symlink { to: &'static str },
}

/// Whether the mount point is a directory or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Dir,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: Kind,
    /// Absolute path inside the rootfs.
    pub target: String,
    pub target_type: TargetType,
    pub readonly: bool,
    /// The target lies in the image (not in a tmpfs of this plan): a missing
    /// one is a placeholder that `prepare` creates and `cleanup` removes.
    pub in_image: bool,
    /// Skip this mount (with a warning) when its target cannot be used,
    /// e.g. /etc/resolv.conf is a dangling symlink in the image.
    pub optional: bool,
}

const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn fs(fstype: &'static str, target: &str, data: &str, flags: MsFlags, in_image: bool) -> Mount {
    Mount {
        kind: Kind::Fs { fstype, data: data.to_string(), flags },
        target: target.to_string(),
        target_type: TargetType::Dir,
        readonly: false,
        in_image,
        optional: false,
    }
}

fn link(target: &str, to: &'static str) -> Mount {
    Mount {
        kind: Kind::Symlink { to },
        target: target.to_string(),
        target_type: TargetType::File,
        readonly: false,
        in_image: false,
        optional: false,
    }
}

fn bind(source: impl Into<PathBuf>, target: &str, target_type: TargetType, readonly: bool, in_image: bool) -> Mount {
    Mount {
        kind: Kind::Bind { source: source.into(), recursive: target_type == TargetType::Dir },
        target: target.to_string(),
        target_type,
        readonly,
        in_image,
        optional: false,
    }
}

/// The mounts of a RUN step, in order.
pub fn plan(spec: &RunSpec) -> Vec<Mount> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut plan = vec![
        Mount {
            kind: Kind::Proc,
            target: "/proc".into(),
            target_type: TargetType::Dir,
            readonly: false,
            in_image: true,
            optional: false,
        },
        // A fresh sysfs is refused in a user namespace that does not own the
        // network namespace, so bind the host's and make it read-only.
        bind("/sys", "/sys", TargetType::Dir, true, true),
        fs("tmpfs", "/dev", "mode=755,size=65536k", MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME, true),
    ];
    // No mknod in a user namespace: bind the host's nodes instead.
    for node in DEV_NODES {
        plan.push(bind(format!("/dev/{node}"), &format!("/dev/{node}"), TargetType::File, false, false));
    }
    plan.push(fs(
        "devpts",
        "/dev/pts",
        "newinstance,ptmxmode=0666,mode=0620",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        false,
    ));
    plan.push(link("/dev/ptmx", "pts/ptmx"));
    let shm = spec.shm_size.map_or_else(|| "65536k".to_string(), |bytes| bytes.to_string());
    plan.push(fs("tmpfs", "/dev/shm", &format!("mode=1777,size={shm}"), nosuid_nodev_noexec, false));
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        plan.push(link(&format!("/dev/{name}"), to));
    }
    if spec.bind_resolv_hosts {
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            // A private network's own files (see `network`), else the host's.
            let source = match &spec.etc_files {
                Some(dir) => dir.join(Path::new(file).file_name().expect("a file name")),
                None => PathBuf::from(file),
            };
            if source.exists() {
                let mut m = bind(source, file, TargetType::File, true, true);
                m.optional = true;
                plan.push(m);
            }
        }
    }
    for extra in &spec.mounts {
        let in_image = !under_dev(&extra.target);
        match extra.kind {
            MountKind::Bind => {
                let target_type = if extra.source.is_dir() { TargetType::Dir } else { TargetType::File };
                plan.push(bind(extra.source.clone(), &extra.target, target_type, extra.readonly, in_image));
            }
            MountKind::Tmpfs { size } => {
                let data = size.map(|s| format!("size={s}")).unwrap_or_default();
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                if extra.readonly {
                    flags |= MsFlags::MS_RDONLY;
                }
                plan.push(fs("tmpfs", &extra.target, &data, flags, in_image));
            }
        }
    }
    plan
}

fn under_dev(target: &str) -> bool {
    Path::new(target).starts_with("/dev")
}

/// The mount points this spec would create in the image right now (absolute
/// paths inside the rootfs, parents first). `run` creates and removes them
/// itself; this tells a caller which paths are not the step's own work.
pub fn placeholders(spec: &RunSpec) -> Vec<PathBuf> {
    let Ok(root) = std::fs::File::open(&spec.rootfs) else { return Vec::new() };
    let mut out = Vec::new();
    for m in plan(spec).iter().filter(|m| m.in_image) {
        for path in missing_chain(&root, &m.target) {
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// The target and its ancestors that do not exist, outermost first.
fn missing_chain(root: &impl AsFd, target: &str) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut path = PathBuf::from(target);
    while path != Path::new("/") && !path.as_os_str().is_empty() {
        if !in_root_exists(root, &path) {
            missing.push(path.clone());
        } else {
            break;
        }
        if !path.pop() {
            break;
        }
    }
    missing.reverse();
    missing
}

fn in_root_exists(root: &impl AsFd, path: &Path) -> bool {
    sys::open_in_root(root, path, libc::O_PATH, 0).is_ok() || dangling_link(root, path)
}

/// A symlink whose target does not exist in the image: it exists (creating
/// anything there would fail), but cannot be mounted over.
fn dangling_link(root: &impl AsFd, path: &Path) -> bool {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return false };
    let Ok(dir) = sys::open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY, 0) else { return false };
    nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        .unwrap_or(false)
}

/// A mount point created by `prepare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub path: PathBuf,
    pub target_type: TargetType,
}

/// Creates the image-side mount points that are missing. Returns them so
/// `cleanup` removes exactly these. On error, what was created is removed.
pub fn prepare(spec: &RunSpec) -> Result<Vec<Created>, (PathBuf, std::io::Error)> {
    let root = std::fs::File::open(&spec.rootfs).map_err(|e| (spec.rootfs.clone(), e))?;
    let mut created = Vec::new();
    for m in plan(spec).iter().filter(|m| m.in_image) {
        let chain = missing_chain(&root, &m.target);
        let last = chain.len().saturating_sub(1);
        for (i, path) in chain.into_iter().enumerate() {
            let target_type = if i == last { m.target_type } else { TargetType::Dir };
            if let Err(e) = create_in_root(&root, &path, target_type) {
                if m.optional {
                    // `apply` skips it with a warning (e.g. a dangling
                    // /etc/resolv.conf symlink in the image).
                    break;
                }
                cleanup(spec, &created);
                return Err((path, e));
            }
            created.push(Created { path, target_type });
        }
    }
    Ok(created)
}

fn parent_dir(root: &impl AsFd, path: &Path) -> std::io::Result<(OwnedFd, PathBuf)> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let dir = sys::open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok((dir, PathBuf::from(name)))
}

fn create_in_root(root: &impl AsFd, path: &Path, target_type: TargetType) -> std::io::Result<()> {
    let (dir, name) = parent_dir(root, path)?;
    match target_type {
        TargetType::Dir => mkdirat(Some(dir.as_raw_fd()), &name, Mode::from_bits_truncate(0o755))?,
        TargetType::File => {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = openat(Some(dir.as_raw_fd()), &name, flags, Mode::from_bits_truncate(0o644))?;
            nix::unistd::close(fd)?;
        }
    }
    Ok(())
}

/// Removes the placeholders `prepare` created, innermost first, if they are
/// still empty (a step that filled one keeps it: that is its own work).
pub fn cleanup(spec: &RunSpec, created: &[Created]) {
    let Ok(root) = std::fs::File::open(&spec.rootfs) else { return };
    for c in created.iter().rev() {
        let Ok((dir, name)) = parent_dir(&root, &c.path) else { continue };
        let empty_file =
            nix::sys::stat::fstatat(Some(dir.as_raw_fd()), &name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0)
                .unwrap_or(false);
        let result = match c.target_type {
            TargetType::Dir => unlinkat(Some(dir.as_raw_fd()), &name, UnlinkatFlags::RemoveDir),
            TargetType::File if empty_file => unlinkat(Some(dir.as_raw_fd()), &name, UnlinkatFlags::NoRemoveDir),
            TargetType::File => continue,
        };
        if let Err(err) = result {
            log::debug!("keep mount point {}: {err}", c.path.display());
        }
    }
}

/// Performs the plan under `rootfs` (already a mount point of this private
/// namespace). Every target is resolved inside the rootfs and mounted through
/// its descriptor, so image symlinks cannot redirect a mount to the host.
pub fn apply(root: &impl AsFd, plan: &[Mount]) -> Result<(), String> {
    for m in plan {
        if let Err(err) = apply_one(root, m) {
            if m.optional {
                // The helper has no logger; its stderr is the step's.
                eprintln!("kiln: warning: skip mounting {}: {err}", m.target);
                continue;
            }
            return Err(format!("mount {}: {err}", m.target));
        }
    }
    Ok(())
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn apply_one(root: &impl AsFd, m: &Mount) -> Result<(), String> {
    let target = Path::new(&m.target);
    if let Kind::Symlink { to } = m.kind {
        let (dir, name) = parent_dir(root, target).map_err(|e| e.to_string())?;
        return nix::unistd::symlinkat(to, Some(dir.as_raw_fd()), &name).map_err(|e| e.to_string());
    }
    if !m.in_image && !in_root_exists(root, target) {
        create_in_root(root, target, m.target_type).map_err(|e| format!("create mount point: {e}"))?;
    }
    let open_flags = libc::O_PATH | if m.target_type == TargetType::Dir { libc::O_DIRECTORY } else { 0 };
    let fd = sys::open_in_root(root, target, open_flags, 0).map_err(|e| e.to_string())?;
    let path = fd_path(&fd);
    match &m.kind {
        Kind::Proc => {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if mount(Some("proc"), path.as_str(), Some("proc"), flags, None::<&str>).is_err() {
                mount(Some("/proc"), path.as_str(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .map_err(|e| format!("bind the host's /proc: {e}"))?;
            }
        }
        Kind::Fs { fstype, data, flags } => {
            mount(Some(*fstype), path.as_str(), Some(*fstype), *flags, Some(data.as_str()))
                .map_err(|e| e.to_string())?;
        }
        Kind::Bind { source, recursive } => {
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            mount(Some(source.as_path()), path.as_str(), None::<&str>, flags, None::<&str>)
                .map_err(|e| format!("bind {}: {e}", source.display()))?;
        }
        Kind::Symlink { .. } => {}
    }
    drop(fd);
    if m.readonly {
        remount_readonly(root, target, open_flags)?;
    }
    Ok(())
}

/// Read-only remount of a bind mount, keeping the flags the kernel locks in
/// a user namespace (nosuid, nodev, noexec, atime), or it refuses.
fn remount_readonly(root: &impl AsFd, target: &Path, open_flags: libc::c_int) -> Result<(), String> {
    let fd = sys::open_in_root(root, target, open_flags, 0).map_err(|e| e.to_string())?;
    let path = fd_path(&fd);
    let st = nix::sys::statvfs::statvfs(path.as_str()).map_err(|e| e.to_string())?;
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(fs_flag) {
            flags |= ms_flag;
        }
    }
    mount(None::<&str>, path.as_str(), None::<&str>, flags, None::<&str>).map_err(|e| format!("remount read-only: {e}"))
}

#[cfg(test)]
mod tests;
