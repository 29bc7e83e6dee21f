//! Blob transfers on worker threads, reported to the thread that owns the
//! output: a bar per blob on a terminal, plain lines otherwise.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

use super::error::RegistryError;

/// At most this many blobs move at once.
const WORKERS: usize = 4;

pub enum Event {
    Start { digest: String, size: u64 },
    Bytes { digest: String, done: u64 },
    Done { digest: String, note: &'static str },
}

/// Runs `job` on every item, several at a time; the first error stops the
/// others from starting new items and is returned.
pub fn run_parallel<T: Sync>(
    items: &[T],
    verb: &str,
    show: bool,
    out: &mut dyn Write,
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
        let mut view = View::new(verb, show);
        for event in rx {
            if show {
                view.show(&event, out);
            }
        }
        view.finish();
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct View {
    verb: String,
    bars: Option<(indicatif::MultiProgress, std::collections::HashMap<String, indicatif::ProgressBar>)>,
}

impl View {
    /// Bars when shown on a terminal.
    fn new(verb: &str, bars: bool) -> View {
        use std::io::IsTerminal;
        let bars =
            (bars && std::io::stderr().is_terminal()).then(|| (indicatif::MultiProgress::new(), Default::default()));
        View { verb: verb.to_string(), bars }
    }

    fn show(&mut self, event: &Event, out: &mut dyn Write) {
        match (&mut self.bars, event) {
            (Some((multi, bars)), Event::Start { digest, size }) => {
                let bar = multi.add(indicatif::ProgressBar::new(*size));
                let style =
                    indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(format!("{} blob {}", self.verb, short(digest)));
                bars.insert(digest.clone(), bar);
            }
            (Some((_, bars)), Event::Bytes { digest, done }) => {
                if let Some(bar) = bars.get(digest) {
                    bar.set_position(*done);
                }
            }
            (Some((multi, bars)), Event::Done { digest, note }) => match bars.get(digest) {
                Some(bar) => bar.finish_with_message(format!("{} blob {} {}", self.verb, short(digest), note)),
                None => {
                    let _ = multi.println(format!("{} blob {} {}", self.verb, short(digest), note));
                }
            },
            (None, Event::Start { digest, size }) => {
                let _ = writeln!(out, "{} blob {} ({})", self.verb, short(digest), crate::humanize::human_size(*size));
            }
            (None, Event::Bytes { .. }) => {}
            (None, Event::Done { digest, note }) => {
                let _ = writeln!(out, "{} blob {} {}", self.verb, short(digest), note);
            }
        }
    }

    fn finish(self) {
        // Finished bars stay on screen with their final message.
        drop(self.bars);
    }
}

pub fn short(digest: &str) -> &str {
    crate::humanize::short(digest)
}
