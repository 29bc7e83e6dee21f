//! One stage's instructions to `Step`s: variable expansion where docker
//! expands, ARG scoping, and the normalised forms the image config stores.

use std::collections::HashMap;

use crate::dockerfile::ast::{CmdLine, CopyCmd, HealthSpec, Heredoc, Instruction, Mount, RunCmd};
use crate::dockerfile::shell::{ShellError, ShellLex};
use crate::dockerfile::{Command, Dockerfile, DockerfileError};

use super::args::{is_proxy_arg, BuildArgs, StageVars, Vars};
use super::ports;
use super::stages::{at, resolve_ref, StageRef};
use super::types::Mount as TypedMount;
use super::types::{CopyFrom, CopyStep, HealthConfig, RunStep, Step, StepKind};

/// What planning a stage needs besides its own instructions.
pub(crate) struct StageContext<'a> {
    pub df: &'a Dockerfile,
    pub lex: ShellLex,
    pub build_args: &'a BuildArgs,
    /// Meta args with values plus the platform args: what `ARG NAME`
    /// without a default picks up inside a stage.
    pub globals: &'a Vars,
    pub names: &'a [Option<String>],
    pub index: usize,
}

pub(crate) struct StagePlan {
    pub steps: Vec<Step>,
    /// The stage's variables at its end (a child stage starts from them).
    pub vars: StageVars,
    /// Every ARG name the stage declares.
    pub declared: Vec<String>,
}

pub(crate) fn plan_stage(
    ctx: &StageContext<'_>,
    mut vars: StageVars,
    body: &[&Instruction],
) -> Result<StagePlan, DockerfileError> {
    let mut steps = Vec::with_capacity(body.len());
    let mut declared = Vec::new();
    for ins in body {
        let mut planner = StepPlanner { ctx, ins, vars: &mut vars, declared: &mut declared };
        steps.push(planner.plan()?);
    }
    Ok(StagePlan { steps, vars, declared })
}

/// The literal stage or image a `COPY --from` names. BuildKit refuses
/// variables (and quotes) there: the value must expand to itself.
pub(crate) fn copy_from_value(lex: &ShellLex, raw: &str) -> Result<String, String> {
    match lex.process_word(raw, &HashMap::new()) {
        Ok(value) if value == raw => Ok(value),
        _ => Err("variable expansion is not supported for --from".into()),
    }
}

/// The literal value of a RUN mount's `from=`; `$` is refused as BuildKit does.
pub(crate) fn mount_from_value(lex: &ShellLex, raw: &str) -> Result<String, String> {
    let refused = raw.find('$').is_some_and(|i| i + 1 != raw.len());
    if refused {
        return Err("'from' doesn't support variable expansion".into());
    }
    lex.process_word(raw, &HashMap::new()).map_err(|err| err.to_string())
}

pub(crate) const FROM_HELP: &str =
    "define a stage with `ARG` before the first FROM and `FROM ${VAR} AS name`, then use that name";

struct StepPlanner<'a, 'b> {
    ctx: &'a StageContext<'b>,
    ins: &'a Instruction,
    vars: &'a mut StageVars,
    declared: &'a mut Vec<String>,
}

impl StepPlanner<'_, '_> {
    fn plan(&mut self) -> Result<Step, DockerfileError> {
        let ins = self.ins;
        let raw = ins.original.clone();
        let (kind, original) = match &ins.command {
            Command::Run(run) => (StepKind::Run(self.run(run)?), raw),
            Command::Cmd(cmd) => (StepKind::Cmd(cmd.clone()), raw),
            Command::Entrypoint(cmd) => (StepKind::Entrypoint(cmd.clone()), raw),
            Command::Shell(shell) => (StepKind::Shell(shell.clone()), raw),
            Command::Maintainer(who) => (StepKind::Maintainer(who.clone()), raw),
            Command::Healthcheck(spec) => (StepKind::Healthcheck(healthcheck(spec.as_ref())), raw),
            Command::Onbuild(trigger) => (StepKind::Onbuild(trigger_text(trigger)), raw),
            Command::Env(pairs) => {
                let pairs = self.pairs(pairs.iter().map(|kv| (&kv.key, &kv.value)))?;
                for (key, value) in &pairs {
                    self.vars.set_env(key, value);
                }
                let text = format!("ENV {}", join_pairs(&pairs));
                (StepKind::Env(pairs), text)
            }
            Command::Label(pairs) => {
                let pairs = self.pairs(pairs.iter().map(|kv| (&kv.key, &kv.value)))?;
                let text = format!("LABEL {}", join_pairs(&pairs));
                (StepKind::Label(pairs), text)
            }
            Command::Arg(decls) => {
                let mut resolved = Vec::with_capacity(decls.len());
                for decl in decls {
                    let value = self.arg_value(&decl.name, decl.default.as_deref())?;
                    self.vars.declare_arg(&decl.name, value.clone());
                    self.declared.push(decl.name.clone());
                    resolved.push((decl.name.clone(), value));
                }
                let text = resolved
                    .iter()
                    .map(|(k, v)| v.as_ref().map_or_else(|| k.clone(), |v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" ");
                (StepKind::Arg(resolved), format!("ARG {text}"))
            }
            Command::Workdir(path) => {
                let path = self.word(path)?;
                if path.is_empty() {
                    return Err(self
                        .error("WORKDIR expands to an empty path")
                        .with_help("check the variables it uses are set with ARG or ENV"));
                }
                (StepKind::Workdir(path.clone()), format!("WORKDIR {path}"))
            }
            Command::User(user) => {
                let user = self.word(user)?;
                (StepKind::User(user.clone()), format!("USER {user}"))
            }
            Command::StopSignal(signal) => {
                let signal = self.word(signal)?;
                if !is_signal(&signal) {
                    return Err(self
                        .error(format!("invalid signal {signal:?}"))
                        .with_help("use a signal name like SIGTERM or SIGKILL, or its number"));
                }
                (StepKind::StopSignal(signal.clone()), format!("STOPSIGNAL {signal}"))
            }
            Command::Volume(paths) => {
                let mut out = Vec::with_capacity(paths.len());
                for raw in paths {
                    let path = self.word(raw)?;
                    if path.is_empty() {
                        return Err(self.error("VOLUME specified can not be an empty string"));
                    }
                    out.push(path);
                }
                let text = format!("VOLUME {}", out.join(" "));
                (StepKind::Volume(out), text)
            }
            Command::Expose(specs) => {
                let ports = self.expose(specs)?;
                let text = format!("EXPOSE {}", ports.join(" "));
                (StepKind::Expose(ports), text)
            }
            Command::Copy(copy) => self.copy(copy, false)?,
            Command::Add(copy) => self.copy(copy, true)?,
            Command::From { .. } => return Err(self.error("FROM inside a stage; the planner splits stages at FROM")),
        };
        Ok(Step { span: ins.span, original, kind })
    }

    fn error(&self, message: impl Into<String>) -> DockerfileError {
        at(self.ctx.df, self.ins.span, message)
    }

    fn expand_error(&self, err: ShellError) -> DockerfileError {
        self.error(format!("expand {} arguments: {err}", self.ins.command.keyword()))
            .with_help("quote or escape `$` to keep it literal; unset variables expand to nothing")
    }

    /// What expansion sees here; read in place, never copied.
    fn env(&self) -> &StageVars {
        self.vars
    }

    fn word(&self, raw: &str) -> Result<String, DockerfileError> {
        self.ctx.lex.process_word(raw, &self.env()).map_err(|err| self.expand_error(err))
    }

    /// ENV and LABEL: every key and value expanded with the variables from
    /// before the instruction (so `ENV a=1 b=$a` sees the old `a`).
    fn pairs<'p>(
        &self,
        pairs: impl Iterator<Item = (&'p String, &'p String)>,
    ) -> Result<Vec<(String, String)>, DockerfileError> {
        let env = self.env();
        let lex = &self.ctx.lex;
        let mut out = Vec::new();
        for (key, value) in pairs {
            let key = lex.process_word(key, &env).map_err(|err| self.expand_error(err))?;
            let value = lex.process_word(value, &env).map_err(|err| self.expand_error(err))?;
            if key.is_empty() {
                return Err(self.error(format!("{} names can not be blank", self.ins.command.keyword())));
            }
            out.push((key, value));
        }
        Ok(out)
    }

    /// `--build-arg` first, then the expanded default, then (no default) the
    /// meta arg or platform arg of that name.
    fn arg_value(&self, name: &str, default: Option<&str>) -> Result<Option<String>, DockerfileError> {
        if let Some(value) = self.ctx.build_args.get(name) {
            return Ok(Some(value.to_string()));
        }
        match default {
            Some(raw) => self.word(raw).map(Some),
            None => Ok(self.ctx.globals.get(name).map(str::to_string)),
        }
    }

    fn expose(&self, specs: &[String]) -> Result<Vec<String>, DockerfileError> {
        let env = self.env();
        let mut out: Vec<String> = Vec::new();
        // A range is up to 65536 ports: a set keeps the dedup linear.
        let mut seen = std::collections::HashSet::new();
        for raw in specs {
            let words = self.ctx.lex.process_words(raw, &env).map_err(|err| self.expand_error(err))?;
            for word in words {
                let ports = ports::normalize(&word).map_err(|msg| {
                    self.error(format!("parse EXPOSE port: {msg}"))
                        .with_help("EXPOSE takes PORT, PORT/PROTO or START-END/PROTO")
                })?;
                for port in ports {
                    if seen.insert(port.clone()) {
                        out.push(port);
                    }
                }
            }
        }
        Ok(out)
    }

    fn run(&self, run: &RunCmd) -> Result<RunStep, DockerfileError> {
        let mounts_written = run.mounts.iter().map(|mount| self.mount(mount)).collect::<Result<Vec<_>, _>>()?;
        // A `from=` that resolves to nothing was refused with the stage's
        // dependencies (`stage_deps`), before any stage was planned.
        let resolve = |name: &str| match resolve_ref(name, self.ctx.names, self.ctx.index, "mount from") {
            Ok(StageRef::Stage(index)) => CopyFrom::Stage(index),
            _ => CopyFrom::Image(name.to_string()),
        };
        let mounts = mounts_written
            .iter()
            .map(|mount| TypedMount::from_written(mount, &resolve).map_err(|err| self.error(err.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        // Docker hands the proxy args to RUN even when no ARG declares them.
        let mut proxies = Vec::new();
        for name in self.ctx.build_args.names() {
            if is_proxy_arg(name) && !self.vars.is_declared(name) {
                if let Some(value) = self.ctx.build_args.get(name) {
                    proxies.push((name.clone(), value.to_string()));
                }
            }
        }
        let build_args = self.vars.run_args(proxies);
        Ok(RunStep {
            args_over_env: self.vars.args_over_env(),
            cmd: run.cmd.clone(),
            heredocs: run.heredocs.clone(),
            mounts,
            mounts_written,
            network: run.network.clone(),
            security: run.security.clone(),
            build_args,
        })
    }

    /// Mount option values are expanded (BuildKit does); `from=` must be literal.
    /// Checking them is [`TypedMount::from_written`]'s.
    fn mount(&self, mount: &Mount) -> Result<Mount, DockerfileError> {
        let env = self.env();
        let mut options = Vec::with_capacity(mount.options.len());
        for (key, value) in &mount.options {
            let value = match value {
                Some(raw) if key.eq_ignore_ascii_case("from") => Some(
                    mount_from_value(&self.ctx.lex, raw)
                        .map_err(|msg| self.error(format!("RUN --mount from={raw}: {msg}")).with_help(FROM_HELP))?,
                ),
                Some(raw) => Some(self.ctx.lex.process_word(raw, &env).map_err(|err| self.expand_error(err))?),
                None => None,
            };
            options.push((key.clone(), value));
        }
        Ok(Mount { kind: mount.kind, options })
    }

    fn copy(&self, copy: &CopyCmd, is_add: bool) -> Result<(StepKind, String), DockerfileError> {
        let env = self.env();
        let lex = &self.ctx.lex;
        let expand = |raw: &str| lex.process_word(raw, &env).map_err(|err| self.expand_error(err));
        let keyword = if is_add { "ADD" } else { "COPY" };

        let mut sources = Vec::new();
        let mut heredocs = Vec::new();
        let mut shown = Vec::new();
        for raw in &copy.sources {
            if let Some(name) = heredoc_name(raw) {
                heredocs.push(self.heredoc_source(copy, name, env)?);
                shown.push(raw.clone());
                continue;
            }
            let source = expand(raw)?;
            if source.is_empty() {
                return Err(self
                    .error(format!("{keyword} source {raw:?} expands to an empty string"))
                    .with_help("set the variable with ARG or ENV, or pass it with --build-arg"));
            }
            shown.push(source.clone());
            sources.push(source);
        }
        let dest = expand(&copy.dest)?;
        let optional = |raw: &Option<String>| -> Result<Option<String>, DockerfileError> {
            Ok(raw.as_deref().map(expand).transpose()?.filter(|v| !v.is_empty()))
        };
        let chown = optional(&copy.chown)?;
        if let Some(spec) = &chown {
            crate::dockerfile::ids::check_chown(spec).map_err(|why| {
                self.error(format!("invalid {keyword} --chown={spec}: {why}"))
                    .with_help("give a user and group that exist in the image, or ids from 0 to 4294967294")
            })?;
        }
        let chmod = optional(&copy.chmod)?;
        let checksum = optional(&copy.checksum)?;
        let exclude = copy.exclude.iter().map(|raw| expand(raw)).collect::<Result<Vec<_>, _>>()?;
        let from = copy.from.as_deref().map(|raw| self.copy_from(raw)).transpose()?;

        let mut text = String::from(keyword);
        let mut flag = |name: &str, value: Option<&str>| match value {
            Some(value) => text.push_str(&format!(" --{name}={value}")),
            None => text.push_str(&format!(" --{name}")),
        };
        if let Some(raw) = &copy.from {
            flag("from", Some(raw));
        }
        if let Some(chown) = &chown {
            flag("chown", Some(chown));
        }
        if let Some(chmod) = &chmod {
            flag("chmod", Some(chmod));
        }
        if copy.link {
            flag("link", None);
        }
        if copy.parents {
            flag("parents", None);
        }
        for pattern in &exclude {
            flag("exclude", Some(pattern));
        }
        if let Some(checksum) = &checksum {
            flag("checksum", Some(checksum));
        }
        if let Some(keep) = copy.keep_git_dir {
            flag("keep-git-dir", Some(if keep { "true" } else { "false" }));
        }
        if let Some(unpack) = copy.unpack {
            flag("unpack", Some(if unpack { "true" } else { "false" }));
        }
        for word in shown.iter().chain(std::iter::once(&dest)) {
            text.push(' ');
            text.push_str(word);
        }

        let step = CopyStep {
            is_add,
            sources,
            heredocs,
            dest,
            from,
            chown,
            chmod,
            link: copy.link,
            parents: copy.parents,
            exclude,
            checksum,
            keep_git_dir: copy.keep_git_dir.unwrap_or(false),
            unpack: is_add && copy.unpack.unwrap_or(true),
        };
        Ok((StepKind::Copy(step), text))
    }

    fn copy_from(&self, raw: &str) -> Result<CopyFrom, DockerfileError> {
        let value = copy_from_value(&self.ctx.lex, raw)
            .map_err(|msg| self.error(format!("COPY --from={raw}: {msg}")).with_help(FROM_HELP))?;
        match resolve_ref(&value, self.ctx.names, self.ctx.index, "copy from") {
            Ok(StageRef::Stage(index)) => Ok(CopyFrom::Stage(index)),
            Ok(StageRef::Image(image)) => Ok(CopyFrom::Image(image)),
            Err((message, help)) => Err(self.error(message).with_help(help)),
        }
    }

    fn heredoc_source(&self, copy: &CopyCmd, name: &str, env: &StageVars) -> Result<Heredoc, DockerfileError> {
        let Some(doc) = copy.heredocs.iter().find(|doc| doc.name == name) else {
            return Err(self.error(format!("heredoc <<{name} has no body")).with_help(format!(
                "write the body on the lines after the instruction and end it with a line `{name}`"
            )));
        };
        let mut doc = doc.clone();
        if doc.expand {
            doc.content = self.ctx.lex.process_heredoc(&doc.content, env).map_err(|err| self.expand_error(err))?;
        }
        Ok(doc)
    }
}

/// An ONBUILD trigger as the image config stores it: the instruction, then
/// each heredoc's body and delimiter on the lines after it (BuildKit's
/// parseOnBuild), so the child reads the bodies back.
fn trigger_text(trigger: &Instruction) -> String {
    let docs = match &trigger.command {
        Command::Run(run) => &run.heredocs,
        Command::Copy(copy) | Command::Add(copy) => &copy.heredocs,
        _ => return trigger.original.clone(),
    };
    let mut text = trigger.original.clone();
    for doc in docs {
        text.push('\n');
        text.push_str(&doc.content);
        text.push_str(&doc.name);
    }
    text
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` to `EOF`.
fn heredoc_name(word: &str) -> Option<&str> {
    let rest = word.strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let unquoted =
        ['"', '\''].iter().find_map(|q| rest.strip_prefix(*q).and_then(|r| r.strip_suffix(*q))).unwrap_or(rest);
    (!unquoted.is_empty()).then_some(unquoted)
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Docker's stored form: `["NONE"]`, `["CMD", args...]`, `["CMD-SHELL", "text"]`.
fn healthcheck(spec: Option<&HealthSpec>) -> HealthConfig {
    let Some(spec) = spec else {
        return HealthConfig {
            test: vec!["NONE".into()],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        };
    };
    let test = match &spec.test {
        CmdLine::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
        CmdLine::Exec(args) => std::iter::once("CMD".to_string()).chain(args.iter().cloned()).collect(),
    };
    HealthConfig {
        test,
        interval: spec.interval,
        timeout: spec.timeout,
        start_period: spec.start_period,
        start_interval: spec.start_interval,
        retries: spec.retries,
    }
}

/// Signals as moby's signal.ParseSignal accepts them (Linux names, with or
/// without `SIG`, any case; or a positive number).
fn is_signal(text: &str) -> bool {
    if let Ok(number) = text.parse::<i64>() {
        return number > 0;
    }
    const NAMES: [&str; 31] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM",
    ];
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if NAMES.contains(&name) || matches!(name, "WINCH" | "XCPU" | "XFSZ" | "RTMIN" | "RTMAX") {
        return true;
    }
    let offset = |rest: &str, max: u32| rest.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    name.strip_prefix("RTMIN+").is_some_and(|rest| offset(rest, 15))
        || name.strip_prefix("RTMAX-").is_some_and(|rest| offset(rest, 14))
}

#[cfg(test)]
mod tests;
