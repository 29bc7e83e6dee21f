//! RUN: mount the stage's layers as a [`Rootfs`] (whichever storage driver
//! the build uses), run the command in its own namespaces, then commit the
//! root's changes as the new layer. Where the driver's upper dir is in the
//! layer-dir form (kernel overlay), it becomes the new layer's directory
//! (renamed, never re-extracted).

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_overlay::compress::Compression;
use kiln_overlay::diff::DiffOptions;
use kiln_overlay::layer::{LayerInfo, LayerWriter};
use kiln_overlay::mount::Driver;
use kiln_overlay::Rootfs;
use kiln_runtime::{MountKind, MountSpec, Network, Output, RunSpec, Stream};

use crate::dockerfile::ast::{CmdLine, Heredoc};
use crate::plan::RunStep;
use crate::store::Store;

use super::layers::{chain_ids, LayerDirs};
use super::state::{StageState, DEFAULT_PATH};

mod extras;
pub use extras::{HostIp, RunExtras};

/// Lines of output kept to show when a step fails quietly.
const TAIL: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("RUN exited with code {code}: {command}{tail}")]
    Failed { code: i32, command: String, tail: String },
    #[error("RUN {0} is not supported yet")]
    Unsupported(&'static str),
    #[error("RUN needs a user namespace, and this system forbids them for unprivileged users: {0}")]
    NoUserNamespace(String),
    #[error(transparent)]
    Layers(#[from] super::layers::LayerDirError),
    #[error("mount the step's filesystem")]
    Mount(#[from] kiln_overlay::mount::MountError),
    #[error("resolve USER {user:?} in the image")]
    User {
        user: String,
        #[source]
        source: kiln_runtime::user::UserError,
    },
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::RuntimeError),
    #[error("commit the step's changes")]
    Commit(#[from] kiln_overlay::CommitError),
    #[error("write the layer")]
    Layer(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct RunEnv<'a> {
    pub store: &'a Store,
    pub layers: &'a LayerDirs,
    pub driver: Driver,
    pub compression: Compression,
    pub compression_level: Option<u32>,
    /// The step, for its output lines and commit progress.
    pub step: crate::progress::StepRef,
    pub progress: &'a dyn crate::progress::Reporter,
    /// Report no output (`-q`); a failing step's error carries its tail.
    pub quiet: bool,
    pub hostname: String,
    /// `SOURCE_DATE_EPOCH`, if set, clamps mtimes in the layer.
    pub clamp_mtime: Option<i64>,
    /// The step's `--mount`s, resolved (see `super::mounts`).
    pub mounts: &'a super::mounts::Prepared,
    pub extras: &'a RunExtras,
}

/// The result of a RUN: the new layer, already in the store.
pub struct RunLayer {
    pub info: LayerInfo,
    pub digest: String,
    pub size: u64,
}

pub fn run(env: &mut RunEnv, state: &StageState, step: &RunStep) -> Result<RunLayer, RunError> {
    if step.security.as_deref() == Some("insecure") {
        return Err(RunError::Unsupported("--security=insecure"));
    }
    if let kiln_runtime::MapMode::Unavailable { reason } = kiln_runtime::detect() {
        return Err(RunError::NoUserNamespace(reason));
    }
    let lowers = env.layers.ensure(env.store, &state.layers, &state.config.rootfs.diff_ids)?;
    let rootfs = Rootfs::mount(env.driver, lowers, env.layers.step_dir()?)?;
    let mut spec = spec(state, step, rootfs.path(), &env.hostname)?;
    add_mounts(&mut spec, env.mounts);
    spec.ulimits = env.extras.ulimits.clone();
    spec.shm_size = env.extras.shm_size;
    spec.caps = env.extras.caps;
    spec.network = match step.network.as_deref() {
        Some("none") => Network::None,
        Some("host") => Network::Host,
        _ => env.extras.network,
    };
    // A private network's files live in the store's tmp dir (cleaned by the
    // next build should this one be killed).
    spec.scratch = Some(env.store.tmp_dir());
    // Kept until the step ends: the step's /etc/hosts is bound from it.
    let _hosts = add_hosts(&mut spec, env.extras, &env.store.tmp_dir())?;
    // Held until the command ran: the heredoc script it executes.
    let _script = script_heredoc(env.store, state, step, &mut spec)?;
    let mut tail: VecDeque<String> = VecDeque::new();
    let code = {
        let (progress, step, quiet) = (env.progress, &env.step, env.quiet);
        let mut on_line = |_: Stream, line: &str| {
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
            if !quiet {
                progress.report(crate::progress::Event::Output { step: step.clone(), line: line.to_string() });
            }
        };
        kiln_runtime::run(&spec, Output::Lines(&mut on_line))
    };
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            let _ = rootfs.finish();
            return Err(e.into());
        }
    };
    if code != 0 {
        let _ = rootfs.finish();
        // Output the user could not read (quiet, or a live view that showed
        // only its last lines) comes with the error.
        let tail = if (env.quiet || !env.progress.keeps_output()) && !tail.is_empty() {
            format!("\n{}", tail.iter().map(|l| format!("  {}", l)).collect::<Vec<_>>().join("\n"))
        } else {
            String::new()
        };
        return Err(RunError::Failed { code, command: command_text(&step.cmd), tail });
    }

    crate::fault::point("run-commit-before");
    let volumes = volume_paths(state);
    // Counted, so a big layer's commit shows how far it got.
    let (blob, written) = crate::progress::CountingWriter::new(env.store.layer_blob_writer()?);
    let mut writer = LayerWriter::with_level(blob, env.compression, env.compression_level).map_err(RunError::Layer)?;
    let opts = DiffOptions { prefix: env.layers.prefix().clone(), skip: volumes, clamp_mtime: env.clamp_mtime };
    let diffed = crate::progress::with_commit_progress(env.progress, &env.step, &written, || -> Result<_, RunError> {
        // What a RUN changed inside a declared volume is discarded (as
        // buildah does).
        let (_, committed) = rootfs.commit(&mut writer, &opts)?;
        Ok((writer.finish().map_err(RunError::Layer)?, committed))
    });
    let ((blob, info), committed) = diffed?;
    let (digest, size) = blob.into_inner().commit(&info)?;

    // Where the driver left the upper in the layer-dir form, it becomes the
    // new layer's dir; otherwise that is unpacked from the blob when a later
    // step needs it.
    if let Some(dir) = committed.into_layer_dir() {
        let mut diff_ids = state.config.rootfs.diff_ids.clone();
        diff_ids.push(info.diff_id.clone());
        let chain = chain_ids(&diff_ids).pop().expect("one diff id at least");
        env.layers.adopt(dir, &chain)?;
    }
    Ok(RunLayer { info, digest, size })
}

/// With `--add-host`, binds a hosts file that has the added names over the
/// step's /etc/hosts (after the host's, so it wins).
fn add_hosts(spec: &mut RunSpec, extras: &RunExtras, tmp: &Path) -> Result<Option<tempfile::NamedTempFile>, RunError> {
    if extras.add_hosts.is_empty() {
        return Ok(None);
    }
    let io = |source| RunError::Io { path: tmp.to_path_buf(), source };
    let mut host = fs::read_to_string("/etc/hosts").unwrap_or_else(|_| "127.0.0.1\tlocalhost\n".to_string());
    let mut gateway = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    if spec.network == Network::Private {
        // Over the private network's own hosts file: keep its host names.
        let host_address = kiln_runtime::network::find().ok().and_then(|f| f.host_address());
        host = kiln_runtime::network::hosts_file(&host, host_address);
        gateway = host_address.unwrap_or(gateway);
    }
    let mut file = tempfile::Builder::new().prefix("hosts-").tempfile_in(tmp).map_err(io)?;
    file.write_all(extras.hosts_file(&host, gateway).as_bytes()).map_err(io)?;
    spec.mounts.push(kiln_runtime::spec::MountSpec {
        source: file.path().to_path_buf(),
        target: "/etc/hosts".to_string(),
        readonly: true,
        kind: Default::default(),
    });
    Ok(Some(file))
}

/// The process the step runs: SHELL + command (or the exec form), ENV over
/// build args, USER resolved in the image, WORKDIR created when missing.
fn spec(state: &StageState, step: &RunStep, rootfs: &Path, hostname: &str) -> Result<RunSpec, RunError> {
    let argv = argv(state, step);
    let mut spec = RunSpec::new(rootfs, argv);
    let mut env = state.config.config.env.clone().unwrap_or_default();
    // A set, not a search per arg: thousands of ENVs and ARGs stay linear.
    let names: std::collections::HashSet<String> =
        env.iter().map(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n).to_string()).collect();
    for (k, v) in step.build_args.to_vec() {
        if !names.contains(&k) {
            env.push(format!("{}={}", k, v));
        } else if step.args_over_env.contains(&k) {
            // An ARG declared after the ENV: BuildKit runs with its value.
            for entry in env.iter_mut().filter(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k) {
                *entry = format!("{}={}", k, v);
            }
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    spec.env = env;
    spec.cwd = state.workdir();
    spec.create_cwd = true;
    spec.hostname = hostname.to_string();
    spec.fake_chown = matches!(kiln_runtime::detect(), kiln_runtime::MapMode::Single);
    let user = state.config.config.user.clone().unwrap_or_default();
    spec.user = run_user(rootfs, &user, spec.fake_chown).map_err(|source| RunError::User { user, source })?;
    Ok(spec)
}

/// The ids a RUN runs with. As under BuildKit: the default user is uid 0
/// looked up in the image like any other (oci.GetUser), so root gets its
/// /etc/group memberships, and the primary group is always among the
/// supplementary ones (containerd's fix for CVE-2023-25173): `USER 1234`
/// runs with groups `0`, root in busybox with `0 10`. A single-id user
/// namespace cannot set groups, so there only the ones asked for by name
/// are kept, as before.
fn run_user(
    rootfs: &Path,
    user: &str,
    single_id: bool,
) -> Result<kiln_runtime::UserSpec, kiln_runtime::user::UserError> {
    use kiln_runtime::user::{parse_group, parse_passwd, read_in_root, resolve, resolve_with};
    if single_id {
        return if user.is_empty() { Ok(Default::default()) } else { resolve(rootfs, user) };
    }
    let lookup = if user.is_empty() { "0" } else { user };
    let passwd = parse_passwd(&read_in_root(rootfs, "etc/passwd")?);
    let groups = parse_group(&read_in_root(rootfs, "etc/group")?);
    let mut spec = resolve_with(lookup, &passwd, &groups)?;
    if !spec.additional_gids.contains(&spec.gid) {
        spec.additional_gids.insert(0, spec.gid);
    }
    Ok(spec)
}

/// `--mount`s over the rootfs; their variables (secrets as env,
/// SSH_AUTH_SOCK) override the image's.
fn add_mounts(spec: &mut RunSpec, mounts: &super::mounts::Prepared) {
    spec.mounts.extend(mounts.mounts.iter().cloned());
    for entry in &mounts.env {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        spec.env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != name);
        spec.env.push(entry.clone());
    }
}

/// Where BuildKit mounts the script of a `#!` heredoc (dispatchRun's
/// `/dev/pipes/`), read-only.
const PIPES: &str = "/dev/pipes";

/// The heredoc a RUN consists of, when its command is nothing but one
/// heredoc marker (`RUN <<EOF`, `RUN <<-'EOF'`, `RUN 3<<EOF`): BuildKit's
/// `MustParseHeredoc` on the command text.
fn sole_heredoc(step: &RunStep) -> Option<&Heredoc> {
    let (CmdLine::Shell(text), [doc]) = (&step.cmd, step.heredocs.as_slice()) else { return None };
    let marker = text.trim().trim_start_matches(|c: char| c.is_ascii_digit()).strip_prefix("<<")?;
    let marker = marker.strip_prefix('-').unwrap_or(marker);
    let name = marker.strip_prefix(['\'', '"']).and_then(|m| m.strip_suffix(['\'', '"'])).unwrap_or(marker);
    (name == doc.name).then_some(doc)
}

/// BuildKit runs a RUN that is a single heredoc starting with `#!` as a
/// script file, so its interpreter is the shebang's: the body goes to
/// `/dev/pipes/<NAME>` (mode 0755, mounted read-only) and the shell runs
/// that path (`/bin/sh -c /dev/pipes/EOF`). The body is not expanded, as
/// BuildKit ignores expansion there. Returns the directory to keep until
/// the command ran.
fn script_heredoc(
    store: &Store,
    state: &StageState,
    step: &RunStep,
    spec: &mut RunSpec,
) -> Result<Option<tempfile::TempDir>, RunError> {
    let Some(doc) = sole_heredoc(step).filter(|d| d.content.starts_with("#!")) else { return Ok(None) };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    let dir = tempfile::Builder::new().prefix("heredoc-").tempdir_in(store.tmp_dir()).map_err(io(&store.tmp_dir()))?;
    let script = dir.path().join(&doc.name);
    fs::write(&script, &doc.content).map_err(io(&script))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).map_err(io(&script))?;
    // Readable and searchable by whatever USER the step runs as.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).map_err(io(dir.path()))?;
    spec.mounts.push(MountSpec {
        source: dir.path().to_path_buf(),
        target: PIPES.to_string(),
        readonly: true,
        kind: MountKind::Bind,
    });
    let mut argv = state.shell();
    argv.push(format!("{PIPES}/{}", doc.name));
    spec.argv = argv;
    Ok(Some(dir))
}

/// The history `created_by` BuildKit writes for a RUN (dispatchRun and
/// runCommandString): `RUN `, then `|N NAME=value ...` for the N ARGs
/// declared in scope (an ENV of the same name shows its value instead; the
/// proxy args are not declarations and never appear), then the argv it runs
/// joined by spaces (`/bin/sh -c echo hi`), then ` # buildkit`.
pub fn created_by(state: &StageState, step: &RunStep) -> String {
    let env = state.config.config.env.as_deref().unwrap_or_default();
    let env_value =
        |name: &str| env.iter().find_map(|e| e.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()));
    let mut words: Vec<String> = Vec::new();
    let args = step.build_args.declared();
    if !args.is_empty() {
        words.push(format!("|{}", args.len()));
        for (name, value) in args {
            let value = match step.args_over_env.contains(&name) {
                true => value.or_else(|| env_value(&name)),
                false => env_value(&name).or(value),
            }
            .unwrap_or_default();
            words.push(format!("{name}={value}"));
        }
    }
    match (&step.cmd, sole_heredoc(step)) {
        (_, Some(doc)) if doc.content.starts_with("#!") => {
            words.extend(state.shell());
            words.push(format!("{PIPES}/{}", doc.name));
        }
        // BuildKit's reconstituted script: each body and delimiter after the
        // command line, without the final newline kiln gives the shell.
        (CmdLine::Shell(text), None) if !step.heredocs.is_empty() => {
            words.extend(state.shell());
            let mut script = text.clone();
            for doc in &step.heredocs {
                script.push('\n');
                script.push_str(&doc.content);
                script.push_str(&doc.name);
            }
            words.push(script);
        }
        _ => words.extend(argv(state, step)),
    }
    format!("RUN {} # buildkit", words.join(" "))
}

fn argv(state: &StageState, step: &RunStep) -> Vec<String> {
    match &step.cmd {
        CmdLine::Exec(v) => v.clone(),
        CmdLine::Shell(text) => {
            let mut argv = state.shell();
            // `RUN <<EOF` alone runs the heredoc as the script, as BuildKit does;
            // otherwise the shell reads the heredocs after the command line.
            match step.heredocs.as_slice() {
                [doc] if sole_heredoc(step).is_some() => {
                    argv.push(doc.content.clone());
                }
                [] => argv.push(text.clone()),
                docs => {
                    let mut script = text.clone();
                    for doc in docs {
                        script.push('\n');
                        script.push_str(&doc.content);
                        if !doc.content.ends_with('\n') && !doc.content.is_empty() {
                            script.push('\n');
                        }
                        script.push_str(&doc.name);
                    }
                    script.push('\n');
                    argv.push(script);
                }
            }
            argv
        }
    }
}

fn command_text(cmd: &CmdLine) -> String {
    match cmd {
        CmdLine::Shell(s) => s.clone(),
        CmdLine::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Declared volumes as relative paths.
fn volume_paths(state: &StageState) -> Vec<PathBuf> {
    state
        .config
        .config
        .volumes
        .iter()
        .flatten()
        .map(|(v, _)| PathBuf::from(super::tree::clean(v)))
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}
