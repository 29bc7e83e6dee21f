//! The wildcard patterns of `${NAME#…}`, `${NAME%…}` and `${NAME/…}`:
//! shell patterns as regexes, and prefix and suffix trimming by them.

use regex::Regex;

use super::error::Fail;

/// Converts a shell wildcard pattern (`*`, `?`, escapes; no bracket
/// expressions) to a regex. `greedy` picks the longest `*` match.
pub(super) fn pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, Fail> {
    let invalid = |reason: String| Fail::InvalidPattern { pattern: pattern.to_string(), reason };
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '*' => out.push_str(if greedy { ".*" } else { ".*?" }),
            '?' => out.push('.'),
            '\\' => {
                // `\}` and `\/` only protected the delimiter of `${...}`.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(escaped);
                    }
                    Some(other) => return Err(invalid(format!("invalid escape '\\{other}'"))),
                    None => return Err(invalid("invalid escape at end of pattern".into())),
                }
            }
            _ => out.push_str(&regex::escape(&ch.to_string())),
        }
    }
    Regex::new(&out).map_err(|err| invalid(err.to_string()))
}

pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
    let re = pattern_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(found) => value[found.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Regexes cannot find the shortest match that ends at the end, so both the
/// pattern and the value are reversed and the prefix is trimmed instead.
pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each escape before the character it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            pieces.push(chars[i..i + 2].iter().collect());
            i += 2;
        } else {
            pieces.push(chars[i].to_string());
            i += 1;
        }
    }
    pieces.into_iter().rev().collect()
}
