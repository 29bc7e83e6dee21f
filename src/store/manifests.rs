//! Images as manifests and configs: writing one (OCI or Docker v2s2) and
//! reading one back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Store, StoreError};
use crate::image::config::ImageConfig;
use crate::image::manifest::{Descriptor, Manifest, Platform, DOCKER_MANIFEST, OCI_CONFIG, OCI_MANIFEST};

/// An image read back from the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's descriptor (no annotations), ready to tag.
    pub descriptor: Descriptor,
    pub manifest_digest: String,
    pub manifest: Manifest,
    /// The image id.
    pub config_digest: String,
    pub config: ImageConfig,
}

impl Store {
    /// Writes the config and an OCI manifest for `layers` (which must already
    /// be in the store) and returns the manifest's descriptor. Does not tag.
    pub fn write_image(&self, config: &ImageConfig, layers: &[Descriptor]) -> Result<Descriptor, StoreError> {
        self.write_image_annotated(config, layers, &BTreeMap::new())
    }

    /// Like [`Store::write_image`], with `annotations` on the manifest and on
    /// the returned descriptor (so a tag's index entry carries them too).
    pub fn write_image_annotated(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor, StoreError> {
        self.write_image_as(config, layers, annotations, false)
    }

    /// Like [`Store::write_image_annotated`]; with `docker`, as a Docker v2s2
    /// image (`kiln build --format docker`, buildah's and podman's): the
    /// manifest, config and layer media types are Docker's and the manifest
    /// has no annotations (v2s2 has none). The config is the same either
    /// way, docker-only fields (HEALTHCHECK, SHELL, ONBUILD …) included, so
    /// the image id does not depend on the format.
    pub fn write_image_as(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
        annotations: &BTreeMap<String, String>,
        docker: bool,
    ) -> Result<Descriptor, StoreError> {
        let mut layers = layers.to_vec();
        if docker {
            for layer in &mut layers {
                let Some(media_type) = crate::image::manifest::docker_layer_type(&layer.media_type) else {
                    return Err(StoreError::NotDockerLayer {
                        digest: layer.digest.clone(),
                        media_type: layer.media_type.clone(),
                    });
                };
                layer.media_type = media_type.to_string();
                layer.annotations = None;
            }
        }
        if layers.len() != config.rootfs.diff_ids.len() {
            return Err(StoreError::LayerCountMismatch {
                layers: layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        if let Some(missing) = layers.iter().find(|l| !self.has_blob(&l.digest)) {
            return Err(StoreError::MissingBlob { digest: missing.digest.clone() });
        }
        let config_bytes = serde_json::to_vec(config).map_err(|source| StoreError::Json {
            action: "serialize image config for",
            path: self.root.clone(),
            source,
        })?;
        let (config_digest, config_size) = self.put_blob(&config_bytes)?;
        let (manifest_type, config_type) = match docker {
            true => (DOCKER_MANIFEST, crate::image::manifest::DOCKER_CONFIG),
            false => (OCI_MANIFEST, OCI_CONFIG),
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(manifest_type.to_string()),
            config: Descriptor::new(config_type, config_digest, config_size),
            layers,
            annotations: (!annotations.is_empty() && !docker).then(|| annotations.clone()),
        };
        let mut descriptor = self.put_manifest(&manifest, platform_of(config))?;
        descriptor.annotations = manifest.annotations;
        Ok(descriptor)
    }

    /// Stores a manifest blob and returns its descriptor.
    pub fn put_manifest(&self, manifest: &Manifest, platform: Option<Platform>) -> Result<Descriptor, StoreError> {
        let bytes = serde_json::to_vec(manifest).map_err(|source| StoreError::Json {
            action: "serialize manifest for",
            path: self.root.clone(),
            source,
        })?;
        let (digest, size) = self.put_blob(&bytes)?;
        let media_type = manifest.media_type.as_deref().unwrap_or(OCI_MANIFEST);
        let mut descriptor = Descriptor::new(media_type, digest, size);
        descriptor.platform = platform;
        Ok(descriptor)
    }

    /// Reads an image's manifest and config.
    pub fn load_image(&self, manifest: &Descriptor) -> Result<Image, StoreError> {
        let bytes = self.read_blob(&manifest.digest)?;
        let parsed = parse_manifest(&manifest.digest, &bytes)?;
        let config_bytes = self.read_blob(&parsed.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
            action: "parse image config",
            path: self.blob_path(&parsed.config.digest),
            source,
        })?;
        let mut descriptor = Descriptor::new(
            parsed.media_type.as_deref().unwrap_or(&manifest.media_type),
            manifest.digest.clone(),
            bytes.len() as u64,
        );
        descriptor.platform = manifest.platform.clone().or_else(|| platform_of(&config));
        Ok(Image {
            descriptor,
            manifest_digest: manifest.digest.clone(),
            config_digest: parsed.config.digest.clone(),
            manifest: parsed,
            config,
        })
    }
}

/// Parses a manifest blob, refusing indexes and other JSON.
pub fn parse_manifest(digest: &str, bytes: &[u8]) -> Result<Manifest, StoreError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let path = PathBuf::from(digest);
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| StoreError::Json {
        action: "parse manifest",
        path: path.clone(),
        source,
    })?;
    let media_type = probe.media_type.unwrap_or_default();
    let is_manifest = media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST || media_type.is_empty();
    if !is_manifest || probe.manifests.is_some() {
        let media_type = if media_type.is_empty() { "index".to_string() } else { media_type };
        return Err(StoreError::NotAManifest { digest: digest.to_string(), media_type });
    }
    serde_json::from_slice(bytes).map_err(|source| StoreError::Json { action: "parse manifest", path, source })
}

/// The platform an image config describes.
pub fn platform_of(config: &ImageConfig) -> Option<Platform> {
    if config.architecture.is_empty() && config.os.is_empty() {
        return None;
    }
    Some(Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        os_version: config.os_version.clone(),
        variant: config.variant.clone(),
    })
}
