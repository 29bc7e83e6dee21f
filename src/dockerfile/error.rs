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
            out.push_str(&format!(" {} | {}\n", gutter, text));
            let pad: String = text
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!(" {} | {}^\n", " ".repeat(gutter.len()), pad));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("help: {}\n", help));
        }
        out
    }
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
