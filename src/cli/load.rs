//! `kiln load`: images from a docker-archive or oci-archive (plain, gzip,
//! zstd, xz or bzip2), all of them, with their tags.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::Cli;
use kiln::image::reference;
use kiln::store::Store;
use kiln::transport;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln load -i app.tar\n  gunzip -c app.tar.gz | kiln load\n  podman save --format oci-archive app | kiln load -q"
)]
pub struct LoadArgs {
    /// Read from this file (or OCI layout directory) instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(cli: &Cli, args: &LoadArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    // Held shared like a build's: its temp files in the store belong to a
    // live kiln, which `system check` and prune tell by this lock.
    let _builds = store.builds_lock(|| {})?;
    let staged = stage_input(&store, args.input.as_ref())?;
    let path = staged.as_ref().map(|t| t.path().to_path_buf()).or_else(|| args.input.clone());
    let path = path.context("no input")?;
    let shown = args.input.as_ref().map_or("standard input".to_string(), |p| p.display().to_string());
    let loaded = transport::import_all(&store, &path).with_context(|| format!("load images from {shown}"))?;
    for (names, image) in loaded {
        let mut tagged = false;
        for name in names {
            match reference::normalize_local(&name) {
                Ok(tag) => {
                    store.tag(&tag, &image.descriptor)?;
                    tagged = true;
                    if !args.quiet {
                        println!("Loaded image: {tag}");
                    }
                }
                Err(e) => eprintln!("warning: not tagging {}: {name:?} is no valid name ({e})", image.config_digest),
            }
        }
        if !tagged && !args.quiet {
            println!("Loaded image ID: {}", image.config_digest);
        }
    }
    Ok(0)
}

/// Standard input, or a compressed file the archive reader cannot read
/// directly (anything but plain tar or gzip), decompressed into a temp file
/// in the store; `None` when the input file is usable as is.
fn stage_input(store: &Store, input: Option<&PathBuf>) -> anyhow::Result<Option<tempfile::NamedTempFile>> {
    let reader: Box<dyn Read> = match input {
        Some(path) if path.is_dir() => return Ok(None),
        Some(path) => {
            let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
            let mut head = [0u8; kiln_overlay::compress::MAGIC_LEN];
            let n = file.read(&mut head).with_context(|| format!("read {}", path.display()))?;
            use kiln_overlay::compress::Format;
            if matches!(kiln_overlay::compress::detect(&head[..n]), Format::None | Format::Gzip) {
                return Ok(None);
            }
            Box::new(File::open(path).with_context(|| format!("open {}", path.display()))?)
        }
        None => Box::new(io::stdin()),
    };
    let (_, mut decoded) = kiln_overlay::compress::decompress(reader).context("read the archive")?;
    let mut tmp = tempfile::Builder::new()
        .prefix("load-")
        .tempfile_in(store.tmp_dir())
        .context("create a temp file in the store")?;
    io::copy(&mut decoded, tmp.as_file_mut()).context("read the archive")?;
    Ok(Some(tmp))
}
