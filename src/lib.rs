//! kiln: a rootless OCI image builder. The engine lives here so tests and fuzz
//! targets can call it; the binary (`main.rs`, with `cli/` and `report.rs`)
//! owns the command line, its output and how errors are shown.
//!
//! Data flows one way: `dockerfile::parse` → `plan::plan` → `exec` → `store`.

pub mod cache;
pub mod context;
pub mod dockerfile;
pub mod exec;
pub mod fault;
pub mod humanize;
pub mod image;
pub mod net;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod remotecache;
pub mod store;
pub mod transport;
