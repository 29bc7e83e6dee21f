//! A build context streamed as a tar archive (`kiln build - < ctx.tar.gz`):
//! decompression picked by magic bytes, then a careful extraction.
//!
//! Extraction never follows a symlink: every parent component of an entry
//! must be a real directory (a symlink there is refused, which defeats the
//! "symlink, then a file through it" trick), an existing final component is
//! removed before the new one is created with `O_EXCL`, and `..` or absolute
//! names are refused outright. Symlinks are recreated as symlinks with
//! their targets untouched; they are resolved later, scoped to the root.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::error::ContextError;

/// Wraps `r` in the decompressor its first bytes call for.
pub(crate) fn decompress<'a, R: Read + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = &head[..n];
    let stream = io::Cursor::new(head.to_vec()).chain(r);
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(stream))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(stream))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(stream)?)
    } else {
        Box::new(stream)
    })
}

/// Extracts the (decompressed) tar stream `r` into the existing, empty
/// directory `dest`.
pub(crate) fn extract<R: Read>(r: R, dest: &Path) -> Result<(), ContextError> {
    let mut archive = tar::Archive::new(r);
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let entries = archive.entries().map_err(ContextError::ReadArchive)?;
    for entry in entries {
        let mut entry = entry.map_err(ContextError::ReadArchive)?;
        let raw = entry.path().map_err(ContextError::ReadArchive)?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let parts = safe_parts(&raw).map_err(|reason| ContextError::UnsafeEntry { entry: name.clone(), reason })?;
        if parts.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(ContextError::ReadArchive)? & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0);
        let fail = |source| ContextError::Extract { entry: name.clone(), source };
        let target = prepare_parents(dest, &parts, &name)?;
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&target).map_err(fail)?;
                        fs::create_dir(&target).map_err(fail)?;
                    }
                    Err(_) => fs::create_dir(&target).map_err(fail)?,
                }
                // Modes and times of directories are set last, so a
                // read-only directory can still receive its entries.
                dirs.push((target, mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&target).map_err(fail)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(fail)?;
                io::copy(&mut entry, &mut file).map_err(fail)?;
                drop(file);
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(fail)?;
                set_mtime(&target, mtime).map_err(fail)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(ContextError::ReadArchive)?
                    .ok_or(ContextError::UnsafeEntry { entry: name.clone(), reason: "symlink without a target" })?;
                remove_existing(&target).map_err(fail)?;
                symlink(&link, &target).map_err(fail)?;
                set_mtime(&target, mtime).map_err(fail)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(ContextError::ReadArchive)?
                    .ok_or(ContextError::UnsafeEntry { entry: name.clone(), reason: "hard link without a target" })?;
                let link_parts =
                    safe_parts(&link).map_err(|reason| ContextError::UnsafeEntry { entry: name.clone(), reason })?;
                let source = existing_inside(dest, &link_parts, &name)?;
                remove_existing(&target).map_err(fail)?;
                fs::hard_link(&source, &target).map_err(fail)?;
            }
            EntryType::Fifo => {
                remove_existing(&target).map_err(fail)?;
                nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|e| fail(io::Error::from(e)))?;
            }
            // Device nodes cannot be made without privileges and have no
            // place in a build context; PAX/GNU metadata entries are
            // consumed by the tar reader.
            _ => {}
        }
    }
    for (dir, mode, mtime) in dirs.into_iter().rev() {
        // A later entry may have replaced the directory, even with a
        // symlink, which chmod would follow.
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let fail = |source| ContextError::Extract { entry: dir.to_string_lossy().into_owned(), source };
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(fail)?;
        set_mtime(&dir, mtime).map_err(fail)?;
    }
    Ok(())
}

/// The normal components of an entry name; `None`-free: absolute names and
/// `..` are refused, `.` is dropped.
fn safe_parts(path: &Path) -> Result<Vec<PathBuf>, &'static str> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(PathBuf::from(p)),
            Component::CurDir => {}
            Component::ParentDir => return Err("it contains \"..\""),
            Component::RootDir | Component::Prefix(_) => return Err("it is an absolute path"),
        }
    }
    Ok(parts)
}

/// Makes sure every parent of `parts` under `dest` is a real directory,
/// creating missing ones; returns the full path of the entry.
fn prepare_parents(dest: &Path, parts: &[PathBuf], name: &str) -> Result<PathBuf, ContextError> {
    let mut cur = dest.to_path_buf();
    let (last, parents) = parts.split_last().ok_or(ContextError::UnsafeEntry { entry: name.to_string(), reason: "empty name" })?;
    for part in parents {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ContextError::UnsafeEntry { entry: name.to_string(), reason: "a parent is a symlink" })
            }
            Ok(_) => {
                return Err(ContextError::UnsafeEntry { entry: name.to_string(), reason: "a parent is not a directory" })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|source| ContextError::Extract { entry: name.to_string(), source })?
            }
            Err(source) => return Err(ContextError::Extract { entry: name.to_string(), source }),
        }
    }
    cur.push(last);
    Ok(cur)
}

/// The path of an already extracted, non-directory entry, reached without
/// passing through a symlink.
fn existing_inside(dest: &Path, parts: &[PathBuf], name: &str) -> Result<PathBuf, ContextError> {
    let unsafe_link = |reason| ContextError::UnsafeEntry { entry: name.to_string(), reason };
    let mut cur = dest.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let meta = fs::symlink_metadata(&cur).map_err(|_| unsafe_link("hard link target is not in the archive"))?;
        let last = i + 1 == parts.len();
        if !last && !meta.is_dir() {
            return Err(unsafe_link("hard link target passes through a non-directory"));
        }
        if last && meta.is_dir() {
            return Err(unsafe_link("hard link target is a directory"));
        }
    }
    if parts.is_empty() {
        return Err(unsafe_link("hard link target is empty"));
    }
    Ok(cur)
}

fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let t = TimeSpec::new(secs, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}
