//! `docker save` archives: manifest.json naming a config and layer tars.
//!
//! Reading accepts the legacy layout (`<id>/layer.tar`, often symlinked
//! between images), podman's (`<hex>.tar`, `<hex>.json`) and docker 25+'s
//! OCI-blobs-inside layout (`blobs/sha256/<hex>`); layers may be gzip'd. The
//! image becomes an OCI manifest with the layers stored byte for byte.
//! Writing produces uncompressed layers, since `docker load` checks each
//! layer file against its diff id.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::oci::HashingReader;
use super::source::Source;
use super::tarout::TarOut;
use super::TransportError;
use crate::image::config::ImageConfig;
use crate::image::manifest::{
    Descriptor, Manifest, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR,
    OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::image::reference;
use crate::store::{platform_of, sha256_digest, sha256_hex, Image, Store};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
        }
    }
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
    let io_err =
        |e| TransportError::Io { action: "copy layer", path: format!("{}/{path}", source.name()).into(), source: e };
    let compression = Compression::sniff(reader.fill_buf().map_err(io_err)?);

    let mut blob = store.blob_writer()?;
    let mut diff = DiffHasher::new(compression).map_err(io_err)?;
    loop {
        let chunk = reader.fill_buf().map_err(io_err)?;
        if chunk.is_empty() {
            break;
        }
        blob.write_all(chunk).map_err(io_err)?;
        diff.write_all(chunk).map_err(io_err)?;
        let n = chunk.len();
        reader.consume(n);
    }
    let actual_diff = diff.finish().map_err(io_err)?;
    check_digest(source, &format!("layer {path} (uncompressed)"), diff_id, &actual_diff)?;
    // `blobs/sha256/<hex>` names the blob; `<hex>.tar` (podman) names the
    // blob or, for a compressed layer, possibly its diff id.
    if let Some(named) = digest_in_name(path) {
        let blob_digest = blob.digest();
        if named != blob_digest && (path.starts_with("blobs/") || named != actual_diff) {
            check_digest(source, path, &named, &blob_digest)?;
        }
    }
    let (digest, size) = blob.commit()?;
    Ok(Descriptor::new(compression.oci_media_type(), digest, size))
}

/// sha256 of a layer's uncompressed bytes, fed compressed bytes.
enum DiffHasher {
    Plain(Sha256Writer),
    Gzip(flate2::write::MultiGzDecoder<Sha256Writer>),
    Zstd(zstd::stream::write::Decoder<'static, Sha256Writer>),
}

impl DiffHasher {
    fn new(compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => DiffHasher::Plain(Sha256Writer::default()),
            Compression::Gzip => DiffHasher::Gzip(flate2::write::MultiGzDecoder::new(Sha256Writer::default())),
            Compression::Zstd => DiffHasher::Zstd(zstd::stream::write::Decoder::new(Sha256Writer::default())?),
        })
    }

    fn finish(self) -> io::Result<String> {
        let hasher = match self {
            DiffHasher::Plain(h) => h,
            DiffHasher::Gzip(d) => d.finish()?,
            DiffHasher::Zstd(mut d) => {
                d.flush()?;
                d.into_inner()
            }
        };
        Ok(format!("sha256:{}", hex::encode(hasher.0.finalize())))
    }
}

impl Write for DiffHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DiffHasher::Plain(h) => h.write(buf),
            DiffHasher::Gzip(d) => d.write(buf),
            DiffHasher::Zstd(d) => d.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            DiffHasher::Plain(h) => h.flush(),
            DiffHasher::Gzip(d) => d.flush(),
            DiffHasher::Zstd(d) => d.flush(),
        }
    }
}

#[derive(Default)]
struct Sha256Writer(Sha256);

impl Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
                append_uncompressed_layer(store, &mut tar, layer, diff_id, &name)?;
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
) -> Result<(), TransportError> {
    let blob = store.open_blob(&layer.digest)?;
    let blob_path = store.blob_path(&layer.digest);
    let io_err = |action: &'static str| {
        let path = blob_path.clone();
        move |source| TransportError::Io { action, path, source }
    };
    let mismatch = |actual: String| TransportError::DigestMismatch {
        what: format!("layer {} (uncompressed)", layer.digest),
        source_name: store.root().display().to_string(),
        expected: diff_id.to_string(),
        actual,
    };
    let compression = match layer.media_type.as_str() {
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => Compression::None,
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Compression::Gzip,
        OCI_LAYER_ZSTD => Compression::Zstd,
        other => {
            return Err(TransportError::UnsupportedLayer {
                digest: layer.digest.clone(),
                media_type: other.to_string(),
            })
        }
    };
    if compression == Compression::None {
        let size = blob.metadata().map_err(io_err("stat"))?.len();
        let mut reader = HashingReader::new(blob);
        tar.reader(name, size, &mut reader)?;
        let actual = reader.digest();
        return if actual == diff_id { Ok(()) } else { Err(mismatch(actual)) };
    }

    let mut tmp = tempfile::tempfile_in(store.tmp_dir()).map_err(io_err("create temp file for"))?;
    let reader = BufReader::with_capacity(256 * 1024, blob);
    let mut decoded: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        _ => Box::new(zstd::stream::read::Decoder::with_buffer(reader).map_err(io_err("decompress"))?),
    };
    let mut hashing = HashingReader::new(&mut decoded);
    let size = io::copy(&mut hashing, &mut tmp).map_err(io_err("decompress"))?;
    let actual = hashing.digest();
    if actual != diff_id {
        return Err(mismatch(actual));
    }
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

    #[test]
    fn diff_ids_of_compressed_streams() {
        let raw = b"layer content ".repeat(5000);
        let want = sha256_digest(&raw);
        let mut gz = Vec::new();
        for half in raw.chunks(raw.len() / 2) {
            // Two gzip members, as parallel compressors write them.
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(half).unwrap();
            gz.extend(enc.finish().unwrap());
        }
        let zst = zstd::encode_all(&raw[..], 3).unwrap();
        for (bytes, compression) in
            [(&raw[..], Compression::None), (&gz[..], Compression::Gzip), (&zst[..], Compression::Zstd)]
        {
            assert_eq!(Compression::sniff(bytes), compression);
            let mut hasher = DiffHasher::new(compression).unwrap();
            for chunk in bytes.chunks(1000) {
                hasher.write_all(chunk).unwrap();
            }
            assert_eq!(hasher.finish().unwrap(), want, "{compression:?}");
        }
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"etc/\0\0"), Compression::None);
    }
}
