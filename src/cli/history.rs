//! `kiln history IMAGE`: the steps that made an image, newest first, as
//! `docker history` shows them.

use chrono::{DateTime, Utc};
use clap::{ArgAction, Args};
use serde_json::{json, Value};

use super::format::{self, parse_time};
use super::lookup;
use super::Cli;
use kiln::image::config::History;
use kiln::image::manifest::Descriptor;
use kiln::store::StoredImage;

/// docker cuts CREATED BY to this many characters unless `--no-trunc`.
const CREATED_BY_WIDTH: usize = 45;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln history app\n  kiln history --no-trunc --human=false app:v1\n  kiln history --format '{{.CreatedBy}}\\t{{.Size}}' app"
)]
pub struct HistoryArgs {
    /// Sizes and dates in human-readable form (`--human=false` prints bytes and RFC 3339 times).
    #[arg(short = 'H', long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    pub human: bool,
    /// Do not truncate ids or CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print only image ids (`<missing>` for steps without one).
    #[arg(short, long)]
    pub quiet: bool,
    /// Go template ({{.ID}}, {{.CreatedSince}}, {{.CreatedAt}}, {{.CreatedBy}}, {{.Size}}, {{.Comment}}), `table …` or `json`.
    #[arg(long)]
    pub format: Option<String>,
    /// The image: a tag, digest or id prefix.
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// One history entry with the layer it made, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub history: History,
    pub layer_size: Option<u64>,
}

/// Pairs history entries with layers in order: each entry that is not an
/// `empty_layer` made the next layer. Layers no entry accounts for (images
/// without history) get entries of their own. A layer's size is
/// `sizes[i]` (uncompressed, as docker shows it), else its blob's.
pub fn steps(image: &StoredImage, sizes: &[u64]) -> Vec<Step> {
    let mut layers = image
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| Descriptor { size: sizes.get(i).copied().unwrap_or(l.size), ..l.clone() });
    let mut out: Vec<Step> = image
        .config
        .history
        .iter()
        .map(|h| Step {
            history: h.clone(),
            layer_size: if h.empty_layer { None } else { layers.next().map(|l| l.size) },
        })
        .collect();
    out.extend(layers.map(|l| Step { history: History::default(), layer_size: Some(l.size) }));
    out
}

pub fn run(cli: &Cli, args: &HistoryArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    let image = lookup::find(&store, &args.image)?;
    let now = Utc::now();
    let sizes = super::images::layer_sizes(&store, &image);
    let steps = steps(&image, &sizes);
    let ids = step_ids(&store, &image);
    let values: Vec<Value> = steps
        .iter()
        .enumerate()
        .rev()
        .enumerate()
        .map(|(i, (n, step))| {
            let id = match (i, ids.get(&(n + 1))) {
                (0, _) => lookup::id(&image.config_digest, args.no_trunc),
                (_, Some(id)) => lookup::id(id, args.no_trunc),
                _ => "<missing>".into(),
            };
            step_value(step, id, args, now)
        })
        .collect();

    if args.quiet {
        for v in &values {
            println!("{}", v["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    if let Some(fmt) = &args.format {
        format::print_formatted(fmt, &values, &header_name)?;
        return Ok(0);
    }
    let mut rows = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"].map(String::from).to_vec()];
    for v in &values {
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let created = if args.human { field("CreatedSince") } else { field("CreatedAt") };
        rows.push(vec![field("ID"), created, field("CreatedBy"), field("Size"), field("Comment")]);
    }
    print!("{}", format::table(&rows));
    Ok(0)
}

/// The ids of the step images (see `Store::intermediate_images`) that are
/// states on the way to `image`, by how many history entries they have: as
/// docker's history shows the ids of the intermediate images it has.
fn step_ids(store: &kiln::store::Store, image: &StoredImage) -> std::collections::HashMap<usize, String> {
    let (history, diff_ids) = (&image.config.history, &image.config.rootfs.diff_ids);
    let mut out = std::collections::HashMap::new();
    for (_, config_digest) in store.intermediate_images() {
        let Ok(bytes) = store.read_blob(&config_digest) else { continue };
        let Ok(config) = serde_json::from_slice::<kiln::image::config::ImageConfig>(&bytes) else { continue };
        let n = config.history.len();
        if n > 0 && history.starts_with(&config.history) && diff_ids.starts_with(&config.rootfs.diff_ids) {
            out.insert(n, config_digest);
        }
    }
    out
}

fn step_value(step: &Step, id: String, args: &HistoryArgs, now: DateTime<Utc>) -> Value {
    let h = &step.history;
    let created_by = h.created_by.clone().unwrap_or_default().replace('\t', " ");
    let created_by = if args.no_trunc { created_by } else { format::ellipsis(&created_by, CREATED_BY_WIDTH) };
    let bytes = step.layer_size.unwrap_or(0);
    let created_at = parse_time(h.created.as_deref()).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    json!({
        "ID": id,
        "CreatedSince": format::since(h.created.as_deref(), now),
        "CreatedAt": created_at.unwrap_or_default(),
        "CreatedBy": created_by,
        "Size": if args.human { format::size(bytes) } else { bytes.to_string() },
        "Comment": h.comment.clone().unwrap_or_default(),
    })
}

fn header_name(field: &str) -> Option<&'static str> {
    Some(match field {
        "ID" => "IMAGE",
        "CreatedSince" => "CREATED",
        "CreatedAt" => "CREATED AT",
        "CreatedBy" => "CREATED BY",
        _ => return None,
    })
}
