//! Build-cache and compressed-layer records: the blobs they name, the
//! chains of the layers steps add, and compressed copies that match.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use serde::Deserialize;

use super::super::{chain_ids, sha256_hex, StoreError, CACHE_DIR};
use super::report::{Defect, Fix};
use super::Walk;
use crate::image::manifest::Descriptor;

/// A step record, as far as the check reads it, of any format version
/// (see [`crate::store::step_record::Record`]).
#[derive(Deserialize)]
struct StepRecord {
    parent: String,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// An intermediate-image record (see `Cache::keep_intermediate`).
#[derive(Deserialize)]
struct IntermediateRecord {
    manifest: String,
    config: String,
}

impl Walk<'_> {
    /// Build-cache records: the blobs they name, and the chains of the
    /// layers they add (each step's parent is another record, a base image's
    /// manifest, or `scratch:…`).
    pub(super) fn cache_records(&mut self) -> Result<(), StoreError> {
        let dir = self.store.private_dir().join(CACHE_DIR);
        let mut steps: BTreeMap<String, StepRecord> = BTreeMap::new();
        for path in self.store.cache_record_paths()? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if is_cache_temp(&name) {
                self.leftover(path);
                continue;
            }
            let rel = path.strip_prefix(&dir).unwrap_or(&path);
            let kind = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
            let Ok(bytes) = fs::read(&path) else { continue };
            let named: Vec<String> = match kind.as_deref() {
                Some("steps") => {
                    // Unreadable records are misses to the build: not the check's business.
                    let Ok(record) = serde_json::from_slice::<StepRecord>(&bytes) else { continue };
                    let digests = record.layers.iter().map(|l| l.digest.clone()).collect();
                    let key = format!("sha256:{}", name.trim_end_matches(".json"));
                    steps.insert(key, record);
                    digests
                }
                Some("intermediate") => {
                    let Ok(record) = serde_json::from_slice::<IntermediateRecord>(&bytes) else { continue };
                    vec![record.manifest, record.config]
                }
                _ => continue,
            };
            for digest in named {
                let present = self.blobs.get(&digest).is_some_and(|b| b.intact);
                if !present && sha256_hex(&digest).is_some() {
                    self.problem(
                        path.clone(),
                        Defect::CacheRecordMissingBlob { digest },
                        Fix::Remove(vec![path.clone()]),
                    );
                    break;
                }
            }
        }
        let mut memo: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
        let keys: Vec<String> = steps.keys().cloned().collect();
        for key in keys {
            if let Some(diff_ids) = self.record_diff_ids(&key, &steps, &mut memo, 0) {
                self.chains.extend(chain_ids(&diff_ids));
            }
        }
        Ok(())
    }

    /// The full diff id list of the state a step record leads to.
    fn record_diff_ids(
        &self,
        key: &str,
        steps: &BTreeMap<String, StepRecord>,
        memo: &mut BTreeMap<String, Option<Vec<String>>>,
        depth: usize,
    ) -> Option<Vec<String>> {
        if let Some(known) = memo.get(key) {
            return known.clone();
        }
        let found = if key.starts_with("scratch:") {
            Some(Vec::new())
        } else if let Some(record) = steps.get(key) {
            // A record chain is as long as a Dockerfile; the bound only guards against loops.
            let parent = (depth < 100_000).then(|| self.record_diff_ids(&record.parent, steps, memo, depth + 1));
            parent.flatten().map(|mut ids| {
                ids.extend(record.diff_ids.iter().cloned());
                ids
            })
        } else {
            self.diff_ids.get(key).cloned()
        };
        memo.insert(key.to_string(), found.clone());
        found
    }

    /// Records of compressed copies of plain layers (`compressed.rs`): each
    /// must name an intact blob of the recorded size and compression, and a
    /// plain layer still in the store. Repair removes a bad record (a blob
    /// nothing names then goes with the next prune).
    pub(super) fn compressed_records(&mut self) -> Result<(), StoreError> {
        for (path, record) in self.store.compressed_records()? {
            let record = match record {
                Ok(r) => r,
                Err(error) => {
                    self.problem(path.clone(), Defect::BadCompressedRecord { error }, Fix::Remove(vec![path]));
                    continue;
                }
            };
            let digest = record.digest.clone();
            let why = match self.blobs.get(&digest) {
                // Written after the blobs were listed, by an export running now.
                None if self.busy && self.store.has_blob(&digest) => continue,
                None => Some("is not in the store".to_string()),
                Some(info) if !info.intact => Some("is corrupt".to_string()),
                Some(info) if info.size != record.size => {
                    Some(format!("has {} bytes, not the {} the record says", info.size, record.size))
                }
                Some(_) => match blob_format(&self.store.blob_path(&digest)) {
                    Ok(found) if found != record.format() => Some(format!("is no {} stream", record.compression)),
                    Ok(_) => None,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                    Err(source) => {
                        return Err(StoreError::Io { action: "read blob", path: self.store.blob_path(&digest), source })
                    }
                },
            };
            if let Some(why) = why {
                self.problem(path.clone(), Defect::CompressedRecordBadBlob { digest, why }, Fix::Remove(vec![path]));
                continue;
            }
            if !self.blobs.contains_key(&record.diff_id) && !self.store.has_blob(&record.diff_id) {
                let defect = Defect::CompressedRecordStale { diff_id: record.diff_id };
                self.problem(path.clone(), defect, Fix::Remove(vec![path]));
            }
        }
        Ok(())
    }
}

/// `path.tmp<pid>`: a cache record being written (see `cache::write_atomic`).
fn is_cache_temp(name: &str) -> bool {
    name.rsplit_once(".tmp").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The compression a file's first bytes announce.
fn blob_format(path: &Path) -> io::Result<kiln_overlay::compress::Format> {
    let mut head = Vec::with_capacity(kiln_overlay::compress::MAGIC_LEN);
    File::open(path)?.take(kiln_overlay::compress::MAGIC_LEN as u64).read_to_end(&mut head)?;
    Ok(kiln_overlay::compress::detect(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_temp_names() {
        assert!(is_cache_temp("abc.tmp1234"));
        assert!(!is_cache_temp("abc.json"));
        assert!(!is_cache_temp("abc.tmp"));
        assert!(!is_cache_temp("abc.tmpx1"));
    }
}
