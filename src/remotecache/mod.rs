//! A build cache shared through a registry or a directory (`--cache-to`,
//! `--cache-from`), laid out like BuildKit's registry cache: an OCI image
//! manifest whose layers are the steps' layer blobs and whose config (media
//! type [`CONFIG_MEDIA_TYPE`]) maps cache keys to them. See docs/cache.md.
//!
//! Importing reads only the manifest and the config. A hit records the
//! step's layers by digest (and diff_id) in the build's state without
//! downloading them; a layer is fetched when a later step must run on top
//! of it, a `COPY --from` or bind mount reads it, or the image is written
//! to the store. It enters the store the one way every outside layer does
//! (`Store::receive_layer`: digest, size and diff_id checked as it streams),
//! so the store never holds, and never names, a layer it has not verified.

mod export;
mod import;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::fromkey::Memo;
use crate::cache::StepInputs;
use crate::image::config::History;
use crate::registry::RegistryError;
use crate::store::{sha256_hex, StoreError};

pub use export::{export, Export};
pub use import::Imported;
pub use spec::{CacheTo, Location, Mode};

/// The media type of a kiln cache's config blob. BuildKit's is
/// `application/vnd.buildkit.cacheconfig.v0`; the content differs (see
/// docs/cache.md), so the name does too and neither imports the other's.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cacheconfig.v1+json";

/// The annotation carrying a layer's diff_id, as BuildKit and containerd write it.
const UNCOMPRESSED: &str = "containerd.io/uncompressed";

#[derive(Debug, thiserror::Error)]
pub enum RemoteCacheError {
    #[error("cache {location}: {source}")]
    Registry {
        location: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("cache {location}: {action} {}: {source}", path.display())]
    Io {
        location: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache {location} is not a kiln build cache: {detail}")]
    Invalid { location: String, detail: String },
    /// A layer the cache names could not be fetched or is not what the cache
    /// says (tampered with or damaged): nothing of it was stored.
    #[error(
        "cache layer {digest} from {location} cannot be used: {detail}; the cache is damaged or was tampered with: \
         build without --cache-from {location} (or with --no-cache) and export it again with --cache-to"
    )]
    Layer { digest: String, location: String, detail: String },
    #[error("cache {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: Box<StoreError>,
    },
}

/// The cache config: BuildKit's `layers` and `records`, where a record is
/// one kiln step (see docs/cache.md for what differs).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheConfig {
    /// Bumped with [`RECORD_VERSION`](crate::cache::RECORD_VERSION): records of another format are not read.
    kiln_version: u32,
    layers: Vec<CacheLayer>,
    records: Vec<CacheRecord>,
    /// What `COPY --from` read out of a stage, by the stage's chain id, so a
    /// step copying from a cached stage gets its key without its layers.
    #[serde(default)]
    copy_from: Vec<CopyFromDigest>,
    /// The exporting build's step inputs (`stage/step` → inputs), so a miss
    /// on another runner says what changed, as a local miss does.
    #[serde(default)]
    steps: BTreeMap<String, StepInputs>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheLayer {
    /// The blob's digest; the manifest's layer of that digest must match.
    blob: String,
    annotations: LayerAnnotations,
}

/// As BuildKit's `LayerAnnotations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerAnnotations {
    media_type: String,
    #[serde(rename = "diffID")]
    diff_id: String,
    size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheRecord {
    /// The step's cache key.
    digest: String,
    /// The key of the state the step started from.
    parent: String,
    /// Indexes into `layers`, in order.
    layers: Vec<CacheResult>,
    #[serde(default)]
    history: Vec<History>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheResult {
    layer: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyFromDigest {
    pub chain: String,
    pub words: Vec<String>,
    pub memo: Memo,
}

fn blob_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    Some(dir.join("blobs").join("sha256").join(sha256_hex(digest)?))
}
