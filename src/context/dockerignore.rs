//! The .dockerignore matcher, with docker's semantics (moby/patternmatcher
//! and its `ignorefile` reader): the last matching pattern wins, `!` marks
//! an exception, a pattern that matches a parent directory matches every
//! path below it, `**` spans any number of directories.
//!
//! Each pattern is classified the way patternmatcher does it (exact, prefix,
//! suffix or regex). The classes are not only a speed-up: a suffix pattern
//! such as `**.go` is a plain string-suffix test, which matches `a/b.go`,
//! while its regex form would not, and docker's behaviour is the former.

use regex::Regex;

use super::glob::{self, ComponentGlob, GlobError};

/// Why a .dockerignore could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("line {line}: illegal exclusion pattern \"!\"")]
    LoneExclamation { line: usize },
    #[error("line {line}: bad pattern {pattern:?}")]
    BadPattern {
        line: usize,
        pattern: String,
        #[source]
        source: GlobError,
    },
}

/// A parsed .dockerignore.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    exception: bool,
    matcher: Matcher,
    /// Per-component globs, used to decide whether an exception could
    /// re-include something below a directory. `None` means "could match
    /// anything here" (a `**` component, or one that does not stand alone).
    components: Vec<Option<ComponentGlob>>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

impl DockerIgnore {
    /// Parses .dockerignore text the way docker's CLI reads it: a line whose
    /// first character is `#` is a comment, surrounding whitespace is
    /// trimmed, blank lines are skipped, a pattern is cleaned like Go's
    /// `filepath.Clean` and a leading `/` is dropped.
    pub fn parse(text: &str) -> Result<DockerIgnore, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            if raw.starts_with('#') {
                continue;
            }
            let mut pattern = raw.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            if pattern.is_empty() {
                return Err(IgnoreError::LoneExclamation { line });
            }
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let bad = |source| IgnoreError::BadPattern { line, pattern: raw.trim().to_string(), source };
            let matcher = compile(&cleaned).map_err(bad)?;
            let components = cleaned.split('/').map(component_glob).collect();
            patterns.push(Pattern { exception, matcher, components });
        }
        Ok(DockerIgnore { patterns })
    }

    /// Parses a .dockerignore as read from disk. Docker takes it as bytes, so a pattern may hold a name
    /// that is not UTF-8 and then matches that name's exact bytes (see [`glob::match_text`]).
    pub fn parse_bytes(bytes: &[u8]) -> Result<DockerIgnore, IgnoreError> {
        DockerIgnore::parse(&glob::match_text(bytes))
    }

    /// A matcher that excludes nothing.
    pub fn empty() -> DockerIgnore {
        DockerIgnore::default()
    }

    /// True when no pattern is set: nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True if `rel_path` (relative to the context root, `/`-separated) is
    /// excluded: the last pattern that matches it or one of its parent
    /// directories decides. The context root itself is never excluded. The path is bytes: a name need
    /// not be UTF-8.
    pub fn matches(&self, rel_path: impl AsRef<[u8]>) -> bool {
        let text = glob::match_text(rel_path.as_ref());
        let path = clean(text.trim_start_matches('/'));
        if path == "." || path.is_empty() || path == "/" {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(cut) => {
                let parent = &path[..cut];
                parent.match_indices('/').map(|(i, _)| &parent[..i]).chain(std::iter::once(parent)).collect()
            }
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that could flip the current verdict matters.
            if pattern.exception != excluded {
                continue;
            }
            let hit = pattern.matcher.is_match(&path) || parents.iter().any(|p| pattern.matcher.is_match(p));
            if hit {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// True if some pattern is a `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// True if some `!` exception could match a path below `rel_dir`, so a
    /// walker must still descend into that directory even when it is
    /// excluded. Conservative: a `**` component answers yes.
    pub fn may_include_under(&self, rel_dir: impl AsRef<[u8]>) -> bool {
        let text = glob::match_text(rel_dir.as_ref());
        let dir = clean(text.trim_start_matches('/'));
        let dir_parts: Vec<&str> = if dir == "." || dir.is_empty() { Vec::new() } else { dir.split('/').collect() };
        self.patterns.iter().filter(|p| p.exception).any(|p| could_match_below(&p.components, &dir_parts))
    }
}

/// Walks the pattern's components alongside the directory's. Running out of
/// pattern first means it names the directory or a parent, which re-includes
/// everything below; running out of directory first means a deeper path
/// could still match.
fn could_match_below(components: &[Option<ComponentGlob>], dir: &[&str]) -> bool {
    for (i, name) in dir.iter().enumerate() {
        match components.get(i) {
            None => return true,
            Some(None) => return true,
            Some(Some(glob)) if glob.is_match(name) => {}
            Some(Some(_)) => return false,
        }
    }
    true
}

fn component_glob(part: &str) -> Option<ComponentGlob> {
    if part.contains("**") {
        return None;
    }
    ComponentGlob::new(part).ok()
}

impl Matcher {
    fn is_match(&self, path: &str) -> bool {
        match self {
            Matcher::Exact(p) => path == p,
            Matcher::Prefix(p) => path.starts_with(p.as_str()),
            Matcher::Suffix(s) => path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..]),
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Translates a cleaned pattern the way patternmatcher's `compile` does,
/// including how it picks the match kind.
fn compile(pattern: &str) -> Result<Matcher, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if step == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => {
                let next = *chars.get(i).ok_or(GlobError::TrailingBackslash)?;
                re.push_str(&glob::lit(next));
                i += 1;
                kind = Kind::Regex;
            }
            '[' => {
                let (text, next) = glob::class(&chars, i)?;
                re.push_str(&text);
                i = next;
                kind = Kind::Regex;
            }
            ']' => {
                re.push_str(&glob::lit(']'));
                kind = Kind::Regex;
            }
            other => re.push_str(&glob::lit(other)),
        }
        step += 1;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_string()),
        Kind::Prefix => Matcher::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).to_string()),
        Kind::Suffix => Matcher::Suffix(pattern.strip_prefix("**").unwrap_or(pattern).to_string()),
        Kind::Regex => {
            re.push('$');
            Matcher::Regex(Regex::new(&re).map_err(|e| GlobError::Regex(e.to_string()))?)
        }
    })
}

/// Go's `path.Clean`: collapses slashes, drops `.` elements, resolves `..`
/// lexically (keeping leading `..` of a relative path), and returns "." for
/// an empty result.
pub(crate) fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests;
