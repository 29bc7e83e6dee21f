//! Pushing an image from the store: blobs the registry has are skipped
//! (HEAD), blobs known to be in another repository of the same registry are
//! mounted from there, the rest are uploaded whole or in chunks; then the
//! manifest, as stored or converted to OCI or Docker v2s2.

use std::sync::mpsc::Sender;

use kiln_overlay::compress::Compression;

use crate::image::manifest::{
    Descriptor, Manifest, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST, OCI_CONFIG,
    OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST,
};
use crate::store::{sha256_digest, Image, Store};

use super::client::{encode, header, Client, Method, SendBody};
use super::error::{ErrorKind, RegistryError};
use super::progress::{self, Event};
use super::reference::Reference;
use super::{sources, RegistryOptions};

/// Blobs larger than this go up in chunks unless a chunk size is set.
const DEFAULT_CHUNK: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    /// Docker image manifest v2, schema 2.
    Docker,
}

impl std::str::FromStr for ManifestFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oci" => Ok(ManifestFormat::Oci),
            "docker" | "v2s2" => Ok(ManifestFormat::Docker),
            other => Err(format!("unknown manifest format '{other}' (expected oci or docker)")),
        }
    }
}

/// Pushes `image` to `destination` (docker syntax). Layers stored as plain
/// tars go compressed with `compression` (made once and remembered in the
/// store, see [`Store::outgoing_manifest`]; `None` sends them plain), the
/// others as they are. With `format` `None` the manifest keeps its format,
/// and goes byte for byte as stored when no layer was compressed. Returns
/// the pushed manifest's digest.
pub fn push(
    store: &Store,
    image: &Image,
    destination: &str,
    opts: &RegistryOptions,
    format: Option<ManifestFormat>,
    compression: Compression,
    progress: &dyn crate::progress::Reporter,
) -> Result<String, RegistryError> {
    let r =
        Reference::parse(destination).map_err(|e| RegistryError::new("push", destination, ErrorKind::Reference(e)))?;
    let err = |kind| RegistryError::new("push", &r, kind);
    // Plain layers are compressed here, each once in the store's life.
    let mut compressing = |digest: &str| {
        if opts.progress {
            let name = if compression == Compression::Zstd { "zstd" } else { "gzip" };
            progress.report(crate::progress::Event::Note(format!(
                "Compressing layer {} ({name})",
                crate::humanize::short(digest)
            )));
        }
    };
    let outgoing = store
        .outgoing_manifest(&image.manifest_digest, compression, &mut compressing)
        .map_err(|e| err(ErrorKind::Store(e)))?;
    let (bytes, media_type) = manifest_for(&outgoing.manifest, outgoing.bytes, format).map_err(err)?;
    let digest = sha256_digest(&bytes);
    if let Some(pinned) = &r.digest {
        if *pinned != digest {
            return Err(err(ErrorKind::DigestMismatch {
                what: "the manifest to push".into(),
                expected: pinned.clone(),
                actual: digest,
            }));
        }
    }

    let mut blobs: Vec<Descriptor> = vec![outgoing.manifest.config.clone()];
    for layer in &outgoing.manifest.layers {
        if !blobs.iter().any(|b| b.digest == layer.digest) {
            blobs.push(layer.clone());
        }
    }
    // Repositories of this registry that already hold a blob, to mount from.
    let prefix = format!("{}/", r.registry);
    let mounts: Vec<Vec<String>> = blobs
        .iter()
        .map(|b| {
            sources::known(store, &b.digest)
                .into_iter()
                .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
                .filter(|repo| *repo != r.repository)
                .collect()
        })
        .collect();
    let mut scopes = vec![format!("repository:{}:pull,push", r.repository)];
    for repo in mounts.iter().flatten() {
        let scope = format!("repository:{repo}:pull");
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let client = Client::connect(&r, scopes, opts, "push")?;
    if opts.progress {
        progress.report(crate::progress::Event::Note(format!("Pushing {r}")));
    }
    let chunk = opts.chunk_size.filter(|c| *c > 0).unwrap_or(DEFAULT_CHUNK);
    let jobs: Vec<(Descriptor, Vec<String>)> = blobs.into_iter().zip(mounts).collect();
    progress::run_parallel(&jobs, "Copying", opts.progress, progress, |(blob, from), events| {
        push_blob(&client, store, blob, from, chunk, events)
    })?;

    let url = client.repo_url(&format!("manifests/{}", r.manifest_reference()));
    let mut resp = client.send(Method::Put, &url, &[("Content-Type", media_type.clone())], SendBody::Bytes(&bytes))?;
    if !(200..=202).contains(&resp.status().as_u16()) {
        return Err(client.status_error("manifest", &mut resp));
    }
    if let Some(theirs) = header(&resp, "docker-content-digest").filter(|d| d.starts_with("sha256:")) {
        if theirs != digest {
            return Err(err(ErrorKind::DigestMismatch {
                what: "the pushed manifest".into(),
                expected: digest,
                actual: theirs.to_string(),
            }));
        }
    }
    let repo = r.name();
    sources::record(store, &outgoing.manifest.config.digest, &repo);
    for layer in &outgoing.manifest.layers {
        sources::record(store, &layer.digest, &repo);
    }
    if opts.progress {
        progress.report(crate::progress::Event::Note("Writing manifest to image destination".to_string()));
    }
    Ok(digest)
}

/// Pushes an artifact that is no image (a build cache): `config` (bytes and
/// media type) and `layers`, blobs of the store, under an OCI image
/// manifest with `annotations` on each layer as given. Layers the
/// repository already has are not sent; `ensure_local` is called for each
/// one it lacks before it is read from the store (a cache layer known only
/// by digest is fetched then). Returns the manifest's digest.
pub(crate) fn push_artifact(
    store: &Store,
    destination: &str,
    opts: &RegistryOptions,
    config: (&[u8], &str),
    layers: &[Descriptor],
    ensure_local: &(dyn Fn(&Descriptor) -> Result<(), RegistryError> + Sync),
    progress: &dyn crate::progress::Reporter,
) -> Result<String, RegistryError> {
    let r =
        Reference::parse(destination).map_err(|e| RegistryError::new("push", destination, ErrorKind::Reference(e)))?;
    let client = Client::connect(&r, vec![format!("repository:{}:pull,push", r.repository)], opts, "push")?;
    let config_desc = Descriptor::new(config.1, sha256_digest(config.0), config.0.len() as u64);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: config_desc.clone(),
        layers: layers.to_vec(),
        annotations: None,
    };
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| client.err(ErrorKind::Invalid { what: "cache manifest".into(), detail: e.to_string() }))?;
    let digest = sha256_digest(&bytes);
    let chunk = opts.chunk_size.filter(|c| *c > 0).unwrap_or(DEFAULT_CHUNK);
    progress::run_parallel(&manifest.layers, "Copying", opts.progress, progress, |blob, events| {
        if !has_blob(&client, &blob.digest)? {
            ensure_local(blob)?;
        }
        push_blob(&client, store, blob, &[], chunk, events)
    })?;
    if !has_blob(&client, &config_desc.digest)? {
        let location = start_upload(&client, "cache config")?;
        let url = with_digest(&location, &config_desc.digest);
        let headers = [("Content-Type", "application/octet-stream".to_string())];
        let mut resp = client.send(Method::Put, &url, &headers, SendBody::Bytes(config.0))?;
        if resp.status().as_u16() != 201 {
            return Err(client.status_error(&format!("blob {}", config_desc.digest), &mut resp));
        }
    }
    let url = client.repo_url(&format!("manifests/{}", r.manifest_reference()));
    let mut resp =
        client.send(Method::Put, &url, &[("Content-Type", OCI_MANIFEST.to_string())], SendBody::Bytes(&bytes))?;
    if !(200..=202).contains(&resp.status().as_u16()) {
        return Err(client.status_error("cache manifest", &mut resp));
    }
    for layer in &manifest.layers {
        sources::record(store, &layer.digest, &r.name());
    }
    Ok(digest)
}

/// Whether the repository holds the blob already (HEAD).
fn has_blob(client: &Client, digest: &str) -> Result<bool, RegistryError> {
    let url = client.repo_url(&format!("blobs/{digest}"));
    let mut resp = client.send(Method::Head, &url, &[], SendBody::Empty)?;
    match resp.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(client.status_error(&format!("blob {digest}"), &mut resp)),
    }
}

/// The manifest bytes and media type to push: the stored bytes when no
/// conversion is asked for (so the digest stays), else the converted manifest.
fn manifest_for(
    manifest: &Manifest,
    stored: Vec<u8>,
    format: Option<ManifestFormat>,
) -> Result<(Vec<u8>, String), ErrorKind> {
    let current = manifest.media_type.clone().unwrap_or_else(|| OCI_MANIFEST.to_string());
    let target = match format {
        None => current.as_str(),
        Some(ManifestFormat::Oci) => OCI_MANIFEST,
        Some(ManifestFormat::Docker) => DOCKER_MANIFEST,
    };
    // A Docker manifest whose layers were compressed on the way out must
    // still name only Docker layer types (no zstd).
    let docker_layers = manifest
        .layers
        .iter()
        .all(|l| crate::image::manifest::docker_layer_type(&l.media_type) == Some(l.media_type.as_str()));
    if current == target && (target != DOCKER_MANIFEST || docker_layers) {
        return Ok((stored, current));
    }
    if target != OCI_MANIFEST && target != DOCKER_MANIFEST {
        return Ok((stored, current));
    }
    let to_docker = target == DOCKER_MANIFEST;
    let target = target.to_string();
    let converted = convert(manifest, to_docker)?;
    let bytes = serde_json::to_vec_pretty(&converted)
        .map_err(|e| ErrorKind::Invalid { what: "converted manifest".into(), detail: e.to_string() })?;
    Ok((bytes, target.to_string()))
}

/// Rewrites media types between OCI and Docker v2s2; the blobs stay as they are.
pub fn convert(manifest: &Manifest, to_docker: bool) -> Result<Manifest, ErrorKind> {
    let mut m = manifest.clone();
    m.media_type = Some(if to_docker { DOCKER_MANIFEST } else { OCI_MANIFEST }.to_string());
    m.config.media_type = if to_docker { DOCKER_CONFIG } else { OCI_CONFIG }.to_string();
    for layer in &mut m.layers {
        let mapped = match (layer.media_type.as_str(), to_docker) {
            (OCI_LAYER_GZIP, true) | (DOCKER_LAYER_GZIP, true) => DOCKER_LAYER_GZIP,
            (OCI_LAYER_TAR, true) | (DOCKER_LAYER_TAR, true) => DOCKER_LAYER_TAR,
            (DOCKER_LAYER_GZIP, false) | (OCI_LAYER_GZIP, false) => OCI_LAYER_GZIP,
            (DOCKER_LAYER_TAR, false) | (OCI_LAYER_TAR, false) => OCI_LAYER_TAR,
            (other, false) => other,
            (other, true) => {
                return Err(ErrorKind::Unsupported(format!(
                    "layer type {other} in a Docker v2s2 manifest (push with --format oci, or build with gzip layers)"
                )))
            }
        };
        layer.media_type = mapped.to_string();
    }
    if to_docker {
        // Docker v2s2 has no annotations.
        m.annotations = None;
        m.config.annotations = None;
        for layer in &mut m.layers {
            layer.annotations = None;
        }
    }
    Ok(m)
}

fn push_blob(
    client: &Client,
    store: &Store,
    blob: &Descriptor,
    mount_from: &[String],
    chunk: u64,
    events: &Sender<Event>,
) -> Result<(), RegistryError> {
    let done = |note: &'static str| {
        let _ = events.send(Event::Done { digest: blob.digest.clone(), note });
    };
    let what = format!("blob {}", blob.digest);
    let url = client.repo_url(&format!("blobs/{}", blob.digest));
    let mut resp = client.send(Method::Head, &url, &[], SendBody::Empty)?;
    match resp.status().as_u16() {
        200 => {
            done("skipped: already exists");
            return Ok(());
        }
        404 => {}
        _ => return Err(client.status_error(&what, &mut resp)),
    }
    let mut location = None;
    for from in mount_from {
        let url = client.repo_url(&format!("blobs/uploads/?mount={}&from={}", encode(&blob.digest), encode(from)));
        let mut resp = client.send(Method::Post, &url, &[], SendBody::Empty)?;
        match resp.status().as_u16() {
            201 => {
                done("mounted");
                return Ok(());
            }
            // Not mountable: the answer opened an ordinary upload instead.
            202 => {
                location = header(&resp, "location").map(|l| client.absolute(&url, l)).transpose()?;
                break;
            }
            _ => log::debug!("mount of {} from {from} refused: {}", blob.digest, client.status_error(&what, &mut resp)),
        }
    }
    let location = match location {
        Some(l) => l,
        None => start_upload(client, &what)?,
    };
    let _ = events.send(Event::Start { digest: blob.digest.clone(), size: blob.size });
    crate::fault::point("push-blob-before");
    let path = store.blob_path(&blob.digest);
    if !path.is_file() {
        return Err(client.err(ErrorKind::Store(crate::store::StoreError::MissingBlob { digest: blob.digest.clone() })));
    }
    let mut location = location;
    if blob.size > chunk {
        let mut offset = 0;
        while offset < blob.size {
            let len = chunk.min(blob.size - offset);
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Range", format!("{}-{}", offset, offset + len - 1)),
            ];
            let mut resp =
                client.send(Method::Patch, &location, &headers, SendBody::File { path: &path, offset, len })?;
            if resp.status().as_u16() != 202 {
                return Err(client.status_error(&format!("{what} chunk at {offset}"), &mut resp));
            }
            if let Some(next) = header(&resp, "location") {
                location = client.absolute(&location, next)?;
            }
            offset += len;
            let _ = events.send(Event::Bytes { digest: blob.digest.clone(), done: offset });
        }
        let url = with_digest(&location, &blob.digest);
        let mut resp = client.send(Method::Put, &url, &[], SendBody::Empty)?;
        if resp.status().as_u16() != 201 {
            return Err(client.status_error(&what, &mut resp));
        }
    } else {
        let url = with_digest(&location, &blob.digest);
        let headers = [("Content-Type", "application/octet-stream".to_string())];
        let body = SendBody::File { path: &path, offset: 0, len: blob.size };
        let mut resp = client.send(Method::Put, &url, &headers, body)?;
        if resp.status().as_u16() != 201 {
            return Err(client.status_error(&what, &mut resp));
        }
    }
    crate::fault::point("push-blob-after");
    done("done");
    Ok(())
}

fn start_upload(client: &Client, what: &str) -> Result<String, RegistryError> {
    let url = client.repo_url("blobs/uploads/");
    let mut resp = client.send(Method::Post, &url, &[], SendBody::Empty)?;
    if resp.status().as_u16() != 202 {
        return Err(client.status_error(&format!("start upload of {what}"), &mut resp));
    }
    let location = header(&resp, "location").ok_or_else(|| {
        client.err(ErrorKind::Invalid {
            what: format!("upload of {what}"),
            detail: "the registry sent no Location".into(),
        })
    })?;
    client.absolute(&url, location)
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_media_types_both_ways() {
        let m = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            config: Descriptor::new(OCI_CONFIG, "sha256:c".into(), 1),
            layers: vec![
                Descriptor::new(OCI_LAYER_GZIP, "sha256:a".into(), 2),
                Descriptor::new(OCI_LAYER_TAR, "sha256:b".into(), 3),
            ],
            annotations: Some([("k".to_string(), "v".to_string())].into()),
        };
        let d = convert(&m, true).unwrap();
        assert_eq!(d.media_type.as_deref(), Some(DOCKER_MANIFEST));
        assert_eq!(d.config.media_type, DOCKER_CONFIG);
        assert_eq!(d.layers[0].media_type, DOCKER_LAYER_GZIP);
        assert_eq!(d.layers[1].media_type, DOCKER_LAYER_TAR);
        assert!(d.annotations.is_none());
        let back = convert(&d, false).unwrap();
        assert_eq!(back.layers, m.layers);
        assert_eq!(back.config, m.config);

        let mut z = m.clone();
        z.layers[0].media_type = crate::image::manifest::OCI_LAYER_ZSTD.into();
        assert!(convert(&z, true).is_err());
        let (bytes, mt) = manifest_for(&m, b"stored".to_vec(), Some(ManifestFormat::Oci)).unwrap();
        assert_eq!((bytes.as_slice(), mt.as_str()), (&b"stored"[..], OCI_MANIFEST));
    }
}
