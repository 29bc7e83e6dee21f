//! RUN: mount the stage's layers with a fresh upper dir, run the command in
//! its own namespaces, then commit the upper dir as the new layer. The upper
//! dir itself becomes the new layer's directory (renamed, never re-extracted).

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_overlay::compress::Compression;
use kiln_overlay::diff::{write_diff, DiffOptions};
use kiln_overlay::layer::{LayerInfo, LayerWriter};
use kiln_overlay::mount::{self, Driver};
use kiln_overlay::naive;
use kiln_runtime::{Network, Output, RunSpec, Stream};

use crate::dockerfile::ast::CmdLine;
use crate::plan::RunStep;
use crate::store::{BlobWriter, Store};

use super::layers::{chain_ids, LayerDirs};
use super::state::{StageState, DEFAULT_PATH};

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
    Diff(#[from] kiln_overlay::diff::DiffError),
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

/// What a RUN step needs from the build besides the stage state.
pub struct RunEnv<'a> {
    pub store: &'a Store,
    pub layers: &'a LayerDirs,
    pub driver: Driver,
    pub compression: Compression,
    pub compression_level: Option<u32>,
    /// Printed before each output line, e.g. `[2/3] `.
    pub tag: String,
    pub progress: &'a mut dyn Write,
    pub quiet: bool,
    pub hostname: String,
    /// `SOURCE_DATE_EPOCH`, if set, clamps mtimes in the layer.
    pub clamp_mtime: Option<i64>,
    /// The step's `--mount`s, resolved (see `super::mounts`).
    pub mounts: &'a super::mounts::Prepared,
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
    let step_dir = env.layers.step_dir()?;
    let upper = step_dir.path().join("diff");
    let work = step_dir.path().join("work");
    let merged = step_dir.path().join("merged");
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).map_err(|source| RunError::Io { path: d.clone(), source })?;
    }

    let guard = mount::mount(env.driver, &lowers, &upper, &work, &merged)?;
    let mut spec = spec(state, step, &merged, &env.hostname)?;
    add_mounts(&mut spec, env.mounts);
    let mut tail: VecDeque<String> = VecDeque::new();
    let code = {
        let (progress, tag, quiet) = (&mut *env.progress, env.tag.clone(), env.quiet);
        let mut on_line = |_: Stream, line: &str| {
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
            if !quiet {
                // One write per line, so parallel stages never split a line.
                let _ = progress.write_all(format!("{}{}\n", tag, line).as_bytes());
            }
        };
        kiln_runtime::run(&spec, Output::Lines(&mut on_line))
    };
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.unmount();
            return Err(e.into());
        }
    };
    if code != 0 {
        let _ = guard.unmount();
        let tail = if env.quiet && !tail.is_empty() {
            format!("\n{}", tail.iter().map(|l| format!("  {}", l)).collect::<Vec<_>>().join("\n"))
        } else {
            String::new()
        };
        return Err(RunError::Failed { code, command: command_text(&step.cmd), tail });
    }

    crate::fault::point("run-commit-before");
    let volumes = volume_paths(state);
    let blob = env.store.blob_writer()?;
    let mut writer = LayerWriter::with_level(blob, env.compression, env.compression_level).map_err(RunError::Layer)?;
    let opts = DiffOptions { prefix: env.layers.prefix().clone(), skip: volumes.clone(), clamp_mtime: env.clamp_mtime };
    if env.driver == Driver::Vfs {
        naive::diff_to_layer(&merged, &lowers, &mut writer, &opts)?;
        guard.unmount()?;
    } else {
        guard.unmount()?;
        // What a RUN changed inside a declared volume is discarded (as
        // buildah does): drop it from the upper dir so the layer dir and the
        // layer tar agree.
        for v in &volumes {
            remove_any(&upper.join(v));
        }
        write_diff(&upper, &lowers, &mut writer, &opts)?;
    }
    let (blob, info) = writer.finish().map_err(RunError::Layer)?;
    let (digest, size) = commit(blob, &info)?;

    let mut diff_ids = state.config.rootfs.diff_ids.clone();
    diff_ids.push(info.diff_id.clone());
    let chain = chain_ids(&diff_ids).pop().expect("one diff id at least");
    // Only the kernel overlay's upper dir is in the layer-dir format (char
    // 0:0 whiteouts, the opaque xattr) that every driver reads; with
    // fuse-overlayfs or vfs the layer dir is unpacked from the blob when a
    // later step needs it.
    if env.driver == Driver::Overlay {
        let _ = fs::remove_dir_all(&work);
        let _ = fs::remove_dir(&merged);
        env.layers.adopt(step_dir.keep(), &chain)?;
    }
    Ok(RunLayer { info, digest, size })
}

fn commit(blob: BlobWriter, info: &LayerInfo) -> Result<(String, u64), RunError> {
    Ok(blob.commit_expecting(&info.digest, Some(info.size))?)
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
    spec.network = match step.network.as_deref() {
        Some("none") => Network::None,
        _ => Network::Host,
    };
    let user = state.config.config.user.clone().unwrap_or_default();
    if !user.is_empty() {
        spec.user = kiln_runtime::user::resolve(rootfs, &user).map_err(|source| RunError::User { user, source })?;
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

fn argv(state: &StageState, step: &RunStep) -> Vec<String> {
    match &step.cmd {
        CmdLine::Exec(v) => v.clone(),
        CmdLine::Shell(text) => {
            let mut argv = state.shell();
            // `RUN <<EOF` alone runs the heredoc as the script, as BuildKit does;
            // otherwise the shell reads the heredocs after the command line.
            let trimmed = text.trim();
            match step.heredocs.as_slice() {
                [doc] if trimmed.starts_with("<<") && trimmed.trim_start_matches(['<', '-']).trim_matches(['\'', '"']) == doc.name => {
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

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}
