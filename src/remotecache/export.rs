//! Exporting a cache (`--cache-to`) to a registry or an OCI layout
//! directory.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::import::Imported;
use super::{
    blob_path, CacheConfig, CacheLayer, CacheRecord, CacheResult, CacheTo, CopyFromDigest, LayerAnnotations, Location,
    RemoteCacheError, CONFIG_MEDIA_TYPE, UNCOMPRESSED,
};
use crate::cache::{Record, StepInputs, RECORD_VERSION};
use crate::image::manifest::{Descriptor, Index, Manifest, OCI_INDEX, OCI_MANIFEST, REF_NAME};
use crate::progress::{Event, Reporter};
use crate::registry::{ErrorKind, RegistryError, RegistryOptions};
use crate::store::{sha256_digest, Store};

/// What one `--cache-to` exports.
pub struct Export<'a> {
    /// Step records (key, record) in build order; repeated keys are exported once.
    pub records: &'a [(String, Record)],
    pub copy_from: &'a [CopyFromDigest],
    pub steps: &'a BTreeMap<String, StepInputs>,
}

/// Writes the cache for `export` to `to`. Plain layers are compressed
/// (once per store, as a push does) unless `compression=uncompressed`;
/// layers known only by digest (hits nothing read) are fetched from the
/// imported caches only when the destination lacks them.
pub fn export(
    store: &Store,
    to: &CacheTo,
    export: &Export<'_>,
    imported: &Imported,
    registry: &RegistryOptions,
    progress: &dyn Reporter,
) -> Result<String, RemoteCacheError> {
    let shown = to.location.to_string();
    let store_err = |source| RemoteCacheError::Store { location: shown.clone(), source: Box::new(source) };
    let mut config = CacheConfig { kiln_version: RECORD_VERSION, ..Default::default() };
    let mut blobs: Vec<(Descriptor, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (key, record) in export.records {
        if !seen.insert(key.clone()) {
            continue;
        }
        let mut results = Vec::new();
        for (layer, diff_id) in record.layers.iter().zip(&record.diff_ids) {
            let desc = if store.has_blob(&layer.digest) {
                store.compressed_layer(layer, diff_id, to.compression).map_err(store_err)?
            } else {
                layer.clone()
            };
            let at = match blobs.iter().position(|(d, _)| d.digest == desc.digest) {
                Some(i) => i,
                None => {
                    blobs.push((desc, diff_id.clone()));
                    blobs.len() - 1
                }
            };
            results.push(CacheResult { layer: at });
        }
        config.records.push(CacheRecord {
            digest: key.clone(),
            parent: record.parent.clone(),
            layers: results,
            history: record.history.clone(),
        });
    }
    config.layers = blobs
        .iter()
        .map(|(d, diff_id)| CacheLayer {
            blob: d.digest.clone(),
            annotations: LayerAnnotations { media_type: d.media_type.clone(), diff_id: diff_id.clone(), size: d.size },
        })
        .collect();
    config.copy_from = export.copy_from.to_vec();
    config.steps = export.steps.clone();
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|e| RemoteCacheError::Invalid { location: shown.clone(), detail: e.to_string() })?;
    let layers: Vec<Descriptor> = blobs
        .iter()
        .map(|(d, diff_id)| {
            let mut d = d.clone();
            d.annotations = Some([(UNCOMPRESSED.to_string(), diff_id.clone())].into());
            d
        })
        .collect();
    let diff_of: HashMap<String, String> = blobs.iter().map(|(d, id)| (d.digest.clone(), id.clone())).collect();
    progress.report(Event::Note(format!(
        "exporting cache to {shown} ({} steps, {} layers)",
        config.records.len(),
        layers.len()
    )));
    match &to.location {
        Location::Registry(reference) => {
            let ensure = |d: &Descriptor| -> Result<(), RegistryError> {
                let mut plain = d.clone();
                plain.annotations = None;
                imported.fetch(store, &plain, &diff_of[&d.digest]).map(|_| ()).map_err(|e| {
                    RegistryError::new(
                        "export cache",
                        reference,
                        ErrorKind::Invalid { what: format!("layer {}", d.digest), detail: e.to_string() },
                    )
                })
            };
            crate::registry::push::push_artifact(
                store,
                reference,
                registry,
                (&config_bytes, CONFIG_MEDIA_TYPE),
                &layers,
                &ensure,
                progress,
            )
            .map_err(|source| RemoteCacheError::Registry { location: shown.clone(), source: Box::new(source) })
        }
        Location::Local { dir, tag } => {
            write_local(store, dir, tag, &config_bytes, &layers, &diff_of, imported, &shown)
        }
    }
}

/// Writes the cache into an OCI layout directory: blobs first (each by
/// rename), then `index.json` (by rename), so a reader sees the old cache
/// or the new one. Blobs of older caches stay; remove the directory to
/// reclaim them.
#[allow(clippy::too_many_arguments)]
fn write_local(
    store: &Store,
    dir: &Path,
    tag: &str,
    config: &[u8],
    layers: &[Descriptor],
    diff_of: &HashMap<String, String>,
    imported: &Imported,
    shown: &str,
) -> Result<String, RemoteCacheError> {
    let io = |action, path: &Path| {
        let (location, path) = (shown.to_string(), path.to_path_buf());
        move |source| RemoteCacheError::Io { location, action, path, source }
    };
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(io("create directory", &blobs))?;
    let put = |bytes_or_path: Result<&[u8], &Path>, digest: &str| -> Result<(), RemoteCacheError> {
        let dest = blob_path(dir, digest).expect("sha256 digests only");
        if dest.exists() {
            return Ok(());
        }
        let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
        match bytes_or_path {
            Ok(bytes) => std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?,
            Err(src) => {
                std::fs::copy(src, &tmp).map_err(io("copy into", &tmp))?;
            }
        }
        std::fs::rename(&tmp, &dest).map_err(io("rename into", &dest))
    };
    for layer in layers {
        let mut plain = layer.clone();
        plain.annotations = None;
        imported.fetch(store, &plain, &diff_of[&layer.digest])?;
        put(Err(&store.blob_path(&layer.digest)), &layer.digest)?;
    }
    let config_desc = Descriptor::new(CONFIG_MEDIA_TYPE, sha256_digest(config), config.len() as u64);
    put(Ok(config), &config_desc.digest)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: config_desc,
        layers: layers.to_vec(),
        annotations: None,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let digest = sha256_digest(&manifest_bytes);
    put(Ok(&manifest_bytes), &digest)?;
    let layout = dir.join("oci-layout");
    std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io("write", &layout))?;
    let index_path = dir.join("index.json");
    let mut index: Index =
        std::fs::read(&index_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    index.media_type = Some(OCI_INDEX.to_string());
    index.manifests.retain(|m| m.ref_name() != Some(tag));
    let mut entry = Descriptor::new(OCI_MANIFEST, digest.clone(), manifest_bytes.len() as u64);
    entry.annotations = Some([(REF_NAME.to_string(), tag.to_string())].into());
    index.manifests.push(entry);
    let tmp = index_path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&index).expect("an index serializes")).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &index_path).map_err(io("rename into", &index_path))?;
    Ok(digest)
}
