use super::*;

#[test]
fn heredoc_names() {
    assert_eq!(heredoc_name("<<EOF"), Some("EOF"));
    assert_eq!(heredoc_name("<<-EOF"), Some("EOF"));
    assert_eq!(heredoc_name("<<'EOF'"), Some("EOF"));
    assert_eq!(heredoc_name("<<\"EOF\""), Some("EOF"));
    assert_eq!(heredoc_name("file"), None);
    assert_eq!(heredoc_name("<<"), None);
}

#[test]
fn signals() {
    for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-14", "sigwinch"] {
        assert!(is_signal(ok), "{ok}");
    }
    for bad in ["0", "-1", "SIGFOO", "", "RTMIN+16"] {
        assert!(!is_signal(bad), "{bad}");
    }
}

#[test]
fn from_values_must_be_literal() {
    let lex = ShellLex::new('\\');
    assert_eq!(copy_from_value(&lex, "build").unwrap(), "build");
    assert!(copy_from_value(&lex, "$STAGE").is_err());
    assert!(copy_from_value(&lex, "\"build\"").is_err());
    assert_eq!(mount_from_value(&lex, "build").unwrap(), "build");
    assert!(mount_from_value(&lex, "${X}").is_err());
}
