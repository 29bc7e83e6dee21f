//! Bytes on disk by kind, every file counted once.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::super::{sha256_hex, Store, StoreError};
use super::{CACHE_DIR, CACHE_MOUNTS_DIR, LAYERS_DIR};

/// Bytes on disk by kind, with every file and directory of the store counted
/// once (hard links too), so that `total` equals `du -sb` of the root.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Size of each blob file, by digest.
    pub blobs: BTreeMap<String, u64>,
    /// Each layer dir's bytes (entries below it included), by name.
    pub layer_dirs: BTreeMap<String, u64>,
    pub cache_bytes: u64,
    pub cache_records: usize,
    /// Each cache mount's bytes, by name.
    pub cache_mounts: BTreeMap<String, u64>,
    /// Temp files and scratch dirs (`kiln/tmp/*`, `kiln/layers/.*`): each
    /// one's bytes, by path below the root.
    pub temp: BTreeMap<String, u64>,
    /// Everything else: index.json, oci-layout, directories, locks.
    pub other: u64,
    pub total: u64,
    /// Entries that could not be read (counted as far as they could).
    pub unreadable: Vec<String>,
}

impl Store {
    /// Bytes on disk, by kind; see [`Usage`].
    pub fn disk_usage(&self) -> Result<Usage, StoreError> {
        let mut usage = Usage::default();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let layers = Path::new("kiln").join(LAYERS_DIR);
        let cache = Path::new("kiln").join(CACHE_DIR);
        let mounts = Path::new("kiln").join(CACHE_MOUNTS_DIR);
        let blobs = Path::new("blobs").join("sha256");
        let tmp = Path::new("kiln").join("tmp");
        for entry in walkdir::WalkDir::new(&self.root) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    usage.unreadable.push(e.to_string());
                    continue;
                }
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    usage.unreadable.push(e.to_string());
                    continue;
                }
            };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let bytes = meta.len();
            usage.total += bytes;
            let rel = entry.path().strip_prefix(&self.root).unwrap_or(entry.path());
            let first_below = |base: &Path| -> Option<String> {
                let rest = rel.strip_prefix(base).ok()?;
                rest.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned())
            };
            if let (Some(name), true) = (first_below(&blobs), meta.is_file()) {
                if sha256_hex(&format!("sha256:{name}")).is_some() && rel.parent() == Some(blobs.as_path()) {
                    usage.blobs.insert(format!("sha256:{name}"), bytes);
                    continue;
                }
            }
            if let Some(name) = first_below(&layers) {
                if name.starts_with('.') {
                    *usage.temp.entry(format!("kiln/{LAYERS_DIR}/{name}")).or_default() += bytes;
                } else {
                    *usage.layer_dirs.entry(name).or_default() += bytes;
                }
            } else if let Some(name) = first_below(&tmp) {
                *usage.temp.entry(format!("kiln/tmp/{name}")).or_default() += bytes;
            } else if let Some(name) = first_below(&mounts) {
                *usage.cache_mounts.entry(name).or_default() += bytes;
            } else if first_below(&cache).is_some() {
                usage.cache_bytes += bytes;
                usage.cache_records += usize::from(meta.is_file());
            } else {
                usage.other += bytes;
            }
        }
        Ok(usage)
    }
}
