//! Planning: ARG scoping, variable expansion and the stage graph.
//!
//! `plan` turns a parsed Dockerfile into a `BuildPlan` the way BuildKit's
//! dockerfile2llb reads a Dockerfile:
//! - FROM image and `--platform` expand with the meta args (ARGs before the
//!   first FROM, `--build-arg` over default) and the predefined platform args
//!   (TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and BUILD*), which
//!   FROM may use without declaring them.
//! - Inside a stage an ARG is visible from its declaration on; `ARG NAME`
//!   without a default takes the meta (or platform) arg's value. A value is
//!   the `--build-arg` if given, else the expanded default.
//! - Expansion sees the base image's env (`PATH` added when missing, as
//!   BuildKit does), ARGs and ENVs; between an ENV (or the base's env) and a
//!   valued ARG of the same name the later one wins, for expansion and RUN,
//!   as in BuildKit (the classic builder let ENV win whatever the order).
//! - A stage built `FROM` an earlier stage starts with that stage's env and
//!   ARGs in scope, and runs that stage's own ONBUILD triggers first (they
//!   appear as its first steps; the executor must not run them again from
//!   the inherited config).
//! - A stage built FROM an image with ONBUILD triggers runs them first too,
//!   planned here from the image's config (read through [`BaseImages`]),
//!   so they see `--build-arg`s and the stage sees what they declare.
//! - `RUN --mount` options become typed mounts (`mounts`), and `--platform`
//!   and `FROM --platform` typed platforms: an invalid one fails here, at
//!   its line, before anything runs.
//! - `COPY --from` and `RUN --mount from=` must be literal (BuildKit refuses
//!   variables there). A number is a stage index, a stage name (any case)
//!   that stage, and anything else an image reference, as BuildKit treats
//!   it. A referenced stage must come earlier in the Dockerfile.
//! - Only the stages the target needs must plan cleanly: an expansion error
//!   in another stage leaves that stage with the steps planned before it,
//!   since docker never evaluates stages it does not build.

mod args;
pub mod mounts;
mod paths;
mod ports;
mod print;
mod stages;
mod steps;
pub mod types;

use std::collections::HashMap;

use crate::dockerfile::ast::{Command, Instruction};
use crate::dockerfile::shell::ShellLex;
use crate::dockerfile::{Dockerfile, DockerfileError};
use crate::image::config::ContainerConfig;

use crate::image::platform::Platform;
use args::{is_platform_arg, is_proxy_arg, platform_vars, BuildArgs, StageVars, Vars};
pub use paths::join_workdir;
use stages::{at, resolve_ref, StageRef, StageSource};
use steps::{copy_from_value, mount_from_value, plan_stage, StageContext, FROM_HELP};
pub use types::*;

/// What the command line adds to the Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `--build-arg K=V`, or `K` with the value the caller found in its
    /// environment (`None` when it found none: the arg then sets nothing).
    pub build_args: Vec<(String, Option<String>)>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// Target platform, e.g. `linux/amd64` (default: the host's).
    pub platform: Option<String>,
}

/// What the planner reads of base images, through the caller (the
/// executor's side provides it: `crate::exec::bases`). Planning is then
/// parse → plan (asking this for the bases of the stages the target
/// needs) → execute.
pub trait BaseImages {
    /// The config of image `reference` for `platform` (`FROM --platform`,
    /// else `--platform`; `None` prefers the host's). `None` when it cannot
    /// be read now: the stage is planned without the image's env and
    /// triggers, and the executor, which needs the image too, reports why
    /// at the FROM line.
    fn config(&self, reference: &str, platform: Option<&Platform>) -> Option<ContainerConfig>;
}

impl<F: Fn(&str, Option<&Platform>) -> Option<ContainerConfig>> BaseImages for F {
    fn config(&self, reference: &str, platform: Option<&Platform>) -> Option<ContainerConfig> {
        self(reference, platform)
    }
}

/// Plans the build. A needed stage FROM an image gets the image's env (for
/// expansion and RUN) and its ONBUILD triggers as its first steps, planned
/// in the stage as BuildKit dispatches them (`--build-arg`s, meta args and
/// the image's env apply; an ARG or ENV a trigger declares is seen by the
/// stage's own instructions); triggers may need the stages they name
/// (`COPY --from`).
pub fn plan(df: &Dockerfile, opts: &PlanOptions, bases: &dyn BaseImages) -> Result<BuildPlan, DockerfileError> {
    let lex = ShellLex::new(df.directives.escape);
    let build_args = BuildArgs::new(&opts.build_args);
    let (meta, sources) = stages::split(df)?;

    let platform = opts
        .platform
        .as_deref()
        .map(|text| {
            Platform::parse(text).map_err(|_| {
                at(df, sources[0].from.span, format!("invalid target platform {text:?}"))
                    .with_help("a platform is os/arch or os/arch/variant, e.g. linux/arm64")
            })
        })
        .transpose()?;
    let target_platform = platform.clone().unwrap_or_else(Platform::host);
    let platform_args = platform_vars(&target_platform, &Platform::host(), &build_args);
    let (globals, meta_declared) = meta_args(df, meta, &lex, &build_args, platform_args)?;

    let headers = stages::headers(df, &sources, &globals, &lex)?;
    let names: Vec<Option<String>> = headers.iter().map(|h| h.name.clone()).collect();
    let target = stages::target(df, &names, opts.target.as_deref(), sources[sources.len() - 1].from.span)?;

    // Base images are looked up only for stages the target needs; their
    // triggers can make more stages needed, so this repeats until no needed
    // image stage is left unread (BuildKit's resolveReachableStages loop).
    let mut read: HashMap<usize, Option<ContainerConfig>> = HashMap::new();
    let mut image_triggers: Vec<Vec<Instruction>> = vec![Vec::new(); sources.len()];
    let (deps, needed) = loop {
        let bodies = stage_bodies(&sources, &headers, &image_triggers);
        let deps = bodies
            .iter()
            .enumerate()
            .map(|(index, body)| stage_deps(df, &lex, &names, index, &headers[index].base, body))
            .collect::<Result<Vec<_>, _>>()?;
        let needed = stages::needed(&deps, target);
        let unread: Vec<usize> = needed
            .iter()
            .copied()
            .filter(|i| matches!(headers[*i].base, Base::Image(_)) && !read.contains_key(i))
            .collect();
        if unread.is_empty() {
            break (deps, needed);
        }
        for index in unread {
            let Base::Image(image) = &headers[index].base else { continue };
            let config = bases.config(image, headers[index].platform.as_ref().or(platform.as_ref()));
            if let Some(triggers) = config.as_ref().and_then(|c| c.on_build.as_ref()) {
                image_triggers[index] = parse_triggers(df, triggers, &headers[index])?;
            }
            read.insert(index, config);
        }
    };
    let bodies = stage_bodies(&sources, &headers, &image_triggers);

    let mut planned: Vec<Stage> = Vec::with_capacity(sources.len());
    let mut final_vars: Vec<StageVars> = Vec::with_capacity(sources.len());
    let mut declared: Vec<String> = meta_declared;
    for (index, header) in headers.into_iter().enumerate() {
        let is_needed = needed.contains(&index);
        let start = match &header.base {
            Base::Stage(parent) => final_vars[*parent].clone(),
            Base::Scratch => StageVars::from_env(Vars::default()),
            Base::Image(_) => {
                let env = read.get(&index).and_then(|c| c.as_ref()).and_then(|c| c.env.as_deref());
                StageVars::from_env(Vars::from_env_strings(env.unwrap_or_default()))
            }
        };
        let ctx = StageContext { df, lex, build_args: &build_args, globals: &globals, names: &names, index };
        let (steps, vars) = match plan_stage(&ctx, start.clone(), &bodies[index]) {
            Ok(stage) => {
                if is_needed {
                    declared.extend(stage.declared);
                }
                (stage.steps, stage.vars)
            }
            Err(err) if is_needed => return Err(err),
            Err(_) => (Vec::new(), start),
        };
        final_vars.push(vars);
        planned.push(Stage {
            index,
            name: header.name,
            base: header.base,
            platform: header.platform,
            span: header.span,
            original: header.original,
            steps,
            deps: deps[index].clone(),
            base_read: read.get(&index).is_some_and(Option::is_some),
        });
    }

    let unused_build_args = build_args
        .names()
        .iter()
        .filter(|name| !declared.contains(name) && !is_proxy_arg(name) && !is_platform_arg(name))
        .cloned()
        .collect();
    Ok(BuildPlan { file: df.path.clone(), platform, stages: planned, target, needed, unused_build_args })
}

/// The meta args: each one's value is its `--build-arg`, else its default
/// expanded with the args before it; declared without either, it keeps a
/// platform arg's value or stays unset. Returns the variables FROM lines
/// see and the declared names.
fn meta_args(
    df: &Dockerfile,
    meta: &[Instruction],
    lex: &ShellLex,
    build_args: &BuildArgs,
    mut vars: Vars,
) -> Result<(Vars, Vec<String>), DockerfileError> {
    let mut declared = Vec::new();
    for ins in meta {
        let Command::Arg(decls) = &ins.command else { continue };
        for decl in decls {
            declared.push(decl.name.clone());
            let value = match (build_args.get(&decl.name), &decl.default) {
                (Some(value), _) => value.to_string(),
                (None, Some(raw)) => lex
                    .process_word(raw, &vars)
                    .map_err(|err| at(df, ins.span, format!("expand the default of ARG {}: {err}", decl.name)))?,
                (None, None) => continue,
            };
            vars.set(&decl.name, &value);
        }
    }
    Ok((vars, declared))
}

/// Each stage's instructions: its base's triggers (a stage base's ONBUILDs,
/// or an image base's parsed triggers), then its own.
fn stage_bodies<'a>(
    sources: &[StageSource<'a>],
    headers: &[stages::Header],
    image_triggers: &'a [Vec<Instruction>],
) -> Vec<Vec<&'a Instruction>> {
    (0..sources.len())
        .map(|index| {
            let inherited = match headers[index].base {
                Base::Stage(parent) => triggers(&sources[parent]),
                _ => image_triggers[index].iter().collect(),
            };
            inherited.into_iter().chain(sources[index].body.iter()).collect()
        })
        .collect()
}

/// An image's ONBUILD triggers as instructions; errors point at the FROM
/// that pulled them in, whose position every trigger takes.
fn parse_triggers(
    df: &Dockerfile,
    triggers: &[String],
    header: &stages::Header,
) -> Result<Vec<Instruction>, DockerfileError> {
    if triggers.is_empty() {
        return Ok(Vec::new());
    }
    let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
    let name = format!("{} (ONBUILD of {})", df.path, header.original);
    let parsed = crate::dockerfile::parse(&text, &name).map_err(|err| {
        at(df, header.span, format!("the base image's ONBUILD triggers do not parse: {}", err.message))
            .with_help("rebuild the base image with valid ONBUILD instructions, or use another base")
    })?;
    let mut out = Vec::with_capacity(parsed.instructions.len());
    for mut ins in parsed.instructions.into_iter().skip(1) {
        if matches!(ins.command, Command::From { .. } | Command::Onbuild(_) | Command::Maintainer(_)) {
            return Err(at(
                df,
                header.span,
                format!("the base image has an ONBUILD trigger that cannot run: {}", ins.original),
            )
            .with_help("ONBUILD cannot trigger FROM, ONBUILD or MAINTAINER"));
        }
        ins.span = header.span;
        out.push(ins);
    }
    Ok(out)
}

/// The instructions a stage's ONBUILDs trigger in a stage built FROM it.
fn triggers<'a>(parent: &StageSource<'a>) -> Vec<&'a Instruction> {
    parent
        .body
        .iter()
        .filter_map(|ins| match &ins.command {
            Command::Onbuild(trigger) => Some(trigger.as_ref()),
            _ => None,
        })
        .collect()
}

/// The earlier stages a stage reads: its base, `COPY --from` and
/// `RUN --mount from=`; ascending, no duplicates.
fn stage_deps(
    df: &Dockerfile,
    lex: &ShellLex,
    names: &[Option<String>],
    index: usize,
    base: &Base,
    body: &[&Instruction],
) -> Result<Vec<usize>, DockerfileError> {
    let mut deps = Vec::new();
    if let Base::Stage(parent) = base {
        deps.push(*parent);
    }
    for ins in body {
        let refs: Vec<(&str, &str, Result<String, String>)> = match &ins.command {
            Command::Copy(copy) | Command::Add(copy) => {
                copy.from.iter().map(|raw| ("copy from", raw.as_str(), copy_from_value(lex, raw))).collect()
            }
            Command::Run(run) => run
                .mounts
                .iter()
                .flat_map(|m| m.options.iter())
                .filter(|(key, _)| key.eq_ignore_ascii_case("from"))
                .filter_map(|(_, value)| value.as_deref())
                .map(|raw| ("mount from", raw, mount_from_value(lex, raw)))
                .collect(),
            _ => Vec::new(),
        };
        for (verb, raw, value) in refs {
            let value = value.map_err(|msg| at(df, ins.span, format!("--from={raw}: {msg}")).with_help(FROM_HELP))?;
            match resolve_ref(&value, names, index, verb) {
                Ok(StageRef::Stage(dep)) => deps.push(dep),
                Ok(StageRef::Image(_)) => {}
                Err((message, help)) => return Err(at(df, ins.span, message).with_help(help)),
            }
        }
    }
    deps.sort_unstable();
    deps.dedup();
    Ok(deps)
}

#[cfg(test)]
mod tests;
