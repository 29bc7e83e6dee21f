//! Stages: splitting the Dockerfile at FROM, expanding FROM lines with the
//! meta args, stage names, references between stages and the target's needs.

use std::collections::HashMap;

use crate::dockerfile::ast::{Command, Instruction, Span};
use crate::dockerfile::shell::ShellLex;
use crate::dockerfile::{Dockerfile, DockerfileError};

use super::args::Vars;
use super::types::Base;
use crate::image::platform::Platform;

/// One stage as written: its FROM and the instructions up to the next FROM.
pub(crate) struct StageSource<'a> {
    pub from: &'a Instruction,
    pub body: &'a [Instruction],
}

/// The instructions before the first FROM (only ARGs are allowed there)
/// and the stages.
pub(crate) fn split(df: &Dockerfile) -> Result<(&[Instruction], Vec<StageSource<'_>>), DockerfileError> {
    let starts: Vec<usize> = df
        .instructions
        .iter()
        .enumerate()
        .filter(|(_, ins)| matches!(ins.command, Command::From { .. }))
        .map(|(i, _)| i)
        .collect();
    let first = starts.first().copied().unwrap_or(df.instructions.len());
    let meta = &df.instructions[..first];
    if let Some(stray) = meta.iter().find(|ins| !matches!(ins.command, Command::Arg(_))) {
        return Err(at(df, stray.span, format!("{} before the first FROM", stray.command.keyword()))
            .with_help("only ARG may come before the first FROM; start a stage with FROM first"));
    }
    if starts.is_empty() {
        let span = df.instructions.last().map(|ins| ins.span).unwrap_or(Span { line: 1, column: 1, end_line: 1 });
        return Err(at(df, span, "the Dockerfile has no FROM instruction, so there is no stage to build")
            .with_help("add a FROM line, e.g. `FROM scratch` or `FROM debian:bookworm`"));
    }
    let stages = starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(df.instructions.len());
            StageSource { from: &df.instructions[start], body: &df.instructions[start + 1..end] }
        })
        .collect();
    Ok((meta, stages))
}

/// A stage's FROM line after expansion.
pub(crate) struct Header {
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<Platform>,
    pub span: Span,
    pub original: String,
}

/// Expands every FROM with the meta args and resolves its base. A base that
/// names an earlier stage is that stage; later stages cannot be bases.
pub(crate) fn headers(
    df: &Dockerfile,
    stages: &[StageSource<'_>],
    globals: &Vars,
    lex: &ShellLex,
) -> Result<Vec<Header>, DockerfileError> {
    let env = globals;
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Header> = Vec::with_capacity(stages.len());
    for (index, stage) in stages.iter().enumerate() {
        let ins = stage.from;
        let Command::From { image, alias, platform } = &ins.command else {
            return Err(at(df, ins.span, "expected a FROM instruction here"));
        };
        let expanded =
            lex.process_word(image, env).map_err(|err| at(df, ins.span, format!("expand the FROM image: {err}")))?;
        if expanded.is_empty() {
            return Err(at(df, ins.span, format!("base name ({image}) should not be blank"))
                .with_help("declare the variable with ARG before the first FROM or pass it with --build-arg"));
        }
        let platform = platform.as_deref().map(|raw| expand_platform(df, ins.span, raw, lex, env)).transpose()?;
        let name = alias.as_deref().map(|alias| stage_name(df, ins.span, alias, &by_name)).transpose()?;

        let base = if expanded.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else if let Some(&parent) = by_name.get(&expanded.to_ascii_lowercase()) {
            Base::Stage(parent)
        } else {
            Base::Image(expanded.clone())
        };
        let mut original = String::from("FROM");
        if let Some(platform) = &platform {
            original.push_str(&format!(" --platform={platform}"));
        }
        original.push(' ');
        original.push_str(&expanded);
        if let Some(name) = &name {
            original.push_str(&format!(" AS {name}"));
            by_name.insert(name.clone(), index);
        }
        out.push(Header { name, base, platform, span: ins.span, original });
    }
    Ok(out)
}

fn expand_platform(
    df: &Dockerfile,
    span: Span,
    raw: &str,
    lex: &ShellLex,
    env: &Vars,
) -> Result<Platform, DockerfileError> {
    let value =
        lex.process_word(raw, env).map_err(|err| at(df, span, format!("expand the FROM --platform value: {err}")))?;
    if value.is_empty() {
        return Err(at(df, span, format!("empty platform value from expression {raw}"))
            .with_help("use e.g. --platform=$BUILDPLATFORM or --platform=linux/arm64"));
    }
    match Platform::parse(&value) {
        Ok(platform) => Ok(platform),
        Err(_) => Err(at(df, span, format!("failed to parse platform {value:?}"))
            .with_help("a platform is os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7")),
    }
}

/// Lower-cases and checks a stage name the way BuildKit does.
fn stage_name(
    df: &Dockerfile,
    span: Span,
    alias: &str,
    seen: &HashMap<String, usize>,
) -> Result<String, DockerfileError> {
    let name = alias.to_ascii_lowercase();
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(at(df, span, format!("invalid name for build stage: {alias:?}"))
            .with_help("a stage name starts with a letter and has only letters, digits, '-', '_' and '.'"));
    }
    if let Some(&earlier) = seen.get(&name) {
        return Err(at(df, span, format!("duplicate stage name {name:?} (stage {earlier} already uses it)"))
            .with_help("give each stage its own name after AS"));
    }
    Ok(name)
}

/// What a `COPY --from` or `RUN --mount from=` value refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StageRef {
    Stage(usize),
    Image(String),
}

/// Resolves a `--from` value seen in stage `current`, as BuildKit does: a
/// number is a stage index (it must be in range); a stage name (any case)
/// is that stage; anything else is an image reference. The stage must come
/// before `current`. `verb` words the error ("copy from", "mount from").
pub(crate) fn resolve_ref(
    value: &str,
    names: &[Option<String>],
    current: usize,
    verb: &str,
) -> Result<StageRef, (String, String)> {
    let found = match value.parse::<i64>() {
        Ok(index) => match usize::try_from(index).ok().filter(|&i| i < names.len()) {
            Some(index) => index,
            None => {
                return Err((
                    format!("invalid stage index {index}"),
                    format!("this Dockerfile has stages 0 to {}", names.len().saturating_sub(1)),
                ))
            }
        },
        Err(_) => {
            let lower = value.to_ascii_lowercase();
            match names.iter().position(|name| name.as_deref() == Some(lower.as_str())) {
                Some(index) => index,
                None => return Ok(StageRef::Image(value.to_string())),
            }
        }
    };
    if found >= current {
        let here = stage_label(names, current);
        return Err((
            format!("cannot {verb} stage {value:?}, it needs to be defined before current stage {here:?}"),
            "move that stage above this one".to_string(),
        ));
    }
    Ok(StageRef::Stage(found))
}

/// `name` or BuildKit's `stage-N`.
pub(crate) fn stage_label(names: &[Option<String>], index: usize) -> String {
    names.get(index).cloned().flatten().unwrap_or_else(|| format!("stage-{index}"))
}

/// The stages `target` needs, itself included, in ascending index order.
/// Deps always point to earlier stages, so ascending order builds every
/// stage after the ones it needs.
pub(crate) fn needed(deps: &[Vec<usize>], target: usize) -> Vec<usize> {
    let mut seen = vec![false; deps.len()];
    let mut todo = vec![target];
    while let Some(index) = todo.pop() {
        if std::mem::replace(&mut seen[index], true) {
            continue;
        }
        todo.extend(deps[index].iter().copied().filter(|&d| !seen[d]));
    }
    (0..deps.len()).filter(|&i| seen[i]).collect()
}

/// The `--target` stage, or the last one.
pub(crate) fn target(
    df: &Dockerfile,
    names: &[Option<String>],
    wanted: Option<&str>,
    span: Span,
) -> Result<usize, DockerfileError> {
    let Some(wanted) = wanted else {
        return Ok(names.len() - 1);
    };
    let lower = wanted.to_ascii_lowercase();
    if let Some(index) = names.iter().position(|name| name.as_deref() == Some(lower.as_str())) {
        return Ok(index);
    }
    let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
    let help = if known.is_empty() {
        "this Dockerfile names no stages; name one with `FROM image AS name`".to_string()
    } else {
        let mut help = format!("stages with names: {}", known.join(", "));
        if let Some(close) = known.iter().find(|name| strsim::levenshtein(name, &lower) <= 2) {
            help = format!("did you mean {close:?}? {help}");
        }
        help
    };
    Err(at(df, span, format!("target stage {wanted:?} could not be found")).with_help(help))
}

pub(crate) fn at(df: &Dockerfile, span: Span, message: impl Into<String>) -> DockerfileError {
    DockerfileError::new(&df.path, span.line, span.column, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|n| n.map(str::to_string)).collect()
    }

    #[test]
    fn resolves_indexes_names_and_images() {
        let names = names(&[Some("build"), None, Some("test")]);
        assert_eq!(resolve_ref("0", &names, 2, "copy from"), Ok(StageRef::Stage(0)));
        assert_eq!(resolve_ref("BUILD", &names, 1, "copy from"), Ok(StageRef::Stage(0)));
        assert_eq!(resolve_ref("alpine:3", &names, 1, "copy from"), Ok(StageRef::Image("alpine:3".into())));
        assert_eq!(resolve_ref("nosuch", &names, 1, "copy from"), Ok(StageRef::Image("nosuch".into())));
        let (msg, _) = resolve_ref("5", &names, 2, "copy from").unwrap_err();
        assert_eq!(msg, "invalid stage index 5");
        let (msg, _) = resolve_ref("-1", &names, 2, "copy from").unwrap_err();
        assert_eq!(msg, "invalid stage index -1");
        let (msg, _) = resolve_ref("test", &names, 1, "copy from").unwrap_err();
        assert_eq!(msg, "cannot copy from stage \"test\", it needs to be defined before current stage \"stage-1\"");
        assert!(resolve_ref("1", &names, 1, "copy from").is_err(), "a stage cannot copy from itself");
    }

    #[test]
    fn needed_follows_deps_transitively() {
        let deps = vec![vec![], vec![0], vec![], vec![1], vec![2]];
        assert_eq!(needed(&deps, 3), [0, 1, 3]);
        assert_eq!(needed(&deps, 4), [2, 4]);
        assert_eq!(needed(&deps, 0), [0]);
    }
}
