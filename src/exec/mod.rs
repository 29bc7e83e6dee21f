//! The executor: the only loop with I/O. It walks the planned stages, applies
//! each step to the stage's state, writes layers and the final image.

mod base;
pub mod bases;
pub mod chmod;
pub mod copy;
mod fetch;
mod finish;
mod inputs;
mod options;
mod schedule;
mod shared_cache;
mod sources;
mod stage;
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

use self::base::DeferredBase;
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
use crate::context::stat_cache::StatCache;
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
    /// A build asked only to replay the cache ([`BuildOptions::only_if_cached`]) needs more.
    #[error("not only a replay of the layer cache: {0}")]
    NotCached(String),
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
    if let Some(why) = opts.more_than_the_cache().filter(|_| opts.only_if_cached) {
        return Err(ExecError::NotCached(why.into()));
    }
    // What interrupted builds left may hold files of subordinate ids, which
    // only the build in the namespace can remove.
    let _builds = store.builds_lock(|| {
        if !opts.only_if_cached {
            clear_leftovers(store)
        }
    })?;
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
        readers: schedule::readers(plan),
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
    let scheduled = exec.schedule();
    // Files a replay of the cache read need not be read again by the build it hands over to.
    if scheduled.is_ok() || opts.only_if_cached {
        let _ = exec.stat.lock().expect("stat lock").save();
    }
    scheduled?;
    let _ = exec.cache.lock().expect("cache lock").save_log();
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
