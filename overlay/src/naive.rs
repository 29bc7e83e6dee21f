//! The plain copy driver (`vfs`), for hosts with neither kernel overlay nor fuse-overlayfs: the layer
//! directories (overlay form, topmost first) are merged into a private snapshot, the step changes it, and
//! the diff compares the snapshot with the merged lowers.
//!
//! The compare looks at type, mode, owner, size, mtime (with nanoseconds, which the snapshot keeps), symlink
//! target, device number and xattrs, as docker's naive differ does; file contents are not read. A directory
//! of the lowers whose every entry is gone from the snapshot is written as opaque, any other deletion as a
//! `.wh.` entry, so `rm -rf d && mkdir d` gives the same layer as under overlay; removing all of a
//! directory's entries one by one gives the same opaque form (equivalent when applied).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::emit::{dir_identity, rel_bytes, sorted_children, DiffError, DiffOptions, DiffReport, Emitter};
use crate::layer::LayerWriter;
use crate::lowers::Lowers;
use crate::tarfmt::EntryKind;
use crate::whiteout::{is_overlay_xattr, XattrPrefix};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("copy {} to {}", .from.display(), .to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a snapshot left out.
#[derive(Debug, Clone, Default)]
pub struct SnapshotReport {
    pub entries: u64,
    /// Device nodes the kernel refused to create here.
    pub skipped: Vec<String>,
}

/// Copies the merged view of `lowers` (topmost first) into the existing, empty directory `target`, keeping
/// owners, modes, xattrs (not overlay ones), mtimes with nanoseconds and hard links.
pub fn snapshot(lowers: &[PathBuf], target: &Path, prefix: &XattrPrefix) -> Result<SnapshotReport, SnapshotError> {
    let view = Lowers::new(lowers, prefix.clone());
    let mut copier = Copier { view, links: HashMap::new(), report: SnapshotReport::default() };
    copier.dir(Path::new(""), target)?;
    if let Some((root, md)) = lowers.first().and_then(|l| fs::symlink_metadata(l).ok().map(|m| (l.clone(), m))) {
        copier.meta(&root, target, &md).map_err(|source| copy_err(&root, target, source))?;
    }
    Ok(copier.report)
}

fn copy_err(from: &Path, to: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Copy { from: from.into(), to: to.into(), source }
}

struct Copier<'a> {
    view: Lowers<'a>,
    links: HashMap<(u64, u64), PathBuf>,
    report: SnapshotReport,
}

impl Copier<'_> {
    fn dir(&mut self, rel: &Path, target: &Path) -> Result<(), SnapshotError> {
        let names = self.view.children(rel).map_err(|e| copy_err(rel, target, e))?;
        for name in names {
            let rel = rel.join(&name);
            let dst = target.join(&name);
            let Some((src, md)) = self.view.lookup(&rel) else { continue };
            self.entry(&rel, &src, &md, &dst).map_err(|e| copy_err(&src, &dst, e))?;
            if md.is_dir() {
                self.dir(&rel, &dst)?;
                // After the children, whose creation changed it.
                set_times(&dst, &md).map_err(|e| copy_err(&src, &dst, e))?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, src: &Path, md: &Metadata, dst: &Path) -> io::Result<()> {
        let ft = md.file_type();
        self.report.entries += 1;
        if ft.is_dir() {
            fs::create_dir(dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key).filter(|_| md.nlink() > 1) {
                return fs::hard_link(first, dst);
            }
            fs::copy(src, dst)?;
            if md.nlink() > 1 {
                self.links.insert(key, dst.to_path_buf());
            }
        } else {
            let kind = if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else if ft.is_block_device() {
                nix::sys::stat::SFlag::S_IFBLK
            } else if ft.is_fifo() {
                nix::sys::stat::SFlag::S_IFIFO
            } else {
                self.report.skipped.push(rel.display().to_string());
                return Ok(());
            };
            match nix::sys::stat::mknod(dst, kind, Mode::from_bits_truncate(0o600), md.rdev()) {
                Ok(()) => {}
                Err(nix::errno::Errno::EPERM) => {
                    log::warn!("{}: device nodes cannot be created here; left out of the snapshot", rel.display());
                    self.report.skipped.push(rel.display().to_string());
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.meta(src, dst, md)
    }

    /// Owner, mode, xattrs and (for non-directories) times of `dst` from `src`.
    fn meta(&self, src: &Path, dst: &Path, md: &Metadata) -> io::Result<()> {
        nix::unistd::fchownat(
            None,
            dst,
            Some(Uid::from_raw(md.uid())),
            Some(Gid::from_raw(md.gid())),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        let symlink = md.file_type().is_symlink();
        if !symlink {
            fs::set_permissions(dst, std::os::unix::fs::PermissionsExt::from_mode(md.mode() & 0o7777))?;
        }
        for (name, value) in crate::layer::read_xattrs(src)? {
            if !is_overlay_xattr(&name) {
                xattr::set(dst, &name, &value)?;
            }
        }
        if !md.is_dir() {
            set_times(dst, md)?;
        }
        Ok(())
    }
}

fn set_times(dst: &Path, md: &Metadata) -> io::Result<()> {
    let t = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(None, dst, &t, &t, UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

/// Streams the differences between the snapshot `target` and the merged `lowers` it was taken from into
/// `writer`, as [`crate::diff::write_diff`] would for an overlay upper holding the same changes.
pub fn diff_to_layer<W: Write + 'static>(
    target: &Path,
    lowers: &[PathBuf],
    writer: &mut LayerWriter<W>,
    opts: &DiffOptions,
) -> Result<DiffReport, DiffError> {
    let view = Lowers::new(lowers, opts.prefix.clone());
    let mut em = Emitter::new(writer, opts.clamp_mtime);
    compare_dir(target, Path::new(""), &view, &mut em, opts)?;
    em.finish()
}

fn compare_dir<W: Write + 'static>(
    target: &Path,
    rel_dir: &Path,
    view: &Lowers,
    em: &mut Emitter<'_, W>,
    opts: &DiffOptions,
) -> Result<(), DiffError> {
    let dir = target.join(rel_dir);
    let here: BTreeSet<OsString> = sorted_children(&dir)?.into_iter().collect();
    let below = view.children(rel_dir).map_err(|source| DiffError::Walk { path: dir.clone(), source })?;
    for name in here.union(&below) {
        let rel = rel_dir.join(name);
        if opts.skipped(&rel) {
            continue;
        }
        let rel_s = rel_bytes(&rel);
        if !here.contains(name) {
            let mtime = fs::symlink_metadata(&dir).map(|m| m.mtime()).unwrap_or(0);
            em.whiteout(&rel_s, mtime)?;
            continue;
        }
        let path = dir.join(name);
        let md = fs::symlink_metadata(&path).map_err(|source| DiffError::Read { path: path.clone(), source })?;
        let lower = view.lookup(&rel);
        if md.is_dir() {
            let meta = em.meta(&path, &rel_s)?;
            let (changed, opaque) = match &lower {
                Some((lower_path, lower_md)) if lower_md.is_dir() => {
                    let lower_meta = em.meta(lower_path, &rel_s)?;
                    let lower_names =
                        view.children(&rel).map_err(|source| DiffError::Walk { path: lower_path.clone(), source })?;
                    let kept = sorted_children(&path)?;
                    let opaque = !lower_names.is_empty() && lower_names.iter().all(|n| !kept.contains(n));
                    (dir_identity(&lower_meta) != dir_identity(&meta), opaque)
                }
                _ => (true, false),
            };
            em.dir(&rel_s, meta, changed, opaque)?;
            if opaque {
                // Everything below is new: compare against nothing.
                compare_dir(target, &rel, &Lowers::new(&[], opts.prefix.clone()), em, opts)?;
            } else {
                compare_dir(target, &rel, view, em, opts)?;
            }
        } else {
            let unchanged = match &lower {
                Some((lower_path, lower_md)) => same_entry(&path, &md, lower_path, lower_md, em, &rel_s)?,
                None => false,
            };
            if !unchanged {
                em.file(&path, &rel_s, &md)?;
            }
        }
    }
    Ok(())
}

fn same_entry<W: Write + 'static>(
    path: &Path,
    md: &Metadata,
    lower_path: &Path,
    lower_md: &Metadata,
    em: &Emitter<'_, W>,
    rel: &[u8],
) -> Result<bool, DiffError> {
    if md.file_type() != lower_md.file_type()
        || md.size() != lower_md.size()
        || md.mtime() != lower_md.mtime()
        || md.mtime_nsec() != lower_md.mtime_nsec()
        || md.rdev() != lower_md.rdev()
    {
        return Ok(false);
    }
    let a = em.meta(path, rel)?;
    let b = em.meta(lower_path, rel)?;
    let kind_same = match (&a.kind, &b.kind) {
        (EntryKind::Symlink(x), EntryKind::Symlink(y)) => x == y,
        _ => true,
    };
    Ok(kind_same && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.xattrs == b.xattrs)
}
