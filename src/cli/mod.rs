//! The command line: one file per command; this file holds the top-level
//! options and dispatch.

pub mod build;
pub mod export_layout;
pub mod format;
pub mod history;
pub mod image;
pub mod images;
pub mod info;
pub mod inspect;
pub mod load;
pub mod login;
pub mod lookup;
pub mod output;
pub mod progress;
pub mod prune;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod run;
pub mod save;
pub mod system;
pub mod tag;
pub mod unshare;
pub mod verify_repro;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use kiln::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI images from Dockerfiles, rootless and daemonless",
    after_help = "Example:\n  kiln build -t app .\n  kiln build --check -f Dockerfile ."
)]
pub struct Cli {
    /// Image store directory (an OCI image layout). Default: $XDG_DATA_HOME/kiln or ~/.local/share/kiln.
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Print more detail (repeat for debug output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// List images in the store.
    Images(images::ImagesArgs),
    /// Show what kiln found about this machine: kernel, id maps, user namespaces, overlay support.
    Info(info::InfoArgs),
    /// Run a command (default: $SHELL) inside kiln's user namespace, like `podman unshare`.
    Unshare(unshare::UnshareArgs),
    /// Run a command in a throwaway container of an image.
    Run(run::RunArgs),
    /// Show image details as JSON.
    Inspect(inspect::InspectArgs),
    /// Show the history of an image.
    History(history::HistoryArgs),
    /// Add names to an image.
    Tag(tag::TagArgs),
    /// Remove images.
    Rmi(rmi::RmiArgs),
    /// Write images to a docker-archive or oci-archive.
    Save(save::SaveArgs),
    /// Read images from an archive.
    Load(load::LoadArgs),
    /// Write images to an OCI layout directory.
    ExportLayout(export_layout::ExportLayoutArgs),
    /// Manage images (prune, ls, rm, …).
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Store-wide disk usage and cleanup.
    System {
        #[command(subcommand)]
        command: system::SystemCommand,
    },
    /// Remove unused images, build cache and (with --cache-mounts) cache mounts; same as `system prune`.
    Prune(system::SystemPruneArgs),
    /// Pull an image from a registry into the store.
    Pull(pull::PullArgs),
    /// Push an image from the store to a registry.
    Push(push::PushArgs),
    /// Log in to a registry (credentials go to the auth file).
    Login(login::LoginArgs),
    /// Remove a registry's credentials from the auth file.
    Logout(login::LogoutArgs),
}

impl Cli {
    pub fn open_store(&self) -> anyhow::Result<Store> {
        let root = self.root.clone().unwrap_or_else(kiln::store::default_root);
        Store::open(&root).map_err(|e| anyhow::Error::new(e).context(format!("open image store {}", root.display())))
    }
}

/// Commands that remove layer dirs and scratch trees run inside kiln's user
/// namespace, as builds do: those trees hold files of subordinate ids (a
/// `chown -R 1000 /home/u && chmod 700 /home/u`) that only uid 0 there may
/// remove. Returns `Some(code)` in the front-end, whose child did the work.
/// Where no namespace can be made the command runs as it is and reports what
/// it could not remove, with what to run.
pub(crate) fn enter_namespace_to_remove() -> anyhow::Result<Option<i32>> {
    let mode = kiln_runtime::detect();
    match kiln_runtime::enter_user_namespace(&mode) {
        Ok(code) => Ok(code),
        Err(kiln_runtime::RuntimeError::Unavailable { .. }) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("enter kiln's user namespace")),
    }
}

/// When the command was interrupted (Ctrl-C, SIGTERM, SIGHUP) or its
/// front-end is gone: prints the one line saying what the store holds now
/// (not the errors the unwinding produced) and returns the exit code.
pub fn interrupted_exit(result: &anyhow::Result<i32>) -> Option<i32> {
    if let Some(sig) = kiln_runtime::lifetime::interrupted() {
        let tagged = kiln::store::tagged_by_this_process();
        if tagged.is_empty() {
            eprintln!("interrupted: nothing was tagged; the store is intact");
        } else {
            eprintln!("interrupted: tagged {} before stopping; the store is intact", tagged.join(", "));
        }
        return Some(128 + sig);
    }
    match result {
        // Nobody is left to read a message.
        Err(e) if e.chain().any(kiln_runtime::lifetime::is_interruption) => {
            Some(kiln_runtime::Interrupted::ParentGone.exit_code())
        }
        _ => None,
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Build(args) => build::run(&cli, args),
        Command::Images(args) => images::run(&cli, args),
        Command::Info(args) => info::run(&cli, args),
        Command::Unshare(args) => unshare::run(&cli, args),
        Command::Run(args) => run::run(&cli, args),
        Command::Inspect(args) => inspect::run(&cli, args),
        Command::History(args) => history::run(&cli, args),
        Command::Tag(args) => tag::run(&cli, args),
        Command::Rmi(args) => rmi::run(&cli, args),
        Command::Save(args) => save::run(&cli, args),
        Command::Load(args) => load::run(&cli, args),
        Command::ExportLayout(args) => export_layout::run(&cli, args),
        Command::Image { command } => image::run(&cli, command),
        Command::System { command } => system::run(&cli, command),
        Command::Prune(args) => system::run_prune(&cli, args),
        Command::Pull(args) => pull::run(&cli, args),
        Command::Push(args) => push::run(&cli, args),
        Command::Login(args) => login::login(&cli, args),
        Command::Logout(args) => login::logout(&cli, args),
    }
}
