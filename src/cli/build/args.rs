//! `kiln build`'s flags, as docker build and podman build name them.

use std::path::PathBuf;

use clap::Args;

use super::flags::parse_add_host;
use crate::cli::output;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln build -t app .\n  kiln build -f build/Containerfile -t app:1 --build-arg VERSION=2 .\n  kiln build --output type=oci,dest=out/app .\n  kiln build --check ."
)]
pub struct BuildArgs {
    /// Name (and optional tag) for the image; repeatable.
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// The Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/Containerfile); `-` reads it from stdin.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Parse and plan only: print the stages and steps, touch nothing, exit non-zero on an invalid Dockerfile.
    #[arg(long)]
    pub check: bool,

    /// Set a build-time variable: K=V, or K to take the value from the environment.
    #[arg(long = "build-arg", value_name = "K[=V]")]
    pub build_args: Vec<String>,

    /// Build this stage and the stages it needs.
    #[arg(long)]
    pub target: Option<String>,

    /// Target platform os/arch[/variant] for images built FROM scratch, and the one pulled from multi-platform bases.
    #[arg(long)]
    pub platform: Option<String>,

    /// Also write the image as type=oci|oci-archive|docker-archive,dest=PATH[,name=REF]; repeatable.
    #[arg(short, long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Compress each layer when it is committed: gzip, zstd or none. Without it layers are stored as
    /// plain tars and compressed (gzip) when the image is pushed or exported; with it, --output and
    /// --push send layers of this compression.
    #[arg(long, value_enum)]
    pub compression: Option<output::CompressionArg>,

    /// Compression level: gzip 1-9 (default 6), zstd 1-19 (default 3). Higher is smaller and slower. Given
    /// without --compression, layers are gzip-compressed at commit at that level.
    #[arg(long, value_name = "N")]
    pub compression_level: Option<u32>,

    /// Print only the image id (same as --progress=quiet).
    #[arg(short, long)]
    pub quiet: bool,

    /// Progress output: auto (tty when stderr is a terminal, else plain), plain, tty or quiet.
    /// Default: $KILN_PROGRESS, else $BUILDKIT_PROGRESS, else auto.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub progress: Option<crate::cli::progress::ProgressArg>,

    /// How many independent stages to build at once (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Read ignore rules from FILE instead of the context's .dockerignore (or .containerignore).
    #[arg(long, value_name = "FILE")]
    pub ignorefile: Option<PathBuf>,

    /// Extra named context: NAME=DIR, NAME=GIT-URL (`https://host/repo.git#ref:subdir`, `git@host:repo.git`),
    /// NAME=URL of a tar archive, NAME=docker-image://REF or NAME=oci-layout://DIR[:TAG]; repeatable.
    /// `FROM NAME` and `COPY --from=NAME` then use it.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Storage driver for RUN steps: overlay, fuse-overlayfs or vfs (default: the best that works here).
    #[arg(long, env = "KILN_STORAGE_DRIVER", value_name = "DRIVER")]
    pub storage_driver: Option<kiln_overlay::mount::Driver>,

    /// Run every step; do not use the layer cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Do not use the cache for these stages (names or indexes; repeatable or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Import a shared build cache: type=registry,ref=REG/REPO:TAG (or REF alone) or type=local,src=DIR (repeatable).
    #[arg(long = "cache-from", value_name = "SPEC", value_parser = kiln::remotecache::spec::parse_from)]
    pub cache_from: Vec<kiln::remotecache::Location>,

    /// Export the build cache: type=registry,ref=REG/REPO:TAG or type=local,dest=DIR, [mode=min|max][,compression=gzip|zstd|uncompressed] (repeatable).
    #[arg(long = "cache-to", value_name = "SPEC", value_parser = kiln::remotecache::spec::parse_to)]
    pub cache_to: Vec<kiln::remotecache::CacheTo>,

    /// When to pull base images: --pull=missing (default), always, never or newer; --pull alone means always.
    // require_equals: `--pull .` is the switch and the context, as docker and
    // podman read it, not a policy named ".".
    #[arg(long, value_name = "POLICY", num_args = 0..=1, require_equals = true, default_value = "missing",
          default_missing_value = "always",
          value_parser = ["missing", "always", "never", "newer", "true", "false"])]
    pub pull: String,

    /// Push the image to each -t name's registry after the build.
    #[arg(long)]
    pub push: bool,

    /// A secret for RUN --mount=type=secret: id=NAME,src=FILE or id=NAME,env=VAR; repeatable.
    #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VAR")]
    pub secrets: Vec<String>,

    /// An ssh agent for RUN --mount=type=ssh: ID (from $SSH_AUTH_SOCK) or ID=SOCKET; repeatable.
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,

    #[command(flatten)]
    pub registry: crate::cli::pull::RegistryFlags,

    /// Write the image id (sha256:…) to FILE.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Add a label to the final image (after the Dockerfile's LABELs); repeatable.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,

    /// Add an annotation to the image's manifest (and its index entry); repeatable.
    #[arg(long = "annotation", value_name = "K=V")]
    pub annotations: Vec<String>,

    /// Image format: oci (default) or docker (Docker v2s2 manifest and media types, as buildah's
    /// --format docker). The config is the same, HEALTHCHECK, SHELL and ONBUILD included.
    #[arg(long, value_name = "FORMAT", env = "BUILDAH_FORMAT", default_value = "oci", value_parser = ["oci", "docker"])]
    pub format: String,

    /// Merge the final stage's own layers into one, keeping its base image's layers.
    #[arg(long)]
    pub squash: bool,

    /// --layers=false: one new layer per stage instead of one per step
    /// (each step's result is still cached).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value_t = true, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub layers: bool,

    /// Clamp file mtimes to N (seconds since the epoch) and set `created` to N, for reproducible images
    /// (docs/reproducible.md). Default: --build-arg SOURCE_DATE_EPOCH=N, else $SOURCE_DATE_EPOCH when set and
    /// not empty. The epoch is also the build arg SOURCE_DATE_EPOCH. `--timestamp` is the same (buildah's name).
    #[arg(long, value_name = "N", visible_alias = "timestamp")]
    pub source_date_epoch: Option<i64>,

    /// Build twice, each time into an empty scratch store (the second from a copy of the context with later
    /// mtimes, a second or more later), and compare: print the manifest digest when both builds give the same
    /// image, else name the first difference (layer, path and field, or config field) and exit 1. Nothing is
    /// tagged or written. Use with --source-date-epoch or SOURCE_DATE_EPOCH.
    #[arg(long)]
    pub verify_reproducible: bool,

    /// Add NAME:IP (or NAME=IP) to /etc/hosts in every RUN; `host-gateway` as IP is the host as
    /// the step reaches it (127.0.0.1 on the host's network, the forwarder's host address with
    /// --network private). Repeatable.
    #[arg(long = "add-host", value_name = "NAME:IP", value_parser = parse_add_host)]
    pub add_hosts: Vec<(String, kiln::exec::run::HostIp)>,

    /// A resource limit for every RUN: NAME=SOFT[:HARD] (nofile, nproc, core, stack, …; -1 = unlimited). Repeatable.
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<kiln_runtime::ulimit::Ulimit>,

    /// Network of every RUN whose own --network flag gives none (or `default`): host (the default:
    /// the host's network, as `docker build`), none (loopback only) or private (its own network
    /// namespace with outbound access through pasta or slirp4netns; see `kiln info`).
    #[arg(long, value_name = "MODE", default_value = "host")]
    pub network: kiln_runtime::Network,

    /// Give RUN steps a capability beyond docker's default set (NET_ADMIN or CAP_NET_ADMIN, or ALL). Repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Take a capability from RUN steps (NET_RAW or CAP_NET_RAW, or ALL). Repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// Size of /dev/shm in RUN steps: bytes with an optional k, m or g suffix (default 64m).
    #[arg(long, value_name = "SIZE", value_parser = kiln::net::parse_size)]
    pub shm_size: Option<u64>,

    /// The most a remote build context may download and unpack to, and the most one `ADD <url>` may
    /// download: bytes with an optional k, m, g or t suffix (1024-based).
    #[arg(long, value_name = "SIZE", default_value = "2g", value_parser = kiln::net::parse_size)]
    pub max_context_size: u64,

    /// The build context: a directory; `-` for a tar (plain, gz, xz, bz2 or zst) on stdin; a git URL
    /// (`https://host/repo.git#ref:subdir`, `git://…`, `git@host:repo.git`); or an http(s) URL of a tar or a Dockerfile.
    #[arg(default_value = ".")]
    pub context: String,
}
