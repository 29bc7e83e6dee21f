//! What a check found and what a repair did, as a user reads them.

use std::fmt;
use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

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
