//! The cache's step records as the store keeps them (`kiln/cache/steps/`):
//! the cache writes and reads them, gc and the check judge them, so their
//! format lives with the store.

use serde::{Deserialize, Serialize};

use crate::image::config::History;
use crate::image::manifest::Descriptor;

/// The record format; records of another format (older kilns wrote the
/// whole state) are misses.
pub const RECORD_VERSION: u32 = 2;

/// What a step added to the state it started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    /// The key of the state the step started from. A step's key already
    /// derives from it; comparing it again makes a record written for
    /// another state (a corrupt or hand-edited file) a miss.
    pub parent: String,
    /// Layers the step added (RUN, COPY, ADD: one; metadata steps: none)
    /// and their diff ids, in the same order.
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<String>,
    /// History entries the step added, with the time it first ran, so a
    /// cached build gives the same image id.
    pub history: Vec<History>,
}
