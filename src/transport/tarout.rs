//! Deterministic tar output: ustar headers with zero timestamps, root
//! ownership and fixed modes, so the same images give the same archive.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use tempfile::NamedTempFile;

use kiln_overlay::digest::HashingReader;

use super::{make_readable, TransportError};
use crate::store::Store;

pub struct TarOut<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarOut<W> {
    pub fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Deterministic);
        TarOut { builder }
    }

    pub fn dir(&mut self, name: &str) -> Result<(), TransportError> {
        let header = header(tar::EntryType::Directory, 0o755, 0);
        self.append(header, name, io::empty())
    }

    pub fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), TransportError> {
        self.reader(name, bytes.len() as u64, bytes)
    }

    /// Appends `size` bytes from `reader` as a regular file.
    pub fn reader(&mut self, name: &str, size: u64, reader: impl Read) -> Result<(), TransportError> {
        let header = header(tar::EntryType::Regular, 0o644, size);
        self.append(header, name, reader)
    }

    /// Appends a store blob, checking its digest as it streams.
    pub fn store_blob(&mut self, store: &Store, digest: &str, name: &str) -> Result<(), TransportError> {
        self.store_blob_reporting(store, digest, name, &crate::progress::Silent)
    }

    /// [`TarOut::store_blob`], reporting how much of it was written.
    pub fn store_blob_reporting(
        &mut self,
        store: &Store,
        digest: &str,
        name: &str,
        progress: &dyn crate::progress::Reporter,
    ) -> Result<(), TransportError> {
        let file = store.open_blob(digest)?;
        let size = file
            .metadata()
            .map_err(|source| TransportError::Io { action: "stat", path: store.blob_path(digest), source })?
            .len();
        let mut reader = HashingReader::new(crate::progress::ProgressReader::new(file, progress, digest));
        self.reader(name, size, &mut reader)?;
        super::check_store_blob(store, digest, reader.digest())?;
        Ok(())
    }

    pub fn finish(self) -> Result<(), TransportError> {
        self.builder.into_inner().and_then(|mut w| w.flush()).map_err(|source| TransportError::Io {
            action: "finish archive",
            path: "archive".into(),
            source,
        })
    }

    fn append(&mut self, mut header: tar::Header, name: &str, reader: impl Read) -> Result<(), TransportError> {
        self.builder.append_data(&mut header, name, reader).map_err(|source| TransportError::Io {
            action: "write archive entry",
            path: name.into(),
            source,
        })
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Runs `write` into a temp file next to `dest` and renames it over `dest`
/// only if it succeeded.
pub fn write_file_atomically(
    dest: &Path,
    write: impl FnOnce(&mut io::BufWriter<&File>) -> Result<(), TransportError>,
) -> Result<(), TransportError> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| TransportError::Io { action, path: p, source }
    };
    let tmp = NamedTempFile::with_prefix_in(".kiln-tmp-", dir).map_err(io_err("create temp file in", dir))?;
    {
        let mut out = io::BufWriter::with_capacity(256 * 1024, tmp.as_file());
        write(&mut out)?;
        out.flush().map_err(io_err("write", dest))?;
    }
    make_readable(&tmp, dest)?;
    tmp.as_file().sync_all().map_err(io_err("fsync", dest))?;
    tmp.persist(dest).map_err(|e| TransportError::Io {
        action: "rename archive into",
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
