//! One logical line to a typed instruction: keyword, flags, then the
//! argument grammar of that keyword. Heredoc bodies are not read here; the
//! instruction comes back with the delimiters it is waiting for.

use super::ast::*;
use super::error::DockerfileError;
use super::flags::{self, Flags, Kind};
use super::heredoc;
use super::lexer::{HeredocRequest, Logical};
use super::mount::parse_mount;
use super::words::{self, Json, Word};

mod healthcheck;

/// Every keyword the Dockerfile reference defines.
pub(crate) const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// An instruction whose heredoc bodies (if any) are still to be read, in the
/// order of `heredocs`.
#[derive(Debug)]
pub(crate) struct Built {
    pub instruction: Instruction,
    pub heredocs: Vec<HeredocRequest>,
}

/// The arguments after the flags, trimmed, with their offset in the line.
#[derive(Clone, Copy)]
struct Args<'a> {
    text: &'a str,
    offset: usize,
}

struct Cx<'a> {
    path: &'a str,
    line: &'a Logical,
    escape: char,
    keyword: &'static str,
    /// Offset of the keyword, where "missing argument" errors point.
    keyword_offset: usize,
}

impl Cx<'_> {
    fn err(&self, offset: usize, message: impl Into<String>) -> DockerfileError {
        let pos = self.line.pos_at(offset);
        DockerfileError::new(self.path, pos.line, pos.column, message)
    }

    fn missing(&self, what: &str) -> DockerfileError {
        self.err(self.keyword_offset, format!("{} requires {what}", self.keyword))
    }
}

/// Builds the instruction that starts at byte `start` of `line`.
pub(crate) fn build(path: &str, line: &Logical, start: usize, escape: char) -> Result<Built, DockerfileError> {
    let text = &line.text[start..];
    let keyword_len = text.find(words::is_blank).unwrap_or(text.len());
    let keyword_raw = &text[..keyword_len];
    let after_keyword = &text[keyword_len..];
    let rest_start =
        start + keyword_len + (after_keyword.len() - after_keyword.trim_start_matches(words::is_blank).len());
    let rest = &line.text[rest_start..];

    let upper = keyword_raw.to_ascii_uppercase();
    let Some(&keyword) = KEYWORDS.iter().find(|k| **k == upper) else {
        return Err(unknown_instruction(path, line, start, keyword_raw));
    };
    let cx = Cx { path, line, escape, keyword, keyword_offset: start };

    let original = match rest.trim_end() {
        "" => keyword.to_string(),
        r => format!("{keyword} {r}"),
    };
    let (raw_flags, args_rel) = flags::extract(rest, rest_start);
    let args_untrimmed = &rest[args_rel..];
    let args = Args {
        text: args_untrimmed.trim(),
        offset: rest_start + args_rel + (args_untrimmed.len() - args_untrimmed.trim_start().len()),
    };
    let check_flags = |spec: &[(&str, Kind)]| Flags::check(path, line, keyword, spec, &raw_flags);

    let mut heredocs = Vec::new();
    let command = match keyword {
        "FROM" => from(&cx, check_flags(&[("platform", Kind::Str)])?, args)?,
        "RUN" => {
            let spec = [("mount", Kind::Strs), ("network", Kind::Str), ("security", Kind::Str)];
            Command::Run(run(&cx, check_flags(&spec)?, args, &mut heredocs)?)
        }
        "CMD" => {
            check_flags(&[])?;
            Command::Cmd(cmd_line(&cx, args)?)
        }
        "ENTRYPOINT" => {
            check_flags(&[])?;
            Command::Entrypoint(cmd_line(&cx, args)?)
        }
        "SHELL" => {
            check_flags(&[])?;
            Command::Shell(shell(&cx, args)?)
        }
        "ENV" => {
            check_flags(&[])?;
            Command::Env(key_values(&cx, args)?)
        }
        "LABEL" => {
            check_flags(&[])?;
            Command::Label(key_values(&cx, args)?)
        }
        "ARG" => {
            check_flags(&[])?;
            Command::Arg(arg(&cx, args)?)
        }
        "WORKDIR" => {
            check_flags(&[])?;
            Command::Workdir(single(&cx, args)?)
        }
        "USER" => {
            check_flags(&[])?;
            Command::User(single(&cx, args)?)
        }
        "STOPSIGNAL" => {
            check_flags(&[])?;
            Command::StopSignal(single(&cx, args)?)
        }
        "MAINTAINER" => {
            check_flags(&[])?;
            Command::Maintainer(single(&cx, args)?)
        }
        "EXPOSE" => {
            check_flags(&[])?;
            let ports = words::split_whitespace(args.text, args.offset);
            if ports.is_empty() {
                return Err(cx.missing("at least one port"));
            }
            Command::Expose(ports.into_iter().map(|w| w.text).collect())
        }
        "VOLUME" => {
            check_flags(&[])?;
            Command::Volume(volume(&cx, args)?)
        }
        "COPY" => {
            let spec = [
                ("from", Kind::Str),
                ("chown", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("parents", Kind::Bool),
                ("exclude", Kind::Strs),
            ];
            Command::Copy(copy(&cx, check_flags(&spec)?, args, &mut heredocs)?)
        }
        "ADD" => {
            let spec = [
                ("chown", Kind::Str),
                ("chmod", Kind::Str),
                ("link", Kind::Bool),
                ("keep-git-dir", Kind::Bool),
                ("checksum", Kind::Str),
                ("unpack", Kind::Bool),
                ("exclude", Kind::Strs),
            ];
            Command::Add(copy(&cx, check_flags(&spec)?, args, &mut heredocs)?)
        }
        "HEALTHCHECK" => {
            let spec = [
                ("interval", Kind::Str),
                ("timeout", Kind::Str),
                ("start-period", Kind::Str),
                ("start-interval", Kind::Str),
                ("retries", Kind::Str),
            ];
            Command::Healthcheck(healthcheck::healthcheck(&cx, check_flags(&spec)?, args)?)
        }
        _ => {
            // ONBUILD, the only keyword left.
            check_flags(&[])?;
            let trigger = onbuild(&cx, args)?;
            heredocs = trigger.heredocs;
            Command::Onbuild(Box::new(trigger.instruction))
        }
    };

    let pos = line.pos_at(start);
    Ok(Built {
        instruction: Instruction {
            span: Span { line: pos.line, column: pos.column, end_line: line.end_line },
            original,
            command,
        },
        heredocs,
    })
}

fn unknown_instruction(path: &str, line: &Logical, start: usize, word: &str) -> DockerfileError {
    let pos = line.pos_at(start);
    let err = DockerfileError::new(path, pos.line, pos.column, format!("unknown instruction {word:?}"));
    let upper = word.to_ascii_uppercase();
    let close = KEYWORDS
        .iter()
        .map(|k| (strsim::damerau_levenshtein(k, &upper), *k))
        .filter(|(d, k)| *d <= 2 && *d * 2 <= upper.len().max(k.len()))
        .min();
    match close {
        Some((_, k)) => err.with_help(format!("did you mean {k:?}?")),
        None => err.with_help(format!("instructions are {}", KEYWORDS.join(", "))),
    }
}

fn from(cx: &Cx, flags: Flags, args: Args) -> Result<Command, DockerfileError> {
    let words = words::split_whitespace(args.text, args.offset);
    let (image, alias) = match words.as_slice() {
        [] => return Err(cx.missing("an image name").with_help("write FROM <image> [AS <name>]")),
        [image] => (image, None),
        [image, as_word, name] if as_word.text.eq_ignore_ascii_case("as") => (image, Some(name)),
        [_, extra, ..] => {
            return Err(cx
                .err(extra.offset, "FROM requires either one or three arguments")
                .with_help("write FROM <image> [AS <name>]"));
        }
    };
    if let Some(name) = alias {
        let lower = name.text.to_ascii_lowercase();
        let mut chars = lower.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(cx
                .err(name.offset, format!("invalid name for build stage: {:?}", name.text))
                .with_help("a stage name starts with a letter and holds only letters, digits, '-', '_' and '.'"));
        }
    }
    Ok(Command::From {
        image: image.text.clone(),
        alias: alias.map(|w| w.text.clone()),
        platform: flags.string("platform").map(|(v, _)| v),
    })
}

fn run(cx: &Cx, flags: Flags, args: Args, heredocs: &mut Vec<HeredocRequest>) -> Result<RunCmd, DockerfileError> {
    let mut mounts = Vec::new();
    for (value, offset) in flags.strings("mount") {
        let mount = parse_mount(&value).map_err(|m| cx.err(offset, format!("invalid --mount: {m}")))?;
        mounts.push(mount);
    }
    let network = match flags.string("network") {
        Some((v, offset)) if !matches!(v.as_str(), "default" | "none" | "host") => {
            return Err(cx
                .err(offset, format!("unsupported network mode {v:?}"))
                .with_help("use --network=default, --network=none or --network=host"));
        }
        other => other.map(|(v, _)| v),
    };
    let security = match flags.string("security") {
        Some((v, offset)) if !matches!(v.as_str(), "insecure" | "sandbox") => {
            return Err(cx
                .err(offset, format!("unsupported security mode {v:?}"))
                .with_help("use --security=sandbox or --security=insecure"));
        }
        other => other.map(|(v, _)| v),
    };
    let cmd = cmd_line(cx, args)?;
    if cmd == CmdLine::Exec(Vec::new()) {
        return Err(cx.missing("a command"));
    }
    let mut docs = Vec::new();
    if let CmdLine::Shell(_) = cmd {
        for word in words::shell_words_raw(args.text, args.offset).unwrap_or_default() {
            if let Some(marker) = heredoc::marker(&word.text) {
                docs.push(request(cx, &word, marker, heredocs));
            }
        }
    }
    Ok(RunCmd { cmd, heredocs: docs, mounts, network, security })
}

/// Records a heredoc the lexer must read and returns its (still empty) node.
fn request(cx: &Cx, word: &Word, marker: heredoc::Marker, requests: &mut Vec<HeredocRequest>) -> Heredoc {
    requests.push(HeredocRequest {
        name: marker.name.clone(),
        strip_tabs: marker.strip_tabs,
        pos: cx.line.pos_at(word.offset),
    });
    Heredoc { name: marker.name, content: String::new(), expand: marker.expand, strip_tabs: marker.strip_tabs }
}

/// RUN, CMD, ENTRYPOINT: a JSON array of strings, or else the text as shell
/// form (also when it starts with `[` but is not valid JSON).
fn cmd_line(cx: &Cx, args: Args) -> Result<CmdLine, DockerfileError> {
    match words::parse_json_array(args.text) {
        Json::Strings(v) => Ok(CmdLine::Exec(v)),
        Json::NotStrings => Err(not_strings(cx, args)),
        Json::NotArray if args.text.is_empty() => Err(cx.missing("a command")),
        Json::NotArray => Ok(CmdLine::Shell(args.text.to_string())),
    }
}

fn not_strings(cx: &Cx, args: Args) -> DockerfileError {
    cx.err(args.offset, "when using JSON array syntax, arrays must be comprised of strings only")
        .with_help("quote every element, e.g. [\"sleep\", \"10\"]")
}

fn shell(cx: &Cx, args: Args) -> Result<Vec<String>, DockerfileError> {
    match words::parse_json_array(args.text) {
        Json::Strings(v) if v.is_empty() => Err(cx.missing("at least one argument")),
        Json::Strings(v) => Ok(v),
        Json::NotStrings => Err(not_strings(cx, args)),
        Json::NotArray if args.text.is_empty() => Err(cx.missing("at least one argument")),
        Json::NotArray => Err(cx
            .err(args.offset, "SHELL requires the arguments to be in JSON form")
            .with_help("write it as a JSON array, e.g. SHELL [\"/bin/sh\", \"-c\"]")),
    }
}

/// ENV and LABEL: `k=v k2=v2` (quotes kept raw), or the legacy `k v...`
/// where everything after the key is one value.
fn key_values(cx: &Cx, args: Args) -> Result<Vec<KeyValue>, DockerfileError> {
    let words = words::split_keeping_quotes(args.text, cx.escape, args.offset);
    let Some(first) = words.first() else {
        return Err(cx.missing("at least one argument").with_help(format!("write {} <key>=<value>", cx.keyword)));
    };
    if !first.text.contains('=') {
        let key_len = args.text.find(words::is_blank).unwrap_or(args.text.len());
        let value = args.text[key_len..].trim_start_matches(words::is_blank);
        if value.is_empty() {
            return Err(cx
                .err(args.offset, format!("{} {} is missing a value", cx.keyword, &args.text[..key_len]))
                .with_help(format!("write {} {}=<value>", cx.keyword, &args.text[..key_len])));
        }
        return Ok(vec![KeyValue { key: args.text[..key_len].to_string(), value: value.to_string() }]);
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let Some((key, value)) = word.text.split_once('=') else {
            return Err(cx
                .err(word.offset, format!("can't find = in {:?}; it must be of the form name=value", word.text))
                .with_help(format!("write {0}={0}_value, or quote the value if it holds spaces", word.text)));
        };
        if key.is_empty() {
            return Err(cx.err(word.offset, format!("{} names can not be blank", cx.keyword)));
        }
        pairs.push(KeyValue { key: key.to_string(), value: value.to_string() });
    }
    Ok(pairs)
}

fn arg(cx: &Cx, args: Args) -> Result<Vec<ArgDecl>, DockerfileError> {
    let words = words::split_keeping_quotes(args.text, cx.escape, args.offset);
    if words.is_empty() {
        return Err(cx.missing("at least one argument").with_help("write ARG <name>[=<default>]"));
    }
    words
        .into_iter()
        .map(|word| match word.text.split_once('=') {
            Some(("", _)) => Err(cx.err(word.offset, "ARG names can not be blank")),
            Some((name, default)) => Ok(ArgDecl { name: name.to_string(), default: Some(default.to_string()) }),
            None => Ok(ArgDecl { name: word.text, default: None }),
        })
        .collect()
}

/// WORKDIR, USER, STOPSIGNAL, MAINTAINER: the whole argument text.
fn single(cx: &Cx, args: Args) -> Result<String, DockerfileError> {
    if args.text.is_empty() {
        return Err(cx.missing("exactly one argument"));
    }
    Ok(args.text.to_string())
}

fn volume(cx: &Cx, args: Args) -> Result<Vec<String>, DockerfileError> {
    let list = match words::parse_json_array(args.text) {
        Json::Strings(v) => v.into_iter().map(|s| s.trim().to_string()).collect(),
        Json::NotStrings => return Err(not_strings(cx, args)),
        Json::NotArray => words::split_whitespace(args.text, args.offset).into_iter().map(|w| w.text).collect(),
    };
    let list: Vec<String> = list;
    if list.is_empty() {
        return Err(cx.missing("at least one argument"));
    }
    if list.iter().any(String::is_empty) {
        return Err(cx.err(args.offset, "VOLUME specified can not be an empty string"));
    }
    Ok(list)
}

fn copy(cx: &Cx, flags: Flags, args: Args, requests: &mut Vec<HeredocRequest>) -> Result<CopyCmd, DockerfileError> {
    let (words, shell_form) = match words::parse_json_array(args.text) {
        Json::Strings(v) => (v.into_iter().map(|text| Word { text, offset: args.offset }).collect(), false),
        Json::NotStrings => return Err(not_strings(cx, args)),
        Json::NotArray => (words::split_whitespace(args.text, args.offset), true),
    };
    let Some((dest, sources)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
        let at = words.first().map_or(cx.keyword_offset, |w| w.offset);
        return Err(cx
            .err(at, format!("{} requires at least two arguments: a source and a destination", cx.keyword))
            .with_help(format!("write {} <src>... <dest>", cx.keyword)));
    };
    if shell_form && heredoc::marker(&dest.text).is_some() {
        return Err(cx.err(dest.offset, format!("{} cannot accept a heredoc as a destination", cx.keyword)));
    }
    let mut heredocs = Vec::new();
    let mut source_words = Vec::with_capacity(sources.len());
    for word in sources {
        match heredoc::marker(&word.text).filter(|_| shell_form) {
            Some(marker) => {
                source_words.push(format!("<<{}", marker.name));
                heredocs.push(request(cx, word, marker, requests));
            }
            None => source_words.push(word.text.clone()),
        }
    }
    let mut exclude = Vec::new();
    for (pattern, offset) in flags.strings("exclude") {
        if pattern.is_empty() {
            return Err(cx.err(offset, "missing a value on flag --exclude").with_help("write --exclude=<pattern>"));
        }
        exclude.push(pattern);
    }
    let is_add = cx.keyword == "ADD";
    let chown = flags.string("chown");
    // A value with variables is checked again once the planner expands it.
    if let Some((spec, offset)) = chown.as_ref().filter(|(spec, _)| !spec.contains('$')) {
        super::ids::check_chown(spec).map_err(|why| {
            cx.err(*offset, format!("invalid --chown: {why}"))
                .with_help("give a user and group that exist in the image, or ids from 0 to 4294967294")
        })?;
    }
    Ok(CopyCmd {
        sources: source_words,
        dest: dest.text.clone(),
        heredocs,
        from: flags.string("from").map(|(v, _)| v),
        chown: chown.map(|(v, _)| v),
        chmod: flags.string("chmod").map(|(v, _)| v),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude,
        checksum: flags.string("checksum").map(|(v, _)| v),
        keep_git_dir: if is_add { flags.bool("keep-git-dir") } else { None },
        unpack: if is_add { flags.bool("unpack") } else { None },
    })
}

fn onbuild(cx: &Cx, args: Args) -> Result<Built, DockerfileError> {
    if args.text.is_empty() {
        return Err(cx.missing("a trigger instruction").with_help("write ONBUILD <INSTRUCTION>"));
    }
    let trigger_len = args.text.find(words::is_blank).unwrap_or(args.text.len());
    let trigger = args.text[..trigger_len].to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => Err(cx.err(args.offset, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
        "FROM" | "MAINTAINER" => Err(cx.err(args.offset, format!("{trigger} isn't allowed as an ONBUILD trigger"))),
        _ => build(cx.path, cx.line, args.offset, cx.escape),
    }
}

/// Puts the bodies read by the lexer into the heredoc nodes, in request
/// order, and extends the span to the last body line.
pub(crate) fn fill_heredocs(instruction: &mut Instruction, bodies: &mut std::vec::IntoIter<String>, end_line: usize) {
    instruction.span.end_line = instruction.span.end_line.max(end_line);
    let docs = match &mut instruction.command {
        Command::Run(run) => &mut run.heredocs,
        Command::Copy(copy) | Command::Add(copy) => &mut copy.heredocs,
        Command::Onbuild(inner) => return fill_heredocs(inner, bodies, end_line),
        _ => return,
    };
    for doc in docs {
        doc.content = bodies.next().unwrap_or_default();
    }
}
