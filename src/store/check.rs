//! `kiln system check`: verifies the store against its own rules and, with
//! `--repair`, removes what is broken or left over.
//!
//! Checked: every blob hashes to its name; every reference from index.json
//! and from manifests and nested indexes resolves to a blob of the size the
//! descriptor gives; configs parse as image configs; build-cache records name
//! blobs the store has; every layer dir carries a `verified` marker naming
//! its own chain id, and some image or build-cache record uses that chain;
//! every compressed-layer record names an intact blob of its size and
//! compression, and a plain layer the store still holds;
//! nothing is left in `kiln/tmp/` or as `kiln/layers/.step-*`, `.unpack-*`,
//! `.stale-*` or `.trash-*` by a kiln that was interrupted.
//!
//! Leftovers and new layer dirs of a build that is running are not
//! problems: a check that cannot take the builds lock (some kiln builds,
//! pulls, runs or collects) lists them as in use instead. `--repair` waits for
//! that lock, as garbage collection does, so everything it removes belongs to
//! no live process.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::gc::{self, looks_like_image_manifest, Reclaimed};
use super::layers::MARKER;
use super::{chain_ids, parse_manifest, sha256_hex, Store, StoreError, CACHE_DIR, LAYERS_DIR};
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Index, DOCKER_MANIFEST_LIST, OCI_INDEX};

/// Manifests, indexes and configs larger than this are not kiln's to parse.
const MAX_JSON: u64 = 4 << 20;
/// How deep indexes may nest before the check stops following them.
const MAX_DEPTH: usize = 8;
/// Prefixes of the scratch dirs kiln keeps beside the layer dirs.
const SCRATCH_PREFIXES: &[&str] = &[".step-", ".unpack-", ".stale-", super::remove::TRASH_PREFIX];

/// What is wrong with one path of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    #[error("content hashes to {actual} ({size} bytes), not to the blob's name: truncated or corrupt")]
    WrongContent { actual: String, size: u64 },
    #[error("not named by a sha256 digest (64 hex digits), so no image can use it")]
    NotABlobName,
    #[error("{referrer} names {digest:?}, which is no sha256 digest")]
    InvalidDigest { referrer: String, digest: String },
    #[error("{size} bytes, but {referrer} says {expected}")]
    WrongSize { size: u64, expected: u64, referrer: String },
    #[error("missing: {referrer} needs it as its {role}")]
    Missing { referrer: String, role: &'static str },
    #[error("not a valid {role} (of {referrer}): {error}")]
    Unparsable { referrer: String, role: &'static str, error: String },
    #[error("{referrer} lists {layers} layers but its config {diff_ids} diff ids")]
    LayerCount { referrer: String, layers: usize, diff_ids: usize },
    #[error("not a valid OCI index: {error}")]
    BadIndex { error: String },
    #[error("layer dir without its `verified` marker: half written or half removed")]
    NoMarker,
    #[error("layer dir whose marker names {named:?}, not its own chain id")]
    WrongMarker { named: String },
    #[error("layer dir with a marker but no diff/ tree")]
    NoDiff,
    #[error("layer dir that no image or build-cache record uses")]
    Unreferenced,
    #[error("left behind by an interrupted kiln")]
    Leftover,
    #[error("build-cache record names blob {digest}, which is not in the store")]
    CacheRecordMissingBlob { digest: String },
    #[error("not a valid compressed-layer record: {error}")]
    BadCompressedRecord { error: String },
    #[error("compressed-layer record names blob {digest}, which {why}")]
    CompressedRecordBadBlob { digest: String, why: String },
    #[error("compressed-layer record of layer {diff_id}, which is not in the store any more")]
    CompressedRecordStale { diff_id: String },
}

/// How `--repair` deals with a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Remove these paths (files or trees).
    Remove(Vec<PathBuf>),
    /// Drop the index.json entry (this tag, or the untagged entry when
    /// `None`) that points at this manifest, which is missing: no one can
    /// use it any more.
    DropIndexEntry { digest: String, tag: Option<String> },
    /// Nothing kiln can do without losing an image; says what the user can.
    Manual(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub defect: Defect,
    pub fix: Fix,
}

impl fmt::Display for Problem {
    /// `PATH: what is wrong`, and what to do when `--repair` cannot.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.defect)?;
        if let Fix::Manual(hint) = &self.fix {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    /// Temp files and layer dirs a running kiln may own: not judged.
    pub in_use: Vec<PathBuf>,
    pub blobs: usize,
    pub images: usize,
    pub layer_dirs: usize,
}

impl CheckReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing `--repair` did (or failed to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// A path, or `tag NAME in index.json`.
    pub what: String,
    pub why: String,
    /// Why it could not be removed; `None` when it was.
    pub failed: Option<String>,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failed {
            None => write!(f, "removed {}: {}", self.what, self.why),
            Some(e) => write!(f, "could not remove {}: {e}", self.what),
        }
    }
}

/// Which image a reference belongs to, which decides what repair may do.
#[derive(Debug, Clone)]
enum Owner {
    /// Listed in index.json, under this name (a tag, or the manifest digest).
    Indexed(String),
    /// An untagged image manifest found among the blobs.
    Dangling(String),
}

#[derive(Debug, Clone, Copy)]
struct BlobInfo {
    size: u64,
    intact: bool,
}

/// A step record, as far as the check reads it, of any format version
/// (see [`super::step_record::Record`]).
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

struct Walk<'s> {
    store: &'s Store,
    busy: bool,
    blobs: BTreeMap<String, BlobInfo>,
    /// Blobs reachable from index.json: never removed as someone's garbage.
    indexed: BTreeSet<String>,
    /// Chain ids some image or build-cache record uses.
    chains: BTreeSet<String>,
    /// Each image manifest's diff ids, for cache records built on it.
    diff_ids: BTreeMap<String, Vec<String>>,
    report: CheckReport,
}

impl Store {
    /// Checks the store without changing it. Takes the builds lock if no
    /// other kiln holds it; otherwise judges nothing a running build may own.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let builds = self.try_builds_lock_exclusive()?;
        let _lock = match builds {
            Some(_) => Some(self.lock()?),
            None => None,
        };
        self.check_unlocked(builds.is_none())
    }

    /// Checks, removes what `--repair` may (see [`Fix`]) and checks again
    /// until nothing removable is left (a removed blob can break what used
    /// it). Waits for running builds. Returns what it did and the last check.
    pub fn repair(&self) -> Result<(Vec<Repair>, CheckReport), StoreError> {
        let _builds = self.builds_lock_exclusive()?;
        let _lock = self.lock()?;
        let mut done: Vec<Repair> = Vec::new();
        let mut tried: BTreeSet<String> = BTreeSet::new();
        loop {
            let report = self.check_unlocked(false)?;
            let mut progress = false;
            for problem in &report.problems {
                match &problem.fix {
                    Fix::Manual(_) => {}
                    Fix::Remove(paths) => {
                        for path in paths {
                            let what = path.display().to_string();
                            if fs::symlink_metadata(path).is_err() || !tried.insert(what.clone()) {
                                continue;
                            }
                            let failed = remove_path(path).err();
                            if failed.is_none() {
                                if let Some(digest) = blob_digest(self, path) {
                                    self.forget_diff_id(&digest);
                                }
                                progress = true;
                            }
                            done.push(Repair { what, why: problem.defect.to_string(), failed });
                        }
                    }
                    Fix::DropIndexEntry { digest, tag } => {
                        if self.drop_missing_entry(digest, tag.as_deref())? {
                            progress = true;
                            let what = match tag {
                                Some(tag) => format!("tag {tag} from index.json"),
                                None => format!("the untagged entry {digest} from index.json"),
                            };
                            done.push(Repair { what, why: format!("its manifest {digest} is missing"), failed: None });
                        }
                    }
                }
            }
            if !progress {
                return Ok((done, report));
            }
        }
    }

    /// Drops the index entry `tag` (or the untagged ones) pointing at
    /// `digest` if, under the index lock, its blob is still missing (and the
    /// tag was not moved meanwhile); returns whether one went.
    fn drop_missing_entry(&self, digest: &str, tag: Option<&str>) -> Result<bool, StoreError> {
        self.update_index(|index| {
            if self.has_blob(digest) {
                return false;
            }
            let before = index.manifests.len();
            index.manifests.retain(|d| !(d.digest == digest && d.ref_name() == tag));
            index.manifests.len() != before
        })
    }

    /// Chain ids that some image in the store or some build-cache record
    /// uses: a layer dir of another chain is unreachable.
    pub fn used_chains(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut walk = Walk::new(self, true);
        walk.scan_blobs(false)?;
        walk.images()?;
        walk.cache_records()?;
        Ok(walk.chains)
    }

    fn check_unlocked(&self, busy: bool) -> Result<CheckReport, StoreError> {
        let mut walk = Walk::new(self, busy);
        walk.scan_blobs(true)?;
        walk.images()?;
        walk.cache_records()?;
        walk.compressed_records()?;
        walk.layer_dirs()?;
        walk.temp_files()?;
        Ok(walk.report)
    }
}

impl<'s> Walk<'s> {
    fn new(store: &'s Store, busy: bool) -> Self {
        Walk {
            store,
            busy,
            blobs: BTreeMap::new(),
            indexed: BTreeSet::new(),
            chains: BTreeSet::new(),
            diff_ids: BTreeMap::new(),
            report: CheckReport::default(),
        }
    }

    fn problem(&mut self, path: PathBuf, defect: Defect, fix: Fix) {
        self.report.problems.push(Problem { path, defect, fix });
    }

    /// Lists the blobs, hashing each when `hash` (else trusting names).
    fn scan_blobs(&mut self, hash: bool) -> Result<(), StoreError> {
        let dir = self.store.blob_dir();
        let io = |source| StoreError::Io { action: "list blobs in", path: dir.clone(), source };
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(&dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            if sha256_hex(&digest).is_none() || !meta.is_file() {
                self.problem(path.clone(), Defect::NotABlobName, Fix::Remove(vec![path]));
                continue;
            }
            self.report.blobs += 1;
            let intact = if hash {
                match hash_file(&path) {
                    Ok((actual, size)) if actual != digest => {
                        self.problem(path.clone(), Defect::WrongContent { actual, size }, Fix::Remove(vec![path]));
                        false
                    }
                    Ok(_) => true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                    Err(source) => return Err(StoreError::Io { action: "read blob", path, source }),
                }
            } else {
                true
            };
            self.blobs.insert(digest, BlobInfo { size: meta.len(), intact });
        }
        Ok(())
    }

    /// Follows index.json's entries, then the untagged image manifests.
    fn images(&mut self) -> Result<(), StoreError> {
        let index_path = self.store.index_path();
        let index: Index = match fs::read(&index_path).map(|b| serde_json::from_slice::<Index>(&b)) {
            Ok(Ok(index)) => index,
            Ok(Err(e)) => {
                let hint = "restore it from a backup, or move it away and tag the images again".to_string();
                self.problem(index_path, Defect::BadIndex { error: e.to_string() }, Fix::Manual(hint));
                Index::default()
            }
            Err(source) => return Err(StoreError::Io { action: "read", path: index_path, source }),
        };
        self.indexed = self.store.reachable(index.manifests.iter().map(|d| d.digest.clone()))?;
        for entry in &index.manifests {
            let name = entry.ref_name().map(str::to_string).unwrap_or_else(|| entry.digest.clone());
            let referrer = match entry.ref_name() {
                Some(tag) => format!("tag {tag} in index.json"),
                None => "an untagged entry of index.json".to_string(),
            };
            if sha256_hex(&entry.digest).is_some() && !self.blobs.contains_key(&entry.digest) {
                let defect = Defect::Missing { referrer, role: "manifest" };
                let fix =
                    Fix::DropIndexEntry { digest: entry.digest.clone(), tag: entry.ref_name().map(str::to_string) };
                self.problem(self.store.blob_path(&entry.digest), defect, fix);
                continue;
            }
            let owner = Owner::Indexed(name);
            if self.node(entry, &referrer, "manifest", &owner) {
                self.manifest_or_index(entry, &owner, 0)?;
            }
        }
        // Untagged image manifests: dangling images and the build cache's.
        let known = self.indexed.clone();
        let candidates: Vec<String> =
            self.blobs.iter().filter(|(d, b)| b.intact && !known.contains(*d)).map(|(d, _)| d.clone()).collect();
        for digest in candidates {
            let Some(bytes) = self.store.json_blob(&digest)? else { continue };
            if !looks_like_image_manifest(&digest, &bytes) {
                continue;
            }
            let desc = Descriptor::new(crate::image::manifest::OCI_MANIFEST, digest.clone(), bytes.len() as u64);
            self.manifest_or_index(&desc, &Owner::Dangling(digest), 0)?;
        }
        Ok(())
    }

    /// Whether the blob `desc` names is present, intact and of the
    /// descriptor's size (reporting what is not).
    fn node(&mut self, desc: &Descriptor, referrer: &str, role: &'static str, owner: &Owner) -> bool {
        if sha256_hex(&desc.digest).is_none() {
            let path = self.store.index_path();
            let defect = Defect::InvalidDigest { referrer: referrer.to_string(), digest: desc.digest.clone() };
            let fix = self.fix_for(owner, None);
            self.problem(path, defect, fix);
            return false;
        }
        let path = self.store.blob_path(&desc.digest);
        let Some(info) = self.blobs.get(&desc.digest).copied() else {
            let defect = Defect::Missing { referrer: referrer.to_string(), role };
            let fix = self.fix_for(owner, None);
            self.problem(path, defect, fix);
            return false;
        };
        if !info.intact {
            return false; // reported with the blob
        }
        if info.size != desc.size {
            let defect = Defect::WrongSize { size: info.size, expected: desc.size, referrer: referrer.to_string() };
            let fix = self.fix_for(owner, None);
            self.problem(path, defect, fix);
            return false;
        }
        true
    }

    /// Repair removes a broken untagged image (its manifest, and `blob` when
    /// no tagged image uses it); a tagged one stays for the user to decide.
    fn fix_for(&self, owner: &Owner, blob: Option<&str>) -> Fix {
        match owner {
            Owner::Indexed(name) => {
                Fix::Manual(format!("pull or build {name} again, or remove it with `kiln rmi {name}`"))
            }
            Owner::Dangling(manifest) => {
                let mut paths = vec![self.store.blob_path(manifest)];
                if let Some(blob) = blob.filter(|b| !self.indexed.contains(*b)) {
                    paths.push(self.store.blob_path(blob));
                }
                Fix::Remove(paths)
            }
        }
    }

    fn manifest_or_index(&mut self, desc: &Descriptor, owner: &Owner, depth: usize) -> Result<(), StoreError> {
        let Some(bytes) = self.load(desc) else { return Ok(()) };
        let short = crate::humanize::short(&desc.digest).to_string();
        let is_index = desc.media_type == OCI_INDEX
            || desc.media_type == DOCKER_MANIFEST_LIST
            || serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v.get("manifests").is_some());
        if is_index {
            self.report.images += 1;
            let index = match serde_json::from_slice::<Index>(&bytes) {
                Ok(index) => index,
                Err(e) => {
                    let defect = Defect::Unparsable { referrer: describe(owner), role: "index", error: e.to_string() };
                    let fix = self.fix_for(owner, Some(&desc.digest));
                    self.problem(self.store.blob_path(&desc.digest), defect, fix);
                    return Ok(());
                }
            };
            if depth >= MAX_DEPTH {
                return Ok(());
            }
            for child in &index.manifests {
                let referrer = format!("index {short}");
                if self.node(child, &referrer, "manifest", owner) {
                    self.manifest_or_index(child, owner, depth + 1)?;
                }
            }
            return Ok(());
        }
        self.report.images += 1;
        let manifest = match parse_manifest(&desc.digest, &bytes) {
            Ok(m) => m,
            Err(e) => {
                let defect = Defect::Unparsable { referrer: describe(owner), role: "manifest", error: error_text(&e) };
                let fix = self.fix_for(owner, Some(&desc.digest));
                self.problem(self.store.blob_path(&desc.digest), defect, fix);
                return Ok(());
            }
        };
        let referrer = format!("manifest {short} ({})", describe(owner));
        let config_ok = self.node(&manifest.config, &referrer, "config", owner);
        for layer in &manifest.layers {
            self.node(layer, &referrer, "layer", owner);
        }
        let is_image_config = manifest.config.media_type.contains("image.config")
            || manifest.config.media_type.contains("container.image");
        if !config_ok || !is_image_config {
            return Ok(());
        }
        let Some(config_bytes) = self.load(&manifest.config) else { return Ok(()) };
        let config = match serde_json::from_slice::<ImageConfig>(&config_bytes) {
            Ok(c) => c,
            Err(e) => {
                let defect = Defect::Unparsable { referrer, role: "image config", error: e.to_string() };
                let fix = self.fix_for(owner, Some(&manifest.config.digest));
                self.problem(self.store.blob_path(&manifest.config.digest), defect, fix);
                return Ok(());
            }
        };
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            let defect = Defect::LayerCount { referrer, layers: manifest.layers.len(), diff_ids: diff_ids.len() };
            let fix = self.fix_for(owner, None);
            self.problem(self.store.blob_path(&desc.digest), defect, fix);
            return Ok(());
        }
        self.chains.extend(chain_ids(diff_ids));
        self.diff_ids.insert(desc.digest.clone(), diff_ids.clone());
        Ok(())
    }

    /// The bytes of a blob already found present and intact.
    fn load(&self, desc: &Descriptor) -> Option<Vec<u8>> {
        let info = self.blobs.get(&desc.digest)?;
        if !info.intact || info.size > MAX_JSON {
            return None;
        }
        fs::read(self.store.blob_path(&desc.digest)).ok()
    }

    /// Build-cache records: the blobs they name, and the chains of the
    /// layers they add (each step's parent is another record, a base image's
    /// manifest, or `scratch:…`).
    fn cache_records(&mut self) -> Result<(), StoreError> {
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
    fn compressed_records(&mut self) -> Result<(), StoreError> {
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

    fn layer_dirs(&mut self) -> Result<(), StoreError> {
        let root = self.store.private_dir().join(LAYERS_DIR);
        for (path, meta) in entries(&root)? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') {
                if SCRATCH_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    self.leftover(path);
                }
                continue;
            }
            // `empty/` stands as an image's root; other names are no layer dir of kiln's.
            let Some(chain) = super::layer_dir_chain_id(&name).filter(|_| meta.is_dir()) else { continue };
            self.report.layer_dirs += 1;
            let defect = match fs::read_to_string(path.join(MARKER)) {
                Err(_) => Some(Defect::NoMarker),
                Ok(text) if text.lines().next() != Some(chain.as_str()) => {
                    Some(Defect::WrongMarker { named: text.lines().next().unwrap_or_default().to_string() })
                }
                Ok(_) if !path.join(kiln_overlay::rootfs::UPPER_DIR).is_dir() => Some(Defect::NoDiff),
                Ok(_) if !self.chains.contains(&chain) => {
                    if self.busy {
                        // A running build commits layers before the record or image that uses them.
                        self.report.in_use.push(path);
                        continue;
                    }
                    Some(Defect::Unreferenced)
                }
                Ok(_) => None,
            };
            if let Some(defect) = defect {
                self.problem(path.clone(), defect, Fix::Remove(vec![path]));
            }
        }
        Ok(())
    }

    fn temp_files(&mut self) -> Result<(), StoreError> {
        for (path, _) in entries(&self.store.tmp_dir())? {
            self.leftover(path);
        }
        Ok(())
    }

    fn leftover(&mut self, path: PathBuf) {
        if self.busy {
            self.report.in_use.push(path);
        } else {
            self.problem(path.clone(), Defect::Leftover, Fix::Remove(vec![path]));
        }
    }
}

fn describe(owner: &Owner) -> String {
    match owner {
        Owner::Indexed(name) => format!("image {name}"),
        Owner::Dangling(digest) => format!("untagged image {}", crate::humanize::short(digest)),
    }
}

/// A store error's own text and its source's, on one line.
fn error_text(e: &StoreError) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// `path.tmp<pid>`: a cache record being written (see `cache::write_atomic`).
fn is_cache_temp(name: &str) -> bool {
    name.rsplit_once(".tmp").is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The entries of `dir` with their metadata (none if it does not exist), by name.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>, StoreError> {
    let io = |source| StoreError::Io { action: "list", path: dir.to_path_buf(), source };
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(io)?;
        if let Ok(meta) = fs::symlink_metadata(entry.path()) {
            out.push((entry.path(), meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `sha256:<hex>` and size of a file's content.
fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// The compression a file's first bytes announce.
fn blob_format(path: &Path) -> io::Result<kiln_overlay::compress::Format> {
    let mut head = Vec::with_capacity(kiln_overlay::compress::MAGIC_LEN);
    File::open(path)?.take(kiln_overlay::compress::MAGIC_LEN as u64).read_to_end(&mut head)?;
    Ok(kiln_overlay::compress::detect(&head))
}

/// The digest a path in `blobs/sha256` stands for.
fn blob_digest(store: &Store, path: &Path) -> Option<String> {
    if path.parent()? != store.blob_dir() {
        return None;
    }
    let digest = format!("sha256:{}", path.file_name()?.to_string_lossy());
    sha256_hex(&digest).is_some().then_some(digest)
}

/// The one way the check removes things: a file, or a tree with gc's
/// removal (renamed aside first, so a repair cut short never leaves a half
/// tree under its name; read-only directories made writable on the way).
/// Subordinate-id-owned trees go because `kiln system check` runs inside
/// kiln's user namespace.
fn remove_path(path: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        let mut reclaimed = Reclaimed::default();
        if gc::remove_aside(path, &mut reclaimed) {
            return Ok(());
        }
        return Err(reclaimed.failed.join("; "));
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
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

    #[test]
    fn problems_print_path_then_defect() {
        let p = Problem {
            path: PathBuf::from("/s/kiln/tmp/blob-x"),
            defect: Defect::Leftover,
            fix: Fix::Remove(vec![PathBuf::from("/s/kiln/tmp/blob-x")]),
        };
        assert_eq!(p.to_string(), "/s/kiln/tmp/blob-x: left behind by an interrupted kiln");
        let p = Problem {
            path: PathBuf::from("/s/blobs/sha256/ab"),
            defect: Defect::Missing { referrer: "manifest x (image a:1)".into(), role: "layer" },
            fix: Fix::Manual("do y".into()),
        };
        assert_eq!(p.to_string(), "/s/blobs/sha256/ab: missing: manifest x (image a:1) needs it as its layer; do y");
    }
}
