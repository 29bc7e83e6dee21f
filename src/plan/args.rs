//! Build arguments: `--build-arg` values, the predefined platform args, the
//! meta args (ARGs before the first FROM) and the variables a stage sees.

use std::collections::{BTreeSet, HashMap};

use crate::dockerfile::shell::Lookup;
use crate::image::platform::Platform;

use super::types::RunArgs;

/// Names in the order first set, with an index: setting or reading one is
/// O(1), so a Dockerfile of thousands of ENV or ARG lines plans in linear
/// time. Setting an existing name replaces its value in place (its position
/// stays, as docker keeps it in history and env).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ordered<V> {
    entries: Vec<(String, V)>,
    index: HashMap<String, usize>,
}

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered { entries: Vec::new(), index: HashMap::new() }
    }
}

impl<V> Ordered<V> {
    pub(crate) fn insert(&mut self, name: &str, value: V) {
        match self.index.get(name) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(name.to_string(), self.entries.len());
                self.entries.push((name.to_string(), value));
            }
        }
    }

    pub(crate) fn value(&self, name: &str) -> Option<&V> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// Variables with values (env, meta args).
pub(crate) type Vars = Ordered<String>;

impl Vars {
    pub(crate) fn set(&mut self, name: &str, value: &str) {
        self.insert(name, value.to_string());
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.value(name).map(String::as_str)
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `K=V` strings as an image config stores them.
    pub(crate) fn from_env_strings(env: &[String]) -> Self {
        let mut vars = Vars::default();
        for entry in env {
            let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
            vars.set(key, value);
        }
        vars
    }
}

/// The `--build-arg`s: later ones win; a name given without a value that the
/// caller could not resolve (`None`) counts as given but sets nothing.
#[derive(Debug, Default)]
pub(crate) struct BuildArgs {
    names: Vec<String>,
    values: HashMap<String, String>,
}

impl BuildArgs {
    pub(crate) fn new(args: &[(String, Option<String>)]) -> Self {
        let mut out = BuildArgs::default();
        for (name, value) in args {
            if !out.names.contains(name) {
                out.names.push(name.clone());
            }
            match value {
                Some(value) => out.values.insert(name.clone(), value.clone()),
                None => out.values.remove(name),
            };
        }
        out
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Names in the order first given.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }
}

/// The proxy args docker passes to RUN without an ARG declaration and never
/// reports as unused.
pub(crate) fn is_proxy_arg(name: &str) -> bool {
    const PROXY: [&str; 5] = ["HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"];
    PROXY.iter().any(|p| *p == name || p.to_ascii_lowercase() == name)
}

/// The platform args BuildKit defines for every build.
pub(crate) fn is_platform_arg(name: &str) -> bool {
    PLATFORM_ARGS.contains(&name)
}

const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// TARGET* (or BUILD*) args for `platform`, named as BuildKit names them.
fn platform_args(platform: &Platform, prefix: &str) -> [(String, String); 4] {
    [
        (format!("{prefix}PLATFORM"), platform.to_string()),
        (format!("{prefix}OS"), platform.os.clone()),
        (format!("{prefix}ARCH"), platform.architecture.clone()),
        (format!("{prefix}VARIANT"), platform.variant.clone().unwrap_or_default()),
    ]
}

/// The variables every FROM line sees before any meta ARG: the platform
/// args, each replaced by a `--build-arg` of the same name if given.
pub(crate) fn platform_vars(target: &Platform, build: &Platform, build_args: &BuildArgs) -> Vars {
    let mut vars = Vars::default();
    for (name, value) in platform_args(target, "TARGET").into_iter().chain(platform_args(build, "BUILD")) {
        let value = build_args.get(&name).map(str::to_string).unwrap_or(value);
        vars.set(&name, &value);
    }
    vars
}

impl Lookup for Vars {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// What a stage's instructions see: the environment (base image + ENV) and
/// the ARGs in scope. Between an ENV and an ARG of the same name the later
/// one wins, as in BuildKit (dispatchArg adds a valued ARG to the build
/// state's env, over an ENV before it or the base image's; a later ENV takes
/// the name back); the classic builder let ENV win whatever the order. An
/// ARG never changes the image's env. Expansion reads it directly (it is a
/// [`Lookup`]): copying it per instruction made planning quadratic.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageVars {
    pub env: Vars,
    /// In declaration order; `None` = declared without any value.
    pub args: Ordered<Option<String>>,
    /// The same declarations as a list RUN steps share.
    declared: RunArgs,
    /// Names the env has whose latest setter is a valued ARG: the ARG's
    /// value is what expansion and RUN see.
    shadowed: BTreeSet<String>,
}

impl Lookup for StageVars {
    fn var(&self, name: &str) -> Option<&str> {
        let arg = || self.args.value(name).and_then(|v| v.as_deref());
        if self.shadowed.contains(name) {
            if let Some(value) = arg() {
                return Some(value);
            }
        }
        self.env.get(name).or_else(arg)
    }
}

/// The PATH BuildKit adds when a base image sets none.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl StageVars {
    pub(crate) fn from_env(mut env: Vars) -> Self {
        if !env.contains("PATH") {
            env.set("PATH", DEFAULT_PATH);
        }
        StageVars { env, args: Ordered::default(), declared: RunArgs::default(), shadowed: BTreeSet::new() }
    }

    /// Declares an ARG with its resolved value. Without one (no default,
    /// `--build-arg` or meta arg) it sets nothing: a value already in scope,
    /// from an earlier ARG of the stage or of the stage it is built FROM,
    /// stays, as BuildKit's dispatchArg adds nothing to the state's env then.
    pub(crate) fn declare_arg(&mut self, name: &str, value: Option<String>) {
        let Some(value) = value else {
            let kept = self.args.value(name).cloned().flatten();
            self.declared.declare(name, kept.clone());
            self.args.insert(name, kept);
            return;
        };
        let value = Some(value);
        if self.env.contains(name) {
            self.shadowed.insert(name.to_string());
        }
        self.declared.declare(name, value.clone());
        self.args.insert(name, value);
    }

    /// ENV: the name's value from here on, over any ARG before it.
    pub(crate) fn set_env(&mut self, name: &str, value: &str) {
        self.shadowed.remove(name);
        self.env.set(name, value);
    }

    /// The env names a RUN must take from its ARGs instead (see `shadowed`).
    pub(crate) fn args_over_env(&self) -> Vec<String> {
        self.shadowed.iter().cloned().collect()
    }

    pub(crate) fn is_declared(&self, name: &str) -> bool {
        self.args.contains(name)
    }

    /// ARGs with a value, in order, for RUN's environment, then `extra`.
    pub(crate) fn run_args(&self, extra: Vec<(String, String)>) -> RunArgs {
        self.declared.with_extra(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_build_args_win_and_none_unsets() {
        let args = BuildArgs::new(&[
            ("A".into(), Some("1".into())),
            ("B".into(), Some("x".into())),
            ("A".into(), Some("2".into())),
            ("B".into(), None),
        ]);
        assert_eq!(args.get("A"), Some("2"));
        assert_eq!(args.get("B"), None);
        assert_eq!(args.names(), ["A", "B"]);
    }

    #[test]
    fn platform_vars_take_overrides() {
        let target = Platform::parse("linux/arm/v7").unwrap();
        let build = Platform::parse("linux/amd64").unwrap();
        let vars = platform_vars(&target, &build, &BuildArgs::new(&[("BUILDOS".into(), Some("plan9".into()))]));
        assert_eq!(vars.get("TARGETPLATFORM"), Some("linux/arm/v7"));
        assert_eq!(vars.get("TARGETVARIANT"), Some("v7"));
        assert_eq!(vars.get("BUILDVARIANT"), Some(""));
        assert_eq!(vars.get("BUILDOS"), Some("plan9"));
    }

    #[test]
    fn the_later_of_env_and_arg_wins_buildkit() {
        let mut vars = StageVars::from_env(Vars::from_env_strings(&["X=env".into(), "V=env".into()]));
        vars.declare_arg("X", Some("arg".into()));
        vars.declare_arg("Y", Some("arg".into()));
        vars.declare_arg("Z", None);
        vars.declare_arg("V", None);
        assert_eq!(vars.var("X"), Some("arg"), "a valued ARG after the env's X wins");
        assert_eq!(vars.var("V"), Some("env"), "an ARG without a value does not");
        assert_eq!(vars.args_over_env(), ["X"]);
        vars.set_env("X", "env2");
        assert_eq!(vars.var("X"), Some("env2"), "a later ENV takes it back");
        assert!(vars.args_over_env().is_empty());
        vars.set_env("X", "env");
        assert_eq!(vars.var("Y"), Some("arg"));
        assert_eq!(vars.var("Z"), None);
        assert!(vars.is_declared("Z"));
        assert_eq!(vars.var("PATH"), Some(DEFAULT_PATH));
        assert_eq!(
            vars.run_args(Vec::new()).to_vec(),
            [("X".to_string(), "arg".to_string()), ("Y".into(), "arg".into())]
        );
    }

    /// moby/buildkit#1977: a child stage starts with its parent's ARGs; a
    /// bare `ARG` there (or later in one stage) keeps the value in scope and
    /// does not take a name back from an ENV set after the valued ARG.
    #[test]
    fn a_bare_arg_keeps_the_value_in_scope_buildkit() {
        let mut parent = StageVars::default();
        parent.declare_arg("S", Some("s".into()));
        let mut child = parent.clone();
        child.declare_arg("S", None);
        assert_eq!(child.var("S"), Some("s"));
        assert_eq!(child.run_args(Vec::new()).to_vec(), [("S".to_string(), "s".to_string())]);
        child.declare_arg("X", Some("1".into()));
        child.set_env("X", "2");
        child.declare_arg("X", None);
        assert_eq!(child.var("X"), Some("2"), "the ENV after the valued ARG still wins");
        assert!(child.args_over_env().is_empty());
    }

    #[test]
    fn setting_again_keeps_the_position() {
        let mut vars = Vars::default();
        vars.set("A", "1");
        vars.set("B", "2");
        vars.set("A", "3");
        assert_eq!(vars.iter().collect::<Vec<_>>(), [("A", "3"), ("B", "2")]);
        let mut stage = StageVars::default();
        stage.declare_arg("X", None);
        stage.declare_arg("Y", Some("1".into()));
        stage.declare_arg("X", Some("2".into()));
        assert_eq!(stage.run_args(Vec::new()).to_vec(), [("X".to_string(), "2".to_string()), ("Y".into(), "1".into())]);
        stage.declare_arg("Z", None);
        stage.declare_arg("Y", None);
        // RUN's history lists every declaration, valueless ones too, never the extras;
        // a bare redeclaration keeps the value in scope.
        let declared = stage.run_args(vec![("P".into(), "p".into())]).declared();
        assert_eq!(
            declared,
            [("X".to_string(), Some("2".to_string())), ("Y".into(), Some("1".into())), ("Z".into(), None)]
        );
        assert_eq!(stage.var("Y"), Some("1"));
        let extra = vec![("P".to_string(), "p".to_string())];
        assert_eq!(
            stage.run_args(extra).to_vec(),
            [("X".to_string(), "2".to_string()), ("Y".into(), "1".into()), ("P".into(), "p".into())]
        );
        // A stage of 200,000 declarations is freed without recursion.
        let mut long = StageVars::default();
        (0..200_000).for_each(|i| long.declare_arg(&format!("A{i}"), Some(String::new())));
        drop(long);
    }

    #[test]
    fn proxy_args_in_both_cases() {
        assert!(is_proxy_arg("HTTP_PROXY") && is_proxy_arg("no_proxy"));
        assert!(!is_proxy_arg("Http_Proxy") && !is_proxy_arg("PROXY"));
    }
}
