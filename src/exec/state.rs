//! One stage's state while it builds (config + layers), and the metadata
//! steps that change only the config.

use std::collections::{BTreeMap, HashMap};

use crate::dockerfile::ast::CmdLine;
use crate::image::config::{Empty, Healthcheck, History, ImageConfig};
use crate::image::manifest::Descriptor;
use crate::plan::{HealthConfig, StepKind};

use super::tree::{Tree, TreeError};
use crate::cache::Record;
use crate::store::Store;

/// The PATH BuildKit gives images that start from scratch.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

#[derive(Debug, Clone)]
pub struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// Whether this stage set CMD itself: ENTRYPOINT clears an inherited CMD.
    pub cmd_set: bool,
    /// The filesystem index, built the first time a step needs it.
    pub tree: Option<Tree>,
    /// Cache key of the state: the base's identity, then each step's key.
    pub key: String,
    /// How many of `layers` came with the base (`--squash` keeps those).
    pub base_layers: usize,
    /// How many of `config.history` came with the base image (through
    /// earlier stages too): SOURCE_DATE_EPOCH leaves those as they are.
    pub base_history: usize,
    /// The image id of an image base (what FROM's `--> using` line prints).
    pub base_id: Option<String>,
    /// A file index set aside when a RUN or cached step added layers it has
    /// not seen, with how many of `layers` it reflects: [`Self::ensure_tree`]
    /// catches it up by reading only the newer layers.
    stale_tree: Option<(Tree, usize)>,
    /// Position of each name in `config.config.env`, built by the first
    /// ENV step (ENV changes the env only through `apply_metadata`), so
    /// thousands of ENV lines take linear time.
    env_index: Option<HashMap<String, usize>>,
}

/// How long the growing parts of a state were before a step: what the step
/// added is the cache record.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    layers: usize,
    diff_ids: usize,
    history: usize,
}

impl StageState {
    pub fn new(config: ImageConfig, layers: Vec<Descriptor>) -> Self {
        let base_layers = layers.len();
        let base_history = config.history.len();
        StageState {
            config,
            layers,
            cmd_set: false,
            tree: None,
            stale_tree: None,
            key: String::new(),
            base_layers,
            base_history,
            base_id: None,
            env_index: None,
        }
    }

    /// Applies a cached step: `kind`'s config change is replayed (the step
    /// is part of the key), the layers and history come from the record.
    /// Returns false, changing nothing, when the record cannot be the
    /// result of `kind` (a metadata step with layers).
    pub fn restore(&mut self, kind: &StepKind, record: Record, key: String) -> bool {
        // WORKDIR writes a layer when it creates its directory, none for `/`.
        let metadata = !matches!(kind, StepKind::Run(_) | StepKind::Copy(_) | StepKind::Workdir(_));
        if metadata && !record.layers.is_empty() {
            return false;
        }
        self.apply_metadata(kind);
        if !record.layers.is_empty() {
            // The filesystem changed: its index catches up when needed.
            self.set_tree_aside(self.layers.len());
        }
        self.layers.extend(record.layers);
        self.config.rootfs.diff_ids.extend(record.diff_ids);
        self.config.history.extend(record.history);
        self.key = key;
        true
    }

    /// The file index of the current layers: the one at hand, else one set
    /// aside brought up to date with the layers added since, else built
    /// from every layer.
    pub fn ensure_tree(&mut self, store: &Store) -> Result<&mut Tree, TreeError> {
        if self.tree.is_none() {
            let tree = match self.stale_tree.take() {
                Some((mut tree, valid)) if valid <= self.layers.len() => {
                    for layer in &self.layers[valid..] {
                        let digest = layer.digest.clone();
                        let blob = store
                            .open_blob(&digest)
                            .map_err(|source| TreeError::Store { digest: digest.clone(), source })?;
                        tree.apply_layer(blob).map_err(|source| TreeError::Layer { digest, source })?;
                    }
                    tree
                }
                _ => Tree::from_layers(store, &self.layers)?,
            };
            self.tree = Some(tree);
        }
        Ok(self.tree.as_mut().expect("set above"))
    }

    /// Layers were added that the index has not seen: it is kept aside,
    /// valid for the first `valid_layers`, until a step needs it again (a
    /// RUN's layer is read only if a later WORKDIR or COPY needs the index).
    pub fn set_tree_aside(&mut self, valid_layers: usize) {
        if let Some(tree) = self.tree.take() {
            self.stale_tree = Some((tree, valid_layers));
        }
    }

    pub fn mark(&self) -> Mark {
        Mark {
            layers: self.layers.len(),
            diff_ids: self.config.rootfs.diff_ids.len(),
            history: self.config.history.len(),
        }
    }

    /// What the step since `mark` added, as a cache record for a step that
    /// started from the state keyed `parent`.
    pub fn record(&self, mark: Mark, parent: &str) -> Record {
        Record {
            version: crate::cache::RECORD_VERSION,
            parent: parent.to_string(),
            layers: self.layers.get(mark.layers..).unwrap_or_default().to_vec(),
            diff_ids: self.config.rootfs.diff_ids.get(mark.diff_ids..).unwrap_or_default().to_vec(),
            history: self.config.history.get(mark.history..).unwrap_or_default().to_vec(),
        }
    }

    pub fn workdir(&self) -> String {
        match &self.config.config.working_dir {
            Some(w) if !w.is_empty() => w.clone(),
            _ => "/".to_string(),
        }
    }

    pub fn shell(&self) -> Vec<String> {
        match &self.config.config.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn argv(&self, cmd: &CmdLine) -> Vec<String> {
        match cmd {
            CmdLine::Exec(v) => v.clone(),
            CmdLine::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    /// Applies a step's config change. Returns false for kinds with a
    /// filesystem part, which the executor does: RUN, COPY and ADD (nothing
    /// applied here) and WORKDIR (its config applied here; its directory is
    /// created by the executor).
    pub fn apply_metadata(&mut self, kind: &StepKind) -> bool {
        let c = &mut self.config.config;
        match kind {
            StepKind::Env(pairs) => {
                let env = c.env.get_or_insert_with(Vec::new);
                let index = self.env_index.get_or_insert_with(|| env_index(env));
                for (k, v) in pairs {
                    set_env_indexed(env, index, k, v);
                }
            }
            StepKind::Label(pairs) => {
                let labels = c.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in pairs {
                    labels.insert(k.clone(), v.clone());
                }
            }
            StepKind::Workdir(dir) => {
                let joined = join_workdir(&self.workdir(), dir);
                self.config.config.working_dir = Some(joined);
                return false;
            }
            StepKind::User(u) => c.user = Some(u.clone()),
            StepKind::Expose(ports) => {
                let map = c.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in ports {
                    map.insert(p.clone(), Empty {});
                }
            }
            StepKind::Volume(vols) => {
                let map = c.volumes.get_or_insert_with(BTreeMap::new);
                for v in vols {
                    map.insert(v.clone(), Empty {});
                }
            }
            StepKind::StopSignal(s) => c.stop_signal = Some(s.clone()),
            StepKind::Shell(s) => c.shell = Some(s.clone()),
            StepKind::Maintainer(m) => self.config.author = Some(m.clone()),
            StepKind::Healthcheck(h) => c.healthcheck = Some(healthcheck(h)),
            StepKind::Onbuild(t) => c.on_build.get_or_insert_with(Vec::new).push(t.clone()),
            StepKind::Cmd(cmd) => {
                let argv = self.argv(cmd);
                self.config.config.cmd = Some(argv);
                // BuildKit's dispatchCmd sets the (deprecated) ArgsEscaped
                // on every CMD, for the Docker image spec's readers.
                self.config.config.args_escaped = Some(true);
                self.cmd_set = true;
            }
            StepKind::Entrypoint(cmd) => {
                let argv = self.argv(cmd);
                self.config.config.entrypoint = Some(argv);
                if !self.cmd_set {
                    self.config.config.cmd = None;
                }
            }
            StepKind::Arg(_) => {}
            StepKind::Run(_) | StepKind::Copy(_) => return false,
        }
        true
    }

    /// The history `created_by` of a config-only step once applied, as
    /// BuildKit's dockerfile2llb writes it (`commitToHistory` in each
    /// `dispatch*`); `None` for ONBUILD, which BuildKit records no entry for.
    /// ARG gets its entry (`ARG NAME=value`), as BuildKit and buildah give it.
    pub fn created_by(&self, kind: &StepKind, original: &str) -> Option<String> {
        let c = &self.config.config;
        let list = |items: &[String]| format!("[{}]", items.join(" "));
        Some(match kind {
            StepKind::Onbuild(_) => return None,
            // Go's `%q` of the stored argv.
            StepKind::Cmd(_) => format!("CMD {}", go_quoted_list(c.cmd.as_deref().unwrap_or_default())),
            StepKind::Entrypoint(_) => {
                format!("ENTRYPOINT {}", go_quoted_list(c.entrypoint.as_deref().unwrap_or_default()))
            }
            // Go's `%v` of the lists.
            StepKind::Shell(shell) => format!("SHELL {}", list(shell)),
            StepKind::Volume(volumes) => format!("VOLUME {}", list(volumes)),
            StepKind::Expose(ports) => format!("EXPOSE {}", list(ports)),
            StepKind::Healthcheck(h) => format!("HEALTHCHECK {}", go_healthcheck(h)),
            _ => original.to_string(),
        })
    }

    pub fn push_history(&mut self, created: &str, created_by: &str, empty_layer: bool) {
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by.to_string()),
            author: None,
            comment: None,
            empty_layer,
        });
    }
}

fn env_index(env: &[String]) -> HashMap<String, usize> {
    let mut index = HashMap::with_capacity(env.len());
    for (i, entry) in env.iter().enumerate() {
        let name = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        // The first entry of a name is the one ENV replaces.
        index.entry(name.to_string()).or_insert(i);
    }
    index
}

/// `set_env` with an index of `env` kept up to date.
fn set_env_indexed(env: &mut Vec<String>, index: &mut HashMap<String, usize>, key: &str, value: &str) {
    let entry = format!("{}={}", key, value);
    match index.get(key) {
        Some(&i) => env[i] = entry,
        None => {
            index.insert(key.to_string(), env.len());
            env.push(entry);
        }
    }
}

/// Replaces `key`'s entry in place, or appends it, as docker's ENV does.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{}={}", key, value);
    match env.iter_mut().find(|e| e.split_once('=').map(|(k, _)| k) == Some(key)) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// WORKDIR relative to the current one (its home is the plan's path rules).
pub use crate::plan::join_workdir;

/// Go's `%q` of a `[]string`: `["/bin/sh" "-c" "echo \"hi\""]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strconv.Quote` for the characters Dockerfiles hold.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%+v` of docker's HealthcheckConfig, as BuildKit puts it in history:
/// `{Test:[CMD-SHELL curl -f x] Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}`.
fn go_healthcheck(h: &HealthConfig) -> String {
    let d = |v: Option<i64>| go_duration(v.unwrap_or(0));
    format!(
        "{{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        h.test.join(" "),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        h.retries.unwrap_or(0)
    )
}

/// Go's `time.Duration.String` for the non-negative durations HEALTHCHECK takes.
fn go_duration(ns: i64) -> String {
    let ns = ns.max(0) as u64;
    let frac = |value: u64, unit: u64| {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            whole.to_string()
        } else {
            let width = unit.ilog10() as usize;
            format!("{whole}.{}", format!("{rest:0width$}").trim_end_matches('0'))
        }
    };
    match ns {
        0 => "0s".to_string(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", frac(n, 1_000)),
        n if n < 1_000_000_000 => format!("{}ms", frac(n, 1_000_000)),
        n => {
            let (h, m) = (n / 3_600_000_000_000, (n / 60_000_000_000) % 60);
            let s = frac(n % 60_000_000_000, 1_000_000_000);
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
}

fn healthcheck(h: &HealthConfig) -> Healthcheck {
    Healthcheck {
        test: Some(h.test.clone()),
        interval: h.interval,
        timeout: h.timeout,
        start_period: h.start_period,
        start_interval: h.start_interval,
        retries: h.retries,
    }
}

#[cfg(test)]
mod tests;
