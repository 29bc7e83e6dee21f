//! Content-addressed blobs: written to a temp file while hashed, fsynced,
//! then renamed into `blobs/sha256/<hex>`. A killed writer leaves only its
//! temp file behind; a blob path never holds partial content. A big blob is
//! synced along the way while it is written ([`WritebackFile`]), so the
//! final fsync waits only for its tail.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_overlay::WritebackFile;
use sha2::{Digest as _, Sha256};
use tempfile::{NamedTempFile, TempPath};

use super::StoreError;

/// The hex part of a `sha256:<64 lowercase hex>` digest, or `None` if the
/// digest is not one.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

/// `sha256:<hex>` of `bytes` (one home: the layer crate's digests).
pub use kiln_overlay::digest::sha256_digest;

/// Writes a blob; nothing is visible in the store until [`BlobWriter::commit`].
/// Dropping it uncommitted removes the temp file.
pub struct BlobWriter {
    file: io::BufWriter<WritebackFile>,
    tmp: TempPath,
    /// `None` in a [`super::LayerBlobWriter`], whose layer writer hashes the same bytes.
    pub(super) hasher: Option<Sha256>,
    pub(super) size: u64,
    blob_dir: PathBuf,
}

impl BlobWriter {
    pub(crate) fn new(tmp_dir: &Path, blob_dir: PathBuf) -> Result<Self, StoreError> {
        let tmp = NamedTempFile::with_prefix_in("blob-", tmp_dir).map_err(|source| StoreError::Io {
            action: "create temp file in",
            path: tmp_dir.to_path_buf(),
            source,
        })?;
        let (file, tmp) = tmp.into_parts();
        Ok(BlobWriter {
            file: io::BufWriter::with_capacity(256 * 1024, WritebackFile::new(file)),
            tmp,
            hasher: Some(Sha256::new()),
            size: 0,
            blob_dir,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temp file being written.
    pub(super) fn tmp_path(&self) -> PathBuf {
        self.tmp.to_path_buf()
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> String {
        let hasher = self.hasher.clone().expect("a BlobWriter hashes what it writes");
        format!("sha256:{}", hex::encode(hasher.finalize()))
    }

    /// Moves the blob into place and returns its digest and size. If the store
    /// already has the blob, the temp file is discarded.
    pub fn commit(self) -> Result<(String, u64), StoreError> {
        let digest = self.digest();
        let size = self.size;
        self.place(&digest)?;
        Ok((digest, size))
    }

    /// Like [`commit`](Self::commit), but first checks the content against an
    /// expected digest (and size); on a mismatch nothing is stored.
    pub fn commit_expecting(self, expected: &str, size: Option<u64>) -> Result<(String, u64), StoreError> {
        if sha256_hex(expected).is_none() {
            return Err(StoreError::InvalidDigest { digest: expected.to_string() });
        }
        if let Some(expected_size) = size {
            if expected_size != self.size {
                return Err(StoreError::SizeMismatch {
                    digest: expected.to_string(),
                    expected: expected_size,
                    actual: self.size,
                });
            }
        }
        let actual = self.digest();
        if actual != expected {
            return Err(StoreError::DigestMismatch { expected: expected.to_string(), actual });
        }
        let size = self.size;
        self.place(&actual)?;
        Ok((actual, size))
    }

    pub(super) fn place(self, digest: &str) -> Result<(), StoreError> {
        let hex = sha256_hex(digest).ok_or_else(|| StoreError::InvalidDigest { digest: digest.to_string() })?;
        let dest = self.blob_dir.join(hex);
        if dest.exists() {
            return Ok(()); // the temp file goes with `self`
        }
        let tmp_path = self.tmp.to_path_buf();
        let file = self.file.into_inner().map_err(|e| StoreError::Io {
            action: "write",
            path: tmp_path.clone(),
            source: e.into_error(),
        })?;
        let file = file.into_inner();
        // Blobs are content, readable like any file a user writes (temp files start 0600).
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|source| StoreError::Io {
            action: "chmod",
            path: tmp_path.clone(),
            source,
        })?;
        file.sync_all().map_err(|source| StoreError::Io { action: "fsync", path: tmp_path, source })?;
        drop(file);
        crate::fault::point("blob-rename-before");
        self.tmp.persist(&dest).map_err(|e| StoreError::Io {
            action: "rename blob into",
            path: dest.clone(),
            source: e.error,
        })?;
        crate::fault::point("blob-rename-after");
        sync_dir(&self.blob_dir)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Every long copy into the store (a pull, a commit) passes here: an
        // interrupted kiln stops at the next write and drops the temp file.
        kiln_runtime::lifetime::check_interrupted()?;
        crate::fault::point("blob-write");
        let n = self.file.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| StoreError::Io {
        action: "fsync directory",
        path: dir.to_path_buf(),
        source,
    })
}
