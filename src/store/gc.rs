//! What the store holds and which parts are still needed: images (tagged,
//! and untagged "dangling" ones), build-cache records, layer dirs and cache
//! mounts; removal of what nothing references; disk usage by kind.
//!
//! Roots are the index's entries, the untagged image manifests the caller
//! does not ask to remove, and every digest a build-cache record mentions.
//! Layer dirs (`kiln/layers/<chain id>`) are live while a live image has
//! that chain id; a dir whose name is no chain id is never touched.
//!
//! A compressed copy of a plain layer, made for a push or an export and
//! recorded in `kiln/compressed/`, lives as long as its plain layer's blob
//! and goes with it (see `compressed.rs`).
//!
//! Builds write blobs before the manifest that makes them reachable, so an
//! unreachable blob or layer dir that belongs to no image being removed is
//! only deleted once it is older than [`GRACE`].
//!
//! A collect runs with the builds lock held exclusively (no build, pull,
//! load or run is going on), so it also removes the temp files in
//! `kiln/tmp` and the trees left moved aside: their owners are gone. Layer
//! dirs are moved aside before they are removed (see [`super::remove`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::remove::{self, Freed, TRASH_PREFIX};
use super::step_record::{Record, RECORD_VERSION};
use super::{index, parse_manifest, sha256_hex, Store, StoreError};
use crate::image::config::{History, ImageConfig};
use crate::image::manifest::{Descriptor, Index, Manifest, OCI_MANIFEST};

/// Unpacked layers, one directory per chain id, under `<root>/kiln/`.
pub const LAYERS_DIR: &str = "layers";
/// Build-cache records, under `<root>/kiln/`; any `sha256:<hex>` a record
/// mentions keeps that blob (and the image it names) alive.
pub const CACHE_DIR: &str = "cache";
/// Records of intermediate images (a step's image, the last good state of
/// a failed build), under the build cache: `<manifest hex>.json`.
pub const INTERMEDIATE_DIR: &str = "intermediate";
/// `RUN --mount=type=cache` directories, under `<root>/kiln/`.
pub const CACHE_MOUNTS_DIR: &str = "cache-mounts";
/// How old an unreferenced blob or layer dir must be before a sweep that
/// was not asked to remove it deletes it.
pub const GRACE: Duration = Duration::from_secs(3600);
/// Larger blobs are layers, never manifests, indexes or configs.
const MAX_JSON_BLOB: u64 = 4 << 20;

/// An image in the store, tagged or not.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest's descriptor, without annotations.
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    /// The image id.
    pub config_digest: String,
    pub config: ImageConfig,
    /// Its tags, in index order; empty for a dangling image.
    pub tags: Vec<String>,
    /// A build-cache record mentions its manifest or config.
    pub cached: bool,
}

impl StoredImage {
    pub fn manifest_digest(&self) -> &str {
        &self.descriptor.digest
    }

    /// Manifest, config and layer digests, each once.
    pub fn blobs(&self) -> Vec<String> {
        let mut out = vec![self.descriptor.digest.clone(), self.config_digest.clone()];
        for l in &self.manifest.layers {
            if !out.contains(&l.digest) {
                out.push(l.digest.clone());
            }
        }
        out
    }

    /// Bytes of its manifest, config and layers as stored.
    pub fn size(&self) -> u64 {
        let mut seen = HashSet::new();
        let mut total = 0;
        for (digest, size) in std::iter::once((&self.descriptor.digest, self.descriptor.size))
            .chain(std::iter::once((&self.manifest.config.digest, self.manifest.config.size)))
            .chain(self.manifest.layers.iter().map(|l| (&l.digest, l.size)))
        {
            if seen.insert(digest.clone()) {
                total += size;
            }
        }
        total
    }
}

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
    fn kiln_dir(&self, name: &str) -> PathBuf {
        self.private_dir().join(name)
    }

    /// Every image: tagged ones in index order, then untagged image
    /// manifests found among the blobs (whose config and layers are all
    /// present), oldest digest first.
    pub fn images(&self) -> Result<Vec<StoredImage>, StoreError> {
        let index = index::read_index(&self.index_path())?;
        // A tagged image that is also a step's intermediate image (the last
        // step's) is not "used by the build cache": `rmi` removes it and
        // that record with it. An untagged one is build cache.
        let (step_refs, intermediate_refs) = self.cache_refs_by_kind()?;
        let cache_refs: BTreeSet<String> = step_refs.union(&intermediate_refs).cloned().collect();
        let mut out: Vec<StoredImage> = Vec::new();
        let mut in_index: BTreeSet<String> = BTreeSet::new();
        for entry in &index.manifests {
            for d in self.reachable(std::iter::once(entry.digest.clone()))? {
                in_index.insert(d);
            }
            if let Some(existing) = out.iter_mut().find(|i| i.descriptor.digest == entry.digest) {
                existing.tags.extend(entry.ref_name().map(str::to_string));
                continue;
            }
            let Some(mut image) = self.stored_image(entry, &step_refs)? else { continue };
            image.tags.extend(entry.ref_name().map(str::to_string));
            out.push(image);
        }
        for (digest, size) in self.untagged_manifests(&in_index)? {
            let d = Descriptor::new(OCI_MANIFEST, digest, size);
            if let Some(image) = self.stored_image(&d, &cache_refs)? {
                if image.blobs().iter().all(|b| self.has_blob(b)) {
                    out.push(image);
                }
            }
        }
        Ok(out)
    }

    /// Reads an image entry; `None` for entries that are not image
    /// manifests (indexes) or whose blobs are gone.
    fn stored_image(
        &self,
        entry: &Descriptor,
        cache_refs: &BTreeSet<String>,
    ) -> Result<Option<StoredImage>, StoreError> {
        let tag = entry.ref_name();
        if !self.has_blob(&entry.digest) {
            if let Some(tag) = tag {
                super::warn_skipped(tag, &StoreError::MissingBlob { digest: entry.digest.clone() });
            }
            return Ok(None);
        }
        // One broken image (a config that is no JSON, a missing blob) must
        // not stop listing or pruning the others.
        let image = match self.load_image(entry) {
            Ok(image) => image,
            Err(StoreError::NotAManifest { .. }) => return Ok(None),
            Err(StoreError::MissingBlob { .. }) if tag.is_none() => return Ok(None),
            Err(e) => {
                super::warn_skipped(tag.unwrap_or(&entry.digest), &e);
                return Ok(None);
            }
        };
        let cached = cache_refs.contains(&image.manifest_digest) || cache_refs.contains(&image.config_digest);
        Ok(Some(StoredImage {
            descriptor: image.descriptor,
            manifest: image.manifest,
            config_digest: image.config_digest,
            config: image.config,
            tags: Vec::new(),
            cached,
        }))
    }

    /// Image manifests among the blobs that `known` does not list, with sizes.
    fn untagged_manifests(&self, known: &BTreeSet<String>) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for (digest, size) in self.blob_files()? {
            if known.contains(&digest) {
                continue;
            }
            let Some(bytes) = self.json_blob(&digest)? else { continue };
            if looks_like_image_manifest(&digest, &bytes) {
                out.push((digest, size));
            }
        }
        Ok(out)
    }

    /// `(digest, size)` of each file in `blobs/sha256`.
    fn blob_files(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let dir = self.blob_dir();
        let io = |source| StoreError::Io { action: "list blobs in", path: dir.clone(), source };
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if sha256_hex(&digest).is_none() {
                continue;
            }
            let meta = entry.metadata().map_err(io)?;
            if meta.is_file() {
                out.push((digest, meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A blob's bytes when it may be JSON (small, starts with `{`).
    pub(super) fn json_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(digest);
        let io = |source| StoreError::Io { action: "read blob", path: path.clone(), source };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if file.metadata().map_err(io)?.len() > MAX_JSON_BLOB {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        Ok((first == Some(&b'{')).then_some(bytes))
    }

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
    fn build_logs(&self, dir: &Path) -> Vec<Vec<String>> {
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
    fn cache_refs_by_kind(&self) -> Result<(BTreeSet<String>, BTreeSet<String>), StoreError> {
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

    pub(super) fn cache_record_paths(&self) -> Result<Vec<PathBuf>, StoreError> {
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
        records: &[super::compressed::RecordFile],
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

    /// The chain ids of the image manifests among `digests`.
    fn chains_of(&self, digests: &BTreeSet<String>) -> Result<BTreeSet<String>, StoreError> {
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

/// A manifest of an image (a config and layers), not of another artifact.
pub(super) fn looks_like_image_manifest(digest: &str, bytes: &[u8]) -> bool {
    let Ok(manifest) = parse_manifest(digest, bytes) else { return false };
    manifest.schema_version == 2
        && (manifest.config.media_type.contains("image.config")
            || manifest.config.media_type.contains("container.image"))
}

/// Every `sha256:<64 hex>` in `text`.
fn digests_in(text: &str) -> Vec<String> {
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
pub(super) fn remove_tree(path: &Path, reclaimed: &mut Reclaimed) -> bool {
    removed_with(remove::remove_tree, path, reclaimed)
}

/// Like [`remove_tree`], for a tree trusted by its name (a layer dir): moved
/// aside first.
pub(super) fn remove_aside(path: &Path, reclaimed: &mut Reclaimed) -> bool {
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
