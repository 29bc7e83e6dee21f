//! Registries: references, credentials, and pulling and pushing images over
//! the OCI Distribution API.

pub mod auth;
pub mod client;
mod config;
mod error;
pub mod platform;
mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub(crate) mod sources;

use std::path::PathBuf;

use crate::store::{Image, Store};

pub use error::{chain as chain_error, ErrorKind, RegistryError};
pub use pull::{pull, pull_pinned};
pub use push::{push, ManifestFormat};
pub use reference::Reference;

/// How to reach registries, shared by pull, push and login.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `--tls-verify`; `None` verifies unless registries.conf marks the registry
    /// insecure (loopback registries may speak plain HTTP regardless).
    pub tls_verify: Option<bool>,
    /// `--cert-dir`: CA certificates (`*.crt`) to trust, instead of `/etc/containers/certs.d/<host>`.
    pub cert_dir: Option<PathBuf>,
    /// `--authfile`
    pub authfile: Option<PathBuf>,
    /// The platform to pick from an index; `None` prefers the host's.
    pub platform: Option<crate::image::platform::Platform>,
    /// Show progress (bars on a terminal, lines otherwise).
    pub progress: bool,
    /// Push blobs in chunks of this many bytes; `None` uploads blobs whole
    /// unless they are larger than 64 MiB.
    pub chunk_size: Option<u64>,
    /// Deadlines for registry and token servers; `None` takes them from
    /// the environment ([`crate::net::Limits::from_env`]).
    pub net: Option<crate::net::Limits>,
    /// `--retry`, `--retry-delay`.
    pub retry: RetryPolicy,
}

/// How often a registry request is tried again after a failure that may
/// pass (`--retry N`, `--retry-delay D`, as buildah and podman have them):
/// a refused, reset or dropped connection, a deadline, `408`, `429` or a
/// `5xx` (but `501`, `505`). Never after a `4xx` such as `401`, `403` or
/// `404`, nor an unknown host or a TLS rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first (default 3).
    pub retries: u32,
    /// The wait before each; `None` backs off (0.25 s, 0.5 s, 1 s, …). A
    /// `Retry-After` the registry sends with `429` or `503` wins (up to
    /// [`client::MAX_RETRY_AFTER`]).
    pub delay: Option<std::time::Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { retries: 3, delay: None }
    }
}

/// `--pull`: when a build (or run) fetches a base image, as podman has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull when the store has no image of that name.
    #[default]
    Missing,
    /// Pull every time (once per kiln process); fail if the registry fails.
    Always,
    /// Use the store only.
    Never,
    /// Pull when the registry has something newer; keep the stored image
    /// when the registry cannot be reached.
    Newer,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" | "true" => Ok(PullPolicy::Always),
            "never" | "false" => Ok(PullPolicy::Never),
            "newer" => Ok(PullPolicy::Newer),
            other => Err(format!("unknown pull policy '{other}' (expected missing, always, never or newer)")),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub policy: PullPolicy,
    pub registry: RegistryOptions,
}

/// Images pulled by this process: `always` and `newer` pull a name once per
/// build, not once per stage that uses it.
static PULLED: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// The image `name` means for a build: from the store (as named, then by its
/// full registry name, so `busybox` finds `docker.io/library/busybox:latest`),
/// pulling it first when `opts.policy` says so.
pub fn resolve_or_pull(
    store: &Store,
    name: &str,
    opts: &PullOptions,
    progress: &dyn crate::progress::Reporter,
) -> Result<Image, RegistryError> {
    let mut local = find_local(store, name)?;
    // With a platform asked for, a stored image for another one is not the
    // image wanted (pulled for another stage or build, or built here): pull
    // the right one, or say what the stored one is.
    let mut mismatch = None;
    if let (Some(wanted), Some(image)) = (&opts.registry.platform, &local) {
        if let Err(kind) = platform::check_config(&image.config, wanted) {
            mismatch = Some(RegistryError::new("find", name, kind));
            local = None;
        }
    }
    let full = Reference::parse(name).ok().map(|r| r.to_string());
    let platform_key = opts.registry.platform.as_ref().map(ToString::to_string).unwrap_or_default();
    let key =
        (store.root().to_path_buf(), format!("{}\0{platform_key}", full.clone().unwrap_or_else(|| name.to_string())));
    let pulled_already = PULLED.lock().unwrap_or_else(|p| p.into_inner()).contains(&key);
    let want_pull = match (opts.policy, &local) {
        (PullPolicy::Never, _) => false,
        (PullPolicy::Missing, found) => found.is_none(),
        (PullPolicy::Always | PullPolicy::Newer, _) => !pulled_already || local.is_none(),
    };
    if !want_pull {
        return local.ok_or_else(|| mismatch.unwrap_or_else(|| RegistryError::new("find", name, ErrorKind::NotLocal)));
    }
    match pull(store, name, &opts.registry, progress) {
        Ok(image) => {
            PULLED.lock().unwrap_or_else(|p| p.into_inner()).push(key);
            Ok(image)
        }
        Err(e)
            if opts.policy == PullPolicy::Newer
                && local.is_some()
                && !matches!(e.kind, ErrorKind::DigestMismatch { .. }) =>
        {
            log::warn!("{e}; using the image in the store");
            local.ok_or(e)
        }
        // A local-only image for another platform: its platform is the news.
        Err(e) if mismatch.is_some() && !matches!(e.kind, ErrorKind::NoPlatform { .. }) => {
            log::debug!("{e}");
            Err(mismatch.expect("checked"))
        }
        Err(e) => Err(e),
    }
}

/// With `--pull=missing` and an image the store lacks (for the platform
/// asked for): the image as its registry serves it, without its layers
/// ([`pull::peek`]). `None` when the store has it or the policy is another:
/// [`resolve_or_pull`] then gives the image.
pub fn peek_missing(store: &Store, name: &str, opts: &PullOptions) -> Result<Option<Image>, RegistryError> {
    if opts.policy != PullPolicy::Missing {
        return Ok(None);
    }
    if let Some(image) = find_local(store, name)? {
        let Some(wanted) = &opts.registry.platform else { return Ok(None) };
        if platform::check_config(&image.config, wanted).is_ok() {
            return Ok(None);
        }
    }
    pull::peek(store, name, &opts.registry).map(Some)
}

fn find_local(store: &Store, name: &str) -> Result<Option<Image>, RegistryError> {
    let store_err = |e| RegistryError::new("find", name, ErrorKind::Store(e));
    let mut found = match store.resolve(name) {
        Ok(found) => found,
        // Not a valid local name; it may still be a registry reference.
        Err(crate::store::StoreError::Reference(_)) => None,
        Err(e) => return Err(store_err(e)),
    };
    if found.is_none() {
        if let Ok(full) = Reference::parse(name) {
            found = store.resolve(&full.to_string()).map_err(store_err)?;
        }
    }
    found.map(|d| store.load_image(&d)).transpose().map_err(store_err)
}

/// The name a pulled image is tagged with in the store:
/// `docker.io/library/busybox:latest` for `busybox`.
pub fn store_name(reference: &str) -> Result<String, RegistryError> {
    let r = Reference::parse(reference).map_err(|e| RegistryError::new("pull", reference, ErrorKind::Reference(e)))?;
    Ok(r.to_string())
}

/// Checks `creds` against `registry` (`host[:port]`) and, when they work,
/// records them in the auth file `kiln login` writes. Returns that file.
pub fn login(registry: &str, creds: auth::Credentials, opts: &RegistryOptions) -> Result<PathBuf, RegistryError> {
    let reference = registry_only(registry).map_err(|kind| RegistryError::new("log in to", registry, kind))?;
    let shown = reference.registry.clone();
    let client = client::Client::connect_with(&reference, Vec::new(), opts, "log in to", Some(creds.clone()))?;
    client.check_credentials()?;
    let path = auth::write_path(opts.authfile.as_deref());
    auth::store_credentials(&path, &shown, &creds).map_err(|kind| RegistryError::new("log in to", &shown, kind))?;
    Ok(path)
}

/// Removes the credentials for `registry` (all with `None`) from the auth
/// file `kiln login` writes; returns whether there were any, and the file.
pub fn logout(registry: Option<&str>, opts: &RegistryOptions) -> Result<(bool, PathBuf), RegistryError> {
    let name = match registry {
        Some(r) => Some(registry_only(r).map_err(|kind| RegistryError::new("log out of", r, kind))?.registry),
        None => None,
    };
    let path = auth::write_path(opts.authfile.as_deref());
    let removed = auth::remove_credentials(&path, name.as_deref())
        .map_err(|kind| RegistryError::new("log out of", registry.unwrap_or("all registries"), kind))?;
    Ok((removed, path))
}

/// A registry named alone (`quay.io`, `localhost:5000`, `docker.io`), with
/// any scheme or path dropped.
fn registry_only(text: &str) -> Result<Reference, ErrorKind> {
    let host = text.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    let probe = Reference::parse(&format!("{host}/probe")).map_err(ErrorKind::Reference)?;
    if !reference::is_registry(host) {
        return Err(ErrorKind::Invalid {
            what: format!("registry '{text}'"),
            detail: "expected a host name, e.g. quay.io or localhost:5000".into(),
        });
    }
    Ok(Reference { registry: probe.registry, repository: String::new(), tag: None, digest: None })
}
