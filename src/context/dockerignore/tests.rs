use super::*;

fn ig(lines: &[&str]) -> DockerIgnore {
    DockerIgnore::parse(&lines.join("\n")).unwrap_or_else(|e| panic!("{lines:?}: {e}"))
}

#[test]
fn names_and_patterns_that_are_not_utf8_match_by_bytes() {
    let one = DockerIgnore::parse_bytes(b"x\xff\nd\xfe\n").unwrap();
    assert!(one.matches(b"x\xff"));
    assert!(!one.matches(b"x\xfe"), "a different byte is a different name");
    assert!(one.matches(b"d\xfe/inner") && !one.matches(b"d\xff/inner"));
    let glob = DockerIgnore::parse_bytes(b"x?\n!x\xfe\n**/*\xfd\n").unwrap();
    assert!(glob.matches(b"x\xff") && !glob.matches(b"x\xfe"));
    assert!(glob.matches(b"a/b/c\xfd") && !glob.matches(b"a/b/c\xfc"));
    assert!(glob.may_include_under(b"x\xfe") && !glob.may_include_under(b"x\xff"));
    // Patterns are text; the lossy U+FFFD spelling matches no raw byte.
    assert!(!ig(&["x\u{fffd}"]).matches(b"x\xff"));
}

#[test]
fn clean_like_go() {
    let cases = [
        ("", "."),
        ("a/b/", "a/b"),
        ("./a//b", "a/b"),
        ("a/../b", "b"),
        ("a/../..", ".."),
        ("../x", "../x"),
        ("/../x", "/x"),
        ("/", "/"),
        ("a/./b/.", "a/b"),
    ];
    for (input, want) in cases {
        assert_eq!(clean(input), want, "clean({input:?})");
    }
}

// Docker's documented .dockerignore examples.
#[test]
fn documented_examples() {
    let cases: &[(&[&str], &str, bool)] = &[
        // `*/temp*`: one level below the root.
        (&["*/temp*"], "somedir/temporary.txt", true),
        (&["*/temp*"], "somedir/temp", true),
        (&["*/temp*"], "temp", false),
        (&["*/temp*"], "a/b/temp.txt", false),
        // `*/*/temp*`: two levels below.
        (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
        (&["*/*/temp*"], "somedir/temporary.txt", false),
        // `temp?`: one character.
        (&["temp?"], "tempa", true),
        (&["temp?"], "tempb", true),
        (&["temp?"], "temp", false),
        (&["temp?"], "tempab", false),
        (&["temp?"], "dir/tempa", false),
        // `**/*.go` at any depth, including the root.
        (&["**/*.go"], "main.go", true),
        (&["**/*.go"], "a/b/c/x.go", true),
        (&["**/*.go"], "a/b/c/x.rs", false),
        // Exceptions: last match wins.
        (&["*.md", "!README.md"], "README.md", false),
        (&["*.md", "!README.md"], "CHANGES.md", true),
        (&["*.md", "!README*.md", "README-secret.md"], "README-secret.md", true),
        (&["*.md", "!README*.md", "README-secret.md"], "README-public.md", false),
        (&["*.md", "README-secret.md", "!README*.md"], "README-secret.md", false),
        // An exception re-including a file inside an excluded directory.
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs", "!docs/README.md"], "docs/other.md", true),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        // Leading `/` is the context root; trailing `/` is dropped.
        (&["/foo/bar"], "foo/bar", true),
        (&["foo/bar"], "foo/bar", true),
        (&["/foo/bar"], "x/foo/bar", false),
        (&["build/"], "build/out/x.o", true),
        (&["build/"], "build", true),
        // A parent directory match excludes everything below it.
        (&["node_modules"], "node_modules/a/b/c.js", true),
        (&["node_modules"], "src/node_modules/x", false),
        // `..` in patterns is cleaned lexically.
        (&["a/../b"], "b", true),
        (&["a/../b"], "a/b", false),
        (&["../outside"], "outside", false),
        (&["./x"], "x", true),
        // `.` is ignored in effect: the root is never excluded.
        (&["."], "x", false),
        (&["*"], ".", false),
    ];
    for (lines, path, want) in cases {
        assert_eq!(ig(lines).matches(path), *want, "patterns {lines:?} path {path:?}");
    }
}

#[test]
fn parsing_rules() {
    let text = "\u{feff}# comment\n\n  spaced  \n/abs/path\n ! /inverted/abs/path\n #notcomment\r\nlast\n";
    let i = DockerIgnore::parse(text).unwrap();
    assert!(i.matches("spaced"));
    assert!(i.matches("abs/path"));
    assert!(i.matches("#notcomment"));
    assert!(!i.matches("comment"));
    assert!(!i.matches("# comment"));
    assert!(i.matches("last"));
    assert!(i.has_exceptions());
    assert!(!ig(&["a", "b"]).has_exceptions());
    assert!(matches!(DockerIgnore::parse("a\n!\n"), Err(IgnoreError::LoneExclamation { line: 2 })));
    assert!(DockerIgnore::parse("! ").is_err());
    assert!(DockerIgnore::parse("[").is_err());
    assert!(DockerIgnore::parse("a[").is_err());
    assert!(DockerIgnore::parse("[]a]").is_err());
    assert!(DockerIgnore::parse("[Local-Only]/").is_err());
    assert!(!DockerIgnore::empty().matches("anything"));
}

// moby/patternmatcher TestMatches, re-typed. `true` = excluded by
// MatchesOrParentMatches (exact or inexact match).
#[test]
fn patternmatcher_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("**/**", "dir/file/", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true),
        ("a\\\\", "a\\", true),
        ("a\\*b", "a*b", true),
        // Suffix patterns are plain string suffixes, as in docker.
        ("**.go", "a/b.go", true),
        ("**file", "dir/myfile", true),
        // filepath.Match-derived cases.
        ("a*", "ab/c", true),
        ("a*/b", "abc/b", true),
        ("a*/b", "a/c/b", false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
    ];
    for (pattern, path, want) in cases {
        assert_eq!(ig(&[pattern]).matches(path), *want, "pattern {pattern:?} path {path:?}");
    }
    let multi: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (&["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", true),
        (
            &["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (&["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["*"], "fileutils.go", true),
    ];
    for (lines, path, want) in multi {
        assert_eq!(ig(lines).matches(path), *want, "patterns {lines:?} path {path:?}");
    }
}

// Arbitrary pattern text must parse or fail cleanly, never panic.
#[test]
fn no_panics_on_noise() {
    let alphabet: Vec<char> = "*?[]^!-\\/.a b#\n☺".chars().collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..5000 {
        let len = (next() % 12) as usize;
        let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        if let Ok(i) = DockerIgnore::parse(&text) {
            for path in ["a", "a/b", "a b/.a", "☺/a/b/c", "/", ""] {
                let _ = i.matches(path);
                let _ = i.may_include_under(path);
            }
        }
    }
}

#[test]
fn descend_decisions() {
    let i = ig(&["docs", "!docs/api/README.md"]);
    assert!(i.may_include_under("docs"));
    assert!(i.may_include_under("docs/api"));
    assert!(!i.may_include_under("docs/other"));
    assert!(!i.may_include_under("src"));

    let i = ig(&["*", "!**/keep"]);
    assert!(i.may_include_under("anything/deep"));

    let i = ig(&["vendor", "!vendor/*/LICENSE"]);
    assert!(i.may_include_under("vendor"));
    assert!(i.may_include_under("vendor/lib"));
    assert!(!i.may_include_under("other"));

    // An exception naming the directory itself re-includes all below.
    let i = ig(&["a", "!a/b"]);
    assert!(i.may_include_under("a/b/c"));

    assert!(!ig(&["a"]).may_include_under("a"));
}
