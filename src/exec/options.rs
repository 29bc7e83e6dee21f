//! What a build is asked to do ([`BuildOptions`]) and what it gives back
//! ([`BuildOutput`]).

use super::*;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// How layers are committed: plain tars by default (compressed when the
    /// image is pushed or exported, see `store::compressed`); `--compression`
    /// compresses at commit instead.
    pub compression: Compression,
    /// `--compression-level` (checked by the CLI); `None` is the compression's default.
    pub compression_level: Option<u32>,
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
    /// Replay the store's layer cache and nothing else: the build stops
    /// with [`ExecError::NotCached`] at the first step that would run, and
    /// before reading what only kiln's user namespace reads as the image
    /// has it (a stage's or image's files, whose owners it sees mapped) or
    /// what a registry or URL holds. What it writes (step images, the
    /// image, its tag) is what the same build in the namespace writes, so
    /// a fully cached rebuild needs no namespace (see `cli::build::cached`).
    pub only_if_cached: bool,
    /// Bases the planner read by manifest and config only: the executor
    /// builds on those very images.
    pub peeked: bases::Peeked,
}

impl BuildOptions {
    /// Why a build with these options cannot be only a replay of the
    /// store's cache, if it cannot.
    pub(super) fn more_than_the_cache(&self) -> Option<&'static str> {
        if self.no_cache || !self.no_cache_stages.is_empty() {
            Some("--no-cache runs steps")
        } else if self.squash || !self.layers {
            Some("squashing writes a layer")
        } else if !self.cache_from.is_empty() || !self.cache_to.is_empty() {
            Some("shared caches are read and written")
        } else {
            None
        }
    }
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
            only_if_cached: false,
            peeked: Default::default(),
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
