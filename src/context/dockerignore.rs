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
mod tests {
    use super::*;

    fn ig(lines: &[&str]) -> DockerIgnore {
        DockerIgnore::parse(&lines.join("\n")).unwrap_or_else(|e| panic!("{lines:?}: {e}"))
    }

    #[test]
    fn names_and_patterns_that_are_not_utf8_match_by_bytes() {
        let one = DockerIgnore::parse_bytes(b"x\xff\nd\xfe\n").unwrap();
        assert!(one.matches(b"x\xff"));
        assert!(!one.matches(b"x\xfe"), "a different byte is a different name");
        assert!(one.matches(b"d\xfe/inner") && !one.matches(b"d\xff/inner"));
        let glob = DockerIgnore::parse_bytes(b"x?\n!x\xfe\n**/*\xfd\n").unwrap();
        assert!(glob.matches(b"x\xff") && !glob.matches(b"x\xfe"));
        assert!(glob.matches(b"a/b/c\xfd") && !glob.matches(b"a/b/c\xfc"));
        assert!(glob.may_include_under(b"x\xfe") && !glob.may_include_under(b"x\xff"));
        // Patterns are text; the lossy U+FFFD spelling matches no raw byte.
        assert!(!ig(&["x\u{fffd}"]).matches(b"x\xff"));
    }

    #[test]
    fn clean_like_go() {
        let cases = [
            ("", "."),
            ("a/b/", "a/b"),
            ("./a//b", "a/b"),
            ("a/../b", "b"),
            ("a/../..", ".."),
            ("../x", "../x"),
            ("/../x", "/x"),
            ("/", "/"),
            ("a/./b/.", "a/b"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    // Docker's documented .dockerignore examples.
    #[test]
    fn documented_examples() {
        let cases: &[(&[&str], &str, bool)] = &[
            // `*/temp*`: one level below the root.
            (&["*/temp*"], "somedir/temporary.txt", true),
            (&["*/temp*"], "somedir/temp", true),
            (&["*/temp*"], "temp", false),
            (&["*/temp*"], "a/b/temp.txt", false),
            // `*/*/temp*`: two levels below.
            (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
            (&["*/*/temp*"], "somedir/temporary.txt", false),
            // `temp?`: one character.
            (&["temp?"], "tempa", true),
            (&["temp?"], "tempb", true),
            (&["temp?"], "temp", false),
            (&["temp?"], "tempab", false),
            (&["temp?"], "dir/tempa", false),
            // `**/*.go` at any depth, including the root.
            (&["**/*.go"], "main.go", true),
            (&["**/*.go"], "a/b/c/x.go", true),
            (&["**/*.go"], "a/b/c/x.rs", false),
            // Exceptions: last match wins.
            (&["*.md", "!README.md"], "README.md", false),
            (&["*.md", "!README.md"], "CHANGES.md", true),
            (&["*.md", "!README*.md", "README-secret.md"], "README-secret.md", true),
            (&["*.md", "!README*.md", "README-secret.md"], "README-public.md", false),
            (&["*.md", "README-secret.md", "!README*.md"], "README-secret.md", false),
            // An exception re-including a file inside an excluded directory.
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md"], "docs/other.md", true),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            // Leading `/` is the context root; trailing `/` is dropped.
            (&["/foo/bar"], "foo/bar", true),
            (&["foo/bar"], "foo/bar", true),
            (&["/foo/bar"], "x/foo/bar", false),
            (&["build/"], "build/out/x.o", true),
            (&["build/"], "build", true),
            // A parent directory match excludes everything below it.
            (&["node_modules"], "node_modules/a/b/c.js", true),
            (&["node_modules"], "src/node_modules/x", false),
            // `..` in patterns is cleaned lexically.
            (&["a/../b"], "b", true),
            (&["a/../b"], "a/b", false),
            (&["../outside"], "outside", false),
            (&["./x"], "x", true),
            // `.` is ignored in effect: the root is never excluded.
            (&["."], "x", false),
            (&["*"], ".", false),
        ];
        for (lines, path, want) in cases {
            assert_eq!(ig(lines).matches(path), *want, "patterns {lines:?} path {path:?}");
        }
    }

    #[test]
    fn parsing_rules() {
        let text = "\u{feff}# comment\n\n  spaced  \n/abs/path\n ! /inverted/abs/path\n #notcomment\r\nlast\n";
        let i = DockerIgnore::parse(text).unwrap();
        assert!(i.matches("spaced"));
        assert!(i.matches("abs/path"));
        assert!(i.matches("#notcomment"));
        assert!(!i.matches("comment"));
        assert!(!i.matches("# comment"));
        assert!(i.matches("last"));
        assert!(i.has_exceptions());
        assert!(!ig(&["a", "b"]).has_exceptions());
        assert!(matches!(DockerIgnore::parse("a\n!\n"), Err(IgnoreError::LoneExclamation { line: 2 })));
        assert!(DockerIgnore::parse("! ").is_err());
        assert!(DockerIgnore::parse("[").is_err());
        assert!(DockerIgnore::parse("a[").is_err());
        assert!(DockerIgnore::parse("[]a]").is_err());
        assert!(DockerIgnore::parse("[Local-Only]/").is_err());
        assert!(!DockerIgnore::empty().matches("anything"));
    }

    // moby/patternmatcher TestMatches, re-typed. `true` = excluded by
    // MatchesOrParentMatches (exact or inexact match).
    #[test]
    fn patternmatcher_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("**/dir", "dir", true),
            ("**/dir", "dir/file", true),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                true,
            ),
            ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true),
            ("a\\\\", "a\\", true),
            ("a\\*b", "a*b", true),
            // Suffix patterns are plain string suffixes, as in docker.
            ("**.go", "a/b.go", true),
            ("**file", "dir/myfile", true),
            // filepath.Match-derived cases.
            ("a*", "ab/c", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(ig(&[pattern]).matches(path), *want, "pattern {pattern:?} path {path:?}");
        }
        let multi: &[(&[&str], &str, bool)] = &[
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (&["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", true),
            (
                &["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (&["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false),
            (&["!fileutils.go", "*.go"], "fileutils.go", true),
            (&["*.go", "!fileutils.go"], "fileutils.go", false),
            (&["*"], "fileutils.go", true),
        ];
        for (lines, path, want) in multi {
            assert_eq!(ig(lines).matches(path), *want, "patterns {lines:?} path {path:?}");
        }
    }

    // Arbitrary pattern text must parse or fail cleanly, never panic.
    #[test]
    fn no_panics_on_noise() {
        let alphabet: Vec<char> = "*?[]^!-\\/.a b#\n☺".chars().collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let len = (next() % 12) as usize;
            let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            if let Ok(i) = DockerIgnore::parse(&text) {
                for path in ["a", "a/b", "a b/.a", "☺/a/b/c", "/", ""] {
                    let _ = i.matches(path);
                    let _ = i.may_include_under(path);
                }
            }
        }
    }

    #[test]
    fn descend_decisions() {
        let i = ig(&["docs", "!docs/api/README.md"]);
        assert!(i.may_include_under("docs"));
        assert!(i.may_include_under("docs/api"));
        assert!(!i.may_include_under("docs/other"));
        assert!(!i.may_include_under("src"));

        let i = ig(&["*", "!**/keep"]);
        assert!(i.may_include_under("anything/deep"));

        let i = ig(&["vendor", "!vendor/*/LICENSE"]);
        assert!(i.may_include_under("vendor"));
        assert!(i.may_include_under("vendor/lib"));
        assert!(!i.may_include_under("other"));

        // An exception naming the directory itself re-includes all below.
        let i = ig(&["a", "!a/b"]);
        assert!(i.may_include_under("a/b/c"));

        assert!(!ig(&["a"]).may_include_under("a"));
    }
}
