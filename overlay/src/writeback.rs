//! A big file written for keeps (a blob, an export's copy) is handed to the disk while it is written, not
//! all at once by the fsync at its end: every [`WINDOW`] bytes, writeback of the window just filled is
//! started without waiting. The final fsync then waits only for the tail, and the disk works while the
//! writer is still hashing, taring or compressing. Durability is unchanged: the caller still fsyncs.

use std::fs::File;
use std::io::{self, Write};

use crate::sys;

/// How much is written between two writeback starts: big enough that the calls cost nothing, small enough
/// that the disk starts early.
pub const WINDOW: u64 = 8 << 20;

/// A [`File`] whose written bytes are handed to the disk every [`WINDOW`] bytes.
#[derive(Debug)]
pub struct WritebackFile {
    file: File,
    written: u64,
    handed: u64,
    /// Cleared when the filesystem refuses sync_file_range (some FUSE and network filesystems): the final
    /// fsync then does all the work, as without this type.
    enabled: bool,
}

impl WritebackFile {
    /// Wraps `file`, assumed empty and written from its start.
    pub fn new(file: File) -> Self {
        WritebackFile { file, written: 0, handed: 0, enabled: true }
    }

    /// The file, for its metadata and the final fsync.
    pub fn get_ref(&self) -> &File {
        &self.file
    }

    pub fn into_inner(self) -> File {
        self.file
    }

    fn hand_over(&mut self) {
        if !self.enabled || self.written == self.handed {
            return;
        }
        if sys::start_writeback(&self.file, self.handed, self.written - self.handed).is_err() {
            self.enabled = false;
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
        w.get_ref().sync_all().unwrap();
        drop(w);
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), chunk.len() * rounds);
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
    }
}
