//! Layer directories: each layer's extracted tree, kept under the store at
//! `kiln/layers/<chain id>/diff` so later steps stack it as an overlay lower
//! with no unpacking.
//!
//! A directory is trusted only when it carries the marker
//! `kiln/layers/<chain id>/verified` naming its chain id. The marker is
//! written before the directory is renamed into place, and only after the
//! layer's uncompressed content was found to hash to its diff_id with its
//! compressed stream read to the end (or, for a RUN step's upper dir, after
//! the layer was made from it). A directory of that name without the marker
//! (half removed, left by an older kiln, or made by hand) is moved aside and
//! built again.

use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use kiln_overlay::apply::{apply_tar, ApplyOptions};
use kiln_overlay::rootfs::UPPER_DIR;
use kiln_overlay::verify::LayerReader;
use kiln_overlay::whiteout::{WhiteoutFormat, XattrPrefix};
use sha2::{Digest, Sha256};

use super::{remove, LayerError, Store};
use crate::image::manifest::Descriptor;

/// The file in a layer dir that says what was verified (its chain id).
pub const MARKER: &str = "verified";

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
    #[error(transparent)]
    Refused(#[from] LayerError),
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

    /// Where the layer with this chain id keeps its tree: where a root's
    /// upper is, so a RUN's scratch dir can be adopted as a layer dir.
    pub fn diff_dir(&self, chain_id: &str) -> PathBuf {
        self.layer_dir(chain_id).join(UPPER_DIR)
    }

    fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.root.join(hex_of(chain_id))
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
            .permissions(private())
            .tempdir_in(&self.root)
            .map_err(|source| LayerDirError::Io { path: self.root.clone(), source })
    }

    /// Makes sure every layer has its verified directory and returns them
    /// topmost first, as overlay's lowerdir lists them.
    pub fn ensure(
        &self,
        store: &Store,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<Vec<PathBuf>, LayerDirError> {
        if layers.len() != diff_ids.len() {
            return Err(LayerDirError::Mismatch { layers: layers.len(), diff_ids: diff_ids.len() });
        }
        let chains = chain_ids(diff_ids);
        let missing: Vec<usize> = (0..layers.len()).filter(|&i| !self.is_verified(&chains[i])).collect();
        self.unpack_all(
            store,
            &missing.iter().map(|&i| (&layers[i], diff_ids[i].as_str(), chains[i].as_str())).collect::<Vec<_>>(),
        )?;
        let mut dirs: Vec<PathBuf> = chains.iter().map(|c| self.diff_dir(c)).collect();
        if dirs.is_empty() {
            dirs.push(self.empty()?);
        }
        dirs.reverse();
        Ok(dirs)
    }

    /// Makes the layer dirs of `todo` (layer, diff_id, chain id), several at
    /// a time: each is its own directory with its own verification (a layer
    /// dir holds only its own layer's changes), so they need not wait for
    /// each other. At most one per core; the first failure in layer order
    /// is returned once all have stopped (the others' dirs stay valid).
    fn unpack_all(&self, store: &Store, todo: &[(&Descriptor, &str, &str)]) -> Result<(), LayerDirError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(todo.len());
        if workers <= 1 {
            return todo.iter().try_for_each(|(layer, diff_id, chain)| self.unpack(store, layer, diff_id, chain));
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<Result<(), LayerDirError>>>> =
            todo.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((layer, diff_id, chain)) = todo.get(i) else { break };
                    let result = self.unpack(store, layer, diff_id, chain);
                    *results[i].lock().expect("result lock") = Some(result);
                });
            }
        });
        for r in results {
            r.into_inner().expect("result lock").unwrap_or(Ok(()))?;
        }
        Ok(())
    }

    /// Whether the layer dir for `chain` is in place with its marker.
    pub fn is_verified(&self, chain: &str) -> bool {
        let dir = self.layer_dir(chain);
        let marked = fs::read_to_string(dir.join(MARKER)).is_ok_and(|text| text.lines().next() == Some(chain));
        marked && dir.join(UPPER_DIR).is_dir()
    }

    /// Applies the layer into a directory aside, checks the blob against its
    /// diff_id (reading the compressed stream to its end), and only then
    /// publishes it. On any failure the directory aside is removed.
    fn unpack(&self, store: &Store, layer: &Descriptor, diff_id: &str, chain: &str) -> Result<(), LayerDirError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayerDirError::Io { path, source }
        };
        fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let aside = tempfile::Builder::new()
            .prefix(".unpack-")
            .permissions(private())
            .tempdir_in(&self.root)
            .map_err(io(&self.root))?;
        let diff = aside.path().join(UPPER_DIR);
        fs::create_dir(&diff).map_err(io(&diff))?;
        let opts =
            ApplyOptions { whiteouts: WhiteoutFormat::Overlay, prefix: self.prefix.clone(), ..ApplyOptions::default() };
        apply_verified(store, layer, diff_id, &diff, &opts)?;
        self.adopt(aside.keep(), chain)
    }

    /// Marks `dir` (holding a `diff/` tree) as the layer `chain` and moves it
    /// into place. Another kiln may have made the same layer meanwhile:
    /// theirs wins. A directory in the way without the marker is moved aside
    /// and removed.
    pub fn adopt(&self, dir: PathBuf, chain: &str) -> Result<(), LayerDirError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LayerDirError::Io { path, source }
        };
        let marker = dir.join(MARKER);
        let mut file = fs::File::create(&marker).map_err(io(&marker))?;
        file.write_all(format!("{chain}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(io(&marker))?;
        drop(file);
        let dest = self.layer_dir(chain);
        // Twice at most: once as things are, once after moving a stale directory aside.
        for _ in 0..2 {
            crate::fault::point("layer-rename-before");
            let err = match fs::rename(&dir, &dest) {
                // Durable, so a crash cannot leave the marker's dir unnamed
                // or the rename half known.
                Ok(()) => {
                    crate::fault::point("layer-rename-after");
                    return fs::File::open(&self.root).and_then(|d| d.sync_all()).map_err(io(&self.root));
                }
                Err(e) => e,
            };
            if self.is_verified(chain) {
                remove_tree(&dir);
                return Ok(());
            }
            if fs::symlink_metadata(&dest).is_err() {
                return Err(LayerDirError::Io { path: dest, source: err });
            }
            self.discard(&dest);
        }
        fs::rename(&dir, &dest).map_err(io(&dest))
    }

    /// Moves an untrusted layer dir out of the way (so no one stacks it), then
    /// removes it; what cannot be removed stays aside for the next prune.
    fn discard(&self, path: &Path) {
        log::info!("layer dir {} has no verification marker; building it again", path.display());
        if let Err(e) = remove::remove_aside(path, &mut remove::Freed::default()) {
            log::warn!("cannot remove {e}");
        }
    }
}

/// Removes a tree whose directories may be read-only (layer dirs keep image
/// modes such as 0555); logs what it cannot remove.
fn remove_tree(path: &Path) {
    if let Err(e) = remove::remove_tree(path, &mut remove::Freed::default()) {
        log::warn!("cannot remove {e}");
    }
}

/// A layer dir's own mode: only the store's owner may enter it (the tree
/// below keeps the image's modes, setuid files included).
fn private() -> fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o700)
}

/// Applies `layers` in order to the empty directory `dest`, whiteouts as
/// deletions: an image's filesystem for `COPY --from` and
/// `RUN --mount=type=bind,from=` where its layer directories cannot be
/// mounted. Every layer is checked as a layer directory's is.
pub fn apply_in_order(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[String],
    dest: &Path,
) -> Result<(), LayerDirError> {
    if layers.len() != diff_ids.len() {
        return Err(LayerDirError::Mismatch { layers: layers.len(), diff_ids: diff_ids.len() });
    }
    let opts = ApplyOptions::rootfs();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        apply_verified(store, layer, diff_id, dest, &opts)?;
    }
    Ok(())
}

/// Applies one layer blob of the store to `dest` with the one safe applier
/// (every path resolved inside `dest`) and refuses it unless its content
/// hashes to `diff_id` and its compressed stream ends cleanly. The caller
/// discards `dest` on error.
fn apply_verified(
    store: &Store,
    layer: &Descriptor,
    diff_id: &str,
    dest: &Path,
    opts: &ApplyOptions,
) -> Result<(), LayerDirError> {
    let blob = store
        .open_blob(&layer.digest)
        .map_err(|source| LayerDirError::Blob { digest: layer.digest.clone(), source })?;
    let refused = |source| LayerError::Refused { image: None, layer: layer.digest.clone(), source };
    let mut reader = LayerReader::new(BufReader::with_capacity(256 * 1024, blob)).map_err(refused)?;
    let report = apply_tar(&mut reader, dest, opts)
        .map_err(|source| LayerDirError::Apply { digest: layer.digest.clone(), source })?;
    reader.finish_expecting(diff_id).map_err(refused)?;
    for skipped in &report.skipped {
        log::warn!("layer {}: skipped {}", crate::humanize::short(&layer.digest), skipped);
    }
    Ok(())
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
