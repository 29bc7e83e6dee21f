//! Go `filepath.Match` syntax translated to `regex`: `*`, `?`, `[...]`
//! classes (with `^` negation and ranges) and `\` escapes. Both the
//! .dockerignore matcher and COPY source wildcards are built on it.
//!
//! Validation follows Go's rules, so a pattern Go rejects (`[]a]`, `[-x]`,
//! `[a-b-c]`, an unclosed class, a trailing `\`) is rejected here too.
//! Every literal is escaped for the regex engine, so characters that are
//! special to `regex` but not to Go's globs (`^`, `&&`, `~~`, nested `[`)
//! keep their literal meaning.
//!
//! Names are bytes and need not be UTF-8. They are matched through [`match_text`], which keeps valid UTF-8
//! as it is and turns each byte of an invalid sequence into a character of its own, so `?` and `*` take
//! such a byte as one character (as Go does, which sees it as one U+FFFD) and a pattern holding the same raw
//! byte matches exactly that byte: `x\xff` and `x\xfe` are different names to every pattern.

use std::borrow::Cow;

use regex::Regex;

/// Where [`match_text`] puts the bytes of invalid UTF-8: byte `b` becomes `U+10FF00 + b`, at the end of the
/// last private use plane, which no real file name uses.
const RAW_BYTE_BASE: u32 = 0x10_FF00;

/// The text a name or pattern is matched as: itself when it is UTF-8; otherwise its valid parts as they
/// are, and every byte of an invalid sequence as one private use character that stands for that byte
/// alone. Distinct byte strings give distinct texts, except for names that really hold those characters.
pub(crate) fn match_text(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(RAW_BYTE_BASE + u32::from(b)).expect("U+10FF00..U+10FFFF are characters"));
        }
    }
    Cow::Owned(out)
}

/// What is wrong with a glob pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("unclosed character class")]
    UnclosedClass,
    #[error("malformed character class")]
    BadClass,
    #[error("character range {lo}-{hi} is out of order")]
    RangeOrder { lo: char, hi: char },
    #[error("trailing backslash")]
    TrailingBackslash,
    #[error("pattern does not compile: {0}")]
    Regex(String),
}

/// One literal character, escaped for use in or out of a regex class.
pub(crate) fn lit(ch: char) -> String {
    regex::escape(ch.encode_utf8(&mut [0u8; 4]))
}

/// Reads a character class starting just after its `[` at `chars[start]`.
/// Returns the regex class text and the index just past the closing `]`.
/// Mirrors Go's `matchChunk`/`getEsc`: the class must hold at least one
/// range, `-` and `]` must be escaped where they would be ambiguous.
pub(crate) fn class(chars: &[char], start: usize) -> Result<(String, usize), GlobError> {
    let mut i = start;
    let mut out = String::from("[");
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut ranges = 0usize;
    loop {
        if chars.get(i) == Some(&']') && ranges > 0 {
            out.push(']');
            return Ok((out, i + 1));
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1)?;
            hi = h;
            i = next;
        }
        if lo > hi {
            return Err(GlobError::RangeOrder { lo, hi });
        }
        out.push_str(&lit(lo));
        if hi != lo {
            out.push('-');
            out.push_str(&lit(hi));
        }
        ranges += 1;
    }
}

/// One (possibly escaped) character inside a class, as Go's `getEsc`.
fn class_char(chars: &[char], mut i: usize) -> Result<(char, usize), GlobError> {
    match chars.get(i) {
        None => return Err(GlobError::UnclosedClass),
        Some('-') | Some(']') => return Err(GlobError::BadClass),
        Some('\\') => i += 1,
        Some(_) => {}
    }
    let ch = *chars.get(i).ok_or(GlobError::UnclosedClass)?;
    i += 1;
    if i >= chars.len() {
        return Err(GlobError::UnclosedClass);
    }
    Ok((ch, i))
}

/// True if `word` holds an unescaped `*`, `?` or `[` (BuildKit's
/// `containsWildcards`).
/// The matcher for one component of the source word `word`, or `None` when
/// the component is literal. Context and layer-view expansion share it.
pub fn source_component(word: &str, part: &str) -> Result<Option<ComponentGlob>, super::ContextError> {
    if !has_wildcards(part) {
        return Ok(None);
    }
    ComponentGlob::new(part)
        .map(Some)
        .map_err(|source| super::ContextError::BadWildcard { word: word.to_string(), source })
}

pub fn has_wildcards(word: &str) -> bool {
    let mut chars = word.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Removes glob escapes from a component that holds no wildcard.
pub fn unescape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
                continue;
            }
        }
        out.push(ch);
    }
    out
}

/// A compiled Go `filepath.Match` pattern for one path component.
#[derive(Debug, Clone)]
pub struct ComponentGlob {
    re: Regex,
}

impl ComponentGlob {
    pub fn new(pattern: &str) -> Result<ComponentGlob, GlobError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut re = String::from("^");
        let mut i = 0;
        while i < chars.len() {
            let ch = chars[i];
            i += 1;
            match ch {
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '[' => {
                    let (text, next) = class(&chars, i)?;
                    re.push_str(&text);
                    i = next;
                }
                '\\' => {
                    let next = *chars.get(i).ok_or(GlobError::TrailingBackslash)?;
                    re.push_str(&lit(next));
                    i += 1;
                }
                other => re.push_str(&lit(other)),
            }
        }
        re.push('$');
        let re = Regex::new(&re).map_err(|e| GlobError::Regex(e.to_string()))?;
        Ok(ComponentGlob { re })
    }

    /// Whether the name (any bytes) matches; see [`match_text`].
    pub fn is_match(&self, name: impl AsRef<[u8]>) -> bool {
        self.re.is_match(&match_text(name.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's filepath.Match table (as re-typed in moby/patternmatcher's tests).
    #[test]
    fn go_match_table() {
        let ok: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
            ("[[]", "[", true),
            ("a^b", "a^b", true),
            ("[a&&b]", "&", true),
        ];
        for (pat, name, want) in ok {
            let g = ComponentGlob::new(pat).unwrap_or_else(|e| panic!("{pat}: {e}"));
            assert_eq!(g.is_match(name), *want, "pattern {pat:?} name {name:?}");
        }
        let bad = ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "[z-a]"];
        for pat in bad {
            assert!(ComponentGlob::new(pat).is_err(), "{pat:?} should be rejected");
        }
    }

    #[test]
    fn names_that_are_not_utf8_match_by_their_bytes() {
        let star = ComponentGlob::new("x*").unwrap();
        assert!(star.is_match(b"x\xff") && star.is_match(b"x\xfe"));
        // One invalid byte is one character, as for Go; a valid two-byte character is one too.
        let one = ComponentGlob::new("x?").unwrap();
        assert!(one.is_match(b"x\xff") && one.is_match("xé") && !one.is_match(b"x\xff\xfe"));
        assert!(!ComponentGlob::new("x??").unwrap().is_match("xé"));
        // A pattern holding the raw byte tells the two names apart.
        let exact = ComponentGlob::new(&match_text(b"x\xff[a-z]")).unwrap();
        assert!(exact.is_match(b"x\xffq") && !exact.is_match(b"x\xfeq"));
        assert_ne!(match_text(b"x\xff"), match_text(b"x\xfe"));
        assert_eq!(match_text(b"plain"), "plain");
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcards("*.txt"));
        assert!(has_wildcards("a/b?"));
        assert!(has_wildcards("[ab]"));
        assert!(!has_wildcards("plain/file.txt"));
        assert!(!has_wildcards("a\\*b"));
        assert_eq!(unescape("a\\*b"), "a*b");
    }
}
