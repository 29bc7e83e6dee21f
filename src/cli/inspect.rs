//! `kiln inspect IMAGE…`: image details as JSON, shaped like `podman image inspect`.

use clap::Args;
use serde_json::{json, Value};

use super::format;
use super::images::split_tag;
use super::lookup;
use super::Cli;
use kiln::store::StoredImage;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln inspect app:v1\n  kiln inspect --format '{{.Id}}' app\n  kiln inspect --format '{{json .Config}}' app\n  kiln inspect --format '{{index .Config.Labels \"version\"}}' app"
)]
pub struct InspectArgs {
    /// Go template applied to each image ({{.Id}}, {{.Config.Env}}, {{json .RootFS}}, …).
    #[arg(short, long)]
    pub format: Option<String>,
    /// Images: tags, digests or id prefixes.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

pub fn run(cli: &Cli, args: &InspectArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    let template = args.format.as_deref().map(format::Template::parse).transpose()?;
    let mut values = Vec::new();
    let mut missing = Vec::new();
    for name in &args.images {
        match lookup::find(&store, name) {
            Ok(image) => values.push(inspect_value(&image, super::images::uncompressed_size(&store, &image))),
            Err(e) if e.downcast_ref::<lookup::NoSuchImage>().is_some() => missing.push(name.clone()),
            Err(e) => return Err(e),
        }
    }
    match &template {
        Some(t) => {
            for v in &values {
                println!("{}", t.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&Value::Array(values))?),
    }
    if missing.is_empty() {
        return Ok(0);
    }
    for name in missing {
        eprintln!("error: no such image: {name}");
    }
    Ok(1)
}

/// The inspect document for one image of `size` bytes (uncompressed, as
/// docker's `Size`).
pub fn inspect_value(image: &StoredImage, size: u64) -> Value {
    let config = &image.config;
    let repo_digests: Vec<String> = image
        .tags
        .iter()
        .map(|t| format!("{}@{}", split_tag(t).0, image.manifest_digest()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    json!({
        "Id": image.config_digest.trim_start_matches("sha256:"),
        "Digest": image.manifest_digest(),
        "RepoTags": image.tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": config.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": config.created,
        "Config": serde_json::to_value(&config.config).unwrap_or(Value::Null),
        "Version": "",
        "Author": config.author.clone().unwrap_or_default(),
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": size,
        "VirtualSize": size,
        "RootFS": { "Type": config.rootfs.kind, "Layers": config.rootfs.diff_ids },
        "Labels": config.config.labels,
        "Annotations": image.manifest.annotations.clone().unwrap_or_default(),
        "ManifestType": image.descriptor.media_type,
        "User": config.config.user.clone().unwrap_or_default(),
        "History": serde_json::to_value(&config.history).unwrap_or(Value::Null),
        "NamesHistory": image.tags,
    })
}
