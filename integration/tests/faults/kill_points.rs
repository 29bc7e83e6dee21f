//! The kill-point suite: kiln is SIGKILLed at ≥ 200 moments of builds (RUN,
//! COPY, commit, tag), pulls, pushes, exports to an OCI layout (compressing
//! plain layers on demand), builds hitting a `--cache-from` cache, rmi and prune — chosen by timing
//! (seeded random delays) and by the fault-injection points compiled into a
//! `--features fault-injection` build (`kiln::fault`) — once with its whole
//! process group (a machine or CI runner dying) and once only the process
//! the user started (`kill -9 PID`, or the killed point's own process).
//! After each kill, as the unprivileged test user:
//! - `kiln system check` is clean, or `kiln system check --repair` makes it clean;
//! - no process of the kiln run (the test user's or fuse-overlayfs) is left,
//!   and no mount;
//! - the next build (or pull, push, export) succeeds and its image has exactly the
//!   files it should, counted in the image's layers and, by a RUN step, in
//!   the layer dirs kiln stacks (a half-deleted or half-written layer dir
//!   that kiln trusts shows up as a wrong count).
//!
//! Cases run two at a time (`KILN_KILL_WORKERS`), each on its own copy of a
//! template store. `KILN_KILL_SEED` changes the delays, `KILN_KILL_TIMING`
//! the number of timing kills per scenario and mode, `KILN_KILL_STRIDE=K`
//! runs every K-th case only (a quick look), `KILN_KILL_SCENARIOS=Push,Export`
//! only those scenarios' cases. The summary line:
//! `kill points: N kills, M inconsistent after repair, K wrong filesystems, J orphan processes`.

use crate::fault_util;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fault_util::{fault_kiln, mounts_under, reap_leftovers, seed, user_uids, Registry, Rng};
use kiln_integration::{read_image, require_fuse, static_busybox, Entry, Image, Kind, Output, Sandbox, RUN_BASE};

/// Files the killed build's RUN step writes.
const W_FILES: usize = 1000;
/// Files in the victim image's layer (removed by rmi and prune).
const V_FILES: usize = 1000;
/// Files in the pulled image's layer.
const Q_FILES: usize = 1000;
/// Files COPY takes from the context.
const C_FILES: usize = 200;
/// The big context file COPY takes.
const BIG_BYTES: usize = 1 << 20;
/// Files the cached build's RUN step writes (its layer comes from the shared cache).
const K_FILES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Build,
    Pull,
    Push,
    /// `kiln export-layout` of the victim, whose plain layers get compressed (into the store and the layout).
    Export,
    /// A build whose every step hits a `--cache-from` registry cache: layers fetched, hits kept as records.
    CacheFrom,
    Rmi,
    Prune,
    /// A fully cached rebuild of the victim under a new tag: the front-end replays the cache outside the user
    /// namespace (docs/cache.md) and writes the tag.
    Replay,
}

const SCENARIOS: [Scenario; 8] = [
    Scenario::Build,
    Scenario::Pull,
    Scenario::Push,
    Scenario::Export,
    Scenario::CacheFrom,
    Scenario::Rmi,
    Scenario::Prune,
    Scenario::Replay,
];

/// Timing kills per mode for the export and the replay: fewer than elsewhere (their fault points cover the
/// renames; a replay is over in milliseconds), so the suite's length stays about the same.
const EXPORT_TIMING: usize = 2;

#[derive(Debug, Clone)]
enum Kill {
    /// `KILN_FAULT=point@N` with KILN_FAULT_MODE group or self.
    Fault { point: String, group: bool },
    /// SIGKILL after `delay`, to the process group or to the top process only.
    After { delay: Duration, group: bool },
}

#[derive(Debug, Clone)]
struct Case {
    id: usize,
    scenario: Scenario,
    kill: Kill,
}

impl Case {
    fn label(&self) -> String {
        match &self.kill {
            Kill::Fault { point, group } => {
                format!("#{} {:?} at {point} ({})", self.id, self.scenario, if *group { "group" } else { "self" })
            }
            Kill::After { delay, group } => format!(
                "#{} {:?} after {}ms ({})",
                self.id,
                self.scenario,
                delay.as_millis(),
                if *group { "group" } else { "top" }
            ),
        }
    }
}

/// The fault points each scenario passes, with the hit counts worth killing at.
fn fault_points(s: Scenario) -> Vec<(&'static str, Vec<u32>)> {
    match s {
        Scenario::Build => vec![
            ("copy-entry", vec![1, 25, 50, 75, 100, 125, 150, 175, 200]),
            ("blob-write", vec![1, 5, 10, 15]),
            ("blob-rename-before", vec![1, 2, 3]),
            ("blob-rename-after", vec![1, 3]),
            ("layer-rename-before", vec![1, 2, 3]),
            ("layer-rename-after", vec![1, 2, 3]),
            ("run-commit-before", vec![1, 2, 3]),
            ("index-write-before", vec![1]),
            ("index-write-after", vec![1]),
            ("tag-before", vec![1]),
        ],
        Scenario::Pull => vec![
            ("pull-blob-read", vec![1, 2, 3, 5, 10, 25]),
            ("blob-write", vec![1, 5, 10]),
            ("blob-rename-before", vec![1, 2, 3]),
            ("blob-rename-after", vec![1, 3]),
            ("index-write-before", vec![1]),
            ("index-write-after", vec![1]),
            ("tag-before", vec![1]),
        ],
        // A push compresses the victim's plain layers first (store/compressed.rs).
        Scenario::Push => vec![
            ("compress-blob-written", vec![1]),
            ("compress-record-before", vec![2]),
            ("compress-record-after", vec![1]),
            ("push-blob-before", vec![1, 2, 3]),
            ("push-blob-after", vec![1, 2]),
        ],
        // The compressed blob goes into the store and, in the same pass, into the layout.
        Scenario::Export => vec![
            ("compress-blob-written", vec![1]),
            ("compress-record-before", vec![1]),
            ("compress-record-after", vec![2]),
        ],
        // Nothing runs: the hits' layers are fetched from the registry cache, then kept as records.
        Scenario::CacheFrom => vec![
            ("pull-blob-read", vec![1, 2, 3]),
            ("blob-write", vec![1, 5]),
            ("blob-rename-before", vec![1, 2]),
            ("blob-rename-after", vec![1, 2]),
            ("cache-hit-record-before", vec![1, 2]),
            ("tag-before", vec![1]),
        ],
        Scenario::Rmi => vec![
            ("rmi-untagged", vec![1]),
            ("index-write-before", vec![1]),
            ("index-write-after", vec![1]),
            ("gc-remove-blob", vec![1, 2]),
            ("gc-remove-tree", vec![1]),
            ("remove-file", vec![1, 50, 200, 500, 900]),
        ],
        Scenario::Prune => {
            vec![("gc-remove-blob", vec![1, 2, 3]), ("gc-remove-tree", vec![1]), ("remove-file", vec![1, 50])]
        }
        // Nothing runs and no step image is missing: the new tag is all it writes.
        Scenario::Replay => {
            vec![("tag-before", vec![1]), ("index-write-before", vec![1]), ("index-write-after", vec![1])]
        }
    }
}

fn step(dir: &str, n: usize) -> String {
    format!("RUN mkdir /{dir} && cd /{dir} && i=0 && while [ $i -lt {n} ]; do echo {dir}$i > f$i; i=$((i+1)); done\n")
}

fn work_dockerfile() -> String {
    format!(
        "FROM base\nARG CASE=0\nRUN echo $CASE > /case\nCOPY many /c/\nCOPY big.bin /big.bin\n{}\
         RUN echo $(find /c -type f | wc -l) $(find /w -type f | wc -l) $(wc -c < /big.bin) > /counts\n",
        step("w", W_FILES)
    )
}

/// Built once into a scratch store with `--cache-to`; the scenario builds it with `--cache-from`.
fn cached_dockerfile() -> String {
    format!("FROM base\n{}COPY many /c/\nRUN find /k -type f | wc -l > /kcount\n", step("k", K_FILES))
}

fn victim_dockerfile() -> String {
    format!("FROM base\n{}", step("v", V_FILES))
}

fn victim_check_dockerfile() -> String {
    format!("{}RUN find /v -type f | wc -l > /vcount\n", victim_dockerfile())
}

/// Everything the cases share: the sandbox, the template store, the registry.
struct World {
    sb: Sandbox,
    template: PathBuf,
    registry: Registry,
    /// `127.0.0.1:PORT/pullme:1`
    pull_ref: String,
    /// `type=registry,ref=127.0.0.1:PORT/kcache:1`
    cache_ref: String,
    uids: Vec<(u64, u64)>,
    /// Each scenario's duration, unkilled.
    durations: BTreeMap<Scenario, Duration>,
}

#[derive(Default)]
struct Summary {
    cases: usize,
    kills: usize,
    inconsistent: Vec<String>,
    wrong_fs: Vec<String>,
    orphans: Vec<String>,
    mounts: Vec<String>,
    failed_next: Vec<String>,
    /// Fault cases whose point was not reached as often as asked (no kill).
    unfired: Vec<String>,
    /// Time spent per phase, summed over the cases (copy, kill, reap, check, next).
    phases: [Duration; 5],
}

impl World {
    fn kiln_at(&self, root: &Path, args: &[&str]) -> Output {
        let mut all = vec!["--root", root.to_str().unwrap()];
        all.extend_from_slice(args);
        self.sb.kiln_raw(&all, None, &[])
    }

    fn build_at(&self, root: &Path, file: &str, tag: &str, extra: &[&str]) -> Output {
        let ctx = self.sb.ctx();
        let file = ctx.join(file);
        let mut args = vec!["build", "-f", file.to_str().unwrap(), "-t", tag];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.kiln_at(root, &args)
    }

    /// The kiln command line of a scenario against the store at `root`.
    /// `fuse`: the build's RUN steps use fuse-overlayfs (a process of its own
    /// that must go with kiln) instead of the kernel's overlay.
    fn scenario_args(&self, s: Scenario, root: &Path, case: usize, fuse: bool) -> Vec<String> {
        let ctx = self.sb.ctx();
        let mut a = vec!["--root".to_string(), root.display().to_string()];
        let more: Vec<String> = match s {
            Scenario::Build => vec![
                "build".into(),
                "-f".into(),
                ctx.join("work.Dockerfile").display().to_string(),
                "--build-arg".into(),
                format!("CASE={case}"),
                "-t".into(),
                "work".into(),
                format!("--storage-driver={}", if fuse { "fuse-overlayfs" } else { "overlay" }),
                ctx.display().to_string(),
            ]
            .into_iter()
            .filter(|a| fuse || !a.starts_with("--storage-driver"))
            .collect(),
            Scenario::Pull => vec!["pull".into(), self.pull_ref.clone()],
            Scenario::Push => vec!["push".into(), "victim".into(), format!("{}/push{case}:1", self.registry.host())],
            Scenario::Export => vec!["export-layout".into(), layout_of(root).display().to_string(), "victim".into()],
            Scenario::CacheFrom => vec![
                "build".into(),
                "-f".into(),
                ctx.join("cached.Dockerfile").display().to_string(),
                "--cache-from".into(),
                self.cache_ref.clone(),
                "-t".into(),
                "cached".into(),
                ctx.display().to_string(),
            ],
            Scenario::Rmi => vec!["rmi".into(), "-f".into(), "victim".into()],
            Scenario::Prune => vec!["system".into(), "prune".into(), "-f".into()],
            Scenario::Replay => vec![
                "-v".into(),
                "build".into(),
                "-f".into(),
                ctx.join("victim.Dockerfile").display().to_string(),
                "-t".into(),
                "victim2".into(),
                ctx.display().to_string(),
            ],
        };
        a.extend(more);
        a
    }

    /// Makes `dest` a copy of the template store, keeping every owner (layer
    /// dirs hold files of subordinate ids): as root directly, else inside
    /// kiln's user namespace. Files are hard links (a full copy per case
    /// would take most of the suite's time): kiln never writes a stored file
    /// in place — blobs, layer dirs, index.json and cache records change by
    /// rename and unlink only, and overlay copies a lower file up before
    /// changing it — so no case can reach the template through them. Lock
    /// files are the exception (a flock is per inode): each case gets its own.
    fn copy_store(&self, dest: &Path) {
        let (src, dst) = (self.template.to_str().unwrap(), dest.to_str().unwrap());
        let script = format!(
            "cp -al {src} {dst} && find {dst} -name '*lock' -type f -exec sh -c 'cp -p \"$1\" \"$1.new\" && mv \"$1.new\" \"$1\"' _ {{}} \\;"
        );
        if self.sb.drops_privileges() {
            let st = Command::new("sh").args(["-c", &script]).status().unwrap();
            assert!(st.success(), "{script}");
        } else {
            self.sb.kiln_raw(&["unshare", "sh", "-c", &script], None, &[]).ok();
        }
    }

    fn remove_tree(&self, path: &Path) {
        let p = path.to_str().unwrap();
        if self.sb.drops_privileges() {
            let _ = Command::new("rm").args(["-rf", p]).status();
        } else {
            let _ = self.sb.kiln_raw(&["unshare", "rm", "-rf", p], None, &[]);
        }
    }
}

/// Where the export scenario writes its layout: beside the case's store.
fn layout_of(store: &Path) -> PathBuf {
    store.with_file_name("layout")
}

/// What a killed run did.
struct Run {
    killed: bool,
    pgid: u32,
    marker: String,
}

/// Starts a scenario in its own process group (so a group kill reaches only
/// it) and kills it as the case says.
fn run_killed(w: &World, case: &Case, dir: &Path, store: &Path) -> Run {
    // Half the timed build kills hit fuse-overlayfs builds.
    let fuse = matches!(case.kill, Kill::After { .. }) && case.id % 2 == 1;
    let args = w.scenario_args(case.scenario, store, case.id, fuse);
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let mut cmd = w.sb.kiln_command(&args);
    let marker = format!("KILN_KILL_CASE={}-{}", std::process::id(), case.id);
    let fired = dir.join("fired");
    cmd.env("KILN_KILL_CASE", marker.split_once('=').unwrap().1)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("out")).unwrap())
        .stderr(fs::File::create(dir.join("err")).unwrap());
    if let Kill::Fault { point, group } = &case.kill {
        cmd.env("KILN_FAULT", point)
            .env("KILN_FAULT_MODE", if *group { "group" } else { "self" })
            .env("KILN_FAULT_FIRED", &fired);
    }
    let mut child = cmd.spawn().expect("start kiln");
    let pgid = child.id();
    let start = Instant::now();
    let mut killed = false;
    if let Kill::After { delay, group } = &case.kill {
        while start.elapsed() < *delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            killed = true;
            if *group {
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
            } else {
                let _ = child.kill();
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
            let _ = child.wait();
            panic!("{}: kiln did not end within 120 s", case.label());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if matches!(case.kill, Kill::Fault { .. }) {
        killed = fired.exists();
    }
    Run { killed, pgid, marker }
}

/// `kiln system check`, then `--repair` and a second check when the first
/// is not clean. Err describes what stayed wrong.
fn check_store(w: &World, store: &Path) -> Result<(), String> {
    let first = w.kiln_at(store, &["system", "check"]);
    if first.success() {
        return Ok(());
    }
    if first.stderr.contains("unrecognized subcommand") {
        return Err("`kiln system check` does not exist in this kiln".into());
    }
    let repair = w.kiln_at(store, &["system", "check", "--repair"]);
    let again = w.kiln_at(store, &["system", "check"]);
    if again.success() {
        return Ok(());
    }
    Err(format!(
        "check:\n{}\nrepair:\n{}\ncheck after repair:\n{}",
        first.transcript(),
        repair.transcript(),
        again.transcript()
    ))
}

/// Reads an image, turning the harness's panics (a missing or corrupt blob)
/// into an error.
fn image_at(store: &Path, tag: &str) -> Result<Image, String> {
    let (store, tag) = (store.to_path_buf(), tag.to_string());
    std::panic::catch_unwind(move || read_image(&store, &tag)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// An image's merged filesystem, read once.
struct Files(BTreeMap<String, Entry>);

impl Files {
    fn of(img: &Image) -> Files {
        Files(img.fs())
    }

    /// Regular files under `dir`.
    fn count(&self, dir: &str) -> usize {
        let prefix = format!("{dir}/");
        self.0.iter().filter(|(p, e)| p.starts_with(&prefix) && e.kind == Kind::File).count()
    }

    /// A file's content, trimmed ("" when it is missing).
    fn text(&self, path: &str) -> String {
        self.0.get(path).map(|e| String::from_utf8_lossy(&e.data).trim().to_string()).unwrap_or_default()
    }

    fn size(&self, path: &str) -> usize {
        self.0.get(path).map_or(0, |e| e.data.len())
    }
}

/// What went wrong after the kill: a wrong filesystem, or a next step that failed.
enum Bad {
    WrongFs(String),
    Failed(String),
}

/// The next build (and pull or push) after the kill, with its file counts.
fn next_steps(w: &World, case: &Case, store: &Path) -> Result<(), Bad> {
    let need = |out: Output, what: &str| {
        if out.success() {
            Ok(out)
        } else {
            Err(Bad::Failed(format!("{what}:\n{}", out.transcript())))
        }
    };
    let wrong = |what: String| Bad::WrongFs(what);
    // An image built before the kill is intact.
    let keep = Files::of(&image_at(store, "keep:1").map_err(|e| wrong(format!("keep:1 unreadable: {e}")))?);
    if keep.text("keep.txt") != "keep" {
        return Err(wrong("keep:1 lost its content".into()));
    }
    match case.scenario {
        Scenario::Build => {
            let arg = format!("CASE={}", case.id);
            need(w.build_at(store, "work.Dockerfile", "work", &["--build-arg", &arg]), "the next build")?;
            let img = Files::of(&image_at(store, "work:latest").map_err(|e| wrong(format!("work unreadable: {e}")))?);
            let counts = img.text("counts");
            let want = format!("{C_FILES} {W_FILES} {BIG_BYTES}");
            let got = (img.count("c"), img.count("w"), img.size("big.bin"));
            if counts != want || got != (C_FILES, W_FILES, BIG_BYTES) || img.text("case") != case.id.to_string() {
                return Err(wrong(format!("work: RUN counted {counts:?}, layers hold {got:?}, want {want}")));
            }
        }
        Scenario::Pull => {
            need(w.kiln_at(store, &["pull", &w.pull_ref]), "the next pull")?;
            let img =
                Files::of(&image_at(store, &w.pull_ref).map_err(|e| wrong(format!("pulled image unreadable: {e}")))?);
            if img.count("q") != Q_FILES {
                return Err(wrong(format!("pulled image holds {} files in /q", img.count("q"))));
            }
            fs::write(
                w.sb.ctx().join(format!("pull{}.Dockerfile", case.id)),
                format!("FROM {}\nRUN find /q -type f | wc -l > /qcount\n", w.pull_ref),
            )
            .unwrap();
            need(
                w.build_at(store, &format!("pull{}.Dockerfile", case.id), "qcheck", &[]),
                "a build FROM the pulled image",
            )?;
            let img =
                Files::of(&image_at(store, "qcheck:latest").map_err(|e| wrong(format!("qcheck unreadable: {e}")))?);
            if img.text("qcount") != Q_FILES.to_string() {
                return Err(wrong(format!("RUN on the pulled image sees {} files in /q", img.text("qcount"))));
            }
        }
        Scenario::Export => {
            // Exported again into the same (perhaps half-written) layout: complete, every blob matching its
            // digest (read_image checks), and read by skopeo and umoci.
            let layout = layout_of(store);
            let l = layout.display().to_string();
            need(w.kiln_at(store, &["export-layout", &l, "victim"]), "the next export")?;
            let img = Files::of(
                &image_at(&layout, "victim:latest").map_err(|e| wrong(format!("exported victim unreadable: {e}")))?,
            );
            if img.count("v") != V_FILES {
                return Err(wrong(format!("the exported victim holds {} files in /v, want {V_FILES}", img.count("v"))));
            }
            need(w.sb.tool("skopeo", &["inspect", &format!("oci:{l}:victim:latest")]), "skopeo inspect of the layout")?;
            need(w.sb.tool("umoci", &["stat", "--image", &format!("{l}:victim:latest")]), "umoci stat of the layout")?;
            need(w.build_at(store, "vcheck.Dockerfile", "vcheck", &[]), "the next build")?;
        }
        Scenario::CacheFrom => {
            // The build again: whatever the kill left (a half-fetched blob, hits not yet kept), every step hits
            // and its image holds the cached layer's files — counted by the cached RUN and in the layers.
            let file = w.sb.ctx().join("cached.Dockerfile");
            let (file, ctx) = (file.display().to_string(), w.sb.ctx().display().to_string());
            let args = ["build", "-f", &file, "--cache-from", &w.cache_ref, "-t", "cached", &ctx];
            let out = need(w.kiln_at(store, &args), "the next build with --cache-from")?;
            let hits =
                format!("{}{}", out.stdout, out.stderr).lines().filter(|l| l.contains("--> Using cache")).count();
            if hits != 3 {
                return Err(Bad::Failed(format!("the next build hit {hits} of 3 steps:\n{}", out.transcript())));
            }
            let img =
                Files::of(&image_at(store, "cached:latest").map_err(|e| wrong(format!("cached unreadable: {e}")))?);
            if img.text("kcount") != K_FILES.to_string() || img.count("k") != K_FILES || img.count("c") != C_FILES {
                return Err(wrong(format!(
                    "cached: RUN counted {} files in /k, the layers hold {} in /k and {} in /c",
                    img.text("kcount"),
                    img.count("k"),
                    img.count("c")
                )));
            }
            // A RUN on it reads the fetched layer dirs.
            need(w.build_at(store, "kcheck.Dockerfile", "kcheck", &[]), "a build FROM the cached image")?;
            let img =
                Files::of(&image_at(store, "kcheck:latest").map_err(|e| wrong(format!("kcheck unreadable: {e}")))?);
            if img.text("kcount2") != K_FILES.to_string() {
                return Err(wrong(format!("RUN on the cached image sees {} files in /k", img.text("kcount2"))));
            }
        }
        Scenario::Replay => {
            // Replayed again (every step still cached), and the image is the victim, whole.
            let file = w.sb.ctx().join("victim.Dockerfile");
            let (file, ctx) = (file.display().to_string(), w.sb.ctx().display().to_string());
            let out = need(w.kiln_at(store, &["-v", "build", "-f", &file, "-t", "victim2", &ctx]), "the next replay")?;
            if !out.stderr.contains("built without entering kiln's user namespace") {
                return Err(Bad::Failed(format!("the next build was no replay:\n{}", out.transcript())));
            }
            let replayed = image_at(store, "victim2:latest").map_err(|e| wrong(format!("victim2 unreadable: {e}")))?;
            let victim = image_at(store, "victim:latest").map_err(|e| wrong(format!("victim unreadable: {e}")))?;
            let files = Files::of(&replayed);
            if files.count("v") != V_FILES || replayed.config_digest != victim.config_digest {
                return Err(wrong(format!("victim2 holds {} files in /v and is another image", files.count("v"))));
            }
        }
        Scenario::Push | Scenario::Rmi | Scenario::Prune => {
            if case.scenario == Scenario::Push {
                let dest = format!("{}/push{}:1", w.registry.host(), case.id);
                need(w.kiln_at(store, &["push", "victim", &dest]), "the next push")?;
            }
            need(w.build_at(store, "vcheck.Dockerfile", "vcheck", &[]), "the next build")?;
            let img =
                Files::of(&image_at(store, "vcheck:latest").map_err(|e| wrong(format!("vcheck unreadable: {e}")))?);
            let seen = img.text("vcount");
            if seen != V_FILES.to_string() || img.count("v") != V_FILES {
                return Err(wrong(format!(
                    "vcheck: RUN counted {seen} files in /v, the layers hold {}, want {V_FILES}",
                    img.count("v")
                )));
            }
        }
    }
    Ok(())
}

fn run_case(w: &World, case: &Case, summary: &Mutex<Summary>) {
    let rel = format!("cases/{}", case.id);
    let dir = w.sb.mkdir(&rel);
    let store = dir.join("store");
    let mut t = Instant::now();
    let mut lap = || {
        let d = t.elapsed();
        t = Instant::now();
        d
    };
    w.copy_store(&store);
    let copy = lap();
    let run = run_killed(w, case, &dir, &store);
    let kill = lap();
    let left = reap_leftovers(&w.uids, run.pgid, &run.marker, &store, Duration::from_secs(3));
    let mounts = mounts_under(&dir);
    let reap = lap();
    let label = case.label();
    let log = || {
        format!(
            "{}{}",
            fs::read_to_string(dir.join("out")).unwrap_or_default(),
            fs::read_to_string(dir.join("err")).unwrap_or_default()
        )
    };
    let consistent = check_store(w, &store);
    let check = lap();
    let next = next_steps(w, case, &store);
    let next_t = lap();
    let mut s = summary.lock().unwrap();
    for (acc, d) in s.phases.iter_mut().zip([copy, kill, reap, check, next_t]) {
        *acc += d;
    }
    s.cases += 1;
    if run.killed {
        s.kills += 1;
    } else if matches!(case.kill, Kill::Fault { .. }) {
        s.unfired.push(label.clone());
    }
    if !left.is_empty() {
        s.orphans.push(format!("{label}: {left:?}"));
    }
    if !mounts.is_empty() {
        s.mounts.push(format!("{label}: {mounts:?}"));
    }
    if let Err(e) = consistent {
        s.inconsistent.push(format!("{label}: {e}\nkilled run's output:\n{}", log()));
    }
    match next {
        Ok(()) => {}
        Err(Bad::WrongFs(e)) => s.wrong_fs.push(format!("{label}: {e}")),
        Err(Bad::Failed(e)) => s.failed_next.push(format!("{label}: {e}\nkilled run's output:\n{}", log())),
    }
    if s.cases % 20 == 0 {
        eprintln!("kill points: {} cases done, {} kills", s.cases, s.kills);
    }
    drop(s);
    w.remove_tree(&dir);
}

/// Builds the template store every case starts from, the pulled image in
/// the registry, and measures each scenario once unkilled.
fn world() -> World {
    let sb = Sandbox::with_kiln(&fault_kiln());
    require_fuse(&sb);
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.write("ctx/keep.txt", "keep\n");
    for i in 0..C_FILES {
        sb.write(&format!("ctx/many/f{i}"), format!("c{i}\n"));
    }
    let mut rng = Rng::new(7);
    let big: Vec<u8> = (0..BIG_BYTES / 8).flat_map(|_| rng.next().to_le_bytes()).collect();
    sb.write("ctx/big.bin", big);
    sb.write("ctx/base.Dockerfile", RUN_BASE);
    sb.write("ctx/keep.Dockerfile", "FROM scratch\nCOPY keep.txt /keep.txt\n");
    sb.write("ctx/victim.Dockerfile", victim_dockerfile());
    sb.write("ctx/vcheck.Dockerfile", victim_check_dockerfile());
    sb.write("ctx/work.Dockerfile", work_dockerfile());
    sb.write("ctx/pr1.Dockerfile", format!("FROM base\n{}", step("p", 1000)));
    sb.write("ctx/pr2.Dockerfile", "FROM base\nRUN echo 2 > /x\n");
    sb.write("ctx/pullme.Dockerfile", format!("FROM base\n{}", step("q", Q_FILES)));
    sb.write("ctx/cached.Dockerfile", cached_dockerfile());
    sb.write("ctx/kcheck.Dockerfile", "FROM cached\nRUN find /k -type f | wc -l > /kcount2\n");

    let registry = Registry::start();
    let template = sb.mkdir("template-parent").join("template");
    let uids = user_uids(sb.ids().0);
    let mut w = World {
        sb,
        template: template.clone(),
        pull_ref: format!("{}/pullme:1", registry.host()),
        cache_ref: format!("type=registry,ref={}/kcache:1", registry.host()),
        registry,
        uids,
        durations: BTreeMap::new(),
    };
    // The image that gets pulled is made in a store of its own.
    let pstore = w.sb.path("pstore");
    w.build_at(&pstore, "base.Dockerfile", "base", &[]).ok();
    w.build_at(&pstore, "pullme.Dockerfile", "pullme", &[]).ok();
    w.kiln_at(&pstore, &["push", "pullme", &w.pull_ref]).ok();
    w.remove_tree(&pstore);

    for (file, tag) in [
        ("base.Dockerfile", "base"),
        ("keep.Dockerfile", "keep:1"),
        ("victim.Dockerfile", "victim"),
        ("pr1.Dockerfile", "pr"),
        ("pr2.Dockerfile", "pr"),
    ] {
        w.build_at(&template, file, tag, &[]).ok();
    }
    w.kiln_at(&template, &["system", "check"]); // (a later kiln's check may tidy the template once)

    // The shared cache, exported by another runner whose store has the template's base (a RUN-built
    // base is not reproducible); the template itself keeps no record of it.
    let kstore = w.sb.path("kstore");
    w.copy_store(&kstore);
    let cache_to = w.cache_ref.replacen("type=registry", "type=registry,mode=max", 1);
    w.build_at(&kstore, "cached.Dockerfile", "cached", &["--cache-to", &cache_to]).ok();
    w.remove_tree(&kstore);

    // Each scenario once, unkilled: it must work, and its duration bounds the delays.
    for s in SCENARIOS {
        let dir = w.sb.mkdir(&format!("measure/{s:?}"));
        let store = dir.join("store");
        w.copy_store(&store);
        let args = w.scenario_args(s, &store, 100_000 + s as usize, false);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = Instant::now();
        w.sb.kiln_raw(&args, None, &[]).ok();
        w.durations.insert(s, t.elapsed());
        w.remove_tree(&dir);
    }
    w
}

fn cases(w: &World) -> Vec<Case> {
    let timing: usize = std::env::var("KILN_KILL_TIMING").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let mut rng = Rng::new(seed());
    let mut out = Vec::new();
    for s in SCENARIOS.into_iter().filter(|s| scenario_selected(*s)) {
        for (point, hits) in fault_points(s) {
            for n in hits {
                for group in [true, false] {
                    out.push(Case {
                        id: out.len(),
                        scenario: s,
                        kill: Kill::Fault { point: format!("{point}@{n}"), group },
                    });
                }
            }
        }
        let span = w.durations[&s].as_secs_f64();
        let timing = if matches!(s, Scenario::Export | Scenario::Replay) { timing.min(EXPORT_TIMING) } else { timing };
        for group in [true, false] {
            for _ in 0..timing {
                // Anywhere within its unkilled length (an idle machine runs it
                // no faster than the measurement did).
                let delay = Duration::from_secs_f64(0.02 + rng.unit() * span * 0.9);
                out.push(Case { id: out.len(), scenario: s, kill: Kill::After { delay, group } });
            }
        }
    }
    out
}

/// Whether `KILN_KILL_SCENARIOS` (names as in [`Scenario`], comma-separated; unset: all) selects `s`.
fn scenario_selected(s: Scenario) -> bool {
    std::env::var("KILN_KILL_SCENARIOS").map_or(true, |v| v.split(',').any(|n| n.trim() == format!("{s:?}")))
}

#[test]
fn kill_points() {
    let started = Instant::now();
    let w = world();
    let setup = started.elapsed();
    let stride: usize = std::env::var("KILN_KILL_STRIDE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let cases: Vec<Case> = cases(&w).into_iter().step_by(stride).collect();
    let workers: usize = std::env::var("KILN_KILL_WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let next = AtomicUsize::new(0);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                run_case(&w, case, &summary);
            });
        }
    });
    let s = summary.into_inner().unwrap();
    let show = |what: &str, v: &[String]| {
        for e in v.iter().take(5) {
            eprintln!("--- {what}: {e}");
        }
        if v.len() > 5 {
            eprintln!("--- … and {} more {what}", v.len() - 5);
        }
    };
    show("inconsistent after repair", &s.inconsistent);
    show("wrong filesystem", &s.wrong_fs);
    show("orphan processes", &s.orphans);
    show("mounts left", &s.mounts);
    show("next step failed", &s.failed_next);
    if !s.unfired.is_empty() {
        eprintln!("kill points: fault points not reached (no kill): {}", s.unfired.join("; "));
    }
    let phases: Vec<String> = ["copy", "kill", "reap", "check", "next"]
        .iter()
        .zip(s.phases)
        .map(|(n, d)| format!("{n} {:.0}s", d.as_secs_f64()))
        .collect();
    eprintln!("kill points: time per phase, all cases: {}", phases.join(", "));
    let durations: Vec<String> = w.durations.iter().map(|(k, v)| format!("{k:?} {:.2}s", v.as_secs_f64())).collect();
    eprintln!(
        "kill points: {} cases in {:.0}s (setup {:.0}s; unkilled: {}), {} mounts left, {} next steps failed",
        s.cases,
        started.elapsed().as_secs_f64(),
        setup.as_secs_f64(),
        durations.join(", "),
        s.mounts.len(),
        s.failed_next.len()
    );
    println!(
        "kill points: {} kills, {} inconsistent after repair, {} wrong filesystems, {} orphan processes",
        s.kills,
        s.inconsistent.len(),
        s.wrong_fs.len(),
        s.orphans.len()
    );
    assert!(
        s.inconsistent.is_empty()
            && s.wrong_fs.is_empty()
            && s.orphans.is_empty()
            && s.mounts.is_empty()
            && s.failed_next.is_empty(),
        "the store did not survive every kill (details above)"
    );
    if std::env::var_os("KILN_KILL_TIMING").is_none()
        && std::env::var_os("KILN_KILL_SCENARIOS").is_none()
        && stride == 1
    {
        assert!(s.kills >= 200, "only {} of {} cases killed kiln", s.kills, s.cases);
    }
}
