//! Image formats: config, manifests, platforms and references.

pub mod config;
pub mod manifest;
pub mod platform;
pub mod reference;
