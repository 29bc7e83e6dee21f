//! Which build-cache records a prune removes: those no tagged image was
//! built from, or every one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use super::super::step_record::{Record, RECORD_VERSION};
use super::super::{index, Store, StoreError};
use super::CACHE_DIR;
use crate::image::config::History;

/// Which build-cache records a [`Store::collect`] removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CachePrune {
    /// None (`rmi`).
    #[default]
    Keep,
    /// Those no tagged image was built from, as docker's prune keeps what
    /// tagged images were built from. A step record is kept when a tagged
    /// image holds the layers and history its step added, when the last
    /// build of a Dockerfile (its build log) made a tagged image and ran the
    /// step (stages it copied from), or when it is the parent of a kept one.
    /// Intermediate images of failed builds and any other file go; build
    /// logs and stat caches stay.
    Unreachable,
    /// Every one (`prune -a`).
    All,
}

impl Store {
    /// The build-cache files `mode` removes; see [`CachePrune`].
    pub fn cache_records_to_drop(&self, mode: CachePrune) -> Result<Vec<PathBuf>, StoreError> {
        let all = match mode {
            CachePrune::Keep => return Ok(Vec::new()),
            CachePrune::All => return self.cache_record_paths(),
            CachePrune::Unreachable => self.cache_record_paths()?,
        };
        let dir = self.kiln_dir(CACHE_DIR);
        let steps_dir = dir.join("steps");
        // What tagged images hold: their layers and history entries, per image.
        let mut tagged: Vec<(BTreeSet<String>, Vec<History>)> = Vec::new();
        for entry in index::read_index(&self.index_path())?.manifests {
            // A broken image must not stop a prune: it holds nothing.
            let Ok(image) = self.load_image(&entry) else { continue };
            let layers = image.manifest.layers.iter().map(|l| l.digest.clone()).collect();
            tagged.push((layers, image.config.history));
        }
        let mut records: BTreeMap<String, (PathBuf, Record)> = BTreeMap::new();
        let mut doomed = Vec::new();
        for path in all {
            let rel = path.strip_prefix(&dir).unwrap_or(&path);
            let top = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
            if top == "builds" || top == "stat" {
                continue; // what explains misses and speeds up hashing: no blob hangs on them
            }
            // Only `<key>.json` is a record; a `.tmp<pid>` beside one is a
            // write a kill cut short.
            if !path.starts_with(&steps_dir) || path.extension().is_none_or(|e| e != "json") {
                doomed.push(path);
                continue;
            }
            let record = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            let key = path.file_stem().map(|s| format!("sha256:{}", s.to_string_lossy()));
            match (record, key) {
                (Some(record), Some(key)) if record.version == RECORD_VERSION => {
                    records.insert(key, (path, record));
                }
                // Unreadable or of another format: a miss for every build anyway.
                _ => doomed.push(path),
            }
        }
        // A record is kept when a tagged image holds what its step added.
        let built_into = |r: &Record| {
            (!r.layers.is_empty() || !r.history.is_empty())
                && tagged.iter().any(|(layers, history)| {
                    r.layers.iter().all(|l| layers.contains(&l.digest)) && r.history.iter().all(|h| history.contains(h))
                })
        };
        let mut anchors: BTreeSet<String> =
            records.iter().filter(|(_, (_, r))| built_into(r)).map(|(k, _)| k.clone()).collect();
        // So is every step of the last build of a Dockerfile (its log) that
        // made a tagged image: the stages it copied from hold nothing of
        // theirs in the image, yet an unchanged rebuild needs them.
        for log in self.build_logs(&dir.join("builds")) {
            if log.iter().any(|k| anchors.contains(k)) {
                anchors.extend(log.into_iter().filter(|k| records.contains_key(k)));
            }
        }
        // And every record before a kept one (its parent, and so on up).
        let mut kept: BTreeSet<String> = BTreeSet::new();
        for key in &anchors {
            let mut next = Some(key.clone());
            while let Some(k) = next.take() {
                if !kept.insert(k.clone()) {
                    break;
                }
                next = records.get(&k).map(|(_, r)| r.parent.clone()).filter(|p| records.contains_key(p));
            }
        }
        doomed.extend(records.into_iter().filter(|(k, _)| !kept.contains(k)).map(|(_, (path, _))| path));
        doomed.sort();
        Ok(doomed)
    }
}
