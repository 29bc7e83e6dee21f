//! `kiln rmi IMAGE…`: remove tags, and images no tag needs any more, with
//! the blobs and layer dirs only they used.

use std::collections::BTreeSet;

use clap::Args;

use super::lookup;
use super::Cli;
use kiln::humanize::short;
use kiln::image::reference;
use kiln::store::{Collect, Store, StoredImage};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln rmi app:v1\n  kiln rmi 3f2a9c4b1d0e\n  kiln rmi -f app   # also when other tags or the build cache still use it"
)]
pub struct RmiArgs {
    /// Remove an image named by id even if several tags point at it, or the build cache uses it.
    #[arg(short, long)]
    pub force: bool,
    /// Images: tags, digests or id prefixes.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    #[error("unable to delete {0} (must be forced): image is referenced in multiple repositories ({1})")]
    ManyTags(String, String),
    #[error("unable to remove {0} (must be forced): the build cache still uses image {1}")]
    Cached(String, String),
}

/// What removing one name does.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// Drop these tags only; the image stays.
    Untag(Vec<String>),
    /// Drop these tags and the image.
    Delete(Vec<String>),
}

/// Decides, like docker: a tag of an image with other tags is only
/// untagged; an image named by id with several tags, or one the build
/// cache uses, needs `force`.
pub fn plan(name: &str, image: &StoredImage, force: bool) -> Result<Plan, Conflict> {
    let as_tag = reference::normalize_local(name).ok().filter(|t| image.tags.contains(t));
    if let Some(tag) = as_tag {
        if image.tags.len() > 1 {
            return Ok(Plan::Untag(vec![tag]));
        }
    } else if image.tags.len() > 1 && !force {
        return Err(Conflict::ManyTags(name.to_string(), image.tags.join(", ")));
    }
    if image.cached && !force {
        return Err(Conflict::Cached(name.to_string(), short(&image.config_digest).to_string()));
    }
    Ok(Plan::Delete(image.tags.clone()))
}

pub fn run(cli: &Cli, args: &RmiArgs) -> anyhow::Result<i32> {
    if let Some(code) = super::enter_namespace_to_remove()? {
        return Ok(code);
    }
    let store = cli.open_store()?;
    let mut failed = false;
    let mut doomed: Vec<StoredImage> = Vec::new();
    let mut broken: BTreeSet<String> = BTreeSet::new();
    for name in &args.images {
        let result = match remove_one(&store, name, args.force, &mut doomed) {
            Err(e) => untag_broken(&store, name, &mut broken).map_err(|_| e),
            ok => ok,
        };
        if let Err(e) = result {
            eprint!("{}", crate::report::render(&e));
            failed = true;
        }
    }
    if !doomed.is_empty() || !broken.is_empty() {
        let mut images: BTreeSet<String> = doomed.iter().map(|i| i.manifest_digest().to_string()).collect();
        images.extend(broken);
        let reclaimed = store.collect(&Collect { images, ..Collect::default() })?;
        let removed: BTreeSet<&String> = reclaimed.blobs.iter().collect();
        let mut printed = BTreeSet::new();
        for image in &doomed {
            if removed.contains(&image.manifest_digest().to_string()) && printed.insert(&image.config_digest) {
                println!("Deleted: {}", image.config_digest);
            }
        }
        warn_failed(&reclaimed.failed);
    }
    Ok(i32::from(failed))
}

fn remove_one(store: &Store, name: &str, force: bool, doomed: &mut Vec<StoredImage>) -> anyhow::Result<()> {
    let image = lookup::find(store, name)?;
    let plan = plan(name, &image, force)?;
    let (tags, delete) = match plan {
        Plan::Untag(tags) => (tags, false),
        Plan::Delete(tags) => (tags, true),
    };
    for tag in &tags {
        if store.untag(tag)? {
            println!("Untagged: {tag}");
        }
        kiln::fault::point("rmi-untagged");
    }
    if delete {
        doomed.push(image);
    }
    Ok(())
}

/// A tag whose image cannot be read (its manifest or config is missing or
/// broken) is removed all the same, so `kiln rmi` can clear what
/// `kiln system check` reports; its blobs go with the collection.
fn untag_broken(store: &Store, name: &str, broken: &mut BTreeSet<String>) -> anyhow::Result<()> {
    let tag = reference::normalize_local(name)?;
    let entry = store.list()?.into_iter().find(|d| d.ref_name() == Some(tag.as_str()));
    let Some(entry) = entry else { anyhow::bail!("{name} is no tag") };
    if store.images()?.iter().any(|i| i.tags.contains(&tag)) {
        anyhow::bail!("{name} is readable"); // the first error stands
    }
    if store.untag(&tag)? {
        println!("Untagged: {tag}");
        broken.insert(entry.digest);
    }
    Ok(())
}

pub fn warn_failed(failed: &[String]) {
    for f in failed {
        eprintln!("warning: could not remove {f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln::image::config::ImageConfig;
    use kiln::image::manifest::{Descriptor, Manifest};

    fn image(tags: &[&str], cached: bool) -> StoredImage {
        let config = Descriptor::new("c", format!("sha256:{}", "1".repeat(64)), 2);
        StoredImage {
            descriptor: Descriptor::new("m", format!("sha256:{}", "2".repeat(64)), 1),
            manifest: Manifest { schema_version: 2, media_type: None, config, layers: vec![], annotations: None },
            config_digest: format!("sha256:{}", "1".repeat(64)),
            config: ImageConfig::default(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            cached,
        }
    }

    #[test]
    fn plans_like_docker() {
        let two = image(&["app:v1", "app:latest"], false);
        assert_eq!(plan("app", &two, false).unwrap(), Plan::Untag(vec!["app:latest".into()]));
        assert!(matches!(plan("1111", &two, false), Err(Conflict::ManyTags(..))));
        assert_eq!(plan("1111", &two, true).unwrap(), Plan::Delete(vec!["app:v1".into(), "app:latest".into()]));
        let one = image(&["app:v1"], false);
        assert_eq!(plan("app:v1", &one, false).unwrap(), Plan::Delete(vec!["app:v1".into()]));
        let cached = image(&["app:v1"], true);
        assert!(matches!(plan("app:v1", &cached, false), Err(Conflict::Cached(..))));
        assert_eq!(plan("app:v1", &cached, true).unwrap(), Plan::Delete(vec!["app:v1".into()]));
        let dangling = image(&[], false);
        assert_eq!(plan("1111", &dangling, false).unwrap(), Plan::Delete(vec![]));
    }
}
