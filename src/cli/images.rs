//! `kiln images`: the images in the store, as `docker images` lists them.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{json, Value};

use super::format::{self, parse_time};
use super::lookup;
use super::Cli;
use kiln::store::{Store, StoredImage};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln images\n  kiln images -q --filter dangling=true\n  kiln images --digests app\n  kiln images --format 'table {{.Repository}}\\t{{.Tag}}\\t{{.Size}}'\n  kiln images --format json"
)]
pub struct ImagesArgs {
    /// Only images of this repository (a glob pattern), optionally with :TAG.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub repository: Option<String>,
    /// Also show intermediate images (those only the build cache holds).
    #[arg(short, long)]
    pub all: bool,
    /// Show manifest digests.
    #[arg(long)]
    pub digests: bool,
    /// Filter: dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE, label=KEY[=VALUE].
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Go template ({{.Repository}}, {{.Tag}}, {{.ID}}, {{.Digest}}, {{.CreatedSince}}, {{.CreatedAt}}, {{.Size}}), `table …`, or `json`.
    #[arg(long)]
    pub format: Option<String>,
    /// Print only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
}

/// One line of the listing: an image under one of its tags (or `<none>`).
struct Row<'a> {
    image: &'a StoredImage,
    repository: String,
    tag: String,
    /// Uncompressed, as docker and podman show it.
    size: u64,
}

/// An image's size as docker and podman show it: the sum of its layers'
/// uncompressed sizes (see `Store::uncompressed_size`). A layer whose size
/// cannot be told (its blob is unreadable or not what the image says)
/// counts as stored, with a warning.
pub fn uncompressed_size(store: &Store, image: &StoredImage) -> u64 {
    layer_sizes(store, image).iter().sum()
}

/// Each layer's uncompressed size, in manifest order.
pub fn layer_sizes(store: &Store, image: &StoredImage) -> Vec<u64> {
    let diff_ids = &image.config.rootfs.diff_ids;
    image
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let Some(diff_id) = diff_ids.get(i) else { return layer.size };
            store.uncompressed_size(layer, diff_id).unwrap_or_else(|e| {
                log::warn!("size of layer {} of image {}: {e}", layer.digest, lookup::id(&image.config_digest, false));
                layer.size
            })
        })
        .collect()
}

pub fn run(cli: &Cli, args: &ImagesArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    let mut images = store.images().context("list images")?;
    images.sort_by_key(|i| std::cmp::Reverse(parse_time(i.config.created.as_deref())));
    let filters = Filters::parse(&args.filters, &store)?;

    let mut rows = Vec::new();
    for image in &images {
        if image.tags.is_empty() {
            if image.cached && !args.all {
                continue;
            }
            if filters.matches(image, None) && args.repository.is_none() {
                rows.push(Row { image, repository: "<none>".into(), tag: "<none>".into(), size: 0 });
            }
            continue;
        }
        for name in &image.tags {
            let (repository, tag) = split_tag(name);
            let wanted = args.repository.as_deref().is_none_or(|r| matches_reference(r, &repository, &tag));
            if wanted && filters.matches(image, Some(name)) {
                rows.push(Row { image, repository, tag, size: 0 });
            }
        }
    }

    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            let id = lookup::id(&r.image.config_digest, args.no_trunc);
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(0);
    }

    let mut sizes: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for r in &mut rows {
        let digest = r.image.manifest_digest();
        r.size = *sizes.entry(digest).or_insert_with(|| uncompressed_size(&store, r.image));
    }
    let now = Utc::now();
    let values: Vec<Value> = rows.iter().map(|r| row_value(r, args.no_trunc, now)).collect();
    if let Some(fmt) = &args.format {
        format::print_formatted(fmt, &values, &header_name)?;
        return Ok(0);
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for v in &values {
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let mut line = vec![field("Repository"), field("Tag")];
        if args.digests {
            line.push(field("Digest"));
        }
        line.extend([field("ID"), field("CreatedSince"), field("Size")]);
        table.push(line);
    }
    print!("{}", format::table(&table));
    Ok(0)
}

/// The fields `--format` sees (docker's names).
fn row_value(r: &Row, no_trunc: bool, now: DateTime<Utc>) -> Value {
    let created = r.image.config.created.as_deref();
    let size = format::size(r.size);
    json!({
        "Containers": "N/A",
        "CreatedAt": format::created_at(created),
        "CreatedSince": format::since(created, now),
        "Digest": r.image.manifest_digest(),
        "ID": lookup::id(&r.image.config_digest, no_trunc),
        "Repository": r.repository,
        "SharedSize": "N/A",
        "Size": size,
        "Tag": r.tag,
        "UniqueSize": "N/A",
        "VirtualSize": size,
    })
}

fn header_name(field: &str) -> Option<&'static str> {
    Some(match field {
        "ID" => "IMAGE ID",
        "CreatedSince" => "CREATED",
        "CreatedAt" => "CREATED AT",
        "SharedSize" => "SHARED SIZE",
        "UniqueSize" => "UNIQUE SIZE",
        "VirtualSize" => "SIZE",
        _ => return None,
    })
}

/// `--filter` conditions; all must hold.
#[derive(Default)]
struct Filters {
    dangling: Option<bool>,
    references: Vec<String>,
    before: Option<DateTime<Utc>>,
    since: Option<DateTime<Utc>>,
    labels: Vec<(String, Option<String>)>,
}

impl Filters {
    fn parse(specs: &[String], store: &kiln::store::Store) -> anyhow::Result<Filters> {
        let mut f = Filters::default();
        let created_of = |name: &str| -> anyhow::Result<DateTime<Utc>> {
            let image = lookup::find(store, name)?;
            parse_time(image.config.created.as_deref())
                .ok_or_else(|| anyhow::anyhow!("image {name:?} has no creation time to compare with"))
        };
        for spec in specs {
            let (key, value) =
                spec.split_once('=').ok_or_else(|| anyhow::anyhow!("bad filter {spec:?}: expected KEY=VALUE"))?;
            match key {
                "dangling" => {
                    f.dangling = Some(match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => anyhow::bail!("bad filter {spec:?}: dangling takes true or false"),
                    })
                }
                "reference" => f.references.push(value.to_string()),
                "before" => f.before = Some(created_of(value)?),
                "since" => f.since = Some(created_of(value)?),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                other => anyhow::bail!(
                    "unknown filter {other:?} (kiln images knows dangling, reference, before, since, label)"
                ),
            }
        }
        Ok(f)
    }

    fn matches(&self, image: &StoredImage, tag: Option<&str>) -> bool {
        if self.dangling.is_some_and(|d| d != image.tags.is_empty()) {
            return false;
        }
        if !self.references.is_empty() {
            let Some(name) = tag else { return false };
            let (repo, t) = split_tag(name);
            if !self.references.iter().any(|r| matches_reference(r, &repo, &t)) {
                return false;
            }
        }
        let created = parse_time(image.config.created.as_deref());
        if self.before.is_some_and(|b| created.is_none_or(|c| c >= b)) {
            return false;
        }
        if self.since.is_some_and(|s| created.is_none_or(|c| c <= s)) {
            return false;
        }
        let labels: BTreeMap<String, String> = image.config.config.labels.clone().unwrap_or_default();
        self.labels.iter().all(|(k, v)| match (labels.get(k), v) {
            (Some(actual), Some(want)) => actual == want,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

/// docker's reference filter: a glob against `repo` or `repo:tag`.
fn matches_reference(pattern: &str, repo: &str, tag: &str) -> bool {
    if pattern.contains(':') && !pattern.ends_with(']') {
        glob_match(pattern, &format!("{repo}:{tag}"))
    } else {
        glob_match(pattern, repo)
    }
}

/// Go's `path.Match`: `*` and `?` do not cross '/', `[…]` classes.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => (0..=t.len()).take_while(|&i| i == 0 || t[i - 1] != '/').any(|i| glob_at(&p[1..], &t[i..])),
        Some('?') => t.first().is_some_and(|&c| c != '/') && glob_at(&p[1..], &t[1..]),
        Some('[') => {
            let Some(end) = p.iter().position(|&c| c == ']') else { return false };
            let Some(&c) = t.first() else { return false };
            let class = &p[1..end];
            let (negate, class) = match class.first() {
                Some('^') | Some('!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_at(&p[end + 1..], &t[1..])
        }
        Some(&c) => t.first() == Some(&c) && glob_at(&p[1..], &t[1..]),
    }
}

/// `host:5000/app:v1` → (`host:5000/app`, `v1`).
pub fn split_tag(name: &str) -> (String, String) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (name[..i].to_string(), name[i + 1..].to_string()),
        _ => (name.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_go_path_match() {
        assert!(glob_match("app", "app"));
        assert!(glob_match("a*", "app"));
        assert!(!glob_match("*", "library/app"));
        assert!(glob_match("*/app", "library/app"));
        assert!(glob_match("ap?", "app"));
        assert!(glob_match("[a-c]pp", "app"));
        assert!(!glob_match("[^a]pp", "app"));
        assert!(matches_reference("app:v*", "app", "v1"));
        assert!(!matches_reference("app:v*", "app", "latest"));
        assert!(matches_reference("app", "app", "anything"));
    }

    #[test]
    fn splits_tags() {
        assert_eq!(split_tag("host:5000/app:v1"), ("host:5000/app".into(), "v1".into()));
        assert_eq!(split_tag("host:5000/app"), ("host:5000/app".into(), "latest".into()));
    }
}
