//! Modules stay small enough to read: a source file of the engine over
//! [`LIMIT`] lines is one concern too many, unless its module doc says why
//! it reads best whole, in a line starting with `Long because`.
//!
//! For every crate of the workspace this counts the lines of each `.rs`
//! file below its `src` and fails naming every file over the limit whose
//! leading `//!` lines give no such reason and that is not in [`KNOWN`].
//! Test-only files (`tests.rs`, files under a `tests/` dir) are not counted.

use std::path::{Path, PathBuf};

/// Lines a file may have without a reason.
const LIMIT: usize = 500;

/// Long files allowed to remain for now, as paths from the workspace root;
/// the test also fails when an entry here is no longer long, or gives its
/// reason, so that the list only shrinks.
const KNOWN: &[&str] = &[];

const CRATE_DIRS: &[&str] = &["src", "overlay/src", "runtime/src"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether a file under a crate's `src` only holds tests.
fn test_only(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| n == "tests.rs") || rel.iter().any(|p| p == "tests")
}

/// Whether the module doc (the leading `//!` lines) says why the file is long.
fn says_why_long(src: &str) -> bool {
    src.lines()
        .take_while(|l| l.starts_with("//!"))
        .any(|l| l.trim_start_matches("//!").trim_start().starts_with("Long because"))
}

/// Every source file over the limit without a reason, with its line count,
/// as paths from the workspace root.
fn long_files() -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for dir in CRATE_DIRS {
        let base = root().join(dir);
        for entry in walkdir::WalkDir::new(&base).sort_by_file_name().into_iter().filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&base).expect("below the crate dir");
            if test_only(rel) {
                continue;
            }
            let src = std::fs::read_to_string(path).expect("read a source file");
            let lines = src.lines().count();
            if lines > LIMIT && !says_why_long(&src) {
                found.push((format!("{dir}/{}", rel.display()), lines));
            }
        }
    }
    found
}

#[test]
fn no_new_long_files() {
    let found = long_files();
    let new: Vec<String> = found
        .iter()
        .filter(|(path, _)| !KNOWN.contains(&path.as_str()))
        .map(|(path, lines)| format!("  {path} ({lines} lines)"))
        .collect();
    let gone: Vec<String> =
        KNOWN.iter().filter(|k| !found.iter().any(|(path, _)| path == *k)).map(|k| format!("  {k}")).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "source files over {LIMIT} lines changed.\nNew long files (split them by concern into small modules named \
         for what they do, or say in one module-doc line starting with `Long because` why one reads best whole):\n{}\n\
         Files in KNOWN that are no longer long (delete their entries in tests/module_sizes.rs):\n{}",
        new.join("\n"),
        gone.join("\n")
    );
}

#[test]
fn the_checker_reads_reasons_and_skips_tests() {
    assert!(says_why_long("//! A parser.\n//!\n//! Long because one state machine reads best whole.\nuse x;\n"));
    assert!(!says_why_long("//! A parser.\nuse x;\n//! Long because it is not the module doc.\n"));
    assert!(!says_why_long("// Long because a plain comment is no module doc.\n"));
    assert!(test_only(Path::new("pgzip/huffman/tests.rs")));
    assert!(test_only(Path::new("a/tests/b.rs")));
    assert!(!test_only(Path::new("store/gc.rs")));
}
