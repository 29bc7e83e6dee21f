//! `docker save` archives: manifest.json naming a config and layer tars.
//!
//! Reading accepts the legacy layout (`<id>/layer.tar`, often symlinked
//! between images), podman's (`<hex>.tar`, `<hex>.json`) and docker 25+'s
//! OCI-blobs-inside layout (`blobs/sha256/<hex>`); layers may be gzip'd. The
//! image becomes an OCI manifest with the layers stored byte for byte.
//! Writing produces uncompressed layers, since `docker load` checks each
//! layer file against its diff id.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufReader, Read, Seek, Write};

use kiln_overlay::compress::Format;
use kiln_overlay::verify::{format_name, LayerReader, VerifyError};
use serde::{Deserialize, Serialize};

use super::source::Source;
use super::tarout::TarOut;
use super::TransportError;
use crate::image::config::ImageConfig;
use crate::image::manifest::{
    Descriptor, Manifest, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR,
    OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::image::reference;
use crate::progress::{Event, ProgressReader, Reporter, Transfer};
use crate::store::{platform_of, sha256_digest, sha256_hex, Image, LayerError, LayerRef, Store};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub fn import_docker_archive(store: &Store, source: &mut dyn Source) -> Result<Image, TransportError> {
    let source: &dyn Source = source;
    let entries: Vec<ArchiveEntry> = serde_json::from_slice(&source.read_required("manifest.json")?).map_err(|e| {
        TransportError::Json { action: "parse manifest.json".into(), source_name: source.name(), source: e }
    })?;
    let entry = match entries.as_slice() {
        [] => return Err(TransportError::NoImages(source.name())),
        [only] => only,
        _ => {
            return Err(TransportError::Ambiguous {
                source_name: source.name(),
                available: entries.iter().flat_map(|e| e.repo_tags.iter().flatten().cloned()).collect(),
            })
        }
    };
    import_entry(store, source, entry)
}

/// Imports every image of a `docker save` archive, each with its RepoTags.
pub fn import_docker_archive_all(
    store: &Store,
    source: &mut dyn Source,
) -> Result<Vec<(Vec<String>, Image)>, TransportError> {
    let source: &dyn Source = source;
    let entries: Vec<ArchiveEntry> = serde_json::from_slice(&source.read_required("manifest.json")?).map_err(|e| {
        TransportError::Json { action: "parse manifest.json".into(), source_name: source.name(), source: e }
    })?;
    if entries.is_empty() {
        return Err(TransportError::NoImages(source.name()));
    }
    let mut out = Vec::new();
    for entry in &entries {
        let image = import_entry(store, source, entry)?;
        out.push((entry.repo_tags.clone().unwrap_or_default(), image));
    }
    Ok(out)
}

fn import_entry(store: &Store, source: &dyn Source, entry: &ArchiveEntry) -> Result<Image, TransportError> {
    let config_bytes = source.read_required(&entry.config)?;
    if let Some(expected) = digest_in_name(&entry.config) {
        check_digest(source, &entry.config, &expected, &sha256_digest(&config_bytes))?;
    }
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| TransportError::Json {
        action: format!("parse image config {}", entry.config),
        source_name: source.name(),
        source: e,
    })?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(TransportError::LayerCount { layers: entry.layers.len(), diff_ids: config.rootfs.diff_ids.len() });
    }

    let mut layers = Vec::with_capacity(entry.layers.len());
    for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        layers.push(import_layer(store, source, path, diff_id)?);
    }
    let (config_digest, config_size) = store.put_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: Descriptor::new(OCI_CONFIG, config_digest, config_size),
        layers,
        annotations: None,
    };
    let descriptor = store.put_manifest(&manifest, platform_of(&config))?;
    Ok(store.load_image(&descriptor)?)
}

/// Copies one layer file into the store as is, checking its uncompressed
/// content against `diff_id` (and its blob digest, when the name carries one).
fn import_layer(store: &Store, source: &dyn Source, path: &str, diff_id: &str) -> Result<Descriptor, TransportError> {
    let reader = source
        .open(path)?
        .ok_or_else(|| TransportError::Missing { name: path.to_string(), source_name: source.name() })?;
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let image = source.name();
    let layer = store.receive_layer(&mut reader, LayerRef { image: &image, blob: None, name: path, diff_id })?;
    // `blobs/sha256/<hex>` names the blob; `<hex>.tar` (podman) names the
    // blob or, for a compressed layer, possibly its diff id.
    if let Some(named) = digest_in_name(path) {
        let blob_digest = layer.digest();
        if named != blob_digest && (path.starts_with("blobs/") || named != diff_id) {
            check_digest(source, path, &named, &blob_digest)?;
        }
    }
    let media_type = match layer.format() {
        Format::None => OCI_LAYER_TAR,
        Format::Gzip => OCI_LAYER_GZIP,
        Format::Zstd => OCI_LAYER_ZSTD,
        other => {
            return Err(TransportError::UnsupportedLayer {
                digest: layer.digest(),
                media_type: format!("{}-compressed tar", format_name(other)),
            })
        }
    };
    let (digest, size) = layer.commit()?;
    Ok(Descriptor::new(media_type, digest, size))
}

/// The digest a file name carries: `blobs/sha256/<hex>`, `<hex>.json`,
/// `<hex>.tar`; legacy `<id>/layer.tar` names carry none.
fn digest_in_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let hex = file.strip_suffix(".json").or_else(|| file.strip_suffix(".tar")).unwrap_or(file);
    let digest = format!("sha256:{hex}");
    sha256_hex(&digest).is_some().then_some(digest)
}

fn check_digest(source: &dyn Source, what: &str, expected: &str, actual: &str) -> Result<(), TransportError> {
    if expected == actual {
        return Ok(());
    }
    Err(TransportError::DigestMismatch {
        what: what.to_string(),
        source_name: source.name(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

/// Writes a `docker save` archive: for each image `<config hex>.json` and its
/// layers as uncompressed `<diff id hex>.tar` (each once), then manifest.json
/// and repositories.
pub fn write_docker_archive<W: Write>(
    store: &Store,
    images: &[(Vec<String>, Descriptor)],
    out: W,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    let mut tar = TarOut::new(out);
    let mut written: HashSet<String> = HashSet::new();
    let mut entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();

    for (tags, descriptor) in images {
        let image = store.load_image(descriptor)?;
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.len() != image.manifest.layers.len() {
            return Err(TransportError::LayerCount { layers: image.manifest.layers.len(), diff_ids: diff_ids.len() });
        }
        let config_name = format!("{}.json", hex_of(store, &image.config_digest)?);
        if written.insert(config_name.clone()) {
            tar.store_blob(store, &image.config_digest, &config_name)?;
        }
        let mut layer_names = Vec::new();
        for (layer, diff_id) in image.manifest.layers.iter().zip(diff_ids) {
            let name = format!("{}.tar", hex_of(store, diff_id)?);
            if written.insert(name.clone()) {
                let verb = "Writing";
                progress.report(Event::Transfer(Transfer::Started {
                    verb,
                    digest: layer.digest.clone(),
                    size: layer.size,
                }));
                append_uncompressed_layer(store, &mut tar, layer, diff_id, &name, progress)?;
                progress.report(Event::Transfer(Transfer::Finished {
                    verb,
                    digest: layer.digest.clone(),
                    note: "done",
                }));
            }
            layer_names.push(name);
        }
        if let Some(top) = layer_names.last() {
            let top_id = top.trim_end_matches(".tar").to_string();
            for tag in tags {
                if let Ok(parsed) = reference::parse(tag) {
                    if parsed.digest.is_none() {
                        repositories
                            .entry(parsed.name.to_string())
                            .or_default()
                            .insert(parsed.tag.unwrap_or("latest").to_string(), top_id.clone());
                    }
                }
            }
        }
        entries.push(ArchiveEntry { config: config_name, repo_tags: Some(tags.clone()), layers: layer_names });
    }

    let json_err =
        |e| TransportError::Json { action: "serialize manifest.json".into(), source_name: "archive".into(), source: e };
    tar.file("manifest.json", &serde_json::to_vec(&entries).map_err(json_err)?)?;
    tar.file("repositories", &serde_json::to_vec(&repositories).map_err(json_err)?)?;
    tar.finish()
}

fn hex_of<'a>(store: &Store, digest: &'a str) -> Result<&'a str, TransportError> {
    sha256_hex(digest).ok_or_else(|| TransportError::InvalidDigest {
        digest: digest.to_string(),
        source_name: store.root().display().to_string(),
    })
}

/// Appends a layer as plain tar. Compressed layers are decompressed into a
/// temp file first: a tar header needs the size before the data.
fn append_uncompressed_layer<W: Write>(
    store: &Store,
    tar: &mut TarOut<W>,
    layer: &Descriptor,
    diff_id: &str,
    name: &str,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    // Progress counts the stored blob's bytes as they are read.
    let blob = ProgressReader::new(store.open_blob(&layer.digest)?, progress, &layer.digest);
    let blob_path = store.blob_path(&layer.digest);
    let io_err = |action: &'static str| {
        let path = blob_path.clone();
        move |source| TransportError::Io { action, path, source }
    };
    let refused = |source| LayerError::Refused { image: None, layer: layer.digest.clone(), source };
    let plain = match layer.media_type.as_str() {
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => true,
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | OCI_LAYER_ZSTD => false,
        other => {
            return Err(TransportError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: other.to_string(),
            })
        }
    };
    let mut reader = LayerReader::new(BufReader::with_capacity(256 * 1024, blob)).map_err(refused)?;
    if plain {
        if reader.format() != Format::None {
            return Err(TransportError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: format!("{} holding {} data", layer.media_type, format_name(reader.format())),
            });
        }
        let size = store.open_blob(&layer.digest)?.metadata().map_err(io_err("stat"))?.len();
        tar.reader(name, size, &mut reader)?;
        reader.finish_expecting(diff_id).map_err(refused)?;
        return Ok(());
    }

    let mut tmp = tempfile::tempfile_in(store.tmp_dir()).map_err(io_err("create temp file for"))?;
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(refused(VerifyError::Corrupt { format: reader.format(), source }).into()),
        };
        tmp.write_all(&buf[..n]).map_err(io_err("write the decompressed layer of"))?;
        size += n as u64;
    }
    reader.finish_expecting(diff_id).map_err(refused)?;
    tmp.rewind().map_err(io_err("rewind decompressed"))?;
    tar.reader(name, size, BufReader::with_capacity(256 * 1024, tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_digests_in_names() {
        let hex = "a".repeat(64);
        assert_eq!(digest_in_name(&format!("blobs/sha256/{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_in_name(&format!("{hex}.json")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_in_name(&format!("{hex}.tar")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_in_name(&format!("{hex}/layer.tar")), None);
    }
}
