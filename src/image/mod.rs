//! Image formats: config, manifests, and the transports kiln reads and writes.

pub mod config;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod transport;
