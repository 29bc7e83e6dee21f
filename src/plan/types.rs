//! The build plan: stages and steps with every word the Dockerfile lets docker
//! expand already expanded. The executor sees only these types.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::dockerfile::ast::{self, CmdLine, Heredoc, Span};

use crate::image::platform::Platform;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildPlan {
    /// The Dockerfile's display path, for error messages.
    pub file: String,
    /// `--platform`, parsed; `None`: the host's, preferred but not required.
    pub platform: Option<Platform>,
    /// Every stage in Dockerfile order (index = position).
    pub stages: Vec<Stage>,
    /// Index of the stage to build (`--target`, else the last).
    pub target: usize,
    /// Indexes of the stages `target` needs, in an order that builds each
    /// stage after the stages it depends on (target last).
    pub needed: Vec<usize>,
    /// `--build-arg`s that no ARG in a needed stage (or before the first FROM) declares.
    pub unused_build_args: Vec<String>,
}

impl BuildPlan {
    /// The platform `stage` is built for: its `FROM --platform` (which wins,
    /// as in BuildKit), else `--platform`; `None` prefers the host's.
    pub fn platform_of<'a>(&'a self, stage: &'a Stage) -> Option<&'a Platform> {
        stage.platform.as_ref().or(self.platform.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub index: usize,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    pub base: Base,
    /// `FROM --platform`, expanded and parsed, if given.
    pub platform: Option<Platform>,
    pub span: Span,
    /// `FROM ...` text after expansion, for `STEP n/m:` lines.
    pub original: String,
    pub steps: Vec<Step>,
    /// Stages this one needs (its FROM and every `COPY --from` / `RUN --mount from`
    /// naming a stage), ascending, no duplicates.
    pub deps: Vec<usize>,
    /// An image base's config was read when planning: its ONBUILD
    /// triggers (if any) are this stage's first steps. When it was not,
    /// the executor refuses an image that has triggers.
    pub base_read: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference after expansion: a store tag, `oci:DIR[:TAG]`,
    /// `oci-archive:FILE[:TAG]`, `docker-archive:FILE` or a registry name.
    Image(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub span: Span,
    /// The instruction text after expansion where docker expands (history
    /// `created_by` and `STEP n/m:` lines), e.g. `COPY app /usr/bin/app`.
    pub original: String,
    pub kind: StepKind,
}

/// Where `COPY --from` reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CopyFrom {
    /// A stage of this Dockerfile (named or by index).
    Stage(usize),
    /// An image reference (same forms as `Base::Image`).
    Image(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyStep {
    pub is_add: bool,
    /// Expanded source words (wildcards not yet matched; URLs kept for ADD).
    /// A heredoc source appears as its `Heredoc` in `heredocs` instead.
    pub sources: Vec<String>,
    /// Heredocs used as sources (`COPY <<EOF /dst`), content expanded when
    /// `expand` is true.
    pub heredocs: Vec<Heredoc>,
    /// Expanded destination; relative ones are relative to WORKDIR, which
    /// the executor knows.
    pub dest: String,
    pub from: Option<CopyFrom>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    /// ADD: extract local archives (default true for ADD; `--unpack=false` turns it off).
    pub unpack: bool,
}

impl CopyStep {
    /// The history `created_by` BuildKit writes for this step
    /// (convert_copy.go): `COPY`/`ADD`, then `--parents`, `--chown=`,
    /// `--chmod=` (never `--from`, `--link` or `--exclude`), the sources,
    /// the heredoc sources as `<<NAME`, the destination, and ` # buildkit`.
    pub fn created_by(&self) -> String {
        let mut text = String::from(if self.is_add { "ADD" } else { "COPY" });
        if self.parents {
            text.push_str(" --parents");
        }
        if let Some(chown) = &self.chown {
            text.push_str(&format!(" --chown={chown}"));
        }
        if let Some(chmod) = &self.chmod {
            text.push_str(&format!(" --chmod={chmod}"));
        }
        for source in &self.sources {
            text.push(' ');
            text.push_str(source);
        }
        for doc in &self.heredocs {
            text.push_str(&format!(" <<{}", doc.name));
        }
        text.push(' ');
        text.push_str(&self.dest);
        text.push_str(" # buildkit");
        text
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStep {
    /// Not expanded (the shell does that), heredoc bodies attached.
    pub cmd: CmdLine,
    pub heredocs: Vec<Heredoc>,
    /// The `--mount`s, checked and typed.
    #[serde(skip)]
    pub mounts: Vec<Mount>,
    /// The same mounts as written, values expanded: what the step's cache
    /// key hashes, so keys made before mounts were typed still match.
    #[serde(rename = "mounts")]
    pub mounts_written: Vec<ast::Mount>,
    pub network: Option<String>,
    pub security: Option<String>,
    /// Build args in scope with their values (`--build-arg` over ARG default),
    /// in declaration order: RUN sees them as environment variables unless
    /// the env has the name too (an ENV, or the base image's), and the ARG
    /// came first: see `args_over_env`.
    pub build_args: RunArgs,
    /// Names of `build_args` declared after the env got them (from an ENV
    /// or the base image): BuildKit runs with the ARG's value for these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args_over_env: Vec<String>,
}

/// The build args a RUN sees. RUN steps share their stage's list of ARG
/// declarations instead of each holding a copy: copies made a Dockerfile
/// of thousands of ARG and RUN lines take quadratic memory (8,000 of each:
/// 3.5 GB to plan). [`RunArgs::to_vec`] gives the `(name, value)` pairs;
/// they serialize as that list.
#[derive(Clone, Default)]
pub struct RunArgs {
    /// The latest declaration in scope; earlier ones through `prev`.
    declared: Option<Arc<ArgDeclared>>,
    /// Args after the declared ones (the proxy args docker passes to RUN
    /// without a declaration).
    extra: Vec<(String, String)>,
}

/// One ARG declaration in a stage: `None` is declared without a value.
struct ArgDeclared {
    name: String,
    value: Option<String>,
    prev: Option<Arc<ArgDeclared>>,
}

impl Drop for ArgDeclared {
    /// Frees a long chain in a loop: the default, recursive drop would
    /// overflow the stack after some ten thousand declarations.
    fn drop(&mut self) {
        let mut next = self.prev.take();
        while let Some(node) = next {
            next = match Arc::try_unwrap(node) {
                Ok(mut node) => node.prev.take(),
                Err(_) => None,
            };
        }
    }
}

impl RunArgs {
    /// Adds a declaration (O(1): earlier values stay shared).
    pub(crate) fn declare(&mut self, name: &str, value: Option<String>) {
        let prev = self.declared.take();
        self.declared = Some(Arc::new(ArgDeclared { name: name.to_string(), value, prev }));
    }

    /// The same declarations, with `extra` after them.
    pub(crate) fn with_extra(&self, extra: Vec<(String, String)>) -> Self {
        RunArgs { declared: self.declared.clone(), extra }
    }

    /// Every declared name once, where it was first declared, with its
    /// latest value (`None`: declared without one); the extra args are not
    /// declarations and are left out. BuildKit lists these in a RUN's
    /// history (`RUN |2 A=1 B= ...`).
    pub fn declared(&self) -> Vec<(String, Option<String>)> {
        let mut newest_first: Vec<&ArgDeclared> = Vec::new();
        let mut next = self.declared.as_deref();
        while let Some(node) = next {
            newest_first.push(node);
            next = node.prev.as_deref();
        }
        let mut latest: HashMap<&str, Option<&str>> = HashMap::new();
        for node in &newest_first {
            latest.entry(node.name.as_str()).or_insert(node.value.as_deref());
        }
        let mut out = Vec::new();
        for node in newest_first.iter().rev() {
            // `remove` emits each name once, at its first declaration.
            if let Some(value) = latest.remove(node.name.as_str()) {
                out.push((node.name.clone(), value.map(str::to_string)));
            }
        }
        out
    }

    /// Names with values: each declared name once, where it was first
    /// declared, with its latest value (and left out when that has none);
    /// then the extra args.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.declared().into_iter().filter_map(|(name, value)| Some((name, value?))).collect();
        out.extend(self.extra.iter().cloned());
        out
    }
}

impl From<Vec<(String, String)>> for RunArgs {
    fn from(pairs: Vec<(String, String)>) -> Self {
        RunArgs { declared: None, extra: pairs }
    }
}

impl PartialEq for RunArgs {
    fn eq(&self, other: &Self) -> bool {
        self.to_vec() == other.to_vec()
    }
}

impl std::fmt::Debug for RunArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl Serialize for RunArgs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_vec().serialize(serializer)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`, as docker stores it.
    pub test: Vec<String>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum StepKind {
    Run(RunStep),
    Copy(CopyStep),
    /// Not expanded; shell form is wrapped in the current SHELL by the executor.
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    /// Expanded and unquoted pairs.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// Expanded; relative paths are joined to the current WORKDIR by the executor.
    Workdir(String),
    User(String),
    /// Normalised `PORT/proto` (proto lower-case, `tcp` when omitted); ranges kept as `8000-8002/tcp`
    /// expanded into one entry per port.
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Shell(Vec<String>),
    Maintainer(String),
    Healthcheck(HealthConfig),
    /// The trigger text as docker stores it in `OnBuild`, e.g. `RUN echo hi`.
    Onbuild(String),
    /// ARG inside a stage: no config change, kept so history/cache know about it.
    Arg(Vec<(String, Option<String>)>),
}

/// One `RUN --mount`, its options checked and defaulted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Mount {
    /// A directory of the context, a stage or an image.
    Bind {
        /// As written; relative to WORKDIR when not absolute.
        target: String,
        /// The stage or image the source is in; `None`: the context.
        from: Option<MountFrom>,
        /// The path inside `from` (default `.`).
        source: String,
        /// Default true; writes to a rw bind are thrown away.
        readonly: bool,
    },
    /// A directory kept between builds.
    Cache {
        /// `None`: the target, made absolute (BuildKit's default).
        id: Option<String>,
        /// As written; relative to WORKDIR when not absolute.
        target: String,
        sharing: Sharing,
        /// What a new cache directory is seeded from (a stage or image).
        from: Option<MountFrom>,
        /// The path inside `from` (default `.`).
        source: String,
        /// Of a new cache directory (default 0755, owned by 0:0).
        mode: u32,
        uid: u32,
        gid: u32,
        readonly: bool,
    },
    Tmpfs {
        /// As written; relative to WORKDIR when not absolute.
        target: String,
        /// Bytes; `None`: the kernel's default.
        size: Option<u64>,
    },
    /// A `--secret` as a file, an environment variable, or both.
    Secret {
        /// `id`, else the target's file name.
        id: String,
        /// Where the file goes (absolute); `None` when only `env` is wanted.
        target: Option<String>,
        /// The variable that gets the secret's value.
        env: Option<String>,
        /// A missing secret is an error instead of a skipped mount.
        required: bool,
        /// Of the file (default 0400, owned by 0:0).
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// An `--ssh` agent socket.
    Ssh {
        /// Default `default`.
        id: String,
        /// Absolute; default `/run/buildkit/ssh_agent.0`.
        target: String,
        required: bool,
    },
}

/// A mount's `from=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountFrom {
    /// As written (a stage name or index, an image or a `--build-context`
    /// name); a bind's cache key names it so.
    pub name: String,
    pub source: CopyFrom,
}

/// Who may use a cache directory at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Sharing {
    /// Any number of steps at a time (the default).
    Shared,
    /// One step at a time; another gets a fresh, throwaway directory.
    Private,
    /// One step at a time; others wait.
    Locked,
}
