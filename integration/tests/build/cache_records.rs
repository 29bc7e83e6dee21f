//! Build-cache records hold what each step added, not a copy of the whole
//! state: their total size grows with the Dockerfile, cache hits give the
//! same image, and a record kiln cannot use (an older format, a corrupt or
//! foreign file) is a miss, never an error. Run as the unprivileged test
//! user when the tests run as root.

use std::path::{Path, PathBuf};

use kiln_integration::Sandbox;

fn build(sb: &Sandbox, tag: &str) -> kiln_integration::Output {
    let ctx = sb.ctx();
    // A fixed epoch: a rebuild that misses still gives the same image id.
    let out = sb.kiln(&["build", "--source-date-epoch", "1700000000", "-t", tag, ctx.to_str().unwrap()]);
    out.ok();
    out
}

fn records(sb: &Sandbox) -> Vec<PathBuf> {
    let dir = sb.store().join("kiln").join("cache").join("steps");
    let mut out = Vec::new();
    let mut todo = vec![dir];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn total_size(paths: &[PathBuf]) -> u64 {
    paths.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { dir_size(&entry.path()) } else { meta.len() };
    }
    total
}

/// 4,000 LABEL lines (40 KB) wrote about 700 MB of records when each held
/// the whole config and history; with records of what a step added they
/// take about 2 MB.
#[test]
fn records_of_4000_labels_stay_small_and_hit() {
    let sb = Sandbox::new();
    sb.write("ctx/a.txt", "a\n");
    let mut dockerfile = String::from("FROM scratch\nCOPY a.txt /a\n");
    for i in 0..4000 {
        dockerfile.push_str(&format!("LABEL label{i}=value{i}\n"));
    }
    dockerfile.push_str("ENV E=1\nCOPY a.txt /b\n");
    sb.dockerfile(&dockerfile);

    let first = build(&sb, "labels");
    let files = records(&sb);
    assert_eq!(files.len(), 4003, "one record per step");
    let steps = total_size(&files);
    let cache = dir_size(&sb.store().join("kiln").join("cache"));
    assert!(steps < 4 << 20, "4,003 step records take {steps} bytes");
    assert!(cache < 8 << 20, "the whole build cache takes {cache} bytes");

    let second = build(&sb, "labels");
    assert_eq!(second.stdout.matches("--> Using cache").count(), 4003, "{}", second.stdout);
    assert_eq!(first.last_line(), second.last_line(), "a cached build gives the same image id");
    let image = sb.image("labels");
    assert_eq!(image.runtime()["Labels"]["label3999"], "value3999");
    assert_eq!(image.runtime()["Labels"].as_object().unwrap().len(), 4000);
    assert_eq!(image.history().len(), 4003);
    assert!(image.fs().contains_key("b"));
}

/// Hits across stages and every kind of metadata step rebuild the same
/// config: replaying the steps gives what running them gave.
#[test]
fn hits_replay_metadata_and_keep_layers_across_stages() {
    let sb = Sandbox::new();
    sb.write("ctx/a.txt", "a\n");
    sb.dockerfile(
        "FROM scratch AS one\nARG V=1\nCOPY a.txt /a\nENV A=1 B=$V\nENV A=2\nLABEL l=$A\nWORKDIR /w\nWORKDIR x\n\
         USER 1:2\nEXPOSE 80 53/udp\nVOLUME /v\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\nENTRYPOINT [\"/e\"]\n\
         STOPSIGNAL SIGINT\nONBUILD LABEL t=1\nHEALTHCHECK CMD true\n\
         FROM one AS two\nCOPY --from=one /a /from-one\nENV C=3\n",
    );
    let first = build(&sb, "stages");
    let before = sb.image("stages");
    let second = build(&sb, "stages");
    assert!(!second.stdout.contains("cache miss"), "{}", second.stdout);
    assert_eq!(first.last_line(), second.last_line());
    let after = sb.image("stages");
    assert_eq!(before.config, after.config);
    let env = after.runtime()["Env"].clone();
    assert_eq!(
        env,
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=2", "B=1", "C=3"])
    );
    assert_eq!(after.runtime()["WorkingDir"], "/w/x");
    assert_eq!(after.runtime()["Cmd"], serde_json::json!(["/bin/bash", "-c", "echo hi"]));
    assert!(after.fs().contains_key("from-one"));
}

/// Records written by an older kiln (the whole state), truncated, foreign
/// or for another parent are misses: the build runs the steps and succeeds.
#[test]
fn unusable_records_are_misses_not_errors() {
    let sb = Sandbox::new();
    sb.write("ctx/a.txt", "a\n");
    sb.dockerfile("FROM scratch\nCOPY a.txt /a\nLABEL x=1\nENV E=1\nCOPY a.txt /b\nLABEL y=2\n");
    let first = build(&sb, "r");
    let files = records(&sb);
    assert_eq!(files.len(), 5);
    let old_format = r#"{"config":{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Labels":{"evil":"1"}}},"layers":[],"cmd_set":false}"#;
    let good = std::fs::read_to_string(&files[0]).unwrap();
    let other_parent = good.replacen("\"parent\":\"", "\"parent\":\"x", 1);
    let contents = [
        old_format.to_string(),
        "{\"version\":2,\"par".to_string(),
        "\u{0}\u{1}garbage".to_string(),
        other_parent,
        String::new(),
    ];
    for (path, text) in files.iter().zip(contents) {
        std::fs::write(path, text).unwrap();
    }
    let second = build(&sb, "r");
    assert_eq!(second.stdout.matches("--> Using cache").count(), 0, "{}", second.stdout);
    assert_eq!(first.last_line(), second.last_line(), "the steps ran again and gave the same image");
    let labels = sb.image("r").runtime()["Labels"].clone();
    assert_eq!(labels, serde_json::json!({"x": "1", "y": "2"}), "nothing of the old-format record was used");
    // The records were rewritten: the next build hits every step.
    let third = build(&sb, "r");
    assert_eq!(third.stdout.matches("--> Using cache").count(), 5, "{}", third.stdout);
}
