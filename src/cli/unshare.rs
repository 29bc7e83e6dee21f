//! `kiln unshare [CMD…]`: a command (default `$SHELL`) inside kiln's user
//! namespace, like `podman unshare`: uid 0 there is you, and the store's
//! files show the ids images gave them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use anyhow::Context;
use clap::Args;

use super::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln unshare\n  kiln unshare cat /proc/self/uid_map")]
pub struct UnshareArgs {
    /// The command and its arguments (default: $SHELL, else /bin/sh).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

pub fn run(_cli: &Cli, args: &UnshareArgs) -> anyhow::Result<i32> {
    let mode = kiln_runtime::detect();
    if let Some(code) = kiln_runtime::enter_user_namespace(&mode).context("enter kiln's user namespace")? {
        return Ok(code);
    }
    let mut command = args.command.clone();
    if command.is_empty() {
        command.push(std::env::var_os("SHELL").filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into()));
    }
    // The command is the user's own, like any they start from their shell:
    // it gets the descriptors kiln was started with.
    kiln_runtime::fds::restore_inherited();
    let err = std::process::Command::new(&command[0]).args(&command[1..]).env("KILN_UNSHARE", "1").exec();
    Err(anyhow::Error::new(err).context(format!("run {}", command[0].to_string_lossy())))
}
