//! The local image store. Its directory is a valid OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) that skopeo, umoci and
//! oci-image-tool read as is; tags are index entries carrying the
//! `org.opencontainers.image.ref.name` annotation. kiln's private files live
//! under `<root>/kiln/` (locks, temp files).

mod blobs;
mod check;
mod compressed;
mod gc;
mod index;
mod layer_blob;
pub mod layers;
mod lock;
mod manifests;
mod permissions;
pub mod remove;
pub mod step_record;
mod tags;
mod verified;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use blobs::{sha256_digest, sha256_hex, BlobWriter};
pub use check::{CheckReport, Defect, Fix, Problem, Repair};
pub use compressed::{CompressedRecord, Outgoing, COMPRESSED_DIR};
pub use gc::{
    chain_ids, layer_dir_chain_id, CachePrune, Collect, Reclaimed, StoredImage, Usage, CACHE_DIR, CACHE_MOUNTS_DIR,
    GRACE, LAYERS_DIR,
};
pub use layer_blob::LayerBlobWriter;
pub use lock::{BuildsLock, StoreLock};
pub use manifests::{parse_manifest, platform_of, Image};
pub use tags::tagged_by_this_process;
pub use verified::{LayerError, LayerRef, VerifiedLayer};

use crate::image::manifest::Index;
use crate::image::reference::ReferenceError;
use permissions::{make_layer_dirs_private, make_private};

/// Shortest image-id prefix `resolve` accepts.
const MIN_ID_PREFIX: usize = 4;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{action} {}", path.display())]
    Json {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported OCI layout version {version} in {}", path.display())]
    LayoutVersion { path: PathBuf, version: String },
    #[error("invalid digest '{digest}' (kiln stores sha256:<64 hex digits>)")]
    InvalidDigest { digest: String },
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("blob {digest} is not in the store")]
    MissingBlob { digest: String },
    #[error("{digest} is a {media_type}, not an image manifest")]
    NotAManifest { digest: String, media_type: String },
    #[error("layer {digest} is {media_type}, which a Docker v2s2 manifest cannot list: use --format oci (or a base image with gzip layers)")]
    NotDockerLayer { digest: String, media_type: String },
    #[error("image has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCountMismatch { layers: usize, diff_ids: usize },
    #[error("'{prefix}' matches more than one image: {}", .matches.join(", "))]
    AmbiguousId { prefix: String, matches: Vec<String> },
    #[error("invalid image name")]
    Reference(#[from] ReferenceError),
    #[error(
        "{} is open to other users (mode {mode:04o}) and kiln cannot make it private; \
         run `chmod 700 {}` as its owner, or choose another store with --root",
        path.display(),
        path.display()
    )]
    NotPrivate {
        path: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory, so it cannot hold the image store", path.display())]
    NotADirectory { path: PathBuf },
}

/// Where the store lives: `$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`, else
/// `~/.local/share/kiln`.
pub fn default_root() -> PathBuf {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(root) = non_empty("KILN_ROOT") {
        return root;
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return data.join("kiln");
    }
    let home = non_empty("HOME").unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/kiln")
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating the layout if it is missing.
    ///
    /// The store is its owner's alone, as podman keeps its storage: the root,
    /// kiln's private dir and the layer tree are created 0700 and tightened
    /// to 0700 when found open to others. Layer dirs hold images' files as
    /// they are, setuid programs included, which another local user must not
    /// run (or even read: they may hold secrets of the images' owner).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store { root: root.to_path_buf() };
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                action: "create directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        for dir in [root.to_path_buf(), store.private_dir(), store.private_dir().join(LAYERS_DIR)] {
            make_private(&dir)?;
        }
        make_layer_dirs_private(&store.private_dir().join(LAYERS_DIR))?;
        for dir in [store.blob_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                action: "create directory",
                path: dir,
                source,
            })?;
        }
        let layout = root.join(index::OCI_LAYOUT_FILE);
        if layout.exists() {
            index::check_layout(&layout)?;
        } else {
            index::write_atomic(&layout, &store.tmp_dir(), &index::layout_bytes())?;
        }
        let index_path = store.index_path();
        if index_path.exists() {
            index::read_index(&index_path)?;
        } else {
            // Under the index lock so a concurrent first tag is not overwritten.
            let _guard = store.index_lock()?;
            if !index_path.exists() {
                index::write_index(&index_path, &store.tmp_dir(), &Index::default())?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store-wide lock (`<root>/kiln/lock`), held until the guard drops.
    /// Waits, with a log note, while another kiln holds it.
    ///
    /// `tag` and `untag` serialise on a separate index lock, so they may be
    /// called while this one is held.
    /// Held (shared) for the whole of a build; see [`lock::BuildsLock`].
    /// `when_alone` runs when no other build is running.
    pub fn builds_lock(&self, when_alone: impl FnOnce()) -> Result<BuildsLock, StoreError> {
        lock::BuildsLock::shared(&self.private_dir().join("builds.lock"), when_alone)
    }

    pub(crate) fn builds_lock_exclusive(&self) -> Result<BuildsLock, StoreError> {
        lock::BuildsLock::exclusive(&self.private_dir().join("builds.lock"))
    }

    /// The builds lock, exclusively, if no other kiln holds it right now.
    pub fn try_builds_lock_exclusive(&self) -> Result<Option<BuildsLock>, StoreError> {
        lock::BuildsLock::try_exclusive(&self.private_dir().join("builds.lock"))
    }

    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        lock::acquire(&self.private_dir().join("lock"), "store")
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        // An invalid digest maps to a name no blob is ever stored under.
        self.blob_dir().join(sha256_hex(digest).unwrap_or("invalid-digest"))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        sha256_hex(digest).is_some() && self.blob_path(digest).is_file()
    }

    /// A writer for a new blob; see [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        BlobWriter::new(&self.tmp_dir(), self.blob_dir())
    }

    /// A writer for a new layer's blob; see [`LayerBlobWriter::commit`].
    pub fn layer_blob_writer(&self) -> Result<LayerBlobWriter, StoreError> {
        LayerBlobWriter::new(&self.tmp_dir(), self.blob_dir())
    }

    pub fn put_blob(&self, bytes: &[u8]) -> Result<(String, u64), StoreError> {
        let digest = sha256_digest(bytes);
        if self.has_blob(&digest) {
            return Ok((digest, bytes.len() as u64));
        }
        let mut writer = self.blob_writer()?;
        io::Write::write_all(&mut writer, bytes).map_err(|source| StoreError::Io {
            action: "write blob",
            path: self.tmp_dir(),
            source,
        })?;
        writer.commit()
    }

    /// Reads a whole blob and checks it against its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.existing_blob_path(digest)?;
        let bytes = fs::read(&path).map_err(|source| StoreError::Io { action: "read blob", path, source })?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(StoreError::DigestMismatch { expected: digest.to_string(), actual });
        }
        Ok(bytes)
    }

    pub fn open_blob(&self, digest: &str) -> Result<File, StoreError> {
        let path = self.existing_blob_path(digest)?;
        File::open(&path).map_err(|source| StoreError::Io { action: "open blob", path, source })
    }

    fn existing_blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        if sha256_hex(digest).is_none() {
            return Err(StoreError::InvalidDigest { digest: digest.to_string() });
        }
        let path = self.blob_path(digest);
        if !path.is_file() {
            return Err(StoreError::MissingBlob { digest: digest.to_string() });
        }
        Ok(path)
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join(index::INDEX_FILE)
    }

    fn private_dir(&self) -> PathBuf {
        self.root.join("kiln")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.private_dir().join("tmp")
    }
}

/// Warns, once per process and image, that a broken image is left out.
pub(crate) fn warn_skipped(name: &str, error: &StoreError) {
    static WARNED: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let first = WARNED.lock().map(|mut w| w.insert(name.to_string())).unwrap_or(true);
    if first {
        let cause = std::error::Error::source(error).map(|s| format!(": {s}")).unwrap_or_default();
        log::warn!("skipping image {name}: {error}{cause}; `kiln system check` lists what is broken");
    }
}
