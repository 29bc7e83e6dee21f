//! `kiln export-layout DIR IMAGE…`: images into an OCI image layout
//! directory other tools and runtimes read (`skopeo copy oci:DIR:app:v1 …`,
//! `umoci unpack --image DIR:app:v1`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::save::{per_tag, selection};
use super::Cli;
use kiln::transport;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln export-layout out/ app:v1\n  kiln export-layout /srv/layout app:v1 app:v2 && skopeo inspect oci:/srv/layout:app:v2"
)]
pub struct ExportLayoutArgs {
    /// The layout directory (created if missing; an existing one is merged into).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// How layers stored as plain tars are written: gzip (default), zstd or none. Layers that are
    /// compressed already (pulled, or built with --compression) are copied as they are.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: super::output::CompressionArg,
    /// Images: tags (which become the layout's ref names), digests or id prefixes.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

pub fn run(cli: &Cli, args: &ExportLayoutArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    // Compressed blobs are written into the store: `kiln system prune` waits for them.
    let _builds = store.builds_lock(|| {})?;
    let images = per_tag(selection(&store, &args.images)?);
    let view = super::progress::View::new(super::progress::mode(None, false)?, Box::new(std::io::stderr()));
    transport::export_oci_dir_reporting(&store, &images, &args.dir, args.compression.into(), &view)
        .with_context(|| format!("write OCI layout {}", args.dir.display()))?;
    view.finish();
    Ok(0)
}
