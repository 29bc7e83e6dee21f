//! The parsed Dockerfile: typed instructions with their source positions.
//!
//! Words are kept as written (quotes and `$VAR`s intact): variable expansion
//! depends on ARG/ENV state that only the planner knows, so the parser never
//! expands. Exec-form (JSON) arguments are already decoded strings.

use serde::Serialize;

/// A position in the Dockerfile, 1-based. `end_line` is the last physical line
/// of the instruction (continuations and heredoc bodies included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dockerfile {
    /// The name errors print, e.g. `Dockerfile` or `build/Containerfile`.
    pub path: String,
    pub directives: Directives,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Directives {
    pub syntax: Option<String>,
    /// `\` unless `# escape=` said otherwise (only `\` and `` ` `` are allowed).
    pub escape: char,
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives { syntax: None, escape: '\\', check: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instruction {
    pub span: Span,
    /// The instruction's text as docker prints it in history and `STEP n/m:`
    /// lines: keyword upper-cased, continuations joined, flags included,
    /// heredoc bodies omitted (e.g. `COPY --chown=1:1 a b /dst/`).
    pub original: String,
    pub command: Command,
}

/// Shell form (one string, run through SHELL) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum CmdLine {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, without quotes or `-`.
    pub name: String,
    /// The body, tabs already stripped for `<<-`; ends with a newline unless empty.
    pub content: String,
    /// False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`): no expansion.
    pub expand: bool,
    /// True for `<<-`.
    pub strip_tabs: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyValue {
    /// Raw words as written (quotes kept): the planner expands and unquotes.
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    /// Raw default value word (quotes kept), if `NAME=value` was given.
    pub default: Option<String>,
}

/// One `--mount=` of RUN, parsed into its comma-separated fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    /// bind (default), cache, tmpfs, secret or ssh.
    pub kind: MountKind,
    /// The remaining `key=value` (or bare `key`) fields in order, raw.
    pub options: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunCmd {
    pub cmd: CmdLine,
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    /// `--network=default|none|host`, validated.
    pub network: Option<String>,
    /// `--security=insecure|sandbox`, validated.
    pub security: Option<String>,
}

/// COPY and ADD share their shape; ADD-only flags are `None`/false for COPY.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyCmd {
    /// Raw source words (unexpanded in shell form), heredoc names appear here
    /// as `<<EOF` words and are matched to `heredocs` by name.
    pub sources: Vec<String>,
    pub dest: String,
    pub heredocs: Vec<Heredoc>,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    // ADD only:
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSpec {
    /// For CMD-SHELL/CMD; the exec form is stored like docker: `["CMD", ...]`
    /// and shell form as `["CMD-SHELL", "..."]` by the planner.
    pub test: CmdLine,
    /// Nanoseconds, as docker's config stores durations; `None` = not given.
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub start_interval: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Command {
    From {
        /// Raw image word (may contain `$ARG`s from before the first FROM).
        image: String,
        /// Stage name after `AS`, as written (the planner lower-cases it).
        alias: Option<String>,
        platform: Option<String>,
    },
    Run(RunCmd),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    /// `ENV a=b c=d` and the legacy `ENV a b c` (one pair).
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    /// Raw port words, e.g. `80/tcp`, `$PORT`.
    Expose(Vec<String>),
    /// JSON array or whitespace-separated raw words.
    Volume(Vec<String>),
    StopSignal(String),
    /// Exec form only (JSON array), already decoded.
    Shell(Vec<String>),
    Maintainer(String),
    /// `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<HealthSpec>),
    /// The trigger instruction, parsed (never FROM, ONBUILD or MAINTAINER).
    Onbuild(Box<Instruction>),
    Copy(CopyCmd),
    Add(CopyCmd),
}

impl Command {
    /// Upper-case keyword, e.g. `COPY`.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From { .. } => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Env(_) => "ENV",
            Command::Label(_) => "LABEL",
            Command::Arg(_) => "ARG",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Expose(_) => "EXPOSE",
            Command::Volume(_) => "VOLUME",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Shell(_) => "SHELL",
            Command::Maintainer(_) => "MAINTAINER",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
        }
    }
}
