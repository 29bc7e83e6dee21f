//! `RUN --mount`: turns the step's typed mounts (checked and defaulted by
//! the planner, `crate::plan::mounts`) into the runtime's extra mounts and
//! environment. What a mount exposes never
//! reaches the layer: every mount is a bind or tmpfs over the rootfs, and the
//! runtime removes the mount points it had to create.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_runtime::{MountKind as RtKind, MountSpec};
use nix::fcntl::{Flock, FlockArg};

use crate::context::{BuildContext, SourceMatch};
use crate::plan::{CopyFrom, Mount, MountFrom, Sharing};

use super::state::join_workdir;

/// Where `--secret id=…` takes the secret's bytes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Parses a `--secret` value: `id=NAME,src=FILE`, `id=NAME,env=VAR`, or
/// `id=NAME` alone (the variable NAME, or the file NAME with `type=file`).
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource), String> {
    let (mut id, mut file, mut env, mut kind) = (None, None, None, None);
    for part in spec.split(',') {
        let (k, v) =
            part.split_once('=').ok_or_else(|| format!("--secret {spec:?}: expected key=value, got {part:?}"))?;
        match k.trim() {
            "id" => id = Some(v.to_string()),
            "src" | "source" => file = Some(PathBuf::from(v)),
            "env" => env = Some(v.to_string()),
            "type" if v == "file" || v == "env" => kind = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "--secret {spec:?}: unknown field {part:?} (expected id, src, env or type=file|env)"
                ))
            }
        }
    }
    let id = id.filter(|i| !i.is_empty()).ok_or_else(|| format!("--secret {spec:?}: id=NAME is required"))?;
    let source = match (file, env) {
        (Some(f), None) => SecretSource::File(f),
        (None, Some(e)) => SecretSource::Env(e),
        (None, None) if kind.as_deref() == Some("file") => SecretSource::File(PathBuf::from(&id)),
        (None, None) => SecretSource::Env(id.clone()),
        (Some(_), Some(_)) => return Err(format!("--secret {spec:?}: give src or env, not both")),
    };
    Ok((id, source))
}

/// Parses a `--ssh` value: `ID` (the agent at `$SSH_AUTH_SOCK`) or `ID=SOCKET`.
pub fn parse_ssh(spec: &str) -> Result<(String, PathBuf), String> {
    let (id, path) = match spec.split_once('=') {
        Some((id, path)) => (id, PathBuf::from(path.split(',').next().unwrap_or(path))),
        None => {
            let sock = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty());
            let sock = sock.ok_or_else(|| {
                format!("--ssh {spec}: SSH_AUTH_SOCK is not set; give the agent socket as {spec}=PATH")
            })?;
            (spec, PathBuf::from(sock))
        }
    };
    if id.is_empty() {
        return Err(format!("--ssh {spec:?}: the id is empty"));
    }
    Ok((id.to_string(), path))
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("RUN --mount type={kind}: {message}")]
    Invalid { kind: &'static str, message: String },
    #[error(
        "RUN --mount type=secret: secret {0:?} is required but was not given (use kiln build --secret id={0},src=FILE)"
    )]
    MissingSecret(String),
    #[error("RUN --mount type=ssh: ssh agent {0:?} is required but was not given (use kiln build --ssh {0}[=SOCKET])")]
    MissingSsh(String),
    #[error("RUN --mount type=secret: read secret {id:?}")]
    ReadSecret {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("RUN --mount from={0}")]
    From(String),
    #[error("RUN --mount: prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Looks up what a mount's `from=` names (see [`MountSources::from`]).
pub type FromContext<'a> = dyn Fn(&CopyFrom, &str) -> Result<Arc<BuildContext>, String> + 'a;

/// What a step's mounts need from the build.
pub struct MountSources<'a> {
    /// The store root: cache mounts live under `<root>/kiln/cache-mounts`.
    pub store_root: &'a Path,
    /// Scratch space for secret files, rw copies and private caches; removed
    /// with the build.
    pub scratch: &'a Path,
    /// The build context (binds without `from`), with its ignore rules.
    pub context: &'a BuildContext,
    /// What `from=` names (a stage, an image or a named context), as a
    /// context: a named context brings its own ignore rules. Called with
    /// what `from=` names and the mount's `source` path, which the returned
    /// context must hold (a stage read under vfs is copied out that far).
    pub from: &'a FromContext<'a>,
    pub secrets: &'a HashMap<String, SecretSource>,
    /// `--ssh id=SOCKET`.
    pub ssh: &'a HashMap<String, PathBuf>,
}

/// The runtime mounts and environment of one step. Holds cache locks and
/// temporary copies until dropped (after the step ran).
#[derive(Default)]
pub struct Prepared {
    pub mounts: Vec<MountSpec>,
    /// `NAME=value` entries that override the step's environment.
    pub env: Vec<String>,
    _locks: Vec<Flock<fs::File>>,
    _temp: Vec<tempfile::TempDir>,
}

/// Resolves `mounts` for a step whose WORKDIR is `workdir`.
pub fn prepare(mounts: &[Mount], src: &MountSources, workdir: &str) -> Result<Prepared, MountError> {
    let mut out = Prepared::default();
    for m in mounts {
        match m {
            Mount::Bind { target, from, source, readonly } => {
                let target = join_workdir(workdir, target);
                bind(src, (from.as_ref(), source), target, *readonly, &mut out)?
            }
            Mount::Cache { .. } => cache(m, src, workdir, &mut out)?,
            Mount::Tmpfs { target, size } => out.mounts.push(MountSpec {
                source: PathBuf::new(),
                target: join_workdir(workdir, target),
                readonly: false,
                kind: RtKind::Tmpfs { size: *size },
            }),
            Mount::Secret { .. } => secret(m, src, &mut out)?,
            Mount::Ssh { id, target, required } => {
                let Some(socket) = src.ssh.get(id) else {
                    if *required {
                        return Err(MountError::MissingSsh(id.clone()));
                    }
                    continue;
                };
                out.env.push(format!("SSH_AUTH_SOCK={target}"));
                out.mounts.push(MountSpec {
                    source: socket.clone(),
                    target: target.clone(),
                    readonly: false,
                    kind: RtKind::Bind,
                });
            }
        }
    }
    Ok(out)
}

/// The context, or the stage or image `from` names, and the path in it.
type BindSource<'a> = (Option<&'a MountFrom>, &'a str);

fn bind(
    src: &MountSources,
    (from, path): BindSource,
    target: String,
    readonly: bool,
    out: &mut Prepared,
) -> Result<(), MountError> {
    let named;
    let ctx: &BuildContext = match from {
        Some(from) => {
            named = (src.from)(&from.source, path).map_err(|e| MountError::From(format!("{}: {e}", from.name)))?;
            &named
        }
        None => src.context,
    };
    let kind = "bind";
    let source = inside(ctx.root(), path, kind)?;
    let source = if !ctx.ignore().is_empty() {
        // As in BuildKit, where the context arrives filtered, an ignored
        // file is not in the mount: the step sees a filtered copy (hard
        // links where it can, read-only binds cannot write through them).
        let tmp = temp_dir(src.scratch, "bind-")?;
        let view = tmp.path().join("src");
        filtered_view(ctx, &source, &view, readonly, kind)?;
        out._temp.push(tmp);
        view
    } else if readonly {
        source
    } else {
        // Writes to a rw bind are discarded, as BuildKit does: the step
        // writes to a throwaway copy.
        let tmp = temp_dir(src.scratch, "bind-")?;
        let copy = tmp.path().join("src");
        copy_tree(&source, &copy)?;
        out._temp.push(tmp);
        copy
    };
    out.mounts.push(MountSpec { source, target, readonly, kind: RtKind::Bind });
    Ok(())
}

fn cache(m: &Mount, src: &MountSources, workdir: &str, out: &mut Prepared) -> Result<(), MountError> {
    let Mount::Cache { id, target, sharing, from, source, mode, uid, gid, readonly } = m else {
        return Ok(());
    };
    let target = join_workdir(workdir, target);
    let id = id.clone().unwrap_or_else(|| target.clone());
    let seed = match from {
        Some(from) => {
            let root = (src.from)(&from.source, source).map_err(|e| MountError::From(format!("{}: {e}", from.name)))?;
            Some(inside(root.root(), source, "cache")?)
        }
        None => None,
    };

    let dir = cache_mount_dir(src.store_root, &id);
    let parent = dir.parent().unwrap_or(src.store_root);
    fs::create_dir_all(parent).map_err(|source| MountError::Io { path: parent.to_path_buf(), source })?;
    // Escaped ids never start with '.', so lock names cannot collide with them.
    let lock_path = parent.join(format!(".{}.lock", dir.file_name().unwrap_or_default().to_string_lossy()));
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| MountError::Io { path: lock_path.clone(), source })?;
    let dir = match sharing {
        Sharing::Locked => {
            let lock = Flock::lock(lock_file, FlockArg::LockExclusive)
                .map_err(|(_, e)| MountError::Io { path: lock_path.clone(), source: e.into() })?;
            out._locks.push(lock);
            dir
        }
        Sharing::Private => match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                out._locks.push(lock);
                dir
            }
            // In use by another private step: this one gets a fresh cache.
            Err(_) => {
                let tmp = temp_dir(src.scratch, "cache-")?;
                let fresh = tmp.path().join("cache");
                out._temp.push(tmp);
                fresh
            }
        },
        // Shared caches are used concurrently; a shared lock keeps a
        // private or locked user from taking the directory meanwhile.
        Sharing::Shared => {
            let lock = Flock::lock(lock_file, FlockArg::LockShared)
                .map_err(|(_, e)| MountError::Io { path: lock_path.clone(), source: e.into() })?;
            out._locks.push(lock);
            dir
        }
    };
    if !dir.exists() {
        create_cache_dir(&dir, seed.as_deref(), (*uid, *gid), *mode)?;
    }
    out.mounts.push(MountSpec { source: dir, target, readonly: *readonly, kind: RtKind::Bind });
    Ok(())
}

/// Creates a cache directory atomically, so a concurrent step never sees it
/// half-seeded.
fn create_cache_dir(dir: &Path, seed: Option<&Path>, (uid, gid): (u32, u32), mode: u32) -> Result<(), MountError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MountError::Io { path, source }
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let tmp = tempfile::Builder::new().prefix(".new-").tempdir_in(parent).map_err(io(parent))?;
    let new = tmp.path().join("d");
    match seed {
        Some(seed) => copy_tree(seed, &new)?,
        None => fs::create_dir(&new).map_err(io(&new))?,
    }
    if seed.is_none() || uid != 0 || gid != 0 {
        chown(&new, Some(uid), Some(gid)).map_err(io(&new))?;
    }
    fs::set_permissions(&new, fs::Permissions::from_mode(mode)).map_err(io(&new))?;
    match fs::rename(&new, dir) {
        Ok(()) => Ok(()),
        // Another build created it first: use theirs.
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(MountError::Io { path: dir.to_path_buf(), source: e }),
    }
}

fn secret(m: &Mount, src: &MountSources, out: &mut Prepared) -> Result<(), MountError> {
    let Mount::Secret { id, target, env, required, mode, uid, gid } = m else {
        return Ok(());
    };
    let bytes = match src.secrets.get(id) {
        Some(SecretSource::File(path)) => {
            fs::read(path).map_err(|source| MountError::ReadSecret { id: id.clone(), source })?
        }
        Some(SecretSource::Env(var)) => match std::env::var_os(var) {
            Some(v) => std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec(),
            None if *required => return Err(MountError::MissingSecret(id.clone())),
            None => return Ok(()),
        },
        None if *required => return Err(MountError::MissingSecret(id.clone())),
        None => return Ok(()),
    };
    if let Some(name) = env {
        let value = String::from_utf8(bytes.clone()).map_err(|_| MountError::Invalid {
            kind: "secret",
            message: format!("secret {id:?} is not UTF-8, so it cannot be env={name}"),
        })?;
        out.env.push(format!("{name}={value}"));
    }
    let Some(target) = target else { return Ok(()) };
    let tmp = temp_dir(src.scratch, "secret-")?;
    let file = tmp.path().join("secret");
    let io = |source| MountError::Io { path: file.clone(), source };
    fs::write(&file, &bytes).map_err(io)?;
    chown(&file, Some(*uid), Some(*gid)).map_err(io)?;
    fs::set_permissions(&file, fs::Permissions::from_mode(*mode)).map_err(io)?;
    out._temp.push(tmp);
    out.mounts.push(MountSpec { source: file, target: target.clone(), readonly: true, kind: RtKind::Bind });
    Ok(())
}

/// The persistent directory of cache mount `id`: one path component, any id.
pub fn cache_mount_dir(store_root: &Path, id: &str) -> PathBuf {
    let mut name = String::new();
    for b in id.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => name.push(b as char),
            _ => name.push_str(&format!("%{b:02X}")),
        }
    }
    // "." and ".." (and lock-file names) must not be taken literally.
    if name.starts_with('.') {
        name.replace_range(0..1, "%2E");
    }
    store_root.join("kiln").join(crate::store::CACHE_MOUNTS_DIR).join(name)
}

/// `path` under `root`, refusing what leaves it (through `..` or symlinks).
fn inside(root: &Path, path: &str, kind: &'static str) -> Result<PathBuf, MountError> {
    // Lexically inside first (`..` stops at the root, as in docker).
    let joined = root.join(join_workdir("/", path).trim_start_matches('/'));
    let real = joined.canonicalize().map_err(|source| MountError::Io { path: joined.clone(), source })?;
    let real_root = root.canonicalize().map_err(|source| MountError::Io { path: root.to_path_buf(), source })?;
    if !real.starts_with(&real_root) {
        return Err(MountError::Invalid { kind, message: format!("source {path:?} leaves its root") });
    }
    Ok(real)
}

/// Writes to `to` what of `source` (a real path inside the context) the
/// context's ignore rules leave visible. Files are hard links when `link`
/// and the file system allows, else copies.
fn filtered_view(
    ctx: &BuildContext,
    source: &Path,
    to: &Path,
    link: bool,
    kind: &'static str,
) -> Result<(), MountError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MountError::Io { path, source }
    };
    let rel = source.strip_prefix(ctx.root()).unwrap_or(Path::new(""));
    let rel = bstr::BString::from(rel.as_os_str().as_bytes());
    let meta = fs::metadata(source).map_err(io(source))?;
    if !rel.is_empty() && ctx.ignore().matches(&rel) && !(meta.is_dir() && ctx.ignore().may_include_under(&rel)) {
        return Err(MountError::Invalid {
            kind,
            message: format!(
                "source {:?} is excluded by the context's ignore file (.dockerignore)",
                String::from_utf8_lossy(&rel)
            ),
        });
    }
    let m = SourceMatch { rel, host: source.to_path_buf(), is_dir: meta.is_dir() };
    let entries =
        ctx.walk(&m).map_err(|e| MountError::Io { path: source.to_path_buf(), source: std::io::Error::other(e) })?;
    let mut dirs = Vec::new();
    if m.is_dir {
        fs::create_dir(to).map_err(io(to))?;
        dirs.push((to.to_path_buf(), meta.clone()));
    }
    for e in entries {
        let dest = if e.rel.is_empty() { to.to_path_buf() } else { to.join(std::ffi::OsStr::from_bytes(&e.rel)) };
        let ft = e.metadata.file_type();
        if ft.is_dir() {
            fs::create_dir(&dest).map_err(io(&dest))?;
            dirs.push((dest, e.metadata));
        } else if let Some(target) = &e.link_target {
            std::os::unix::fs::symlink(target, &dest).map_err(io(&dest))?;
        } else if ft.is_file() && !(link && fs::hard_link(&e.host, &dest).is_ok()) {
            fs::copy(&e.host, &dest).map_err(io(&dest))?;
            let _ = chown(&dest, Some(e.metadata.uid()), Some(e.metadata.gid()));
            fs::set_permissions(&dest, fs::Permissions::from_mode(e.metadata.mode() & 0o7777)).map_err(io(&dest))?;
        }
        // Sockets, fifos and devices are left out, as copy_tree does.
    }
    // Directory modes last: a read-only directory is filled first.
    for (dir, meta) in dirs.into_iter().rev() {
        let _ = chown(&dir, Some(meta.uid()), Some(meta.gid()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(io(&dir))?;
    }
    Ok(())
}

fn temp_dir(scratch: &Path, prefix: &str) -> Result<tempfile::TempDir, MountError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch)
        .map_err(|source| MountError::Io { path: scratch.to_path_buf(), source })
}

/// Copies a file or tree, keeping modes, owners and symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<(), MountError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MountError::Io { path, source }
    };
    let meta = fs::symlink_metadata(from).map_err(io(from))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(to).map_err(io(to))?;
        for entry in fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from).map_err(io(from))?, to).map_err(io(to))?;
        return Ok(());
    } else if ft.is_file() {
        fs::copy(from, to).map_err(io(to))?;
    } else {
        // Sockets, fifos and devices are not copied.
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let _ = chown(to, Some(meta.uid()), Some(meta.gid()));
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(io(to))?;
    Ok(())
}

#[cfg(test)]
mod tests;
