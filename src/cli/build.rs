//! `kiln build`: read the Dockerfile and context, plan, execute, then tag and
//! export the image.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use kiln_overlay::compress::Compression;

use crate::report::SourceError;
use kiln::context::BuildContext;
use kiln::dockerfile;
use kiln::exec::{self, BuildOptions};
use kiln::image::reference;
use kiln::plan::{self, PlanOptions};
use kiln::store::Store;
use kiln::transport;

use super::output::{self, OutputKind, OutputSpec};
use super::progress::{Mode, View};
use super::Cli;

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
    pub progress: Option<super::progress::ProgressArg>,

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
    pub registry: super::pull::RegistryFlags,

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

pub fn run(cli: &Cli, args: &BuildArgs) -> anyhow::Result<i32> {
    let mode = super::progress::mode(args.progress, args.quiet)?;
    let quiet = mode == Mode::Quiet;
    let compression_level = compression_level(args)?;
    let outputs: Vec<OutputSpec> = args.outputs.iter().map(|o| output::parse(o)).collect::<Result<_, _>>()?;
    let tags: Vec<String> = args
        .tags
        .iter()
        .map(|t| reference::normalize_local(t).with_context(|| format!("invalid tag {:?}", t)))
        .collect::<anyhow::Result<_>>()?;
    if !args.check {
        // Store work (unpacking layers, running RUN, committing) happens as
        // uid 0 of kiln's user namespace, so files keep the image's owners.
        let mode = kiln_runtime::detect();
        match kiln_runtime::enter_user_namespace(&mode) {
            Ok(Some(code)) => return Ok(code),
            Ok(None) if matches!(mode, kiln_runtime::MapMode::Root) && !kiln_runtime::userns::inside() => {
                kiln_runtime::private_mount_namespace().context("enter a private mount namespace")?;
            }
            Ok(None) => {}
            Err(kiln_runtime::RuntimeError::Unavailable { .. }) => {} // detect() warned; builds without RUN still work
            Err(e) => return Err(anyhow::Error::new(e).context("enter kiln's user namespace")),
        }
        // This process does the work: Ctrl-C and SIGTERM unwind it (RUN
        // steps killed, temp files and mounts removed) instead of killing it.
        kiln_runtime::lifetime::handle_interrupts().context("prepare for Ctrl-C")?;
    }
    let input = read_input(args)?;
    let df = dockerfile::parse(&input.text, &input.display).map_err(|e| SourceError::new(e, &input.text))?;
    let opts = PlanOptions {
        build_args: with_epoch_arg(build_args(&args.build_args), source_date_epoch(args)?),
        target: args.target.clone(),
        platform: args.platform.clone(),
    };

    if args.check {
        // Reads the store only when it already exists; never the context or a registry.
        let root = cli.root.clone().unwrap_or_else(kiln::store::default_root);
        let store = if root.join("index.json").exists() { Store::open(&root).ok() } else { None };
        let bases = exec::bases::StoredBases(store.as_ref());
        let plan = plan::plan(&df, &opts, &bases).map_err(|e| SourceError::new(e, &input.text))?;
        let named = named_contexts(&args.build_contexts)?;
        check_copy_from(&plan, store.as_ref(), &named).map_err(|e| SourceError::new(e, &input.text))?;
        print!("{}", plan);
        warn_unused(&plan.unused_build_args);
        return Ok(0);
    }

    let store = cli.open_store()?;
    // Build progress goes to stdout in plain mode, as podman prints it.
    let view = View::new(mode, Box::new(std::io::stdout()));
    let pull_opts = pull_options(args, quiet);
    let named = named_contexts(&args.build_contexts)?;
    // The env and triggers of the base for the stage's platform: FROM --platform, else --platform.
    let bases = exec::bases::Bases {
        store: &store,
        pull: &pull_opts,
        named_contexts: &named,
        progress: &view,
        defer_layers: !args.cache_from.is_empty(),
    };
    let plan = plan::plan(&df, &opts, &bases).map_err(|e| SourceError::new(e, &input.text))?;
    let ctx = match (input.context, &args.ignorefile) {
        // A context that came whole (stdin, git, http): --ignorefile replaces its own ignore file.
        (Some(mut ctx), Some(file)) => {
            ctx.set_ignore_file(file).with_context(|| format!("--ignorefile {}", file.display()))?;
            ctx
        }
        (Some(ctx), None) => ctx,
        (None, _) => open_context(args, input.dockerfile_path.as_deref())?,
    };
    let build_opts = BuildOptions {
        compression: commit_compression(args),
        compression_level,
        cache_identity: cache_identity(args, input.dockerfile_path.as_deref(), &ctx),
        no_cache: args.no_cache,
        no_cache_stages: args.no_cache_filter.iter().map(|s| s.to_lowercase()).collect(),
        storage_driver: args.storage_driver,
        quiet,
        jobs: args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        named_contexts: named,
        pull: pull_opts,
        labels: key_values("--label", &args.labels)?,
        annotations: key_values("--annotation", &args.annotations)?.into_iter().collect(),
        docker_format: docker_format(args)?,
        squash: args.squash,
        layers: args.layers,
        source_date_epoch: source_date_epoch(args)?,
        secrets: args
            .secrets
            .iter()
            .map(|s| exec::mounts::parse_secret(s))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        ssh: args
            .ssh
            .iter()
            .map(|s| exec::mounts::parse_ssh(s))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        max_context_size: args.max_context_size,
        run_extras: exec::run::RunExtras {
            add_hosts: args.add_hosts.clone(),
            ulimits: args.ulimits.clone(),
            shm_size: args.shm_size,
            network: args.network,
            caps: kiln_runtime::caps::Caps::tweak(&args.cap_add, &args.cap_drop)?,
        },
        cache_from: args.cache_from.clone(),
        cache_to: args.cache_to.clone(),
    };
    if args.verify_reproducible {
        if !tags.is_empty() || !outputs.is_empty() || args.push {
            eprintln!("warning: --verify-reproducible only compares two builds: nothing is tagged, exported or pushed");
        }
        let code = super::verify_repro::run(&store, &ctx, &plan, &build_opts, &view, &input.text);
        view.finish();
        return code;
    }
    let result = match exec::build(&store, &ctx, &plan, &build_opts, &view) {
        Ok(result) => result,
        Err(e) => {
            view.finish();
            say_interrupted(&view);
            return Err(SourceError::new(e, &input.text).into());
        }
    };
    warn_unused(&plan.unused_build_args);

    for tag in &tags {
        kiln_runtime::ensure_still_wanted()?;
        store.tag(tag, &result.manifest)?;
        if !quiet {
            println!("Successfully tagged {}", tag);
        }
    }
    let pushes: Vec<String> = if args.push { tags.clone() } else { Vec::new() };
    anyhow::ensure!(!args.push || !pushes.is_empty(), "--push needs a name to push to: add -t REGISTRY/NAME[:TAG]");
    let registry_outputs = outputs.iter().filter(|o| o.kind == OutputKind::Registry);
    let mut destinations = pushes;
    for out in registry_outputs {
        match &out.name {
            Some(name) => destinations.push(name.clone()),
            None if !tags.is_empty() => destinations.extend(tags.iter().cloned()),
            None => anyhow::bail!("--output type=registry needs name=REF or a -t name"),
        }
    }
    destinations.dedup();
    // What leaves the store goes compressed as --compression says, else gzip.
    let compression = args.compression.map_or(Compression::Gzip, Compression::from);
    // Pushes and outputs may write compressed blobs into the store: `kiln
    // system prune` waits for them, as for a build.
    let _builds = store.builds_lock(|| {})?;
    if !destinations.is_empty() {
        let image = store.load_image(&result.manifest)?;
        for dest in &destinations {
            let digest = super::push::push_image(&store, &image, dest, &args.registry, None, compression, None, &view)?;
            if !quiet {
                println!("Pushed {dest}@{digest}");
            }
        }
    }
    for out in outputs.iter().filter(|o| o.kind != OutputKind::Registry) {
        write_output(&store, out, &tags, &result.manifest, out.compression.unwrap_or(compression))?;
        if !quiet {
            println!("Wrote {} to {}", kind_name(&out.kind), out.dest.display());
        }
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &result.image_id).with_context(|| format!("write the image id to {}", path.display()))?;
    }
    println!("{}", result.image_id.trim_start_matches("sha256:"));
    Ok(0)
}

/// `--source-date-epoch`, else `SOURCE_DATE_EPOCH` (empty counts as unset,
/// as the reproducible-builds spec asks; a malformed value is an error).
fn source_date_epoch(args: &BuildArgs) -> anyhow::Result<Option<i64>> {
    if args.source_date_epoch.is_some() {
        return Ok(args.source_date_epoch);
    }
    // BuildKit reads the epoch from the build arg; buildx passes the
    // environment's only when no build arg names one.
    let from_arg = build_args(&args.build_args).into_iter().rev().find(|(k, _)| k == EPOCH_ARG).and_then(|(_, v)| v);
    match from_arg.map(Ok).unwrap_or_else(|| std::env::var(EPOCH_ARG)) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={:?} is not a number of seconds since the epoch", v)),
        _ => Ok(None),
    }
}

const EPOCH_ARG: &str = "SOURCE_DATE_EPOCH";

/// The epoch is the build arg SOURCE_DATE_EPOCH too, as in BuildKit: a stage
/// that declares `ARG SOURCE_DATE_EPOCH` sees it (and RUN can derive its
/// timestamps from it). Like the predefined proxy args, it is never reported
/// as unused.
fn with_epoch_arg(mut args: Vec<(String, Option<String>)>, epoch: Option<i64>) -> Vec<(String, Option<String>)> {
    if let Some(epoch) = epoch {
        if !args.iter().any(|(k, _)| k == EPOCH_ARG) {
            args.push((EPOCH_ARG.to_string(), Some(epoch.to_string())));
        }
    }
    args
}

/// How layers are committed: plain unless `--compression` says otherwise;
/// a `--compression-level` alone means gzip at that level (a level is only
/// worth giving for a compressed layer).
/// `--format docker`: Docker v2s2 has no zstd layers nor annotations
/// (dropped with a warning, as buildah does).
fn docker_format(args: &BuildArgs) -> anyhow::Result<bool> {
    if args.format != "docker" {
        return Ok(false);
    }
    anyhow::ensure!(
        args.compression.map(Compression::from) != Some(Compression::Zstd),
        "--format docker cannot hold zstd layers (Docker v2s2 has no zstd media type): use --compression gzip, or --format oci"
    );
    if !args.annotations.is_empty() {
        log::warn!("--annotation is ignored with --format docker: Docker v2s2 manifests have no annotations");
    }
    Ok(true)
}

fn commit_compression(args: &BuildArgs) -> kiln_overlay::compress::Compression {
    use kiln_overlay::compress::Compression;
    match (args.compression, args.compression_level) {
        (Some(c), _) => Compression::from(c),
        (None, Some(_)) => Compression::Gzip,
        (None, None) => Compression::None,
    }
}

/// `--compression-level`, checked against `--compression` before any work starts.
fn compression_level(args: &BuildArgs) -> anyhow::Result<Option<u32>> {
    let Some(level) = args.compression_level else { return Ok(None) };
    let compression = commit_compression(args);
    compression.check_level(level).map_err(|e| anyhow::anyhow!("--compression-level {}: {}", level, e))?;
    Ok(Some(level))
}

/// `K=V` pairs of a repeatable flag (`V` may be empty, `K` may not).
fn key_values(flag: &str, raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|r| match r.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("{} {:?}: expected KEY=VALUE", flag, r),
        })
        .collect()
}

struct Input {
    text: String,
    /// The name errors print.
    display: String,
    dockerfile_path: Option<PathBuf>,
    /// Set when the context came with the Dockerfile on stdin.
    context: Option<BuildContext>,
}

fn read_input(args: &BuildArgs) -> anyhow::Result<Input> {
    let stdin_file = args.file.as_deref() == Some(Path::new("-"));
    if args.context == "-" {
        anyhow::ensure!(!stdin_file, "cannot read both the Dockerfile (-f -) and the context (-) from stdin");
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("read the build context from stdin")?;
        return stdin_context(bytes, args);
    }
    if let Some(remote) = kiln::context::remote::classify(&args.context) {
        return remote_input(&remote, args, stdin_file);
    }
    if stdin_file {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("read the Dockerfile from stdin")?;
        // docker: `-f -` with no context argument builds with an empty context.
        let context = if args.context == "." && !Path::new(".").join("Dockerfile").exists() {
            Some(BuildContext::empty())
        } else {
            None
        };
        return Ok(Input { text, display: "Dockerfile".into(), dockerfile_path: None, context });
    }
    let path = dockerfile_path(args)?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let display = path.strip_prefix("./").unwrap_or(&path).display().to_string();
    Ok(Input { text, display, dockerfile_path: Some(path), context: None })
}

/// Context `-`: a tar (any compression) holding the Dockerfile, or, as docker
/// allows, a bare Dockerfile with no context at all.
fn stdin_context(bytes: Vec<u8>, args: &BuildArgs) -> anyhow::Result<Input> {
    if kiln_overlay::compress::is_archive(std::io::Cursor::new(bytes.clone()))? {
        let ctx =
            BuildContext::from_tar(std::io::Cursor::new(bytes), true).context("unpack the build context from stdin")?;
        return context_input(ctx, args, "the context on stdin");
    }
    let text = String::from_utf8(bytes).context("stdin is neither a tar archive nor a Dockerfile")?;
    Ok(Input { text, display: "Dockerfile".into(), dockerfile_path: None, context: Some(BuildContext::empty()) })
}

/// The Dockerfile inside a context that came as a whole (a tar, a clone):
/// `-f` names a path in it.
fn context_input(ctx: BuildContext, args: &BuildArgs, what: &str) -> anyhow::Result<Input> {
    let name = args.file.clone().unwrap_or_else(|| PathBuf::from("Dockerfile"));
    let path = ctx.root().join(&name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{} has no {}", what, name.display()))?;
    Ok(Input { text, display: name.display().to_string(), dockerfile_path: None, context: Some(ctx) })
}

/// A git or http(s) URL context, as the docker CLI takes it: a repository
/// (`#ref:subdir`), a tar in any compression, or a bare Dockerfile.
fn remote_input(remote: &kiln::context::remote::Remote, args: &BuildArgs, stdin_file: bool) -> anyhow::Result<Input> {
    use kiln::context::remote::{open_context, DownloadLimits, RemoteContext};
    let limits = DownloadLimits::new(args.max_context_size);
    let shown = kiln::net::redact(&args.context);
    let opened = open_context(remote, &limits).with_context(|| format!("open the build context {shown}"))?;
    match opened {
        RemoteContext::Context(ctx) if stdin_file => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("read the Dockerfile from stdin")?;
            Ok(Input { text, display: "Dockerfile".into(), dockerfile_path: None, context: Some(ctx) })
        }
        RemoteContext::Context(ctx) => context_input(ctx, args, &format!("the build context {shown}")),
        RemoteContext::Dockerfile(text) => Ok(Input {
            text,
            display: "Dockerfile".into(),
            dockerfile_path: None,
            context: Some(BuildContext::empty()),
        }),
    }
}

fn dockerfile_path(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    if let Some(f) = &args.file {
        return Ok(f.clone());
    }
    let dir = Path::new(&args.context);
    anyhow::ensure!(dir.is_dir(), "the build context {} is not a directory", dir.display());
    for name in ["Dockerfile", "Containerfile"] {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!("no Dockerfile or Containerfile in {}: pass one with -f", dir.display())
}

fn open_context(args: &BuildArgs, dockerfile: Option<&Path>) -> anyhow::Result<BuildContext> {
    let dir = Path::new(&args.context);
    anyhow::ensure!(dir.is_dir(), "the build context {} is not a directory", dir.display());
    let ignore = match &args.ignorefile {
        Some(file) => {
            anyhow::ensure!(file.is_file(), "--ignorefile {}: no such file", file.display());
            Some(file.clone())
        }
        None => BuildContext::find_ignore_file(dir, dockerfile),
    };
    BuildContext::from_dir(dir, ignore.as_deref()).with_context(|| format!("open the build context {}", dir.display()))
}

/// `--build-context` values, as docker buildx spells them.
fn named_contexts(raw: &[String]) -> anyhow::Result<std::collections::HashMap<String, exec::NamedContext>> {
    let mut out = std::collections::HashMap::new();
    for r in raw {
        let (name, value) = r
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .with_context(|| format!("--build-context {:?}: expected NAME=VALUE", r))?;
        let ctx = if let Some(image) = value.strip_prefix("docker-image://") {
            exec::NamedContext::Image(image.to_string())
        } else if let Some(layout) = value.strip_prefix("oci-layout://") {
            exec::NamedContext::Image(format!("oci:{}", layout))
        } else if kiln::context::remote::is_remote(value) {
            // Fetched by the build when a step first uses it.
            exec::NamedContext::Remote(value.to_string())
        } else if value.contains("://") {
            anyhow::bail!(
                "--build-context {:?}: expected a directory, a git or http(s) URL, docker-image://REF or oci-layout://DIR",
                r
            );
        } else {
            let dir = PathBuf::from(value);
            anyhow::ensure!(dir.is_dir(), "--build-context {:?}: {} is not a directory", r, dir.display());
            exec::NamedContext::Dir(dir.canonicalize()?)
        };
        out.insert(name.to_string(), ctx);
    }
    Ok(out)
}

/// What makes two builds "the same Dockerfile" for explaining cache misses.
fn cache_identity(args: &BuildArgs, dockerfile: Option<&Path>, ctx: &BuildContext) -> String {
    let df =
        dockerfile.and_then(|p| p.canonicalize().ok()).map_or_else(|| "-".to_string(), |p| p.display().to_string());
    format!("{}\0{}\0{}", df, ctx.root().display(), args.target.as_deref().unwrap_or(""))
}

/// `K=V` as given; `K` alone takes the value from kiln's environment (and is
/// dropped when unset, as docker does).
fn build_args(raw: &[String]) -> Vec<(String, Option<String>)> {
    raw.iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), Some(v.to_string()))),
            None => std::env::var(a).ok().map(|v| (a.clone(), Some(v))),
        })
        .collect()
}

fn warn_unused(args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != EPOCH_ARG).collect();
    if !args.is_empty() {
        eprintln!("[Warning] one or more build args were not consumed: [{}]", args.join(" "));
    }
}

/// `--check` lint: BuildKit reads an unknown `COPY --from=name` as an image
/// name, so a mistyped stage name only fails later, at a registry. A bare
/// name that is no stage and no local image is almost always such a typo.
fn check_copy_from(
    plan: &plan::BuildPlan,
    store: Option<&Store>,
    named: &std::collections::HashMap<String, exec::NamedContext>,
) -> Result<(), dockerfile::DockerfileError> {
    for &i in &plan.needed {
        for step in &plan.stages[i].steps {
            let plan::StepKind::Copy(c) = &step.kind else { continue };
            let Some(plan::CopyFrom::Image(name)) = &c.from else { continue };
            let bare = !name.contains(['/', ':', '@', '.']) && !named.contains_key(name);
            let local = store.is_some_and(|s| matches!(s.resolve(name), Ok(Some(_))));
            if bare && !local {
                let stages: Vec<String> = plan.stages.iter().filter_map(|s| s.name.clone()).collect();
                let known = if stages.is_empty() {
                    "this Dockerfile names no stages".to_string()
                } else {
                    format!("stages: {}", stages.join(", "))
                };
                return Err(dockerfile::DockerfileError::new(
                    &plan.file,
                    step.span.line,
                    step.span.column,
                    format!("COPY --from={}: no stage has that name ({})", name, known),
                )
                .with_help(format!(
                    "to copy from an image, name it fully, e.g. --from=docker.io/library/{}:latest",
                    name
                )));
            }
        }
    }
    Ok(())
}

/// `--add-host NAME:IP` or `NAME=IP` (docker takes both; an IPv6 address
/// holds colons, so the name ends at the first separator).
fn parse_add_host(text: &str) -> Result<(String, kiln::exec::run::HostIp), String> {
    let (name, ip) = match (text.find('='), text.find(':')) {
        (Some(eq), _) => text.split_at(eq),
        (None, Some(colon)) => text.split_at(colon),
        (None, None) => return Err(format!("{text:?}: expected NAME:IP, e.g. db.local:10.0.0.5")),
    };
    let ip = &ip[1..];
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
        return Err(format!("{text:?}: {name:?} is not a host name"));
    }
    let ip = if ip == "host-gateway" {
        kiln::exec::run::HostIp::HostGateway
    } else {
        kiln::exec::run::HostIp::Ip(
            ip.trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map_err(|_| format!("{text:?}: {ip:?} is not an IP address"))?,
        )
    };
    Ok((name.to_string(), ip))
}

fn pull_options(args: &BuildArgs, quiet: bool) -> kiln::registry::PullOptions {
    kiln::registry::PullOptions {
        policy: args.pull.parse().unwrap_or_default(),
        // The executor and the planner set the platform per image they look up.
        registry: args.registry.options(None, !quiet),
    }
}

/// After an interrupt: which steps it stopped (the store line follows, see
/// `super::interrupted_exit`).
fn say_interrupted(view: &View) {
    if kiln_runtime::lifetime::interrupted().is_none() {
        return;
    }
    let mut running = view.running();
    running.sort_by_key(|(step, _, _)| (step.stage, step.number));
    for (step, instruction, elapsed) in running {
        eprintln!(
            "interrupted: {}STEP {}/{}: {} (after {:.1}s)",
            step.prefix(),
            step.number,
            step.total,
            instruction,
            elapsed.as_secs_f64()
        );
    }
}

fn write_output(
    store: &Store,
    out: &OutputSpec,
    tags: &[String],
    manifest: &kiln::image::manifest::Descriptor,
    compression: Compression,
) -> anyhow::Result<()> {
    let name = match &out.name {
        Some(n) => Some(reference::normalize_local(n).with_context(|| format!("invalid name= {:?}", n))?),
        None => tags.first().cloned(),
    };
    match out.kind {
        OutputKind::Oci => transport::export_oci_dir(store, &[(name, manifest.clone())], &out.dest, compression)?,
        OutputKind::OciArchive => {
            transport::export_oci_archive(store, &[(name, manifest.clone())], &out.dest, compression)?
        }
        OutputKind::DockerArchive => {
            let repo_tags = match &out.name {
                Some(_) => name.into_iter().collect(),
                None => tags.to_vec(),
            };
            transport::export_docker_archive(store, &[(repo_tags, manifest.clone())], &out.dest)?
        }
        // Pushed by `run`.
        OutputKind::Registry => {}
    }
    Ok(())
}

fn kind_name(kind: &OutputKind) -> &'static str {
    match kind {
        OutputKind::Oci => "OCI image layout",
        OutputKind::OciArchive => "OCI archive",
        OutputKind::DockerArchive => "docker archive",
        OutputKind::Registry => "registry",
    }
}
