//! Pulling an image into the store. Every blob streams through a digest and
//! size check into the store's blob writer, so a bad or cut-off blob leaves
//! nothing behind; blobs the store has are skipped, and a per-blob lock lets
//! parallel pulls of the same image share the downloads.

use std::io::Read;
use std::sync::mpsc::Sender;

use crate::image::config::ImageConfig;
use crate::image::manifest::{
    Descriptor, Index, Manifest, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
use crate::store::{platform_of, sha256_digest, Image, LayerError, LayerRef, Store, StoreError};

use super::client::{self, header, Client, Method, SendBody};
use super::error::{ErrorKind, RegistryError};
use super::platform;
use super::progress::{self, Event};
use super::reference::Reference;
use super::{sources, RegistryOptions};

const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Every manifest kind kiln reads, in the order it prefers them.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Pulls `reference` (docker syntax) into `store`, tags it there by its full
/// name (`docker.io/library/busybox:latest`) and returns it.
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &RegistryOptions,
    progress: &dyn crate::progress::Reporter,
) -> Result<Image, RegistryError> {
    pull_manifest(store, reference, None, opts, progress)
}

/// Pulls `reference` as [`pull`] does, but the manifest `manifest_digest`
/// (what [`peek`] read for it earlier in the build), whatever its tag names
/// now, and tags it as `reference`: a build finishes the very image it
/// planned from, even if the tag moved meanwhile.
pub fn pull_pinned(
    store: &Store,
    reference: &str,
    manifest_digest: &str,
    opts: &RegistryOptions,
    progress: &dyn crate::progress::Reporter,
) -> Result<Image, RegistryError> {
    pull_manifest(store, reference, Some(manifest_digest), opts, progress)
}

fn pull_manifest(
    store: &Store,
    reference: &str,
    pin: Option<&str>,
    opts: &RegistryOptions,
    progress: &dyn crate::progress::Reporter,
) -> Result<Image, RegistryError> {
    let Resolved { client, r, bytes, media_type, digest, manifest, config } =
        resolve(store, reference, pin, opts, opts.progress.then_some(progress))?;
    let err = |kind| RegistryError::new("pull", &r, kind);
    let repo = r.name();

    // Each layer is checked against its diff_id before it is stored (or, if
    // the store has it, against what was verified before).
    let image = r.to_string();
    let layers: Vec<(&Descriptor, &String)> = manifest.layers.iter().zip(&config.rootfs.diff_ids).collect();
    progress::run_parallel(&layers, "Copying", opts.progress, progress, |(layer, diff_id), events| {
        let check = LayerRef { image: &image, blob: Some(layer), name: &layer.digest, diff_id };
        fetch_blob(&client, store, layer, Some(check), events)?;
        sources::record(store, &layer.digest, &repo);
        Ok(())
    })?;

    // Stored byte for byte, so the store's digest is the registry's.
    let (stored, size) = store.put_blob(&bytes).map_err(|e| err(ErrorKind::Store(e)))?;
    debug_assert_eq!(stored, digest);
    let mut descriptor = Descriptor::new(&media_type, stored, size);
    descriptor.platform = platform_of(&config);
    store.tag(&r.to_string(), &descriptor).map_err(|e| err(ErrorKind::Store(e)))?;
    if opts.progress {
        progress.report(crate::progress::Event::Note(format!("Writing manifest to image destination\n{digest}")));
    }
    store.load_image(&descriptor).map_err(|e| err(ErrorKind::Store(e)))
}

/// What `reference` is in its registry, without its layers: the manifest
/// (of the platform asked for) and config, checked as [`pull`] checks them.
/// Nothing is tagged and no layer is fetched (the config blob may be kept),
/// so the store holds no image that lacks its layers; [`pull`] makes it
/// whole when a layer is needed. The build uses this for a base whose steps
/// may all come from a shared cache.
pub fn peek(store: &Store, reference: &str, opts: &RegistryOptions) -> Result<Image, RegistryError> {
    // Quiet: nothing is pulled yet.
    let Resolved { media_type, bytes, digest, manifest, config, .. } = resolve(store, reference, None, opts, None)?;
    let mut descriptor = Descriptor::new(&media_type, digest.clone(), bytes.len() as u64);
    descriptor.platform = platform_of(&config);
    let config_digest = manifest.config.digest.clone();
    Ok(Image { descriptor, manifest_digest: digest, manifest, config_digest, config })
}

/// An image's manifest and config as its registry serves them.
struct Resolved {
    client: Client,
    r: Reference,
    bytes: Vec<u8>,
    media_type: String,
    digest: String,
    manifest: Manifest,
    config: ImageConfig,
}

/// Fetches and checks `reference`'s manifest (picking the platform from an
/// index; `pin`: the manifest of that digest instead) and config; says so on
/// `progress` when given.
fn resolve(
    store: &Store,
    reference: &str,
    pin: Option<&str>,
    opts: &RegistryOptions,
    progress: Option<&dyn crate::progress::Reporter>,
) -> Result<Resolved, RegistryError> {
    let r = Reference::parse(reference).map_err(|e| RegistryError::new("pull", reference, ErrorKind::Reference(e)))?;
    let err = |kind| RegistryError::new("pull", &r, kind);
    let wanted = platform::wanted(opts.platform.as_ref());
    let client = Client::connect(&r, vec![format!("repository:{}:pull", r.repository)], opts, "pull")?;
    if let Some(progress) = progress {
        progress.report(crate::progress::Event::Note(format!("Pulling {r}")));
    }

    let (mut bytes, mut media_type, mut digest) = match pin {
        Some(pin) => fetch_manifest(&client, pin, Some(pin))?,
        None => fetch_manifest(&client, r.manifest_reference(), r.digest.as_deref())?,
    };
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| err(ErrorKind::Invalid { what: format!("index {digest}"), detail: e.to_string() }))?;
        let chosen = platform::select(&index, &wanted).map_err(err)?.clone();
        if let Some(progress) = progress {
            progress.report(crate::progress::Event::Note(format!("Selected {} for {wanted}", chosen.digest)));
        }
        (bytes, media_type, digest) = fetch_manifest(&client, &chosen.digest, Some(&chosen.digest))?;
        if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
            return Err(err(ErrorKind::Unsupported(format!("{media_type} nested in an index"))));
        }
    }
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(err(ErrorKind::Unsupported(media_type)));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| err(ErrorKind::Invalid { what: format!("manifest {digest}"), detail: e.to_string() }))?;

    let repo = r.name();
    let config_bytes = fetch_config(&client, store, &manifest.config)?;
    sources::record(store, &manifest.config.digest, &repo);
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        err(ErrorKind::Invalid { what: format!("image config {}", manifest.config.digest), detail: e.to_string() })
    })?;
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(err(ErrorKind::Invalid {
            what: format!("manifest {digest}"),
            detail: format!(
                "{} layers but the config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        }));
    }
    // Asked for a platform, an image for another is an error, as in docker;
    // without one, the host's is only a preference.
    if opts.platform.is_some() {
        platform::check_config(&config, &wanted).map_err(err)?;
    } else if platform::check_config(&config, &wanted).is_err() {
        log::warn!("{r} is for {}/{}, not this machine's {wanted}", config.os, config.architecture);
    }
    Ok(Resolved { client, r, bytes, media_type, digest, manifest, config })
}

/// GETs a manifest or index; returns its bytes, media type and digest,
/// checked against `expected` (or the registry's `Docker-Content-Digest`).
pub(crate) fn fetch_manifest(
    client: &Client,
    reference: &str,
    expected: Option<&str>,
) -> Result<(Vec<u8>, String, String), RegistryError> {
    let url = client.repo_url(&format!("manifests/{reference}"));
    let mut resp = client.send(Method::Get, &url, &[("Accept", ACCEPT.to_string())], SendBody::Empty)?;
    match resp.status().as_u16() {
        200 => {}
        404 => return Err(client.err(ErrorKind::ManifestUnknown)),
        _ => return Err(client.status_error(&format!("manifest {reference}"), &mut resp)),
    }
    let content_type = header(&resp, "content-type").map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let registry_digest = header(&resp, "docker-content-digest").map(str::to_string);
    let bytes = client.read_limited(&mut resp, client::max_document(), &format!("manifest {reference}"))?;
    let digest = sha256_digest(&bytes);
    let what = format!("manifest {reference}");
    for want in [expected, registry_digest.as_deref().filter(|d| d.starts_with("sha256:"))].into_iter().flatten() {
        if want != digest {
            return Err(client.err(ErrorKind::DigestMismatch { what, expected: want.to_string(), actual: digest }));
        }
    }
    let media_type = media_type_of(&bytes, content_type.as_deref());
    if media_type == DOCKER_SCHEMA1 || media_type == DOCKER_SCHEMA1_SIGNED {
        return Err(client.err(ErrorKind::Unsupported(format!(
            "{media_type} (Docker schema 1; re-push the image with a current tool)"
        ))));
    }
    Ok((bytes, media_type, digest))
}

/// The manifest's own `mediaType`, else the Content-Type, else a guess from its shape.
fn media_type_of(bytes: &[u8], content_type: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Option<Probe> = serde_json::from_slice(bytes).ok();
    if let Some(mt) = probe.as_ref().and_then(|p| p.media_type.clone()).filter(|m| !m.is_empty()) {
        return mt;
    }
    if let Some(ct) = content_type.filter(|c| c.starts_with("application/vnd.")) {
        return ct.to_string();
    }
    match probe {
        Some(p) if p.schema_version == Some(1) => DOCKER_SCHEMA1.to_string(),
        Some(p) if p.manifests.is_some() => OCI_INDEX.to_string(),
        Some(p) if p.config.is_some() => OCI_MANIFEST.to_string(),
        _ => content_type.unwrap_or("unknown").to_string(),
    }
}

/// A small blob (a config, or a build cache's config) read into memory and
/// checked against its descriptor's digest and size; nothing is stored.
pub(crate) fn fetch_document(client: &Client, blob: &Descriptor) -> Result<Vec<u8>, RegistryError> {
    let what = format!("blob {}", blob.digest);
    if blob.size > client::max_document() {
        return Err(client.err(ErrorKind::Invalid { what, detail: format!("{} bytes is too large", blob.size) }));
    }
    let url = client.repo_url(&format!("blobs/{}", blob.digest));
    let mut resp = client.send(Method::Get, &url, &[], SendBody::Empty)?;
    match resp.status().as_u16() {
        200 => {}
        404 => return Err(client.err(ErrorKind::BlobUnknown(blob.digest.clone()))),
        _ => return Err(client.status_error(&what, &mut resp)),
    }
    let bytes = client.read_limited(&mut resp, blob.size, &what)?;
    let actual = sha256_digest(&bytes);
    if actual != blob.digest {
        return Err(client.err(ErrorKind::DigestMismatch { what, expected: blob.digest.clone(), actual }));
    }
    if bytes.len() as u64 != blob.size {
        return Err(client.err(ErrorKind::SizeMismatch { what, expected: blob.size, actual: bytes.len() as u64 }));
    }
    Ok(bytes)
}

/// The config blob's bytes, from the store when it has them.
fn fetch_config(client: &Client, store: &Store, config: &Descriptor) -> Result<Vec<u8>, RegistryError> {
    if config.size > client::max_document() {
        return Err(client.err(ErrorKind::Invalid {
            what: format!("image config {}", config.digest),
            detail: format!("{} bytes is too large", config.size),
        }));
    }
    let (tx, _rx) = std::sync::mpsc::channel();
    fetch_blob(client, store, config, None, &tx)?;
    store.read_blob(&config.digest).map_err(|e| client.err(ErrorKind::Store(e)))
}

/// Streams one blob into the store unless it is there already. Transfers
/// cut off midway are tried again; a wrong digest is not. A layer (`layer`
/// given) is verified against its diff_id as it streams, and one the store
/// already has is checked against it.
pub(crate) fn fetch_blob(
    client: &Client,
    store: &Store,
    blob: &Descriptor,
    layer: Option<LayerRef<'_>>,
    events: &Sender<Event>,
) -> Result<(), RegistryError> {
    let done = |note| {
        let _ = events.send(Event::Done { digest: blob.digest.clone(), note });
    };
    let check_stored = || match layer {
        Some(layer) => store.check_layer(layer).map_err(|e| client.err(ErrorKind::Layer(Box::new(e)))),
        None => Ok(()),
    };
    if store.has_blob(&blob.digest) {
        check_stored()?;
        done("skipped: already exists");
        return Ok(());
    }
    let _lock = BlobLock::acquire(store, &blob.digest);
    if store.has_blob(&blob.digest) {
        check_stored()?;
        done("skipped: fetched by another pull");
        return Ok(());
    }
    let _ = events.send(Event::Start { digest: blob.digest.clone(), size: blob.size });
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download(client, store, blob, layer, events) {
            Ok(()) => {
                done("done");
                return Ok(());
            }
            Err(e) if attempt <= client.retry_policy().retries && client::transient(&e.kind) => {
                let wait = client.retry_policy().delay.unwrap_or_else(|| client::backoff_delay(attempt));
                log::warn!(
                    "{e}; retrying in {:.1}s (attempt {} of {})",
                    wait.as_secs_f64(),
                    attempt + 1,
                    client.retry_policy().retries + 1
                );
                std::thread::sleep(wait);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The response body, counted and reported as it is read, remembering how
/// it ended so that a cut-off transfer is told from bad content.
struct Body<'a, R> {
    inner: R,
    total: u64,
    reported: u64,
    /// The first failure of the transfer itself (kept whole: a deadline error names the host).
    error: Option<std::io::Error>,
    eof: bool,
    digest: &'a str,
    events: &'a Sender<Event>,
}

impl<R: Read> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                crate::fault::point("pull-blob-read");
                self.total += n as u64;
                if self.total - self.reported >= 1 << 20 {
                    self.reported = self.total;
                    let _ = self.events.send(Event::Bytes { digest: self.digest.to_string(), done: self.total });
                }
                Ok(n)
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
                let copy = std::io::Error::new(e.kind(), e.to_string());
                self.error.get_or_insert(e);
                Err(copy)
            }
        }
    }
}

fn download(
    client: &Client,
    store: &Store,
    blob: &Descriptor,
    layer: Option<LayerRef<'_>>,
    events: &Sender<Event>,
) -> Result<(), RegistryError> {
    let what = format!("blob {}", blob.digest);
    let url = client.repo_url(&format!("blobs/{}", blob.digest));
    let mut resp = client.send(Method::Get, &url, &[], SendBody::Empty)?;
    match resp.status().as_u16() {
        200 => {}
        404 => return Err(client.err(ErrorKind::BlobUnknown(blob.digest.clone()))),
        _ => return Err(client.status_error(&what, &mut resp)),
    }
    let mut body = Body {
        // One byte past the size is enough to tell an overlong blob.
        inner: client.body(&mut resp).take(blob.size.saturating_add(1)),
        total: 0,
        reported: 0,
        error: None,
        eof: false,
        digest: &blob.digest,
        events,
    };
    let stored: Result<(), LayerError> = match layer {
        Some(layer) => store.receive_layer(&mut body, layer).and_then(|l| Ok(l.commit().map(|_| ())?)),
        None => store_plain(store, &mut body, blob),
    };
    // How the transfer ended decides first: a cut-off or overlong body is
    // reported as such, whatever the decoder made of it.
    if let Some(e) = body.error.take() {
        return Err(client.read_error(&format!("{what} (got {} of {} bytes)", body.total, blob.size), e));
    }
    if body.total > blob.size {
        return Err(client.err(ErrorKind::SizeMismatch { what, expected: blob.size, actual: body.total }));
    }
    if body.eof && body.total < blob.size {
        let detail = format!("got {} of {} bytes", body.total, blob.size);
        return Err(client.err(ErrorKind::Truncated { what, detail }));
    }
    stored.map_err(|e| {
        client.err(match e {
            LayerError::Store(StoreError::DigestMismatch { expected, actual }) => {
                ErrorKind::DigestMismatch { what, expected, actual }
            }
            LayerError::Store(StoreError::SizeMismatch { expected, actual, .. }) => {
                ErrorKind::SizeMismatch { what, expected, actual }
            }
            LayerError::Store(StoreError::Io { action, path, source }) => {
                ErrorKind::Local { action, path: path.display().to_string(), error: source }
            }
            other => ErrorKind::Layer(Box::new(other)),
        })
    })
}

/// Streams a blob that is not a layer (a config) into the store.
fn store_plain(store: &Store, body: &mut impl Read, blob: &Descriptor) -> Result<(), LayerError> {
    let mut writer = store.blob_writer()?;
    std::io::copy(body, &mut writer).map_err(|source| StoreError::Io {
        action: "write blob into",
        path: store.tmp_dir(),
        source,
    })?;
    writer.commit_expecting(&blob.digest, Some(blob.size))?;
    Ok(())
}

/// An exclusive lock on one blob's download, shared by all kiln processes
/// using the store. Best effort: without it two pulls only fetch twice.
struct BlobLock {
    _flock: Option<nix::fcntl::Flock<std::fs::File>>,
    path: std::path::PathBuf,
}

impl BlobLock {
    fn acquire(store: &Store, digest: &str) -> BlobLock {
        let hex = crate::store::sha256_hex(digest).unwrap_or("invalid");
        let path = store.tmp_dir().join(format!("pull-{hex}.lock"));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
        let flock = file.ok().and_then(|f| {
            let mut f = f;
            loop {
                match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive) {
                    Ok(l) => return Some(l),
                    Err((back, nix::errno::Errno::EINTR)) => f = back,
                    Err(_) => return None,
                }
            }
        });
        BlobLock { _flock: flock, path }
    }
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        // A waiter that already opened the file still gets its lock, then
        // finds the blob in place.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_from_field_header_or_shape() {
        let docker =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{}}"#;
        assert_eq!(media_type_of(docker, Some("application/json")), DOCKER_MANIFEST);
        let bare_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(media_type_of(bare_index, Some(DOCKER_MANIFEST_LIST)), DOCKER_MANIFEST_LIST);
        assert_eq!(media_type_of(bare_index, None), OCI_INDEX);
        assert_eq!(media_type_of(br#"{"schemaVersion":2,"config":{},"layers":[]}"#, None), OCI_MANIFEST);
        assert_eq!(media_type_of(br#"{"schemaVersion":1,"fsLayers":[]}"#, Some("application/json")), DOCKER_SCHEMA1);
        assert_eq!(media_type_of(b"not json", Some("text/html")), "text/html");
    }
}
