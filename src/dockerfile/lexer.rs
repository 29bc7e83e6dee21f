//! Physical lines to logical lines: comments, blank lines, line
//! continuations and heredoc bodies, with a source position for every byte of
//! the joined text so later stages can point errors at the exact column.
//!
//! The rules follow BuildKit's line scanner: the first line of an instruction
//! is left-trimmed, continuation lines are not; comment lines and blank lines
//! inside a continuation are skipped; an escape character is a continuation
//! only when it ends the line (trailing blanks allowed) and is not itself
//! escaped.

use super::error::DockerfileError;

/// 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One instruction's text with continuations joined.
#[derive(Debug, Clone)]
pub(crate) struct Logical {
    pub text: String,
    /// Source position of each byte of `text`.
    positions: Vec<Pos>,
    /// Position just past the last byte, for errors about what is missing.
    end: Pos,
    pub end_line: usize,
}

impl Logical {
    /// Builds a single-piece logical line; used by tests of later stages.
    #[cfg(test)]
    pub fn single(text: &str) -> Logical {
        let mut l =
            Logical { text: String::new(), positions: Vec::new(), end: Pos { line: 1, column: 1 }, end_line: 1 };
        l.push(text, 1, 0, text);
        l
    }

    /// Where the byte at `offset` came from; offsets at or past the end map to
    /// just after the text.
    pub fn pos_at(&self, offset: usize) -> Pos {
        self.positions.get(offset).copied().unwrap_or(self.end)
    }

    /// Appends `piece`, a slice of physical line `line` starting at byte
    /// `start` of that line (`full` is the whole physical line).
    fn push(&mut self, piece: &str, line: usize, start: usize, full: &str) {
        let mut column = full.get(..start).map_or(0, |s| s.chars().count()) + 1;
        for ch in piece.chars() {
            for _ in 0..ch.len_utf8() {
                self.positions.push(Pos { line, column });
            }
            column += 1;
        }
        self.text.push_str(piece);
        self.end = Pos { line, column };
        self.end_line = line;
    }
}

/// A heredoc the instruction asked for: its delimiter and where `<<` was.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeredocRequest {
    pub name: String,
    pub strip_tabs: bool,
    pub pos: Pos,
}

pub(crate) struct Lexer<'a> {
    /// Physical lines without their `\n`.
    lines: Vec<&'a str>,
    /// Whether each line was followed by `\n` in the source.
    terminated: Vec<bool>,
    next: usize,
    escape: char,
}

impl<'a> Lexer<'a> {
    pub fn new(source: &'a str) -> Lexer<'a> {
        let source = source.strip_prefix('\u{feff}').unwrap_or(source);
        let mut lines = Vec::new();
        let mut terminated = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match rest.find('\n') {
                Some(i) => {
                    lines.push(&rest[..i]);
                    terminated.push(true);
                    rest = &rest[i + 1..];
                }
                None => {
                    lines.push(rest);
                    terminated.push(false);
                    rest = "";
                }
            }
        }
        Lexer { lines, terminated, next: 0, escape: '\\' }
    }

    pub fn lines(&self) -> &[&'a str] {
        &self.lines
    }

    pub fn set_escape(&mut self, escape: char) {
        self.escape = escape;
    }

    /// The next instruction's joined text, or `None` at the end of input.
    pub fn next_logical(&mut self) -> Option<Logical> {
        while self.next < self.lines.len() {
            let index = self.next;
            self.next += 1;
            let full = self.lines[index];
            let trimmed = trim_newline(full);
            let body = trimmed.trim_start();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let lead = trimmed.len() - body.len();
            let line_no = index + 1;
            let mut logical = Logical {
                text: String::new(),
                positions: Vec::new(),
                end: Pos { line: line_no, column: 1 },
                end_line: line_no,
            };
            let (keep, mut continued) = trim_continuation(body, self.escape);
            logical.push(&body[..keep], line_no, lead, full);
            while continued {
                // A continuation on the last line ends the instruction there:
                // BuildKit's scanner simply runs out of lines and keeps what
                // it joined (`RUN make \` as the file's last line is valid).
                let Some(&next_full) = self.lines.get(self.next) else {
                    break;
                };
                let next_no = self.next + 1;
                self.next += 1;
                let next_trimmed = trim_newline(next_full);
                let stripped = next_trimmed.trim_start();
                if stripped.starts_with('#') || stripped.is_empty() {
                    continue;
                }
                let (keep, more) = trim_continuation(next_trimmed, self.escape);
                logical.push(&next_trimmed[..keep], next_no, 0, next_full);
                continued = more;
            }
            return Some(logical);
        }
        None
    }

    /// Reads the bodies of `requests`, in order, from the lines after the
    /// current instruction. Returns each body and the last line consumed.
    pub fn read_heredocs(
        &mut self,
        path: &str,
        requests: &[HeredocRequest],
    ) -> Result<(Vec<String>, usize), DockerfileError> {
        let mut bodies = Vec::with_capacity(requests.len());
        for request in requests {
            let mut content = String::new();
            let mut closed = false;
            while self.next < self.lines.len() {
                let index = self.next;
                self.next += 1;
                let raw = self.lines[index];
                let mut candidate = trim_newline(raw);
                if request.strip_tabs {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == request.name {
                    closed = true;
                    break;
                }
                content.push_str(raw);
                if self.terminated[index] {
                    content.push('\n');
                }
            }
            if !closed {
                return Err(DockerfileError::new(
                    path,
                    request.pos.line,
                    request.pos.column,
                    format!("unterminated heredoc <<{}", request.name),
                )
                .with_help(format!("end the heredoc with a line that holds only `{}`", request.name)));
            }
            if request.strip_tabs {
                content = strip_leading_tabs(&content);
            }
            bodies.push(content);
        }
        Ok((bodies, self.next))
    }
}

/// Drops trailing `\r` and `\n`, as BuildKit does for every line it reads.
pub(crate) fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// How much of `line` to keep and whether it continues on the next line.
fn trim_continuation(line: &str, escape: char) -> (usize, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before.len(), true);
        }
    }
    (line.len(), false)
}

/// `<<-`: leading tabs go from every line of the body.
fn strip_leading_tabs(content: &str) -> String {
    content.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(source: &str) -> Vec<(String, usize, usize)> {
        let mut lexer = Lexer::new(source);
        let mut out = Vec::new();
        while let Some(l) = lexer.next_logical() {
            out.push((l.text.clone(), l.pos_at(0).line, l.end_line));
        }
        out
    }

    #[test]
    fn joins_continuations_and_skips_comments_inside() {
        let got = all("RUN a \\\n# c\n\n  b \\\n c\nRUN d\n");
        assert_eq!(got, vec![("RUN a   b  c".to_string(), 1, 5), ("RUN d".to_string(), 6, 6)]);
    }

    #[test]
    fn escaped_escape_is_not_a_continuation() {
        let got = all("RUN a \\\\\nRUN b\n");
        assert_eq!(got, vec![("RUN a \\\\".to_string(), 1, 1), ("RUN b".to_string(), 2, 2)]);
    }

    #[test]
    fn backtick_escape() {
        let mut lexer = Lexer::new("RUN a `\nb\nRUN c \\\n");
        lexer.set_escape('`');
        let first = lexer.next_logical().unwrap();
        assert_eq!(first.text, "RUN a b");
        let second = lexer.next_logical().unwrap();
        assert_eq!(second.text, "RUN c \\");
    }

    #[test]
    fn positions_follow_continuations() {
        let mut lexer = Lexer::new("  RUN a \\\n   bé c\n");
        let l = lexer.next_logical().unwrap();
        assert_eq!(l.pos_at(0), Pos { line: 1, column: 3 });
        let c = l.text.find('c').unwrap();
        assert_eq!(l.pos_at(c), Pos { line: 2, column: 7 });
    }

    #[test]
    fn eof_after_continuation_ends_the_instruction() {
        // BuildKit accepts a trailing escape on the last line (and after it
        // only blank or comment lines): the instruction is what was joined.
        assert_eq!(all("FROM a\nRUN echo \\\n\n# trailing\n")[1], ("RUN echo ".to_string(), 2, 2));
        assert_eq!(all("FROM a\nRUN echo \\")[1], ("RUN echo ".to_string(), 2, 2));
        assert_eq!(all("FROM a\nRUN a \\\n  b \\\n")[1], ("RUN a   b ".to_string(), 2, 3));
    }

    #[test]
    fn crlf_lines() {
        let got = all("RUN a \\\r\n b\r\nRUN c\r\n");
        assert_eq!(got[0].0, "RUN a  b");
        assert_eq!(got[1].0, "RUN c");
    }

    #[test]
    fn heredoc_bodies() {
        let mut lexer = Lexer::new("RUN <<A <<-B\na1\n\tA\nA\n\tb1\n\tB\nRUN x");
        lexer.next_logical();
        let reqs = vec![
            HeredocRequest { name: "A".into(), strip_tabs: false, pos: Pos { line: 1, column: 5 } },
            HeredocRequest { name: "B".into(), strip_tabs: true, pos: Pos { line: 1, column: 9 } },
        ];
        let (bodies, last) = lexer.read_heredocs("D", &reqs).unwrap();
        assert_eq!(bodies, vec!["a1\n\tA\n".to_string(), "b1\n".to_string()]);
        assert_eq!(last, 6);
        assert_eq!(lexer.next_logical().unwrap().text, "RUN x");
    }

    #[test]
    fn unterminated_heredoc_points_at_its_start() {
        let mut lexer = Lexer::new("RUN <<EOF\nbody\n");
        lexer.next_logical();
        let reqs = vec![HeredocRequest { name: "EOF".into(), strip_tabs: false, pos: Pos { line: 1, column: 5 } }];
        let err = lexer.read_heredocs("D", &reqs).unwrap_err();
        assert_eq!((err.line, err.column), (1, 5));
    }

    #[test]
    fn bom_is_ignored() {
        assert_eq!(all("\u{feff}FROM a")[0].0, "FROM a");
    }
}
