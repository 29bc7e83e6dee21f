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
pub mod layers;
mod lock;
pub mod remove;
pub mod step_record;
mod verified;

use std::collections::BTreeMap;
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
pub use lock::{BuildsLock, StoreLock};
pub use verified::{LayerError, LayerRef, VerifiedLayer};

use crate::image::config::ImageConfig;
use crate::image::manifest::{
    Descriptor, Index, Manifest, Platform, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST, REF_NAME,
};
use crate::image::reference::{self, ReferenceError};

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

/// Tags this process wrote, for the line an interrupted kiln prints.
static TAGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The tags this process wrote so far (any store), oldest first.
pub fn tagged_by_this_process() -> Vec<String> {
    TAGGED.lock().map(|t| t.clone()).unwrap_or_default()
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

/// An image read back from the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's descriptor (no annotations), ready to tag.
    pub descriptor: Descriptor,
    pub manifest_digest: String,
    pub manifest: Manifest,
    /// The image id.
    pub config_digest: String,
    pub config: ImageConfig,
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

    /// Writes the config and an OCI manifest for `layers` (which must already
    /// be in the store) and returns the manifest's descriptor. Does not tag.
    pub fn write_image(&self, config: &ImageConfig, layers: &[Descriptor]) -> Result<Descriptor, StoreError> {
        self.write_image_annotated(config, layers, &BTreeMap::new())
    }

    /// Like [`Store::write_image`], with `annotations` on the manifest and on
    /// the returned descriptor (so a tag's index entry carries them too).
    pub fn write_image_annotated(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor, StoreError> {
        self.write_image_as(config, layers, annotations, false)
    }

    /// Like [`Store::write_image_annotated`]; with `docker`, as a Docker v2s2
    /// image (`kiln build --format docker`, buildah's and podman's): the
    /// manifest, config and layer media types are Docker's and the manifest
    /// has no annotations (v2s2 has none). The config is the same either
    /// way, docker-only fields (HEALTHCHECK, SHELL, ONBUILD …) included, so
    /// the image id does not depend on the format.
    pub fn write_image_as(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
        annotations: &BTreeMap<String, String>,
        docker: bool,
    ) -> Result<Descriptor, StoreError> {
        let mut layers = layers.to_vec();
        if docker {
            for layer in &mut layers {
                let Some(media_type) = crate::image::manifest::docker_layer_type(&layer.media_type) else {
                    return Err(StoreError::NotDockerLayer {
                        digest: layer.digest.clone(),
                        media_type: layer.media_type.clone(),
                    });
                };
                layer.media_type = media_type.to_string();
                layer.annotations = None;
            }
        }
        if layers.len() != config.rootfs.diff_ids.len() {
            return Err(StoreError::LayerCountMismatch {
                layers: layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        if let Some(missing) = layers.iter().find(|l| !self.has_blob(&l.digest)) {
            return Err(StoreError::MissingBlob { digest: missing.digest.clone() });
        }
        let config_bytes = serde_json::to_vec(config).map_err(|source| StoreError::Json {
            action: "serialize image config for",
            path: self.root.clone(),
            source,
        })?;
        let (config_digest, config_size) = self.put_blob(&config_bytes)?;
        let (manifest_type, config_type) = match docker {
            true => (DOCKER_MANIFEST, crate::image::manifest::DOCKER_CONFIG),
            false => (OCI_MANIFEST, OCI_CONFIG),
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(manifest_type.to_string()),
            config: Descriptor::new(config_type, config_digest, config_size),
            layers,
            annotations: (!annotations.is_empty() && !docker).then(|| annotations.clone()),
        };
        let mut descriptor = self.put_manifest(&manifest, platform_of(config))?;
        descriptor.annotations = manifest.annotations;
        Ok(descriptor)
    }

    /// Stores a manifest blob and returns its descriptor.
    pub fn put_manifest(&self, manifest: &Manifest, platform: Option<Platform>) -> Result<Descriptor, StoreError> {
        let bytes = serde_json::to_vec(manifest).map_err(|source| StoreError::Json {
            action: "serialize manifest for",
            path: self.root.clone(),
            source,
        })?;
        let (digest, size) = self.put_blob(&bytes)?;
        let media_type = manifest.media_type.as_deref().unwrap_or(OCI_MANIFEST);
        let mut descriptor = Descriptor::new(media_type, digest, size);
        descriptor.platform = platform;
        Ok(descriptor)
    }

    /// Points tag `name` (normalised, e.g. `app` → `app:latest`) at `manifest`,
    /// replacing what the tag pointed at before.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<(), StoreError> {
        let name = reference::normalize_local(name)?;
        if !self.has_blob(&manifest.digest) {
            return Err(StoreError::MissingBlob { digest: manifest.digest.clone() });
        }
        crate::fault::point("tag-before");
        let mut entry = manifest.clone();
        entry.annotations.get_or_insert_with(BTreeMap::new).insert(REF_NAME.to_string(), name.clone());
        self.update_index(|index| {
            index.manifests.retain(|d| d.ref_name() != Some(name.as_str()));
            index.manifests.push(entry);
            true
        })?;
        if let Ok(mut tagged) = TAGGED.lock() {
            tagged.push(name);
        }
        Ok(())
    }

    /// Removes tag `name`; returns whether it existed.
    pub fn untag(&self, name: &str) -> Result<bool, StoreError> {
        let name = reference::normalize_local(name)?;
        self.update_index(|index| {
            let before = index.manifests.len();
            index.manifests.retain(|d| d.ref_name() != Some(name.as_str()));
            index.manifests.len() != before
        })
    }

    /// Finds an image by tag, by digest (`sha256:…` of its manifest or its
    /// config), or by a unique prefix (at least 4 hex digits) of its id.
    pub fn resolve(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let manifests = self.list()?;
        if sha256_hex(name).is_some() {
            return self.resolve_digest(&manifests, name);
        }
        let as_tag = reference::normalize_local(name);
        if let Ok(tag) = &as_tag {
            if let Some(found) = manifests.iter().find(|d| d.ref_name() == Some(tag.as_str())) {
                return Ok(Some(found.clone()));
            }
            if let Some(digest) = reference::parse(tag).ok().and_then(|r| r.digest) {
                return self.resolve_digest(&manifests, digest);
            }
        }
        let prefix = name.strip_prefix("sha256:").unwrap_or(name);
        let is_id_prefix = prefix.len() >= MIN_ID_PREFIX
            && prefix.len() <= 64
            && prefix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_id_prefix {
            return match self.resolve_id_prefix(&manifests, prefix)? {
                Some(found) => Ok(Some(found)),
                None => self.resolve_intermediate(prefix),
            };
        }
        match as_tag {
            Ok(_) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The index's entries, one per tag (plus untagged ones, if any).
    pub fn list(&self) -> Result<Vec<Descriptor>, StoreError> {
        Ok(index::read_index(&self.index_path())?.manifests)
    }

    /// Reads an image's manifest and config.
    pub fn load_image(&self, manifest: &Descriptor) -> Result<Image, StoreError> {
        let bytes = self.read_blob(&manifest.digest)?;
        let parsed = parse_manifest(&manifest.digest, &bytes)?;
        let config_bytes = self.read_blob(&parsed.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
            action: "parse image config",
            path: self.blob_path(&parsed.config.digest),
            source,
        })?;
        let mut descriptor = Descriptor::new(
            parsed.media_type.as_deref().unwrap_or(&manifest.media_type),
            manifest.digest.clone(),
            bytes.len() as u64,
        );
        descriptor.platform = manifest.platform.clone().or_else(|| platform_of(&config));
        Ok(Image {
            descriptor,
            manifest_digest: manifest.digest.clone(),
            config_digest: parsed.config.digest.clone(),
            manifest: parsed,
            config,
        })
    }

    fn resolve_digest(&self, manifests: &[Descriptor], digest: &str) -> Result<Option<Descriptor>, StoreError> {
        if let Some(found) = manifests.iter().find(|d| d.digest == digest) {
            return Ok(Some(found.clone()));
        }
        for d in manifests {
            if self.config_digest_of(d).as_deref() == Some(digest) {
                return Ok(Some(d.clone()));
            }
        }
        if let Some(found) = self.resolve_intermediate(digest.strip_prefix("sha256:").unwrap_or(digest))? {
            return Ok(Some(found));
        }
        // An untagged manifest that is still in the store.
        if self.has_blob(digest) {
            let bytes = self.read_blob(digest)?;
            if let Ok(manifest) = parse_manifest(digest, &bytes) {
                let media_type = manifest.media_type.as_deref().unwrap_or(OCI_MANIFEST);
                return Ok(Some(Descriptor::new(media_type, digest.to_string(), bytes.len() as u64)));
            }
        }
        Ok(None)
    }

    /// The intermediate images builds wrote (each step's printed id, or the
    /// last good state of a failed build: records in
    /// `kiln/cache/intermediate/`) whose manifest and config are here: each
    /// as its manifest's descriptor and its config digest (the image id).
    pub fn intermediate_images(&self) -> Vec<(Descriptor, String)> {
        #[derive(serde::Deserialize)]
        struct Record {
            manifest: String,
            config: String,
        }
        let dir = self.private_dir().join(gc::CACHE_DIR).join(gc::INTERMEDIATE_DIR);
        let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(bytes) = fs::read(entry.path()) else { continue };
            let Ok(record) = serde_json::from_slice::<Record>(&bytes) else { continue };
            let Ok(manifest) = fs::metadata(self.blob_path(&record.manifest)) else { continue };
            if self.has_blob(&record.config) {
                out.push((Descriptor::new(OCI_MANIFEST, record.manifest, manifest.len()), record.config));
            }
        }
        out
    }

    /// An intermediate image (see [`Store::intermediate_images`]) by id prefix.
    fn resolve_intermediate(&self, prefix: &str) -> Result<Option<Descriptor>, StoreError> {
        let mut found: Option<Descriptor> = None;
        let mut ids: Vec<String> = Vec::new();
        for (manifest, config) in self.intermediate_images() {
            let hex = config.strip_prefix("sha256:").unwrap_or(&config);
            if hex.starts_with(prefix) && !ids.contains(&config) {
                ids.push(config);
                found.get_or_insert(manifest);
            }
        }
        if ids.len() > 1 {
            return Err(StoreError::AmbiguousId { prefix: prefix.to_string(), matches: ids });
        }
        Ok(found)
    }

    fn resolve_id_prefix(&self, manifests: &[Descriptor], prefix: &str) -> Result<Option<Descriptor>, StoreError> {
        let mut found: Option<&Descriptor> = None;
        let mut ids: Vec<String> = Vec::new();
        for d in manifests {
            let Some(id) = self.config_digest_of(d) else { continue };
            let hex = id.strip_prefix("sha256:").unwrap_or(&id);
            if hex.starts_with(prefix) && !ids.contains(&id) {
                ids.push(id);
                found.get_or_insert(d);
            }
        }
        if ids.len() > 1 {
            return Err(StoreError::AmbiguousId { prefix: prefix.to_string(), matches: ids });
        }
        Ok(found.cloned())
    }

    /// The config digest of an index entry; `None` for entries that are not
    /// image manifests (e.g. nested indexes).
    /// An entry whose manifest is missing or broken has none (with a warning):
    /// one broken image must not stop finding the others.
    fn config_digest_of(&self, d: &Descriptor) -> Option<String> {
        if d.media_type != OCI_MANIFEST && d.media_type != DOCKER_MANIFEST {
            return None;
        }
        let found = self.read_blob(&d.digest).and_then(|bytes| parse_manifest(&d.digest, &bytes));
        match found {
            Ok(manifest) => Some(manifest.config.digest),
            Err(e) => {
                warn_skipped(d.ref_name().unwrap_or(&d.digest), &e);
                None
            }
        }
    }

    /// Read-modify-write of index.json under the index lock; `change` returns
    /// whether it changed anything (nothing is written otherwise).
    fn update_index(&self, change: impl FnOnce(&mut Index) -> bool) -> Result<bool, StoreError> {
        let _guard = self.index_lock()?;
        let path = self.index_path();
        let mut index = index::read_index(&path)?;
        let changed = change(&mut index);
        if changed {
            index::write_index(&path, &self.tmp_dir(), &index)?;
        }
        Ok(changed)
    }

    fn index_lock(&self) -> Result<StoreLock, StoreError> {
        lock::acquire(&self.private_dir().join("index.lock"), "store index")
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

/// Makes sure `dir` is a directory only its owner may enter: creates it with
/// mode 0700, or takes the group's and others' bits off an existing one
/// (saying so, since an older kiln left it open).
fn make_private(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(StoreError::Io { action: "create directory", path: dir.to_path_buf(), source }),
    }
    let meta = fs::metadata(dir).map_err(|source| StoreError::Io {
        action: "read the permissions of",
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(StoreError::NotADirectory { path: dir.to_path_buf() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let private = mode & !0o077;
    fs::set_permissions(dir, fs::Permissions::from_mode(private)).map_err(|source| StoreError::NotPrivate {
        path: dir.to_path_buf(),
        mode,
        source,
    })?;
    log::warn!(
        "{} was open to other users (mode {mode:04o}); made it {private:04o}: kiln keeps its store private",
        dir.display()
    );
    Ok(())
}

/// Takes the group's and others' bits off every layer dir (`<chain id>/`,
/// whose `diff/` below keeps the image's own modes) that an older kiln left
/// open. Other entries are left alone: `empty/` stands as an image's root.
fn make_layer_dirs_private(layers: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let entries = fs::read_dir(layers).map_err(|source| StoreError::Io {
        action: "read directory",
        path: layers.to_path_buf(),
        source,
    })?;
    let mut tightened = 0;
    for entry in entries.flatten() {
        let is_layer =
            entry.file_name().to_str().is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        let Ok(meta) = entry.metadata() else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        if !is_layer || !meta.is_dir() || mode & 0o077 == 0 {
            continue;
        }
        let path = entry.path();
        match fs::set_permissions(&path, fs::Permissions::from_mode(mode & !0o077)) {
            Ok(()) => tightened += 1,
            // Removed meanwhile by a prune.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::NotPrivate { path, mode, source }),
        }
    }
    if tightened > 0 {
        log::warn!(
            "{tightened} layer directories in {} were open to other users; made them 0700: kiln keeps its store private",
            layers.display()
        );
    }
    Ok(())
}

/// Parses a manifest blob, refusing indexes and other JSON.
pub fn parse_manifest(digest: &str, bytes: &[u8]) -> Result<Manifest, StoreError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let path = PathBuf::from(digest);
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
        action: "parse manifest",
        path: path.clone(),
        source,
    })?;
    let media_type = probe.media_type.unwrap_or_default();
    let is_manifest = media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST || media_type.is_empty();
    if !is_manifest || probe.manifests.is_some() {
        let media_type = if media_type.is_empty() { "index".to_string() } else { media_type };
        return Err(StoreError::NotAManifest { digest: digest.to_string(), media_type });
    }
    serde_json::from_slice(bytes).map_err(|source| StoreError::Json { action: "parse manifest", path, source })
}

/// The platform an image config describes.
pub fn platform_of(config: &ImageConfig) -> Option<Platform> {
    if config.architecture.is_empty() && config.os.is_empty() {
        return None;
    }
    Some(Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        os_version: config.os_version.clone(),
        variant: config.variant.clone(),
    })
}
