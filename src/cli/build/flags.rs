//! Flags turned into the options of a build: the epoch, the image format
//! and compression, build args, `--add-host`, pull options.

use anyhow::Context as _;
use kiln_overlay::compress::Compression;

use super::BuildArgs;
/// `--source-date-epoch`, else `SOURCE_DATE_EPOCH` (empty counts as unset,
/// as the reproducible-builds spec asks; a malformed value is an error).
pub(super) fn source_date_epoch(args: &BuildArgs) -> anyhow::Result<Option<i64>> {
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

pub(super) const EPOCH_ARG: &str = "SOURCE_DATE_EPOCH";

/// The epoch is the build arg SOURCE_DATE_EPOCH too, as in BuildKit: a stage
/// that declares `ARG SOURCE_DATE_EPOCH` sees it (and RUN can derive its
/// timestamps from it). Like the predefined proxy args, it is never reported
/// as unused.
pub(super) fn with_epoch_arg(
    mut args: Vec<(String, Option<String>)>,
    epoch: Option<i64>,
) -> Vec<(String, Option<String>)> {
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
pub(super) fn docker_format(args: &BuildArgs) -> anyhow::Result<bool> {
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

pub(super) fn commit_compression(args: &BuildArgs) -> kiln_overlay::compress::Compression {
    use kiln_overlay::compress::Compression;
    match (args.compression, args.compression_level) {
        (Some(c), _) => Compression::from(c),
        (None, Some(_)) => Compression::Gzip,
        (None, None) => Compression::None,
    }
}

/// `--compression-level`, checked against `--compression` before any work starts.
pub(super) fn compression_level(args: &BuildArgs) -> anyhow::Result<Option<u32>> {
    let Some(level) = args.compression_level else { return Ok(None) };
    let compression = commit_compression(args);
    compression.check_level(level).map_err(|e| anyhow::anyhow!("--compression-level {}: {}", level, e))?;
    Ok(Some(level))
}

/// `K=V` pairs of a repeatable flag (`V` may be empty, `K` may not).
pub(super) fn key_values(flag: &str, raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|r| match r.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("{} {:?}: expected KEY=VALUE", flag, r),
        })
        .collect()
}

/// `K=V` as given; `K` alone takes the value from kiln's environment (and is
/// dropped when unset, as docker does).
pub(super) fn build_args(raw: &[String]) -> Vec<(String, Option<String>)> {
    raw.iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), Some(v.to_string()))),
            None => std::env::var(a).ok().map(|v| (a.clone(), Some(v))),
        })
        .collect()
}

pub(super) fn warn_unused(args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != EPOCH_ARG).collect();
    if !args.is_empty() {
        eprintln!("[Warning] one or more build args were not consumed: [{}]", args.join(" "));
    }
}

/// `--add-host NAME:IP` or `NAME=IP` (docker takes both; an IPv6 address
/// holds colons, so the name ends at the first separator).
pub(super) fn parse_add_host(text: &str) -> Result<(String, kiln::exec::run::HostIp), String> {
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

pub(super) fn pull_options(args: &BuildArgs, quiet: bool) -> kiln::registry::PullOptions {
    kiln::registry::PullOptions {
        policy: args.pull.parse().unwrap_or_default(),
        // The executor and the planner set the platform per image they look up.
        registry: args.registry.options(None, !quiet),
    }
}
