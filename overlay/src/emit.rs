//! Writing a diff's entries in walk order, shared by the overlay diff and the copy driver's tree compare:
//! directories are held back until something inside them changes (so a parent appears with its real
//! metadata exactly when a changed path needs it), hard links within the layer become tar hard links, and
//! metadata is made portable (capabilities in v2 form, no overlay bookkeeping, recorded owners applied).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bstr::{BString, ByteSlice};

use crate::apply::OVERRIDE_STAT_XATTR;
use crate::layer::{entry_from_path, LayerWriter};
use crate::tarfmt::{EntryKind, EntryMeta};
use crate::whiteout::{is_overlay_xattr, WH_OPAQUE, WH_PREFIX};

/// What a diff wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Entries written, whiteouts and opaque markers included.
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    pub hardlinks: u64,
    /// Paths that cannot be stored in a layer (sockets), left out.
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("walk {}", .path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write layer entry {path:?}")]
    Write {
        path: BString,
        #[source]
        source: io::Error,
    },
}

/// How a diff treats metadata.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    pub prefix: crate::whiteout::XattrPrefix,
    /// Relative paths to leave out with everything below them (e.g. bind-mount placeholders).
    pub skip: Vec<PathBuf>,
    /// When set, later mtimes are lowered to this (SOURCE_DATE_EPOCH).
    pub clamp_mtime: Option<i64>,
}

impl DiffOptions {
    pub(crate) fn skipped(&self, rel: &Path) -> bool {
        self.skip.iter().any(|s| rel.starts_with(s))
    }
}

struct Pending {
    rel: BString,
    meta: EntryMeta,
    changed: bool,
    opaque: bool,
    written: bool,
}

pub(crate) struct Emitter<'w, W: Write + 'static> {
    writer: &'w mut LayerWriter<W>,
    stack: Vec<Pending>,
    links: HashMap<(u64, u64), BString>,
    clamp: Option<i64>,
    pub report: DiffReport,
}

/// The archive name of a relative host path: its bytes, whatever they are (a RUN may create names that are
/// not UTF-8, and they must come out as they went in).
pub(crate) fn rel_bytes(rel: &Path) -> BString {
    BString::from(rel.as_os_str().as_bytes())
}

impl<'w, W: Write + 'static> Emitter<'w, W> {
    pub fn new(writer: &'w mut LayerWriter<W>, clamp: Option<i64>) -> Self {
        Emitter { writer, stack: Vec::new(), links: HashMap::new(), clamp, report: DiffReport::default() }
    }

    /// Reads an entry's portable metadata.
    pub fn meta(&self, path: &Path, rel: &[u8]) -> Result<EntryMeta, DiffError> {
        let mut meta = entry_from_path(path, rel).map_err(|source| DiffError::Read { path: path.into(), source })?;
        portable(&mut meta);
        if let Some(clamp) = self.clamp {
            meta.mtime = meta.mtime.min(clamp);
        }
        Ok(meta)
    }

    /// Enters a directory. `changed`: its own metadata differs from what the lowers show; an opaque
    /// directory always counts as changed.
    pub fn dir(&mut self, rel: &[u8], meta: EntryMeta, changed: bool, opaque: bool) -> Result<(), DiffError> {
        self.leave_to(rel)?;
        self.stack.push(Pending { rel: rel.into(), meta, changed: changed || opaque, opaque, written: false });
        Ok(())
    }

    /// Writes a non-directory entry found at `path` (with lstat `md`).
    pub fn file(&mut self, path: &Path, rel: &[u8], md: &Metadata) -> Result<(), DiffError> {
        let mut meta = match self.meta(path, rel) {
            Err(DiffError::Read { source, .. }) if source.kind() == io::ErrorKind::Unsupported => {
                self.report.skipped.push(rel.to_str_lossy().into_owned());
                return Ok(());
            }
            other => other?,
        };
        self.leave_to(rel)?;
        self.flush_parents()?;
        if meta.kind == EntryKind::File && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                meta.kind = EntryKind::Hardlink(first.clone());
                meta.size = 0;
                self.report.hardlinks += 1;
                return self.write(&meta, None);
            }
            self.links.insert(key, rel.into());
        }
        if meta.kind == EntryKind::File {
            let mut f = File::open(path).map_err(|source| DiffError::Read { path: path.into(), source })?;
            // The size written in the header is the one read now; a file that shrank since is an error from
            // the tar writer, never a corrupt archive.
            self.write(&meta, Some(&mut f))
        } else {
            self.write(&meta, None)
        }
    }

    /// Writes a whiteout for `rel` (the hidden path).
    pub fn whiteout(&mut self, rel: &[u8], mtime: i64) -> Result<(), DiffError> {
        self.leave_to(rel)?;
        self.flush_parents()?;
        let wh = match rel.rsplit_once_str("/") {
            Some((dir, name)) => [dir, b"/", WH_PREFIX.as_bytes(), name].concat(),
            None => [WH_PREFIX.as_bytes(), rel].concat(),
        };
        let mut meta = EntryMeta::new(wh, EntryKind::File);
        meta.mode = 0o644;
        meta.mtime = self.clamp.map_or(mtime, |c| mtime.min(c));
        self.report.whiteouts += 1;
        self.write(&meta, None)
    }

    pub fn finish(mut self) -> Result<DiffReport, DiffError> {
        while !self.stack.is_empty() {
            self.pop()?;
        }
        Ok(self.report)
    }

    /// Pops directories that are not ancestors of `rel`.
    fn leave_to(&mut self, rel: &[u8]) -> Result<(), DiffError> {
        while let Some(top) = self.stack.last() {
            if rel.len() > top.rel.len() && rel.starts_with(&top.rel) && rel[top.rel.len()] == b'/' {
                break;
            }
            self.pop()?;
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<(), DiffError> {
        if let Some(top) = self.stack.last() {
            if top.changed && !top.written {
                self.flush_parents()?;
            }
        }
        self.stack.pop();
        Ok(())
    }

    /// Writes every held-back directory on the stack, outermost first.
    fn flush_parents(&mut self) -> Result<(), DiffError> {
        for i in 0..self.stack.len() {
            if self.stack[i].written {
                continue;
            }
            self.stack[i].written = true;
            let meta = self.stack[i].meta.clone();
            self.write(&meta, None)?;
            if self.stack[i].opaque {
                let path = [&self.stack[i].rel[..], b"/", WH_OPAQUE.as_bytes()].concat();
                let mut marker = EntryMeta::new(path, EntryKind::File);
                marker.mtime = meta.mtime;
                self.report.opaque_dirs += 1;
                self.write(&marker, None)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, meta: &EntryMeta, data: Option<&mut dyn io::Read>) -> Result<(), DiffError> {
        self.report.entries += 1;
        self.writer.append(meta, data).map_err(|source| DiffError::Write { path: meta.path.clone(), source })
    }
}

/// Makes metadata portable: no overlay bookkeeping, an owner recorded by a single-id namespace applied,
/// file capabilities in v2 form.
pub(crate) fn portable(meta: &mut EntryMeta) {
    meta.xattrs.retain(|name, _| !is_overlay_xattr(name));
    if let Some(value) = meta.xattrs.remove(OVERRIDE_STAT_XATTR) {
        if let Some((uid, gid, mode)) = parse_override_stat(&value) {
            meta.uid = uid;
            meta.gid = gid;
            meta.mode = mode & 0o7777;
        }
    }
    if let Some(cap) = meta.xattrs.get_mut("security.capability") {
        if let Some(v2) = capability_v2(cap) {
            *cap = v2;
        }
    }
}

/// `uid:gid:0mode[:type]`, as rootless container tools write it.
pub fn parse_override_stat(value: &[u8]) -> Option<(u64, u64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(':');
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    let mode = u32::from_str_radix(parts.next()?.trim_start_matches('0'), 8).unwrap_or(0);
    Some((uid, gid, mode))
}

// linux/capability.h: the top byte of magic_etc is the revision, bit 0 the effective flag.
const VFS_CAP_REVISION_MASK: u32 = 0xff00_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;
/// `struct vfs_cap_data`: magic_etc, then {permitted, inheritable} for the low and high 32 bits.
const XATTR_CAPS_SZ_2: usize = 20;
/// `struct vfs_ns_cap_data`: the same, then the namespace root id.
const XATTR_CAPS_SZ_3: usize = 24;

/// The v2 form of a v3 `security.capability` value (which carries the owning namespace's root id and only
/// works under one id mapping); None when `value` is not v3.
pub fn capability_v2(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() != XATTR_CAPS_SZ_3 {
        return None;
    }
    let magic = u32::from_le_bytes(value[..4].try_into().ok()?);
    if magic & VFS_CAP_REVISION_MASK != VFS_CAP_REVISION_3 {
        return None;
    }
    let mut out = Vec::with_capacity(XATTR_CAPS_SZ_2);
    out.extend_from_slice(&(VFS_CAP_REVISION_2 | (magic & VFS_CAP_FLAGS_EFFECTIVE)).to_le_bytes());
    out.extend_from_slice(&value[4..XATTR_CAPS_SZ_2]);
    Some(out)
}

/// What decides whether a directory itself changed: mode, owner and xattrs (its mtime changes whenever an
/// entry inside does, so it is left out).
pub(crate) fn dir_identity(meta: &EntryMeta) -> (u32, u64, u64, &BTreeMap<String, Vec<u8>>) {
    (meta.mode, meta.uid, meta.gid, &meta.xattrs)
}

/// The names in `dir`, sorted, so that layers come out in one order.
pub(crate) fn sorted_children(dir: &Path) -> Result<Vec<OsString>, DiffError> {
    let walk_err = |source| DiffError::Walk { path: dir.to_path_buf(), source };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(walk_err)? {
        names.push(entry.map_err(walk_err)?.file_name());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_capability_becomes_v2_without_rootid() {
        // cap_net_bind_service (bit 10) permitted + effective, rootid 100000.
        let mut v3 = Vec::new();
        v3.extend_from_slice(&(VFS_CAP_REVISION_3 | 1).to_le_bytes());
        v3.extend_from_slice(&(1u32 << 10).to_le_bytes());
        v3.extend_from_slice(&0u32.to_le_bytes());
        v3.extend_from_slice(&0u32.to_le_bytes());
        v3.extend_from_slice(&0u32.to_le_bytes());
        v3.extend_from_slice(&100_000u32.to_le_bytes());
        let v2 = capability_v2(&v3).unwrap();
        assert_eq!(v2.len(), 20);
        assert_eq!(&v2[..4], &(0x0200_0001u32).to_le_bytes());
        assert_eq!(&v2[4..8], &(1u32 << 10).to_le_bytes());
        assert!(capability_v2(&v2).is_none(), "v2 stays as it is");
    }

    #[test]
    fn override_stat_parses_as_containers_storage_writes_it() {
        assert_eq!(parse_override_stat(b"1000:100:04755"), Some((1000, 100, 0o4755)));
        assert_eq!(parse_override_stat(b"0:0:0644:file"), Some((0, 0, 0o644)));
        assert_eq!(parse_override_stat(b"x:0:0644"), None);
    }
}
