//! Registries: references, credentials, and pulling and pushing images over
//! the OCI Distribution API.

pub mod auth;
pub mod client;
mod error;
pub mod platform;
mod progress;
pub mod pull;
pub mod push;
pub mod reference;
mod sources;

use std::path::PathBuf;

pub use error::{ErrorKind, RegistryError};
pub use pull::pull;
pub use push::{push, ManifestFormat};
pub use reference::Reference;

/// How to reach registries, shared by pull, push and login.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--tls-verify`; `None` verifies (loopback registries speak plain HTTP regardless).
    pub tls_verify: Option<bool>,
    /// `--cert-dir`: CA certificates (`*.crt`) to trust, instead of `/etc/containers/certs.d/<host>`.
    pub cert_dir: Option<PathBuf>,
    /// `--authfile`
    pub authfile: Option<PathBuf>,
    /// `os/arch[/variant]` to pick from an index; default the host's.
    pub platform: Option<String>,
    /// Show progress (bars on a terminal, lines otherwise).
    pub progress: bool,
    /// Push blobs in chunks of this many bytes; `None` uploads blobs whole
    /// unless they are larger than 64 MiB.
    pub chunk_size: Option<u64>,
}

/// The name a pulled image is tagged with in the store:
/// `docker.io/library/busybox:latest` for `busybox`.
pub fn store_name(reference: &str) -> Result<String, RegistryError> {
    let r = Reference::parse(reference).map_err(|e| RegistryError::new("pull", reference, ErrorKind::Reference(e)))?;
    Ok(r.to_string())
}
