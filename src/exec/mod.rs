//! The executor: the only loop with I/O. It walks the planned stages, applies
//! each step to the stage's state, writes layers and the final image.

pub mod bases;
pub mod chmod;
pub mod copy;
mod fetch;
mod finish;
mod options;
mod shared_cache;
mod sources;
mod step_error;
mod step_image;
mod steps;
use crate::cache::fromkey;
pub use crate::humanize::{human_size, short};
pub use crate::store::layers;
pub use options::{BuildOptions, BuildOutput, NamedContext};
pub use step_error::StepError;
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
use crate::image::platform::Platform;
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
        /// Boxed: a step can fail in many ways, and every build result carries this type.
        #[source]
        source: Box<StepError>,
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
        deferred_bases: Mutex::new(Vec::new()),
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
    from_mounts: Mutex<Vec<kiln_overlay::Rootfs>>,
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
    /// Base images known by manifest and config only, pulled when a step
    /// or the final image needs one of their layers (with `--cache-from`).
    deferred_bases: Mutex<Vec<DeferredBase>>,
    /// What `COPY --from` steps read out of stages, for `--cache-to`.
    copy_from_used: Mutex<Vec<crate::remotecache::CopyFromDigest>>,
}

impl<'a> Executor<'a> {
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
        self.clear_triggers(stage, &mut state).map_err(|e| self.fail(stage.span, &stage.original, e))?;
        let total = stage.steps.len() + 1;
        let at = |number: usize| StepRef { stage: position, number, total };
        // Announced once the base is known.
        self.report(Event::StepStarted { step: at(1), instruction: stage.original.clone() });
        if let Base::Image(reference) = &stage.base {
            let id = short(state.base_id.as_deref().unwrap_or(&state.key)).to_string();
            self.report(Event::BaseImage { step: at(1), reference: reference.clone(), id });
        }
        self.report(Event::StepFinished { step: at(1), cached: false, elapsed: started.elapsed() });
        finish::scope_key(&mut state, self.opts);
        let use_cache = !self.opts.no_cache
            && !self
                .opts
                .no_cache_stages
                .iter()
                .any(|f| Some(f) == stage.name.as_ref() || *f == stage.index.to_string());
        for (i, step) in stage.steps.iter().enumerate() {
            // A step boundary: stop here once interrupted or orphaned.
            kiln_runtime::ensure_still_wanted().map_err(|e| self.fail(step.span, &step.original, e))?;
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
                            true => {
                                // Its image names every layer below it: those must be here.
                                self.fetch_layers(&state.layers, &state.config.rootfs.diff_ids, Some(&at(i + 2)))
                                    .map_err(|e| self.fail(step.span, &step.original, e))?;
                                Some(self.step_image(&state).map_err(|e| self.fail(step.span, &step.original, e))?)
                            }
                            false => None,
                        };
                        self.report(Event::CacheHit { step: at(i + 2), id, from: None });
                        self.report(Event::StepFinished { step: at(i + 2), cached: true, elapsed: started.elapsed() });
                        self.note_record(stage.index, &key, record);
                        continue;
                    }
                }
                // A hit in a shared cache takes the layers by digest; they
                // are fetched when something reads them. It shows its cache
                // key, not a step id: that image would name layers the store
                // does not hold.
                if let Some((record, kind)) = self.imported.get(&key, &state.key) {
                    if state.restore(&step.kind, record.clone(), key.clone()) {
                        let (id, from) = (Some(short(&key).to_string()), Some(kind.to_string()));
                        self.report(Event::CacheHit { step: at(i + 2), id, from });
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
                    .map_err(|e| self.fail(step.span, &step.original, e))?;
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
            self.squash(&mut state).map_err(|e| self.fail(stage.span, &stage.original, e))?;
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

    /// No base's ONBUILD triggers carry over into this stage's config
    /// (BuildKit sets `OnBuild = nil`), so a grandchild never runs them
    /// again; the plan made them this stage's first steps. An image whose
    /// config the planner could not read must have none to run.
    fn clear_triggers(&self, stage: &Stage, state: &mut StageState) -> Result<(), StepError> {
        let inherited = state.config.config.on_build.take().unwrap_or_default();
        if matches!(stage.base, Base::Image(_)) && !stage.base_read && !inherited.is_empty() {
            return Err(StepError::TriggersUnplanned(inherited.join("; ")));
        }
        Ok(())
    }

    /// The step's cache key and what it saw. COPY/ADD from the context
    /// digest their sources here, before anything is copied.
    fn inputs(&self, state: &StageState, step: &Step) -> Result<StepInputs, StepError> {
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

    fn fail(&self, span: Span, instruction: &str, err: impl Into<StepError>) -> ExecError {
        ExecError::Step {
            file: self.plan.file.clone(),
            line: span.line,
            column: span.column,
            instruction: instruction.to_string(),
            source: Box::new(err.into()),
            hint: None,
        }
    }

    fn base(&self, stage: &Stage) -> Result<StageState, StepError> {
        Ok(match &stage.base {
            Base::Scratch => {
                // FROM --platform wins over --platform, as in BuildKit.
                let (os, architecture, variant) = platform(self.plan.platform_of(stage));
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
                let parent = done.get_mut(i).ok_or(StepError::StageNotBuilt)?;
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
                let image = self.image_for(reference, self.plan.platform_of(stage))?;
                let mut s = StageState::new(image.config, image.manifest.layers);
                s.key = image.manifest_digest.clone();
                s.base_id = Some(image.config_digest);
                s
            }
        })
    }

    fn image(&self, reference: &str) -> Result<Image, ExecError> {
        self.image_for(reference, self.plan.platform.as_ref())
    }

    /// The image `reference` names, for `platform`: picked from a
    /// multi-platform image, and an error when the image has no such
    /// platform. `None` prefers the host's.
    fn image_for(&self, reference: &str, platform: Option<&Platform>) -> Result<Image, ExecError> {
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
                pull.registry.platform = platform.cloned();
                // With a shared cache, every step of a stage may hit: the
                // base's layers come only when something reads them.
                if !self.imported.is_empty() {
                    if let Some(image) = crate::registry::peek_missing(self.store, &name, &pull)? {
                        let layers = image.manifest.layers.iter().map(|l| l.digest.clone()).collect();
                        self.deferred_bases.lock().expect("deferred lock").push(DeferredBase { name, pull, layers });
                        return Ok(image);
                    }
                }
                Ok(crate::registry::resolve_or_pull(self.store, &name, &pull, self.progress)?)
            }
            other => Ok(transport::import_for(self.store, &other, platform)?),
        }
    }
}

/// A base image whose pull waits until one of its layers is needed.
struct DeferredBase {
    name: String,
    pull: crate::registry::PullOptions,
    /// Its layers' digests.
    layers: Vec<String>,
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

/// `os/arch[/variant]` for an image config (`arm`'s default variant
/// written out), defaulting to the host's.
pub fn platform(wanted: Option<&Platform>) -> (String, String, Option<String>) {
    let p = wanted.cloned().unwrap_or_else(Platform::host);
    let variant = p.variant_for_config();
    (p.os, p.architecture, variant)
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
        let arm = Platform::parse("linux/arm").unwrap();
        assert_eq!(platform(Some(&arm)), ("linux".into(), "arm".into(), Some("v7".into())));
        assert_eq!(platform(None).0, "linux");
    }
}
