use super::*;

#[test]
fn classifies_like_docker() {
    assert!(matches!(classify("https://h/x.tar.gz"), Some(Remote::Http(_))));
    assert!(matches!(classify("http://h/r.git#main"), Some(Remote::Git(_))));
    assert!(matches!(classify("git@github.com:o/r.git"), Some(Remote::Git(_))));
    assert!(matches!(classify("git://h/r"), Some(Remote::Git(_))));
    assert!(matches!(classify("ssh://git@h/r.git"), Some(Remote::Git(_))));
    assert_eq!(classify("./dir"), None);
    assert_eq!(classify("file.git"), None);
    assert_eq!(
        GitUrl::parse("github.com/o/r#v1:sub/dir/"),
        GitUrl { repo: "https://github.com/o/r".into(), reference: Some("v1".into()), subdir: Some("sub/dir".into()) }
    );
    assert_eq!(
        GitUrl::parse("git@h:r.git#:d"),
        GitUrl { repo: "git@h:r.git".into(), reference: None, subdir: Some("d".into()) }
    );
}

#[test]
fn file_names() {
    assert_eq!(url_file_name("http://h:1/a/b.tar.gz?x=1"), "b.tar.gz");
    assert_eq!(url_file_name("http://h/a/dir/"), "dir");
    assert_eq!(url_file_name("http://h"), "__unnamed__");
    assert_eq!(url_file_name("http://h/"), "__unnamed__");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {:?}: {}", args, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn clones_branches_and_commits_not_at_a_tip() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("r");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("a"), "1").unwrap();
    git(&repo, &["add", "a"]);
    git(&repo, &["commit", "-qm", "1"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("a"), "2").unwrap();
    git(&repo, &["commit", "-qam", "2"]);
    git(&repo, &["checkout", "-qb", "dev"]);
    std::fs::create_dir(repo.join("d")).unwrap();
    std::fs::write(repo.join("d/b"), "3").unwrap();
    git(&repo, &["add", "d"]);
    git(&repo, &["commit", "-qm", "3"]);
    let dev = git(&repo, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());
    let cases = [
        (format!("{url}#{first}"), first.clone(), "1"),
        (format!("{url}#dev:d"), dev.clone(), "2"),
        (url.clone(), dev, "2"),
    ];
    for (i, (word, commit, a)) in cases.iter().enumerate() {
        let dest = tmp.path().join(format!("c{i}"));
        std::fs::create_dir(&dest).unwrap();
        let got = GitUrl::parse(word).clone_into(&dest, false).unwrap();
        assert_eq!(&got, commit, "{word}");
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), *a, "{word}");
        assert!(!dest.join(".git").exists());
    }
    let dest = tmp.path().join("keep");
    std::fs::create_dir(&dest).unwrap();
    GitUrl::parse(&format!("{url}#main")).clone_into(&dest, true).unwrap();
    assert!(dest.join(".git/HEAD").is_file());
    let missing = tmp.path().join("missing");
    std::fs::create_dir(&missing).unwrap();
    let err = GitUrl::parse(&format!("{url}#nope")).clone_into(&missing, false).unwrap_err();
    assert!(matches!(err, RemoteError::Git { .. }), "{err}");
}

#[test]
fn http_dates() {
    assert_eq!(parse_http_date("Sat, 29 Oct 1994 19:43:31 GMT"), Some(783459811));
    assert_eq!(parse_http_date("yesterday"), None);
}
