//! kiln: a rootless OCI image builder. The engine lives here so tests and fuzz
//! targets can call it; `main.rs` is a thin front-end.
//!
//! Data flows one way: `dockerfile::parse` → `plan::plan` → `exec` → `store`.

pub mod cache;
pub mod cli;
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
pub mod report;
pub mod store;
pub mod transport;
