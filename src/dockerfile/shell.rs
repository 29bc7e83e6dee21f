//! Shell-word expansion as docker applies it to instruction arguments.
//!
//! This follows BuildKit's `frontend/dockerfile/shell` lexer, which imitates a
//! small part of POSIX sh: single and double quotes, the escape character
//! (`\` or `` ` ``), `$NAME`, `${NAME}` and the modifiers `:-` `-` `:+` `+`
//! `:?` `?` `#` `##` `%` `%%` `/` `//`. Nothing is executed (no command
//! substitution, no globbing). Unset variables expand to the empty string.
//!
//! Words are split only on whitespace that is unquoted and not escaped;
//! whitespace that comes out of a variable's value splits too (like sh),
//! whitespace inside quotes never does.
//!
//! Dockerfiles are untrusted input, so expansion is bounded where BuildKit
//! is not: `${A:-${B:-…}}` may nest [`MAX_NESTING`] levels (each level is a
//! recursive call, and a deeper word would overflow the stack), and one word
//! may grow by at most [`MAX_GROWTH`] bytes (`ENV B=$A$A` doubles a value
//! per line, so a few dozen lines would otherwise exhaust memory).

use std::collections::HashMap;

mod error;
mod pattern;

use self::error::Fail;
pub use self::error::ShellError;
use self::pattern::{pattern_regex, trim_prefix, trim_suffix};

/// How deep `${…}` forms may nest inside one another.
pub const MAX_NESTING: usize = 100;

/// How many bytes expansion may add to one word (a Linux process cannot
/// receive a single environment string over 128 KiB anyway).
pub const MAX_GROWTH: usize = 1 << 20;

/// Where expansion looks variables up: a map, or the planner's variables
/// without copying them into one.
pub trait Lookup {
    fn var(&self, name: &str) -> Option<&str>;
}

impl<T: Lookup + ?Sized> Lookup for &T {
    fn var(&self, name: &str) -> Option<&str> {
        (**self).var(name)
    }
}

impl Lookup for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// The shell-word expander for one Dockerfile (its escape character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellLex {
    escape: char,
}

impl ShellLex {
    pub fn new(escape: char) -> Self {
        ShellLex { escape }
    }

    /// Expand one word: quotes removed, `$V`, `${V}` and its modifiers
    /// replaced, escapes resolved. Unset variables expand to "".
    pub fn process_word(&self, word: &str, env: &dyn Lookup) -> Result<String, ShellError> {
        self.run(word, env).map(|(text, _)| text)
    }

    /// Expand and split into words on unquoted whitespace.
    pub fn process_words(&self, word: &str, env: &dyn Lookup) -> Result<Vec<String>, ShellError> {
        self.run(word, env).map(|(_, words)| words)
    }

    /// Expand a heredoc body (`COPY <<EOF` with an unquoted delimiter):
    /// `$` forms and `\` escapes only; quotes are ordinary text. BuildKit
    /// uses `\` here whatever the escape directive says.
    pub fn process_heredoc(&self, body: &str, env: &dyn Lookup) -> Result<String, ShellError> {
        let mut lexer = Lexer::new(body, '\\', env);
        lexer.skip_quotes = true;
        lexer.process_until(None, false).map(|(text, _)| text).map_err(|fail| fail.in_word(body))
    }

    fn run(&self, word: &str, env: &dyn Lookup) -> Result<(String, Vec<String>), ShellError> {
        let mut lexer = Lexer::new(word, self.escape, env);
        lexer.process_until(None, false).map_err(|fail| fail.in_word(word))
    }
}

/// Collects the split words while the expanded text is built.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    /// True once something (even an empty quoted string) started a word.
    in_word: bool,
}

impl Words {
    /// A character that came from unquoted text or a variable's value:
    /// whitespace ends the current word.
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, text: &str) {
        text.chars().for_each(|ch| self.add_char(ch));
    }

    /// Quoted text: kept whole, whitespace included.
    fn add_raw_str(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        // An empty quoted string alone ("") makes no word, as in BuildKit.
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Lookup,
    /// How many `process_until` calls are running (nesting of `${…}`).
    depth: usize,
    /// The longest the expanded text may get: the word's length plus
    /// `MAX_GROWTH`.
    limit: usize,
    /// Keep escape characters in the output: pattern words of `#`, `%` and
    /// `/` need them to tell `\*` from `*`.
    raw_escapes: bool,
    /// Quotes are plain characters (heredoc bodies).
    skip_quotes: bool,
}

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, env: &'a dyn Lookup) -> Self {
        let limit = text.len().saturating_add(MAX_GROWTH);
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            env,
            depth: 0,
            limit,
            raw_escapes: false,
            skip_quotes: false,
        }
    }

    /// Text expanded so far must stay within the limit.
    fn check_len(&self, text: &str) -> Result<(), Fail> {
        if text.len() > self.limit {
            return Err(Fail::TooLong);
        }
        Ok(())
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Expands until `stop` (consumed) or, when `stop` is `None`, the end.
    fn process_until(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<(String, Vec<String>), Fail> {
        if self.depth >= MAX_NESTING {
            return Err(Fail::TooDeep);
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let outcome = self.process_until_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        outcome
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    self.check_len(&result)?;
                    words.add_str(&value);
                }
                '\'' if !self.skip_quotes => {
                    let value = self.single_quoted()?;
                    result.push_str(&value);
                    words.add_raw_str(&value);
                }
                '"' if !self.skip_quotes => {
                    let value = self.double_quoted()?;
                    result.push_str(&value);
                    words.add_raw_str(&value);
                }
                _ if ch == self.escape => {
                    self.pos += 1;
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    // An escape at the very end is dropped (a line continuation
                    // that the parser already joined).
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                }
                _ => {
                    self.pos += 1;
                    words.add_char(ch);
                    result.push(ch);
                }
            }
        }
        match stop {
            Some(stop) => Err(Fail::Unterminated(stop.to_string())),
            None => Ok((result, words.finish())),
        }
    }

    /// `'...'`: everything literal up to the next single quote.
    fn single_quoted(&mut self) -> Result<String, Fail> {
        self.pos += 1;
        let mut result = String::new();
        loop {
            match self.next() {
                None => return Err(Fail::Unterminated("single-quote".into())),
                Some('\'') => return Ok(result),
                Some(ch) => result.push(ch),
            }
        }
    }

    /// `"..."`: literal except `$` expansions; the escape character escapes
    /// only `"`, `$` and itself and is kept before anything else.
    fn double_quoted(&mut self) -> Result<String, Fail> {
        self.pos += 1;
        let mut result = String::new();
        loop {
            match self.peek() {
                None => return Err(Fail::Unterminated("double-quote".into())),
                Some('"') => {
                    self.pos += 1;
                    return Ok(result);
                }
                Some('$') => {
                    result.push_str(&self.dollar()?);
                    self.check_len(&result)?;
                }
                Some(ch) => {
                    self.pos += 1;
                    if ch != self.escape {
                        result.push(ch);
                        continue;
                    }
                    if self.raw_escapes {
                        result.push(ch);
                    }
                    match self.peek() {
                        // An escape right before the end is dropped; the
                        // missing quote is reported on the next turn.
                        None => {}
                        Some(next) if next == '"' || next == '$' || next == self.escape => {
                            self.pos += 1;
                            result.push(next);
                        }
                        Some(_) => result.push(ch),
                    }
                }
            }
        }
    }

    /// `$NAME`, `${NAME}` or `${NAME<modifier>word}`, at a `$`.
    fn dollar(&mut self) -> Result<String, Fail> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.lookup(&name).unwrap_or_default().to_string());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(Fail::MissingBrace),
            Some('{' | '}' | ':') => return Err(Fail::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let Some(ch) = self.next() else {
            // BuildKit calls this an unsupported modifier; the missing brace
            // is the clearer story.
            return Err(Fail::MissingBrace);
        };
        match ch {
            '}' => Ok(self.lookup(&name).unwrap_or_default().to_string()),
            ':' => {
                let modifier = self.next();
                let label = format!(":{}", modifier.map(String::from).unwrap_or_default());
                self.modifier(&name, modifier, true, label)
            }
            '+' | '-' | '?' | '#' | '%' => self.modifier(&name, Some(ch), false, ch.to_string()),
            '/' => self.replace(&name),
            _ => Err(Fail::UnsupportedModifier(ch.to_string())),
        }
    }

    /// The `${NAME<op>word}` forms; `null_is_unset` is true after a `:`.
    fn modifier(&mut self, name: &str, op: Option<char>, null_is_unset: bool, label: String) -> Result<String, Fail> {
        let raw = matches!(op, Some('#' | '%'));
        let (word, _) =
            self.process_until(Some('}'), raw).map_err(|fail| self.at_end_means(fail, Fail::MissingBrace))?;
        let value = self.lookup(name);
        let unset = value.is_none() || (null_is_unset && value == Some(""));
        match op {
            Some('-') => Ok(if unset { word } else { value.unwrap_or_default().to_string() }),
            Some('+') => Ok(if unset { String::new() } else { word }),
            Some('?') => {
                let default = match value {
                    None => "is not allowed to be unset",
                    Some(_) if unset => "is not allowed to be empty",
                    Some(v) => return Ok(v.to_string()),
                };
                let message = if word.is_empty() { default.to_string() } else { word };
                Err(Fail::Required { name: name.to_string(), message })
            }
            Some(op @ ('#' | '%')) => {
                let value = value.unwrap_or_default();
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest.to_string(), true),
                    None => (word, false),
                };
                if op == '%' {
                    trim_suffix(&pattern, value, greedy)
                } else {
                    trim_prefix(&pattern, value, greedy)
                }
            }
            _ => Err(Fail::UnsupportedModifier(label)),
        }
    }

    /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`.
    fn replace(&mut self, name: &str) -> Result<String, Fail> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let (pattern, _) =
            self.process_until(Some('/'), true).map_err(|fail| self.at_end_means(fail, Fail::MissingSlash))?;
        let (replacement, _) =
            self.process_until(Some('}'), true).map_err(|fail| self.at_end_means(fail, Fail::MissingBrace))?;
        let value = self.lookup(name).unwrap_or_default();
        let re = pattern_regex(&pattern, true, false)?;
        // Count before replacing: a short pattern replaced by a long text
        // everywhere multiplies the sizes.
        let matches = if all { re.find_iter(value).count() } else { usize::from(re.is_match(value)) };
        if value.len().saturating_add(matches.saturating_mul(replacement.len())) > self.limit {
            return Err(Fail::TooLong);
        }
        let found = if all {
            re.replace_all(value, regex::NoExpand(&replacement)).into_owned()
        } else {
            re.replace(value, regex::NoExpand(&replacement)).into_owned()
        };
        Ok(found)
    }

    /// A nested failure that ran off the end of the word is reported as the
    /// missing closing delimiter, like BuildKit does.
    fn at_end_means(&self, fail: Fail, instead: Fail) -> Fail {
        if self.peek().is_none() {
            instead
        } else {
            fail
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits
    /// (positional parameter); or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(digit) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(digit);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        self.env.var(name)
    }
}

/// The sh special parameters (`$@`, `$#`, ...); never set in a Dockerfile.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests;
