//! `kiln build`: read the Dockerfile and context, plan, execute, then tag and
//! export the image.

mod cached;
mod flags;
mod input;
mod outputs;

use flags::{
    build_args, commit_compression, compression_level, docker_format, key_values, parse_add_host, pull_options,
    source_date_epoch, warn_unused, with_epoch_arg,
};
use input::{cache_identity, named_contexts, open_context, read_input};
use outputs::{kind_name, write_output};

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use kiln_overlay::compress::Compression;

use crate::report::SourceError;
use kiln::context::BuildContext;
use kiln::dockerfile;
use kiln::exec::{self, BuildOptions};
use kiln::image::reference;
use kiln::plan::{self, PlanOptions};
use kiln::progress::Reporter;
use kiln::store::Store;

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

/// What the command line asks of the build besides the image itself.
struct Wanted {
    mode: Mode,
    compression_level: Option<u32>,
    outputs: Vec<OutputSpec>,
    tags: Vec<String>,
}

/// How this process builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// Only if every step is cached, outside kiln's user namespace (`cached.rs`).
    CachedOnly,
    /// Everything the build needs (in the namespace, unless root or none can be made).
    Full,
}

/// What building the image gave.
enum Built {
    /// Nothing more to do (`--check`, `--verify-reproducible`): the exit code.
    Done(i32),
    /// Boxed: the build's output is large, the other variant an int.
    Image(Box<BuiltImage>),
}

struct BuiltImage {
    store: Store,
    view: View,
    result: exec::BuildOutput,
    unused_build_args: Vec<String>,
}

pub fn run(cli: &Cli, args: &BuildArgs) -> anyhow::Result<i32> {
    let wanted = Wanted {
        mode: super::progress::mode(args.progress, args.quiet)?,
        compression_level: compression_level(args)?,
        outputs: args.outputs.iter().map(|o| output::parse(o)).collect::<Result<_, _>>()?,
        tags: args
            .tags
            .iter()
            .map(|t| reference::normalize_local(t).with_context(|| format!("invalid tag {:?}", t)))
            .collect::<anyhow::Result<_>>()?,
    };
    if !args.check {
        let mode = kiln_runtime::detect();
        if cached::worth_trying(args, &wanted.outputs, &mode) {
            match build_here(cli, args, &wanted, Attempt::CachedOnly) {
                Err(e) if e.is::<cached::Handover>() => log::debug!("{e:#}"),
                done => return done,
            }
        }
        // Store work (unpacking layers, running RUN, committing) happens as
        // uid 0 of kiln's user namespace, so files keep the image's owners.
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
    build_here(cli, args, &wanted, Attempt::Full)
}

/// Builds in this process; then tags, pushes and writes the outputs. A
/// `CachedOnly` attempt that finds a step to run has said nothing (its
/// progress and log lines are held back) and fails with [`cached::Handover`].
fn build_here(cli: &Cli, args: &BuildArgs, wanted: &Wanted, attempt: Attempt) -> anyhow::Result<i32> {
    if attempt == Attempt::CachedOnly {
        super::progress::hold_logs();
    }
    let built = build_image(cli, args, wanted, attempt);
    if attempt == Attempt::CachedOnly {
        super::progress::release_logs(built.is_ok());
    }
    let (store, view, result, unused_build_args) = match (built, attempt) {
        (Ok(Built::Done(code)), _) => return Ok(code),
        (Ok(Built::Image(built)), _) => {
            let BuiltImage { store, view, result, unused_build_args } = *built;
            (store, view, result, unused_build_args)
        }
        (Err(e), Attempt::CachedOnly) => return Err(cached::Handover(format!("{e:#}")).into()),
        (Err(e), Attempt::Full) => return Err(e),
    };
    if attempt == Attempt::CachedOnly {
        log::info!("every step was cached: built without entering kiln's user namespace");
    }
    let Wanted { mode, outputs, tags, .. } = wanted;
    let quiet = *mode == Mode::Quiet;
    warn_unused(&unused_build_args);

    for tag in tags {
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
        write_output(&store, out, tags, &result.manifest, out.compression.unwrap_or(compression))?;
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

/// Reads the Dockerfile and context, plans and builds the image.
fn build_image(cli: &Cli, args: &BuildArgs, wanted: &Wanted, attempt: Attempt) -> anyhow::Result<Built> {
    let mode = wanted.mode;
    let quiet = mode == Mode::Quiet;
    let compression_level = wanted.compression_level;
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
        return Ok(Built::Done(0));
    }

    let store = cli.open_store()?;
    // Build progress goes to stdout in plain mode, as podman prints it. A
    // replay of the cache shows its progress once it is known to be all.
    let recorder = cached::Recorder::default();
    let full_view = (attempt == Attempt::Full).then(|| View::new(mode, Box::new(std::io::stdout())));
    let progress: &dyn Reporter = match &full_view {
        Some(view) => view,
        None => &recorder,
    };
    let mut pull_opts = pull_options(args, quiet);
    if attempt == Attempt::CachedOnly {
        // A base the store lacks is pulled by the build in the namespace.
        pull_opts.policy = kiln::registry::PullPolicy::Never;
    }
    let named = named_contexts(&args.build_contexts)?;
    let peeked = exec::bases::Peeked::default();
    // The env and triggers of the base for the stage's platform: FROM --platform, else --platform.
    let bases = exec::bases::Bases {
        store: &store,
        pull: &pull_opts,
        named_contexts: &named,
        progress,
        // --no-cache reads no shared cache: the executor pulls bases whole.
        defer_layers: !args.cache_from.is_empty() && !args.no_cache,
        peeked: &peeked,
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
        only_if_cached: attempt == Attempt::CachedOnly,
        peeked,
    };
    if args.verify_reproducible {
        if !wanted.tags.is_empty() || !wanted.outputs.is_empty() || args.push {
            eprintln!("warning: --verify-reproducible only compares two builds: nothing is tagged, exported or pushed");
        }
        let code = super::verify_repro::run(&store, &ctx, &plan, &build_opts, progress, &input.text);
        full_view.iter().for_each(View::finish);
        return code.map(Built::Done);
    }
    let result = match (exec::build(&store, &ctx, &plan, &build_opts, progress), &full_view) {
        (Ok(result), _) => result,
        (Err(e), Some(view)) => {
            view.finish();
            say_interrupted(view);
            return Err(SourceError::new(e, &input.text).into());
        }
        (Err(e), None) => return Err(e.into()),
    };
    let view = match full_view {
        Some(view) => view,
        None => {
            let view = View::new(mode, Box::new(std::io::stdout()));
            recorder.replay(&view);
            view
        }
    };
    Ok(Built::Image(Box::new(BuiltImage { store, view, result, unused_build_args: plan.unused_build_args })))
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

struct Input {
    text: String,
    /// The name errors print.
    display: String,
    dockerfile_path: Option<PathBuf>,
    /// Set when the context came with the Dockerfile on stdin.
    context: Option<BuildContext>,
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
