//! The layer cache: each step's key derives from its parent state, the step
//! after expansion (with the build args it sees) and, for COPY/ADD, the
//! digest of every source it reads. A record holds what the step added to
//! the state before it (layers, history), so a hit needs no mount and no
//! namespace work, and records grow with the step, not with the image: a
//! copy of the whole config per step made a Dockerfile of 4,000 LABEL lines
//! write 700 MB of records. What a metadata step (ENV, LABEL, …) does to the
//! config is not stored: the step is part of the key, so a hit replays it.
//!
//! Each build also leaves a log of its steps' inputs; on a miss, comparing
//! with the previous build of the same Dockerfile says what changed.

pub mod fromkey;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::{Step, StepKind};
use crate::store::Store;

/// Build args that docker keeps out of history and the cache key.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub use crate::store::step_record::{Record, RECORD_VERSION};

/// Records are small; anything larger is not one of ours.
const MAX_RECORD: u64 = 1 << 20;

/// What a step saw, kept to explain the next build's misses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepInputs {
    pub key: String,
    pub parent: String,
    pub instruction: String,
    pub args: BTreeMap<String, String>,
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BuildLog {
    /// `stage/step` → inputs.
    steps: BTreeMap<String, StepInputs>,
}

pub struct Cache {
    dir: PathBuf,
    log_path: PathBuf,
    /// The previous build's log as read: parsed only to explain a miss (a
    /// fully cached build never needs it), and compared with this build's
    /// so an unchanged log is not written again.
    previous_bytes: Vec<u8>,
    previous: std::cell::OnceCell<BuildLog>,
    current: BuildLog,
    /// Step inputs of the builds that exported the `--cache-from` caches,
    /// for misses this store's own log cannot explain.
    imported: BTreeMap<String, StepInputs>,
}

impl Cache {
    /// `identity` names "the same Dockerfile" across builds (its path and context).
    pub fn open(store: &Store, identity: &str) -> Cache {
        let dir = store.root().join("kiln").join("cache");
        let log_path = dir.join("builds").join(format!("{}.json", &hash_hex(identity.as_bytes())[..32]));
        let previous_bytes = std::fs::read(&log_path).unwrap_or_default();
        Cache {
            dir,
            log_path,
            previous_bytes,
            previous: std::cell::OnceCell::new(),
            current: BuildLog::default(),
            imported: BTreeMap::new(),
        }
    }

    pub fn stat_cache_path(&self, context_root: &Path) -> PathBuf {
        let id = hash_hex(context_root.to_string_lossy().as_bytes());
        self.dir.join("stat").join(format!("{}.json", &id[..32]))
    }

    /// The record of `key` when it is one for a step starting from `parent`
    /// whose layers are all still in the store. Anything else (missing,
    /// unreadable, older format, another parent) is a miss.
    pub fn get(&self, key: &str, parent: &str, store: &Store) -> Option<Record> {
        let path = self.record_path(key);
        if std::fs::metadata(&path).ok()?.len() > MAX_RECORD {
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        let valid = record.version == RECORD_VERSION
            && record.parent == parent
            && record.layers.len() == record.diff_ids.len()
            && record.layers.iter().all(|l| store.has_blob(&l.digest));
        valid.then_some(record)
    }

    pub fn put(&self, key: &str, record: &Record) -> std::io::Result<()> {
        let path = self.record_path(key);
        write_atomic(&path, &serde_json::to_vec(record).map_err(std::io::Error::other)?)
    }

    fn record_path(&self, key: &str) -> PathBuf {
        let hex = key.strip_prefix("sha256:").unwrap_or(key);
        self.dir.join("steps").join(&hex[..2.min(hex.len())]).join(format!("{}.json", hex))
    }

    /// Keeps the image a failed build left for debugging as build cache:
    /// `kiln images` lists it only with `-a` (as docker's intermediate
    /// images), and `system prune` removes it.
    pub fn keep_intermediate(&self, manifest_digest: &str, config_digest: &str) -> std::io::Result<()> {
        let hex = manifest_digest.strip_prefix("sha256:").unwrap_or(manifest_digest);
        let path = self.dir.join("intermediate").join(format!("{}.json", hex));
        // Named by the manifest, which names the config: a record already
        // there is this one (every cache hit of a later build comes here).
        if path.is_file() {
            return Ok(());
        }
        let record = serde_json::json!({ "manifest": manifest_digest, "config": config_digest });
        write_atomic(&path, record.to_string().as_bytes())
    }

    /// Remembers what step `pos` saw in this build.
    pub fn note(&mut self, pos: &str, inputs: StepInputs) {
        self.current.steps.insert(pos.to_string(), logged(inputs));
    }

    /// One line saying why step `pos` missed, when a previous build of this
    /// Dockerfile ran it.
    /// Without one, the build that exported an imported cache answers.
    pub fn explain_miss(&self, pos: &str, now: &StepInputs) -> Option<String> {
        let previous = self.previous.get_or_init(|| serde_json::from_slice(&self.previous_bytes).unwrap_or_default());
        let before = previous.steps.get(pos).or_else(|| self.imported.get(pos))?;
        let now = &logged(now.clone());
        if before.key == now.key {
            return Some(
                "its cache record is gone or unusable (pruned, taken last time from a --cache-from cache without its layers, \
                 or written by another kiln version?)"
                    .into(),
            );
        }
        if before.instruction != now.instruction {
            return Some(format!("the instruction changed (was `{}`)", before.instruction));
        }
        if let Some(why) = diff_args(&before.args, &now.args) {
            return Some(why);
        }
        if let Some(why) = diff_files(&before.files, &now.files) {
            return Some(why);
        }
        if before.parent != now.parent {
            return Some(if pos.ends_with("/0") {
                "the base image changed".into()
            } else {
                "an earlier step changed".into()
            });
        }
        None
    }

    /// Explains misses with the step inputs of the builds that exported
    /// the imported caches, where this store has no earlier build's.
    pub fn set_imported(&mut self, steps: BTreeMap<String, StepInputs>) {
        self.imported = steps;
    }

    /// What this build's steps saw so far (as the log keeps it), by `stage/step`.
    pub fn steps(&self) -> &BTreeMap<String, StepInputs> {
        &self.current.steps
    }

    /// Saves this build's log for the next build to compare against.
    pub fn save_log(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.current).map_err(std::io::Error::other)?;
        if bytes == self.previous_bytes {
            return Ok(());
        }
        write_atomic(&self.log_path, &bytes)
    }
}

/// The most build args the log keeps by name for one step.
const MAX_LOGGED_ARGS: usize = 64;

/// `inputs` as the log keeps them: a RUN that sees many build args (each
/// RUN after thousands of ARG lines sees them all) logs one digest of them,
/// so the log grows with the Dockerfile, not with its square.
fn logged(mut inputs: StepInputs) -> StepInputs {
    if inputs.args.len() > MAX_LOGGED_ARGS {
        let all = serde_json::to_vec(&inputs.args).unwrap_or_default();
        let name = format!("({} build args)", inputs.args.len());
        inputs.args = BTreeMap::from([(name, kiln_overlay::digest::sha256_digest(&all))]);
    }
    inputs
}

fn diff_args(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Option<String> {
    let digested = |args: &BTreeMap<String, String>| args.keys().any(|k| k.starts_with('('));
    if digested(before) || digested(now) {
        return (before != now).then(|| "its build args changed (too many to say which)".to_string());
    }
    for (k, v) in now {
        match before.get(k) {
            None => return Some(format!("build arg {} is new ({})", k, v)),
            Some(old) if old != v => return Some(format!("build arg {} changed: {:?} → {:?}", k, old, v)),
            _ => {}
        }
    }
    before.keys().find(|k| !now.contains_key(*k)).map(|k| format!("build arg {} is no longer set", k))
}

fn diff_files(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Option<String> {
    let mut changes: Vec<(&str, &str)> = Vec::new();
    for (path, desc) in now {
        match before.get(path) {
            None => changes.push((path, "added")),
            Some(old) if old != desc => {
                let mode_only = mode_of(old) != mode_of(desc) && content_of(old) == content_of(desc);
                changes.push((path, if mode_only { "mode" } else { "content" }));
            }
            _ => {}
        }
    }
    for path in before.keys().filter(|p| !now.contains_key(*p)) {
        changes.push((path, "removed"));
    }
    match changes.as_slice() {
        [] => None,
        [(path, what)] => Some(format!("file {} changed ({})", path, what)),
        many => {
            let shown: Vec<String> = many.iter().take(3).map(|(p, w)| format!("{} ({})", p, w)).collect();
            let more = if many.len() > 3 { ", …" } else { "" };
            Some(format!("{} files changed: {}{}", many.len(), shown.join(", "), more))
        }
    }
}

fn mode_of(desc: &str) -> &str {
    desc.split(' ').next().unwrap_or("")
}

fn content_of(desc: &str) -> &str {
    desc.split_once(' ').map_or("", |(_, rest)| rest)
}

/// The key of a step: parent key, the step as planned (minus proxy args),
/// and `extra` (the digest of what COPY/ADD read, or of a `--from` source).
pub fn step_key(parent: &str, step: &Step, extra: &str) -> String {
    let mut kind = step.kind.clone();
    if let StepKind::Run(run) = &mut kind {
        let kept: Vec<(String, String)> =
            run.build_args.to_vec().into_iter().filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str())).collect();
        run.build_args = kept.into();
    }
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(&kind).unwrap_or_default());
    h.update([0]);
    h.update(extra.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// The sha256 of `bytes` as bare hex, for file names.
fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(instr: &str, args: &[(&str, &str)], files: &[(&str, &str)]) -> StepInputs {
        StepInputs {
            key: format!("k-{}-{:?}-{:?}", instr, args, files),
            parent: "p".into(),
            instruction: instr.into(),
            args: args.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            files: files.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        }
    }

    fn cache_with(prev: StepInputs) -> Cache {
        let mut previous = BuildLog::default();
        previous.steps.insert("0/1".into(), prev);
        Cache {
            dir: PathBuf::new(),
            log_path: PathBuf::new(),
            previous_bytes: Vec::new(),
            previous: previous.into(),
            current: BuildLog::default(),
            imported: BTreeMap::new(),
        }
    }

    #[test]
    fn explains_each_kind_of_change() {
        let c = cache_with(inputs("COPY a /a", &[("V", "1")], &[("a", "mode:100644 sha256:x")]));
        assert_eq!(
            c.explain_miss("0/1", &inputs("COPY b /a", &[("V", "1")], &[])).unwrap(),
            "the instruction changed (was `COPY a /a`)"
        );
        assert_eq!(
            c.explain_miss("0/1", &inputs("COPY a /a", &[("V", "2")], &[("a", "mode:100644 sha256:x")])).unwrap(),
            "build arg V changed: \"1\" → \"2\""
        );
        assert_eq!(
            c.explain_miss("0/1", &inputs("COPY a /a", &[("V", "1")], &[("a", "mode:100755 sha256:x")])).unwrap(),
            "file a changed (mode)"
        );
        assert_eq!(
            c.explain_miss("0/1", &inputs("COPY a /a", &[("V", "1")], &[("a", "mode:100644 sha256:y")])).unwrap(),
            "file a changed (content)"
        );
        assert!(c.explain_miss("9/9", &inputs("X", &[], &[])).is_none());
    }

    #[test]
    fn many_args_are_logged_as_one_digest() {
        let many: Vec<(String, String)> = (0..100).map(|i| (format!("A{i}"), "1".to_string())).collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let before = inputs("RUN x", &pairs, &[]);
        let mut cache = cache_with(before.clone());
        cache.note("0/1", before.clone());
        assert_eq!(cache.current.steps["0/1"].args.len(), 1);
        let mut changed = pairs.clone();
        changed[5].1 = "2";
        let mut now = inputs("RUN x", &changed, &[]);
        now.key = "other".into();
        let mut previous = BuildLog::default();
        previous.steps.insert("0/1".into(), logged(before));
        cache.previous = previous.into();
        assert_eq!(cache.explain_miss("0/1", &now).unwrap(), "its build args changed (too many to say which)");
    }
}
