//! Splitting instruction arguments into words, the three ways docker does it:
//! plain whitespace (FROM, EXPOSE, shell-form COPY/ADD/VOLUME), quote-aware
//! with quotes kept (ENV, LABEL, ARG), and JSON arrays (exec form).

/// A word and the byte offset where it starts in the text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub text: String,
    pub offset: usize,
}

/// Splits on runs of space, tab, vertical tab, form feed and carriage return.
pub(crate) fn split_whitespace(text: &str, base: usize) -> Vec<Word> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_blank(c) {
            if let Some(s) = start.take() {
                words.push(Word { text: text[s..i].to_string(), offset: base + s });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(Word { text: text[s..].to_string(), offset: base + s });
    }
    words
}

/// Go's `[\t\v\f\r ]`, the separator docker uses between plain words.
pub(crate) fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// Splits into words on unquoted whitespace, keeping quotes and escapes in
/// the words (the planner unquotes when it expands). An escape character at
/// the very end is dropped.
pub(crate) fn split_keeping_quotes(text: &str, escape: char, base: usize) -> Vec<Word> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut start = 0;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !in_word {
            if c.is_whitespace() {
                continue;
            }
            in_word = true;
            start = i;
        }
        match quote {
            None => {
                if c.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(Word { text: std::mem::take(&mut word), offset: base + start });
                    }
                    word.clear();
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    match chars.next() {
                        None => continue,
                        Some((_, next)) => {
                            word.push(c);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    match chars.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some((_, next)) => {
                            word.push(c);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(Word { text: word, offset: base + start });
    }
    words
}

/// Splits a shell command line into raw words (quotes and escapes kept) the
/// way a POSIX shell would tokenise it, for finding heredoc markers. `None`
/// when a quote is left open.
pub(crate) fn shell_words_raw(text: &str, base: usize) -> Option<Vec<Word>> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == ' ' || c == '\t' || c == '\n' {
            if let Some(s) = start.take() {
                words.push(Word { text: text[s..i].to_string(), offset: base + s });
            }
            continue;
        }
        if start.is_none() {
            start = Some(i);
        }
        match c {
            '\\' => {
                chars.next();
            }
            '\'' => loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some(_) => {}
                    None => return None,
                }
            },
            '"' => loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => {
                        chars.next();
                    }
                    Some(_) => {}
                    None => return None,
                }
            },
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(Word { text: text[s..].to_string(), offset: base + s });
    }
    Some(words)
}

/// Removes shell quoting from one word: `'…'` literal, `"…"` with `\"`, `\\`,
/// `\$` and `` \` `` escapes, and `\x` outside quotes. `None` when a quote is
/// left open.
pub(crate) fn unquote(word: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(ch) => out.push(ch),
                    None => return None,
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(next @ ('"' | '\\' | '$' | '`')) => out.push(next),
                        Some(next) => {
                            out.push('\\');
                            out.push(next);
                        }
                        None => return None,
                    },
                    Some(ch) => out.push(ch),
                    None => return None,
                }
            },
            _ => out.push(c),
        }
    }
    Some(out)
}

/// What a `[`-prefixed argument turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Json {
    /// Not a valid JSON array: docker treats the text as shell form.
    NotArray,
    Strings(Vec<String>),
    /// A valid JSON array with a non-string element: an error in docker.
    NotStrings,
}

pub(crate) fn parse_json_array(text: &str) -> Json {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return Json::NotArray;
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return Json::NotArray;
    };
    let mut strings = Vec::with_capacity(values.len());
    for value in values {
        match value {
            serde_json::Value::String(s) => strings.push(s),
            _ => return Json::NotStrings,
        }
    }
    Json::Strings(strings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(words: Vec<Word>) -> Vec<String> {
        words.into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn whitespace_words_with_offsets() {
        let w = split_whitespace("a  b\tc", 10);
        assert_eq!(
            w,
            vec![
                Word { text: "a".into(), offset: 10 },
                Word { text: "b".into(), offset: 13 },
                Word { text: "c".into(), offset: 15 },
            ]
        );
        assert!(split_whitespace("", 0).is_empty());
    }

    #[test]
    fn quote_aware_words_keep_quotes() {
        assert_eq!(
            texts(split_keeping_quotes(r#"a="b c" d=e\ f g='h i' "" x"#, '\\', 0)),
            vec![r#"a="b c""#, r"d=e\ f", "g='h i'", r#""""#, "x"]
        );
        assert_eq!(texts(split_keeping_quotes("a=b\\", '\\', 0)), vec!["a=b"]);
        assert_eq!(texts(split_keeping_quotes("a=`\" b", '`', 0)), vec!["a=`\"", "b"]);
        assert_eq!(texts(split_keeping_quotes(r#"a="x\" y""#, '\\', 0)), vec![r#"a="x\" y""#]);
    }

    #[test]
    fn shell_words() {
        let w = shell_words_raw(r#"cat <<EOF "x <<Y" 'a b'\ c"#, 0).unwrap();
        assert_eq!(texts(w), vec!["cat", "<<EOF", r#""x <<Y""#, r"'a b'\ c"]);
        assert_eq!(shell_words_raw("echo 'open", 0), None);
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote(r#"'E'O"F""#).as_deref(), Some("EOF"));
        assert_eq!(unquote(r#""a\$b\n""#).as_deref(), Some("a$b\\n"));
        assert_eq!(unquote(r"\E"), Some("E".to_string()));
        assert_eq!(unquote("'x"), None);
    }

    #[test]
    fn json_arrays() {
        assert_eq!(parse_json_array(r#" ["a", "b"] "#), Json::Strings(vec!["a".into(), "b".into()]));
        assert_eq!(parse_json_array("[]"), Json::Strings(vec![]));
        assert_eq!(parse_json_array(r#"["a", 1]"#), Json::NotStrings);
        assert_eq!(parse_json_array(r#"["c:\windows"]"#), Json::NotArray);
        assert_eq!(parse_json_array("['a']"), Json::NotArray);
        assert_eq!(parse_json_array(r#"["a"] b"#), Json::NotArray);
        assert_eq!(parse_json_array("echo"), Json::NotArray);
    }
}
