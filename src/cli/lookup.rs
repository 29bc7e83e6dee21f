//! Finding images named on the command line.

use anyhow::Context as _;

use crate::store::{Store, StoredImage};

#[derive(Debug, thiserror::Error)]
#[error("no such image: {0}")]
pub struct NoSuchImage(pub String);

/// The image `name` (a tag, digest or id prefix) names, with all its tags.
pub fn find(store: &Store, name: &str) -> anyhow::Result<StoredImage> {
    let found = store.resolve(name).with_context(|| format!("look up image {name:?}"))?;
    let descriptor = found.ok_or_else(|| NoSuchImage(name.to_string()))?;
    let images = store.images().context("list images")?;
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

/// `sha256:<hex>` → the 12-digit short id, or the full digest with `no_trunc`.
pub fn id(digest: &str, no_trunc: bool) -> String {
    if no_trunc {
        digest.to_string()
    } else {
        crate::exec::short(digest).to_string()
    }
}
