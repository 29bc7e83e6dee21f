//! One error type for registry work. Its message is one line that names what
//! was being done, to which reference, and why it failed.

use thiserror::Error;

use crate::image::reference::ReferenceError;
use crate::store::StoreError;

#[derive(Debug, Error)]
#[error("{action} {reference}: {kind}")]
pub struct RegistryError {
    /// `pull`, `push`, `log in to`, …
    pub action: &'static str,
    pub reference: String,
    pub kind: ErrorKind,
}

impl RegistryError {
    pub fn new(action: &'static str, reference: impl ToString, kind: ErrorKind) -> Self {
        RegistryError { action, reference: reference.to_string(), kind }
    }
}

#[derive(Debug, Error)]
pub enum ErrorKind {
    #[error("invalid reference: {0}")]
    Reference(ReferenceError),
    #[error("unknown host {0} (the name does not resolve)")]
    UnknownHost(String),
    #[error("connection refused by {0}")]
    Refused(String),
    #[error("cannot reach {host}: {detail}")]
    Network { host: String, detail: String },
    /// Like `Network`, but not worth retrying (a connection that never opened).
    #[error("cannot reach {host}: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("TLS connection to {host} failed: {detail} (add its CA with --cert-dir, or use --tls-verify=false)")]
    Tls { host: String, detail: String },
    #[error("authentication required (401 Unauthorized{}): log in with `kiln login {registry}`", detail_suffix(.detail))]
    Unauthorized { registry: String, detail: String },
    #[error("access denied (403 Forbidden{})", detail_suffix(.detail))]
    Denied { detail: String },
    #[error("no such image in the store, and --pull=never forbids pulling it")]
    NotLocal,
    #[error("manifest unknown: the registry has no such tag or digest (404)")]
    ManifestUnknown,
    #[error("blob {0} is missing from the registry (404)")]
    BlobUnknown(String),
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("{what} has {actual} bytes, expected {expected}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("transfer of {what} ended early ({detail})")]
    Truncated { what: String, detail: String },
    #[error("{what}: registry answered {status}{}", detail_suffix(.detail))]
    Status { what: String, status: u16, detail: String },
    #[error("no match for platform in manifest: wanted {wanted}, the image has {}; pick one of those with --platform or FROM --platform", if .available.is_empty() { "none".to_string() } else { .available.join(", ") })]
    NoPlatform { wanted: String, available: Vec<String> },
    #[error("unsupported manifest type '{0}'")]
    Unsupported(String),
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("image store: {}", chain(.0))]
    Store(StoreError),
    /// A deadline passed or a limit was reached (the message names the host).
    #[error(transparent)]
    Net(Box<crate::net::NetError>),
    /// Boxed: the refusal carries both digests and would double the size of every registry result.
    #[error("{}", chain(.0.as_ref()))]
    Layer(Box<crate::store::LayerError>),
    #[error("{action} {path}: {error}")]
    Local { action: &'static str, path: String, error: std::io::Error },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// An error and its causes on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
