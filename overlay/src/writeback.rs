//! A big file written for keeps (a blob, an export's copy) is made durable while it is written, not all at
//! once by the fsync at its end: every [`WINDOW`] bytes, a thread of its own runs fdatasync on what is
//! there so far. On a virtual disk the final fsync's cost is mostly the flush of everything written since
//! the last one (measured here: 0.3 s for 196 MiB at the end, 0.01 s with syncs along the way), so the
//! disk then works while the writer is still taring, hashing or compressing. Durability is unchanged: the
//! caller still fsyncs the whole file at the end; the syncs on the way only leave that one less to do.

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

/// How much is written between two syncs: big enough that a sync is worth its fixed cost, small enough
/// that the disk starts early.
pub const WINDOW: u64 = 16 << 20;

/// A [`File`] synced in the background every [`WINDOW`] bytes.
#[derive(Debug)]
pub struct WritebackFile {
    file: File,
    written: u64,
    handed: u64,
    syncer: Option<Syncer>,
}

/// The thread that syncs, and the queue that asks it to (one request at most: a sync still running when
/// the next window fills covers part of it, and the next request catches up).
#[derive(Debug)]
struct Syncer {
    requests: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// `None` when the file cannot be duplicated or no thread started: then the final fsync does all the
    /// work, as without this type.
    fn start(file: &File) -> Option<Syncer> {
        let file = file.try_clone().ok()?;
        let (requests, rx) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("kiln-sync".into())
            .spawn(move || {
                for () in rx {
                    // Errors show again at the caller's own fsync, which is what reports them.
                    let _ = file.sync_data();
                }
            })
            .ok()?;
        Some(Syncer { requests: Some(requests), thread: Some(thread) })
    }

    fn request(&self) {
        if let Some(tx) = &self.requests {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for Syncer {
    /// Waits for a sync in progress, so none outlives the file's owner (who may rename or remove it next).
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl WritebackFile {
    /// Wraps `file`, assumed empty and written from its start.
    pub fn new(file: File) -> Self {
        WritebackFile { file, written: 0, handed: 0, syncer: None }
    }

    /// The file, for its metadata and the final fsync.
    pub fn get_ref(&self) -> &File {
        &self.file
    }

    /// The file, once no background sync is running.
    pub fn into_inner(mut self) -> File {
        self.syncer.take();
        self.file
    }

    fn hand_over(&mut self) {
        if self.syncer.is_none() {
            self.syncer = Syncer::start(&self.file);
        }
        if let Some(syncer) = &self.syncer {
            syncer.request();
        }
        self.handed = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.handed >= WINDOW {
            self.hand_over();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The bytes land as written, across windows and with a tail shorter than one.
    #[test]
    fn writes_every_byte_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let mut w = WritebackFile::new(File::create(&path).unwrap());
        let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let rounds = (2 * WINDOW as usize) / chunk.len() + 2;
        for _ in 0..rounds {
            w.write_all(&chunk).unwrap();
        }
        assert!(w.handed >= 2 * WINDOW && w.handed <= w.written, "{} of {}", w.handed, w.written);
        assert!(w.syncer.is_some(), "a file past one window is synced along the way");
        w.get_ref().sync_all().unwrap();
        let file = w.into_inner();
        drop(file);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), chunk.len() * rounds);
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }

    /// A small file starts no thread.
    #[test]
    fn a_small_file_is_left_to_the_final_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WritebackFile::new(File::create(dir.path().join("small")).unwrap());
        w.write_all(&[7u8; 4096]).unwrap();
        assert!(w.syncer.is_none());
    }
}
