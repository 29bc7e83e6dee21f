//! Names: index.json's tags, and resolving a tag, a digest or an image-id
//! prefix to an image (intermediate images of builds included).

use std::collections::BTreeMap;
use std::fs;

use super::{gc, index, lock, parse_manifest, sha256_hex, warn_skipped, Store, StoreError, StoreLock, MIN_ID_PREFIX};
use crate::image::manifest::{Descriptor, Index, DOCKER_MANIFEST, OCI_MANIFEST, REF_NAME};
use crate::image::reference;

/// Tags this process wrote, for the line an interrupted kiln prints.
static TAGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The tags this process wrote so far (any store), oldest first.
pub fn tagged_by_this_process() -> Vec<String> {
    TAGGED.lock().map(|t| t.clone()).unwrap_or_default()
}

impl Store {
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
            // Already so (a rebuild that changed nothing): no write, no fsync.
            let mut named = index.manifests.iter().filter(|d| d.ref_name() == Some(name.as_str()));
            if let (Some(only), None) = (named.next(), named.next()) {
                if only == &entry {
                    return false;
                }
            }
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
    pub(super) fn update_index(&self, change: impl FnOnce(&mut Index) -> bool) -> Result<bool, StoreError> {
        let _guard = self.index_lock()?;
        let path = self.index_path();
        let mut index = index::read_index(&path)?;
        let changed = change(&mut index);
        if changed {
            index::write_index(&path, &self.tmp_dir(), &index)?;
        }
        Ok(changed)
    }

    pub(super) fn index_lock(&self) -> Result<StoreLock, StoreError> {
        lock::acquire(&self.private_dir().join("index.lock"), "store index")
    }
}
