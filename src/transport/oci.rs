//! OCI image layouts in and out: directories (merged in place) and tar
//! archives of them.

mod export;

use std::io::{self, Write};
use std::path::PathBuf;

use serde::Deserialize;

use super::source::Source;
use super::TransportError;
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Index, DOCKER_MANIFEST_LIST, OCI_INDEX, REF_NAME};
use crate::image::platform::{self, Platform};
use crate::store::{parse_manifest, sha256_digest, sha256_hex, Image, LayerRef, Store};

pub use export::{export_dir, write_oci_archive};

/// How deep indexes may nest before we give up.
const MAX_INDEX_DEPTH: usize = 8;

#[derive(Deserialize)]
struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

/// Imports the image `tag` (or the only image) of an OCI layout. From a
/// multi-platform image it takes `platform`'s, else the host's; asked for a
/// platform, an image for another is an error.
pub fn import_layout(
    store: &Store,
    source: &mut dyn Source,
    tag: Option<&str>,
    platform: Option<&Platform>,
) -> Result<Image, TransportError> {
    let index = read_layout_index(&*source)?;
    let entry = select_entry(&index, tag, &source.name(), platform)?;
    import_entry(store, &*source, entry, platform)
}

/// Imports every image of an OCI layout, each with the names its index
/// entries give it (`io.containerd.image.name`, else a ref name that is a
/// whole reference; a bare tag like `v1` names no repository).
pub fn import_layout_all(store: &Store, source: &mut dyn Source) -> Result<Vec<(Vec<String>, Image)>, TransportError> {
    let index = read_layout_index(&*source)?;
    if index.manifests.is_empty() {
        return Err(TransportError::NoImages(source.name()));
    }
    let mut out: Vec<(Vec<String>, Image)> = Vec::new();
    for entry in &index.manifests {
        let image = import_entry(store, &*source, entry, None)?;
        let name = entry_name(entry);
        match out.iter_mut().find(|(_, i)| i.manifest_digest == image.manifest_digest) {
            Some((names, _)) => names.extend(name),
            None => out.push((name.into_iter().collect(), image)),
        }
    }
    Ok(out)
}

/// The image name an index entry carries, if it is a whole reference.
fn entry_name(entry: &Descriptor) -> Option<String> {
    let annotations = entry.annotations.as_ref()?;
    if let Some(name) = annotations.get("io.containerd.image.name") {
        return Some(name.clone());
    }
    let name = annotations.get(REF_NAME)?;
    (name.contains(':') || name.contains('/')).then(|| name.clone())
}

fn import_entry(
    store: &Store,
    source: &dyn Source,
    entry: &Descriptor,
    wanted: Option<&Platform>,
) -> Result<Image, TransportError> {
    let (manifest_desc, manifest_bytes) = resolve_to_manifest(source, entry, wanted)?;
    let manifest = parse_manifest(&manifest_desc.digest, &manifest_bytes)?;

    // The config first, for the diff_ids every layer is checked against.
    let config_bytes = read_blob(source, &manifest.config)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| TransportError::Json {
        action: format!("parse image config {}", manifest.config.digest),
        source_name: source.name(),
        source: e,
    })?;
    if let Some(wanted) = wanted {
        if !wanted.matches(&config.os, &config.architecture, config.variant.as_deref()) {
            return Err(TransportError::NoPlatform {
                digest: manifest_desc.digest.clone(),
                wanted: wanted.to_string(),
                available: vec![Platform::new(&config.os, &config.architecture, config.variant.as_deref()).to_string()],
            });
        }
    }
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(TransportError::LayerCount { layers: manifest.layers.len(), diff_ids: diff_ids.len() });
    }
    // Layers and config before the manifest: a manifest in the store implies its blobs are.
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        copy_layer(store, source, layer, diff_id)?;
    }
    copy_blob(store, source, &manifest.config)?;
    let mut writer = store.blob_writer()?;
    writer.write_all(&manifest_bytes).map_err(|source| TransportError::Io {
        action: "write manifest into",
        path: store.root().to_path_buf(),
        source,
    })?;
    writer.commit_expecting(&manifest_desc.digest, Some(manifest_bytes.len() as u64))?;

    let mut stored =
        Descriptor::new(&manifest_desc.media_type, manifest_desc.digest.clone(), manifest_bytes.len() as u64);
    stored.platform = manifest_desc.platform.clone();
    Ok(store.load_image(&stored)?)
}

pub(super) fn read_layout_index(source: &dyn Source) -> Result<Index, TransportError> {
    let layout_bytes = source.read("oci-layout")?.ok_or_else(|| TransportError::NotALayout(source.name()))?;
    let layout: OciLayout = serde_json::from_slice(&layout_bytes).map_err(|e| TransportError::Json {
        action: "parse oci-layout".into(),
        source_name: source.name(),
        source: e,
    })?;
    if layout.image_layout_version.split('.').next() != Some("1") {
        return Err(TransportError::LayoutVersion { source_name: source.name(), version: layout.image_layout_version });
    }
    let index_bytes = source.read_required("index.json")?;
    serde_json::from_slice(&index_bytes).map_err(|e| TransportError::Json {
        action: "parse index.json".into(),
        source_name: source.name(),
        source: e,
    })
}

/// The entry tagged `tag`, or the only image when no tag is given. A
/// layout whose index.json lists one image per platform is itself a
/// multi-platform index: the entry for `platform` (or the host) is taken.
fn select_entry<'a>(
    index: &'a Index,
    tag: Option<&str>,
    source_name: &str,
    platform: Option<&Platform>,
) -> Result<&'a Descriptor, TransportError> {
    let tags = || index.manifests.iter().filter_map(|d| d.ref_name().map(str::to_string)).collect::<Vec<_>>();
    if let Some(tag) = tag {
        return index.manifests.iter().find(|d| d.ref_name() == Some(tag)).ok_or_else(|| TransportError::TagNotFound {
            tag: tag.to_string(),
            source_name: source_name.to_string(),
            available: tags(),
        });
    }
    let first = index.manifests.first().ok_or_else(|| TransportError::NoImages(source_name.to_string()))?;
    let per_platform = index.manifests.iter().all(|d| d.platform.is_some() && d.ref_name().is_none());
    if index.manifests.len() > 1 && per_platform {
        return pick_platform(index, "index.json", platform);
    }
    if index.manifests.iter().any(|d| d.digest != first.digest) {
        return Err(TransportError::Ambiguous { source_name: source_name.to_string(), available: tags() });
    }
    Ok(first)
}

/// Follows indexes down to the manifest for `wanted` (else this machine's
/// platform); returns its descriptor and verified bytes.
fn resolve_to_manifest(
    source: &dyn Source,
    entry: &Descriptor,
    wanted: Option<&Platform>,
) -> Result<(Descriptor, Vec<u8>), TransportError> {
    let mut current = entry.clone();
    for _ in 0..MAX_INDEX_DEPTH {
        let bytes = read_blob(source, &current)?;
        if !is_index(&current.media_type, &bytes) {
            return Ok((current, bytes));
        }
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| TransportError::Json {
            action: format!("parse index {}", current.digest),
            source_name: source.name(),
            source: e,
        })?;
        current = pick_platform(&index, &current.digest, wanted)?.clone();
    }
    Err(TransportError::NestedTooDeep(MAX_INDEX_DEPTH))
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
        return true;
    }
    #[derive(Deserialize)]
    struct Probe {
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.manifests.is_some())
}

/// The entry for `wanted`; without one, the host's, else the only entry.
fn pick_platform<'a>(
    index: &'a Index,
    digest: &str,
    wanted: Option<&Platform>,
) -> Result<&'a Descriptor, TransportError> {
    let target = wanted.cloned().unwrap_or_else(Platform::host);
    if let Some(found) = target.select(index) {
        return Ok(found);
    }
    if let (None, [only]) = (wanted, index.manifests.as_slice()) {
        return Ok(only);
    }
    Err(TransportError::NoPlatform {
        digest: digest.to_string(),
        wanted: target.to_string(),
        available: platform::available(index),
    })
}

fn blob_rel(source: &dyn Source, digest: &str) -> Result<String, TransportError> {
    let hex = sha256_hex(digest)
        .ok_or_else(|| TransportError::InvalidDigest { digest: digest.to_string(), source_name: source.name() })?;
    Ok(format!("blobs/sha256/{hex}"))
}

/// Reads a small blob and checks its digest and size.
fn read_blob(source: &dyn Source, desc: &Descriptor) -> Result<Vec<u8>, TransportError> {
    let bytes = source.read_required(&blob_rel(source, &desc.digest)?)?;
    let actual = sha256_digest(&bytes);
    if actual != desc.digest || bytes.len() as u64 != desc.size {
        return Err(TransportError::DigestMismatch {
            what: format!("blob {} ({} bytes)", desc.digest, bytes.len()),
            source_name: source.name(),
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Streams a blob into the store unless it is there already; the store
/// refuses it if digest or size differ.
fn copy_blob(store: &Store, source: &dyn Source, desc: &Descriptor) -> Result<(), TransportError> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    let rel = blob_rel(source, &desc.digest)?;
    let mut reader =
        source.open(&rel)?.ok_or_else(|| TransportError::Missing { name: rel.clone(), source_name: source.name() })?;
    let mut writer = store.blob_writer()?;
    io::copy(&mut reader, &mut writer).map_err(|e| TransportError::Io {
        action: "copy blob from",
        path: PathBuf::from(format!("{}/{rel}", source.name())),
        source: e,
    })?;
    writer.commit_expecting(&desc.digest, Some(desc.size))?;
    Ok(())
}

/// Streams a layer blob into the store, verified against its descriptor and
/// `diff_id` (see [`Store::receive_layer`]); a blob the store already has is
/// checked against `diff_id` too.
fn copy_layer(store: &Store, source: &dyn Source, desc: &Descriptor, diff_id: &str) -> Result<(), TransportError> {
    let image = source.name();
    let layer = LayerRef { image: &image, blob: Some(desc), name: &desc.digest, diff_id };
    if store.has_blob(&desc.digest) {
        return Ok(store.check_layer(layer)?);
    }
    let rel = blob_rel(source, &desc.digest)?;
    let reader =
        source.open(&rel)?.ok_or_else(|| TransportError::Missing { name: rel.clone(), source_name: source.name() })?;
    let mut reader = io::BufReader::with_capacity(256 * 1024, reader);
    store.receive_layer(&mut reader, layer)?.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
