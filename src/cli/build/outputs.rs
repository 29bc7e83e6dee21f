//! `--output`: writing the built image to a layout, an archive or a
//! registry.

use anyhow::Context as _;
use kiln::image::reference;
use kiln::store::Store;
use kiln::transport;
use kiln_overlay::compress::Compression;

use crate::cli::output::{OutputKind, OutputSpec};
pub(super) fn write_output(
    store: &Store,
    out: &OutputSpec,
    tags: &[String],
    manifest: &kiln::image::manifest::Descriptor,
    compression: Compression,
) -> anyhow::Result<()> {
    let name = match &out.name {
        Some(n) => Some(reference::normalize_local(n).with_context(|| format!("invalid name= {:?}", n))?),
        None => tags.first().cloned(),
    };
    match out.kind {
        OutputKind::Oci => transport::export_oci_dir(store, &[(name, manifest.clone())], &out.dest, compression)?,
        OutputKind::OciArchive => {
            transport::export_oci_archive(store, &[(name, manifest.clone())], &out.dest, compression)?
        }
        OutputKind::DockerArchive => {
            let repo_tags = match &out.name {
                Some(_) => name.into_iter().collect(),
                None => tags.to_vec(),
            };
            transport::export_docker_archive(store, &[(repo_tags, manifest.clone())], &out.dest)?
        }
        // Pushed by `run`.
        OutputKind::Registry => {}
    }
    Ok(())
}

pub(super) fn kind_name(kind: &OutputKind) -> &'static str {
    match kind {
        OutputKind::Oci => "OCI image layout",
        OutputKind::OciArchive => "OCI archive",
        OutputKind::DockerArchive => "docker archive",
        OutputKind::Registry => "registry",
    }
}
