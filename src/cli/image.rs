//! `kiln image …`: docker's `image` management group (prune, and the same
//! commands as the top-level ones under docker's names).

use clap::Subcommand;

use super::Cli;
use super::{export_layout, history, images, inspect, load, prune, rmi, save, tag};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Remove dangling (or, with -a, all unused) images.
    Prune(prune::ImagePruneArgs),
    /// List images (as `kiln images`).
    #[command(visible_alias = "list")]
    Ls(images::ImagesArgs),
    /// Show image details as JSON (as `kiln inspect`).
    Inspect(inspect::InspectArgs),
    /// Show an image's history (as `kiln history`).
    History(history::HistoryArgs),
    /// Add names to an image (as `kiln tag`).
    Tag(tag::TagArgs),
    /// Remove images (as `kiln rmi`).
    #[command(visible_alias = "remove")]
    Rm(rmi::RmiArgs),
    /// Write images to an archive (as `kiln save`).
    Save(save::SaveArgs),
    /// Read images from an archive (as `kiln load`).
    Load(load::LoadArgs),
    /// Write images to an OCI layout directory (as `kiln export-layout`).
    ExportLayout(export_layout::ExportLayoutArgs),
}

pub fn run(cli: &Cli, command: &ImageCommand) -> anyhow::Result<i32> {
    match command {
        ImageCommand::Prune(a) => prune::run(cli, a),
        ImageCommand::Ls(a) => images::run(cli, a),
        ImageCommand::Inspect(a) => inspect::run(cli, a),
        ImageCommand::History(a) => history::run(cli, a),
        ImageCommand::Tag(a) => tag::run(cli, a),
        ImageCommand::Rm(a) => rmi::run(cli, a),
        ImageCommand::Save(a) => save::run(cli, a),
        ImageCommand::Load(a) => load::run(cli, a),
        ImageCommand::ExportLayout(a) => export_layout::run(cli, a),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
