//! The worker threads of [`super::ParGzEncoder`]: one queue of blocks to compress, each with the
//! channel its result goes back on, and the buffers coming back for reuse.

use std::io;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Deflater;

pub(super) struct Job {
    pub(super) dict: Vec<u8>,
    pub(super) data: Vec<u8>,
    /// An emptied output buffer to fill (recycled, as `dict` and `data` are: a fresh ~256 KiB allocation
    /// per block costs page faults and zeroing in the kernel).
    pub(super) out: Vec<u8>,
    pub(super) last: bool,
    pub(super) reply: SyncSender<io::Result<Done>>,
}

pub(super) struct Done {
    pub(super) out: Vec<u8>,
    pub(super) crc: crc32fast::Hasher,
    /// The job's input buffers, back for reuse.
    pub(super) dict: Vec<u8>,
    pub(super) data: Vec<u8>,
}

/// Worker threads that take jobs from one queue; each job carries the channel its result goes back on.
pub(super) struct Pool {
    pub(super) jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(super) fn new(threads: usize, level: u32) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let handle = std::thread::Builder::new().name(format!("kiln-gzip-{i}")).spawn(move || {
                let mut d = Deflater::new(level);
                loop {
                    // The lock is held only while waiting for the next job, never while compressing.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let Job { dict, data, mut out, last, reply } = job;
                    let res = d.block(&dict, &data, last, &mut out).map(|crc| Done { out, crc, dict, data });
                    // The encoder may have been dropped meanwhile; then nobody wants the result.
                    let _ = reply.send(res);
                }
            })?;
            workers.push(handle);
        }
        Ok(Pool { jobs: Some(tx), workers })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends every worker after its current block.
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
