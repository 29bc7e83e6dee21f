//! `kiln run`: a command in a throwaway container of an image, rootless,
//! in the same namespaces and overlay as a RUN step. The image's
//! Entrypoint/Cmd/Env/User/WorkingDir apply as `podman run` applies them;
//! what the command writes goes to the root's scratch dir, deleted
//! afterwards (a [`Rootfs`] never committed).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use kiln_overlay::mount::{self, Driver};
use kiln_overlay::Rootfs;
use kiln_runtime::{MountSpec, Network, RunSpec};

use kiln::image::config::ContainerConfig;
use kiln::store::layers::LayerDirs;

use super::{lookup, Cli};

/// PATH when the image sets none (docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Exit code for kiln's own failures, as docker and podman use.
const RUN_FAILED: i32 = 125;

#[derive(Debug, Args)]
#[command(after_help = "kiln keeps no containers: every run starts from the image, and what the command \
writes is discarded when it exits (so --rm is implied and accepted only for compatibility). \
As in docker, -v is --volume here: for more detail put -v before `run`.

Examples:
  kiln run app
  kiln run --rm -it app sh
  kiln run -e MODE=test -v \"$PWD/data:/data:ro\" -w /data app ls -l
  kiln run -it 3f2a1c0b9d8e sh        # debug the last good step of a failed build")]
pub struct RunArgs {
    /// Keep stdin open: the command reads kiln's stdin.
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the command a pseudo-terminal (with -i, the keys you type go to it).
    #[arg(short, long)]
    pub tty: bool,

    /// Accepted for compatibility: kiln never keeps a container.
    #[arg(long)]
    pub rm: bool,

    /// Set an environment variable: K=V, or K to pass kiln's value; repeatable.
    #[arg(short, long = "env", value_name = "K[=V]")]
    pub env: Vec<String>,

    /// Read environment variables from a file (K=V lines, `#` comments); repeatable.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,

    /// Bind a host path into the container: HOST:CTR[:ro|rw]; repeatable.
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,

    /// Working directory inside the container (created when missing).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// User to run as: name|uid[:group|gid].
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,

    /// Network: host (the default without -p), none (loopback only) or private (its own network
    /// namespace with outbound access through pasta or slirp4netns; the default with -p).
    #[arg(long, value_name = "MODE")]
    pub network: Option<Network>,

    /// Publish a container port on the host: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]; repeatable.
    /// Implies --network private; kiln serves in the foreground until the command exits or
    /// Ctrl-C/SIGTERM stops it.
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    pub publish: Vec<kiln_runtime::network::PortMapping>,

    /// Give the command a capability beyond docker's default set (NET_ADMIN or CAP_NET_ADMIN, or ALL); repeatable.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,

    /// Take a capability from the command (NET_RAW or CAP_NET_RAW, or ALL); repeatable.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,

    /// Replace the image's ENTRYPOINT (a program, or a JSON array); clears its CMD unless CMD args are given.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,

    /// The container's hostname (default: the image's short id).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Storage driver: overlay, fuse-overlayfs or vfs (default: the best that works here).
    #[arg(long, env = "KILN_STORAGE_DRIVER", value_name = "DRIVER")]
    pub storage_driver: Option<Driver>,

    /// Shadows the global --verbose so that `-v` here is --volume, as in
    /// docker (`kiln -v run …` still gives more detail).
    #[arg(long, action = clap::ArgAction::Count, hide = true)]
    pub verbose: u8,

    /// The image: a name, digest or id (prefix).
    pub image: String,

    /// The command and its arguments (default: the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunCmdError {
    #[error("no command: the image has no ENTRYPOINT or CMD, and none was given")]
    NoCommand,
    #[error("invalid -v {0:?}: expected HOST:CTR[:ro|rw]")]
    VolumeSyntax(String),
    #[error("invalid -v {spec:?}: unknown option {option:?} (expected ro or rw)")]
    VolumeOption { spec: String, option: String },
    #[error("invalid -v {0:?}: the container path must be absolute")]
    VolumeTarget(String),
    #[error("invalid -v {0:?}: named volumes are not supported, give a host path (absolute, or starting with .)")]
    NamedVolume(String),
    #[error("-v {spec:?}: the host path {} does not exist", .path.display())]
    VolumeSource {
        spec: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("-p publishes ports from a private network, and --network {0} has none: drop --network or use --network private")]
    PublishNeedsPrivate(Network),
    #[error("invalid --entrypoint {0:?}: not a JSON array of strings")]
    Entrypoint(String),
    #[error("invalid -e {0:?}: empty variable name")]
    EnvName(String),
    #[error("read --env-file {}", .0.display())]
    EnvFile(PathBuf, #[source] std::io::Error),
    #[error("resolve user {user:?} in the image")]
    User {
        user: String,
        #[source]
        source: kiln_runtime::user::UserError,
    },
}

pub fn run(cli: &Cli, args: &RunArgs) -> anyhow::Result<i32> {
    match run_container(cli, args) {
        Ok(code) => Ok(code),
        Err(err) => {
            if let Some(kiln_runtime::RuntimeError::Exec { code, message }) = err.downcast_ref() {
                eprintln!("kiln: {message}");
                return Ok(*code);
            }
            eprint!("{}", crate::report::render(&err));
            Ok(RUN_FAILED)
        }
    }
}

fn run_container(cli: &Cli, args: &RunArgs) -> anyhow::Result<i32> {
    // Checked before entering the namespace, so errors come once and early.
    let volumes = args.volumes.iter().map(|v| parse_volume(v)).collect::<Result<Vec<_>, _>>()?;
    let overrides = env_overrides(&args.env, &args.env_files, |k| std::env::var(k).ok())?;
    let entrypoint = args.entrypoint.as_deref().map(parse_entrypoint).transpose()?;
    let network = network_mode(args.network, !args.publish.is_empty())?;
    let caps = kiln_runtime::caps::Caps::tweak(&args.cap_add, &args.cap_drop)?;
    if network == Network::Private {
        // Said before the image is mounted, and with the fix.
        kiln_runtime::network::find()?;
    }

    let mode = kiln_runtime::detect();
    match kiln_runtime::enter_user_namespace(&mode).context("enter kiln's user namespace")? {
        Some(code) => return Ok(code),
        None if matches!(mode, kiln_runtime::MapMode::Root) && !kiln_runtime::userns::inside() => {
            kiln_runtime::private_mount_namespace().context("enter a private mount namespace")?;
        }
        None => {}
    }

    let store = cli.open_store()?;
    let image = lookup::find(&store, &args.image)?;
    // Held shared like a build's, so `rmi`/`prune` wait instead of deleting
    // the layer dirs this run stacks.
    let _builds = store.builds_lock(|| {})?;
    let layers = LayerDirs::new(&store);
    let lowers = layers
        .ensure(&store, &image.manifest.layers, &image.config.rootfs.diff_ids)
        .with_context(|| format!("prepare the layers of {}", args.image))?;
    let driver = args.storage_driver.unwrap_or_else(|| mount::detect_driver_in(&store.tmp_dir()));
    let rootfs = Rootfs::mount(driver, lowers, layers.step_dir()?).context("mount the container's filesystem")?;
    let merged = rootfs.path();

    let hostname = args.hostname.clone().unwrap_or_else(|| kiln::humanize::short(&image.config_digest).to_string());
    let spec = (|| -> anyhow::Result<RunSpec> {
        let config = &image.config.config;
        let argv = command_line(config, entrypoint.as_deref(), &args.command)?;
        let mut spec = RunSpec::new(merged, argv);
        let user = args.user.clone().or_else(|| config.user.clone()).unwrap_or_default();
        spec.user = kiln_runtime::user::resolve(merged, &user)
            .map_err(|source| RunCmdError::User { user: user.clone(), source })?;
        let home = home_of(merged, spec.user.uid);
        spec.env = environment(config.env.as_deref().unwrap_or_default(), &overrides, &hostname, &home, args.tty);
        spec.cwd = match args.workdir.as_deref().or(config.working_dir.as_deref()) {
            Some(w) if !w.is_empty() => kiln::exec::state::join_workdir("/", w),
            _ => "/".to_string(),
        };
        spec.create_cwd = true;
        spec.hostname = hostname.clone();
        spec.network = network;
        spec.ports = args.publish.clone();
        spec.caps = caps;
        spec.scratch = Some(store.tmp_dir());
        spec.mounts = volumes.clone();
        spec.stdin = args.interactive;
        if args.tty {
            spec.tty = Some(kiln_runtime::attach::terminal_size().unwrap_or_default());
        }
        Ok(spec)
    })();
    let result = spec.and_then(|spec| kiln_runtime::run_attached(&spec).map_err(anyhow::Error::new));
    if let Err(e) = rootfs.finish() {
        log::warn!("{e}");
    }
    result
}

/// The network `kiln run` uses: --network's, else private with -p (which
/// the other modes cannot serve), else the host's.
pub fn network_mode(flag: Option<Network>, publish: bool) -> Result<Network, RunCmdError> {
    match (flag, publish) {
        (Some(mode @ (Network::Host | Network::None)), true) => Err(RunCmdError::PublishNeedsPrivate(mode)),
        (Some(mode), _) => Ok(mode),
        (None, true) => Ok(Network::Private),
        (None, false) => Ok(Network::Host),
    }
}

/// The argv `podman run` would run: the entrypoint (the image's, or
/// `--entrypoint`, which also drops the image's CMD) followed by the CMD
/// args given, else the image's CMD.
pub fn command_line(
    config: &ContainerConfig,
    entrypoint: Option<&[String]>,
    args: &[String],
) -> Result<Vec<String>, RunCmdError> {
    let (entry, default_cmd) = match entrypoint {
        Some(e) => (e.to_vec(), Vec::new()),
        None => (config.entrypoint.clone().unwrap_or_default(), config.cmd.clone().unwrap_or_default()),
    };
    let mut argv = entry;
    argv.extend(if args.is_empty() { default_cmd } else { args.to_vec() });
    if argv.is_empty() {
        return Err(RunCmdError::NoCommand);
    }
    Ok(argv)
}

/// `--entrypoint`: a JSON array, or one program (docker's form); empty clears it.
pub fn parse_entrypoint(text: &str) -> Result<Vec<String>, RunCmdError> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(|_| RunCmdError::Entrypoint(text.to_string()));
    }
    Ok(if text.is_empty() { Vec::new() } else { vec![text.to_string()] })
}

/// The command's environment: the image's, then PATH (when missing),
/// TERM=xterm with a terminal, HOSTNAME, HOME (when the image sets none),
/// then the -e/--env-file values over all of it.
pub fn environment(
    image: &[String],
    overrides: &[(String, String)],
    hostname: &str,
    home: &str,
    tty: bool,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env.iter_mut().find(|(n, _)| n == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for entry in image {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        set(&mut env, k, v);
    }
    let has = |env: &Vec<(String, String)>, k: &str| env.iter().any(|(n, _)| n == k);
    if !has(&env, "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH);
    }
    if tty && !has(&env, "TERM") {
        set(&mut env, "TERM", "xterm");
    }
    set(&mut env, "HOSTNAME", hostname);
    if !has(&env, "HOME") {
        set(&mut env, "HOME", home);
    }
    for (k, v) in overrides {
        set(&mut env, k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The -e and --env-file values in order (files first, as docker reads
/// them); `K` alone takes `lookup(K)` and is dropped when that is unset.
pub fn env_overrides(
    flags: &[String],
    files: &[PathBuf],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, RunCmdError> {
    let mut entries: Vec<String> = Vec::new();
    for file in files {
        let text = fs::read_to_string(file).map_err(|e| RunCmdError::EnvFile(file.clone(), e))?;
        entries.extend(
            text.lines()
                .map(|l| l.trim_start())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.trim_end_matches('\r').to_string()),
        );
    }
    entries.extend(flags.iter().cloned());
    let mut out = Vec::new();
    for entry in entries {
        let (k, v) = match entry.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (entry.trim_end().to_string(), None),
        };
        if k.is_empty() {
            return Err(RunCmdError::EnvName(entry));
        }
        if let Some(v) = v.or_else(|| lookup(&k)) {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// `HOST:CTR[:ro|rw]`; the host path must exist (it is made absolute).
pub fn parse_volume(spec: &str) -> Result<MountSpec, RunCmdError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, options) = match parts.as_slice() {
        [h, t] => (*h, *t, ""),
        [h, t, o] => (*h, *t, *o),
        _ => return Err(RunCmdError::VolumeSyntax(spec.to_string())),
    };
    if host.is_empty() || target.is_empty() {
        return Err(RunCmdError::VolumeSyntax(spec.to_string()));
    }
    if !host.starts_with('/') && !host.starts_with('.') {
        return Err(RunCmdError::NamedVolume(spec.to_string()));
    }
    if !target.starts_with('/') {
        return Err(RunCmdError::VolumeTarget(spec.to_string()));
    }
    let mut readonly = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => readonly = true,
            "rw" => readonly = false,
            // SELinux relabelling: nothing to do without SELinux.
            "z" | "Z" => {}
            other => return Err(RunCmdError::VolumeOption { spec: spec.to_string(), option: other.to_string() }),
        }
    }
    let source = Path::new(host).canonicalize().map_err(|source| RunCmdError::VolumeSource {
        spec: spec.to_string(),
        path: PathBuf::from(host),
        source,
    })?;
    Ok(MountSpec { source, target: kiln::exec::state::join_workdir("/", target), readonly, kind: Default::default() })
}

/// HOME for `uid` from the image's /etc/passwd, else `/` (as podman).
fn home_of(rootfs: &Path, uid: u32) -> String {
    let passwd = kiln_runtime::user::read_in_root(rootfs, "etc/passwd").unwrap_or_default();
    kiln_runtime::user::parse_passwd(&passwd)
        .into_iter()
        .find(|e| e.uid == uid && !e.home.is_empty())
        .map_or_else(|| "/".to_string(), |e| e.home)
}

#[cfg(test)]
mod tests;
