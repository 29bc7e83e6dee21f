//! Removing what nothing references, under the store lock: dropped cache
//! records, blobs, compressed copies, layer dirs, cache mounts and what
//! kiln processes that are gone left in `kiln/tmp`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::super::remove::{self, Freed, TRASH_PREFIX};
use super::super::{index, sha256_hex, Store, StoreError};
use super::cache_prune::CachePrune;
use super::refs::{digests_in, layer_dir_chain_id};
use super::{CACHE_DIR, CACHE_MOUNTS_DIR, GRACE, INTERMEDIATE_DIR, LAYERS_DIR};

/// What to remove in one [`Store::collect`].
#[derive(Debug, Clone, Default)]
pub struct Collect {
    /// Image manifests to remove, unless a tag or the build cache points at
    /// one again by the time the lock is held. Untag them first.
    pub images: BTreeSet<String>,
    /// Build-cache records to remove first.
    pub cache: CachePrune,
    /// Remove every cache mount.
    pub cache_mounts: bool,
}

/// What a [`Store::collect`] removed.
#[derive(Debug, Clone, Default)]
pub struct Reclaimed {
    /// Blob digests removed.
    pub blobs: Vec<String>,
    pub layer_dirs: Vec<PathBuf>,
    pub cache_records: usize,
    pub cache_mounts: usize,
    /// Temp files and scratch dirs of kiln processes that are gone.
    pub temp_files: usize,
    pub bytes: u64,
    /// Things that could not be removed (e.g. layer files owned by a
    /// subordinate id), with the reason and what to run.
    pub failed: Vec<String>,
}

impl Store {
    /// Removes, under the store lock, what `what` asks for and every blob and
    /// layer dir nothing live references (see the module notes), and what
    /// kiln processes that are gone left in `kiln/tmp`.
    pub fn collect(&self, what: &Collect) -> Result<Reclaimed, StoreError> {
        let _builds = self.builds_lock_exclusive()?;
        let _lock = self.lock()?;
        let mut reclaimed = Reclaimed::default();
        let now = SystemTime::now();
        let old = |meta: &fs::Metadata| meta.modified().ok().and_then(|m| now.duration_since(m).ok()) > Some(GRACE);
        self.remove_temp_files(&mut reclaimed, &old)?;
        // What only the dropped cache records kept alive goes with them.
        let mut uncached: BTreeSet<String> = BTreeSet::new();
        // An image removed goes with the record of it as a step's
        // intermediate image (the last step's image is the image built).
        let mut drop = self.cache_records_to_drop(what.cache)?;
        let intermediate = self.kiln_dir(CACHE_DIR).join(INTERMEDIATE_DIR);
        for digest in &what.images {
            let Some(hex) = sha256_hex(digest) else { continue };
            let path = intermediate.join(format!("{hex}.json"));
            if !drop.contains(&path) && path.exists() {
                drop.push(path);
            }
        }
        for path in drop {
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if let Ok(bytes) = fs::read(&path) {
                uncached.extend(digests_in(&String::from_utf8_lossy(&bytes)));
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    reclaimed.cache_records += 1;
                    reclaimed.bytes += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { action: "remove cache record", path, source }),
            }
        }
        if what.cache_mounts {
            for (path, _) in subdirs(&self.kiln_dir(CACHE_MOUNTS_DIR))? {
                remove_tree(&path, &mut reclaimed).then(|| reclaimed.cache_mounts += 1);
            }
        }

        // Re-read everything under the lock: a tag may have moved meanwhile.
        let index = index::read_index(&self.index_path())?;
        let cache_refs = self.cache_refs()?;
        let tagged = self.reachable(index.manifests.iter().map(|d| d.digest.clone()))?;
        let untagged = self.untagged_manifests(&tagged)?;
        let doomed_roots: Vec<String> = what.images.iter().filter(|d| !tagged.contains(*d)).cloned().collect();
        let roots = index
            .manifests
            .iter()
            .map(|d| d.digest.clone())
            .chain(cache_refs.iter().cloned())
            .chain(untagged.into_iter().map(|(d, _)| d).filter(|d| !what.images.contains(d)));
        let live = self.reachable(roots)?;
        let doomed = self.reachable(doomed_roots.iter().cloned().chain(uncached.iter().cloned()))?;

        let (live_chains, doomed_chains) = (self.chains_of(&live)?, self.chains_of(&doomed)?);
        // Compressed copies of plain layers (`compressed.rs`) follow their
        // layer, decided after the other blobs: by compressed digest, the
        // records naming it.
        let records = self.compressed_records()?;
        let mut copies: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
        for (path, record) in &records {
            if let Ok(r) = record {
                copies.entry(r.digest.clone()).or_default().push((path.clone(), r.diff_id.clone()));
            }
        }
        for (digest, size) in self.blob_files()? {
            if live.contains(&digest) || copies.contains_key(&digest) {
                continue;
            }
            let path = self.blob_path(&digest);
            let is_old = fs::metadata(&path).map(|m| old(&m)).unwrap_or(false);
            if !doomed.contains(&digest) && !is_old {
                continue;
            }
            crate::fault::point("gc-remove-blob");
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.forget_diff_id(&digest);
                    reclaimed.blobs.push(digest);
                    reclaimed.bytes += size;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { action: "remove blob", path, source }),
            }
        }
        self.collect_compressed(&records, &copies, &live, &mut reclaimed)?;
        for (path, meta) in subdirs(&self.kiln_dir(LAYERS_DIR))? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // Trees moved aside to be removed (by a removal or a build that
            // found a dir without its marker) that a kill cut short: no
            // build is running, and nothing stacks them, so they go now.
            if name.starts_with(TRASH_PREFIX) || name.starts_with(".stale-") {
                if remove_tree(&path, &mut reclaimed) {
                    reclaimed.layer_dirs.push(path);
                }
                continue;
            }
            // Unpacks and steps that a killed kiln left behind (`.unpack-*`,
            // `.step-*`): nothing ever stacks them, so once old they are
            // garbage (and the next build clears them sooner).
            if name.starts_with('.') {
                if old(&meta) && remove_tree(&path, &mut reclaimed) {
                    reclaimed.layer_dirs.push(path);
                }
                continue;
            }
            let Some(chain) = layer_dir_chain_id(&name) else { continue };
            if live_chains.contains(&chain) || !(doomed_chains.contains(&chain) || old(&meta)) {
                continue;
            }
            if remove_aside(&path, &mut reclaimed) {
                reclaimed.layer_dirs.push(path);
            }
        }
        Ok(reclaimed)
    }

    /// Removes the compressed copies whose plain layers are all gone (each
    /// record before its blob: a kill in between leaves a blob nothing
    /// names, for a later collect, never a record naming a missing blob),
    /// then records that name no blob or no layer any more, or that cannot
    /// be read. A copy that a live image uses itself (one imported back)
    /// stays, as any live blob.
    fn collect_compressed(
        &self,
        records: &[super::super::compressed::RecordFile],
        copies: &BTreeMap<String, Vec<(PathBuf, String)>>,
        live: &BTreeSet<String>,
        reclaimed: &mut Reclaimed,
    ) -> Result<(), StoreError> {
        let remove_record = |path: &Path, reclaimed: &mut Reclaimed| -> Result<(), StoreError> {
            let bytes = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(path) {
                Ok(()) => {
                    reclaimed.bytes += bytes;
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StoreError::Io { action: "remove record", path: path.to_path_buf(), source }),
            }
        };
        for (digest, owners) in copies {
            if live.contains(digest) || owners.iter().any(|(_, diff_id)| self.has_blob(diff_id)) {
                continue;
            }
            for (path, _) in owners {
                remove_record(path, reclaimed)?;
            }
            let path = self.blob_path(digest);
            let Ok(meta) = fs::metadata(&path) else { continue };
            crate::fault::point("gc-remove-blob");
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.forget_diff_id(digest);
                    reclaimed.blobs.push(digest.clone());
                    reclaimed.bytes += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { action: "remove blob", path, source }),
            }
        }
        for (path, record) in records {
            let stale = match record {
                Ok(r) => !self.has_blob(&r.digest) || !self.has_blob(&r.diff_id),
                Err(_) => true,
            };
            if stale {
                remove_record(path, reclaimed)?;
            }
        }
        Ok(())
    }

    /// Removes what kiln processes that are gone left in `kiln/tmp`: partial
    /// blobs (`blob-*`), build scratch dirs (`build-*`), staged archives
    /// (`load-*`, `archive-*`), pull locks. Runs with the builds lock held
    /// exclusively, and every kiln that writes there while it works (build,
    /// pull, push, load, run) holds it shared: whatever is there now belongs
    /// to no live process. The one exception is the temp file of an atomic
    /// replace (`.tmp-*`, index.json and verification records), which any
    /// command may write for a moment: those go once older than [`GRACE`].
    fn remove_temp_files(
        &self,
        reclaimed: &mut Reclaimed,
        old: &dyn Fn(&fs::Metadata) -> bool,
    ) -> Result<(), StoreError> {
        let dir = self.tmp_dir();
        let io = |source| StoreError::Io { action: "list", path: dir.clone(), source };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            let Ok(meta) = fs::symlink_metadata(entry.path()) else { continue };
            if entry.file_name().to_string_lossy().starts_with(".tmp-") && !old(&meta) {
                continue;
            }
            if remove_tree(&entry.path(), reclaimed) {
                reclaimed.temp_files += 1;
            }
        }
        Ok(())
    }
}

/// The directories directly inside `dir` (none if it does not exist).
fn subdirs(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>, StoreError> {
    let io = |source| StoreError::Io { action: "list", path: dir.to_path_buf(), source };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let meta = fs::symlink_metadata(entry.path()).map_err(io)?;
        if meta.is_dir() {
            out.push((entry.path(), meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Removes a tree (or file) in place; records the bytes freed, or the
/// failure with what to run. Returns whether it is gone.
pub(in crate::store) fn remove_tree(path: &Path, reclaimed: &mut Reclaimed) -> bool {
    removed_with(remove::remove_tree, path, reclaimed)
}

/// Like [`remove_tree`], for a tree trusted by its name (a layer dir): moved
/// aside first.
pub(in crate::store) fn remove_aside(path: &Path, reclaimed: &mut Reclaimed) -> bool {
    removed_with(remove::remove_aside, path, reclaimed)
}

fn removed_with<E: std::fmt::Display>(
    remover: fn(&Path, &mut Freed) -> Result<(), E>,
    path: &Path,
    reclaimed: &mut Reclaimed,
) -> bool {
    crate::fault::point("gc-remove-tree");
    let mut freed = Freed::default();
    let result = remover(path, &mut freed);
    reclaimed.bytes += freed.bytes;
    match result {
        Ok(()) => true,
        Err(e) => {
            reclaimed.failed.push(e.to_string());
            false
        }
    }
}
