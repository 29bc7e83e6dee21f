//! Compressed copies of locally built layers, made when an image leaves the
//! store and remembered.
//!
//! A build commits each layer as its plain tar (`…layer.v1.tar`, whose blob
//! digest is its diff_id): nothing is compressed while an image is only run
//! or built upon. When an image is pushed or exported (an OCI layout or
//! archive), each plain layer is compressed once into a blob of its own in
//! the store, and `kiln/compressed/<diff_id hex>.<gzip|zstd>` records which
//! blob that is, so the next push or export sends the same bytes without
//! compressing again. The stored image keeps its manifest; the one that goes
//! out lists the compressed blobs (same config, so the same diff_ids).
//! Layers that already are compressed (pulled ones, or built with an explicit
//! `--compression`) leave as they are.
//!
//! A record is written (temp file and rename) after its blob is in place,
//! and garbage collection removes it before the blob: a kill in between
//! leaves a blob nothing names, which a later prune removes, never a record
//! naming a missing blob. A record lives as long as its plain layer: the
//! collector keeps a recorded blob while its layer's blob is live and
//! removes both together (see `gc.rs`).

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use kiln_overlay::compress::{encoder, Compression, Format};
use kiln_overlay::WritebackFile;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use tempfile::{NamedTempFile, TempPath};

use super::blobs::BlobWriter;
use super::{index, parse_manifest, sha256_digest, sha256_hex, Store, StoreError};
use crate::image::config::ImageConfig;
use crate::image::manifest::{
    Descriptor, Manifest, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
    OCI_MANIFEST,
};

/// Records, under `<root>/kiln/`.
pub const COMPRESSED_DIR: &str = "compressed";

/// One remembered compressed copy of a plain layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompressedRecord {
    /// The plain layer's diff_id (and blob digest).
    pub diff_id: String,
    /// `gzip` or `zstd`.
    pub compression: String,
    /// The compressed blob.
    pub digest: String,
    pub size: u64,
}

impl CompressedRecord {
    /// The stream format its blob must start with.
    pub fn format(&self) -> Format {
        compression_of(&self.compression).map_or(Format::None, format_of)
    }
}

/// A record file and what it says, or why it cannot be read.
pub type RecordFile = (PathBuf, Result<CompressedRecord, String>);

/// An image's manifest as it leaves the store.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub manifest: Manifest,
    /// The manifest's bytes: the stored blob's when no layer changed.
    pub bytes: Vec<u8>,
    pub digest: String,
    /// Whether `bytes` are the stored manifest (so `digest` is the stored image's).
    pub as_stored: bool,
}

/// The name a record file carries for `c`; `None` for no compression.
fn compression_name(c: Compression) -> Option<&'static str> {
    match c {
        Compression::Gzip => Some("gzip"),
        Compression::Zstd => Some("zstd"),
        _ => None,
    }
}

/// The compression a record's name or field spells.
fn compression_of(name: &str) -> Option<Compression> {
    match name {
        "gzip" => Some(Compression::Gzip),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The stream format a blob of compression `c` starts with.
fn format_of(c: Compression) -> Format {
    match c {
        Compression::Gzip => Format::Gzip,
        Compression::Zstd => Format::Zstd,
        _ => Format::None,
    }
}

/// The media type a plain layer of type `plain` gets once compressed with
/// `c`; `None` when `plain` is no plain-tar layer type (the layer then
/// leaves as it is).
fn compressed_media_type(plain: &str, c: Compression) -> Option<&'static str> {
    match (plain, c) {
        (OCI_LAYER_TAR, Compression::Gzip) => Some(OCI_LAYER_GZIP),
        (DOCKER_LAYER_TAR, Compression::Gzip) => Some(DOCKER_LAYER_GZIP),
        // Docker's v2s2 has no zstd layer type; OCI's is what every reader of zstd layers knows.
        (OCI_LAYER_TAR | DOCKER_LAYER_TAR, Compression::Zstd) => Some(OCI_LAYER_ZSTD),
        _ => None,
    }
}

impl Store {
    fn compressed_dir(&self) -> PathBuf {
        self.private_dir().join(COMPRESSED_DIR)
    }

    fn compressed_record_path(&self, diff_id: &str, c: Compression) -> Option<PathBuf> {
        let hex = sha256_hex(diff_id)?;
        Some(self.compressed_dir().join(format!("{hex}.{}", compression_name(c)?)))
    }

    /// The remembered compressed copy of the plain layer `diff_id`, if its
    /// record is readable and its blob is in the store with the recorded size.
    pub fn compressed_record(&self, diff_id: &str, c: Compression) -> Option<CompressedRecord> {
        let path = self.compressed_record_path(diff_id, c)?;
        let record: CompressedRecord = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let size = fs::metadata(self.blob_path(&record.digest)).ok()?.len();
        let matches = record.diff_id == diff_id
            && compression_of(&record.compression) == Some(c)
            && sha256_hex(&record.digest).is_some()
            && size == record.size;
        matches.then_some(record)
    }

    /// Every record file with what it says, or why it cannot be read. A
    /// file whose name is not `<diff_id hex>.<gzip|zstd>` counts as unreadable.
    pub fn compressed_records(&self) -> Result<Vec<RecordFile>, StoreError> {
        let dir = self.compressed_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Io { action: "list", path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io { action: "list", path: dir.clone(), source })?;
            let path = entry.path();
            out.push((path.clone(), read_record(&path)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The descriptor `layer` (of an image in the store, with its config's
    /// `diff_id`) leaves the store under when compressed with `c`: a plain
    /// layer's remembered compressed copy, made now if there is none yet; any
    /// other layer (already compressed, or `c` is none) as it is.
    pub fn compressed_layer(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        c: Compression,
    ) -> Result<Descriptor, StoreError> {
        self.compressed_layer_noting(layer, diff_id, c, &mut |_| {}, None)
    }

    /// [`Store::compressed_layer`], calling `compressing` with the layer's
    /// digest before it compresses one (for progress output).
    fn compressed_layer_noting(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        c: Compression,
        compressing: &mut dyn FnMut(&str),
        copy_to: Option<&Path>,
    ) -> Result<Descriptor, StoreError> {
        let Some(media_type) = compressed_media_type(&layer.media_type, c) else {
            return Ok(layer.clone());
        };
        let record = match (self.compressed_record(diff_id, c), compression_name(c)) {
            (Some(record), _) => record,
            (None, Some(name)) => {
                compressing(&layer.digest);
                self.compress_layer(layer, diff_id, c, name, copy_to)?
            }
            (None, None) => return Ok(layer.clone()),
        };
        let mut out = Descriptor::new(media_type, record.digest, record.size);
        out.annotations = layer.annotations.clone();
        Ok(out)
    }

    /// Compresses a plain layer blob into a new blob, checking while it reads
    /// that the plain bytes still hash to `diff_id`, and records the pair.
    /// With `copy_to` (an export's blob directory), the compressed bytes are
    /// written there too in the same pass, as `<hex>` once complete (temp
    /// file, fsync, rename), so an export needs no second read and hash of
    /// the new blob; the copy is the very bytes the store's blob was hashed
    /// from.
    fn compress_layer(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        c: Compression,
        name: &str,
        copy_to: Option<&Path>,
    ) -> Result<CompressedRecord, StoreError> {
        let record_path = self
            .compressed_record_path(diff_id, c)
            .ok_or_else(|| StoreError::InvalidDigest { digest: diff_id.to_string() })?;
        let source_path = self.blob_path(&layer.digest);
        let io_err = |action: &'static str| {
            let path = source_path.clone();
            move |source| StoreError::Io { action, path, source }
        };
        let mut reader = BufReader::with_capacity(256 * 1024, self.open_blob(&layer.digest)?);
        let copy = match copy_to {
            Some(dir) => Some(ExportCopy::new(dir)?),
            None => None,
        };
        let sink = Tee { blob: self.blob_writer()?, copy };
        let mut out = encoder(c, sink).map_err(io_err("start compressing"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read layer blob")(e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err("compress layer blob"))?;
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != diff_id {
            // The plain blob is not the layer its image names: leave the store
            // as it is, for `kiln system check` to report.
            return Err(StoreError::DigestMismatch { expected: diff_id.to_string(), actual });
        }
        let Tee { blob, copy } = out.finish().map_err(io_err("compress layer blob"))?;
        crate::fault::point("compress-blob-written");
        // The export's copy reaches the disk while the store's blob does.
        let (committed, copy) = std::thread::scope(|s| {
            let synced = copy.map(|copy| s.spawn(move || copy.sync()));
            let committed = blob.commit();
            (committed, synced.map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))))
        });
        let (digest, size) = committed?;
        let copy = copy.transpose()?;
        crate::fault::point("compress-record-before");
        let record = CompressedRecord { diff_id: diff_id.to_string(), compression: name.to_string(), digest, size };
        let bytes = serde_json::to_vec(&record).map_err(|source| StoreError::Json {
            action: "serialize",
            path: record_path.clone(),
            source,
        })?;
        let dir = self.compressed_dir();
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io { action: "create directory", path: dir, source })?;
        index::write_atomic(&record_path, &self.tmp_dir(), &bytes)?;
        crate::fault::point("compress-record-after");
        if let Some(copy) = copy {
            copy.place(&record.digest)?;
        }
        log::debug!("compressed layer {diff_id} with {name}: {} ({} bytes)", record.digest, record.size);
        Ok(record)
    }

    /// The manifest `manifest_digest` (an image in the store) as it leaves
    /// the store with its plain layers compressed with `c` (see
    /// [`Store::compressed_layer`]). Unchanged when no layer is plain.
    /// `compressing` is called with a layer's digest before it is compressed.
    pub fn outgoing_manifest(
        &self,
        manifest_digest: &str,
        c: Compression,
        compressing: &mut dyn FnMut(&str),
    ) -> Result<Outgoing, StoreError> {
        self.outgoing_manifest_copying(manifest_digest, c, compressing, None)
    }

    /// [`Store::outgoing_manifest`]; a layer compressed now is also written
    /// into `copy_to` (an OCI layout's `blobs/sha256`) as `<hex>`, in the
    /// same pass (see [`Store::compress_layer`]). Layers compressed before
    /// are not copied: that is for the caller, which finds them missing there.
    pub fn outgoing_manifest_copying(
        &self,
        manifest_digest: &str,
        c: Compression,
        compressing: &mut dyn FnMut(&str),
        copy_to: Option<&Path>,
    ) -> Result<Outgoing, StoreError> {
        let stored = self.read_blob(manifest_digest)?;
        let manifest = parse_manifest(manifest_digest, &stored)?;
        let unchanged = |manifest: Manifest| Outgoing {
            manifest,
            bytes: stored.clone(),
            digest: manifest_digest.to_string(),
            as_stored: true,
        };
        if !manifest.layers.iter().any(|l| compressed_media_type(&l.media_type, c).is_some()) {
            return Ok(unchanged(manifest));
        }
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
            action: "parse image config",
            path: self.blob_path(&manifest.config.digest),
            source,
        })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(StoreError::LayerCountMismatch { layers: manifest.layers.len(), diff_ids: diff_ids.len() });
        }
        let mut out = manifest.clone();
        for (layer, diff_id) in out.layers.iter_mut().zip(diff_ids) {
            *layer = self.compressed_layer_noting(layer, diff_id, c, compressing, copy_to)?;
        }
        if out.layers == manifest.layers {
            return Ok(unchanged(manifest));
        }
        out.media_type.get_or_insert_with(|| OCI_MANIFEST.to_string());
        let bytes = serde_json::to_vec(&out).map_err(|source| StoreError::Json {
            action: "serialize manifest for",
            path: self.root.clone(),
            source,
        })?;
        let digest = sha256_digest(&bytes);
        Ok(Outgoing { manifest: out, bytes, digest, as_stored: false })
    }
}

/// Where compression writes: the store's new blob, and an export's copy.
struct Tee {
    blob: BlobWriter,
    copy: Option<ExportCopy>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Whole buffers to both, so both hold the same bytes whatever a
        // short write does.
        self.blob.write_all(buf)?;
        if let Some(copy) = &mut self.copy {
            copy.file.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.blob.flush()
    }
}

/// A compressed blob's copy being written into an export's blob directory
/// (outside the store): a temp file there, renamed to its digest once the
/// store holds the blob. Dropped unplaced, it removes its temp file; a kill
/// leaves a `.tmp-…` file that no layout reader looks at.
struct ExportCopy {
    file: WritebackFile,
    tmp: TempPath,
    dir: PathBuf,
}

impl ExportCopy {
    fn new(dir: &Path) -> Result<Self, StoreError> {
        let tmp = NamedTempFile::with_prefix_in(".tmp-", dir).map_err(|source| StoreError::Io {
            action: "create temp file in",
            path: dir.to_path_buf(),
            source,
        })?;
        let (file, tmp) = tmp.into_parts();
        Ok(ExportCopy { file: WritebackFile::new(file), tmp, dir: dir.to_path_buf() })
    }

    /// Makes the copy readable (temp files start 0600) and durable.
    fn sync(self) -> Result<Self, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let err = |action| {
            let path = self.tmp.to_path_buf();
            move |source| StoreError::Io { action, path, source }
        };
        self.file.get_ref().set_permissions(fs::Permissions::from_mode(0o644)).map_err(err("chmod"))?;
        self.file.get_ref().sync_all().map_err(err("fsync"))?;
        Ok(self)
    }

    /// Renames the copy to `<dir>/<hex of digest>`.
    fn place(self, digest: &str) -> Result<(), StoreError> {
        let hex = sha256_hex(digest).ok_or_else(|| StoreError::InvalidDigest { digest: digest.to_string() })?;
        let target = self.dir.join(hex);
        self.tmp.persist(&target).map_err(|e| StoreError::Io {
            action: "rename blob into",
            path: target,
            source: e.error,
        })?;
        super::blobs::sync_dir(&self.dir)
    }
}

/// Reads one record file, checking that its name matches what it says.
fn read_record(path: &Path) -> Result<CompressedRecord, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let record: CompressedRecord = serde_json::from_slice(&bytes).map_err(|e| format!("not a record: {e}"))?;
    let c =
        compression_of(&record.compression).ok_or_else(|| format!("unknown compression {:?}", record.compression))?;
    if sha256_hex(&record.digest).is_none() {
        return Err(format!("{:?} is no sha256 digest", record.digest));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let expected = sha256_hex(&record.diff_id).map(|hex| format!("{hex}.{}", compression_name(c).unwrap_or_default()));
    if expected.as_deref() != Some(name.as_str()) {
        return Err(format!("names layer {} ({}), not the one its file name says", record.diff_id, record.compression));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_layers_get_a_compressed_type() {
        assert_eq!(compressed_media_type(OCI_LAYER_TAR, Compression::Gzip), Some(OCI_LAYER_GZIP));
        assert_eq!(compressed_media_type(DOCKER_LAYER_TAR, Compression::Gzip), Some(DOCKER_LAYER_GZIP));
        assert_eq!(compressed_media_type(OCI_LAYER_TAR, Compression::Zstd), Some(OCI_LAYER_ZSTD));
        assert_eq!(compressed_media_type(OCI_LAYER_TAR, Compression::None), None);
        assert_eq!(compressed_media_type(OCI_LAYER_GZIP, Compression::Gzip), None);
        assert_eq!(compressed_media_type(OCI_LAYER_ZSTD, Compression::Gzip), None);
    }
}
