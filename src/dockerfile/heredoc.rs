//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<'EOF'`, `3<<"EOF"`) in RUN, COPY
//! and ADD arguments. The bodies themselves are read by the lexer.

use super::words::unquote;

/// A heredoc marker word, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub name: String,
    pub expand: bool,
    pub strip_tabs: bool,
}

/// Decodes `word` if it is a heredoc marker: optional file-descriptor digits,
/// `<<`, optional `-`, then a delimiter without `<`. Quoting any part of the
/// delimiter turns expansion off; a delimiter that unquotes to nothing (or
/// has an open quote) is not a marker.
pub(crate) fn marker(word: &str) -> Option<Marker> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("<<")?;
    let (strip_tabs, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let name = unquote(rest)?;
    if name.is_empty() {
        return None;
    }
    let expand = quote_count(&name) == quote_count(rest);
    Some(Marker { name, expand, strip_tabs })
}

fn quote_count(s: &str) -> usize {
    s.chars().filter(|&c| c == '\'' || c == '"').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, expand: bool, strip_tabs: bool) -> Option<Marker> {
        Some(Marker { name: name.into(), expand, strip_tabs })
    }

    #[test]
    fn valid_markers() {
        assert_eq!(marker("<<EOF"), m("EOF", true, false));
        assert_eq!(marker("<<'EOF'"), m("EOF", false, false));
        assert_eq!(marker("<<\"EOF\""), m("EOF", false, false));
        assert_eq!(marker("<<-EOF"), m("EOF", true, true));
        assert_eq!(marker("<<-'EOF'"), m("EOF", false, true));
        assert_eq!(marker("<<-\"EOF\""), m("EOF", false, true));
        assert_eq!(marker("3<<EOF"), m("EOF", true, false));
        assert_eq!(marker("<<E'O'F"), m("EOF", false, false));
        assert_eq!(marker("<<EOF.txt"), m("EOF.txt", true, false));
    }

    #[test]
    fn not_markers() {
        for word in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "a<<EOF", "<<'EOF", "<<EOF'", "<<''"] {
            assert_eq!(marker(word), None, "{word}");
        }
    }
}
