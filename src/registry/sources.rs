//! Which repositories a blob is known to be in, so a push can mount it from
//! there instead of uploading it. One small file per blob under
//! `<store>/kiln/blob-sources/`, a `registry/repository` per line; losing
//! one only costs an upload.

use std::io::Write;
use std::path::PathBuf;

use crate::store::{sha256_hex, Store};

fn path(store: &Store, digest: &str) -> Option<PathBuf> {
    let hex = sha256_hex(digest)?;
    Some(store.root().join("kiln/blob-sources").join(hex))
}

/// Notes that `digest` is in `repository` (`registry/repo`).
pub fn record(store: &Store, digest: &str, repository: &str) {
    let Some(path) = path(store, digest) else { return };
    if known(store, digest).iter().any(|r| r == repository) {
        return;
    }
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        // One write of one short line: appends from several processes do not interleave.
        f.write_all(format!("{repository}\n").as_bytes())
    };
    if let Err(e) = write() {
        log::debug!("cannot record where blob {digest} came from: {e}");
    }
}

/// The repositories `digest` is known to be in.
pub fn known(store: &Store, digest: &str) -> Vec<String> {
    let Some(path) = path(store, digest) else { return Vec::new() };
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}
