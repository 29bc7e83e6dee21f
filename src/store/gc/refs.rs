//! What keeps a blob or a layer dir alive: reachability from roots, the
//! digests build-cache records mention, and the chain ids that name layer
//! dirs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::super::{parse_manifest, sha256_hex, Store, StoreError};
use super::{CACHE_DIR, INTERMEDIATE_DIR};
use crate::image::config::ImageConfig;
use crate::image::manifest::Index;

/// The OCI chain ids of a diff id list: `chain[0] = diff[0]`,
/// `chain[n] = sha256(chain[n-1] + " " + diff[n])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{prev} {diff}").as_bytes()))),
        };
        out.push(next);
    }
    out
}

/// The chain id a layer dir's name spells (`<hex>`, `sha256:<hex>`,
/// `sha256-<hex>`), or `None` when unsure.
pub fn layer_dir_chain_id(name: &str) -> Option<String> {
    let hex = ["sha256:", "sha256-", "sha256_"].iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name);
    let digest = format!("sha256:{hex}");
    sha256_hex(&digest).is_some().then_some(digest)
}

impl Store {
    /// Every blob reachable from `roots`: manifests bring their config and
    /// layers, indexes their manifests. Missing blobs are skipped.
    pub fn reachable(&self, roots: impl IntoIterator<Item = String>) -> Result<BTreeSet<String>, StoreError> {
        let mut live = BTreeSet::new();
        let mut todo: Vec<String> = roots.into_iter().collect();
        while let Some(digest) = todo.pop() {
            if sha256_hex(&digest).is_none() || !live.insert(digest.clone()) {
                continue;
            }
            let Some(bytes) = self.json_blob(&digest)? else { continue };
            if let Ok(manifest) = parse_manifest(&digest, &bytes) {
                live.insert(manifest.config.digest.clone());
                live.extend(manifest.layers.into_iter().map(|l| l.digest));
            } else if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
                todo.extend(index.manifests.into_iter().map(|d| d.digest));
            }
        }
        Ok(live)
    }

    /// The step keys of each build log (`cache/builds/*.json`, the last
    /// build of each Dockerfile); unreadable logs are skipped.
    pub(super) fn build_logs(&self, dir: &Path) -> Vec<Vec<String>> {
        let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(bytes) = fs::read(entry.path()) else { continue };
            let Ok(log) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            let Some(steps) = log.get("steps").and_then(|s| s.as_object()) else { continue };
            out.push(steps.values().filter_map(|s| s.get("key")?.as_str().map(str::to_string)).collect());
        }
        out
    }

    /// Digests the build-cache records mention.
    pub fn cache_refs(&self) -> Result<BTreeSet<String>, StoreError> {
        self.cache_refs_without(&BTreeSet::new())
    }

    /// Digests the build-cache records mention, but for the files in
    /// `dropped` (those a prune is about to remove). Build logs and stat
    /// caches hold no blob: the base image an old log names may go.
    pub fn cache_refs_without(&self, dropped: &BTreeSet<PathBuf>) -> Result<BTreeSet<String>, StoreError> {
        let dir = self.kiln_dir(CACHE_DIR);
        let (logs, stat) = (dir.join("builds"), dir.join("stat"));
        let mut refs = BTreeSet::new();
        let paths = self.cache_record_paths()?;
        for path in paths.into_iter().filter(|p| !dropped.contains(p) && !p.starts_with(&logs) && !p.starts_with(&stat))
        {
            let bytes =
                fs::read(&path).map_err(|source| StoreError::Io { action: "read cache record", path, source })?;
            refs.extend(digests_in(&String::from_utf8_lossy(&bytes)));
        }
        Ok(refs)
    }

    /// The digests step and other records mention, and those intermediate
    /// images' records (`intermediate/`) mention, apart.
    pub(super) fn cache_refs_by_kind(&self) -> Result<(BTreeSet<String>, BTreeSet<String>), StoreError> {
        let dir = self.kiln_dir(CACHE_DIR);
        let intermediate = dir.join(INTERMEDIATE_DIR);
        let (logs, stat) = (dir.join("builds"), dir.join("stat"));
        let (mut steps, mut images) = (BTreeSet::new(), BTreeSet::new());
        for path in self.cache_record_paths()?.into_iter().filter(|p| !p.starts_with(&logs) && !p.starts_with(&stat)) {
            let bytes = fs::read(&path).map_err(|source| StoreError::Io {
                action: "read cache record",
                path: path.clone(),
                source,
            })?;
            let into = if path.starts_with(&intermediate) { &mut images } else { &mut steps };
            into.extend(digests_in(&String::from_utf8_lossy(&bytes)));
        }
        Ok((steps, images))
    }

    pub(in crate::store) fn cache_record_paths(&self) -> Result<Vec<PathBuf>, StoreError> {
        let dir = self.kiln_dir(CACHE_DIR);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(&dir).min_depth(1).sort_by_file_name() {
            let entry = entry.map_err(|e| StoreError::Io {
                action: "list cache records in",
                path: dir.clone(),
                source: e.into(),
            })?;
            if entry.file_type().is_file() {
                out.push(entry.into_path());
            }
        }
        Ok(out)
    }

    /// The chain ids of the image manifests among `digests`.
    pub(super) fn chains_of(&self, digests: &BTreeSet<String>) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        for digest in digests {
            let Some(bytes) = self.json_blob(digest)? else { continue };
            let Ok(manifest) = parse_manifest(digest, &bytes) else { continue };
            let Some(config_bytes) = self.json_blob(&manifest.config.digest)? else { continue };
            let Ok(config) = serde_json::from_slice::<ImageConfig>(&config_bytes) else { continue };
            out.extend(chain_ids(&config.rootfs.diff_ids));
        }
        Ok(out)
    }
}

/// Every `sha256:<64 hex>` in `text`.
pub(super) fn digests_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("sha256:") {
        let candidate = rest[i..].get(..71).unwrap_or("");
        if sha256_hex(candidate).is_some() {
            out.push(candidate.to_string());
        }
        rest = &rest[i + 7..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}").as_bytes())));
        assert_eq!(chains[1], want);
    }

    #[test]
    fn layer_dir_names() {
        let hex = "c".repeat(64);
        for name in [hex.clone(), format!("sha256:{hex}"), format!("sha256-{hex}")] {
            assert_eq!(layer_dir_chain_id(&name), Some(format!("sha256:{hex}")), "{name}");
        }
        assert_eq!(layer_dir_chain_id("l"), None);
        assert_eq!(layer_dir_chain_id(&hex[..63]), None);
    }

    #[test]
    fn finds_digests_in_text() {
        let hex = "d".repeat(64);
        let text = format!(r#"{{"layer":"sha256:{hex}","bad":"sha256:xyz","x":"sha256:{hex}0"}}"#);
        assert_eq!(digests_in(&text), vec![format!("sha256:{hex}"), format!("sha256:{hex}")]);
    }
}
