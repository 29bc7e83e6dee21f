//! `kiln login` and `kiln logout`: credentials in the auth file.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::Args;

use super::pull::RegistryFlags;
use super::Cli;
use kiln::registry::{self, auth::Credentials};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kiln login -u me quay.io\n  echo \"$TOKEN\" | kiln login -u me --password-stdin localhost:5000"
)]
pub struct LoginArgs {
    /// The registry: HOST[:PORT] (default docker.io).
    pub registry: Option<String>,

    #[arg(short, long)]
    pub username: Option<String>,

    /// The password (prefer --password-stdin: a command line is visible to other users).
    #[arg(short, long)]
    pub password: Option<String>,

    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,

    #[command(flatten)]
    pub registry_flags: RegistryFlags,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry: HOST[:PORT] (default docker.io).
    pub registry: Option<String>,

    /// Remove the credentials of every registry.
    #[arg(short, long)]
    pub all: bool,

    /// The auth file to edit.
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<std::path::PathBuf>,
}

pub fn login(_cli: &Cli, args: &LoginArgs) -> anyhow::Result<i32> {
    let registry = args.registry.clone().unwrap_or_else(|| "docker.io".to_string());
    let username = match &args.username {
        Some(u) => u.clone(),
        None => prompt("Username: ")?,
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => anyhow::bail!("--password and --password-stdin cannot be used together"),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("read the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => prompt("Password: ")?,
    };
    anyhow::ensure!(!username.is_empty() && !password.is_empty(), "a username and a password are needed to log in");
    let opts = args.registry_flags.options(None, false);
    let file = registry::login(&registry, Credentials { username, password }, &opts)?;
    log::info!("credentials written to {}", file.display());
    println!("Login Succeeded!");
    Ok(0)
}

pub fn logout(_cli: &Cli, args: &LogoutArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(!(args.all && args.registry.is_some()), "give a registry or --all, not both");
    let opts = registry::RegistryOptions { authfile: args.authfile.clone(), ..Default::default() };
    let target = if args.all { None } else { Some(args.registry.clone().unwrap_or_else(|| "docker.io".to_string())) };
    let (removed, file) = registry::logout(target.as_deref(), &opts)?;
    match (&target, removed) {
        (None, _) => println!("Removed login credentials for all registries"),
        (Some(r), true) => println!("Removed login credentials for {r}"),
        (Some(r), false) => anyhow::bail!("not logged in to {r} (no entry in {})", file.display()),
    }
    Ok(0)
}

/// Asks on the terminal; without one the flag is required.
fn prompt(question: &str) -> anyhow::Result<String> {
    anyhow::ensure!(std::io::stdin().is_terminal(), "no terminal to ask on: pass --username and --password-stdin");
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("read from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
