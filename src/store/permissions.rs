//! The store is its owner's alone: its directories are created 0700 and
//! tightened when found open to others.

use std::fs;
use std::io;
use std::path::Path;

use super::StoreError;

/// Makes sure `dir` is a directory only its owner may enter: creates it with
/// mode 0700, or takes the group's and others' bits off an existing one
/// (saying so, since an older kiln left it open).
pub(super) fn make_private(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(StoreError::Io { action: "create directory", path: dir.to_path_buf(), source }),
    }
    let meta = fs::metadata(dir).map_err(|source| StoreError::Io {
        action: "read the permissions of",
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(StoreError::NotADirectory { path: dir.to_path_buf() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let private = mode & !0o077;
    fs::set_permissions(dir, fs::Permissions::from_mode(private)).map_err(|source| StoreError::NotPrivate {
        path: dir.to_path_buf(),
        mode,
        source,
    })?;
    log::warn!(
        "{} was open to other users (mode {mode:04o}); made it {private:04o}: kiln keeps its store private",
        dir.display()
    );
    Ok(())
}

/// Takes the group's and others' bits off every layer dir (`<chain id>/`,
/// whose `diff/` below keeps the image's own modes) that an older kiln left
/// open. Other entries are left alone: `empty/` stands as an image's root.
pub(super) fn make_layer_dirs_private(layers: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let entries = fs::read_dir(layers).map_err(|source| StoreError::Io {
        action: "read directory",
        path: layers.to_path_buf(),
        source,
    })?;
    let mut tightened = 0;
    for entry in entries.flatten() {
        let is_layer =
            entry.file_name().to_str().is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        let Ok(meta) = entry.metadata() else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        if !is_layer || !meta.is_dir() || mode & 0o077 == 0 {
            continue;
        }
        let path = entry.path();
        match fs::set_permissions(&path, fs::Permissions::from_mode(mode & !0o077)) {
            Ok(()) => tightened += 1,
            // Removed meanwhile by a prune.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::NotPrivate { path, mode, source }),
        }
    }
    if tightened > 0 {
        log::warn!(
            "{tightened} layer directories in {} were open to other users; made them 0700: kiln keeps its store private",
            layers.display()
        );
    }
    Ok(())
}
