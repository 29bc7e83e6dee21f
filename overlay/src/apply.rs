//! Applying a layer tar to a directory: a layer directory of its own (overlay lowers, whiteouts in overlay
//! form) or one rootfs that layers are applied to in order (whiteouts delete).
//!
//! Safety: every entry's parent is opened with openat2 `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so a
//! symlink on the way (`evil -> /`, `evil -> ../../..`) resolves inside `dest` as it would inside the
//! container, never on the host; the entry itself is then created relative to that directory fd, never by
//! path. Names with `..` components, absolute names and hard links whose target is absolute or has `..` are
//! rejected outright, as no well-formed layer has them.
//!
//! The archive is read by [`crate::reader`], the one tar reader kiln has: names stay bytes and binary
//! xattr values arrive intact.

mod meta;
mod whiteouts;

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat};

use crate::compress;
use crate::reader::{self, Entry, Kind, Reader};
use crate::sys;
use crate::whiteout::{WhiteoutFormat, XattrPrefix, WH_OPAQUE, WH_PREFIX};

/// The xattr rootless container tools record an owner in when the id is not mapped (`uid:gid:0mode`).
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// How a layer is applied.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutFormat,
    /// The overlay xattr namespace the layer directory will be mounted with.
    pub prefix: XattrPrefix,
    /// When an owner cannot be set because its id is not mapped in this user namespace (single-id mode),
    /// record it in [`OVERRIDE_STAT_XATTR`] instead of failing.
    pub record_unmapped_owners: bool,
    /// The archive is an image layer: `.wh.` names are whiteouts and opaque markers. Any other archive (a
    /// build context) keeps them as ordinary names.
    pub layer: bool,
    /// Set owners from the archive; without, everything belongs to the caller.
    pub owners: bool,
    /// Refuse an entry whose parent path goes through a symlink (an error naming it), instead of resolving
    /// the symlink inside the root as the container would.
    pub refuse_symlinked_parents: bool,
}

impl ApplyOptions {
    /// Options for an archive that is not a layer (a build context): names are taken literally, owners are
    /// the caller's, and nothing is written through a symlink the archive made.
    pub fn plain() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutFormat::Naive,
            prefix: XattrPrefix::default(),
            record_unmapped_owners: false,
            layer: false,
            owners: false,
            refuse_symlinked_parents: true,
        }
    }

    /// Options for layers applied in order to one root directory: whiteouts delete.
    pub fn rootfs() -> Self {
        ApplyOptions { whiteouts: WhiteoutFormat::Naive, ..ApplyOptions::default() }
    }
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutFormat::Overlay,
            prefix: XattrPrefix::default(),
            record_unmapped_owners: true,
            layer: true,
            owners: true,
            refuse_symlinked_parents: false,
        }
    }
}

/// What applying a layer did, beyond writing its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries written (files, dirs, links, nodes), not counting whiteouts.
    pub entries: u64,
    /// Whiteouts applied (as overlay markers or as deletions).
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Entries left out, each with why (device nodes the kernel refuses, unknown entry types).
    pub skipped: Vec<String>,
    /// Entries whose owner was recorded in [`OVERRIDE_STAT_XATTR`] because the id is not mapped.
    pub unmapped_owners: u64,
    /// Overlay bookkeeping xattrs found in the layer and not applied.
    pub dropped_overlay_xattrs: u64,
    /// Xattrs the filesystem or the namespace refused (e.g. `trusted.*` in a user namespace), by entry.
    pub refused_xattrs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("read layer archive")]
    Read(#[source] io::Error),
    #[error("open layer destination {}", .0.display())]
    Dest(PathBuf, #[source] io::Error),
    #[error("layer entry {path:?} {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("apply layer entry {path:?}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Applies a layer blob (gzip, zstd, xz, bzip2 or plain tar) to `dest`, which must exist.
pub fn apply_layer<R: Read>(blob: R, dest: &Path, opts: &ApplyOptions) -> Result<ApplyReport, ApplyError> {
    let (_, mut plain) = compress::decompress(blob).map_err(ApplyError::Read)?;
    let report = apply_tar(&mut plain, dest, opts)?;
    // Read to the end of the stream, past the end-of-archive blocks, as docker does: the decoder then checks
    // its trailer (gzip CRC and length, zstd checksum).
    io::copy(&mut plain, &mut io::sink()).map_err(ApplyError::Read)?;
    Ok(report)
}

/// Applies a plain (decompressed) tar stream to `dest`, which must exist. It stops after the end-of-archive
/// blocks: a caller that verifies the stream (a [`crate::LayerReader`]) reads the rest and checks it.
pub fn apply_tar<R: Read>(plain: R, dest: &Path, opts: &ApplyOptions) -> Result<ApplyReport, ApplyError> {
    let root = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dest)
        .map_err(|e| ApplyError::Dest(dest.into(), e))?;
    let mut applier =
        Applier { root, opts, report: ApplyReport::default(), written: HashSet::new(), dirs: BTreeMap::new() };
    let mut reader = Reader::new(plain);
    while let Some(entry) = reader.next_entry().map_err(ApplyError::Read)? {
        let item = Item::from_entry(entry);
        applier.apply(item, &mut reader.data())?;
    }
    applier.finish()?;
    Ok(applier.report)
}

/// One archive entry, as this module needs it.
struct Item {
    /// The name as written, for messages.
    name: String,
    raw_name: Vec<u8>,
    /// Clean components; empty for the root itself.
    components: Vec<OsString>,
    kind: Kind,
    link: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: TimeSpec,
    size: u64,
    dev: (u32, u32),
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Item {
    fn from_entry(e: Entry) -> Item {
        Item {
            name: e.display(),
            components: split_components(&e.name),
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: TimeSpec::new(e.mtime, i64::from(e.mtime_nsec)),
            size: e.size,
            dev: e.dev,
            xattrs: e.xattrs,
            link: e.link,
            raw_name: e.name,
        }
    }
}

/// Splits an archive name into components, dropping empty and `.` ones. `..` is kept for the caller to
/// reject.
fn split_components(name: &[u8]) -> Vec<OsString> {
    reader::components(name).into_iter().map(|c| OsString::from_vec(c.to_vec())).collect()
}

fn check_name(name: &[u8], display: &str) -> Result<(), ApplyError> {
    reader::check_inside(name).map_err(|reason| ApplyError::Unsafe { path: display.to_string(), reason })
}

fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

struct Applier<'o> {
    root: File,
    opts: &'o ApplyOptions,
    report: ApplyReport,
    /// Paths this layer wrote: an opaque marker or whiteout in the same layer never removes them.
    written: HashSet<PathBuf>,
    /// Directory modes and mtimes, set last: creating children changes the mtime, and a read-only mode
    /// would stop an unprivileged caller from creating them. A later entry for the same path wins.
    dirs: BTreeMap<PathBuf, (u32, TimeSpec)>,
}

impl Applier<'_> {
    fn apply<R: Read>(&mut self, item: Item, data: &mut R) -> Result<(), ApplyError> {
        check_name(&item.raw_name, &item.name)?;
        let entry_err = |source| ApplyError::Entry { path: item.name.clone(), source };
        let Some((last, parent)) = item.components.split_last() else {
            // The root itself: only its metadata can be applied.
            if item.kind == Kind::Dir {
                let root = self.root.try_clone().map_err(entry_err)?;
                self.set_fd_meta(&root, &item).map_err(entry_err)?;
                self.dirs.insert(PathBuf::new(), (item.mode, item.mtime));
            }
            return Ok(());
        };
        let last_bytes = last.as_bytes();
        // Only a layer has whiteouts; in any other archive `.wh.` names are names.
        if self.opts.layer {
            if last_bytes == WH_OPAQUE.as_bytes() {
                return self.opaque(parent).map_err(|e| self.path_error(&item, e));
            }
            if let Some(hidden) = last_bytes.strip_prefix(WH_PREFIX.as_bytes()) {
                if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(b".wh.") {
                    return Err(ApplyError::Unsafe { path: item.name.clone(), reason: "is not a valid whiteout" });
                }
                return self.whiteout(parent, OsStr::from_bytes(hidden)).map_err(|e| self.path_error(&item, e));
            }
        }
        let parent_dir = self.ensure_dir(parent).map_err(|e| self.path_error(&item, e))?;
        let name = CString::new(last_bytes).map_err(|_| entry_err(nul_error()))?;
        let rel = join(&item.components);
        match item.kind {
            Kind::Dir => {
                let dir = self.make_dir(&parent_dir, last, &name, item.mode).map_err(entry_err)?;
                self.set_fd_meta(&dir, &item).map_err(entry_err)?;
                self.dirs.insert(rel.clone(), (item.mode, item.mtime));
            }
            Kind::File => {
                remove_existing(&parent_dir, last).map_err(entry_err)?;
                let fd = sys::openat2(
                    parent_dir.as_fd(),
                    Path::new(last),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                    0o600,
                    sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
                )
                .map_err(entry_err)?;
                let mut file = File::from(fd);
                write_sparse(&mut file, data, item.size).map_err(entry_err)?;
                self.set_fd_meta(&file, &item).map_err(entry_err)?;
                nix::sys::stat::futimens(file.as_raw_fd(), &item.mtime, &item.mtime)
                    .map_err(|e| entry_err(e.into()))?;
            }
            Kind::Symlink => {
                remove_existing(&parent_dir, last).map_err(entry_err)?;
                let target = OsStr::from_bytes(&item.link);
                symlinkat(target, Some(parent_dir.as_raw_fd()), last.as_os_str()).map_err(|e| entry_err(e.into()))?;
                self.set_at_meta(&parent_dir, last, &item, true).map_err(entry_err)?;
            }
            Kind::Hardlink => {
                check_name(&item.link, &item.name).map_err(|_| ApplyError::Unsafe {
                    path: item.name.clone(),
                    reason: "is a hard link to a path outside the layer",
                })?;
                let target = split_components(&item.link);
                let Some((tlast, tparent)) = target.split_last() else {
                    return Err(ApplyError::Unsafe { path: item.name.clone(), reason: "is a hard link to the root" });
                };
                let tdir = self.open_dir(&join(tparent)).map_err(|e| self.path_error(&item, e))?;
                if same_inode(&tdir, tlast, &parent_dir, last) {
                    self.written.insert(rel);
                    return Ok(());
                }
                remove_existing(&parent_dir, last).map_err(entry_err)?;
                linkat(
                    Some(tdir.as_raw_fd()),
                    tlast.as_os_str(),
                    Some(parent_dir.as_raw_fd()),
                    last.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| entry_err(e.into()))?;
            }
            Kind::Char | Kind::Block if !self.opts.layer => {
                // A build context has no business with device nodes, even where kiln could make them.
                log::warn!("archive entry {:?}: device node not extracted", item.name);
                self.report.skipped.push(format!("{}: device node not extracted", item.name));
                return Ok(());
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                remove_existing(&parent_dir, last).map_err(entry_err)?;
                let (ty, dev) = match item.kind {
                    Kind::Char => (libc::S_IFCHR, libc::makedev(item.dev.0, item.dev.1)),
                    Kind::Block => (libc::S_IFBLK, libc::makedev(item.dev.0, item.dev.1)),
                    _ => (libc::S_IFIFO, 0),
                };
                match sys::mknodat(parent_dir.as_fd(), &name, ty | 0o600, dev) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        log::warn!("layer entry {:?}: device nodes cannot be created here; skipped", item.name);
                        self.report.skipped.push(format!("{}: device node not permitted", item.name));
                        return Ok(());
                    }
                    Err(e) => return Err(entry_err(e)),
                }
                self.set_at_meta(&parent_dir, last, &item, false).map_err(entry_err)?;
            }
            Kind::Other(t) => {
                log::warn!("layer entry {:?}: unsupported entry type {:?}; skipped", item.name, t as char);
                self.report.skipped.push(format!("{}: unsupported entry type {:?}", item.name, t as char));
                return Ok(());
            }
        }
        self.report.entries += 1;
        self.written.insert(rel);
        Ok(())
    }

    /// An error resolving an entry's parent: with `refuse_symlinked_parents`, a symlink on the way is the
    /// archive's fault and said so.
    fn path_error(&self, item: &Item, e: io::Error) -> ApplyError {
        if self.opts.refuse_symlinked_parents && matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV)) {
            return ApplyError::Unsafe { path: item.name.clone(), reason: "goes through a symlink" };
        }
        ApplyError::Entry { path: item.name.clone(), source: e }
    }

    fn finish(&mut self) -> Result<(), ApplyError> {
        for (rel, (mode, t)) in &self.dirs {
            let path = rel.display().to_string();
            let dir = match self.open_dir(rel) {
                Ok(dir) => dir,
                // Replaced by a later entry of the archive, or removed by a whiteout.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => continue,
                Err(source) => return Err(ApplyError::Entry { path, source }),
            };
            fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(*mode))
                .map_err(|e| ApplyError::Entry { path: path.clone(), source: e.into() })?;
            nix::sys::stat::futimens(dir.as_raw_fd(), t, t)
                .map_err(|e| ApplyError::Entry { path, source: e.into() })?;
        }
        Ok(())
    }

    /// Opens the directory at `rel`, resolving every symlink on the way inside the root.
    fn open_dir(&self, rel: &Path) -> io::Result<File> {
        if rel.as_os_str().is_empty() {
            return self.root.try_clone();
        }
        let resolve = if self.opts.refuse_symlinked_parents {
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS
        } else {
            sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS
        };
        sys::openat2(self.root.as_fd(), rel, libc::O_RDONLY | libc::O_DIRECTORY, 0, resolve).map(File::from)
    }

    /// Opens the directory at `components`, creating missing ones as root-owned 0755 directories.
    fn ensure_dir(&mut self, components: &[OsString]) -> io::Result<File> {
        let rel = join(components);
        match self.open_dir(&rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let Some((last, parent)) = components.split_last() else {
            return self.open_dir(&rel);
        };
        let parent_dir = self.ensure_dir(parent)?;
        match nix::sys::stat::mkdirat(Some(parent_dir.as_raw_fd()), last.as_os_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.written.insert(rel.clone());
        self.open_dir(&rel)
    }

    /// Makes `name` in `parent` a directory, keeping one that is there (its contents merge).
    fn make_dir(&self, parent: &File, last: &OsStr, name: &CString, mode: u32) -> io::Result<File> {
        let existing = fstatat(Some(parent.as_raw_fd()), last, AtFlags::AT_SYMLINK_NOFOLLOW);
        match existing {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
            Ok(_) => {
                remove_existing(parent, last)?;
                nix::sys::stat::mkdirat(
                    Some(parent.as_raw_fd()),
                    name.as_c_str(),
                    Mode::from_bits_truncate(mode & 0o777 | 0o700),
                )?;
            }
            Err(nix::errno::Errno::ENOENT) => {
                nix::sys::stat::mkdirat(
                    Some(parent.as_raw_fd()),
                    name.as_c_str(),
                    Mode::from_bits_truncate(mode & 0o777 | 0o700),
                )?;
            }
            Err(e) => return Err(e.into()),
        }
        sys::openat2(
            parent.as_fd(),
            Path::new(last),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
            sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS,
        )
        .map(File::from)
    }
}
fn nul_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "name contains a NUL byte")
}

/// A path naming the open directory `dir`, for calls that only take paths.
pub(crate) fn proc_fd_path(dir: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

fn same_inode(a_dir: &File, a: &OsStr, b_dir: &File, b: &OsStr) -> bool {
    let flags = AtFlags::AT_SYMLINK_NOFOLLOW;
    match (fstatat(Some(a_dir.as_raw_fd()), a, flags), fstatat(Some(b_dir.as_raw_fd()), b, flags)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// Removes whatever is at `name` in `parent`, a directory with everything in it; nothing there is fine.
fn remove_existing(parent: &File, name: &OsStr) -> io::Result<()> {
    let st = match fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let is_dir = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) == SFlag::S_IFDIR;
    if is_dir {
        // std's remove_dir_all opens each level with O_NOFOLLOW relative to its parent, so a symlink
        // inside never leads it out of the tree.
        std::fs::remove_dir_all(proc_fd_path(parent).join(name))
    } else {
        nix::unistd::unlinkat(Some(parent.as_raw_fd()), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(io::Error::from)
    }
}

/// Copies exactly `size` bytes into `file`, leaving holes where whole blocks are zero.
fn write_sparse(file: &mut File, data: &mut impl Read, size: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        data.read_exact(&mut buf[..want])?;
        if buf[..want].iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(want as i64))?;
        } else {
            file.write_all(&buf[..want])?;
        }
        left -= want as u64;
    }
    file.set_len(size)
}
