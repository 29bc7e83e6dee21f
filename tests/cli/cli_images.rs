//! kiln images, inspect, history and tag against real stores built with
//! `kiln build`, cross-checked with skopeo and umoci.

use crate::cli_util;

use cli_util::{rows, s, tool, Env};
use serde_json::Value;

#[test]
fn images_lists_like_docker() {
    let env = Env::new();
    let v1 = env.build("app:v1", &[("a.txt", "one\n")], "");
    let v2 = env.build("app:v2", &[("a.txt", "two\n")], "LABEL stage=final\n");
    let dangling = env.build("", &[("a.txt", "three\n")], "");
    env.ok(&["tag", "app:v1", "other/x:1"]);

    let out = env.ok(&["images"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED"), "docker's tabwriter layout: {out}");
    let table = rows(&out);
    assert_eq!(table[0], ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    assert_eq!(table.len(), 5, "{out}");
    let find = |repo: &str, tag: &str| table.iter().find(|r| r[0] == repo && r[1] == tag).cloned();
    let row = find("app", "v1").expect("app:v1 listed");
    assert_eq!(row[2], v1[..12]);
    assert!(row[3].ends_with(" ago"), "relative time: {row:?}");
    assert!(row[4].ends_with('B'), "size: {row:?}");
    assert_eq!(find("other/x", "1").unwrap()[2], v1[..12]);
    assert_eq!(find("app", "v2").unwrap()[2], v2[..12]);
    assert_eq!(find("<none>", "<none>").unwrap()[2], dangling[..12]);

    // -q: each id once; --no-trunc: full ids.
    let quiet = env.ok(&["images", "-q"]);
    let mut ids: Vec<&str> = quiet.lines().collect();
    ids.sort();
    let mut want = vec![&v1[..12], &v2[..12], &dangling[..12]];
    want.sort();
    assert_eq!(ids, want);
    assert!(env.ok(&["images", "-q", "--no-trunc"]).lines().any(|l| l == format!("sha256:{v1}")));

    // Filters and a repository argument.
    assert_eq!(env.ok(&["images", "-q", "--filter", "dangling=true"]).trim(), &dangling[..12]);
    let refs = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=app:*"]);
    let mut refs: Vec<&str> = refs.lines().collect();
    refs.sort();
    assert_eq!(refs, ["app:v1", "app:v2"]);
    assert_eq!(env.ok(&["images", "-q", "--filter", "label=stage=final"]).trim(), &v2[..12]);
    assert_eq!(env.ok(&["images", "--format", "{{.Tag}}", "other/*"]).trim(), "1");
    let since = env.ok(&["images", "-q", "--filter", &format!("since={v1}")]);
    assert!(!since.contains(&v1[..12]) && since.contains(&v2[..12]), "{since}");

    // --digests and --format json agree with inspect.
    let digest = env.inspect("app:v2")["Digest"].as_str().unwrap().to_string();
    let with_digests = env.ok(&["images", "--digests", "app"]);
    assert!(rows(&with_digests)[0].contains(&"DIGEST".to_string()));
    assert!(with_digests.contains(&digest), "{with_digests}");
    for line in env.ok(&["images", "--format", "json"]).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for key in ["Repository", "Tag", "ID", "CreatedSince", "CreatedAt", "Size", "Digest"] {
            assert!(v.get(key).is_some(), "{key} in {line}");
        }
    }
    let custom = env.ok(&["images", "--format", "table {{.Repository}}\\t{{.ID}}", "app"]);
    assert!(custom.starts_with("REPOSITORY   IMAGE ID\n"), "{custom}");
}

#[test]
fn inspect_agrees_with_skopeo_and_umoci() {
    let env = Env::new();
    let id = env.build(
        "app:v1",
        &[("etc/hello", "hello\n"), ("bin/tool", "#!/bin/sh\n")],
        "ENV A=1 B=2\nCMD [\"/bin/tool\"]\n",
    );
    let v = env.inspect("app:v1");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["RepoTags"], serde_json::json!(["app:v1"]));
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["/bin/tool"]));
    assert_eq!(v["RootFS"]["Type"], "layers");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["History"].as_array().unwrap().len(), 4);
    let digest = v["Digest"].as_str().unwrap();
    assert_eq!(v["RepoDigests"], serde_json::json!([format!("app@{digest}")]));
    for key in ["Created", "Size", "Annotations", "Architecture", "Os"] {
        assert!(v.get(key).is_some(), "{key}");
    }
    // The size is the layers' uncompressed size, as docker's and podman's:
    // here plain tars, the layer blobs themselves.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(env.store.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let tar_bytes: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar"), "{manifest}");
    assert_eq!(v["Size"].as_u64().unwrap(), tar_bytes);

    assert_eq!(env.ok(&["inspect", "--format", "{{.Id}}", "app:v1"]).trim(), id);
    let env_line = env.ok(&["inspect", "-f", "{{.Config.Env}}", "app:v1"]);
    assert!(env_line.trim().starts_with("[PATH=") && env_line.trim().ends_with(" A=1 B=2]"), "{env_line}");
    let config: Value = serde_json::from_str(&env.ok(&["inspect", "-f", "{{json .Config}}", &id[..8]])).unwrap();
    assert_eq!(config, v["Config"]);
    assert_eq!(env.ok(&["inspect", "-f", "{{index .RootFS.Layers 1}}", "app:v1"]).trim(), v["RootFS"]["Layers"][1]);
    let err = env.kiln(&["inspect", "app:v1", "nope:1"]).output().unwrap();
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("no such image: nope:1"));

    if let Some(out) = tool("skopeo", &["inspect", &format!("oci:{}:app:v1", s(&env.store))]) {
        let sk: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(sk["Digest"], digest, "skopeo sees kiln's manifest digest");
        assert_eq!(sk["Env"], v["Config"]["Env"]);
        let sk_raw = tool("skopeo", &["inspect", "--config", &format!("oci:{}:app:v1", s(&env.store))]).unwrap();
        let sk_config: Value = serde_json::from_str(&sk_raw).unwrap();
        assert_eq!(sk_config["rootfs"]["diff_ids"], v["RootFS"]["Layers"]);
    }
    if let Some(out) = tool("umoci", &["ls", "--layout", s(&env.store)]) {
        assert_eq!(out.trim(), "app:v1");
        env.ok(&["tag", "app:v1", "app:v2"]);
        let out = tool("umoci", &["ls", "--layout", s(&env.store)]).unwrap();
        let mut tags: Vec<&str> = out.lines().collect();
        tags.sort();
        assert_eq!(tags, ["app:v1", "app:v2"]);
    }
}

#[test]
fn history_shows_steps_newest_first() {
    let env = Env::new();
    let long_name = "a-file-with-a-rather-long-name-to-cut-short.txt";
    let id = env.build("app:v1", &[("small", "x"), (long_name, "long\n")], "ENV X=1\nCMD [\"/small\"]\n");
    let out = env.ok(&["history", "app:v1"]);
    let table = rows(&out);
    assert_eq!(table[0], ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], "{out}");
    assert!(out.lines().next().unwrap().ends_with("COMMENT"), "{out}");
    assert_eq!(table.len(), 5, "{out}");
    assert_eq!(table[1][0], id[..12]);
    assert!(table[2..].iter().all(|r| r[0] == "<missing>"), "{out}");
    assert_eq!(table[1][2], "CMD [\"/small\"]");
    assert_eq!(table[1][3], "0B");
    let copy_row = &table[3];
    assert_eq!(copy_row[2].chars().count(), 45, "cut to 45 characters: {copy_row:?}");
    assert!(copy_row[2].ends_with('…'));

    let full = env.ok(&["history", "--no-trunc", "--human=false", "app:v1"]);
    let full_rows = rows(&full);
    assert_eq!(full_rows[1][0], format!("sha256:{id}"));
    assert!(full.contains(&format!("COPY {long_name} /{long_name}")), "{full}");
    assert!(full_rows[1][1].ends_with('Z') && full_rows[1][1].contains('T'), "RFC 3339: {full}");
    // --human=false sizes are the layers' uncompressed sizes in bytes (here
    // plain tars: their blob sizes).
    let v = env.inspect("app:v1");
    let layer_sizes: Vec<u64> = {
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(
                env.store.join("blobs/sha256").join(v["Digest"].as_str().unwrap().trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
        .unwrap();
        manifest["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).collect()
    };
    let sizes: Vec<u64> = full_rows[1..].iter().rev().map(|r| r[3].parse().unwrap()).filter(|&n| n > 0).collect();
    assert_eq!(sizes, layer_sizes);

    let quiet = env.ok(&["history", "-q", "app:v1"]);
    assert_eq!(quiet.lines().collect::<Vec<_>>(), [&id[..12], "<missing>", "<missing>", "<missing>"]);
    let fmt = env.ok(&["history", "--format", "{{.CreatedBy}}|{{.Size}}", "app:v1"]);
    assert_eq!(fmt.lines().next().unwrap(), "CMD [\"/small\"]|0B");
}

#[test]
fn tag_adds_names_and_refuses_bad_ones() {
    let env = Env::new();
    let id = env.build("app:v1", &[("a", "a")], "");
    env.ok(&["tag", &id[..6], "app:v2", "localhost:5000/team/app"]);
    let names = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["app:v1", "app:v2", "localhost:5000/team/app:latest"]);
    assert!(env.fails(&["tag", "app:v1", "Bad:Name"]).contains("invalid tag"));
    assert!(env.fails(&["tag", "nope:1", "x"]).contains("no such image"));
}

#[test]
fn every_command_has_help_with_an_example() {
    let env = Env::new();
    for cmd in [
        vec!["images"],
        vec!["inspect"],
        vec!["history"],
        vec!["tag"],
        vec!["rmi"],
        vec!["save"],
        vec!["load"],
        vec!["export-layout"],
        vec!["image", "prune"],
        vec!["image", "ls"],
        vec!["system", "prune"],
        vec!["system", "df"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = env.ok(&args);
        assert!(out.contains("Example"), "{cmd:?} --help has an example:\n{out}");
        assert!(out.contains(&format!("kiln {}", cmd.join(" "))) || out.contains("kiln "), "{out}");
    }
}
