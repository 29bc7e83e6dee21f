//! `kiln image prune`: remove dangling images (or, with `-a`, every image)
//! and what only they used, and the build cache no tagged image was built
//! from (with `-a`, all of it), as docker's prune does: the next build of a
//! tagged image still finds every step it ran.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Args;

use super::format::{self, parse_time};
use super::Cli;
use kiln::store::{CachePrune, Collect, Reclaimed, Store, StoredImage};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln image prune -f\n  kiln image prune -a --filter until=24h\n  kiln image prune -af --filter label=stage=build"
)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// until=TIMESTAMP|DURATION (created before), label=KEY[=VALUE], label!=KEY[=VALUE].
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
}

pub fn run(cli: &Cli, args: &ImagePruneArgs) -> anyhow::Result<i32> {
    if let Some(code) = super::enter_namespace_to_remove()? {
        return Ok(code);
    }
    let warning = if args.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !args.force && !confirm(warning)? {
        return Ok(0);
    }
    let store = cli.open_store()?;
    let filters = PruneFilters::parse(&args.filters, Utc::now())?;
    let reclaimed = prune_images(&store, args.all, &filters, Collect::default())?;
    println!("Total reclaimed space: {}", format::size(reclaimed.bytes));
    Ok(0)
}

/// Prints docker's warning and asks; anything but y/yes (or end of input) is no.
pub fn confirm(warning: &str) -> anyhow::Result<bool> {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::Write::flush(&mut std::io::stdout())?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Untags and removes the images prune selects, and the build cache it
/// drops (all of it with `all` and no filter, else what no tagged image was
/// built from), then collects (with the extra work in `collect`); prints
/// docker's "Deleted Images:" block.
pub fn prune_images(
    store: &Store,
    all: bool,
    filters: &PruneFilters,
    mut collect: Collect,
) -> anyhow::Result<Reclaimed> {
    collect.cache = if all && filters.is_empty() { CachePrune::All } else { CachePrune::Unreachable };
    let images = store.images()?;
    // An image the build cache still holds once this prune has dropped its
    // part stays; one only dropped records held goes in the same run.
    let dropped: BTreeSet<PathBuf> = store.cache_records_to_drop(collect.cache)?.into_iter().collect();
    let held = store.cache_refs_without(&dropped)?;
    let cached = |i: &StoredImage| held.contains(i.manifest_digest()) || held.contains(&i.config_digest);
    let chosen: Vec<&StoredImage> =
        images.iter().filter(|i| !cached(i) && (all || i.tags.is_empty()) && filters.matches(i)).collect();
    let mut lines = Vec::new();
    for image in &chosen {
        for tag in &image.tags {
            if store.untag(tag)? {
                lines.push(format!("untagged: {tag}"));
            }
        }
    }
    collect.images = chosen.iter().map(|i| i.manifest_digest().to_string()).collect();
    let reclaimed = store.collect(&collect)?;
    let removed: BTreeSet<&String> = reclaimed.blobs.iter().collect();
    for image in &chosen {
        if removed.contains(&image.manifest_digest().to_string()) {
            lines.push(format!("deleted: {}", image.config_digest));
        }
    }
    if !lines.is_empty() {
        println!("Deleted Images:");
        for l in lines {
            println!("{l}");
        }
        println!();
    }
    super::rmi::warn_failed(&reclaimed.failed);
    Ok(reclaimed)
}

/// `--filter` for prune commands.
#[derive(Debug, Default)]
pub struct PruneFilters {
    until: Option<DateTime<Utc>>,
    labels: Vec<(bool, String, Option<String>)>,
}

impl PruneFilters {
    pub fn parse(specs: &[String], now: DateTime<Utc>) -> anyhow::Result<PruneFilters> {
        let mut f = PruneFilters::default();
        for spec in specs {
            let (key, value) =
                spec.split_once('=').ok_or_else(|| anyhow::anyhow!("bad filter {spec:?}: expected KEY=VALUE"))?;
            let label = |v: &str| match v.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (v.to_string(), None),
            };
            match key {
                "until" => f.until = Some(parse_until(value, now)?),
                "label" => {
                    let (k, v) = label(value);
                    f.labels.push((true, k, v));
                }
                "label!" => {
                    let (k, v) = label(value);
                    f.labels.push((false, k, v));
                }
                other => anyhow::bail!("unknown filter {other:?} (prune knows until, label, label!)"),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_none() && self.labels.is_empty()
    }

    pub fn matches(&self, image: &StoredImage) -> bool {
        if let Some(until) = self.until {
            match parse_time(image.config.created.as_deref()) {
                Some(created) if created < until => {}
                _ => return false,
            }
        }
        let labels = image.config.config.labels.clone().unwrap_or_default();
        self.labels.iter().all(|(want, k, v)| {
            let has = match (labels.get(k), v) {
                (Some(actual), Some(v)) => actual == v,
                (Some(_), None) => true,
                (None, _) => false,
            };
            has == *want
        })
    }
}

/// `until=`: a Go duration before now (`24h`, `1h30m`, `90s`), an RFC 3339
/// time, a date, or unix seconds.
pub fn parse_until(value: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Some(d) = go_duration(value) {
        return Ok(now - d);
    }
    if let Some(t) = parse_time(Some(value)) {
        return Ok(t);
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now));
    }
    if let Ok(secs) = value.parse::<i64>() {
        if let Some(t) = DateTime::from_timestamp(secs, 0) {
            return Ok(t);
        }
    }
    anyhow::bail!("bad until={value:?}: expected a duration (24h, 90m), an RFC 3339 time, a date or unix seconds")
}

/// Go's `time.ParseDuration` for h, m, s, ms (no sign, no fractions but decimals allowed).
fn go_duration(s: &str) -> Option<chrono::Duration> {
    let mut rest = s;
    let mut total_ms = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            _ => return None,
        };
        total_ms += n * ms;
        rest = &rest[unit_len..];
    }
    Some(chrono::Duration::milliseconds(total_ms as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_values() {
        let now = parse_time(Some("2024-06-01T12:00:00Z")).unwrap();
        assert_eq!(parse_until("24h", now).unwrap(), parse_time(Some("2024-05-31T12:00:00Z")).unwrap());
        assert_eq!(parse_until("1h30m", now).unwrap(), parse_time(Some("2024-06-01T10:30:00Z")).unwrap());
        assert_eq!(parse_until("2024-01-02", now).unwrap(), parse_time(Some("2024-01-02T00:00:00Z")).unwrap());
        assert_eq!(
            parse_until("2024-01-02T03:04:05Z", now).unwrap(),
            parse_time(Some("2024-01-02T03:04:05Z")).unwrap()
        );
        assert_eq!(parse_until("0", now).unwrap(), parse_time(Some("1970-01-01T00:00:00Z")).unwrap());
        assert!(parse_until("soon", now).is_err());
        assert!(parse_until("5d", now).is_err());
    }
}
