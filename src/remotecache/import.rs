//! Importing caches (`--cache-from`): each one's manifest and config read
//! into one lookup, and a layer fetched into the store only when a build
//! needs its content.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{blob_path, CacheConfig, Location, RemoteCacheError, CONFIG_MEDIA_TYPE};
use crate::cache::fromkey::Memo;
use crate::cache::{Record, StepInputs, RECORD_VERSION};
use crate::image::manifest::{Descriptor, Index, Manifest, OCI_MANIFEST};
use crate::progress::{Event, Reporter};
use crate::registry::client::Client;
use crate::registry::{ErrorKind, Reference, RegistryError, RegistryOptions};
use crate::store::{sha256_digest, sha256_hex, LayerError, LayerRef, Store, StoreError};

/// Where the blobs of one imported cache are.
enum Backend {
    Registry(Box<Client>),
    Local(PathBuf),
}

struct Source {
    location: Location,
    backend: Backend,
    /// The cache's layers by blob digest.
    layers: HashMap<String, Descriptor>,
}

/// The caches `--cache-from` named, as one lookup.
#[derive(Default)]
pub struct Imported {
    sources: Vec<Source>,
    /// Key → (source index, record).
    records: HashMap<String, (usize, Record)>,
    copy_from: HashMap<(String, Vec<String>), Memo>,
    steps: BTreeMap<String, StepInputs>,
}

impl Imported {
    /// Reads each cache's manifest and config (no layer). A cache that does
    /// not exist yet (the first build of a pipeline) is a warning, as in
    /// BuildKit; one that exists and is not a kiln cache is an error.
    pub fn open(
        locations: &[Location],
        registry: &RegistryOptions,
        progress: &dyn Reporter,
    ) -> Result<Imported, RemoteCacheError> {
        let mut imported = Imported::default();
        for location in locations {
            progress.report(Event::Note(format!("importing cache manifest from {location}")));
            let (backend, manifest, config) = match read(location, registry) {
                Ok(Some(found)) => found,
                Ok(None) => {
                    log::warn!("cache {location} does not exist yet; building without it");
                    continue;
                }
                Err(e) => return Err(e),
            };
            imported.add(location.clone(), backend, manifest, &config)?;
        }
        Ok(imported)
    }

    fn add(
        &mut self,
        location: Location,
        backend: Backend,
        manifest: Manifest,
        bytes: &[u8],
    ) -> Result<(), RemoteCacheError> {
        let invalid = |detail: String| RemoteCacheError::Invalid { location: location.to_string(), detail };
        if manifest.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(invalid(format!("its config is a {}, not a {CONFIG_MEDIA_TYPE}", manifest.config.media_type)));
        }
        let config: CacheConfig = serde_json::from_slice(bytes).map_err(|e| invalid(format!("its config: {e}")))?;
        if config.kiln_version != RECORD_VERSION {
            log::warn!(
                "cache {location} was written by another kiln version (format {}); not using it",
                config.kiln_version
            );
            return Ok(());
        }
        let layers: HashMap<String, Descriptor> =
            manifest.layers.iter().map(|l| (l.digest.clone(), l.clone())).collect();
        let mut resolved = Vec::with_capacity(config.layers.len());
        for l in &config.layers {
            let desc =
                layers.get(&l.blob).ok_or_else(|| invalid(format!("layer {} is not in its manifest", l.blob)))?;
            let a = &l.annotations;
            if sha256_hex(&a.diff_id).is_none() || a.media_type != desc.media_type || a.size != desc.size {
                return Err(invalid(format!("layer {}: its annotations do not match its manifest entry", l.blob)));
            }
            let mut desc = desc.clone();
            desc.annotations = None;
            resolved.push((desc, a.diff_id.clone()));
        }
        // Checked whole before anything is kept: a bad cache adds nothing.
        let mut records = Vec::with_capacity(config.records.len());
        for r in config.records {
            let mut record = Record {
                version: RECORD_VERSION,
                parent: r.parent,
                layers: Vec::new(),
                diff_ids: Vec::new(),
                history: r.history,
            };
            for result in &r.layers {
                let (desc, diff_id) = resolved.get(result.layer).ok_or_else(|| {
                    invalid(format!("record {} names layer {} of {}", r.digest, result.layer, resolved.len()))
                })?;
                record.layers.push(desc.clone());
                record.diff_ids.push(diff_id.clone());
            }
            records.push((r.digest, record));
        }
        let index = self.sources.len();
        for (key, record) in records {
            // The first cache named wins, as the first --cache-from does in BuildKit.
            self.records.entry(key).or_insert((index, record));
        }
        for c in config.copy_from {
            self.copy_from.entry((c.chain, c.words)).or_insert(c.memo);
        }
        for (pos, inputs) in config.steps {
            self.steps.entry(pos).or_insert(inputs);
        }
        self.sources.push(Source { location, backend, layers });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The record of `key`, for a step starting from `parent`, and the kind
    /// of cache it came from (`registry`, `local`).
    pub fn get(&self, key: &str, parent: &str) -> Option<(Record, &'static str)> {
        let (source, record) = self.records.get(key)?;
        (record.parent == parent).then(|| (record.clone(), self.sources[*source].location.kind()))
    }

    /// What a `COPY --from` of `words` out of the stage whose top layer has
    /// chain id `chain` reads, as the exporting build computed it.
    pub fn copy_from(&self, chain: &str, words: &[String]) -> Option<Memo> {
        self.copy_from.get(&(chain.to_string(), words.to_vec())).cloned()
    }

    /// The exporting builds' inputs for step `pos`, to explain a miss.
    pub fn step_inputs(&self) -> &BTreeMap<String, StepInputs> {
        &self.steps
    }

    /// Whether some imported cache holds `digest`.
    pub fn has_layer(&self, digest: &str) -> bool {
        self.sources.iter().any(|s| s.layers.contains_key(digest))
    }

    /// Makes sure layer `layer` (with diff_id `diff_id`) is in the store:
    /// fetched from the cache that has it, verified as it streams. Layers
    /// the store has, or no imported cache has, are left to the caller.
    /// Returns where it was fetched from, if it was.
    pub fn fetch(&self, store: &Store, layer: &Descriptor, diff_id: &str) -> Result<Option<String>, RemoteCacheError> {
        let Some(source) = self.sources.iter().find(|s| s.layers.contains_key(&layer.digest)) else {
            return Ok(None);
        };
        let shown = source.location.to_string();
        let image = format!("cache {shown}");
        let check = LayerRef { image: &image, blob: Some(layer), name: &layer.digest, diff_id };
        let refused =
            |detail: String| RemoteCacheError::Layer { digest: layer.digest.clone(), location: shown.clone(), detail };
        if store.has_blob(&layer.digest) {
            // The store has the blob: the cache's diff_id for it must be the
            // one verified (or it is verified now), or the image would lie.
            store.check_layer(check).map_err(|e| refused(layer_detail(&e)))?;
            return Ok(None);
        }
        match &source.backend {
            Backend::Registry(client) => {
                let (tx, _rx) = std::sync::mpsc::channel();
                log::info!("fetching cache layer {} from {shown}", layer.digest);
                crate::registry::pull::fetch_blob(client, store, layer, Some(check), &tx)
                    .map_err(|e| refused(registry_detail(&e)))?;
                // A push of the image to this registry can mount it from here.
                crate::registry::sources::record(store, &layer.digest, &client.reference.name());
            }
            Backend::Local(dir) => {
                let path = blob_path(dir, &layer.digest).ok_or_else(|| refused("not a sha256 digest".into()))?;
                let mut file =
                    std::fs::File::open(&path).map_err(|e| refused(format!("open {}: {e}", path.display())))?;
                let received = store.receive_layer(&mut file, check).map_err(|e| refused(layer_detail(&e)))?;
                received.commit().map_err(|e| refused(crate::registry::chain_error(&e)))?;
            }
        }
        Ok(Some(shown))
    }
}

/// A registry failure without the "pull REF:" prefix the client puts first.
fn registry_detail(e: &RegistryError) -> String {
    crate::registry::chain_error(&e.kind)
}

fn layer_detail(e: &LayerError) -> String {
    match e {
        LayerError::Store(StoreError::DigestMismatch { expected, actual }) => {
            format!("its content does not match its digest (expected {expected}, got {actual})")
        }
        other => crate::registry::chain_error(other),
    }
}

/// The cache's manifest and config, or `None` when there is no such cache.
fn read(
    location: &Location,
    registry: &RegistryOptions,
) -> Result<Option<(Backend, Manifest, Vec<u8>)>, RemoteCacheError> {
    let shown = location.to_string();
    let invalid = |detail: String| RemoteCacheError::Invalid { location: shown.clone(), detail };
    match location {
        Location::Registry(reference) => {
            let reg = |source| RemoteCacheError::Registry { location: shown.clone(), source: Box::new(source) };
            let r = Reference::parse(reference)
                .map_err(|e| reg(RegistryError::new("import cache", reference, ErrorKind::Reference(e))))?;
            let client =
                Client::connect(&r, vec![format!("repository:{}:pull", r.repository)], registry, "import cache")
                    .map_err(reg)?;
            let (bytes, media_type, digest) =
                match crate::registry::pull::fetch_manifest(&client, r.manifest_reference(), r.digest.as_deref()) {
                    Ok(found) => found,
                    Err(e) if matches!(e.kind, ErrorKind::ManifestUnknown) => return Ok(None),
                    Err(e) => return Err(reg(e)),
                };
            if media_type != OCI_MANIFEST {
                return Err(invalid(format!("{digest} is a {media_type}, not an OCI image manifest")));
            }
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest {digest}: {e}")))?;
            if manifest.config.media_type != CONFIG_MEDIA_TYPE {
                return Err(invalid(format!(
                    "its config is a {}, not a {CONFIG_MEDIA_TYPE}",
                    manifest.config.media_type
                )));
            }
            let config = crate::registry::pull::fetch_document(&client, &manifest.config).map_err(reg)?;
            Ok(Some((Backend::Registry(Box::new(client)), manifest, config)))
        }
        Location::Local { dir, tag } => {
            let io = |action, path: &Path| {
                let (location, path) = (shown.clone(), path.to_path_buf());
                move |source| RemoteCacheError::Io { location, action, path, source }
            };
            let index_path = dir.join("index.json");
            let bytes = match std::fs::read(&index_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io("read", &index_path)(e)),
            };
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{}: {e}", index_path.display())))?;
            let Some(entry) = index.manifests.iter().find(|m| m.ref_name() == Some(tag.as_str())) else {
                return Ok(None);
            };
            let manifest_bytes = read_blob(dir, entry, &shown)?;
            let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| invalid(format!("manifest {}: {e}", entry.digest)))?;
            if manifest.config.media_type != CONFIG_MEDIA_TYPE {
                return Err(invalid(format!(
                    "its config is a {}, not a {CONFIG_MEDIA_TYPE}",
                    manifest.config.media_type
                )));
            }
            let config = read_blob(dir, &manifest.config, &shown)?;
            Ok(Some((Backend::Local(dir.clone()), manifest, config)))
        }
    }
}

/// A small blob of a layout directory, checked against its descriptor.
fn read_blob(dir: &Path, desc: &Descriptor, shown: &str) -> Result<Vec<u8>, RemoteCacheError> {
    let invalid = |detail: String| RemoteCacheError::Invalid { location: shown.to_string(), detail };
    if desc.size > crate::registry::client::max_document() {
        return Err(invalid(format!("blob {} is too large ({} bytes)", desc.digest, desc.size)));
    }
    let path =
        blob_path(dir, &desc.digest).ok_or_else(|| invalid(format!("{} is not a sha256 digest", desc.digest)))?;
    let bytes = std::fs::read(&path).map_err(|source| RemoteCacheError::Io {
        location: shown.to_string(),
        action: "read",
        path: path.clone(),
        source,
    })?;
    let actual = sha256_digest(&bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(invalid(format!(
            "blob {} does not match its digest (got {actual}, {} bytes)",
            desc.digest,
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::OCI_LAYER_GZIP;

    fn manifest(layer: &Descriptor) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: Descriptor::new(CONFIG_MEDIA_TYPE, "sha256:c".into(), 1),
            layers: vec![layer.clone()],
            annotations: None,
        }
    }

    fn config(layer: &Descriptor, index: usize, size: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "kilnVersion": RECORD_VERSION,
            "layers": [{"blob": layer.digest, "annotations": {"mediaType": layer.media_type, "diffID": format!("sha256:{}", "d".repeat(64)), "size": size}}],
            "records": [{"digest": "sha256:key", "parent": "sha256:parent", "layers": [{"layer": index}], "history": [{"created_by": "COPY a /a"}]}],
            "steps": {"0/1": {"key": "sha256:key", "parent": "p", "instruction": "COPY a /a", "args": {}, "files": {}}}
        }))
        .unwrap()
    }

    fn location() -> Location {
        Location::Local { dir: "/nonexistent".into(), tag: "latest".into() }
    }

    #[test]
    fn records_resolve_to_layers_by_digest_and_diff_id() {
        let layer = Descriptor::new(OCI_LAYER_GZIP, format!("sha256:{}", "a".repeat(64)), 42);
        let mut imported = Imported::default();
        imported
            .add(location(), Backend::Local("/nonexistent".into()), manifest(&layer), &config(&layer, 0, 42))
            .unwrap();
        let (record, kind) = imported.get("sha256:key", "sha256:parent").expect("a hit");
        assert_eq!(kind, "local");
        assert_eq!(record.layers, vec![layer.clone()]);
        assert_eq!(record.diff_ids, vec![format!("sha256:{}", "d".repeat(64))]);
        assert_eq!(record.history[0].created_by.as_deref(), Some("COPY a /a"));
        // Another parent is another step.
        assert!(imported.get("sha256:key", "sha256:other").is_none());
        assert!(imported.has_layer(&layer.digest));
        assert_eq!(imported.step_inputs()["0/1"].instruction, "COPY a /a");
    }

    #[test]
    fn a_stored_blob_must_pair_with_its_verified_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("a").unwrap();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &b"a\n"[..]).unwrap();
        let (digest, size) = store.put_blob(&tar.into_inner().unwrap()).unwrap();
        // A plain layer: its digest is its diff_id. The cache says otherwise.
        let layer = Descriptor::new(crate::image::manifest::OCI_LAYER_TAR, digest.clone(), size);
        let mut imported = Imported::default();
        imported.add(location(), Backend::Local("/x".into()), manifest(&layer), &config(&layer, 0, size)).unwrap();
        let lie = format!("sha256:{}", "d".repeat(64));
        let err = imported.fetch(&store, &layer, &lie).unwrap_err();
        assert!(
            err.to_string().contains(&format!("cache layer {digest} from /nonexistent:latest cannot be used")),
            "{err}"
        );
        assert_eq!(imported.fetch(&store, &layer, &digest).unwrap(), None, "the truth passes, nothing to fetch");
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let layer = Descriptor::new(OCI_LAYER_GZIP, format!("sha256:{}", "a".repeat(64)), 42);
        let mut imported = Imported::default();
        let err = imported
            .add(location(), Backend::Local("/x".into()), manifest(&layer), &config(&layer, 3, 42))
            .unwrap_err();
        assert!(err.to_string().contains("names layer 3 of 1"), "{err}");
        let err =
            imported.add(location(), Backend::Local("/x".into()), manifest(&layer), &config(&layer, 0, 7)).unwrap_err();
        assert!(err.to_string().contains("do not match its manifest entry"), "{err}");
        let mut other = manifest(&layer);
        other.config.media_type = "application/vnd.buildkit.cacheconfig.v0".into();
        let err = imported.add(location(), Backend::Local("/x".into()), other, &config(&layer, 0, 42)).unwrap_err();
        assert!(err.to_string().contains("not a application/vnd.kiln.cacheconfig.v1+json"), "{err}");
        assert!(imported.is_empty());
    }
}
