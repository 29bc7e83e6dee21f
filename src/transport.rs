//! Where images come from and go to besides a registry: the store, OCI
//! layout directories and archives, and `docker save` archives.
//!
//! Imports copy blobs into the store, checking every digest while copying,
//! and do not tag; exports read from the store.

mod docker;
mod oci;
mod source;
mod tarout;

use std::io;
use std::path::{Path, PathBuf};

use kiln_overlay::compress::Compression;
use thiserror::Error;

use crate::image::manifest::Descriptor;
use crate::progress::{Reporter, Silent};
use crate::store::{Image, Store, StoreError};

pub use docker::write_docker_archive;
pub use oci::write_oci_archive;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A name or id in kiln's store.
    Store(String),
    /// `oci:DIR[:TAG]`
    OciDir { path: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`
    OciArchive { path: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE`
    DockerArchive { path: PathBuf },
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("image store")]
    Store(#[from] StoreError),
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{action} in {source_name}")]
    Json {
        action: String,
        source_name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} is not an OCI image layout (no oci-layout file)")]
    NotALayout(String),
    #[error("unsupported OCI layout version {version} in {source_name}")]
    LayoutVersion { source_name: String, version: String },
    #[error("{0} holds no images")]
    NoImages(String),
    #[error("no image tagged '{tag}' in {source_name} (tags: {})", list_or_none(.available))]
    TagNotFound { tag: String, source_name: String, available: Vec<String> },
    #[error("{source_name} holds more than one image; name one by tag (tags: {})", list_or_none(.available))]
    Ambiguous { source_name: String, available: Vec<String> },
    #[error("no match for platform in manifest {digest}: wanted {wanted}, the image has {}; pick one of those with --platform or FROM --platform", list_or_none(.available))]
    NoPlatform { digest: String, wanted: String, available: Vec<String> },
    #[error("image indexes nest deeper than {0} levels")]
    NestedTooDeep(usize),
    #[error("{name} is missing from {source_name}")]
    Missing { name: String, source_name: String },
    #[error("invalid digest '{digest}' in {source_name}")]
    InvalidDigest { digest: String, source_name: String },
    #[error("{what} in {source_name} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { what: String, source_name: String, expected: String, actual: String },
    #[error("image has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("layer {digest} has media type {media_type}, which kiln cannot convert")]
    UnsupportedLayer { digest: String, media_type: String },
    #[error("no image '{0}' in the store")]
    NotInStore(String),
    #[error(transparent)]
    Layer(#[from] crate::store::LayerError),
    #[error("archive links form a loop or chain too long at {0}")]
    LinkLoop(String),
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Parses `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` and `docker-archive:FILE`;
/// anything else names an image in the store. As in skopeo, the path ends at
/// its first ':'.
pub fn parse_transport(s: &str) -> Transport {
    let split = |rest: &str| match rest.split_once(':') {
        Some((path, tag)) => (PathBuf::from(path), Some(tag.to_string()).filter(|t| !t.is_empty())),
        None => (PathBuf::from(rest), None),
    };
    if let Some(rest) = s.strip_prefix("oci:") {
        let (path, tag) = split(rest);
        Transport::OciDir { path, tag }
    } else if let Some(rest) = s.strip_prefix("oci-archive:") {
        let (path, tag) = split(rest);
        Transport::OciArchive { path, tag }
    } else if let Some(rest) = s.strip_prefix("docker-archive:") {
        Transport::DockerArchive { path: PathBuf::from(rest) }
    } else {
        Transport::Store(s.to_string())
    }
}

/// Copies the image `t` names into the store (without tagging it) and returns
/// it. For `Transport::Store` it only looks the image up.
pub fn import(store: &Store, t: &Transport) -> Result<Image, TransportError> {
    import_for(store, t, None)
}

/// [`import`] for `platform`: from a multi-platform layout or archive its
/// image is taken, and an image for another platform is an error.
pub fn import_for(
    store: &Store,
    t: &Transport,
    platform: Option<&crate::image::platform::Platform>,
) -> Result<Image, TransportError> {
    match t {
        Transport::Store(name) => {
            let descriptor = store.resolve(name)?.ok_or_else(|| TransportError::NotInStore(name.clone()))?;
            Ok(store.load_image(&descriptor)?)
        }
        Transport::OciDir { path, tag } => {
            let mut source = source::DirSource::new(path);
            oci::import_layout(store, &mut source, tag.as_deref(), platform)
        }
        Transport::OciArchive { path, tag } => {
            let mut source = source::TarSource::open(path, &store.tmp_dir())?;
            oci::import_layout(store, &mut source, tag.as_deref(), platform)
        }
        Transport::DockerArchive { path } => {
            let mut source = source::TarSource::open(path, &store.tmp_dir())?;
            let image = docker::import_docker_archive(store, &mut source)?;
            if let Some(wanted) = platform {
                let c = &image.config;
                if !wanted.matches(&c.os, &c.architecture, c.variant.as_deref()) {
                    return Err(TransportError::NoPlatform {
                        digest: image.manifest_digest.clone(),
                        wanted: wanted.to_string(),
                        available: vec![crate::image::platform::Platform::new(
                            &c.os,
                            &c.architecture,
                            c.variant.as_deref(),
                        )
                        .to_string()],
                    });
                }
            }
            Ok(image)
        }
    }
}

/// Copies every image of an archive or OCI layout directory into the store
/// (without tagging) and returns each with the names the archive gives it.
/// A `docker save` archive (with `manifest.json`) is read as one even when
/// it is an OCI layout too (docker 25+ writes both). Archives may be plain
/// or gzip'd; see [`source::TarSource::open`].
pub fn import_all(store: &Store, path: &Path) -> Result<Vec<(Vec<String>, Image)>, TransportError> {
    let mut source: Box<dyn source::Source> = if path.is_dir() {
        Box::new(source::DirSource::new(path))
    } else {
        Box::new(source::TarSource::open(path, &store.tmp_dir())?)
    };
    if source.open("manifest.json")?.is_some() {
        docker::import_docker_archive_all(store, source.as_mut())
    } else if source.open("oci-layout")?.is_some() {
        oci::import_layout_all(store, source.as_mut())
    } else {
        Err(TransportError::NotALayout(path.display().to_string()))
    }
}

/// Writes the images into the OCI layout at `dest`, creating it if missing
/// and otherwise merging: an entry with the same ref name is replaced.
/// Layers stored as plain tars leave compressed with `compression` (made
/// once and remembered in the store, see [`Store::outgoing_manifest`]);
/// compressed ones leave as they are.
pub fn export_oci_dir(
    store: &Store,
    images: &[(Option<String>, Descriptor)],
    dest: &Path,
    compression: Compression,
) -> Result<(), TransportError> {
    oci::export_dir(store, images, dest, compression, &Silent)
}

/// [`export_oci_dir`], reporting each layer written to `progress`.
pub fn export_oci_dir_reporting(
    store: &Store,
    images: &[(Option<String>, Descriptor)],
    dest: &Path,
    compression: Compression,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    oci::export_dir(store, images, dest, compression, progress)
}

/// Writes an OCI layout as a tar file (entries in a fixed order, zero
/// timestamps), replacing `dest_file` atomically. Layers as in
/// [`export_oci_dir`].
pub fn export_oci_archive(
    store: &Store,
    images: &[(Option<String>, Descriptor)],
    dest_file: &Path,
    compression: Compression,
) -> Result<(), TransportError> {
    export_oci_archive_reporting(store, images, dest_file, compression, &Silent)
}

/// [`export_oci_archive`], reporting each layer written to `progress`.
pub fn export_oci_archive_reporting(
    store: &Store,
    images: &[(Option<String>, Descriptor)],
    dest_file: &Path,
    compression: Compression,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    tarout::write_file_atomically(dest_file, |w| write_oci_archive(store, images, w, compression, progress))
}

/// Writes a `docker save` archive (manifest.json, `<hex>.json` configs,
/// uncompressed `<diff id hex>.tar` layers, repositories) that `docker load`
/// and `podman load` read, replacing `dest_file` atomically.
pub fn export_docker_archive(
    store: &Store,
    images: &[(Vec<String>, Descriptor)],
    dest_file: &Path,
) -> Result<(), TransportError> {
    export_docker_archive_reporting(store, images, dest_file, &Silent)
}

/// [`export_docker_archive`], reporting each layer written to `progress`.
pub fn export_docker_archive_reporting(
    store: &Store,
    images: &[(Vec<String>, Descriptor)],
    dest_file: &Path,
    progress: &dyn Reporter,
) -> Result<(), TransportError> {
    tarout::write_file_atomically(dest_file, |w| write_docker_archive(store, images, w, progress))
}

/// A store blob read back for export must still hash to its name.
fn check_store_blob(store: &Store, digest: &str, actual: String) -> Result<(), TransportError> {
    if actual == digest {
        return Ok(());
    }
    Err(TransportError::DigestMismatch {
        what: "blob".into(),
        source_name: store.root().display().to_string(),
        expected: digest.to_string(),
        actual,
    })
}

/// Temp files are created 0600; exported files get the usual 0644.
fn make_readable(tmp: &tempfile::NamedTempFile, target: &Path) -> Result<(), TransportError> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(|source| TransportError::Io {
        action: "set permissions of",
        path: target.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        assert_eq!(parse_transport("app:v1"), Transport::Store("app:v1".into()));
        assert_eq!(parse_transport("oci:/tmp/l"), Transport::OciDir { path: "/tmp/l".into(), tag: None });
        assert_eq!(parse_transport("oci:/tmp/l:"), Transport::OciDir { path: "/tmp/l".into(), tag: None });
        assert_eq!(
            parse_transport("oci:l:v1:extra"),
            Transport::OciDir { path: "l".into(), tag: Some("v1:extra".into()) }
        );
        assert_eq!(
            parse_transport("oci-archive:a.tar:latest"),
            Transport::OciArchive { path: "a.tar".into(), tag: Some("latest".into()) }
        );
        assert_eq!(parse_transport("docker-archive:x.tar"), Transport::DockerArchive { path: "x.tar".into() });
    }
}
