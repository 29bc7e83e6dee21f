//! Parser directives: `# syntax=`, `# escape=` and `# check=` comment lines at
//! the very top of the file. The first line that is not a known directive ends
//! the search; later look-alikes are ordinary comments.

use super::ast::Directives;
use super::error::DockerfileError;
use super::lexer::trim_newline;

pub(crate) fn parse(lines: &[&str], path: &str) -> Result<Directives, DockerfileError> {
    let mut directives = Directives::default();
    let mut seen: Vec<String> = Vec::new();
    for (index, raw) in lines.iter().enumerate() {
        let line = trim_newline(raw).trim_start();
        let Some((name, value, value_column)) = split_directive(line) else {
            break;
        };
        let key = name.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            break;
        }
        let line_no = index + 1;
        let lead = trim_newline(raw).len() - line.len();
        let column = lead + value_column;
        if seen.contains(&key) {
            return Err(DockerfileError::new(
                path,
                line_no,
                lead + 1,
                format!("only one {key} parser directive can be used"),
            )
            .with_help("remove the repeated directive"));
        }
        seen.push(key.clone());
        match key.as_str() {
            "syntax" => directives.syntax = Some(value.to_string()),
            "check" => directives.check = Some(value.to_string()),
            _ => {
                directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(DockerfileError::new(
                            path,
                            line_no,
                            column,
                            format!("invalid escape token {other:?} in escape directive"),
                        )
                        .with_help("the escape character must be `\\` or `` ` ``"));
                    }
                }
            }
        }
    }
    Ok(directives)
}

/// Matches `#\s*name\s*=\s*value\s*` where name is `[a-zA-Z][a-zA-Z0-9]*` and
/// value is non-empty. Returns name, value and the value's 1-based column
/// within `line`.
fn split_directive(line: &str) -> Option<(&str, &str, usize)> {
    let rest = line.strip_prefix('#')?;
    let after_hash = rest.trim_start_matches(is_go_space);
    let name_len = after_hash
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(after_hash.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let name = &after_hash[..name_len];
    let rest = after_hash[name_len..].trim_start_matches(is_go_space).strip_prefix('=')?;
    let value_start = rest.trim_start_matches(is_go_space);
    let value = value_start.trim_end_matches(is_go_space);
    if value.is_empty() {
        return None;
    }
    let offset = line.len() - value_start.len();
    Some((name, value, line[..offset].chars().count() + 1))
}

/// `\s` in Go's regexp syntax.
fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(src: &str) -> Result<Directives, DockerfileError> {
        let lines: Vec<&str> = src.split('\n').collect();
        parse(&lines, "Dockerfile")
    }

    #[test]
    fn all_spellings_of_a_directive() {
        for line in ["#escape=`", "# escape =`", "#\tescape= `", "# escape = `", "#\t  EsCaPe=`  "] {
            assert_eq!(dirs(&format!("{line}\nFROM a")).unwrap().escape, '`', "{line}");
        }
    }

    #[test]
    fn stops_at_first_non_directive() {
        let d = dirs("# syntax=docker/dockerfile:1\n# check=error=true\n\n# escape=`\nFROM a").unwrap();
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.check.as_deref(), Some("error=true"));
        assert_eq!(d.escape, '\\');
        let d = dirs("# unknown=x\n# syntax=y\nFROM a").unwrap();
        assert_eq!(d.syntax, None);
        let d = dirs("# about\n# escape=`\nFROM a").unwrap();
        assert_eq!(d.escape, '\\');
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let err = dirs("# syntax=a\n# syntax=b\nFROM a").unwrap_err();
        assert_eq!((err.line, err.column), (2, 1));
    }

    #[test]
    fn bad_escape_value() {
        let err = dirs("# escape=x\nFROM a").unwrap_err();
        assert_eq!((err.line, err.column), (1, 10));
        assert!(err.message.contains("escape"));
    }

    #[test]
    fn empty_value_is_not_a_directive() {
        let d = dirs("# escape=\n# syntax=x\nFROM a").unwrap();
        assert_eq!(d.syntax, None);
    }
}
