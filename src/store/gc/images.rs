//! The images the store holds, tagged or not: an untagged image manifest
//! is found among the blobs when its config and layers are all present.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::Read;

use super::super::{index, parse_manifest, sha256_hex, Store, StoreError};
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Manifest, OCI_MANIFEST};

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

impl Store {
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
                super::super::warn_skipped(tag, &StoreError::MissingBlob { digest: entry.digest.clone() });
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
                super::super::warn_skipped(tag.unwrap_or(&entry.digest), &e);
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
    pub(super) fn untagged_manifests(&self, known: &BTreeSet<String>) -> Result<Vec<(String, u64)>, StoreError> {
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
    pub(super) fn blob_files(&self) -> Result<Vec<(String, u64)>, StoreError> {
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
    pub(in crate::store) fn json_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
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
}

/// A manifest of an image (a config and layers), not of another artifact.
pub(in crate::store) fn looks_like_image_manifest(digest: &str, bytes: &[u8]) -> bool {
    let Ok(manifest) = parse_manifest(digest, bytes) else { return false };
    manifest.schema_version == 2
        && (manifest.config.media_type.contains("image.config")
            || manifest.config.media_type.contains("container.image"))
}
