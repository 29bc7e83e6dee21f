//! `kiln save`: images into one archive (docker-archive or oci-archive).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::lookup;
use super::progress::View;
use super::Cli;
use kiln::image::manifest::Descriptor;
use kiln::image::reference;
use kiln::store::Store;
use kiln::transport;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln save -o app.tar app:v1 app:v2 base\n  kiln save --format oci-archive -o app-oci.tar app\n  kiln save app | gzip > app.tar.gz"
)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// docker-archive (what `docker load` reads) or oci-archive.
    #[arg(long, default_value = "docker-archive", value_parser = ["docker-archive", "oci-archive"])]
    pub format: String,
    /// How layers stored as plain tars go into an oci-archive: gzip (default), zstd or none.
    /// A docker-archive always holds plain tars, as `docker load` wants.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: super::output::CompressionArg,
    /// Images: tags (kept in the archive), digests or id prefixes.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// The images the arguments name, each once, with the tags named for it
/// (an image named by id or digest carries no tag).
pub fn selection(store: &Store, names: &[String]) -> anyhow::Result<Vec<(Vec<String>, Descriptor)>> {
    let mut out: Vec<(Vec<String>, Descriptor)> = Vec::new();
    for name in names {
        let image = lookup::find(store, name)?;
        let tag = reference::normalize_local(name).ok().filter(|t| image.tags.contains(t));
        match out.iter_mut().find(|(_, d)| d.digest == image.descriptor.digest) {
            Some((tags, _)) => tags.extend(tag.filter(|t| !tags.contains(t))),
            None => out.push((tag.into_iter().collect(), image.descriptor.clone())),
        }
    }
    Ok(out)
}

/// One (name, image) pair per tag, or one unnamed pair for an untagged image.
pub fn per_tag(selection: Vec<(Vec<String>, Descriptor)>) -> Vec<(Option<String>, Descriptor)> {
    let mut out = Vec::new();
    for (tags, d) in selection {
        if tags.is_empty() {
            out.push((None, d));
        } else {
            out.extend(tags.into_iter().map(|t| (Some(t), d.clone())));
        }
    }
    out
}

pub fn run(cli: &Cli, args: &SaveArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    // An oci-archive may write compressed blobs into the store: `kiln system
    // prune` waits for them.
    let _builds = store.builds_lock(|| {})?;
    let images = selection(&store, &args.images)?;
    let compression = args.compression.into();
    // Per-layer progress on stderr (the archive may be on stdout).
    let view = View::new(super::progress::mode(None, false)?, Box::new(std::io::stderr()));
    match &args.output {
        Some(path) => {
            let result = if args.format == "oci-archive" {
                transport::export_oci_archive_reporting(&store, &per_tag(images), path, compression, &view)
            } else {
                transport::export_docker_archive_reporting(&store, &images, path, &view)
            };
            result.with_context(|| format!("write {}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            anyhow::ensure!(
                !stdout.is_terminal(),
                "cowardly refusing to write an archive to a terminal: use -o FILE or redirect the output"
            );
            let out = std::io::BufWriter::new(stdout.lock());
            let result = if args.format == "oci-archive" {
                transport::write_oci_archive(&store, &per_tag(images), out, compression, &view)
            } else {
                transport::write_docker_archive(&store, &images, out, &view)
            };
            result.context("write the archive to standard output")?;
        }
    }
    view.finish();
    Ok(0)
}
