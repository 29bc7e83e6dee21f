//! One stage's state while it builds (config + layers), and the metadata
//! steps that change only the config.

use std::collections::BTreeMap;

use crate::dockerfile::ast::CmdLine;
use crate::image::config::{Empty, Healthcheck, History, ImageConfig};
use crate::image::manifest::Descriptor;
use crate::plan::{HealthConfig, StepKind};

use super::tree::Tree;
use crate::cache::Record;

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
}

impl StageState {
    pub fn new(config: ImageConfig, layers: Vec<Descriptor>) -> Self {
        let base_layers = layers.len();
        StageState { config, layers, cmd_set: false, tree: None, key: String::new(), base_layers }
    }

    /// Takes the state a cache record holds (its filesystem index is rebuilt if needed).
    pub fn restore(&mut self, record: Record, key: String) {
        self.config = record.config;
        self.layers = record.layers;
        self.cmd_set = record.cmd_set;
        self.tree = None;
        self.key = key;
    }

    pub fn record(&self) -> Record {
        Record { config: self.config.clone(), layers: self.layers.clone(), cmd_set: self.cmd_set }
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

    /// Applies a config-only step. Returns false for kinds that need the
    /// filesystem (RUN, COPY, ADD), which the executor handles.
    pub fn apply_metadata(&mut self, kind: &StepKind) -> bool {
        let c = &mut self.config.config;
        match kind {
            StepKind::Env(pairs) => {
                let env = c.env.get_or_insert_with(Vec::new);
                for (k, v) in pairs {
                    set_env(env, k, v);
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

/// Replaces `key`'s entry in place, or appends it, as docker's ENV does.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{}={}", key, value);
    match env.iter_mut().find(|e| e.split_once('=').map(|(k, _)| k) == Some(key)) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// WORKDIR relative to the current one, cleaned like Go's path.Clean.
pub fn join_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') { dir.to_string() } else { format!("{}/{}", current, dir) };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
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
mod tests {
    use super::*;

    fn state() -> StageState {
        StageState::new(ImageConfig::default(), Vec::new())
    }

    #[test]
    fn env_replaces_in_place() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        set_env(&mut env, "A", "3");
        set_env(&mut env, "C", "x=y");
        assert_eq!(env, ["A=3", "B=2", "C=x=y"]);
    }

    #[test]
    fn workdir_joins_and_cleans() {
        assert_eq!(join_workdir("/", "app"), "/app");
        assert_eq!(join_workdir("/a/b", "../c/./d"), "/a/c/d");
        assert_eq!(join_workdir("/a", "/x/"), "/x");
        assert_eq!(join_workdir("/", ".."), "/");
    }

    #[test]
    fn shell_form_uses_current_shell() {
        let mut s = state();
        s.apply_metadata(&StepKind::Cmd(CmdLine::Shell("echo hi".into())));
        assert_eq!(s.config.config.cmd.clone().unwrap(), ["/bin/sh", "-c", "echo hi"]);
        s.apply_metadata(&StepKind::Shell(vec!["/bin/bash".into(), "-ec".into()]));
        s.apply_metadata(&StepKind::Entrypoint(CmdLine::Shell("run".into())));
        assert_eq!(s.config.config.entrypoint.clone().unwrap(), ["/bin/bash", "-ec", "run"]);
        // CMD was set in this stage, so ENTRYPOINT keeps it.
        assert!(s.config.config.cmd.is_some());
    }

    #[test]
    fn entrypoint_clears_inherited_cmd() {
        let mut s = state();
        s.config.config.cmd = Some(vec!["base".into()]);
        s.apply_metadata(&StepKind::Entrypoint(CmdLine::Exec(vec!["/app".into()])));
        assert_eq!(s.config.config.cmd, None);
    }
}
