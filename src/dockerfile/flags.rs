//! Instruction flags: the `--name[=value]` words right after the keyword.
//!
//! Extraction is shared by every instruction (so `CMD --x` is an unknown flag,
//! as in docker, and `--` ends the flags); each instruction then declares which
//! flags it takes and of what kind.

use super::error::DockerfileError;
use super::lexer::Logical;

/// A flag as written, quotes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawFlag {
    pub name: String,
    /// `None` for a bare `--name`.
    pub value: Option<String>,
    /// Byte offset of the leading `--` in the logical line.
    pub offset: usize,
}

/// Splits leading flag words off `text` (which starts at byte `base` of the
/// logical line). Returns the flags and the offset within `text` where the
/// remaining arguments begin.
pub(crate) fn extract(text: &str, base: usize) -> (Vec<RawFlag>, usize) {
    let mut flags = Vec::new();
    let bytes = text.as_bytes();
    let mut pos = 0;
    loop {
        while pos < text.len() && text[pos..].starts_with(char::is_whitespace) {
            pos += text[pos..].chars().next().map_or(1, char::len_utf8);
        }
        if !(bytes.get(pos) == Some(&b'-') && bytes.get(pos + 1) == Some(&b'-')) {
            return (flags, pos);
        }
        let start = pos;
        let (word, end) = read_flag_word(text, pos);
        pos = end;
        if word == "--" {
            return (flags, pos);
        }
        let body = &word[2..];
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        flags.push(RawFlag { name, value, offset: base + start });
    }
}

/// Reads one word starting at `pos`: quotes group and are removed, `\`
/// escapes the next character. Returns the word and the offset after it.
fn read_flag_word(text: &str, pos: usize) -> (String, usize) {
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text[pos..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            None if c.is_whitespace() => return (word, pos + i),
            None if c == '\'' || c == '"' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ if c == '\\' => {
                if let Some((_, next)) = chars.next() {
                    word.push(next);
                }
            }
            _ => word.push(c),
        }
    }
    (word, text.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--name` or `--name=true|false`.
    Bool,
    /// `--name=value`, at most once.
    Str,
    /// `--name=value`, repeatable.
    Strs,
}

/// The flags one instruction was given, checked against what it takes.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: Vec<(String, String, usize)>,
}

impl Flags {
    /// Checks `raw` against `spec` for `keyword`. The logical line supplies
    /// positions for errors.
    pub fn check(
        path: &str,
        line: &Logical,
        keyword: &str,
        spec: &[(&str, Kind)],
        raw: &[RawFlag],
    ) -> Result<Flags, DockerfileError> {
        let mut flags = Flags::default();
        for flag in raw {
            let pos = line.pos_at(flag.offset);
            let err = |message: String| DockerfileError::new(path, pos.line, pos.column, message);
            let Some(&(_, kind)) = spec.iter().find(|(n, _)| *n == flag.name) else {
                let mut e = err(format!("unknown flag --{} for {keyword}", flag.name));
                e.help = Some(unknown_flag_help(keyword, &flag.name, spec));
                return Err(e);
            };
            if kind != Kind::Strs && flags.values.iter().any(|(n, _, _)| *n == flag.name) {
                return Err(
                    err(format!("duplicate flag --{} for {keyword}", flag.name)).with_help("give the flag only once")
                );
            }
            let value = match (kind, &flag.value) {
                (Kind::Bool, None) => "true".to_string(),
                (Kind::Bool, Some(v)) if v.is_empty() => {
                    return Err(err(format!("missing a value on flag --{} of {keyword}", flag.name))
                        .with_help(format!("write --{0}, --{0}=true or --{0}=false", flag.name)));
                }
                (Kind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => {
                        return Err(err(format!(
                            "expecting a boolean value for flag --{} of {keyword}, not {v:?}",
                            flag.name
                        ))
                        .with_help("use true or false"));
                    }
                },
                (_, None) => {
                    return Err(err(format!("missing a value on flag --{} of {keyword}", flag.name))
                        .with_help(format!("write it as --{}=<value>", flag.name)));
                }
                (_, Some(v)) => v.clone(),
            };
            flags.values.push((flag.name.clone(), value, flag.offset));
        }
        Ok(flags)
    }

    /// A single-valued flag; an empty value counts as not given, as in docker.
    pub fn string(&self, name: &str) -> Option<(String, usize)> {
        self.values.iter().find(|(n, v, _)| n == name && !v.is_empty()).map(|(_, v, o)| (v.clone(), *o))
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        self.values.iter().find(|(n, _, _)| n == name).map(|(_, v, _)| v == "true")
    }

    /// Every value of a repeatable flag, in order, with its offset.
    pub fn strings(&self, name: &str) -> Vec<(String, usize)> {
        self.values.iter().filter(|(n, _, _)| n == name).map(|(_, v, o)| (v.clone(), *o)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

fn unknown_flag_help(keyword: &str, name: &str, spec: &[(&str, Kind)]) -> String {
    if spec.is_empty() {
        return format!("{keyword} takes no flags");
    }
    let close = spec
        .iter()
        .map(|(n, _)| (strsim::damerau_levenshtein(n, name), *n))
        .filter(|(d, n)| *d <= 2 && *d * 2 <= name.len().max(n.len()))
        .min();
    if let Some((_, n)) = close {
        return format!("did you mean --{n}?");
    }
    let names: Vec<String> = spec.iter().map(|(n, _)| format!("--{n}")).collect();
    format!("{keyword} takes {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str) -> (Vec<(String, Option<String>, usize)>, String) {
        let (f, at) = extract(text, 0);
        (f.into_iter().map(|f| (f.name, f.value, f.offset)).collect(), text[at..].to_string())
    }

    #[test]
    fn extracts_leading_flags() {
        let (f, rest) = flags("--from=a --link  src dst");
        assert_eq!(f, vec![("from".into(), Some("a".into()), 0), ("link".into(), None, 9)]);
        assert_eq!(rest, "src dst");
    }

    #[test]
    fn quotes_are_removed_and_double_dash_ends_flags() {
        let (f, rest) = flags(r#"--chown="a b" -- --not-a-flag"#);
        assert_eq!(f, vec![("chown".into(), Some("a b".into()), 0)]);
        assert_eq!(rest.trim(), "--not-a-flag");
    }

    #[test]
    fn no_flags() {
        let (f, rest) = flags("echo --x");
        assert!(f.is_empty());
        assert_eq!(rest, "echo --x");
        let (f, rest) = flags("-x");
        assert!(f.is_empty());
        assert_eq!(rest, "-x");
    }

    #[test]
    fn checking() {
        let line = Logical::single("COPY --link=FALSE --exclude=a --exclude=b --from=x s d");
        let (raw, _) = extract(&line.text[5..], 5);
        let spec = [("link", Kind::Bool), ("exclude", Kind::Strs), ("from", Kind::Str)];
        let f = Flags::check("D", &line, "COPY", &spec, &raw).unwrap();
        assert_eq!(f.bool("link"), Some(false));
        assert_eq!(f.strings("exclude").into_iter().map(|(v, _)| v).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(f.string("from"), Some(("x".to_string(), 42)));
    }

    #[test]
    fn check_errors_point_at_the_flag() {
        let line = Logical::single("COPY --from=a --chwon=1 s d");
        let (raw, _) = extract(&line.text[5..], 5);
        let spec = [("from", Kind::Str), ("chown", Kind::Str)];
        let e = Flags::check("D", &line, "COPY", &spec, &raw).unwrap_err();
        assert_eq!(e.column, 15);
        assert!(e.message.contains("--chwon") && e.message.contains("COPY"));
        assert_eq!(e.help.as_deref(), Some("did you mean --chown?"));
    }
}
