//! How progress looks (docker's `--progress`): `plain` lines, a `tty` view
//! redrawn in place on stderr (as BuildKit's), or nothing (`quiet`). The
//! engine reports typed events ([`kiln::progress::Event`]); this file is
//! the only place that turns them into text.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use kiln::humanize::{human_size, short};
use kiln::progress::{Event, LayerContents, Reporter, StepRef, Transfer};

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// tty when stderr is a terminal, else plain.
    Auto,
    /// One line per event, as kiln always printed.
    Plain,
    /// A live view redrawn in place on stderr.
    Tty,
    /// Nothing but the result (the image id), like -q.
    Quiet,
}

/// The progress output chosen, `auto` resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tty,
    Quiet,
}

/// The environment variables that choose the progress output when no flag
/// does, in the order they are read.
const ENV_VARS: [&str; 2] = ["KILN_PROGRESS", "BUILDKIT_PROGRESS"];

/// The mode for `flag` (which wins), else `$KILN_PROGRESS`, else
/// `$BUILDKIT_PROGRESS` (as docker reads it), else auto; `quiet` (`-q`)
/// wins over all.
pub fn mode(flag: Option<ProgressArg>, quiet: bool) -> anyhow::Result<Mode> {
    if quiet {
        return Ok(Mode::Quiet);
    }
    let chosen = match flag {
        Some(arg) => arg,
        None => from_env()?,
    };
    let terminal = std::io::stderr().is_terminal();
    Ok(match chosen {
        ProgressArg::Auto if terminal => Mode::Tty,
        ProgressArg::Auto | ProgressArg::Plain => Mode::Plain,
        ProgressArg::Tty if !terminal => {
            anyhow::bail!("--progress=tty needs a terminal on stderr: use --progress=plain (or auto) when stderr is a file or a pipe")
        }
        ProgressArg::Tty => Mode::Tty,
        ProgressArg::Quiet => Mode::Quiet,
    })
}

fn from_env() -> anyhow::Result<ProgressArg> {
    for var in ENV_VARS {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => {
                return <ProgressArg as clap::ValueEnum>::from_str(v.trim(), true).map_err(|_| {
                    anyhow::anyhow!("{var}={v:?} is not a progress type: expected auto, plain, tty or quiet")
                });
            }
            _ => {}
        }
    }
    Ok(ProgressArg::Auto)
}

/// The line plain mode prints for `event`, without its newline; `None` for
/// events plain mode leaves out.
pub fn plain_line(event: &Event) -> Option<String> {
    let secs = |d: &Duration| d.as_secs_f64();
    Some(match event {
        Event::StepStarted { step, instruction } => {
            format!("{}STEP {}/{}: {}", step.prefix(), step.number, step.total, instruction)
        }
        Event::BaseImage { step, reference, id } => format!("{}--> using {} {}", step.prefix(), reference, id),
        Event::CacheHit { step, id, from } => {
            let from = from.as_ref().map(|f| format!(" ({f})")).unwrap_or_default();
            let id = id.as_ref().map(|i| format!(" {i}")).unwrap_or_default();
            format!("{}--> Using cache{from}{id}", step.prefix())
        }
        Event::CacheMiss { step, reason } => format!("{}--> cache miss: {}", step.prefix(), reason),
        // Output lines carry their step, as BuildKit's plain progress does.
        Event::Output { step, line } => format!("{}#{} {}", step.prefix(), step.number, line),
        Event::Layer { step, id, size, contents, elapsed } => {
            let what = match contents {
                LayerContents::Changes => String::new(),
                LayerContents::Files(n) => format!("{n} files, "),
                LayerContents::Directories { count, instruction } => format!("{count} directories for {instruction}, "),
            };
            format!("{}--> {} ({}{}, {:.2}s)", step.prefix(), id, what, human_size(*size), secs(elapsed))
        }
        Event::Squashed { digest, size } => format!("--> squashed into {} ({})", digest, human_size(*size)),
        Event::Built { image_id, new_layer_bytes, elapsed } => {
            format!("--> {} (new layers {}, {:.2}s)", short(image_id), human_size(*new_layer_bytes), secs(elapsed))
        }
        Event::Transfer(Transfer::Started { verb, digest, size }) => {
            format!("{} blob {} ({})", verb, short(digest), human_size(*size))
        }
        Event::Transfer(Transfer::Finished { verb, digest, note }) => {
            format!("{} blob {} {}", verb, short(digest), note)
        }
        Event::Note(text) => text.clone(),
        Event::Committing { .. } | Event::StepFinished { .. } | Event::Transfer(Transfer::Progress { .. }) => {
            return None
        }
    })
}

/// Where progress goes for one command, and which steps are running (to
/// say what an interrupt stopped).
pub struct View {
    kind: Kind,
    running: Mutex<Vec<(StepRef, String, Instant)>>,
}

enum Kind {
    Plain(Mutex<Box<dyn Write + Send>>),
    Tty(Tty),
    Quiet,
}

impl View {
    /// Plain lines go to `plain` (stdout for builds, as podman prints them;
    /// stderr for push, pull and save); the tty view is always on stderr.
    pub fn new(mode: Mode, plain: Box<dyn Write + Send>) -> View {
        let kind = match mode {
            Mode::Plain => Kind::Plain(Mutex::new(plain)),
            Mode::Tty => Kind::Tty(Tty::new()),
            Mode::Quiet => Kind::Quiet,
        };
        View { kind, running: Mutex::new(Vec::new()) }
    }

    /// The steps that started and did not finish, with how long they ran.
    pub fn running(&self) -> Vec<(StepRef, String, Duration)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.iter().map(|(s, i, t)| (s.clone(), i.clone(), t.elapsed())).collect()
    }

    /// Ends the live view: steps still on it are marked as failed (or
    /// canceled, after an interrupt) and left on screen.
    pub fn finish(&self) {
        if let Kind::Tty(tty) = &self.kind {
            tty.finish();
        }
    }
}

impl Reporter for View {
    fn report(&self, event: Event) {
        match &event {
            Event::StepStarted { step, instruction } => {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                running.push((step.clone(), instruction.clone(), Instant::now()));
            }
            Event::StepFinished { step, .. } => {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                running.retain(|(s, _, _)| s != step);
            }
            _ => {}
        }
        match &self.kind {
            Kind::Plain(out) => {
                if let Some(line) = plain_line(&event) {
                    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                    // One write per line, so parallel stages never split a line.
                    let _ = out.write_all(format!("{line}\n").as_bytes());
                    let _ = out.flush();
                }
            }
            Kind::Tty(tty) => tty.show(event),
            Kind::Quiet => {}
        }
    }

    fn keeps_output(&self) -> bool {
        matches!(self.kind, Kind::Plain(_))
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Lines of a running step's output shown under it.
const LOG_LINES: usize = 5;

/// BuildKit's tty view: a line per running step with its elapsed time and
/// the last lines of its output under it, a bar per blob moving; finished
/// steps and everything else are printed above the live part and stay.
struct Tty {
    multi: MultiProgress,
    state: Mutex<TtyState>,
}

#[derive(Default)]
struct TtyState {
    steps: HashMap<StepRef, StepView>,
    blobs: HashMap<String, ProgressBar>,
    finished: bool,
}

struct StepView {
    label: String,
    bar: ProgressBar,
    logs: Vec<ProgressBar>,
    tail: VecDeque<String>,
    cached: bool,
    /// The step's image id and its layer's size, once committed.
    layer: Option<String>,
    /// How fast a big layer was written.
    commit_rate: Option<u64>,
}

fn step_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {wide_msg} {prefix:.yellow} {secs:>7}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key("secs", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
        })
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn log_style() -> ProgressStyle {
    ProgressStyle::with_template("  {wide_msg:.dim}").unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn blob_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The live view on screen, if any: log lines are written around it.
static LIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Where kiln's log lines (warnings, `-v`) go: stderr, with a live view
/// hidden while a line is written and drawn again below it, so the two do
/// not overwrite each other.
pub struct LogWriter;

/// Log lines held back (see [`hold_logs`]).
static HELD: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// Keeps log lines back until [`release_logs`]: for work that may be done
/// again by another process, which would say the same things.
pub fn hold_logs() {
    *HELD.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
}

/// Ends [`hold_logs`]: writes the held lines (`show`) or drops them.
pub fn release_logs(show: bool) {
    let held = HELD.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(lines) = held.filter(|_| show) {
        let _ = LogWriter.write_all(&lines);
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(held) = HELD.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            held.extend_from_slice(buf);
            return Ok(buf.len());
        }
        let live = LIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match live {
            Some(multi) => multi.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Tty {
    fn new() -> Tty {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(multi.clone());
        Tty { multi, state: Mutex::default() }
    }

    fn println(&self, line: String) {
        let _ = self.multi.println(line);
    }

    fn show(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.finished {
            drop(state);
            if let Some(line) = plain_line(&event) {
                eprintln!("{line}");
            }
            return;
        }
        match event {
            Event::StepStarted { step, instruction } => {
                let label = format!("{}STEP {}/{}: {}", step.prefix(), step.number, step.total, instruction);
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(step_style());
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                let view = StepView {
                    label,
                    bar,
                    logs: Vec::new(),
                    tail: VecDeque::new(),
                    cached: false,
                    layer: None,
                    commit_rate: None,
                };
                state.steps.insert(step, view);
            }
            Event::Output { step, line } => {
                let Some(view) = state.steps.get_mut(&step) else { return };
                if view.tail.len() == LOG_LINES {
                    view.tail.pop_front();
                }
                view.tail.push_back(line.replace('\t', "    "));
                while view.logs.len() < view.tail.len() {
                    let after = view.logs.last().unwrap_or(&view.bar).clone();
                    let log = self.multi.insert_after(&after, ProgressBar::new_spinner());
                    log.set_style(log_style());
                    view.logs.push(log);
                }
                for (log, text) in view.logs.iter().zip(&view.tail) {
                    log.set_message(text.clone());
                }
            }
            Event::Committing { step, written, elapsed } => {
                let Some(view) = state.steps.get_mut(&step) else { return };
                let rate = (written as f64 / elapsed.as_secs_f64().max(0.001)) as u64;
                view.commit_rate = Some(rate);
                view.bar.set_prefix(format!("committing {} ({}/s)", human_size(written), human_size(rate)));
            }
            Event::CacheHit { step, .. } => {
                if let Some(view) = state.steps.get_mut(&step) {
                    view.cached = true;
                }
            }
            Event::Layer { ref step, ref id, size, .. } => {
                if let Some(view) = state.steps.get_mut(step) {
                    view.layer = Some(format!("{} {}", id, human_size(size)));
                }
            }
            Event::StepFinished { step, elapsed, .. } => {
                let Some(view) = state.steps.remove(&step) else { return };
                for log in view.logs {
                    log.finish_and_clear();
                    self.multi.remove(&log);
                }
                view.bar.finish_and_clear();
                self.multi.remove(&view.bar);
                let cached = if view.cached { "CACHED " } else { "" };
                let rate = view.commit_rate.map(|r| format!(", committed at {}/s", human_size(r))).unwrap_or_default();
                let layer = view.layer.map(|l| format!(" --> {l}{rate}")).unwrap_or_default();
                self.println(format!("=> {cached}{}{layer}  {:.1}s", view.label, elapsed.as_secs_f64()));
            }
            Event::Transfer(Transfer::Started { verb, digest, size }) => {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(blob_style());
                bar.set_message(format!("{} blob {}", verb, short(&digest)));
                state.blobs.insert(digest, bar);
            }
            Event::Transfer(Transfer::Progress { digest, done }) => {
                if let Some(bar) = state.blobs.get(&digest) {
                    bar.set_position(done);
                }
            }
            Event::Transfer(Transfer::Finished { verb, digest, note }) => {
                if let Some(bar) = state.blobs.remove(&digest) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.println(format!("{} blob {} {}", verb, short(&digest), note));
            }
            other => {
                if let Some(line) = plain_line(&other) {
                    self.println(line);
                }
            }
        }
    }

    fn finish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.finished {
            return;
        }
        state.finished = true;
        let mark = if kiln_runtime::lifetime::interrupted().is_some() { "CANCELED" } else { "ERROR" };
        let mut left: Vec<(StepRef, StepView)> = state.steps.drain().collect();
        left.sort_by_key(|(s, _)| (s.stage, s.number));
        for (_, view) in left {
            for log in &view.logs {
                log.finish_and_clear();
            }
            let secs = view.bar.elapsed().as_secs_f64();
            view.bar.finish_and_clear();
            self.println(format!("=> {mark} {}  {secs:.1}s", view.label));
        }
        for (_, bar) in state.blobs.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
        *LIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(stage: Option<(usize, usize)>, number: usize) -> StepRef {
        StepRef { stage, number, total: 3 }
    }

    #[test]
    fn plain_lines_are_the_ones_kiln_always_printed() {
        let s = step(Some((1, 2)), 2);
        let line = |e: Event| plain_line(&e).unwrap();
        assert_eq!(
            line(Event::StepStarted { step: s.clone(), instruction: "RUN make".into() }),
            "[1/2] STEP 2/3: RUN make"
        );
        assert_eq!(line(Event::Output { step: s.clone(), line: "hi".into() }), "[1/2] #2 hi");
        assert_eq!(line(Event::Output { step: step(None, 3), line: "hi".into() }), "#3 hi");
        let layer = |contents| Event::Layer {
            step: step(None, 2),
            id: "0123456789ab".into(),
            size: 1_500_000,
            contents,
            elapsed: Duration::from_millis(1234),
        };
        assert_eq!(line(layer(LayerContents::Changes)), "--> 0123456789ab (1.5MB, 1.23s)");
        assert_eq!(line(layer(LayerContents::Files(3))), "--> 0123456789ab (3 files, 1.5MB, 1.23s)");
        assert_eq!(
            line(layer(LayerContents::Directories { count: 2, instruction: "WORKDIR /a/b".into() })),
            "--> 0123456789ab (2 directories for WORKDIR /a/b, 1.5MB, 1.23s)"
        );
        assert_eq!(
            line(Event::CacheHit { step: s.clone(), id: Some("abc".into()), from: None }),
            "[1/2] --> Using cache abc"
        );
        assert_eq!(line(Event::CacheHit { step: s.clone(), id: None, from: None }), "[1/2] --> Using cache");
        let remote = Event::CacheHit { step: s.clone(), id: Some("abc".into()), from: Some("registry".into()) };
        assert_eq!(line(remote), "[1/2] --> Using cache (registry) abc");
        let built =
            Event::Built { image_id: "sha256:0123456789abcdef".into(), new_layer_bytes: 0, elapsed: Duration::ZERO };
        assert_eq!(line(built), "--> 0123456789ab (new layers 0B, 0.00s)");
        let copying =
            Event::Transfer(Transfer::Started { verb: "Copying", digest: "sha256:aabbccddeeff00".into(), size: 1000 });
        assert_eq!(line(copying), "Copying blob aabbccddeeff (1kB)");
        assert_eq!(plain_line(&Event::StepFinished { step: s, cached: true, elapsed: Duration::ZERO }), None);
    }

    #[test]
    fn the_flag_wins_and_quiet_wins_over_all() {
        assert_eq!(mode(Some(ProgressArg::Plain), false).unwrap(), Mode::Plain);
        assert_eq!(mode(Some(ProgressArg::Quiet), false).unwrap(), Mode::Quiet);
        assert_eq!(mode(Some(ProgressArg::Plain), true).unwrap(), Mode::Quiet);
    }

    #[test]
    fn plain_views_track_running_steps() {
        let view = View::new(Mode::Plain, Box::new(std::io::sink()));
        let s = step(None, 2);
        view.report(Event::StepStarted { step: s.clone(), instruction: "RUN sleep 9".into() });
        view.report(Event::StepStarted { step: step(None, 3), instruction: "RUN true".into() });
        view.report(Event::StepFinished { step: step(None, 3), cached: false, elapsed: Duration::ZERO });
        let running = view.running();
        assert_eq!(running.len(), 1);
        assert_eq!((&running[0].0, running[0].1.as_str()), (&s, "RUN sleep 9"));
        assert!(view.keeps_output());
    }
}
