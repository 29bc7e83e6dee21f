//! The one way a layer blob from outside (a registry, an OCI layout, an
//! archive) enters the store: its compressed bytes are checked against the
//! manifest's digest and size as before, and its uncompressed bytes against
//! the config's diff_id, with the compressed stream read to its very end
//! (gzip CRC and length, zstd checksum). Nothing is placed in the store
//! unless both hold, so an image whose config lies about a layer never lands
//! in the store.
//!
//! A layer blob already in the store is checked against the diff_id a new
//! image claims for it too: the pair (blob, diff_id) is verified once and
//! remembered in `kiln/diffids/<blob hex>`, as containerd keeps a blob's
//! uncompressed digest in a label. A blob's content never changes, so a
//! record is true for as long as anything of that name exists.
//!
//! The record also keeps the layer's uncompressed size (`<diff_id> <bytes>`;
//! records written before kiln kept it hold the diff_id alone): `kiln
//! images` and `kiln inspect` show an image's size uncompressed, as docker
//! and podman do, without reading its compressed layers again.
//!
//! Layer dirs (`super::layers`) verify again while they unpack: this
//! check keeps forged images out, that one keeps unverified trees out.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;

use kiln_overlay::compress::Format;
use kiln_overlay::verify::{LayerReader, VerifyError};

use super::{index, sha256_hex, BlobWriter, Store, StoreError};
use crate::image::manifest::Descriptor;

const RECORDS_DIR: &str = "diffids";

/// A layer that cannot be used, or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The layer is not what the image says it is: its uncompressed content
    /// does not match the diff_id, or its compressed stream is corrupt.
    #[error("refused layer {layer}{}", of_image(.image))]
    Refused {
        image: Option<String>,
        /// The blob digest, or the file the layer came from when no digest names it.
        layer: String,
        #[source]
        source: VerifyError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn of_image(image: &Option<String>) -> String {
    image.as_ref().map(|i| format!(" of {i}")).unwrap_or_default()
}

/// The layer being stored, for messages and checks.
#[derive(Debug, Clone, Copy)]
pub struct LayerRef<'a> {
    /// The image, as the user named it.
    pub image: &'a str,
    /// The layer's descriptor, when the manifest gives one (digest and size
    /// of the compressed blob); `name` is used in messages otherwise.
    pub blob: Option<&'a Descriptor>,
    pub name: &'a str,
    /// The diff_id the image config lists for the layer.
    pub diff_id: &'a str,
}

impl LayerRef<'_> {
    fn refused(&self, source: VerifyError) -> LayerError {
        let layer = self.blob.map_or(self.name, |b| b.digest.as_str()).to_string();
        LayerError::Refused { image: Some(self.image.to_string()), layer, source }
    }
}

/// A layer blob received and verified, not yet in the store.
pub struct VerifiedLayer {
    writer: BlobWriter,
    format: Format,
    diff_id: String,
    uncompressed: u64,
    expected: Option<(String, u64)>,
    records: PathBuf,
    tmp_dir: PathBuf,
}

impl VerifiedLayer {
    /// The compressed blob's digest.
    pub fn digest(&self) -> String {
        self.writer.digest()
    }

    pub fn size(&self) -> u64 {
        self.writer.size()
    }

    /// The compression the blob's magic bytes announced.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Places the blob in the store (checking it against the descriptor, if
    /// one was given) and records its verified diff_id.
    pub fn commit(self) -> Result<(String, u64), StoreError> {
        let (digest, size) = match &self.expected {
            Some((digest, size)) => self.writer.commit_expecting(digest, Some(*size))?,
            None => self.writer.commit()?,
        };
        write_record(&self.records, &self.tmp_dir, &digest, &self.diff_id, Some(self.uncompressed))?;
        Ok((digest, size))
    }
}

/// Copies what it reads into a blob writer, keeping the writer's error apart
/// from the source's.
struct Tee<'s, 'w, R> {
    src: &'s mut R,
    out: &'w mut BlobWriter,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "writing the blob failed"));
        }
        Ok(n)
    }
}

impl Store {
    /// Streams a layer blob from `src` into a temp file while verifying it
    /// (see the module notes). The caller checks what it wants of the result
    /// and commits it; dropped, nothing is kept. When the content is refused
    /// and the compressed bytes do not match the descriptor either, the
    /// digest mismatch is reported: the blob is not the one the manifest
    /// names, whatever it holds.
    pub fn receive_layer<R: Read>(&self, src: &mut R, layer: LayerRef<'_>) -> Result<VerifiedLayer, LayerError> {
        let mut writer = self.blob_writer()?;
        let mut tee = Tee { src, out: &mut writer, write_error: None };
        let verdict = match LayerReader::new(&mut tee) {
            Ok(reader) => {
                let format = reader.format();
                reader.finish_expecting_counted(layer.diff_id).map(|(bytes, _)| (format, bytes))
            }
            Err(e) => Err(e),
        };
        let Tee { src, write_error, .. } = tee;
        if let Some(source) = write_error {
            return Err(StoreError::Io { action: "write blob into", path: self.tmp_dir(), source }.into());
        }
        let (format, uncompressed) = match verdict {
            Ok(found) => found,
            Err(e @ VerifyError::Read(_)) => return Err(layer.refused(e)),
            Err(e) => {
                // Read the rest of the blob (no more than the manifest says it
                // has) to tell a wrong blob from a forged layer.
                if let Some(blob) = layer.blob {
                    let left = blob.size.saturating_sub(writer.size()).saturating_add(1);
                    let rest = io::copy(&mut (&mut *src).take(left), &mut writer);
                    if rest.is_ok() && (writer.digest() != blob.digest || writer.size() != blob.size) {
                        let actual = writer.digest();
                        return Err(StoreError::DigestMismatch { expected: blob.digest.clone(), actual }.into());
                    }
                }
                return Err(layer.refused(e));
            }
        };
        Ok(VerifiedLayer {
            writer,
            format,
            diff_id: layer.diff_id.to_string(),
            uncompressed,
            expected: layer.blob.map(|b| (b.digest.clone(), b.size)),
            records: self.records_dir(),
            tmp_dir: self.tmp_dir(),
        })
    }

    /// Checks a layer blob already in the store against the diff_id an image
    /// claims for it: by its record, or by reading it whole (and then
    /// recording it).
    pub fn check_layer(&self, layer: LayerRef<'_>) -> Result<(), LayerError> {
        let blob = layer.blob.map_or(layer.name, |b| b.digest.as_str());
        if let Some(known) = self.verified_diff_id(blob) {
            if known == layer.diff_id {
                return Ok(());
            }
            return Err(layer.refused(VerifyError::DiffId { expected: layer.diff_id.to_string(), actual: known }));
        }
        self.verify_and_record(blob, layer).map(|_| ())
    }

    /// Reads a stored blob whole, checks it against `layer.diff_id` and
    /// records both; returns the uncompressed size.
    fn verify_and_record(&self, blob: &str, layer: LayerRef<'_>) -> Result<u64, LayerError> {
        let file = self.open_blob(blob)?;
        let (bytes, _) = LayerReader::new(BufReader::with_capacity(256 * 1024, file))
            .and_then(|r| r.finish_expecting_counted(layer.diff_id))
            .map_err(|e| layer.refused(e))?;
        write_record(&self.records_dir(), &self.tmp_dir(), blob, layer.diff_id, Some(bytes))?;
        Ok(bytes)
    }

    /// A layer's uncompressed size: a plain tar's own size, else the size
    /// recorded when the blob was verified, else (a record from before
    /// sizes were kept, a layer compressed at commit) read whole once,
    /// checked against `diff_id` and recorded.
    pub fn uncompressed_size(&self, layer: &Descriptor, diff_id: &str) -> Result<u64, LayerError> {
        use crate::image::manifest::{DOCKER_LAYER_TAR, OCI_LAYER_TAR};
        if layer.media_type == OCI_LAYER_TAR || layer.media_type == DOCKER_LAYER_TAR {
            return Ok(layer.size);
        }
        if let Some((known, Some(bytes))) = self.verified_record(&layer.digest) {
            if known == diff_id {
                return Ok(bytes);
            }
        }
        let check = LayerRef { image: "", blob: Some(layer), name: &layer.digest, diff_id };
        self.verify_and_record(&layer.digest, check)
    }

    /// The diff_id verified for a blob in the store, if one was.
    pub fn verified_diff_id(&self, blob: &str) -> Option<String> {
        self.verified_record(blob).map(|(diff_id, _)| diff_id)
    }

    /// A blob's record: its verified diff_id and, when recorded, its uncompressed size.
    fn verified_record(&self, blob: &str) -> Option<(String, Option<u64>)> {
        let hex = sha256_hex(blob)?;
        let text = fs::read_to_string(self.records_dir().join(hex)).ok()?;
        let mut words = text.split_whitespace();
        let diff_id = words.next()?;
        let size = words.next().and_then(|w| w.parse().ok());
        sha256_hex(diff_id).is_some().then(|| (diff_id.to_string(), size))
    }

    /// Forgets what was verified about a blob (it is being removed).
    pub(crate) fn forget_diff_id(&self, blob: &str) {
        if let Some(hex) = sha256_hex(blob) {
            let _ = fs::remove_file(self.records_dir().join(hex));
        }
    }

    fn records_dir(&self) -> PathBuf {
        self.private_dir().join(RECORDS_DIR)
    }
}

fn write_record(
    dir: &std::path::Path,
    tmp_dir: &std::path::Path,
    blob: &str,
    diff_id: &str,
    uncompressed: Option<u64>,
) -> Result<(), StoreError> {
    let hex = sha256_hex(blob).ok_or_else(|| StoreError::InvalidDigest { digest: blob.to_string() })?;
    fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let text = match uncompressed {
        Some(bytes) => format!("{diff_id} {bytes}\n"),
        None => format!("{diff_id}\n"),
    };
    index::write_atomic(&dir.join(hex), tmp_dir, text.as_bytes())
}
