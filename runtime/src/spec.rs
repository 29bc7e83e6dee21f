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
    /// The capabilities the command keeps (`--cap-add`/`--cap-drop`;
    /// docker's default set otherwise).
    #[serde(default)]
    pub caps: crate::caps::Caps,
    /// Ports published from a private network (`kiln run -p`).
    #[serde(default)]
    pub ports: Vec<crate::ports::PortMapping>,
    /// Where the run may keep its own files while it runs (a private
    /// network's resolv.conf, hosts and forwarder files); the system's temp
    /// directory when `None`. kiln passes its store's tmp dir, which the
    /// next build cleans should kiln be killed.
    #[serde(default)]
    pub scratch: Option<PathBuf>,
    /// Set by the runtime for a private network: the directory whose
    /// `resolv.conf` and `hosts` replace the host's.
    #[serde(default)]
    pub etc_files: Option<PathBuf>,
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
    /// A new network namespace with outbound access through pasta or
    /// slirp4netns (see `network`).
    Private,
}

impl Network {
    /// Whether the step gets a network namespace of its own.
    pub fn isolated(self) -> bool {
        self != Network::Host
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Network, String> {
        match text {
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            "private" => Ok(Network::Private),
            other => Err(format!("unknown network mode {other:?}: use host, none or private")),
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::Host => "host",
            Network::None => "none",
            Network::Private => "private",
        })
    }
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
            caps: Default::default(),
            ports: Vec::new(),
            scratch: None,
            etc_files: None,
        }
    }

    /// The value of `name` in the spec's environment.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|e| e.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }
}
