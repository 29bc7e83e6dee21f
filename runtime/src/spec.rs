//! What one RUN step needs, serialized to the step helper over a pipe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The command; `argv[0]` is looked up in the spec's PATH inside the rootfs.
    pub argv: Vec<String>,
    /// `NAME=value` entries, exactly the command's environment.
    pub env: Vec<String>,
    /// Working directory inside the rootfs (absolute).
    pub cwd: String,
    pub user: UserSpec,
    /// The merged root directory the command sees as `/`.
    pub rootfs: PathBuf,
    pub hostname: String,
    pub network: Network,
    /// Extra bind mounts.
    pub mounts: Vec<MountSpec>,
    /// Create `cwd` (as root, like docker's WORKDIR) when it is missing.
    pub create_cwd: bool,
    /// Bind the host's /etc/resolv.conf and /etc/hosts read-only.
    pub bind_resolv_hosts: bool,
    /// Keep the caller's stdin for the command (`run -i`); otherwise it reads /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Give the command a pseudo-terminal of its own, made inside the
    /// container (`run -t`), starting at this size.
    #[serde(default)]
    pub tty: Option<TtySize>,
    /// Single-id mode: chown to ids the user namespace lacks succeeds and
    /// records the owner in `user.containers.override_stat` for the layer
    /// (see `fake_chown`).
    #[serde(default)]
    pub fake_chown: bool,
    /// `--ulimit`s the command starts with.
    #[serde(default)]
    pub ulimits: Vec<crate::ulimit::Ulimit>,
    /// Size of /dev/shm in bytes (`--shm-size`); 64 MiB when `None`, as docker.
    #[serde(default)]
    pub shm_size: Option<u64>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Resolved numeric ids (see `user::resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The host's network namespace (docker build's default).
    #[default]
    Host,
    /// A new network namespace with only loopback.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path inside the rootfs.
    pub target: String,
    pub readonly: bool,
    /// What is mounted; a bind of `source` unless said otherwise.
    #[serde(default)]
    pub kind: MountKind,
}

/// The kind of an extra mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// Bind `source` (a directory, file or socket) at the target.
    #[default]
    Bind,
    /// A fresh tmpfs (`source` unused), at most `size` bytes when given.
    Tmpfs { size: Option<u64> },
}

impl RunSpec {
    /// A spec with docker's defaults: root, `/`, host network, resolv/hosts bound.
    pub fn new(rootfs: impl Into<PathBuf>, argv: Vec<String>) -> RunSpec {
        RunSpec {
            argv,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()],
            cwd: "/".to_string(),
            user: UserSpec::default(),
            rootfs: rootfs.into(),
            hostname: "kiln".to_string(),
            network: Network::Host,
            mounts: Vec::new(),
            create_cwd: true,
            bind_resolv_hosts: true,
            stdin: false,
            tty: None,
            fake_chown: false,
            ulimits: Vec::new(),
            shm_size: None,
        }
    }

    /// The value of `name` in the spec's environment.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|e| e.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }
}
