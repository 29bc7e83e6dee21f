//! Errors that point into a Dockerfile: file, line, column and what is wrong.

use std::fmt;

/// An error at a place in a Dockerfile. Displays as
/// `Dockerfile:12:5: unknown instruction "RUNN"` and, when there is one,
/// a `help:` sentence on the next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

impl DockerfileError {
    pub fn new(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        DockerfileError { file: file.to_string(), line, column, message: message.into(), help: None }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Renders like a compiler diagnostic: the location line, the source
    /// line with a caret under the column, then the help line.
    pub fn render(&self, source: &str) -> String {
        let mut out = format!("{}:{}:{}: {}\n", self.file, self.line, self.column, self.message);
        if let Some(text) = source.lines().nth(self.line.saturating_sub(1)) {
            let gutter = self.line.to_string();
            let (shown, caret) = window(text, self.column.saturating_sub(1));
            out.push_str(&format!(" {} | {}\n", gutter, shown));
            let pad: String = shown.chars().take(caret).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
            out.push_str(&format!(" {} | {}^\n", " ".repeat(gutter.len()), pad));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("help: {}\n", help));
        }
        out
    }
}

/// How much of a source line a diagnostic shows.
const SHOWN_CHARS: usize = 120;

/// At most [`SHOWN_CHARS`] characters of `line` around character `column`
/// (a Dockerfile line can be megabytes long), `…` where it was cut, and
/// where the caret goes in what is shown.
fn window(line: &str, column: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= SHOWN_CHARS {
        return (line.to_string(), column);
    }
    let column = column.min(chars.len());
    let start = column.saturating_sub(SHOWN_CHARS / 2).min(chars.len() - SHOWN_CHARS);
    let end = start + SHOWN_CHARS;
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    (shown, column - start + usize::from(start > 0))
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({})", help)?;
        }
        Ok(())
    }
}

impl std::error::Error for DockerfileError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_shown_whole() {
        let err = DockerfileError::new("Dockerfile", 2, 5, "bad");
        assert_eq!(err.render("FROM a\nRUN  x\n"), "Dockerfile:2:5: bad\n 2 | RUN  x\n   |     ^\n");
    }

    #[test]
    fn long_lines_are_cut_around_the_column() {
        let line = format!("ENV Y={}", "${X:-".repeat(20_000));
        let at_start = DockerfileError::new("Dockerfile", 1, 1, "deep").render(&line);
        let shown = at_start.lines().nth(1).unwrap();
        assert_eq!(shown, format!(" 1 | {}…", &line[..SHOWN_CHARS]));
        assert_eq!(at_start.lines().nth(2).unwrap(), "   | ^");

        let far = format!("{}BAD{}", "a".repeat(5000), "b".repeat(5000));
        let rendered = DockerfileError::new("Dockerfile", 1, 5001, "here").render(&far);
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(lines[1].len() < 2 * SHOWN_CHARS && lines[1].starts_with(" 1 | …") && lines[1].ends_with('…'));
        let caret = lines[2].find('^').unwrap();
        let under: String = lines[1].chars().skip(caret).take(3).collect();
        assert_eq!(under, "BAD", "{rendered}");
    }
}
