//! `kiln images` and `kiln inspect` show an image's size uncompressed (the
//! sum of its layers' tar sizes), as docker and podman do, whatever its
//! layers are stored as; `--format` templates of images, history and
//! inspect (issue 14). Run as the unprivileged test user.

use std::path::Path;

use kiln_integration::{decompress_any, find_descriptor, Sandbox};

/// The stored and the uncompressed bytes of `tag`'s layers in the layout at
/// `store`, and each layer's uncompressed bytes.
fn layer_tar_sizes(store: &Path, tag: &str) -> (u64, u64, Vec<u64>) {
    let desc = find_descriptor(store, tag);
    let blob =
        |digest: &str| std::fs::read(store.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(desc["digest"].as_str().unwrap())).unwrap();
    let (mut stored, mut plain, mut each) = (0, 0, Vec::new());
    for layer in manifest["layers"].as_array().unwrap() {
        let raw = blob(layer["digest"].as_str().unwrap());
        stored += raw.len() as u64;
        each.push(decompress_any(&raw).len() as u64);
        plain += each.last().unwrap();
    }
    (stored, plain, each)
}

/// go-units' HumanSize with 3 significant digits, for the few sizes here.
fn human(bytes: u64) -> String {
    let v = bytes as f64 / 1000.0;
    let text = format!(
        "{:.*}",
        if v < 10.0 {
            2
        } else if v < 100.0 {
            1
        } else {
            0
        },
        v
    );
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text}kB")
}

#[test]
fn images_and_inspect_show_uncompressed_sizes_and_format_fields() {
    let sb = Sandbox::new();
    // Compressible content: gzip makes it a fraction of its size.
    sb.write("ctx/text.txt", "all work and no play makes a dull image\n".repeat(4000));
    sb.write("ctx/small.txt", "small\n");
    sb.dockerfile("FROM scratch\nCOPY text.txt /text.txt\nLABEL kind=text\nCOPY small.txt /small.txt\n");
    let ctx = sb.ctx();
    sb.kiln(&["build", "-q", "--compression", "gzip", "-t", "gz:1", ctx.to_str().unwrap()]).ok();
    sb.kiln(&["build", "-q", "-t", "plain:1", ctx.to_str().unwrap()]).ok();
    let store = sb.store();
    let (stored, plain, each) = layer_tar_sizes(&store, "gz:1");
    assert!(stored * 5 < plain, "gzip'd layers ({stored} bytes) should be much smaller than their tars ({plain})");
    assert_eq!(layer_tar_sizes(&store, "plain:1"), (plain, plain, each.clone()), "the same layers, stored plain");

    // inspect's Size and images' SIZE: the tars, for both.
    for tag in ["gz:1", "plain:1"] {
        let size = sb.kiln(&["inspect", "--format", "{{.Size}}", tag]);
        size.ok();
        assert_eq!(size.stdout.trim(), plain.to_string(), "{tag}: {}", size.transcript());
    }
    let listed = sb.kiln(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}"]);
    listed.ok();
    let gz_id = sb.kiln(&["inspect", "--format", "{{.Id}}", "gz:1"]).ok().stdout.trim().to_string();
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert!(lines.contains(&format!("gz:1 {} {}", &gz_id[..12], human(plain)).as_str()), "{}", listed.transcript());
    assert!(lines.iter().any(|l| l.starts_with("plain:1 ") && l.ends_with(&human(plain))), "{}", listed.transcript());
    // The table the default listing prints says the same.
    let table = sb.kiln(&["images", "gz"]);
    table.ok();
    assert!(table.stdout.lines().nth(1).unwrap().trim_end().ends_with(&human(plain)), "{}", table.transcript());

    // A layer compressed at commit had its size read once, and recorded.
    let records: Vec<String> = std::fs::read_dir(store.join("kiln/diffids"))
        .map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap()).collect())
        .unwrap_or_default();
    assert!(records.iter().any(|r| r.split_whitespace().count() == 2), "records with sizes: {records:?}");

    // A layer received from outside (an archive, as a pull) is recorded with
    // its size as it is verified: another store loads the gzip'd image.
    let archive = sb.path("gz.tar");
    sb.kiln(&["save", "--format", "oci-archive", "-o", archive.to_str().unwrap(), "gz:1"]).ok();
    let other = Sandbox::new();
    let archive = other.copy_in(&archive, "gz.tar");
    other.kiln(&["load", "-i", archive.to_str().unwrap()]).ok();
    let records: Vec<String> = std::fs::read_dir(other.store().join("kiln/diffids"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let mut recorded: Vec<u64> =
        records.iter().map(|r| r.split_whitespace().nth(1).unwrap().parse().unwrap()).collect();
    recorded.sort();
    let mut want = each.clone();
    want.sort();
    assert_eq!(recorded, want, "one record per received layer, with its size: {records:?}");
    let size = other.kiln(&["inspect", "--format", "{{.Size}}", "gz:1"]);
    assert_eq!(size.ok().stdout.trim(), plain.to_string(), "{}", size.transcript());

    // --format: table headers, json, history and inspect fields.
    let table = sb.kiln(&["images", "--format", "table {{.Repository}}\t{{.Tag}}\t{{.Size}}", "gz"]);
    let rows: Vec<Vec<String>> =
        table.ok().stdout.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect();
    let want: Vec<Vec<String>> =
        vec![vec!["REPOSITORY".into(), "TAG".into(), "SIZE".into()], vec!["gz".into(), "1".into(), human(plain)]];
    assert_eq!(rows, want);
    let json = sb.kiln(&["images", "--format", "json", "gz:1"]);
    let v: serde_json::Value = serde_json::from_str(json.ok().stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        (v["Repository"].as_str(), v["Tag"].as_str(), v["Size"].as_str()),
        (Some("gz"), Some("1"), Some(human(plain).as_str()))
    );
    let history = sb.kiln(&["history", "--no-trunc", "--human=false", "--format", "{{.CreatedBy}}|{{.Size}}", "gz:1"]);
    let lines: Vec<String> = history.ok().stdout.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{}", history.transcript());
    assert!(lines[1].starts_with("LABEL kind=text|0"), "{}", history.transcript());
    // Layer sizes uncompressed, as docker's history shows them.
    assert_eq!(lines[0], format!("COPY small.txt /small.txt # buildkit|{}", each[1]), "{}", history.transcript());
    assert_eq!(lines[2], format!("COPY text.txt /text.txt # buildkit|{}", each[0]), "{}", history.transcript());
    let labels = sb.kiln(&["inspect", "--format", "{{.Config.Labels.kind}} {{index .RootFS.Layers 0}}", "gz:1"]);
    let first_diff = sb.kiln(&["inspect", "--format", "{{json .RootFS.Layers}}", "gz:1"]).ok().stdout.clone();
    let first_diff: Vec<String> = serde_json::from_str(first_diff.trim()).unwrap();
    assert_eq!(labels.ok().stdout.trim(), format!("text {}", first_diff[0]));
}
