//! `kiln push IMAGE [DESTINATION]`: send an image from the store to a registry.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::pull::RegistryFlags;
use super::Cli;
use kiln::registry::{self, ManifestFormat};
use kiln::store::{Image, Store};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln push localhost:5000/app:1\n  kiln push app:1 quay.io/org/app:1 --format docker --digestfile app.digest"
)]
pub struct PushArgs {
    /// The image in the store: a name, an id or a digest.
    pub image: String,

    /// Where to push: [REGISTRY[:PORT]/]NAME[:TAG] (default: IMAGE's name).
    pub destination: Option<String>,

    /// Manifest format: oci or docker (v2s2); default: as stored.
    #[arg(long, value_parser = ["oci", "docker", "v2s2"])]
    pub format: Option<String>,

    /// How layers stored as plain tars are sent: gzip (default), zstd or none. Layers that are
    /// compressed already (pulled, or built with --compression) go as they are.
    #[arg(long, alias = "compression-format", value_enum, default_value = "gzip")]
    pub compression: super::output::CompressionArg,

    /// Write the pushed manifest's digest to FILE.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,

    /// Print only the digest.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn run(cli: &Cli, args: &PushArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    // Shared with builds: `kiln system prune` waits while blobs are read.
    let _builds = store.builds_lock(|| {})?;
    let image = find_image(&store, &args.image)?;
    let destination = args.destination.clone().unwrap_or_else(|| args.image.clone());
    let format = args.format.as_deref().map(|f| f.parse::<ManifestFormat>()).transpose().map_err(anyhow::Error::msg)?;
    let view = super::progress::View::new(super::progress::mode(None, args.quiet)?, Box::new(std::io::stderr()));
    let digest = push_image(
        &store,
        &image,
        &destination,
        &args.registry,
        format,
        args.compression.into(),
        args.digestfile.as_deref(),
        &view,
    )?;
    view.finish();
    println!("{digest}");
    Ok(0)
}

/// Pushes and writes the digest file; used by `kiln push` and `kiln build --push`.
#[allow(clippy::too_many_arguments)]
pub fn push_image(
    store: &Store,
    image: &Image,
    destination: &str,
    flags: &RegistryFlags,
    format: Option<ManifestFormat>,
    compression: kiln_overlay::compress::Compression,
    digestfile: Option<&std::path::Path>,
    progress: &dyn kiln::progress::Reporter,
) -> anyhow::Result<String> {
    let opts = flags.options(None, true);
    let digest = registry::push(store, image, destination, &opts, format, compression, progress)?;
    if let Some(file) = digestfile {
        std::fs::write(file, &digest).with_context(|| format!("write the digest to {}", file.display()))?;
    }
    Ok(digest)
}

/// An image in the store by name, id or digest; a name also matches its
/// full registry form (`busybox` is `docker.io/library/busybox:latest`).
pub fn find_image(store: &Store, name: &str) -> anyhow::Result<Image> {
    let mut found = store.resolve(name).with_context(|| format!("look up {name:?} in the store"))?;
    if found.is_none() {
        if let Ok(full) = registry::store_name(name) {
            found = store.resolve(&full).with_context(|| format!("look up {full:?} in the store"))?;
        }
    }
    let desc = found.ok_or_else(|| anyhow::anyhow!("no image {name:?} in the store"))?;
    Ok(store.load_image(&desc)?)
}
