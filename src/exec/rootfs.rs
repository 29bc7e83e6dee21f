//! Unpacking an image's layers into a private directory, for `COPY --from`.
//!
//! The unpack runs unprivileged, so it cannot keep owners or capabilities and
//! must keep every directory writable while it fills it; the metadata the
//! files really have is recorded aside for the copy to use.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_overlay::compress;
use kiln_overlay::tarfmt::{EntryKind, EntryMeta};

use crate::image::manifest::Descriptor;
use crate::store::Store;

use super::tree::{clean, pax_xattrs};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("open layer {digest}")]
    Store {
        digest: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("unpack layer {digest}")]
    Unpack {
        digest: String,
        #[source]
        source: std::io::Error,
    },
}

/// Unpacks `layers` in order into `dest`, applying whiteouts, and returns the
/// recorded metadata of every path (relative, clean).
pub fn unpack(store: &Store, layers: &[Descriptor], dest: &Path) -> Result<BTreeMap<String, EntryMeta>, RootfsError> {
    let mut meta = BTreeMap::new();
    for layer in layers {
        let open = || {
            store
                .open_blob(&layer.digest)
                .map_err(|source| RootfsError::Store { digest: layer.digest.clone(), source })
        };
        let unpack_err = |source| RootfsError::Unpack { digest: layer.digest.clone(), source };
        // Whiteouts hide lower layers only: apply them all before this layer's files.
        apply_whiteouts(open()?, dest, &mut meta).map_err(unpack_err)?;
        extract(open()?, dest, &mut meta).map_err(unpack_err)?;
    }
    Ok(meta)
}

fn apply_whiteouts(blob: fs::File, dest: &Path, meta: &mut BTreeMap<String, EntryMeta>) -> std::io::Result<()> {
    let (_, reader) = compress::decompress(blob)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let entry = entry?;
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == ".wh..wh..opq" {
            let target = dest.join(dir);
            if let Ok(children) = fs::read_dir(&target) {
                for child in children.flatten() {
                    remove(&child.path())?;
                }
            }
            forget_under(meta, dir);
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            let rel = if dir.is_empty() { hidden.to_string() } else { format!("{}/{}", dir, hidden) };
            if rel.split('/').any(|c| c == "..") {
                continue;
            }
            remove(&dest.join(&rel))?;
            forget_under(meta, &rel);
            meta.remove(&rel);
        }
    }
    Ok(())
}

fn extract(blob: fs::File, dest: &Path, meta: &mut BTreeMap<String, EntryMeta>) -> std::io::Result<()> {
    let (_, reader) = compress::decompress(blob)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let name = path.rsplit('/').next().unwrap_or("");
        if path.is_empty() || name.starts_with(".wh.") {
            continue;
        }
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            // Unprivileged users cannot create device nodes; COPY --from of one is rare.
            log::warn!("skipping device node /{} while unpacking for COPY --from", path);
            continue;
        }
        let header = entry.header();
        let mode = header.mode()? & 0o7777;
        let recorded = EntryMeta {
            path: path.clone().into(),
            kind: match kind {
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink(
                    entry.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default().into(),
                ),
                tar::EntryType::Fifo => EntryKind::Fifo,
                _ => EntryKind::File,
            },
            mode,
            uid: header.uid()?,
            gid: header.gid()?,
            mtime: header.mtime()? as i64,
            size: header.size()?,
            xattrs: pax_xattrs(&mut entry)?,
        };
        let target = dest.join(&path);
        if let Ok(existing) = fs::symlink_metadata(&target) {
            if !(existing.is_dir() && kind == tar::EntryType::Directory) {
                remove(&target)?;
            }
        }
        entry.set_preserve_permissions(false);
        entry.set_unpack_xattrs(false);
        // unpack_in refuses paths that escape `dest`, through `..` or symlinks.
        if !entry.unpack_in(dest)? {
            log::warn!("skipping /{}: it would leave the image root", path);
            continue;
        }
        let owner_bits = if kind == tar::EntryType::Directory { 0o700 } else { 0o600 };
        if kind != tar::EntryType::Symlink {
            fs::set_permissions(&target, fs::Permissions::from_mode((mode & 0o777) | owner_bits))?;
        }
        meta.insert(path, recorded);
    }
    Ok(())
}

fn remove(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn forget_under(meta: &mut BTreeMap<String, EntryMeta>, dir: &str) {
    let prefix = if dir.is_empty() { String::new() } else { format!("{}/", dir) };
    meta.retain(|k, _| !k.starts_with(&prefix));
}
