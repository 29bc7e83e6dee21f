//! `kiln system prune`, `kiln system df` and `kiln system check`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::format;
use super::images::split_tag;
use super::prune::{self, PruneFilters};
use super::Cli;
use kiln::store::{layer_dir_chain_id, Collect, Store, StoredImage, Usage};

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove dangling images, build cache no tagged image uses, unreferenced layer dirs and temp files.
    Prune(SystemPruneArgs),
    /// Show the store's disk usage.
    Df(DfArgs),
    /// Verify the store (blobs, references, configs, layer dirs, leftovers); --repair removes what is broken.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Prints one line per problem (PATH: what is wrong) and a summary; exits 1 while problems remain.\n\
--repair removes temp files of interrupted kilns, blobs whose content does not match their digest,\n\
half-written and unused layer dirs, broken untagged images, build-cache records naming missing blobs and\n\
index entries whose manifest is missing; it says what it removed, one line each. A broken tagged image\n\
is kept: the line says how to replace or remove it.\n\nExamples:\n  kiln system check\n  kiln system check --repair"
)]
pub struct CheckArgs {
    /// Remove what is broken or left over (waits for running builds).
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  kiln system prune -f\n  kiln system prune -af --volumes")]
pub struct SystemPruneArgs {
    /// Remove all images and all build cache, not just dangling images and unused cache.
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Also remove cache mounts (RUN --mount=type=cache directories).
    #[arg(long, visible_alias = "cache-mounts")]
    pub volumes: bool,
    /// until=TIMESTAMP|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE] (for images).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "-v (kiln's global --verbose) adds per-image, per-layer-dir and per-cache-mount detail, and the\nstore's total in bytes.\n\nExamples:\n  kiln system df\n  kiln system df -v\n  kiln system df --format json"
)]
pub struct DfArgs {
    /// Go template ({{.Type}}, {{.TotalCount}}, {{.Active}}, {{.Size}}, {{.Reclaimable}}), `table …`, or `json`
    /// (which adds exact SizeBytes and ReclaimableBytes, and a Metadata row).
    #[arg(long)]
    pub format: Option<String>,
}

pub fn run(cli: &Cli, command: &SystemCommand) -> anyhow::Result<i32> {
    match command {
        SystemCommand::Prune(args) => run_prune(cli, args),
        SystemCommand::Df(args) => run_df(cli, args),
        SystemCommand::Check(args) => run_check(cli, args),
    }
}

fn run_check(cli: &Cli, args: &CheckArgs) -> anyhow::Result<i32> {
    // As a build does: layer dirs hold files of subordinate ids, which only
    // uid 0 of kiln's user namespace may remove.
    let mode = kiln_runtime::detect();
    match kiln_runtime::enter_user_namespace(&mode) {
        Ok(Some(code)) => return Ok(code),
        Ok(None) => {}
        Err(kiln_runtime::RuntimeError::Unavailable { .. }) => {} // detect() warned; the caller's own files still go
        Err(e) => return Err(anyhow::Error::new(e).context("enter kiln's user namespace")),
    }
    let store = cli.open_store()?;
    let report = if args.repair {
        let (done, report) = store.repair()?;
        for repair in &done {
            println!("{repair}");
        }
        report
    } else {
        store.check()?
    };
    for problem in &report.problems {
        println!("{problem}");
    }
    if !report.in_use.is_empty() {
        eprintln!(
            "note: {} temp files and layer dirs belong to a kiln that is running; not judged",
            report.in_use.len()
        );
        for path in &report.in_use {
            log::info!("in use: {}", path.display());
        }
    }
    let n = report.problems.len();
    if n == 0 {
        println!(
            "store is consistent ({} blobs, {} images, {} layer dirs)",
            report.blobs, report.images, report.layer_dirs
        );
        return Ok(0);
    }
    println!("{n} problem{}", if n == 1 { "" } else { "s" });
    let repairable = report.problems.iter().any(|p| !matches!(p.fix, kiln::store::Fix::Manual(_)));
    if repairable && !args.repair {
        eprintln!("hint: `kiln system check --repair` removes what is broken or left over");
    }
    Ok(1)
}

pub fn run_prune(cli: &Cli, args: &SystemPruneArgs) -> anyhow::Result<i32> {
    if let Some(code) = super::enter_namespace_to_remove()? {
        return Ok(code);
    }
    let mut warning = String::from("WARNING! This will remove:\n");
    warning.push_str(if args.all {
        "  - all images without at least one container associated to them\n"
    } else {
        "  - all dangling images\n"
    });
    if args.volumes {
        warning.push_str("  - all cache mounts\n");
    }
    warning.push_str(if args.all {
        "  - all build cache\n"
    } else {
        "  - build cache no tagged image was built from\n"
    });
    warning.push_str("  - all layer dirs no image uses\n  - temp files of stopped kiln processes");
    if !args.force && !prune::confirm(&warning)? {
        return Ok(0);
    }
    let store = cli.open_store()?;
    let filters = PruneFilters::parse(&args.filters, Utc::now())?;
    let collect = Collect { images: BTreeSet::new(), cache_mounts: args.volumes, ..Collect::default() };
    let reclaimed = prune::prune_images(&store, args.all, &filters, collect)?;
    if reclaimed.cache_records > 0 {
        println!("Deleted build cache objects: {}", reclaimed.cache_records);
    }
    if !reclaimed.layer_dirs.is_empty() {
        println!("Deleted layer dirs:");
        for d in &reclaimed.layer_dirs {
            println!("{}", d.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        }
        println!();
    }
    if reclaimed.cache_mounts > 0 {
        println!("Deleted cache mounts: {}", reclaimed.cache_mounts);
    }
    if reclaimed.temp_files > 0 {
        println!("Deleted temp files of stopped kiln processes: {}", reclaimed.temp_files);
    }
    println!("Total reclaimed space: {}", format::size(reclaimed.bytes));
    Ok(0)
}

/// One row of `system df`.
struct Kind {
    name: &'static str,
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

/// The store's usage split into docker's table rows; the rows and the
/// metadata add up to `usage.total`, which is what `du -sb` says.
struct Report {
    usage: Usage,
    images: Vec<StoredImage>,
    kinds: Vec<Kind>,
    /// Blob digests tagged images (and the build cache) use.
    live: BTreeSet<String>,
    active_layer_dirs: BTreeSet<String>,
    /// Layer dirs of chains nothing in the store uses.
    unreachable: BTreeSet<String>,
}

fn report(store: &Store) -> anyhow::Result<Report> {
    let _lock = store.lock()?; // a consistent picture: no sweep runs meanwhile
    let usage = store.disk_usage()?;
    let images = store.images()?;
    let cache_refs = store.cache_refs()?;
    let tagged_roots = images.iter().filter(|i| !i.tags.is_empty()).map(|i| i.manifest_digest().to_string());
    let tagged_live = store.reachable(tagged_roots)?;
    let cache_live = store.reachable(cache_refs.iter().cloned())?;
    let cache_only: BTreeSet<&String> = cache_live.difference(&tagged_live).collect();

    let mut image_bytes = 0;
    let mut image_reclaimable = 0;
    let mut cache_blob_bytes = 0;
    for (digest, size) in &usage.blobs {
        if cache_only.contains(digest) {
            cache_blob_bytes += size;
        } else {
            image_bytes += size;
            if !tagged_live.contains(digest) {
                image_reclaimable += size;
            }
        }
    }
    let live: BTreeSet<String> = tagged_live.union(&cache_live).cloned().collect();
    let mut live_chains = BTreeSet::new();
    for image in images.iter().filter(|i| live.contains(i.manifest_digest())) {
        live_chains.extend(kiln::store::chain_ids(&image.config.rootfs.diff_ids));
    }
    // A dir whose name is no chain id is not ours to judge: count it active;
    // but a tree moved aside to be removed is garbage.
    let aside = |name: &str| name.starts_with(kiln::store::remove::TRASH_PREFIX) || name.starts_with(".stale-");
    let active_layer_dirs: BTreeSet<String> = usage
        .layer_dirs
        .keys()
        .filter(|name| !aside(name) && layer_dir_chain_id(name).is_none_or(|c| live_chains.contains(&c)))
        .cloned()
        .collect();
    // Layer dirs of chains no image and no build-cache record has: a killed
    // build's, or a removed image's that could not be deleted.
    let used_chains = store.used_chains()?;
    let unreachable: BTreeSet<String> = usage
        .layer_dirs
        .keys()
        .filter(|name| layer_dir_chain_id(name).is_some_and(|c| !used_chains.contains(&c)))
        .cloned()
        .collect();
    let unreachable_bytes: u64 = unreachable.iter().filter_map(|n| usage.layer_dirs.get(n)).sum();
    let layer_bytes: u64 = usage.layer_dirs.values().sum::<u64>() - unreachable_bytes;
    let layer_active_bytes: u64 = active_layer_dirs.iter().filter_map(|n| usage.layer_dirs.get(n)).sum();
    // Temp files are reclaimable when no kiln that may own them runs.
    let temp_bytes: u64 = usage.temp.values().sum();
    let kiln_running = store.try_builds_lock_exclusive()?.is_none();
    let mount_bytes: u64 = usage.cache_mounts.values().sum();
    let cache_bytes = usage.cache_bytes + cache_blob_bytes;
    // What `system prune` drops: records no tagged image was built from,
    // and the blobs only the cache holds.
    let dropped_record_bytes: u64 = store
        .cache_records_to_drop(kiln::store::CachePrune::Unreachable)?
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let kinds = vec![
        Kind {
            name: "Images",
            total: images.len(),
            active: images.iter().filter(|i| !i.tags.is_empty()).count(),
            size: image_bytes,
            reclaimable: image_reclaimable,
        },
        Kind {
            name: "Build Cache",
            total: usage.cache_records,
            active: 0,
            size: cache_bytes,
            reclaimable: dropped_record_bytes + cache_blob_bytes,
        },
        Kind {
            name: "Layer dirs",
            total: usage.layer_dirs.len() - unreachable.len(),
            active: active_layer_dirs.len(),
            size: layer_bytes,
            reclaimable: layer_bytes - layer_active_bytes,
        },
        Kind {
            name: "Unreachable layer dirs",
            total: unreachable.len(),
            active: 0,
            size: unreachable_bytes,
            reclaimable: unreachable_bytes,
        },
        Kind {
            name: "Temp files",
            total: usage.temp.len(),
            active: if kiln_running { usage.temp.len() } else { 0 },
            size: temp_bytes,
            reclaimable: if kiln_running { 0 } else { temp_bytes },
        },
        Kind {
            name: "Cache mounts",
            total: usage.cache_mounts.len(),
            active: 0,
            size: mount_bytes,
            reclaimable: mount_bytes,
        },
    ];
    Ok(Report { usage, images, kinds, live, active_layer_dirs, unreachable })
}

fn percent(part: u64, whole: u64) -> String {
    (part * 100).checked_div(whole).map(|p| format!(" ({p}%)")).unwrap_or_default()
}

fn run_df(cli: &Cli, args: &DfArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    let r = report(&store)?;
    let mut values: Vec<Value> = r
        .kinds
        .iter()
        .map(|k| {
            json!({
                "Type": k.name,
                "TotalCount": k.total,
                "Active": k.active,
                "Size": format::size(k.size),
                "Reclaimable": format!("{}{}", format::size(k.reclaimable), percent(k.reclaimable, k.size)),
                "SizeBytes": k.size,
                "ReclaimableBytes": k.reclaimable,
            })
        })
        .collect();
    if let Some(fmt) = &args.format {
        if fmt == "json" {
            values.push(json!({
                "Type": "Metadata", "TotalCount": 0, "Active": 0,
                "Size": format::size(r.usage.other), "Reclaimable": "0B",
                "SizeBytes": r.usage.other, "ReclaimableBytes": 0,
            }));
        }
        let names = |f: &str| match f {
            "TotalCount" => Some("TOTAL"),
            _ => None,
        };
        format::print_formatted(fmt, &values, &names)?;
        return Ok(0);
    }
    if cli.verbose > 0 {
        print_verbose(&r);
        return Ok(0);
    }
    let mut rows = vec![["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(String::from).to_vec()];
    for v in &values {
        let f = |k: &str| match &v[k] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push(vec![f("Type"), f("TotalCount"), f("Active"), f("Size"), f("Reclaimable")]);
    }
    print!("{}", format::table(&rows));
    Ok(0)
}

fn print_verbose(r: &Report) {
    let now = Utc::now();
    // How many images use each blob, for SHARED SIZE / UNIQUE SIZE.
    let mut users: BTreeMap<&str, usize> = BTreeMap::new();
    for image in &r.images {
        for b in image.blobs() {
            if let Some((key, _)) = r.usage.blobs.get_key_value(&b) {
                *users.entry(key.as_str()).or_default() += 1;
            }
        }
    }
    println!("Images space usage:\n");
    let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "IN USE"]
        .map(String::from)
        .to_vec()];
    for image in &r.images {
        let (mut shared, mut unique) = (0, 0);
        for b in image.blobs() {
            let size = r.usage.blobs.get(&b).copied().unwrap_or(0);
            if users.get(b.as_str()).copied().unwrap_or(0) > 1 {
                shared += size;
            } else {
                unique += size;
            }
        }
        let names: Vec<(String, String)> = if image.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image.tags.iter().map(|t| split_tag(t)).collect()
        };
        let in_use = if r.live.contains(image.manifest_digest()) { "yes" } else { "no" };
        for (repo, tag) in names {
            rows.push(vec![
                repo,
                tag,
                kiln::humanize::short(&image.config_digest).to_string(),
                format::since(image.config.created.as_deref(), now),
                format::size(shared + unique),
                format::size(shared),
                format::size(unique),
                in_use.into(),
            ]);
        }
    }
    print!("{}", format::table(&rows));

    println!("\nBuild cache usage: {} ({} records)\n", format::size(r.kinds[1].size), r.usage.cache_records);

    println!("Layer dirs space usage:\n");
    let mut rows = vec![["CHAIN ID", "SIZE", "IN USE"].map(String::from).to_vec()];
    for (name, size) in &r.usage.layer_dirs {
        let in_use = if r.active_layer_dirs.contains(name) {
            "yes"
        } else if r.unreachable.contains(name) {
            "unreachable"
        } else {
            "no"
        };
        rows.push(vec![name.clone(), format::size(*size), in_use.into()]);
    }
    print!("{}", format::table(&rows));

    println!("\nTemp files space usage:\n");
    let mut rows = vec![["PATH", "SIZE"].map(String::from).to_vec()];
    for (name, size) in &r.usage.temp {
        rows.push(vec![name.clone(), format::size(*size)]);
    }
    print!("{}", format::table(&rows));

    println!("\nCache mounts space usage:\n");
    let mut rows = vec![["NAME", "SIZE"].map(String::from).to_vec()];
    for (name, size) in &r.usage.cache_mounts {
        rows.push(vec![name.clone(), format::size(*size)]);
    }
    print!("{}", format::table(&rows));

    let u = &r.usage;
    println!(
        "\nStore total: {} ({} bytes, as du -sb counts): images {}, build cache {}, layer dirs {}, unreachable layer dirs {}, temp files {}, cache mounts {}, metadata {} bytes",
        format::size(u.total),
        u.total,
        r.kinds[0].size,
        r.kinds[1].size,
        r.kinds[2].size,
        r.kinds[3].size,
        r.kinds[4].size,
        r.kinds[5].size,
        u.other
    );
    for e in &u.unreadable {
        eprintln!("warning: could not read {e}");
    }
}
