//! Blob transfers on worker threads, reported from the thread that started
//! them (the command line draws a bar per blob on a terminal, plain lines
//! otherwise).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

use super::error::RegistryError;
use crate::progress::{Reporter, Transfer};

/// At most this many blobs move at once.
const WORKERS: usize = 4;

pub enum Event {
    Start { digest: String, size: u64 },
    Bytes { digest: String, done: u64 },
    Done { digest: String, note: &'static str },
}

/// Runs `job` on every item, several at a time, reporting each blob's
/// progress to `progress` (when `show`); the first error stops the others
/// from starting new items and is returned.
pub fn run_parallel<T: Sync>(
    items: &[T],
    verb: &'static str,
    show: bool,
    progress: &dyn Reporter,
    job: impl Fn(&T, &Sender<Event>) -> Result<(), RegistryError> + Sync,
) -> Result<(), RegistryError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    let (tx, rx) = channel::<Event>();
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(items.len()) {
            let tx = tx.clone();
            let (next, failed, first_error, job) = (&next, &failed, &first_error, &job);
            scope.spawn(move || loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                if let Err(e) = job(item, &tx) {
                    failed.store(true, Ordering::SeqCst);
                    first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    return;
                }
            });
        }
        drop(tx);
        for event in rx {
            if show {
                progress.report(crate::progress::Event::Transfer(transfer(verb, event)));
            }
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn transfer(verb: &'static str, event: Event) -> Transfer {
    match event {
        Event::Start { digest, size } => Transfer::Started { verb, digest, size },
        Event::Bytes { digest, done } => Transfer::Progress { digest, done },
        Event::Done { digest, note } => Transfer::Finished { verb, digest, note },
    }
}
