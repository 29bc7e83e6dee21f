//! `kiln system check [--repair]`: each kind of damage is reported with its
//! path, repair leaves a consistent store with the good images intact, and
//! a broken image stops no other command.

use crate::cli_util;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use cli_util::Env;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a blob under its digest; returns (digest, size).
fn put_blob(env: &Env, bytes: &[u8]) -> (String, u64) {
    let h = hex(bytes);
    std::fs::write(env.store.join("blobs/sha256").join(&h), bytes).unwrap();
    (format!("sha256:{h}"), bytes.len() as u64)
}

fn blob_path(env: &Env, digest: &str) -> PathBuf {
    env.store.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// An image manifest (written as a blob) for `config` and `layers`.
fn put_manifest(env: &Env, config: &(String, u64), layers: &[(String, u64)]) -> (String, u64) {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
    });
    put_blob(env, &serde_json::to_vec(&manifest).unwrap())
}

/// Adds a tag to index.json by hand, as another tool could.
fn tag_by_hand(env: &Env, tag: &str, manifest: &(String, u64)) {
    let path = env.store.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest.0,
        "size": manifest.1,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The manifest digest of an image (by tag or id), and its layer digests.
fn manifest_of(env: &Env, image: &str) -> (String, Vec<String>) {
    let v = env.inspect(image);
    let digest = v["Digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob_path(env, &digest)).unwrap()).unwrap();
    let layers =
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
    (digest, layers)
}

/// Runs `system check` (with `extra` args); returns (exit code, stdout, stderr).
fn check(env: &Env, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["system", "check"];
    args.extend_from_slice(extra);
    let out = env.kiln(&args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The stdout line that names `path`, with `needle` in it.
#[track_caller]
fn assert_line(out: &str, path: &Path, needle: &str) {
    let p = path.display().to_string();
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{p}: ")) && l.contains(needle)),
        "no line for {p} with {needle:?}:\n{out}"
    );
}

fn make_layer_dir(env: &Env, name: &str, marker: Option<&str>) -> PathBuf {
    let dir = env.store.join("kiln/layers").join(name);
    std::fs::create_dir_all(dir.join("diff/usr/bin")).unwrap();
    std::fs::write(dir.join("diff/usr/bin/tool"), "tool").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("diff/usr/bin"), std::fs::Permissions::from_mode(0o555)).unwrap();
    if let Some(marker) = marker {
        std::fs::write(dir.join("verified"), format!("{marker}\n")).unwrap();
    }
    dir
}

#[test]
fn a_clean_store_checks_clean() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "cached content").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\nENV A=1\n").unwrap();
    env.build("", &[("d", "dangling")], "");
    // A real build leaves its cache records: they are checked too.
    env.ok(&["build", "-q", "-t", "app:1", ctx.to_str().unwrap()]);
    assert!(env.store.join("kiln/cache/steps").is_dir());
    let (code, out, err) = check(&env, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("store is consistent (6 blobs, 2 images, 0 layer dirs)"), "{out}");
}

#[test]
fn each_kind_of_damage_is_reported_and_repair_makes_the_store_clean() {
    let env = Env::new();
    env.build("good:1", &[("g", "good content\n")], "ENV G=1\n");
    env.build("good:2", &[("g2", "more good content\n")], "");
    let good_blobs = env.blob_count();
    let good_chain = {
        let v = env.inspect("good:1");
        let ids: Vec<String> =
            v["RootFS"]["Layers"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().into()).collect();
        kiln::store::chain_ids(&ids).pop().unwrap()
    };
    // A good image's layer dir, as a RUN or `kiln run` leaves it: kept.
    let good_dir = make_layer_dir(&env, good_chain.trim_start_matches("sha256:"), Some(&good_chain));

    // A dangling image whose layer blob is truncated.
    let dangling_id = env.build("", &[("t", &"truncated ".repeat(500))], "");
    let (dangling_manifest, dangling_layers) = manifest_of(&env, &dangling_id[..12]);
    let truncated = blob_path(&env, &dangling_layers[0]);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // A blob whose content is not what its name says.
    let wrong = blob_path(&env, &format!("sha256:{}", hex(b"what the name says")));
    std::fs::write(&wrong, b"something else").unwrap();
    // A tagged image whose manifest is gone.
    env.build("gone:1", &[("x", "gone content\n")], "");
    let (gone_manifest, _) = manifest_of(&env, "gone:1");
    std::fs::remove_file(blob_path(&env, &gone_manifest)).unwrap();
    // An untagged image whose config is no JSON (what a failed import left).
    let bad_config = put_blob(&env, b"this is not json\n");
    let bad_manifest = put_manifest(&env, &bad_config, &[]);
    // Layer dirs: without a marker, with another chain's marker, and one no image uses.
    let no_marker = make_layer_dir(&env, &"a".repeat(64), None);
    let other = format!("sha256:{}", "c".repeat(64));
    let wrong_marker = make_layer_dir(&env, &"b".repeat(64), Some(&other));
    let orphan_chain = format!("sha256:{}", "d".repeat(64));
    let orphan = make_layer_dir(&env, &"d".repeat(64), Some(&orphan_chain));
    // Leftovers of killed kilns.
    let tmp_blob = env.store.join("kiln/tmp/blob-x1y2z3");
    std::fs::write(&tmp_blob, vec![1u8; 10_000]).unwrap();
    let step = make_layer_dir(&env, ".step-killed", None);
    let scratch = env.store.join("kiln/tmp/build-killed/from-0");
    std::fs::create_dir_all(&scratch).unwrap();
    // A build-cache record naming a layer the store lacks.
    let missing = format!("sha256:{}", "e".repeat(64));
    let key = "f".repeat(64);
    let record_dir = env.store.join("kiln/cache/steps").join(&key[..2]);
    std::fs::create_dir_all(&record_dir).unwrap();
    let record = record_dir.join(format!("{key}.json"));
    let record_json = json!({
        "version": 2, "parent": "scratch:linux/amd64/", "history": [],
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing, "size": 10}],
        "diff_ids": [missing],
    });
    std::fs::write(&record, serde_json::to_vec(&record_json).unwrap()).unwrap();

    let (code, out, err) = check(&env, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert_line(&out, &truncated, "not to the blob's name: truncated or corrupt");
    assert_line(&out, &wrong, "not to the blob's name");
    assert_line(&out, &blob_path(&env, &gone_manifest), "missing: tag gone:1 in index.json needs it as its manifest");
    assert_line(&out, &blob_path(&env, &bad_config.0), "not a valid image config");
    assert_line(&out, &no_marker, "without its `verified` marker");
    assert_line(&out, &wrong_marker, &format!("marker names {other:?}"));
    assert_line(&out, &orphan, "no image or build-cache record uses");
    assert_line(&out, &tmp_blob, "left behind by an interrupted kiln");
    assert_line(&out, &env.store.join("kiln/tmp/build-killed"), "left behind");
    assert_line(&out, &step, "left behind");
    assert_line(&out, &record, &format!("names blob {missing}, which is not in the store"));
    let problems = out.lines().filter(|l| l.starts_with('/')).count();
    assert_eq!(out.lines().last().unwrap(), format!("{problems} problems"), "{out}");
    assert!(!out.contains(&good_dir.display().to_string()), "the good layer dir is fine:\n{out}");
    assert!(err.contains("--repair"), "{err}");
    // Checking changed nothing.
    assert!(truncated.exists() && tmp_blob.exists() && no_marker.exists() && record.exists());

    let (code, out, err) = check(&env, &["--repair"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for path in [&truncated, &wrong, &no_marker, &wrong_marker, &orphan, &tmp_blob, &step, &record] {
        let line = format!("removed {}: ", path.display());
        assert!(out.lines().any(|l| l.starts_with(&line)), "no {line:?}:\n{out}");
        assert!(!path.exists(), "{} is still there", path.display());
    }
    // The broken untagged images go whole; the tag of the missing manifest goes.
    for blob in [&dangling_manifest, &bad_manifest.0, &bad_config.0] {
        assert!(out.contains(&format!("removed {}: ", blob_path(&env, blob).display())), "{blob}:\n{out}");
    }
    assert!(
        out.contains(&format!("removed tag gone:1 from index.json: its manifest {gone_manifest} is missing")),
        "{out}"
    );
    assert!(out.lines().last().unwrap().starts_with("store is consistent"), "{out}");
    let (code, out, _) = check(&env, &[]);
    assert_eq!(code, 0, "{out}");

    // The good images are intact, and usable.
    assert!(good_dir.join("verified").exists());
    let images = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut listed: Vec<&str> = images.lines().collect();
    listed.sort();
    assert_eq!(listed, ["good:1", "good:2"], "{images}");
    assert!(env.blob_count() >= good_blobs);
    let ctx = env.path("ctx2");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("n"), "new").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM good:1\nCOPY n /n\n").unwrap();
    env.ok(&["build", "-q", "-t", "next:1", ctx.to_str().unwrap()]);
    assert_eq!(env.inspect("next:1")["RootFS"]["Layers"].as_array().unwrap().len(), 2);
}

/// A tagged image whose config is no JSON: listing, df and both prunes
/// skip it with a warning naming it; check reports it, repair keeps it
/// (it is tagged) and says how to remove it; rmi does.
#[test]
fn a_broken_image_stops_no_command() {
    let env = Env::new();
    env.build("good:1", &[("g", "good\n")], "");
    env.build("", &[("d", "dangling\n")], "");
    let bad_config = put_blob(&env, b"<html>not json</html>\n");
    let bad_manifest = put_manifest(&env, &bad_config, &[]);
    tag_by_hand(&env, "bad:1", &bad_manifest);
    // And an untagged one of the same kind.
    let config2 = put_blob(&env, b"also not json");
    put_manifest(&env, &config2, &[]);

    let out = env.kiln(&["images"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("good") && !stdout.contains("bad"), "{stdout}");
    assert!(stderr.contains("skipping image bad:1"), "{stderr}");
    env.ok(&["system", "df"]);
    env.ok(&["system", "df", "-v"]);
    env.ok(&["image", "prune", "-f"]);
    env.ok(&["system", "prune", "-f"]);
    assert!(env.ok(&["images", "-q"]).trim().len() == 12, "good:1 stays");

    let (code, out, _) = check(&env, &["--repair"]);
    assert_eq!(code, 1, "{out}");
    assert_line(&out, &blob_path(&env, &bad_config.0), "`kiln rmi bad:1`");
    assert_eq!(out.lines().last().unwrap(), "1 problem", "{out}");
    assert_eq!(env.ok(&["rmi", "bad:1"]), "Untagged: bad:1\n");
    let (code, out, _) = check(&env, &[]);
    assert_eq!(code, 0, "{out}");
}

/// `system df` counts temp files and unreachable layer dirs in rows of their own.
#[test]
fn df_counts_temp_files_and_unreachable_layer_dirs() {
    let env = Env::new();
    env.build("good:1", &[("g", "good\n")], "");
    std::fs::write(env.store.join("kiln/tmp/blob-partial"), vec![0u8; 30_000]).unwrap();
    make_layer_dir(&env, ".unpack-killed", None);
    make_layer_dir(&env, &"d".repeat(64), Some(&format!("sha256:{}", "d".repeat(64))));
    let rows: Vec<Value> =
        env.ok(&["system", "df", "--format", "json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let row = |name: &str| rows.iter().find(|r| r["Type"] == name).unwrap_or_else(|| panic!("no {name} row: {rows:?}"));
    assert_eq!(row("Temp files")["TotalCount"], 2);
    assert!(row("Temp files")["SizeBytes"].as_u64().unwrap() >= 30_000);
    assert_eq!(row("Temp files")["ReclaimableBytes"], row("Temp files")["SizeBytes"], "no kiln runs");
    assert_eq!(row("Unreachable layer dirs")["TotalCount"], 1);
    assert_eq!(row("Layer dirs")["TotalCount"], 0);
    let total: u64 = rows.iter().map(|r| r["SizeBytes"].as_u64().unwrap()).sum();
    if let Some(du) = cli_util::du_sb(&env.store) {
        assert_eq!(total, du, "{rows:?}");
    }
}

/// While another kiln holds the builds lock, its temp files are not judged;
/// once it is gone they are leftovers.
#[test]
fn temp_files_of_a_running_kiln_are_not_problems() {
    let env = Env::new();
    env.build("good:1", &[("g", "good\n")], "");
    let tmp_blob = env.store.join("kiln/tmp/blob-running");
    std::fs::write(&tmp_blob, b"partial").unwrap();
    let lock = env.store.join("kiln/builds.lock");
    // What a running build holds (a shared flock); ready once the lock is taken.
    let ready = env.path("ready");
    let mut holder = std::process::Command::new("flock")
        .args(["-s", "-o", cli_util::s(&lock), "sh", "-c", &format!("touch {} && sleep 60", cli_util::s(&ready))])
        .process_group(0)
        .spawn()
        .expect("run flock");
    let pgid = nix::unistd::Pid::from_raw(holder.id() as i32);
    while !ready.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, out, err) = check(&env, &[]);
    // The whole group: flock, its shell and the sleep.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = holder.wait();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("note: 1 temp files and layer dirs belong to a kiln that is running"), "{err}");
    let (code, out, _) = check(&env, &[]);
    assert_eq!(code, 1, "{out}");
    assert_line(&out, &tmp_blob, "left behind by an interrupted kiln");
}
