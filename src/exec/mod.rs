//! The executor: the only loop with I/O. It walks the planned stages, applies
//! each step to the stage's state, writes layers and the final image.

pub mod chmod;
pub mod copy;
mod fetch;
mod finish;
use crate::cache::fromkey;
pub use crate::humanize::{human_size, short};
pub use crate::store::layers;
pub mod mounts;
pub mod owner;
pub mod run;
pub mod squash;
pub mod state;
pub mod tree;
pub mod workdir;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kiln_overlay::compress::Compression;
use kiln_overlay::layer::LayerWriter;

use self::layers::LayerDirs;
use crate::context::layered::LayerView;
use crate::context::{BuildContext, SourceTree};
use crate::dockerfile::ast::Span;
use crate::image::config::{ImageConfig, RootFs};
use crate::image::manifest::{self, Descriptor};
use crate::plan::{Base, BuildPlan, CopyFrom, CopyStep, RunStep, Stage, Step, StepKind};
use crate::store::{Image, Store, StoreError};
use crate::transport::{self, Transport};
use kiln_overlay::mount::Driver;

use self::chmod::Chmod;
use self::copy::{CopyEnv, Data};
use self::state::{StageState, DEFAULT_PATH};
use crate::cache::{Cache, StepInputs};
use crate::context::digest::StatCache;
use crate::progress::{Event, LayerContents, Reporter, StepRef};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A step failed; the location lets the CLI point at the Dockerfile.
    #[error("{file}:{line}:{column}: {instruction}")]
    Step {
        file: String,
        line: usize,
        column: usize,
        instruction: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// How to look at the state before the failed step.
        hint: Option<String>,
    },
    #[error("image {0:?} is not in the local store")]
    ImageNotFound(String),
    #[error("build context {0:?} is {1}: FROM needs an image (use --build-context {0}=docker-image://REF)")]
    DirContextAsImage(String, String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("write layer")]
    Layer(#[source] std::io::Error),
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    Platform(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("squash the stage's layers")]
    Squash(#[from] squash::SquashError),
    /// Boxed: it carries registry errors, which would double every result's size.
    #[error(transparent)]
    RemoteCache(Box<crate::remotecache::RemoteCacheError>),
}

impl From<crate::remotecache::RemoteCacheError> for ExecError {
    fn from(e: crate::remotecache::RemoteCacheError) -> Self {
        ExecError::RemoteCache(Box::new(e))
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// How layers are committed: plain tars by default (compressed when the
    /// image is pushed or exported, see `store::compressed`); `--compression`
    /// compresses at commit instead.
    pub compression: Compression,
    /// `--compression-level` (checked by the CLI); `None` is the compression's default.
    pub compression_level: Option<u32>,
    /// `os/arch[/variant]` for images FROM scratch; others keep their base's.
    pub platform: Option<String>,
    /// Names "the same Dockerfile" across builds, so misses can be explained.
    pub cache_identity: String,
    /// `--no-cache`: run every step (records are still written).
    pub no_cache: bool,
    /// `--no-cache-filter`: stage names (or indexes) whose steps always run.
    pub no_cache_stages: Vec<String>,
    /// `--storage-driver`; detected on first use when `None`.
    pub storage_driver: Option<Driver>,
    /// Keep RUN output to show only when a step fails.
    pub quiet: bool,
    /// Stages built at the same time, at most (`--jobs`).
    pub jobs: usize,
    /// `--build-context name=…`: what FROM and `COPY --from` mean by `name`.
    pub named_contexts: HashMap<String, NamedContext>,
    /// `--pull` and how to reach registries for base images.
    pub pull: crate::registry::PullOptions,
    /// `--label`: added to the final image's labels, over the Dockerfile's.
    pub labels: Vec<(String, String)>,
    /// `--annotation`: put on the final image's manifest and index entry.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `--format docker`: the final image is stored as Docker v2s2.
    pub docker_format: bool,
    /// `--squash`: the final stage's own layers become one.
    pub squash: bool,
    /// `--layers` (default true); false gives one new layer per stage.
    pub layers: bool,
    /// `--source-date-epoch` / `SOURCE_DATE_EPOCH`: clamps mtimes, sets `created`.
    pub source_date_epoch: Option<i64>,
    /// `--secret id=…`: what `RUN --mount=type=secret` exposes, by id.
    pub secrets: HashMap<String, mounts::SecretSource>,
    /// `--ssh id=SOCKET`: agent sockets `RUN --mount=type=ssh` forwards, by id.
    pub ssh: HashMap<String, std::path::PathBuf>,
    /// `--max-context-size`: the most bytes one `ADD <url>` may download.
    pub max_context_size: u64,
    /// `--add-host`, `--ulimit`, `--shm-size` for every RUN.
    pub run_extras: run::RunExtras,
    /// `--cache-from`: shared caches whose records count as hits.
    pub cache_from: Vec<crate::remotecache::Location>,
    /// `--cache-to`: where this build's records go once it succeeded.
    pub cache_to: Vec<crate::remotecache::CacheTo>,
}

/// A `--build-context` value.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedContext {
    /// A local directory, read like the main context: its own
    /// `.dockerignore` (else `.containerignore`) applies, as in BuildKit.
    Dir(std::path::PathBuf),
    /// A git URL (`repo.git#ref:subdir`, `git@…`) or an http(s) URL of a tar
    /// archive, fetched once per build when first used.
    Remote(String),
    /// An image reference (any form `FROM` takes).
    Image(String),
}

impl NamedContext {
    /// A set of files (directory or remote) rather than an image.
    pub fn is_files(&self) -> bool {
        matches!(self, NamedContext::Dir(_) | NamedContext::Remote(_))
    }
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            compression: Compression::None,
            compression_level: None,
            platform: None,
            cache_identity: String::new(),
            no_cache: false,
            no_cache_stages: Vec::new(),
            storage_driver: None,
            quiet: false,
            jobs: 1,
            named_contexts: HashMap::new(),
            pull: Default::default(),
            labels: Vec::new(),
            annotations: Default::default(),
            docker_format: false,
            squash: false,
            layers: true,
            source_date_epoch: None,
            secrets: HashMap::new(),
            ssh: HashMap::new(),
            max_context_size: crate::context::remote::DEFAULT_MAX_SIZE,
            run_extras: Default::default(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
        }
    }
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub manifest: Descriptor,
    /// The image id: the config's digest, as docker and podman show it.
    pub image_id: String,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    pub new_layer_bytes: u64,
}

struct Stamp {
    created: String,
    seconds: i64,
}

/// Builds `plan` from `ctx` into `store`, reporting each step's progress to
/// `progress`. Stages that do not depend on each other build in parallel,
/// up to `opts.jobs` at a time.
pub fn build(
    store: &Store,
    ctx: &BuildContext,
    plan: &BuildPlan,
    opts: &BuildOptions,
    progress: &dyn Reporter,
) -> Result<BuildOutput, ExecError> {
    let _builds = store.builds_lock(|| clear_leftovers(store))?;
    let mut cache = Cache::open(store, &opts.cache_identity);
    // --no-cache ignores imported caches too, as in BuildKit.
    let imported = match opts.cache_from.is_empty() || opts.no_cache {
        true => crate::remotecache::Imported::default(),
        false => crate::remotecache::Imported::open(&opts.cache_from, &opts.pull.registry, progress)?,
    };
    cache.set_imported(imported.step_inputs().clone());
    let stat = StatCache::load(&cache.stat_cache_path(ctx.root()));
    let scratch = tempfile::Builder::new().prefix("build-").tempdir_in(store.tmp_dir()).map_err(ExecError::Layer)?;
    let exec = Executor {
        store,
        ctx,
        plan,
        opts,
        progress,
        stamp: stamp(opts.source_date_epoch),
        cache: Mutex::new(cache),
        stat: Mutex::new(stat),
        layer_dirs: LayerDirs::new(store),
        driver: OnceLock::new(),
        from_mounts: Mutex::new(Vec::new()),
        done: Mutex::new(HashMap::new()),
        unpacked: Mutex::new(HashMap::new()),
        views: Mutex::new(HashMap::new()),
        new_layer_bytes: AtomicU64::new(0),
        readers: readers(plan),
        fetcher: fetch::Fetcher::new(
            scratch.path().join("fetch"),
            crate::context::remote::DownloadLimits::new(opts.max_context_size),
        ),
        scratch,
        imported,
        exported: Mutex::new(HashMap::new()),
        remote_hits: Mutex::new(Vec::new()),
        copy_from_used: Mutex::new(Vec::new()),
    };
    let started = Instant::now();
    exec.schedule()?;
    let _ = exec.cache.lock().expect("cache lock").save_log();
    let _ = exec.stat.lock().expect("stat lock").save();
    let state = exec.done.lock().expect("done lock").remove(&plan.target).expect("target stage was built");
    let mut state = state;
    if opts.squash && opts.layers {
        exec.squash(&mut state)?;
    }
    let mut config = state.config;
    // The last step's time, so a fully cached build gives the same image id.
    let last = config.history.last().and_then(|h| h.created.clone());
    config.created = Some(last.unwrap_or_else(|| exec.stamp.created.clone()));
    finish::apply(&mut config, opts, &exec.stamp.created, state.base_history);
    kiln_runtime::ensure_still_wanted().map_err(|e| ExecError::Layer(e.into_io()))?;
    // The image names only layers the store holds, verified.
    exec.fetch_layers(&state.layers, &config.rootfs.diff_ids, None)?;
    let desc = store.write_image_as(&config, &state.layers, &opts.annotations, opts.docker_format)?;
    exec.keep_remote_hits();
    exec.export_caches()?;
    let image_id = desc_config_digest(store, &desc)?;
    let new_layer_bytes = exec.new_layer_bytes.load(Ordering::Relaxed);
    progress.report(Event::Built { image_id: image_id.clone(), new_layer_bytes, elapsed: started.elapsed() });
    Ok(BuildOutput { manifest: desc, image_id, config, layers: state.layers, new_layer_bytes })
}

/// A `--from` stage or image: a key naming it in this build, its layers and diff_ids.
type FromLayers = (String, Vec<Descriptor>, Vec<String>);

/// A `--from` source ready to copy from: a context over its root directory.
type Unpacked = Arc<BuildContext>;

/// Shared by the threads that build independent stages; each field that
/// changes is behind its own lock.
struct Executor<'a> {
    store: &'a Store,
    ctx: &'a BuildContext,
    plan: &'a BuildPlan,
    opts: &'a BuildOptions,
    progress: &'a dyn Reporter,
    stamp: Stamp,
    cache: Mutex<Cache>,
    stat: Mutex<StatCache>,
    layer_dirs: LayerDirs,
    driver: OnceLock<Driver>,
    /// Overlay views of `--from` stages and images, mounted for the build
    /// (unmounted when dropped, before their directories are removed).
    from_mounts: Mutex<Vec<(kiln_overlay::MountGuard, tempfile::TempDir)>>,
    done: Mutex<HashMap<usize, StageState>>,
    /// `--from` sources unpacked once per build, by stage index or image id.
    unpacked: Mutex<HashMap<String, Unpacked>>,
    /// `COPY --from` views of stages' and images' layer dirs, by the same keys.
    views: Mutex<HashMap<String, Arc<LayerView>>>,
    new_layer_bytes: AtomicU64,
    /// For each stage, how many needed stages read it (FROM, `--from`).
    readers: Vec<usize>,
    /// ADD sources behind URLs, fetched once per build.
    fetcher: fetch::Fetcher,
    scratch: tempfile::TempDir,
    /// The `--cache-from` caches.
    imported: crate::remotecache::Imported,
    /// Each stage's step records (hits and runs), in order, for `--cache-to`.
    exported: Mutex<HashMap<usize, Vec<(String, crate::cache::Record)>>>,
    /// Hits from imported caches, recorded in the store's own cache once
    /// their layers are in the store.
    remote_hits: Mutex<Vec<(String, crate::cache::Record)>>,
    /// What `COPY --from` steps read out of stages, for `--cache-to`.
    copy_from_used: Mutex<Vec<crate::remotecache::CopyFromDigest>>,
}

impl<'a> Executor<'a> {
    /// Remembers a step's record for `--cache-to`.
    fn note_record(&self, stage: usize, key: &str, record: crate::cache::Record) {
        if !self.opts.cache_to.is_empty() {
            self.exported.lock().expect("exported lock").entry(stage).or_default().push((key.to_string(), record));
        }
    }

    /// Fetches the layers an imported cache's hits named and the store
    /// lacks (each verified against its digest and diff_id as it streams).
    fn fetch_layers(
        &self,
        layers: &[Descriptor],
        diff_ids: &[String],
        step: Option<&StepRef>,
    ) -> Result<(), ExecError> {
        if self.imported.is_empty() {
            return Ok(());
        }
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            if let Some(from) = self.imported.fetch(self.store, layer, diff_id)? {
                let (digest, size) = (short(&layer.digest), human_size(layer.size));
                let prefix = step.map(StepRef::prefix).unwrap_or_default();
                self.report(Event::Note(format!("{prefix}--> fetched layer {digest} ({size}) from cache {from}")));
            }
        }
        Ok(())
    }

    /// Records the shared cache's hits in the store's own cache, each once
    /// its layers are in the store (a record never names a missing blob).
    fn keep_remote_hits(&self) {
        let hits = std::mem::take(&mut *self.remote_hits.lock().expect("remote hits lock"));
        let cache = self.cache.lock().expect("cache lock");
        // Present and paired with the diff_id verified for it (nothing is downloaded here).
        let usable = |r: &crate::cache::Record| {
            r.layers
                .iter()
                .zip(&r.diff_ids)
                .all(|(l, d)| self.store.has_blob(&l.digest) && self.imported.fetch(self.store, l, d).is_ok())
        };
        for (key, record) in hits.iter().filter(|(_, r)| usable(r)) {
            if let Err(e) = cache.put(key, record) {
                log::warn!("could not write the cache record {}: {}", short(key), e);
            }
        }
    }

    /// Writes each `--cache-to`: with `mode=min` the steps of the final
    /// image's stages (the target and the stages it is built FROM), with
    /// `mode=max` every stage's.
    fn export_caches(&self) -> Result<(), ExecError> {
        if self.opts.cache_to.is_empty() {
            return Ok(());
        }
        let exported = self.exported.lock().expect("exported lock");
        let mut chain = vec![self.plan.target];
        while let Base::Stage(i) = self.plan.stages[*chain.last().expect("not empty")].base {
            chain.push(i);
        }
        chain.reverse();
        let copy_from = self.copy_from_used.lock().expect("copy-from lock").clone();
        let steps = self.cache.lock().expect("cache lock").steps().clone();
        for to in &self.opts.cache_to {
            let stages: Vec<usize> = match to.mode {
                crate::remotecache::Mode::Min => chain.clone(),
                crate::remotecache::Mode::Max => self.plan.needed.clone(),
            };
            let records: Vec<(String, crate::cache::Record)> =
                stages.iter().filter_map(|i| exported.get(i)).flatten().cloned().collect();
            // The inputs of the exported stages' steps only: a miss on a step
            // the cache lacks is no news about what changed.
            let steps: std::collections::BTreeMap<String, StepInputs> = steps
                .iter()
                .filter(|(pos, _)| pos.split_once('/').is_some_and(|(i, _)| stages.iter().any(|s| s.to_string() == i)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let export = crate::remotecache::Export { records: &records, copy_from: &copy_from, steps: &steps };
            match crate::remotecache::export(
                self.store,
                to,
                &export,
                &self.imported,
                &self.opts.pull.registry,
                self.progress,
            ) {
                Ok(digest) => {
                    self.report(Event::Note(format!("--> cache exported to {} ({})", to.location, short(&digest))));
                }
                Err(e) if to.ignore_error => log::warn!("{}", crate::registry::chain_error(&e)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn driver(&self) -> Driver {
        *self.driver.get_or_init(|| {
            let d = self
                .opts
                .storage_driver
                .unwrap_or_else(|| kiln_overlay::mount::detect_driver_in(&self.store.tmp_dir()));
            log::info!("storage driver: {}", d);
            d
        })
    }

    fn report(&self, event: Event) {
        self.progress.report(event);
    }

    /// Runs every needed stage once the stages it depends on are done, at
    /// most `jobs` at a time. The first failure stops new stages from
    /// starting; running ones finish, then the failure is returned.
    fn schedule(&self) -> Result<(), ExecError> {
        let needed = &self.plan.needed;
        let total = needed.len();
        let jobs = self.opts.jobs.max(1);
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<StageState, ExecError>)>();
        // Readiness is counted, not searched for: scanning every stage for
        // ready ones after each finished stage made a Dockerfile of
        // thousands of stages take cubic time to schedule.
        let count = self.plan.stages.len();
        let mut position = vec![usize::MAX; count];
        needed.iter().enumerate().for_each(|(n, &i)| position[i] = n);
        // For each stage, the needed stages it waits for, and who waits for it.
        let mut waiting = vec![0usize; count];
        let mut waiters: Vec<Vec<usize>> = vec![Vec::new(); count];
        for &i in needed {
            for &d in self.plan.stages[i].deps.iter().filter(|&&d| position[d] != usize::MAX) {
                waiting[i] += 1;
                waiters[d].push(i);
            }
        }
        // Ready stages by position in `needed`: the earliest starts first.
        let mut ready: std::collections::BTreeSet<usize> =
            needed.iter().filter(|&&i| waiting[i] == 0).map(|&i| position[i]).collect();
        let (mut started, mut finished) = (0usize, 0usize);
        // How many needed stages read each stage and have not finished.
        let mut readers = self.readers.clone();
        let mut failure: Option<ExecError> = None;
        std::thread::scope(|scope| loop {
            while failure.is_none() && started - finished < jobs {
                let Some(n) = ready.pop_first() else { break };
                let index = needed[n];
                let stage = &self.plan.stages[index];
                started += 1;
                let position = (total > 1).then_some((n + 1, total));
                let tx = tx.clone();
                scope.spawn(move || {
                    let _ = tx.send((index, self.stage(stage, position)));
                });
            }
            if started == finished {
                break;
            }
            let Ok((index, result)) = rx.recv() else { break };
            finished += 1;
            if result.is_ok() {
                for &w in &waiters[index] {
                    waiting[w] -= 1;
                    if waiting[w] == 0 {
                        ready.insert(position[w]);
                    }
                }
            }
            match result {
                Ok(state) => {
                    let mut done = self.done.lock().expect("done lock");
                    done.insert(index, state);
                    // A stage's state is dropped once every stage that reads
                    // it is done: a chain of thousands of stages would
                    // otherwise keep thousands of configs (16 GB for 10,000).
                    for &d in &self.plan.stages[index].deps {
                        readers[d] = readers[d].saturating_sub(1);
                        if readers[d] == 0 && d != self.plan.target {
                            done.remove(&d);
                        }
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stage(&self, stage: &Stage, position: Option<(usize, usize)>) -> Result<StageState, ExecError> {
        let started = Instant::now();
        let mut state = self.base(stage).map_err(|e| self.fail(stage.span, &stage.original, e))?;
        let triggers =
            self.onbuild_triggers(stage, &mut state).map_err(|e| self.fail(stage.span, &stage.original, e))?;
        let steps: Vec<&Step> = triggers.iter().chain(stage.steps.iter()).collect();
        let total = steps.len() + 1;
        let at = |number: usize| StepRef { stage: position, number, total };
        // Announced once the base is known: how many steps the stage has
        // depends on the base's ONBUILD triggers.
        self.report(Event::StepStarted { step: at(1), instruction: stage.original.clone() });
        if let Base::Image(reference) = &stage.base {
            let id = short(state.base_id.as_deref().unwrap_or(&state.key)).to_string();
            self.report(Event::BaseImage { step: at(1), reference: reference.clone(), id });
        }
        if !triggers.is_empty() {
            self.report(Event::Triggers { count: triggers.len() });
        }
        self.report(Event::StepFinished { step: at(1), cached: false, elapsed: started.elapsed() });
        finish::scope_key(&mut state, self.opts);
        let use_cache = !self.opts.no_cache
            && !self
                .opts
                .no_cache_stages
                .iter()
                .any(|f| Some(f) == stage.name.as_ref() || *f == stage.index.to_string());
        for (i, step) in steps.into_iter().enumerate() {
            // A step boundary: stop here once interrupted or orphaned.
            kiln_runtime::ensure_still_wanted().map_err(|e| self.fail(step.span, &step.original, Box::new(e)))?;
            let started = Instant::now();
            self.report(Event::StepStarted { step: at(i + 2), instruction: step.original.clone() });
            let pos = format!("{}/{}", stage.index, i);
            let inputs = self.inputs(&state, step).map_err(|e| self.fail(step.span, &step.original, e))?;
            let key = inputs.key.clone();
            self.cache.lock().expect("cache lock").note(&pos, inputs.clone());
            if use_cache {
                let record = self.cache.lock().expect("cache lock").get(&key, &state.key, self.store);
                if let Some(record) = record {
                    let layers = !record.layers.is_empty();
                    if state.restore(&step.kind, record.clone(), key.clone()) {
                        // The id the step printed when it ran: its image is
                        // written again if a prune took it.
                        let id = match layers {
                            true => Some(
                                self.step_image(&state)
                                    .map_err(|e| self.fail(step.span, &step.original, Box::new(e)))?,
                            ),
                            false => None,
                        };
                        self.report(Event::CacheHit { step: at(i + 2), id, from: None });
                        self.report(Event::StepFinished { step: at(i + 2), cached: true, elapsed: started.elapsed() });
                        self.note_record(stage.index, &key, record);
                        continue;
                    }
                }
                // A hit in a shared cache takes the layers by digest; they
                // are fetched when something reads them. It shows no step
                // id: that image would name layers the store does not hold.
                if let Some((record, kind)) = self.imported.get(&key, &state.key) {
                    if state.restore(&step.kind, record.clone(), key.clone()) {
                        let from = Some(kind.to_string());
                        self.report(Event::CacheHit { step: at(i + 2), id: None, from });
                        self.report(Event::StepFinished { step: at(i + 2), cached: true, elapsed: started.elapsed() });
                        self.note_record(stage.index, &key, record.clone());
                        self.remote_hits.lock().expect("remote hits lock").push((key.clone(), record));
                        continue;
                    }
                }
                if let Some(why) = self.cache.lock().expect("cache lock").explain_miss(&pos, &inputs) {
                    self.report(Event::CacheMiss { step: at(i + 2), reason: why });
                }
            }
            if matches!(step.kind, StepKind::Run(_) | StepKind::Copy(_) | StepKind::Workdir(_)) {
                // The step reads the state's files: its layers must be here.
                self.fetch_layers(&state.layers, &state.config.rootfs.diff_ids, Some(&at(i + 2)))
                    .map_err(|e| self.fail(step.span, &step.original, Box::new(e)))?;
            }
            let (mark, parent) = (state.mark(), state.key.clone());
            if let Err(e) = self.step(&mut state, step, &at(i + 2)) {
                let mut err = self.fail(step.span, &step.original, e);
                if let (ExecError::Step { hint, .. }, Some(id)) = (&mut err, self.keep_last_good(&state)) {
                    *hint = Some(format!(
                        "the state before this step is image {}: look inside with `kiln run -it {} sh`",
                        id, id
                    ));
                }
                return Err(err);
            }
            state.key = key.clone();
            let record = state.record(mark, &parent);
            if let Err(e) = self.cache.lock().expect("cache lock").put(&key, &record) {
                log::warn!("could not write the cache record for step {}: {}", pos, e);
            }
            self.report(Event::StepFinished { step: at(i + 2), cached: false, elapsed: started.elapsed() });
            self.note_record(stage.index, &key, record);
        }
        if !self.opts.layers {
            self.squash(&mut state).map_err(|e| self.fail(stage.span, &stage.original, Box::new(e)))?;
        }
        Ok(state)
    }

    /// Merges the stage's own layers into one (`--squash`, `--layers=false`).
    fn squash(&self, state: &mut StageState) -> Result<(), ExecError> {
        self.fetch_layers(&state.layers, &state.config.rootfs.diff_ids, None)?;
        let layer = squash::squash_stage(
            self.store,
            state,
            self.opts.compression,
            self.opts.compression_level,
            self.opts.source_date_epoch,
            self.scratch.path(),
        )?;
        if let Some(layer) = layer {
            self.report(Event::Squashed { digest: short(&layer.digest).to_string(), size: layer.size });
        }
        Ok(())
    }

    /// An image base's ONBUILD triggers run first, as docker runs them. No
    /// base's triggers carry over into this stage's config (BuildKit sets
    /// `OnBuild = nil`), so a grandchild never runs them again; a stage
    /// base's triggers were planned as this stage's first steps.
    fn onbuild_triggers(
        &self,
        stage: &Stage,
        state: &mut StageState,
    ) -> Result<Vec<Step>, Box<dyn std::error::Error + Send + Sync>> {
        let inherited = state.config.config.on_build.take();
        if !matches!(stage.base, Base::Image(_)) || stage.image_triggers_planned {
            return Ok(Vec::new());
        }
        let Some(triggers) = inherited.filter(|t| !t.is_empty()) else {
            return Ok(Vec::new());
        };
        let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
        let name = format!("{} (ONBUILD of {})", self.plan.file, stage.original);
        let df = crate::dockerfile::parse(&text, &name)?;
        let env = state.config.config.env.clone();
        let plan = crate::plan::plan(
            &df,
            &crate::plan::PlanOptions { build_args: Vec::new(), target: None, platform: None },
            &|_| env.clone(),
        )?;
        let mut steps = plan.stages.into_iter().next().map(|s| s.steps).unwrap_or_default();
        for step in &mut steps {
            // Errors point at the FROM that pulled the trigger in.
            step.span = stage.span;
        }
        Ok(steps)
    }

    /// The step's cache key and what it saw. COPY/ADD from the context
    /// digest their sources here, before anything is copied.
    fn inputs(&self, state: &StageState, step: &Step) -> Result<StepInputs, Box<dyn std::error::Error + Send + Sync>> {
        let mut files = std::collections::BTreeMap::new();
        let extra = match &step.kind {
            StepKind::Copy(c) => match &c.from {
                None => {
                    let mut digest = crate::context::digest::sources(
                        self.ctx,
                        &c.sources,
                        &mut self.stat.lock().expect("stat lock"),
                    )?;
                    self.fetcher.describe(c, &mut digest.files)?;
                    files = digest.shown();
                    digest.digest()
                }
                Some(from) if self.views_of(from) => {
                    let memo = self.copy_from_digest(from, &c.sources)?;
                    files = memo.files;
                    memo.digest
                }
                Some(from) => {
                    let source = self.source_of(from)?;
                    let digest = crate::context::digest::sources(
                        &*source,
                        &c.sources,
                        &mut self.stat.lock().expect("stat lock"),
                    )?;
                    files = digest.shown();
                    digest.digest()
                }
            },
            StepKind::Run(r) if !r.mounts.is_empty() => self.bind_inputs(r, &mut files)?,
            _ => String::new(),
        };
        // A layer written with other compression is another blob; so is one at another level (the default
        // level adds nothing, so keys made before levels existed still match).
        let level = match self.opts.compression_level {
            Some(l) if Some(l) != self.opts.compression.default_level() => format!("@{}", l),
            _ => String::new(),
        };
        let extra = match &step.kind {
            // A layer cached under older COPY rules is not this kiln's COPY.
            StepKind::Copy(_) => format!("{}|{:?}{}|{}", extra, self.opts.compression, level, copy::RULES),
            StepKind::Run(_) => {
                format!("{}|{:?}{}{}", extra, self.opts.compression, level, self.opts.run_extras.cache_text())
            }
            StepKind::Workdir(_) => format!("{}|{:?}{}", extra, self.opts.compression, level),
            _ => extra,
        };
        let args = match &step.kind {
            StepKind::Run(r) => r
                .build_args
                .to_vec()
                .into_iter()
                .filter(|(k, _)| !crate::cache::PROXY_ARGS.contains(&k.as_str()))
                .collect(),
            _ => Default::default(),
        };
        Ok(StepInputs {
            key: crate::cache::step_key(&state.key, step, &extra),
            parent: state.key.clone(),
            instruction: step.original.clone(),
            args,
            files,
        })
    }

    /// Writes the stage's state as an untagged image, for debugging a failed step.
    fn keep_last_good(&self, state: &StageState) -> Option<String> {
        // An interrupted build writes nothing more.
        if state.layers.is_empty() || !kiln_runtime::still_wanted() {
            return None;
        }
        self.write_step_image(state).ok()
    }

    /// The id printed for a step that added layers (see
    /// [`Self::write_step_image`]); a quiet build prints none, so it writes
    /// none.
    fn step_image(&self, state: &StageState) -> Result<String, StoreError> {
        if self.opts.quiet {
            return Ok(String::new());
        }
        self.write_step_image(state)
    }

    /// Writes the state after a step as an intermediate image and returns
    /// its short id: the id printed for the step (the same whether the step
    /// ran or came from the cache, since the config is made of the same
    /// history and layers either way) and one `kiln run`, `FROM` and
    /// `kiln inspect` accept. Its record in `kiln/cache/intermediate/` keeps
    /// it, like docker's intermediate images, until `kiln prune` (`kiln
    /// images -a` lists it). Like the final image, it is created when its
    /// last history entry was, so an unchanged step gives the same id.
    fn write_step_image(&self, state: &StageState) -> Result<String, StoreError> {
        let mut config = state.config.clone();
        let last = config.history.last().and_then(|h| h.created.clone());
        config.created = Some(last.unwrap_or_else(|| self.stamp.created.clone()));
        let desc = self.store.write_image(&config, &state.layers)?;
        let id = self.store.load_image(&desc)?.config_digest;
        if let Err(e) = self.cache.lock().expect("cache lock").keep_intermediate(&desc.digest, &id) {
            log::warn!("could not record the intermediate image {}: {}", short(&id), e);
        }
        Ok(short(&id).to_string())
    }

    fn fail(&self, span: Span, instruction: &str, err: Box<dyn std::error::Error + Send + Sync>) -> ExecError {
        ExecError::Step {
            file: self.plan.file.clone(),
            line: span.line,
            column: span.column,
            instruction: instruction.to_string(),
            source: err,
            hint: None,
        }
    }

    fn base(&self, stage: &Stage) -> Result<StageState, Box<dyn std::error::Error + Send + Sync>> {
        Ok(match &stage.base {
            Base::Scratch => {
                // FROM --platform wins over --platform, as in BuildKit.
                let (os, architecture, variant) =
                    platform(stage.platform.as_deref().or(self.opts.platform.as_deref()))?;
                let key = format!("scratch:{}/{}/{}", os, architecture, variant.clone().unwrap_or_default());
                let mut config =
                    ImageConfig { architecture, os, variant, rootfs: RootFs::default(), ..Default::default() };
                config.config.env = Some(vec![DEFAULT_PATH.to_string()]);
                let mut s = StageState::new(config, Vec::new());
                s.key = key;
                s
            }
            Base::Stage(i) => {
                let mut done = self.done.lock().expect("done lock");
                let parent = done.get_mut(i).ok_or("stage used before it was built")?;
                // The only stage that reads its parent takes the parent's
                // config and file index instead of copying them (copies made
                // a chain of thousands of stages quadratic). Its layers and
                // key stay: this stage's own `COPY --from` may read them.
                let only_reader = self.readers[*i] == 1 && *i != self.plan.target;
                let (config, tree) = match only_reader {
                    true => {
                        let config = std::mem::take(&mut parent.config);
                        // `COPY --from` of the parent reads its layers by their diff_ids.
                        parent.config.rootfs = config.rootfs.clone();
                        (config, parent.tree.take())
                    }
                    false => (parent.config.clone(), parent.tree.clone()),
                };
                let mut s = StageState::new(config, parent.layers.clone());
                // The parent's own steps are this build's, not the base image's.
                s.base_history = parent.base_history;
                s.tree = tree;
                s.key = parent.key.clone();
                s
            }
            Base::Image(reference) => {
                let image = self.image_for(reference, stage.platform.as_deref().or(self.opts.platform.as_deref()))?;
                let mut s = StageState::new(image.config, image.manifest.layers);
                s.key = image.manifest_digest.clone();
                s.base_id = Some(image.config_digest);
                s
            }
        })
    }

    fn image(&self, reference: &str) -> Result<Image, ExecError> {
        self.image_for(reference, self.opts.platform.as_deref())
    }

    /// The image `reference` names, for `platform` (`os/arch[/variant]`):
    /// picked from a multi-platform image, and an error when the image has
    /// no such platform. `None` prefers the host's.
    fn image_for(&self, reference: &str, platform: Option<&str>) -> Result<Image, ExecError> {
        let reference = match self.opts.named_contexts.get(reference) {
            Some(NamedContext::Image(r)) => r.as_str(),
            Some(NamedContext::Dir(d)) => {
                return Err(ExecError::DirContextAsImage(
                    reference.to_string(),
                    format!("the directory {}", d.display()),
                ))
            }
            Some(NamedContext::Remote(url)) => {
                return Err(ExecError::DirContextAsImage(reference.to_string(), crate::net::redact(url)))
            }
            None => reference,
        };
        match transport::parse_transport(reference) {
            Transport::Store(name) => {
                // Found in the store, or pulled from its registry per --pull.
                let mut pull = self.opts.pull.clone();
                pull.registry.platform = platform.map(str::to_string);
                Ok(crate::registry::resolve_or_pull(self.store, &name, &pull, self.progress)?)
            }
            other => {
                let wanted = platform
                    .map(crate::image::platform::Platform::parse)
                    .transpose()
                    .map_err(|e| ExecError::Platform(e.0))?;
                Ok(transport::import_for(self.store, &other, wanted.as_ref())?)
            }
        }
    }

    fn step(
        &self,
        state: &mut StageState,
        step: &Step,
        at: &StepRef,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if state.apply_metadata(&step.kind) {
            if let Some(created_by) = state.created_by(&step.kind, &step.original) {
                state.push_history(&self.stamp.created, &created_by, true);
            }
            return Ok(());
        }
        match &step.kind {
            StepKind::Copy(c) => self.copy(state, step, c, at),
            StepKind::Run(r) => self.run(state, r, at),
            StepKind::Workdir(_) => self.workdir(state, step, at),
            _ => unreachable!("apply_metadata handles every other step"),
        }
    }

    fn copy(
        &self,
        state: &mut StageState,
        step: &Step,
        c: &CopyStep,
        at: &StepRef,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let started = Instant::now();
        state.ensure_tree(self.store)?;
        let tree = state.tree.as_ref().expect("ensured above");
        let owner = match &c.chown {
            Some(spec) => Some(owner::resolve(spec, tree.file("etc/passwd"), tree.file("etc/group"))?),
            None => None,
        };
        let chmod = c.chmod.as_deref().map(Chmod::parse).transpose()?;
        let workdir = state.workdir();
        let from = c.from.as_ref().map(|f| self.source_of(f)).transpose()?;
        let source: &dyn SourceTree = match &from {
            None => self.ctx,
            Some(f) => &**f,
        };
        // Files from an image or stage keep their owners; a directory (the
        // context, a --build-context dir) is read as root's, as BuildKit does.
        let keep_owners = c.from.as_ref().is_some_and(|f| self.views_of(f));
        let env = CopyEnv {
            source,
            keep_owners,
            workdir: &workdir,
            owner,
            chmod: chmod.as_ref(),
            now: self.stamp.seconds,
            scratch: self.scratch.path(),
            fetcher: Some(&self.fetcher),
        };
        let copy::CopyPlan { entries, warnings } = copy::plan_copy(c, &env, tree)?;
        for w in warnings {
            log::warn!("{}:{}: {}: {}", self.plan.file, step.span.line, step.original, w);
        }

        let blob = self.store.blob_writer()?;
        let mut writer = LayerWriter::with_level(blob, self.opts.compression, self.opts.compression_level)
            .map_err(ExecError::Layer)?;
        for planned in entries.values() {
            crate::fault::point("copy-entry");
            let meta = &finish::clamp(&planned.meta, self.opts.source_date_epoch);
            match &planned.data {
                Data::None => writer.append(meta, None),
                Data::Bytes(b) => writer.append(meta, Some(&mut &b[..])),
                Data::Host(path) => {
                    let mut f = std::fs::File::open(path)?;
                    let mut r: &mut dyn Read = &mut f;
                    writer.append(meta, Some(&mut r))
                }
            }
            .map_err(ExecError::Layer)?;
        }
        let (blob, info) = writer.finish().map_err(ExecError::Layer)?;
        let (digest, size) = blob.commit_expecting(&info.digest, Some(info.size))?;

        let tree = state.tree.as_mut().expect("built above");
        for planned in entries.values() {
            tree.record(&planned.meta, || match &planned.data {
                Data::Bytes(b) => Some(b.clone()),
                Data::Host(p) => std::fs::read(p).ok(),
                Data::None => None,
            });
        }
        let media = layer_media_type(self.opts.compression);
        state.layers.push(Descriptor::new(media, digest.clone(), size));
        state.config.rootfs.diff_ids.push(info.diff_id);
        state.push_history(&self.stamp.created, &c.created_by(), false);
        self.new_layer_bytes.fetch_add(size, Ordering::Relaxed);
        let id = self.step_image(state)?;
        self.report(Event::Layer {
            step: at.clone(),
            id,
            size,
            contents: LayerContents::Files(entries.len()),
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    fn run(
        &self,
        state: &mut StageState,
        r: &RunStep,
        at: &StepRef,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let started = Instant::now();
        let driver = self.driver();
        // Held until the step ran: cache locks and temporary copies.
        let mounts = self.run_mounts(state, r)?;
        let mut env = run::RunEnv {
            store: self.store,
            layers: &self.layer_dirs,
            driver,
            compression: self.opts.compression,
            compression_level: self.opts.compression_level,
            step: at.clone(),
            progress: self.progress,
            quiet: self.opts.quiet,
            hostname: short(&state.key).to_string(),
            clamp_mtime: self.opts.source_date_epoch,
            mounts: &mounts,
            extras: &self.opts.run_extras,
        };
        let layer = run::run(&mut env, state, r)?;
        drop(mounts);
        let media = layer_media_type(self.opts.compression);
        state.layers.push(Descriptor::new(media, layer.digest.clone(), layer.size));
        state.config.rootfs.diff_ids.push(layer.info.diff_id);
        state.push_history(&self.stamp.created, &run::created_by(state, r), false);
        // The file index catches up with this layer only when a later step
        // needs it, instead of being rebuilt from every layer.
        state.set_tree_aside(state.layers.len() - 1);
        self.new_layer_bytes.fetch_add(layer.size, Ordering::Relaxed);
        let id = self.step_image(state)?;
        self.report(Event::Layer {
            step: at.clone(),
            id,
            size: layer.size,
            contents: LayerContents::Changes,
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    /// What a RUN's bind mounts show, for its cache key (docker re-runs a
    /// step whose bound files changed): context files by content, stages by
    /// their key, images by digest. Secrets count by id only (in the text).
    fn bind_inputs(
        &self,
        r: &RunStep,
        files: &mut std::collections::BTreeMap<String, String>,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let mut parts = Vec::new();
        for m in r.mounts.iter().filter(|m| m.kind == crate::dockerfile::ast::MountKind::Bind) {
            let opt = |k: &[&str]| m.options.iter().find(|(n, _)| k.contains(&n.as_str())).and_then(|(_, v)| v.clone());
            let source = opt(&["source", "src"]).unwrap_or_else(|| ".".into());
            match opt(&["from"]) {
                None => {
                    let digest = crate::context::digest::sources(
                        self.ctx,
                        &[source],
                        &mut self.stat.lock().expect("stat lock"),
                    )?;
                    files.extend(digest.shown());
                    parts.push(digest.digest());
                }
                Some(from) => {
                    let lower = from.to_lowercase();
                    let stage = self
                        .plan
                        .stages
                        .iter()
                        .find(|s| s.name.as_deref() == Some(lower.as_str()) || s.index.to_string() == from);
                    let key = match stage {
                        Some(s) => self
                            .done
                            .lock()
                            .expect("done lock")
                            .get(&s.index)
                            .map(|s| s.key.clone())
                            .unwrap_or_default(),
                        // The files the mount shows, as for COPY --from: an
                        // edit in the named context reruns the step.
                        None if self.opts.named_contexts.get(&from).is_some_and(NamedContext::is_files) => {
                            let key = self.unpack_from(&CopyFrom::Image(from.clone()))?;
                            let ctx = self.unpacked.lock().expect("unpacked lock")[&key].clone();
                            let digest = crate::context::digest::sources(
                                &*ctx,
                                &[source],
                                &mut self.stat.lock().expect("stat lock"),
                            )?;
                            files.extend(digest.shown());
                            digest.digest()
                        }
                        // An image, or a named context that is one: by its digest.
                        None => self.image(&from)?.manifest_digest,
                    };
                    parts.push(format!("{from}={key}"));
                }
            }
        }
        Ok(parts.join(","))
    }

    /// The step's `--mount`s as runtime mounts; `from=` names a stage (by
    /// name or index), a `--build-context` or an image.
    fn run_mounts(
        &self,
        state: &StageState,
        r: &RunStep,
    ) -> Result<mounts::Prepared, Box<dyn std::error::Error + Send + Sync>> {
        if r.mounts.is_empty() {
            return Ok(mounts::Prepared::default());
        }
        let from = |name: &str, source: &str| -> Result<Arc<BuildContext>, String> {
            let lower = name.to_lowercase();
            let stage = self
                .plan
                .stages
                .iter()
                .find(|s| s.name.as_deref() == Some(lower.as_str()) || s.index.to_string() == name);
            let from = match stage {
                Some(s) => CopyFrom::Stage(s.index),
                None => CopyFrom::Image(name.to_string()),
            };
            if self.driver() == Driver::Vfs && self.views_of(&from) {
                // No overlay to stack the layer dirs: copy out only what is bound.
                let view = self.view_of(&from).map_err(|e| e.to_string())?;
                let dir = tempfile::Builder::new()
                    .prefix("bind-from-")
                    .tempdir_in(self.scratch.path())
                    .map_err(|e| e.to_string())?;
                view.materialize(source, dir.path()).map_err(|e| e.to_string())?;
                // Removed with the build's scratch space.
                let ctx = BuildContext::from_dir(&dir.keep(), None).map_err(|e| e.to_string())?;
                return Ok(Arc::new(ctx));
            }
            let key = self.unpack_from(&from).map_err(|e| e.to_string())?;
            let ctx = self.unpacked.lock().expect("unpacked lock")[&key].clone();
            Ok(ctx)
        };
        let sources = mounts::MountSources {
            store_root: self.store.root(),
            scratch: self.scratch.path(),
            context: self.ctx,
            from: &from,
            secrets: &self.opts.secrets,
            ssh: &self.opts.ssh,
        };
        Ok(mounts::prepare(&r.mounts, &sources, &state.workdir())?)
    }

    /// What `COPY --from` a stage or image would copy, by content (paths,
    /// modes, owners, file digests): looked up in the source's layer dirs,
    /// nothing copied, and remembered by the source's chain id (see
    /// `fromkey`). A change elsewhere in the source leaves it alone.
    fn copy_from_digest(
        &self,
        from: &CopyFrom,
        words: &[String],
    ) -> Result<fromkey::Memo, Box<dyn std::error::Error + Send + Sync>> {
        let (_, _, diff_ids) = self.layers_of(from)?;
        let chain = layers::chain_ids(&diff_ids).pop().unwrap_or_else(|| "empty".into());
        let path = fromkey::path(self.store, &chain, words);
        let note = |memo: &fromkey::Memo| {
            let used =
                crate::remotecache::CopyFromDigest { chain: chain.clone(), words: words.to_vec(), memo: memo.clone() };
            self.copy_from_used.lock().expect("copy-from lock").push(used);
        };
        if let Some(memo) = fromkey::load(&path) {
            note(&memo);
            return Ok(memo);
        }
        // A stage taken from a shared cache: the exporting build's digest
        // of the same files (same chain id), so its layers need not come.
        // Kept for this build only: the store's memos are its own findings.
        if let Some(memo) = self.imported.copy_from(&chain, words) {
            note(&memo);
            return Ok(memo);
        }
        let source = self.source_of(from)?;
        // Layer dirs never change: their files' digests need no stat cache.
        let digest = crate::context::digest::sources_with_owners(&*source, words, &mut StatCache::default())?;
        let memo = fromkey::Memo { digest: digest.digest(), files: digest.shown() };
        if let Err(e) = fromkey::save(&path, &memo) {
            log::warn!("could not remember the digest of COPY --from sources in {}: {}", path.display(), e);
        }
        note(&memo);
        Ok(memo)
    }

    /// Whether `from` is read through a view of layer dirs (a stage or an
    /// image), not a directory (`--build-context name=DIR`).
    fn views_of(&self, from: &CopyFrom) -> bool {
        match from {
            CopyFrom::Stage(_) => true,
            CopyFrom::Image(name) => !self.opts.named_contexts.get(name).is_some_and(NamedContext::is_files),
        }
    }

    /// What `COPY --from` reads: a named directory context, or the view of
    /// a stage's or image's verified layer dirs, looked up path by path
    /// (nothing is mounted or unpacked; each layer dir is made once, and
    /// kept in the store).
    fn source_of(&self, from: &CopyFrom) -> Result<Arc<dyn SourceTree>, Box<dyn std::error::Error + Send + Sync>> {
        if !self.views_of(from) {
            let key = self.unpack_from(from)?;
            return Ok(self.unpacked.lock().expect("unpacked lock")[&key].clone());
        }
        Ok(self.view_of(from)?)
    }

    /// The view of a stage's or image's verified layer dirs, made once per build.
    fn view_of(&self, from: &CopyFrom) -> Result<Arc<LayerView>, Box<dyn std::error::Error + Send + Sync>> {
        let (key, layers, diff_ids) = self.layers_of(from)?;
        // Held while the layer dirs are made: two stages reading one source make them once.
        let mut views = self.views.lock().expect("views lock");
        if let Some(view) = views.get(&key) {
            return Ok(view.clone());
        }
        self.fetch_layers(&layers, &diff_ids, None)?;
        let dirs = self.layer_dirs.ensure(self.store, &layers, &diff_ids)?;
        let view = Arc::new(LayerView::new(dirs, self.layer_dirs.prefix().clone()));
        views.insert(key, view.clone());
        Ok(view)
    }

    /// The layers of the stage or image `--from` names, with a key naming
    /// them for this build.
    fn layers_of(&self, from: &CopyFrom) -> Result<FromLayers, Box<dyn std::error::Error + Send + Sync>> {
        Ok(match from {
            CopyFrom::Stage(i) => {
                let done = self.done.lock().expect("done lock");
                let s = done.get(i).ok_or("COPY --from names a stage that was not built")?;
                (format!("stage:{}", i), s.layers.clone(), s.config.rootfs.diff_ids.clone())
            }
            CopyFrom::Image(reference) => {
                let image = self.image(reference)?;
                (format!("image:{}", image.config_digest), image.manifest.layers, image.config.rootfs.diff_ids)
            }
        })
    }

    /// Unpacks the stage or image `COPY --from` names, once per build.
    fn unpack_from(&self, from: &CopyFrom) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let (key, layers, diff_ids) = match from {
            CopyFrom::Stage(i) => {
                let done = self.done.lock().expect("done lock");
                let s = done.get(i).ok_or("COPY --from names a stage that was not built")?;
                (format!("stage:{}", i), s.layers.clone(), s.config.rootfs.diff_ids.clone())
            }
            CopyFrom::Image(name) if self.opts.named_contexts.get(name).is_some_and(NamedContext::is_files) => {
                let key = format!("context:{}", name);
                let mut unpacked = self.unpacked.lock().expect("unpacked lock");
                if !unpacked.contains_key(&key) {
                    let ctx = match &self.opts.named_contexts[name] {
                        NamedContext::Dir(dir) => {
                            BuildContext::from_dir(dir, BuildContext::find_ignore_file(dir, None).as_deref())?
                        }
                        NamedContext::Remote(url) => {
                            let remote = crate::context::remote::classify(url)
                                .ok_or_else(|| format!("--build-context {name}: {url} is not a git or http(s) URL"))?;
                            let limits = crate::context::remote::DownloadLimits::new(self.opts.max_context_size);
                            crate::context::remote::open_named(&remote, &limits)?
                        }
                        NamedContext::Image(_) => unreachable!("matched is_files"),
                    };
                    unpacked.insert(key.clone(), Arc::new(ctx));
                }
                return Ok(key);
            }
            CopyFrom::Image(reference) => {
                let image = self.image(reference)?;
                (format!("image:{}", image.config_digest), image.manifest.layers, image.config.rootfs.diff_ids)
            }
        };
        // Held while unpacking: two stages copying from one source unpack it once.
        let mut unpacked = self.unpacked.lock().expect("unpacked lock");
        if !unpacked.contains_key(&key) {
            self.fetch_layers(&layers, &diff_ids, None)?;
            let root = match self.mount_from(&layers, &diff_ids)? {
                Some(merged) => merged,
                None => {
                    let dir = tempfile::Builder::new().prefix("from-").tempdir_in(self.scratch.path())?;
                    layers::apply_in_order(self.store, &layers, &diff_ids, dir.path())?;
                    dir.keep()
                }
            };
            let ctx = BuildContext::from_dir(&root, None)?;
            unpacked.insert(key.clone(), Arc::new(ctx));
        }
        Ok(key)
    }

    /// The fast path for `RUN --mount=type=bind,from=`: the layer
    /// directories RUN uses (each applied once, by the safe applier),
    /// stacked by a kernel overlay or fuse-overlayfs mount, so nothing is
    /// unpacked again. Its upper layer is thrown away with the build. `None`
    /// with the vfs driver or where the mount fails: the caller unpacks
    /// instead.
    fn mount_from(
        &self,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> Result<Option<std::path::PathBuf>, Box<dyn std::error::Error + Send + Sync>> {
        let driver = self.driver();
        if driver == Driver::Vfs {
            return Ok(None);
        }
        let lowers = self.layer_dirs.ensure(self.store, layers, diff_ids)?;
        let dir = self.layer_dirs.step_dir()?;
        let (upper, work, merged) = (dir.path().join("diff"), dir.path().join("work"), dir.path().join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d)?;
        }
        match kiln_overlay::mount(driver, &lowers, &upper, &work, &merged) {
            Ok(guard) => {
                log::info!("--from layers mounted at {}", merged.display());
                self.from_mounts.lock().expect("from mounts lock").push((guard, dir));
                Ok(Some(merged))
            }
            Err(e) => {
                log::info!("mounting the layers for --from failed ({e}); unpacking them instead");
                Ok(None)
            }
        }
    }
}

/// For each stage, how many of the needed stages read it.
fn readers(plan: &BuildPlan) -> Vec<usize> {
    let mut readers = vec![0usize; plan.stages.len()];
    for &i in &plan.needed {
        plan.stages[i].deps.iter().for_each(|&d| readers[d] += 1);
    }
    readers
}

fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => manifest::OCI_LAYER_GZIP,
        Compression::Zstd => manifest::OCI_LAYER_ZSTD,
        Compression::None => manifest::OCI_LAYER_TAR,
    }
}

/// Removes what killed builds left behind (step and unpack dirs, trees moved
/// aside, scratch space). Runs only while no other build holds the builds
/// lock; read-only and sub-id-owned trees go too (the engine is uid 0 in its
/// user namespace, and the removal makes directories writable first).
fn clear_leftovers(store: &Store) {
    use crate::store::remove::{remove_tree, Freed, TRASH_PREFIX};
    let layers: &[&str] = &[".step-", ".unpack-", ".stale-", TRASH_PREFIX];
    let dirs = [(store.root().join("kiln").join("layers"), layers), (store.tmp_dir(), &["build-"][..])];
    for (dir, prefixes) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| name.starts_with(p)) {
                log::info!("removing {} left by an interrupted build", entry.path().display());
                if let Err(e) = remove_tree(&entry.path(), &mut Freed::default()) {
                    log::warn!("{e}");
                }
            }
        }
    }
}

fn desc_config_digest(store: &Store, desc: &Descriptor) -> Result<String, ExecError> {
    Ok(store.load_image(desc)?.config_digest)
}

fn stamp(seconds: Option<i64>) -> Stamp {
    let time = match seconds {
        Some(s) => chrono::DateTime::from_timestamp(s, 0).unwrap_or_else(chrono::Utc::now),
        None => chrono::Utc::now(),
    };
    Stamp { created: go_rfc3339_nano(&time), seconds: time.timestamp() }
}

/// RFC 3339 with nanoseconds, trailing zeros dropped, as Go's
/// `time.RFC3339Nano` writes it: tools that re-encode an image config
/// (podman, skopeo) then produce the same bytes, and so the same image id.
fn go_rfc3339_nano(time: &chrono::DateTime<chrono::Utc>) -> String {
    let full = time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let (main, _) = full.split_once('Z').unwrap_or((&full, ""));
    match main.split_once('.') {
        Some((secs, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{}Z", secs)
            } else {
                format!("{}.{}Z", secs, frac)
            }
        }
        None => full,
    }
}

/// `os/arch[/variant]` for an image config (names normalised, the
/// variant kept as given, `arm`'s default written out), defaulting to the
/// host's.
pub fn platform(spec: Option<&str>) -> Result<(String, String, Option<String>), ExecError> {
    let p = crate::image::platform::Platform::parse_or_host(spec).map_err(|e| ExecError::Platform(e.0))?;
    let given = spec.and_then(|s| s.split('/').nth(2)).map(str::to_string);
    let variant = given.or_else(|| p.variant_for_config());
    Ok((p.os, p.architecture, variant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_like_go() {
        let t = |s: i64, ns: u32| go_rfc3339_nano(&chrono::DateTime::from_timestamp(s, ns).unwrap());
        assert_eq!(t(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(t(0, 275_419_340), "1970-01-01T00:00:00.27541934Z");
        assert_eq!(t(0, 500_000_000), "1970-01-01T00:00:00.5Z");
        assert_eq!(t(0, 1), "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn platforms() {
        assert_eq!(platform(Some("linux/arm64/v8")).unwrap(), ("linux".into(), "arm64".into(), Some("v8".into())));
        assert!(platform(Some("linux")).is_err());
        assert_eq!(platform(None).unwrap().0, "linux");
    }
}
