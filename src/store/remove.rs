//! Removing trees from the store: layer dirs, scratch dirs, cache mounts.
//!
//! A tree that kiln trusts by its name (a layer dir) is first renamed aside
//! to `.trash-<name>-<random>` in the same directory, so a removal cut short
//! by a kill or a crash never leaves a half-removed tree under its real name
//! for a later kiln to stack; the next collect removes what was left aside.
//!
//! Image trees hold directories of mode 0555 or 000 and, in the user
//! namespace's store, files of subordinate ids: each directory is made
//! writable and searchable for its owner before kiln descends into it, and
//! the commands that remove trees run inside kiln's user namespace, where
//! uid 0 may change and remove files of every mapped id. Everything is done
//! relative to open directories, so no path length limits how deep a tree
//! can be removed.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstatat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Prefix of trees renamed aside to be removed.
pub const TRASH_PREFIX: &str = ".trash-";

/// A tree that could not be removed (wholly).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}; remove what is left with `kiln unshare rm -rf {}`", path.display(), tree.display())]
pub struct RemoveError {
    /// The first path that could not be removed, or the tree's when it
    /// could not be moved aside.
    pub path: PathBuf,
    /// The tree as it is now named (moved aside, or where it was).
    pub tree: PathBuf,
    #[source]
    pub source: io::Error,
}

/// What a removal freed: apparent sizes of files and directories, each
/// hard-linked inode once, as `du -sb` counts them.
#[derive(Debug, Default)]
pub struct Freed {
    pub bytes: u64,
    seen: HashSet<(u64, u64)>,
}

/// Renames `path` aside, then removes it; see the module notes. A missing
/// `path` is no error.
pub fn remove_aside(path: &Path, freed: &mut Freed) -> Result<(), RemoveError> {
    let aside = match move_aside(path) {
        Ok(Some(aside)) => aside,
        Ok(None) => return Ok(()),
        Err(source) => return Err(RemoveError { path: path.to_path_buf(), tree: path.to_path_buf(), source }),
    };
    remove_tree(&aside, freed)
}

/// Renames `path` to `.trash-<name>-<random>` beside it (made durable, so a
/// crash cannot bring the tree back under its name); `None` when there is
/// nothing at `path`.
pub fn move_aside(path: &Path) -> io::Result<Option<PathBuf>> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = tempfile::Builder::new().prefix(&format!("{TRASH_PREFIX}{name}-")).tempdir_in(parent)?.keep();
    // A directory renamed over an empty one replaces it.
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) => {
            let _ = std::fs::remove_dir(&aside);
            return match e.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            };
        }
    }
    std::fs::File::open(parent).and_then(|d| d.sync_all())?;
    Ok(Some(aside))
}

/// Removes `path` (a tree or a single file) where it is. Keeps going past
/// what it cannot remove and reports the first such path.
pub fn remove_tree(path: &Path, freed: &mut Freed) -> Result<(), RemoveError> {
    let err = |at: &Path, source: io::Error| RemoveError { path: at.to_path_buf(), tree: path.to_path_buf(), source };
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(path, e)),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| err(path, io::Error::from(io::ErrorKind::InvalidInput)))?;
    let parent_dir = Dir::open(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| err(parent, e.into()))?;
    remove_entry(&parent_dir, parent, &c_name(name), freed).map_err(|(at, e)| err(&at, e))
}

fn c_name(name: &OsStr) -> CString {
    // Names read from a directory hold no NUL byte.
    CString::new(name.as_bytes()).unwrap_or_default()
}

type Failure = (PathBuf, io::Error);

/// Removes the entry `name` of the open directory `parent` (shown as
/// `parent_path`), descending into directories.
fn remove_entry(parent: &Dir, parent_path: &Path, name: &CString, freed: &mut Freed) -> Result<(), Failure> {
    let path = parent_path.join(OsStr::from_bytes(name.as_bytes()));
    let fd = parent.as_raw_fd();
    let fail = |e: nix::Error| (path.clone(), io::Error::from(e));
    let st = match fstatat(Some(fd), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(e) => return Err(fail(e)),
    };
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if !is_dir {
        crate::fault::point("remove-file");
        return match unlinkat(Some(fd), name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::Error::ENOENT) => {
                if freed.seen.insert((st.st_dev, st.st_ino)) {
                    freed.bytes += st.st_size as u64;
                }
                Ok(())
            }
            Err(e) => Err(fail(e)),
        };
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o700 != 0o700 {
        // When this fails, opening or emptying the directory says why.
        let _ =
            fchmodat(Some(fd), name.as_c_str(), Mode::from_bits_truncate(mode | 0o700), FchmodatFlags::FollowSymlink);
    }
    let mut first: Option<Failure> = None;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match Dir::openat(Some(fd), name.as_c_str(), flags, Mode::empty()) {
        Ok(mut dir) => {
            let names: Vec<CString> = dir
                .iter()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_owned())
                .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
                .collect();
            for child in &names {
                if let Err(e) = remove_entry(&dir, &path, child, freed) {
                    first.get_or_insert(e);
                }
            }
        }
        Err(e) => {
            first.get_or_insert(fail(e));
        }
    }
    if let Some(e) = first {
        return Err(e);
    }
    match unlinkat(Some(fd), name.as_c_str(), UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(nix::Error::ENOENT) => {
            freed.bytes += st.st_size as u64;
            Ok(())
        }
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn removes_read_only_and_unsearchable_dirs_after_moving_aside() {
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("layer");
        std::fs::create_dir_all(tree.join("diff/home/u/deep")).unwrap();
        std::fs::write(tree.join("diff/home/u/deep/f"), "12345").unwrap();
        std::fs::hard_link(tree.join("diff/home/u/deep/f"), tree.join("diff/link")).unwrap();
        std::fs::create_dir(tree.join("diff/locked")).unwrap();
        std::fs::write(tree.join("diff/locked/g"), "x").unwrap();
        for (p, mode) in [("diff/home/u/deep", 0o555), ("diff/home/u", 0o700), ("diff/locked", 0o000), ("diff", 0o000)]
        {
            std::fs::set_permissions(tree.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut freed = Freed::default();
        remove_aside(&tree, &mut freed).unwrap();
        assert!(!tree.exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "nothing left aside");
        // Two files once each (the hard link once), plus the directories.
        assert!(freed.bytes >= 6, "{}", freed.bytes);
        assert!(remove_aside(&tree, &mut freed).is_ok(), "a missing tree is no error");
    }

    #[test]
    fn a_failure_names_the_path_and_what_to_run() {
        let e = RemoveError {
            path: PathBuf::from("/s/kiln/layers/.trash-ab-1/diff/x"),
            tree: PathBuf::from("/s/kiln/layers/.trash-ab-1"),
            source: io::Error::from_raw_os_error(13),
        };
        let text = e.to_string();
        assert!(text.starts_with("/s/kiln/layers/.trash-ab-1/diff/x: "), "{text}");
        assert!(text.ends_with("`kiln unshare rm -rf /s/kiln/layers/.trash-ab-1`"), "{text}");
    }
}
