//! BuildKit's shell-lexer test vectors (tests/fixtures/buildkit-shell, see its
//! README.md and LICENSE) run against kiln's expander. Every failing line is
//! reported, not just the first.

use std::collections::HashMap;
use std::path::PathBuf;

use kiln::dockerfile::shell::ShellLex;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildkit-shell").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(value) => format!("{value:?}"),
        Err(err) => format!("error ({err})"),
    }
}

fn report(kind: &str, checked: usize, failures: &[String]) {
    assert!(checked > 0, "{kind}: no cases found");
    assert!(failures.is_empty(), "{kind}: {} of {checked} cases failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn env_var_test_vectors() {
    let env: HashMap<String, String> = [("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lex = ShellLex::new('\\');
    let text = fixture("envVarTest");
    let (mut checked, mut failures) = (0, Vec::new());
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(3, '|').map(str::trim).collect();
        let [platform, input, expected] = fields[..] else {
            failures.push(format!("line {number}: malformed: {line}"));
            continue;
        };
        if platform == "W" {
            continue;
        }
        checked += 1;
        let result = lex.process_word(input, &env);
        let ok = match &result {
            Ok(value) => expected != "error" && value == expected,
            Err(_) => expected == "error",
        };
        if !ok {
            failures.push(format!("line {number}: {input:?}: want {expected:?}, got {}", outcome(&result)));
        }
    }
    report("envVarTest", checked, &failures);
}

#[test]
fn words_test_vectors() {
    let mut env: HashMap<String, String> = HashMap::new();
    let lex = ShellLex::new('\\');
    let text = fixture("wordsTest");
    let (mut checked, mut failures) = (0, Vec::new());
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start();
            let (key, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.insert(key.to_string(), value.to_string());
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            failures.push(format!("line {number}: malformed: {line}"));
            continue;
        };
        let (input, expected) = (input.trim(), expected.trim_start());
        checked += 1;
        let result = lex.process_words(input, &env);
        let ok = match &result {
            Ok(words) => expected != "error" && words.join(",") == expected,
            Err(_) => expected == "error",
        };
        if !ok {
            failures.push(format!("line {number}: {input:?}: want {expected:?}, got {}", outcome(&result)));
        }
    }
    report("wordsTest", checked, &failures);
}
