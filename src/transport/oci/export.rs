//! OCI layouts out of the store: a directory (merged in place) or a tar
//! archive of one, with plain layers compressed on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use kiln_overlay::compress::Compression;
use kiln_overlay::digest::HashingReader;
use tempfile::NamedTempFile;

use super::super::source::DirSource;
use super::super::tarout::TarOut;
use super::super::{check_store_blob, make_readable, TransportError};
use super::read_layout_index;
use crate::image::manifest::{Descriptor, Index, REF_NAME};
use crate::progress::{Event, ProgressReader, Reporter, Transfer};
use crate::store::{sha256_hex, Store};

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
pub(super) fn index_entry(name: &Option<String>, manifest: &Descriptor) -> Descriptor {
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

pub(super) fn merge_entry(index: &mut Index, entry: Descriptor) {
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
    let dest_source = DirSource::new(dest);
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
    let tmp = NamedTempFile::with_prefix_in(".tmp-", dir).map_err(io_err("create temp file in", dir))?;
    // The disk writes a big blob while it is copied (see WritebackFile).
    let mut out =
        tmp.as_file().try_clone().map(kiln_overlay::WritebackFile::new).map_err(io_err("copy blob to", target))?;
    io::copy(&mut reader, &mut out).map_err(io_err("copy blob to", target))?;
    check_store_blob(store, digest, reader.digest())?;
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
