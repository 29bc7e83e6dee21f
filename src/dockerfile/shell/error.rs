//! How an expansion fails: [`ShellError`] as users see it (BuildKit's
//! messages), and the word-less [`Fail`] the lexer returns.

use super::{MAX_GROWTH, MAX_NESTING};

/// Why an expansion failed. Messages match BuildKit's so users recognise them.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ShellError {
    #[error("failed to process {word:?}: unexpected end of statement while looking for matching {expected}")]
    Unterminated { word: String, expected: String },
    #[error("failed to process {word:?}: syntax error: missing '}}'")]
    MissingBrace { word: String },
    #[error("failed to process {word:?}: syntax error: missing '/' in ${{}}")]
    MissingSlash { word: String },
    #[error("failed to process {word:?}: syntax error: bad substitution")]
    BadSubstitution { word: String },
    #[error("failed to process {word:?}: unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier { word: String, modifier: String },
    /// `${NAME?message}` / `${NAME:?message}` on an unset (or empty) variable.
    #[error("failed to process {word:?}: {name}: {message}")]
    Required { word: String, name: String, message: String },
    #[error("failed to process {word:?}: invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern { word: String, pattern: String, reason: String },
    /// `word` is only the start of the word: it can be very long.
    #[error("failed to process {word:?}: variable substitutions are nested more than {max} levels deep")]
    TooDeep { word: String, max: usize },
    #[error("failed to process {word:?}: the expansion grows the word by more than {max} bytes")]
    TooLong { word: String, max: usize },
}

/// The start of a long word, for errors about words too deep or too long.
fn head(word: &str) -> String {
    const SHOWN: usize = 40;
    match word.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &word[..end]),
        None => word.to_string(),
    }
}

/// A failure without the word it happened in; `ShellLex` adds the word.
#[derive(Debug)]
pub(super) enum Fail {
    Unterminated(String),
    MissingBrace,
    MissingSlash,
    BadSubstitution,
    UnsupportedModifier(String),
    Required { name: String, message: String },
    InvalidPattern { pattern: String, reason: String },
    TooDeep,
    TooLong,
}

impl Fail {
    pub(super) fn in_word(self, word: &str) -> ShellError {
        let word = word.to_string();
        match self {
            Fail::Unterminated(expected) => ShellError::Unterminated { word, expected },
            Fail::MissingBrace => ShellError::MissingBrace { word },
            Fail::MissingSlash => ShellError::MissingSlash { word },
            Fail::BadSubstitution => ShellError::BadSubstitution { word },
            Fail::UnsupportedModifier(modifier) => ShellError::UnsupportedModifier { word, modifier },
            Fail::Required { name, message } => ShellError::Required { word, name, message },
            Fail::InvalidPattern { pattern, reason } => ShellError::InvalidPattern { word, pattern, reason },
            Fail::TooDeep => ShellError::TooDeep { word: head(&word), max: MAX_NESTING },
            Fail::TooLong => ShellError::TooLong { word: head(&word), max: MAX_GROWTH },
        }
    }
}
