//! What the store holds and which parts are still needed: images (tagged,
//! and untagged "dangling" ones), build-cache records, layer dirs and cache
//! mounts; removal of what nothing references; disk usage by kind.
//!
//! Roots are the index's entries, the untagged image manifests the caller
//! does not ask to remove, and every digest a build-cache record mentions.
//! Layer dirs (`kiln/layers/<chain id>`) are live while a live image has
//! that chain id; a dir whose name is no chain id is never touched.
//!
//! A compressed copy of a plain layer, made for a push or an export and
//! recorded in `kiln/compressed/`, lives as long as its plain layer's blob
//! and goes with it (see `compressed.rs`).
//!
//! Builds write blobs before the manifest that makes them reachable, so an
//! unreachable blob or layer dir that belongs to no image being removed is
//! only deleted once it is older than [`GRACE`].
//!
//! A collect runs with the builds lock held exclusively (no build, pull,
//! load or run is going on), so it also removes the temp files in
//! `kiln/tmp` and the trees left moved aside: their owners are gone. Layer
//! dirs are moved aside before they are removed (see [`super::remove`]).

mod cache_prune;
mod collect;
mod images;
mod refs;
mod usage;

use std::path::PathBuf;
use std::time::Duration;

pub use cache_prune::CachePrune;
pub(super) use collect::remove_aside;
pub use collect::{Collect, Reclaimed};
pub(super) use images::looks_like_image_manifest;
pub use images::StoredImage;
pub use refs::{chain_ids, layer_dir_chain_id};
pub use usage::Usage;

use super::Store;

/// Unpacked layers, one directory per chain id, under `<root>/kiln/`.
pub const LAYERS_DIR: &str = "layers";
/// Build-cache records, under `<root>/kiln/`; any `sha256:<hex>` a record
/// mentions keeps that blob (and the image it names) alive.
pub const CACHE_DIR: &str = "cache";
/// Records of intermediate images (a step's image, the last good state of
/// a failed build), under the build cache: `<manifest hex>.json`.
pub const INTERMEDIATE_DIR: &str = "intermediate";
/// `RUN --mount=type=cache` directories, under `<root>/kiln/`.
pub const CACHE_MOUNTS_DIR: &str = "cache-mounts";
/// How old an unreferenced blob or layer dir must be before a sweep that
/// was not asked to remove it deletes it.
pub const GRACE: Duration = Duration::from_secs(3600);

impl Store {
    fn kiln_dir(&self, name: &str) -> PathBuf {
        self.private_dir().join(name)
    }
}
