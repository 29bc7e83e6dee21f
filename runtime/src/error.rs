use std::path::PathBuf;

use crate::user::UserError;

/// Errors of the privilege boundary. Messages say what was being done; the
/// source carries the system's reason.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("user namespaces are not available: {reason}")]
    Unavailable { reason: String },
    #[error("create a pipe to the helper process")]
    Pipe(#[source] nix::Error),
    #[error("start kiln's helper process {what}")]
    Spawn { what: &'static str, source: std::io::Error },
    #[error("the user namespace helper failed before the maps were written: {message}")]
    ChildSetup { message: String },
    #[error("run {tool} for process {pid}")]
    MapTool { tool: String, pid: u32, source: std::io::Error },
    #[error("{tool} for process {pid} failed: {stderr}")]
    MapToolFailed { tool: String, pid: u32, stderr: String },
    #[error("write {path}")]
    WriteMap { path: PathBuf, source: std::io::Error },
    #[error("talk to the helper process")]
    HelperIo(#[source] std::io::Error),
    #[error("wait for the helper process")]
    Wait(#[source] std::io::Error),
    #[error("serialize the run spec")]
    Spec(#[source] serde_json::Error),
    #[error("prepare mount point {path}")]
    Prepare { path: PathBuf, source: std::io::Error },
    #[error("set up the RUN process: {message}")]
    Setup { message: String },
    /// The command could not be executed; `code` is 127 (not found) or 126.
    #[error("set up the RUN process: {message}")]
    Exec { code: i32, message: String },
    #[error("pass the terminal from the container")]
    Console(#[source] nix::Error),
    #[error("relay the terminal")]
    Relay(#[source] nix::Error),
    #[error("make a private mount namespace for the build")]
    MountNamespace(#[source] nix::Error),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("resolve the user of the RUN step")]
    User(#[from] UserError),
}
