//! The content part of a `COPY --from` cache key, remembered per source.
//!
//! A stage's or image's layers are named by the chain id of the top one, and
//! what a layer stack holds never changes, so the digest of what a list of
//! source words selects from it is computed once (looking the paths up in
//! the layer dirs and hashing only the selected files) and kept in
//! `kiln/cache/stat/from/`. A rebuild whose source stage came out the same then
//! costs one small read; one whose stage changed elsewhere recomputes the
//! digest and still hits the step's record when the selected files did not
//! change. The files live beside the stat caches (`kiln/cache/stat/`), which
//! speed up hashing and hold no blob: `prune -f` keeps them, `prune -a`
//! drops them, and an unreadable one is recomputed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;

/// Bumped when what is digested changes, so older memos are not reused.
const VERSION: &str = "from-v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memo {
    /// The digest over every selected entry.
    pub digest: String,
    /// Each entry's description, by printable path, to explain misses.
    pub files: BTreeMap<String, String>,
}

/// Where the memo for `words` selected out of the layers ending at `chain` lives.
pub fn path(store: &Store, chain: &str, words: &[String]) -> PathBuf {
    let mut h = Sha256::new();
    for part in std::iter::once(VERSION).chain(std::iter::once(chain)).chain(words.iter().map(String::as_str)) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex = hex::encode(h.finalize());
    store.root().join("kiln").join("cache").join("stat").join("from").join(&hex[..2]).join(format!("{hex}.json"))
}

pub fn load(path: &std::path::Path) -> Option<Memo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes the memo by rename, so a reader sees all of it or none (a
/// `.tmp<pid>` left by a kill is what `kiln check` knows to remove).
pub fn save(path: &std::path::Path, memo: &Memo) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(memo).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, path)
}
