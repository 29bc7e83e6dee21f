use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn word(input: &str, pairs: &[(&str, &str)]) -> Result<String, ShellError> {
    ShellLex::new('\\').process_word(input, &env(pairs))
}

#[test]
fn trims_prefix_and_suffix_patterns() {
    let vars = [("F", "dir/sub/file.tar.gz")];
    assert_eq!(word("${F#*/}", &vars).unwrap(), "sub/file.tar.gz");
    assert_eq!(word("${F##*/}", &vars).unwrap(), "file.tar.gz");
    assert_eq!(word("${F%.*}", &vars).unwrap(), "dir/sub/file.tar");
    assert_eq!(word("${F%%.*}", &vars).unwrap(), "dir/sub/file");
    assert_eq!(word("${F%.zip}", &vars).unwrap(), "dir/sub/file.tar.gz");
    assert_eq!(word("${F#dir?}", &vars).unwrap(), "sub/file.tar.gz");
}

#[test]
fn escaped_wildcards_match_literally() {
    let vars = [("V", "a*b*c")];
    assert_eq!(word(r"${V#a\*}", &vars).unwrap(), "b*c");
    assert_eq!(word(r"${V%\*c}", &vars).unwrap(), "a*b");
    assert!(matches!(word(r"${V#\x}", &vars), Err(ShellError::InvalidPattern { .. })));
}

#[test]
fn replaces_first_or_all() {
    let vars = [("V", "a.b.c")];
    assert_eq!(word("${V/./-}", &vars).unwrap(), "a-b.c");
    assert_eq!(word("${V//./-}", &vars).unwrap(), "a-b-c");
    assert_eq!(word("${V/x/y}", &vars).unwrap(), "a.b.c");
    assert_eq!(word("${V//./$}", &vars).unwrap(), "a$b$c");
    assert!(matches!(word("${V/a", &vars), Err(ShellError::MissingSlash { .. })));
    assert!(matches!(word("${V/a/b", &vars), Err(ShellError::MissingBrace { .. })));
}

#[test]
fn backtick_escape() {
    let lex = ShellLex::new('`');
    let vars = env(&[("A", "x")]);
    assert_eq!(lex.process_word(r"C:\path\$A", &vars).unwrap(), r"C:\path\x");
    assert_eq!(lex.process_word("`$A", &vars).unwrap(), "$A");
    assert_eq!(lex.process_word("\"a`\"b\"", &vars).unwrap(), "a\"b");
}

#[test]
fn error_messages_name_the_word() {
    let err = word("he${XXX:?}", &[]).unwrap_err();
    assert_eq!(err.to_string(), "failed to process \"he${XXX:?}\": XXX: is not allowed to be unset");
    let err = word("${A:?must be set}", &[("A", "")]).unwrap_err();
    assert_eq!(err.to_string(), "failed to process \"${A:?must be set}\": A: must be set");
    let err = word("'abc", &[]).unwrap_err();
    assert!(err.to_string().ends_with("looking for matching single-quote"), "{err}");
}

#[test]
fn heredoc_bodies_keep_quotes() {
    let lex = ShellLex::new('`');
    let vars = env(&[("NAME", "kiln")]);
    let body = "echo \"hi $NAME\" '$NAME' \\$NAME\n";
    assert_eq!(lex.process_heredoc(body, &vars).unwrap(), "echo \"hi kiln\" 'kiln' $NAME\n");
}

#[test]
fn nesting_is_bounded() {
    let nested = |depth: usize| format!("{}a{}", "${X:-".repeat(depth), "}".repeat(depth));
    assert_eq!(word(&nested(MAX_NESTING - 1), &[]).unwrap(), "a");
    // Far deeper than any stack holds: an error, not a crash.
    for deep in [nested(MAX_NESTING), nested(10_000), format!("\"{}\"", nested(10_000))] {
        let err = word(&deep, &[]).unwrap_err();
        assert!(matches!(err, ShellError::TooDeep { .. }), "{err}");
        let text = err.to_string();
        assert!(text.len() < 200, "the error shows only the start of the word: {text}");
        assert!(text.contains("nested more than 100 levels"), "{text}");
    }
    let heredoc = ShellLex::new('\\').process_heredoc(&nested(10_000), &env(&[]));
    assert!(matches!(heredoc, Err(ShellError::TooDeep { .. })));
}

#[test]
fn growth_is_bounded() {
    let big = "x".repeat(MAX_GROWTH / 2 + 10);
    let vars = [("A", big.as_str()), ("B", "y")];
    assert_eq!(word("$A", &vars).unwrap().len(), big.len());
    assert!(matches!(word("$A$A", &vars), Err(ShellError::TooLong { .. })));
    assert!(matches!(word("\"${A}${A}\"", &vars), Err(ShellError::TooLong { .. })));
    assert!(matches!(word("${B:-$A$A}", &vars), Err(ShellError::TooLong { .. })));
    // Replacing every character with a long text multiplies the sizes.
    let many = "y".repeat(2000);
    let vars = [("A", big.as_str()), ("M", many.as_str())];
    assert!(matches!(word("${M//?/$A}", &vars), Err(ShellError::TooLong { .. })));
    assert_eq!(word("${M//y/zz}", &vars).unwrap().len(), 4000);
}

#[test]
fn words_split_on_unquoted_whitespace_only() {
    let lex = ShellLex::new('\\');
    let vars = env(&[("V", "a b")]);
    assert_eq!(lex.process_words("x $V 'y z' \"\" w", &vars).unwrap(), ["x", "a", "b", "y z", "w"]);
    assert_eq!(lex.process_words("${U:-\"p q\"}", &vars).unwrap(), ["p", "q"]);
    assert!(lex.process_words("", &vars).unwrap().is_empty());
}
