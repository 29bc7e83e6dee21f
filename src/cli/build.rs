//! `kiln build`: read the Dockerfile and context, plan, execute, then tag and
//! export the image.

mod args;
mod cached;
mod flags;
mod input;
mod outputs;

use flags::{
    build_args, commit_compression, compression_level, docker_format, key_values, pull_options, source_date_epoch,
    warn_unused, with_epoch_arg,
};
use input::{cache_identity, named_contexts, open_context, read_input};
use outputs::{kind_name, write_output};

pub use args::BuildArgs;

use std::path::PathBuf;

use anyhow::Context as _;

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
