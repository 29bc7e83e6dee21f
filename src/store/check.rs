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

mod images;
mod leftovers;
mod records;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use report::{CheckReport, Defect, Fix, Problem, Repair};

use super::gc::{self, Reclaimed};
use super::{sha256_hex, Store, StoreError};

#[derive(Debug, Clone, Copy)]
struct BlobInfo {
    size: u64,
    intact: bool,
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
}

/// The entries of `dir` with their metadata (none if it does not exist), by name.
pub(super) fn entries(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>, StoreError> {
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
