//! OCI image layouts in and out: directories (merged in place) and tar
//! archives of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_overlay::compress::Compression;
use kiln_overlay::digest::HashingReader;
use serde::Deserialize;
use tempfile::NamedTempFile;

use super::source::Source;
use super::tarout::TarOut;
use super::{make_readable, TransportError};
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Index, DOCKER_MANIFEST_LIST, OCI_INDEX, REF_NAME};
use crate::image::platform::{self, Platform};
use crate::progress::{Event, ProgressReader, Reporter, Transfer};
use crate::store::{parse_manifest, sha256_digest, sha256_hex, Image, LayerRef, Store};

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

fn read_layout_index(source: &dyn Source) -> Result<Index, TransportError> {
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

/// An image as it leaves the store: its manifest's descriptor (with its
/// real digest and size), the manifest's bytes when they are not the stored
/// blob's, and the blobs the manifest names.
struct Leaving {
    manifest: Descriptor,
    bytes: Option<Vec<u8>>,
    blobs: Vec<Descriptor>,
    /// The digests of `blobs` that are layers (progress is shown for those).
    layers: BTreeSet<String>,
}

/// The image `manifest` names as it leaves the store with its plain layers
/// compressed with `compression` (see [`Store::outgoing_manifest`]); layers
/// compressed now are also written into `copy_to`, a layout's blob dir.
fn leaving(
    store: &Store,
    manifest: &Descriptor,
    compression: Compression,
    copy_to: Option<&Path>,
    progress: &dyn Reporter,
) -> Result<Leaving, TransportError> {
    // Plain layers are compressed here, each once in the store's life.
    let name = if compression == Compression::Zstd { "zstd" } else { "gzip" };
    let mut compressing = |digest: &str| {
        progress.report(Event::Note(format!("Compressing layer {} ({name})", crate::humanize::short(digest))))
    };
    let out = store.outgoing_manifest_copying(&manifest.digest, compression, &mut compressing, copy_to)?;
    let mut sized = manifest.clone();
    sized.digest = out.digest.clone();
    sized.size = out.bytes.len() as u64;
    let mut blobs = vec![out.manifest.config.clone()];
    blobs.extend(out.manifest.layers.iter().cloned());
    let layers = out.manifest.layers.iter().map(|l| l.digest.clone()).collect();
    Ok(Leaving { manifest: sized, bytes: (!out.as_stored).then_some(out.bytes), blobs, layers })
}

/// The index entry for an exported image: the image's own annotations
/// (`--annotation`) and its export name, not the store's tag name.
fn index_entry(name: &Option<String>, manifest: &Descriptor) -> Descriptor {
    let mut entry = Descriptor::new(&manifest.media_type, manifest.digest.clone(), manifest.size);
    entry.platform = manifest.platform.clone();
    let mut annotations: BTreeMap<String, String> =
        manifest.annotations.clone().unwrap_or_default().into_iter().filter(|(k, _)| k != REF_NAME).collect();
    if let Some(name) = name {
        annotations.insert(REF_NAME.to_string(), name.clone());
    }
    entry.annotations = (!annotations.is_empty()).then_some(annotations);
    entry
}

fn merge_entry(index: &mut Index, entry: Descriptor) {
    match entry.ref_name() {
        Some(name) => {
            let name = name.to_string();
            index.manifests.retain(|d| d.ref_name() != Some(name.as_str()));
        }
        None => index.manifests.retain(|d| !(d.ref_name().is_none() && d.digest == entry.digest)),
    }
    index.manifests.push(entry);
}

/// Writes `images` into the OCI layout `dest` (see `super::export_oci_dir`).
pub fn export_dir(
    store: &Store,
    images: &[(Option<String>, Descriptor)],
    dest: &Path,
    compression: Compression,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| TransportError::Io { action, path: p, source }
    };
    let blob_dir = dest.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(io_err("create directory", &blob_dir))?;
    let layout_path = dest.join("oci-layout");
    let dest_source = super::source::DirSource::new(dest);
    let mut index = if layout_path.exists() {
        read_layout_index(&dest_source).or_else(|e| match e {
            // A layout without an index yet (e.g. interrupted before) starts empty.
            TransportError::Missing { .. } => Ok(Index::default()),
            other => Err(other),
        })?
    } else {
        write_replacing(dest, &layout_path, &layout_bytes())?;
        Index::default()
    };

    for (name, manifest) in images {
        // A layer compressed for this export lands in the layout as it is
        // compressed (no second read of the new blob); the rest is copied below.
        let image = leaving(store, manifest, compression, Some(&blob_dir), progress)?;
        for blob in std::iter::once(&image.manifest).chain(&image.blobs) {
            let hex = sha256_hex(&blob.digest).ok_or_else(|| TransportError::InvalidDigest {
                digest: blob.digest.clone(),
                source_name: store.root().display().to_string(),
            })?;
            let target = blob_dir.join(hex);
            if target.exists() {
                continue;
            }
            match &image.bytes {
                Some(bytes) if blob.digest == image.manifest.digest => write_replacing(&blob_dir, &target, bytes)?,
                _ if image.layers.contains(&blob.digest) => {
                    let verb = "Writing";
                    progress.report(Event::Transfer(Transfer::Started {
                        verb,
                        digest: blob.digest.clone(),
                        size: blob.size,
                    }));
                    copy_store_blob_to(store, &blob.digest, &blob_dir, &target, progress)?;
                    progress.report(Event::Transfer(Transfer::Finished {
                        verb,
                        digest: blob.digest.clone(),
                        note: "done",
                    }));
                }
                _ => copy_store_blob_to(store, &blob.digest, &blob_dir, &target, &crate::progress::Silent)?,
            }
        }
        merge_entry(&mut index, index_entry(name, &image.manifest));
    }
    let mut bytes = serde_json::to_vec_pretty(&index).map_err(|e| TransportError::Json {
        action: "serialize index.json".into(),
        source_name: dest.display().to_string(),
        source: e,
    })?;
    bytes.push(b'\n');
    write_replacing(dest, &dest.join("index.json"), &bytes)
}

fn layout_bytes() -> Vec<u8> {
    br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
}

/// Copies a store blob into `dir` under a temp name, checking its digest,
/// then renames it to `target`.
fn copy_store_blob_to(
    store: &Store,
    digest: &str,
    dir: &Path,
    target: &Path,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| TransportError::Io { action, path: p, source }
    };
    let mut reader = HashingReader::new(ProgressReader::new(store.open_blob(digest)?, progress, digest));
    let mut tmp = NamedTempFile::with_prefix_in(".tmp-", dir).map_err(io_err("create temp file in", dir))?;
    io::copy(&mut reader, tmp.as_file_mut()).map_err(io_err("copy blob to", target))?;
    super::check_store_blob(store, digest, reader.digest())?;
    make_readable(&tmp, target)?;
    tmp.as_file().sync_all().map_err(io_err("fsync", target))?;
    tmp.persist(target).map_err(|e| TransportError::Io {
        action: "rename blob into",
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Replaces `path` (inside `dir`) atomically.
fn write_replacing(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| TransportError::Io { action, path: p, source }
    };
    let mut tmp = NamedTempFile::with_prefix_in(".tmp-", dir).map_err(io_err("create temp file in", dir))?;
    tmp.write_all(bytes).map_err(io_err("write", path))?;
    make_readable(&tmp, path)?;
    tmp.as_file().sync_all().map_err(io_err("fsync", path))?;
    tmp.persist(path).map_err(|e| TransportError::Io {
        action: "rename into",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Writes the images as a tar of an OCI layout: oci-layout, index.json, then
/// blobs sorted by digest, all with zero timestamps and root ownership.
/// Plain layers are compressed with `compression` on the way (see
/// [`Store::outgoing_manifest`]).
pub fn write_oci_archive<W: Write>(
    store: &Store,
    images: &[(Option<String>, Descriptor)],
    out: W,
    compression: Compression,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    let mut index = Index::default();
    let mut blobs = BTreeSet::new();
    let mut layers = BTreeMap::new();
    // Manifests made for this export, which the store does not hold.
    let mut made: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, manifest) in images {
        let image = leaving(store, manifest, compression, None, progress)?;
        merge_entry(&mut index, index_entry(name, &image.manifest));
        layers.extend(
            image.blobs.iter().filter(|b| image.layers.contains(&b.digest)).map(|b| (b.digest.clone(), b.size)),
        );
        blobs.insert(image.manifest.digest.clone());
        blobs.extend(image.blobs.into_iter().map(|b| b.digest));
        if let Some(bytes) = image.bytes {
            made.insert(image.manifest.digest, bytes);
        }
    }
    let mut index_bytes = serde_json::to_vec_pretty(&index).map_err(|e| TransportError::Json {
        action: "serialize index.json".into(),
        source_name: "archive".into(),
        source: e,
    })?;
    index_bytes.push(b'\n');

    let mut tar = TarOut::new(out);
    tar.file("oci-layout", &layout_bytes())?;
    tar.file("index.json", &index_bytes)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for digest in &blobs {
        let hex = sha256_hex(digest).ok_or_else(|| TransportError::InvalidDigest {
            digest: digest.clone(),
            source_name: store.root().display().to_string(),
        })?;
        match (made.get(digest), layers.get(digest)) {
            (Some(bytes), _) => tar.file(&format!("blobs/sha256/{hex}"), bytes)?,
            (None, Some(&size)) => {
                let verb = "Writing";
                progress.report(Event::Transfer(Transfer::Started { verb, digest: digest.clone(), size }));
                tar.store_blob_reporting(store, digest, &format!("blobs/sha256/{hex}"), progress)?;
                progress.report(Event::Transfer(Transfer::Finished { verb, digest: digest.clone(), note: "done" }));
            }
            (None, None) => tar.store_blob(store, digest, &format!("blobs/sha256/{hex}"))?,
        }
    }
    tar.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, name: Option<&str>) -> Descriptor {
        index_entry(&name.map(str::to_string), &Descriptor::new(crate::image::manifest::OCI_MANIFEST, digest.into(), 1))
    }

    #[test]
    fn selects_by_tag_or_uniqueness() {
        let mut index = Index::default();
        assert!(matches!(select_entry(&index, None, "x", None), Err(TransportError::NoImages(_))));
        index.manifests = vec![entry("sha256:a", Some("v1")), entry("sha256:a", Some("v2"))];
        assert_eq!(select_entry(&index, None, "x", None).unwrap().digest, "sha256:a");
        index.manifests.push(entry("sha256:b", Some("v3")));
        let err = select_entry(&index, None, "x", None).unwrap_err();
        assert!(err.to_string().contains("v1, v2, v3"), "{err}");
        assert_eq!(select_entry(&index, Some("v3"), "x", None).unwrap().digest, "sha256:b");
        let err = select_entry(&index, Some("nope"), "x", None).unwrap_err();
        assert!(matches!(err, TransportError::TagNotFound { .. }));
    }

    #[test]
    fn untagged_entries_per_platform_are_an_index() {
        let mut index = Index::default();
        for (digest, arch) in [("sha256:a", "amd64"), ("sha256:b", "arm64")] {
            let mut d = entry(digest, None);
            d.platform = Some(crate::image::manifest::Platform {
                os: "linux".into(),
                architecture: arch.into(),
                ..Default::default()
            });
            index.manifests.push(d);
        }
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert_eq!(select_entry(&index, None, "x", Some(&arm64)).unwrap().digest, "sha256:b");
        let s390x = Platform::parse("linux/s390x").unwrap();
        let err = select_entry(&index, None, "x", Some(&s390x)).unwrap_err().to_string();
        assert!(err.contains("no match for platform") && err.contains("linux/amd64, linux/arm64"), "{err}");
        // Without a platform asked for, one entry is taken only if it is the host's.
        let mut one = index.clone();
        one.manifests.truncate(1);
        assert_eq!(pick_platform(&one, "x", None).unwrap().digest, "sha256:a");
        assert!(pick_platform(&one, "x", Some(&arm64)).is_err(), "asked for arm64, an amd64-only index is an error");
    }

    #[test]
    fn merge_replaces_same_ref_name() {
        let mut index = Index::default();
        merge_entry(&mut index, entry("sha256:a", Some("v1")));
        merge_entry(&mut index, entry("sha256:b", Some("v1")));
        merge_entry(&mut index, entry("sha256:c", None));
        merge_entry(&mut index, entry("sha256:c", None));
        let got: Vec<_> = index.manifests.iter().map(|d| (d.digest.as_str(), d.ref_name())).collect();
        assert_eq!(got, vec![("sha256:b", Some("v1")), ("sha256:c", None)]);
    }
}
