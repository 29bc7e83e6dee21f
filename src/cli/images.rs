//! `kiln images`: the tags in the store.

use clap::Args;

use crate::exec::{human_size, short};

use super::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln images\n  kiln images -q")]
pub struct ImagesArgs {
    /// Print only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
}

pub fn run(cli: &Cli, args: &ImagesArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    let mut rows = Vec::new();
    for desc in store.list()? {
        let Some(name) = desc.ref_name().map(str::to_string) else { continue };
        let image = store.load_image(&desc)?;
        let (repo, tag) = split_tag(&name);
        let size: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
        let id = if args.no_trunc { image.config_digest.clone() } else { short(&image.config_digest).to_string() };
        rows.push([repo, tag, id, image.config.created.clone().unwrap_or_default(), human_size(size)]);
    }
    if args.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in rows {
            if seen.insert(r[2].clone()) {
                println!("{}", r[2]);
            }
        }
        return Ok(0);
    }
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{:<w$}", c, w = w)).collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(0)
}

/// `host:5000/app:v1` → (`host:5000/app`, `v1`).
pub fn split_tag(name: &str) -> (String, String) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (name[..i].to_string(), name[i + 1..].to_string()),
        _ => (name.to_string(), "latest".to_string()),
    }
}
