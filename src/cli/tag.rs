//! `kiln tag SOURCE TARGET…`: more names for an image.

use anyhow::Context as _;
use clap::Args;

use super::lookup;
use super::Cli;
use kiln::image::reference;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln tag app:latest app:v1.2\n  kiln tag 3f2a9c localhost:5000/team/app:v1 app:stable"
)]
pub struct TagArgs {
    /// The image: a tag, digest or id prefix.
    #[arg(value_name = "SOURCE_IMAGE")]
    pub source: String,
    /// New names, `NAME[:TAG]` (`:latest` when no tag is given).
    #[arg(required = true, value_name = "TARGET_IMAGE")]
    pub targets: Vec<String>,
}

pub fn run(cli: &Cli, args: &TagArgs) -> anyhow::Result<i32> {
    let store = cli.open_store()?;
    let image = lookup::find(&store, &args.source)?;
    for target in &args.targets {
        let name = reference::normalize_local(target).with_context(|| format!("invalid tag {target:?}"))?;
        anyhow::ensure!(
            reference::parse(&name)?.digest.is_none(),
            "invalid tag {target:?}: a tag cannot carry a digest"
        );
        store.tag(&name, &image.descriptor).with_context(|| format!("tag {} as {name}", args.source))?;
    }
    Ok(0)
}
