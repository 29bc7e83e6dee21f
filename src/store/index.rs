//! `index.json` and `oci-layout`: read whole, replaced atomically (temp file,
//! fsync, rename, fsync of the directory), so readers see the old or the new
//! file and never a half-written one.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

use super::blobs::sync_dir;
use super::StoreError;
use crate::image::manifest::Index;

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const LAYOUT_VERSION: &str = "1.0.0";

#[derive(Debug, Serialize, Deserialize)]
pub struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

pub fn read_index(path: &Path) -> Result<Index, StoreError> {
    let bytes = fs::read(path).map_err(|source| StoreError::Io { action: "read", path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
        action: "parse",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `index.json` with two-space indentation via a temp file in `tmp_dir`
/// (same file system as `path`).
pub fn write_index(path: &Path, tmp_dir: &Path, index: &Index) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Json {
        action: "serialize",
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    crate::fault::point("index-write-before");
    write_atomic(path, tmp_dir, &bytes).map(|()| crate::fault::point("index-write-after"))
}

/// Checks an existing `oci-layout` file.
pub fn check_layout(path: &Path) -> Result<(), StoreError> {
    let bytes = fs::read(path).map_err(|source| StoreError::Io { action: "read", path: path.to_path_buf(), source })?;
    let layout: OciLayout = serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
        action: "parse",
        path: path.to_path_buf(),
        source,
    })?;
    if layout.image_layout_version.split('.').next() != Some("1") {
        return Err(StoreError::LayoutVersion { path: path.to_path_buf(), version: layout.image_layout_version });
    }
    Ok(())
}

pub fn layout_bytes() -> Vec<u8> {
    // serde_json cannot fail on this struct.
    format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").into_bytes()
}

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, tmp_dir: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { action, path: p, source }
    };
    let mut tmp = NamedTempFile::with_prefix_in(".tmp-", tmp_dir).map_err(io_err("create temp file in", tmp_dir))?;
    tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io_err("chmod", tmp.path()))?;
    }
    tmp.as_file().sync_all().map_err(io_err("fsync", tmp.path()))?;
    // The last moment to find out nobody wants this change: an interrupted
    // kiln, or one whose front-end was killed, must not tag anything.
    kiln_runtime::ensure_still_wanted().map_err(|e| StoreError::Io {
        action: "replace",
        path: path.to_path_buf(),
        source: e.into_io(),
    })?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        action: "rename into",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}
