//! A new layer's blob (RUN, COPY, WORKDIR, squash), written through a [`kiln_overlay::LayerWriter`] that
//! hashes every byte it writes here: the blob's digest is the one in its [`LayerInfo`], so it is not hashed
//! a second time. A big layer is written to disk by a thread of its own while the caller walks, tars and
//! hashes, so a commit costs about the longer of the two, not their sum.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use kiln_overlay::LayerInfo;

use super::blobs::{sha256_hex, BlobWriter};
use super::StoreError;

/// Below this many bytes a layer is written on the caller's thread: most layers are small, and a thread
/// would cost more than it saves.
const THREAD_FROM: u64 = 1 << 20;
/// Chunks queued for the writer thread: enough to ride out a slow write, little memory.
const QUEUED: usize = 8;

/// A new layer's blob; nothing is visible in the store until [`LayerBlobWriter::commit`], and dropping it
/// uncommitted removes the temp file.
pub struct LayerBlobWriter {
    /// The blob while it is written on the caller's thread.
    blob: Option<BlobWriter>,
    pipe: Option<Pipe>,
    size: u64,
    /// The blob's temp file, for errors of the writer thread.
    tmp_path: PathBuf,
}

/// The writer thread and the queues to and from it.
struct Pipe {
    chunks: Option<SyncSender<Vec<u8>>>,
    /// Written chunks coming back for reuse.
    spare: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<BlobWriter>>>,
}

impl Pipe {
    fn start(mut blob: BlobWriter) -> io::Result<Pipe> {
        let (chunks, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
        let (back, spare) = mpsc::sync_channel::<Vec<u8>>(QUEUED + 2);
        let thread = std::thread::Builder::new().name("kiln-blob".into()).spawn(move || {
            for chunk in rx {
                blob.write_all(&chunk)?;
                let _ = back.try_send(chunk);
            }
            Ok(blob)
        })?;
        Ok(Pipe { chunks: Some(chunks), spare, thread: Some(thread) })
    }

    /// Waits for the thread to write everything queued and returns the blob, or the error that stopped it.
    fn finish(&mut self) -> io::Result<BlobWriter> {
        self.chunks.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Err(io::Error::other("the layer blob's writer thread was already finished")),
        }
    }
}

impl Drop for Pipe {
    /// An abandoned blob: the thread ends with the queue and removes the temp file as its blob is dropped.
    fn drop(&mut self) {
        self.chunks.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LayerBlobWriter {
    pub(crate) fn new(tmp_dir: &Path, blob_dir: PathBuf) -> Result<Self, StoreError> {
        let mut blob = BlobWriter::new(tmp_dir, blob_dir)?;
        blob.hasher = None;
        let tmp_path = blob.tmp_path();
        Ok(LayerBlobWriter { blob: Some(blob), pipe: None, size: 0, tmp_path })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Moves the blob into place under the digest its layer writer computed, after checking the size
    /// agrees, and returns its digest and size.
    pub fn commit(mut self, info: &LayerInfo) -> Result<(String, u64), StoreError> {
        if sha256_hex(&info.digest).is_none() {
            return Err(StoreError::InvalidDigest { digest: info.digest.clone() });
        }
        let blob = match (self.blob.take(), self.pipe.as_mut()) {
            (Some(blob), _) => blob,
            (None, Some(pipe)) => pipe.finish().map_err(|source| StoreError::Io {
                action: "write",
                path: self.tmp_path.clone(),
                source,
            })?,
            (None, None) => unreachable!("a layer blob writer has its blob or its thread"),
        };
        if info.size != blob.size {
            return Err(StoreError::SizeMismatch {
                digest: info.digest.clone(),
                expected: info.size,
                actual: blob.size,
            });
        }
        let size = blob.size;
        blob.place(&info.digest)?;
        Ok((info.digest.clone(), size))
    }
}

impl Write for LayerBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(blob) = &mut self.blob {
            if self.size + buf.len() as u64 <= THREAD_FROM {
                let n = blob.write(buf)?;
                self.size += n as u64;
                return Ok(n);
            }
            let blob = self.blob.take().expect("checked above");
            self.pipe = Some(Pipe::start(blob)?);
        }
        let pipe = self.pipe.as_mut().expect("a layer blob writer has its blob or its thread");
        let mut chunk = pipe.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(buf.len()));
        chunk.clear();
        chunk.extend_from_slice(buf);
        let sent = pipe.chunks.as_ref().map(|tx| tx.send(chunk));
        if !matches!(sent, Some(Ok(()))) {
            // The thread stopped on an error (a full disk, an interrupt): that error is the answer.
            return Err(pipe
                .finish()
                .err()
                .unwrap_or_else(|| io::Error::other("the layer blob's writer thread ended")));
        }
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    /// Data queued for the writer thread reaches the file by [`LayerBlobWriter::commit`], which is what
    /// makes the blob whole; there is nothing to push through here.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.blob {
            Some(blob) => blob.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_overlay::{Compression, LayerWriter};

    fn store() -> (tempfile::TempDir, super::super::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    /// A small and a big layer (the big one through the writer thread) land whole under their digests.
    #[test]
    fn small_and_threaded_layers_commit_whole() {
        let (_dir, store) = store();
        for len in [10usize, 5 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut w = LayerWriter::new(store.layer_blob_writer().unwrap(), Compression::None).unwrap();
            let mut meta = kiln_overlay::EntryMeta::new("data", kiln_overlay::EntryKind::File);
            meta.size = len as u64;
            w.append(&meta, Some(&mut &data[..])).unwrap();
            let (blob, info) = w.finish().unwrap();
            assert_eq!(blob.size(), info.size);
            let (digest, size) = blob.commit(&info).unwrap();
            assert_eq!((digest.as_str(), size), (info.digest.as_str(), info.size));
            let bytes = std::fs::read(store.blob_path(&digest)).unwrap();
            assert_eq!(super::super::sha256_digest(&bytes), digest);
            assert_eq!(bytes.len() as u64, size);
        }
    }

    /// A size that disagrees with what was written stores nothing.
    #[test]
    fn a_wrong_size_stores_nothing() {
        let (_dir, store) = store();
        let mut w = store.layer_blob_writer().unwrap();
        w.write_all(&vec![1u8; 3 << 20]).unwrap();
        let info = LayerInfo {
            diff_id: super::super::sha256_digest(b"x"),
            digest: super::super::sha256_digest(b"x"),
            size: 5,
            compression: Compression::None,
        };
        assert!(matches!(w.commit(&info), Err(StoreError::SizeMismatch { .. })));
        assert!(!store.has_blob(&info.digest));
    }
}
