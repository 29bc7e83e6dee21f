//! Layer directories: each layer's extracted tree, kept under the store at
//! `kiln/layers/<chain id>/diff` so later steps stack it as an overlay lower
//! with no unpacking. A directory appears atomically (built aside, renamed).

use std::fs;
use std::path::{Path, PathBuf};

use kiln_overlay::apply::{apply_layer, ApplyOptions};
use kiln_overlay::whiteout::{WhiteoutFormat, XattrPrefix};
use sha2::{Digest, Sha256};

use crate::image::manifest::Descriptor;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum LayerDirError {
    #[error("prepare layer directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open layer blob {digest}")]
    Blob {
        digest: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("unpack layer {digest}")]
    Apply {
        digest: String,
        #[source]
        source: kiln_overlay::apply::ApplyError,
    },
    #[error("the image has {layers} layers but {diff_ids} diff_ids")]
    Mismatch { layers: usize, diff_ids: usize },
}

pub struct LayerDirs {
    root: PathBuf,
    prefix: XattrPrefix,
}

impl LayerDirs {
    pub fn new(store: &Store) -> LayerDirs {
        LayerDirs { root: store.root().join("kiln").join("layers"), prefix: XattrPrefix::for_current_namespace() }
    }

    pub fn prefix(&self) -> &XattrPrefix {
        &self.prefix
    }

    /// Where the layer with this chain id keeps its tree.
    pub fn diff_dir(&self, chain_id: &str) -> PathBuf {
        self.root.join(hex_of(chain_id)).join("diff")
    }

    /// An empty directory to stand as the lower of a step on `scratch`.
    pub fn empty(&self) -> Result<PathBuf, LayerDirError> {
        let dir = self.root.join("empty");
        fs::create_dir_all(&dir).map_err(|source| LayerDirError::Io { path: dir.clone(), source })?;
        Ok(dir)
    }

    /// A fresh private directory under the layers root for one step's
    /// upper/work/merged dirs (same filesystem, so the upper can be renamed).
    pub fn step_dir(&self) -> Result<tempfile::TempDir, LayerDirError> {
        fs::create_dir_all(&self.root).map_err(|source| LayerDirError::Io { path: self.root.clone(), source })?;
        tempfile::Builder::new()
            .prefix(".step-")
            .tempdir_in(&self.root)
            .map_err(|source| LayerDirError::Io { path: self.root.clone(), source })
    }

    /// Makes sure every layer has its directory and returns them topmost
    /// first, as overlay's lowerdir lists them.
    pub fn ensure(&self, store: &Store, layers: &[Descriptor], diff_ids: &[String]) -> Result<Vec<PathBuf>, LayerDirError> {
        if layers.len() != diff_ids.len() {
            return Err(LayerDirError::Mismatch { layers: layers.len(), diff_ids: diff_ids.len() });
        }
        let mut dirs = Vec::with_capacity(layers.len());
        for (layer, chain) in layers.iter().zip(chain_ids(diff_ids)) {
            let dir = self.diff_dir(&chain);
            if !dir.exists() {
                self.unpack(store, layer, &chain)?;
            }
            dirs.push(dir);
        }
        if dirs.is_empty() {
            dirs.push(self.empty()?);
        }
        dirs.reverse();
        Ok(dirs)
    }

    fn unpack(&self, store: &Store, layer: &Descriptor, chain: &str) -> Result<(), LayerDirError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayerDirError::Io { path, source }
        };
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let aside = tempfile::Builder::new().prefix(".unpack-").tempdir_in(&self.root).map_err(io(&self.root))?;
        let diff = aside.path().join("diff");
        fs::create_dir(&diff).map_err(io(&diff))?;
        let blob = store.open_blob(&layer.digest).map_err(|source| LayerDirError::Blob { digest: layer.digest.clone(), source })?;
        let opts = ApplyOptions { whiteouts: WhiteoutFormat::Overlay, prefix: self.prefix.clone(), record_unmapped_owners: true, ..ApplyOptions::default() };
        let report = apply_layer(blob, &diff, &opts).map_err(|source| LayerDirError::Apply { digest: layer.digest.clone(), source })?;
        for skipped in &report.skipped {
            log::warn!("layer {}: skipped {}", crate::exec::short(&layer.digest), skipped);
        }
        self.adopt(aside.keep(), chain)
    }

    /// Moves `dir` (holding a `diff/` tree) into place as the layer `chain`.
    /// Another kiln may have made the same layer meanwhile: theirs wins.
    pub fn adopt(&self, dir: PathBuf, chain: &str) -> Result<(), LayerDirError> {
        let dest = self.root.join(hex_of(chain));
        if fs::rename(&dir, &dest).is_err() {
            if dest.join("diff").exists() {
                let _ = fs::remove_dir_all(&dir);
                return Ok(());
            }
            fs::rename(&dir, &dest).map_err(|source| LayerDirError::Io { path: dest.clone(), source })?;
        }
        Ok(())
    }
}

/// OCI chain ids: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{} {}", prev, d).as_bytes()))),
        };
        out.push(next);
    }
    out
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = "sha256:aa".to_string();
        let b = "sha256:bb".to_string();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let expect = format!("sha256:{}", hex::encode(Sha256::digest(b"sha256:aa sha256:bb")));
        assert_eq!(ids[1], expect);
    }
}
