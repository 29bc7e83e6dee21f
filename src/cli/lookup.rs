//! Finding images named on the command line.

use anyhow::Context as _;

use kiln::store::{Store, StoredImage};

#[derive(Debug, thiserror::Error)]
#[error("no such image: {0}")]
pub struct NoSuchImage(pub String);

/// The image `name` (a tag, digest or id prefix) names, with all its tags.
pub fn find(store: &Store, name: &str) -> anyhow::Result<StoredImage> {
    let found = store.resolve(name).with_context(|| format!("look up image {name:?}"))?;
    let images = store.images().context("list images")?;
    let Some(descriptor) = found else {
        return untagged_by_id(images, name);
    };
    if let Some(image) = images.into_iter().find(|i| i.descriptor.digest == descriptor.digest) {
        return Ok(image);
    }
    // An untagged manifest whose blobs are incomplete, or an index entry.
    let image = store.load_image(&descriptor).with_context(|| format!("read image {name:?}"))?;
    Ok(StoredImage {
        descriptor: image.descriptor,
        manifest: image.manifest,
        config_digest: image.config_digest,
        config: image.config,
        tags: descriptor.ref_name().map(str::to_string).into_iter().collect(),
        cached: false,
    })
}

/// The store resolves ids of tagged images only; untagged ones are found
/// here by id (config digest) prefix.
fn untagged_by_id(images: Vec<StoredImage>, name: &str) -> anyhow::Result<StoredImage> {
    let prefix = name.strip_prefix("sha256:").unwrap_or(name);
    let hex = prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err(NoSuchImage(name.to_string()).into());
    }
    let mut matches: Vec<StoredImage> = images
        .into_iter()
        .filter(|i| i.tags.is_empty() && i.config_digest.trim_start_matches("sha256:").starts_with(prefix))
        .collect();
    match matches.len() {
        0 => Err(NoSuchImage(name.to_string()).into()),
        1 => Ok(matches.remove(0)),
        _ => anyhow::bail!(
            "{name:?} matches more than one image: {}",
            matches.iter().map(|i| i.config_digest.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `sha256:<hex>` → the 12-digit short id, or the full digest with `no_trunc`.
pub fn id(digest: &str, no_trunc: bool) -> String {
    if no_trunc {
        digest.to_string()
    } else {
        kiln::humanize::short(digest).to_string()
    }
}
