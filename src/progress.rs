//! Progress of long work (builds, pulls, pushes, exports) as typed events.
//!
//! The engine and the registry code report what happens through a
//! [`Reporter`]; the command line decides how it looks (docker's
//! `--progress=plain|tty|quiet`: lines, a live view redrawn in place, or
//! nothing). Nothing in the library prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

/// Which step an event is about: its stage's position among the stages
/// being built (only when there are several) and its number in the stage
/// (the FROM is step 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepRef {
    /// (position, count) of the stage among the stages built.
    pub stage: Option<(usize, usize)>,
    pub number: usize,
    pub total: usize,
}

impl StepRef {
    /// `[2/3] ` before each line of a multi-stage build, empty otherwise.
    pub fn prefix(&self) -> String {
        match self.stage {
            Some((n, count)) => format!("[{n}/{count}] "),
            None => String::new(),
        }
    }
}

/// What a committed layer holds, as the step's summary line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerContents {
    /// A RUN's changes.
    Changes,
    /// COPY or ADD: this many files.
    Files(usize),
    /// WORKDIR creating missing directories.
    Directories { count: usize, instruction: String },
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step starts (for the FROM: its base is being resolved).
    StepStarted { step: StepRef, instruction: String },
    /// The FROM's image was found (in the store, or pulled).
    BaseImage { step: StepRef, reference: String, id: String },
    /// The step's result came from the cache.
    /// `id` is the step's image id (none for config-only steps); for a hit
    /// from a shared cache, which `from` names (`registry`, `local`), it is
    /// the cache key (the step's image is written once its layers are here).
    CacheHit { step: StepRef, id: Option<String>, from: Option<String> },
    /// Why a step the same Dockerfile built before runs again.
    CacheMiss { step: StepRef, reason: String },
    /// A line the RUN command wrote (stdout or stderr).
    Output { step: StepRef, line: String },
    /// Committing a step's layer: `written` bytes of it are in the store
    /// after `elapsed` of committing.
    Committing { step: StepRef, written: u64, elapsed: Duration },
    /// A step's layer is in the store.
    /// `id` is the step's image id (what `kiln run` and `FROM` take).
    Layer { step: StepRef, id: String, size: u64, contents: LayerContents, elapsed: Duration },
    /// A step is done (every step, including config-only ones and cache hits).
    StepFinished { step: StepRef, cached: bool, elapsed: Duration },
    /// `--squash`/`--layers=false` merged a stage's layers into this one.
    Squashed { digest: String, size: u64 },
    /// The image is written.
    Built { image_id: String, new_layer_bytes: u64, elapsed: Duration },
    /// A blob moving (pulled, pushed, exported).
    Transfer(Transfer),
    /// A line of its own ("Pulling …", "Writing manifest to image destination").
    Note(String),
}

/// A blob moving between the store and elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub enum Transfer {
    Started {
        verb: &'static str,
        digest: String,
        size: u64,
    },
    /// `done` bytes of the blob have moved.
    Progress {
        digest: String,
        done: u64,
    },
    /// `note` says how it ended ("done", "skipped: already exists", …).
    Finished {
        verb: &'static str,
        digest: String,
        note: &'static str,
    },
}

/// Where progress goes. Called from the threads doing the work (several at
/// once when stages or blobs move in parallel).
pub trait Reporter: Sync {
    fn report(&self, event: Event);

    /// Whether RUN output reported here stays readable. A live view shows
    /// only the last lines of a running step, so a failing step then carries
    /// the tail of its output in its error.
    fn keeps_output(&self) -> bool {
        true
    }
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event) {}

    fn keeps_output(&self) -> bool {
        false
    }
}

/// A reader that reports how far it got as a [`Transfer::Progress`] of
/// `digest`, at most every `step` bytes (so a fast copy does not flood the
/// view).
pub struct ProgressReader<'r, R> {
    inner: R,
    reporter: &'r dyn Reporter,
    digest: String,
    done: u64,
    reported: u64,
}

/// How many bytes pass between two progress reports of one blob.
const REPORT_EVERY: u64 = 1 << 20;

impl<'r, R> ProgressReader<'r, R> {
    pub fn new(inner: R, reporter: &'r dyn Reporter, digest: &str) -> Self {
        ProgressReader { inner, reporter, digest: digest.to_string(), done: 0, reported: 0 }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= REPORT_EVERY || (n == 0 && self.done > self.reported) {
            self.reported = self.done;
            self.reporter.report(Event::Transfer(Transfer::Progress { digest: self.digest.clone(), done: self.done }));
        }
        Ok(n)
    }
}

/// Counts the bytes written through it, so another thread can show how a
/// commit is going (a layer writer owns its output for the whole commit).
pub struct CountingWriter<W> {
    inner: W,
    written: Arc<AtomicU64>,
}

impl<W> CountingWriter<W> {
    /// The writer and the count it keeps.
    pub fn new(inner: W) -> (Self, Arc<AtomicU64>) {
        let written = Arc::new(AtomicU64::new(0));
        (CountingWriter { inner, written: written.clone() }, written)
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: std::io::Write> std::io::Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Layers smaller than this commit too fast to be worth a progress line.
const COMMIT_SHOWN_FROM: u64 = 8 << 20;

/// Runs `work` (a commit writing through the [`CountingWriter`] whose count
/// is `written`) while reporting [`Event::Committing`] for `step` twice a
/// second once the layer is big enough to take a while, and once more at
/// the end for such a layer (its size and rate, whatever the timing).
pub fn with_commit_progress<T>(
    reporter: &dyn Reporter,
    step: &StepRef,
    written: &AtomicU64,
    work: impl FnOnce() -> T,
) -> T {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(Duration::from_millis(500)) {
                let n = written.load(Ordering::Relaxed);
                if n >= COMMIT_SHOWN_FROM {
                    reporter.report(Event::Committing { step: step.clone(), written: n, elapsed: started.elapsed() });
                }
            }
        });
        let out = work();
        drop(done);
        let n = written.load(Ordering::Relaxed);
        if n >= COMMIT_SHOWN_FROM {
            reporter.report(Event::Committing { step: step.clone(), written: n, elapsed: started.elapsed() });
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Mutex;

    struct Collect(Mutex<Vec<Event>>);
    impl Reporter for Collect {
        fn report(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    #[test]
    fn readers_report_every_megabyte_and_the_end() {
        let events = Collect(Mutex::new(Vec::new()));
        let data = vec![7u8; (REPORT_EVERY as usize) * 2 + 10];
        let mut r = ProgressReader::new(&data[..], &events, "sha256:ab");
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        let done: Vec<u64> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                Event::Transfer(Transfer::Progress { done, .. }) => *done,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(done.last(), Some(&(data.len() as u64)), "{done:?}");
        assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
        assert!(done.len() <= 4, "{done:?}");
    }

    #[test]
    fn counting_writers_count_what_passes() {
        let (mut w, written) = CountingWriter::new(Vec::new());
        w.write_all(&[0u8; 1000]).unwrap();
        w.write_all(b"abc").unwrap();
        assert_eq!(written.load(Ordering::Relaxed), 1003);
        assert_eq!(w.into_inner().len(), 1003);
    }

    #[test]
    fn big_commits_report_their_size_at_the_end() {
        let events = Collect(Mutex::new(Vec::new()));
        let step = StepRef { stage: None, number: 3, total: 3 };
        let written = AtomicU64::new(0);
        with_commit_progress(&events, &step, &written, || written.store(COMMIT_SHOWN_FROM + 5, Ordering::Relaxed));
        let events = events.0.lock().unwrap();
        match events.last() {
            Some(Event::Committing { step: s, written, .. }) => {
                assert_eq!((s, *written), (&step, COMMIT_SHOWN_FROM + 5))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_commits_report_nothing() {
        let events = Collect(Mutex::new(Vec::new()));
        let step = StepRef { stage: None, number: 2, total: 2 };
        let written = AtomicU64::new(0);
        let out = with_commit_progress(&events, &step, &written, || {
            written.store(1000, Ordering::Relaxed);
            42
        });
        assert_eq!(out, 42);
        assert!(events.0.lock().unwrap().is_empty());
    }
}
