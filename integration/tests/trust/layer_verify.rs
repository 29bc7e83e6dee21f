//! Layers are verified before anything is made of them: an image whose config
//! lies about a layer's diff_id, or whose gzip stream is corrupt, is refused
//! with both digests named and leaves no layer dir behind; an honest image
//! with the diff_id the forged one claimed is not poisoned by it; a layer dir
//! without its verification marker is rebuilt, never trusted for its name.
//!
//! The images are made by kiln in a separate store, exported as OCI layouts
//! and then edited here (config, manifest and index rewritten so every blob
//! digest still matches: only the diff_id or the compressed stream lies).

use std::fs;
use std::path::{Path, PathBuf};

use kiln_integration::*;
use serde_json::Value;

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

fn read_blob_json(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&fs::read(blob_path(layout, digest)).unwrap()).unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (String, u64) {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    fs::write(blob_path(layout, &digest), bytes).unwrap();
    (digest, bytes.len() as u64)
}

/// The only image of a layout: (manifest, config).
fn image_of(layout: &Path) -> (Value, Value) {
    let entry = &index_manifests(layout)[0];
    let manifest = read_blob_json(layout, entry["digest"].as_str().unwrap());
    let config = read_blob_json(layout, manifest["config"]["digest"].as_str().unwrap());
    (manifest, config)
}

/// Rewrites the only image of a layout: `edit` changes its manifest and
/// config, then the config, manifest and index.json are written again with
/// the digests that match them.
fn rewrite(sb: &Sandbox, layout: &Path, edit: impl FnOnce(&mut Value, &mut Value)) {
    let (mut manifest, mut config) = image_of(layout);
    edit(&mut manifest, &mut config);
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    let index_path = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    sb.give_tree(layout);
}

/// Builds `dockerfile` with `files` in a store of its own (so the main store
/// has none of its blobs) and exports it as an OCI layout named `bb`.
fn layout_of(sb: &Sandbox, name: &str, dockerfile: &str, files: &[(&str, &Path)]) -> PathBuf {
    let ctx = sb.mkdir(&format!("{name}-ctx"));
    sb.write(&format!("{name}-ctx/Dockerfile"), dockerfile);
    for (rel, host) in files {
        sb.copy_in(host, &format!("{name}-ctx/{rel}"));
    }
    let layout = sb.path(&format!("{name}-layout"));
    let other_store = sb.path("other-store");
    sb.kiln_raw(
        &[
            "--root",
            other_store.to_str().unwrap(),
            "build",
            "-o",
            &format!("type=oci,dest={},name=bb", layout.display()),
            ctx.to_str().unwrap(),
        ],
        None,
        &[],
    )
    .ok();
    layout
}

/// busybox alone, as one layer.
fn honest_layout(sb: &Sandbox) -> PathBuf {
    layout_of(sb, "honest", BUSYBOX_DOCKERFILE, &[("busybox", &static_busybox())])
}

fn diff_ids(layout: &Path) -> Vec<String> {
    let (_, config) = image_of(layout);
    config["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn layer_digests(layout: &Path) -> Vec<String> {
    let (manifest, _) = image_of(layout);
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// The layer dirs kiln has made in the main store (names, temp dirs included).
fn layer_dirs(sb: &Sandbox) -> Vec<String> {
    match fs::read_dir(sb.store().join("kiln/layers")) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n != "empty").collect(),
        Err(_) => Vec::new(),
    }
}

/// A forged image: busybox plus /POISONED in one layer, whose config claims
/// the honest busybox layer's diff_id for it.
fn forged_layout(sb: &Sandbox, honest: &Path) -> PathBuf {
    sb.write("poison/POISONED", "the attacker was here\n");
    let forged = layout_of(
        sb,
        "forged",
        "FROM scratch\nCOPY root/ /\n",
        &[("root/bin/busybox", &static_busybox()), ("root/POISONED", &sb.path("poison/POISONED"))],
    );
    let honest_ids = diff_ids(honest);
    assert_ne!(diff_ids(&forged), honest_ids, "the forged layer differs");
    rewrite(sb, &forged, |_, config| {
        config["rootfs"]["diff_ids"][0] = honest_ids[0].clone().into();
    });
    forged
}

/// Installs the image of `layout` into the main store under `tag` the way an
/// older kiln (one that checked only blob digests) would have: blobs copied,
/// an index entry added. Only the layer dirs' own check stands in the way.
fn smuggle_into_store(sb: &Sandbox, layout: &Path, tag: &str) {
    let store = sb.store();
    fs::create_dir_all(store.join("blobs/sha256")).unwrap();
    for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let dest = store.join("blobs/sha256").join(e.file_name());
        if !dest.exists() {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
    let mut entry = index_manifests(layout)[0].clone();
    entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": normalize_tag(tag) });
    let index_path = store.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["manifests"].as_array_mut().unwrap().push(entry);
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    sb.give_tree(&store.join("blobs"));
    sb.give_tree(&index_path);
}

const CHECK_CLEAN: &str =
    "RUN [\"/bin/busybox\",\"sh\",\"-c\",\"if /bin/busybox test -e /POISONED; then echo POISONED; exit 1; fi; /bin/busybox echo clean > /clean\"]\n";

#[test]
fn a_config_that_lies_about_a_diff_id_is_refused_and_poisons_nothing() {
    let sb = Sandbox::new();
    let honest = honest_layout(&sb);
    let forged = forged_layout(&sb, &honest);
    let claimed = diff_ids(&honest)[0].clone();
    let forged_blob = layer_digests(&forged)[0].clone();

    // FROM the forged layout: refused at import, naming the layer and both digests.
    sb.write(
        "ctx/Dockerfile",
        format!("FROM oci:{}:bb:latest\nRUN [\"/bin/busybox\",\"cat\",\"/POISONED\"]\n", forged.display()),
    );
    let out = sb.kiln(&["build", "-t", "victim", sb.ctx().to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["refused layer", &forged_blob, &claimed, "diff_id"]);
    assert!(!out.stdout.contains("attacker"), "the forged layer never ran: {}", out.transcript());
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    assert!(!sb.store().join("blobs/sha256").join(hex(&forged_blob)).exists(), "the forged blob was not stored");
    assert_eq!(layer_dirs(&sb), Vec::<String>::new(), "no layer dir was made");

    // The honest image whose diff_id the forged one claimed is not poisoned.
    let img = sb.build(&format!("FROM oci:{}:bb:latest\n{CHECK_CLEAN}", honest.display()), "honest");
    assert_eq!(img.file_str("clean"), "clean\n");

    // The same forged image already in the store (as an older kiln would have
    // imported it): the layer dir refuses it at RUN and at `kiln run`.
    let sb = Sandbox::new();
    let honest = honest_layout(&sb);
    let forged = forged_layout(&sb, &honest);
    let claimed = diff_ids(&honest)[0].clone();
    let forged_blob = layer_digests(&forged)[0].clone();
    sb.kiln(&["images"]).ok();
    smuggle_into_store(&sb, &forged, "forged");
    sb.write("ctx/Dockerfile", "FROM forged\nRUN [\"/bin/busybox\",\"cat\",\"/POISONED\"]\n");
    let out = sb.kiln(&["build", "--pull=never", "-t", "victim", sb.ctx().to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["refused layer", &forged_blob, &claimed, "diff_id"]);
    assert!(!out.stdout.contains("attacker") && !out.stderr.contains("attacker"), "{}", out.transcript());
    assert_eq!(layer_dirs(&sb), Vec::<String>::new(), "no layer dir was made");
    let out = sb.kiln(&["run", "--rm", "forged", "/bin/busybox", "cat", "/POISONED"]);
    assert!(!out.success() && !out.stdout.contains("attacker"), "{}", out.transcript());
    out.stderr_has(&["refused layer", &forged_blob]);
    // COPY --from reads the same layers: through the verified layer dirs
    // (overlay) or by applying the blobs (vfs), and refuses them either way.
    for driver in ["overlay", "vfs"] {
        sb.write("ctx/Dockerfile", "FROM scratch\nCOPY --from=forged /POISONED /got\n");
        let out =
            sb.kiln(&["build", "--pull=never", "--storage-driver", driver, "-t", "copied", sb.ctx().to_str().unwrap()]);
        assert!(!out.success(), "{driver}: {}", out.transcript());
        out.stderr_has(&["refused layer", &forged_blob, &claimed, "diff_id"]);
        assert_eq!(layer_dirs(&sb), Vec::<String>::new(), "{driver}: no layer dir was made");
    }
    let img = sb.build(&format!("FROM oci:{}:bb:latest\n{CHECK_CLEAN}", honest.display()), "honest");
    assert_eq!(img.file_str("clean"), "clean\n");
}

#[test]
fn a_gzip_layer_with_a_corrupt_crc_is_refused() {
    let sb = Sandbox::new();
    let honest = honest_layout(&sb);
    let bad = sb.path("bad-layout");
    sb.sh(&format!("cp -r {} {}", honest.display(), bad.display())).ok();
    let layer = layer_digests(&bad)[0].clone();
    let mut bytes = fs::read(blob_path(&bad, &layer)).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "kiln exports gzip layers");
    let crc = bytes.len() - 8;
    bytes[crc] ^= 0xff;
    let (bad_blob, _) = put_blob(&bad, &bytes);
    rewrite(&sb, &bad, |manifest, _| manifest["layers"][0]["digest"] = bad_blob.clone().into());

    // At import: the blob digest matches the manifest; only the trailer lies.
    sb.write("ctx/Dockerfile", format!("FROM oci:{}:bb:latest\n{CHECK_CLEAN}", bad.display()));
    let out = sb.kiln(&["build", "-t", "crc", sb.ctx().to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["refused layer", &bad_blob, "gzip stream is corrupt"]);
    assert_eq!(layer_dirs(&sb), Vec::<String>::new(), "no layer dir was made");

    // Already in the store: the layer dir refuses it.
    sb.kiln(&["images"]).ok();
    smuggle_into_store(&sb, &bad, "crc");
    sb.write("ctx/Dockerfile", format!("FROM crc\n{CHECK_CLEAN}"));
    let out = sb.kiln(&["build", "--pull=never", "-t", "crc2", sb.ctx().to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["refused layer", &bad_blob, "gzip stream is corrupt"]);
    assert_eq!(layer_dirs(&sb), Vec::<String>::new(), "no layer dir was made");
}

#[test]
fn a_layer_dir_without_its_marker_is_rebuilt() {
    let sb = Sandbox::new();
    let honest = honest_layout(&sb);
    let chain = diff_ids(&honest)[0].strip_prefix("sha256:").unwrap().to_string();
    sb.build(&format!("FROM oci:{}:bb:latest\nRUN [\"/bin/busybox\",\"true\"]\n", honest.display()), "first");
    let dir = sb.store().join("kiln/layers").join(&chain);
    let marker = dir.join("verified");
    assert_eq!(fs::read_to_string(&marker).unwrap().trim(), format!("sha256:{chain}"), "the layer dir is marked");

    // Tamper with the tree and drop the marker (as a half-finished removal or
    // an older kiln would leave it): kiln must not trust it for its name.
    fs::remove_file(&marker).unwrap();
    let planted = dir.join("diff/POISONED");
    fs::write(&planted, "planted\n").unwrap();
    sb.give_tree(&planted);
    let img = sb.build(&format!("FROM oci:{}:bb:latest\n{CHECK_CLEAN}", honest.display()), "second");
    assert_eq!(img.file_str("clean"), "clean\n");
    assert!(marker.exists(), "the rebuilt dir is marked again");
    assert!(!planted.exists(), "the tampered tree is gone");
    let dirs = layer_dirs(&sb);
    assert!(dirs.iter().all(|d| !d.starts_with(".stale-")), "the stale dir was removed: {dirs:?}");

    // A marker that names another layer does not count either.
    fs::write(&marker, "sha256:0000000000000000000000000000000000000000000000000000000000000000\n").unwrap();
    fs::write(&planted, "planted\n").unwrap();
    sb.give_tree(&planted);
    sb.build(
        &format!("FROM oci:{}:bb:latest\n{CHECK_CLEAN}RUN [\"/bin/busybox\",\"true\"]\n", honest.display()),
        "third",
    );
    assert!(!planted.exists(), "rebuilt again");
}

#[test]
fn layers_made_by_run_pass_their_own_check_under_vfs() {
    // Under vfs a RUN layer's dir is unpacked from the blob kiln just wrote,
    // through the same check as any pulled layer: what kiln writes must verify.
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.dockerfile(&format!(
        "{RUN_BASE}RUN echo one > /one && mkdir -p /d/e && echo two > /d/e/two\nRUN rm /one && cat /d/e/two > /three\n"
    ));
    let out = sb.kiln(&["build", "--storage-driver", "vfs", "-t", "vfs", sb.ctx().to_str().unwrap()]);
    out.ok();
    let img = sb.image("vfs");
    assert_eq!(img.file_str("three"), "two\n");
    assert!(img.entry("one").is_none());
    let dirs = layer_dirs(&sb);
    assert!(!dirs.is_empty() && dirs.iter().all(|d| !d.starts_with('.')), "{dirs:?}");
    for d in &dirs {
        let marker = sb.store().join("kiln/layers").join(d).join("verified");
        assert_eq!(fs::read_to_string(&marker).unwrap().trim(), format!("sha256:{d}"), "{}", marker.display());
    }
}

/// A base of several layers, each a file of its own, and a whiteout.
fn layered_layout(sb: &Sandbox) -> PathBuf {
    for (name, text) in [("a.txt", "a\n"), ("b.txt", "b\n"), ("c.txt", "c\n")] {
        sb.write(&format!("parts/{name}"), text);
    }
    let parts = |n: &str| sb.path(&format!("parts/{n}"));
    layout_of(
        sb,
        "layered",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY a.txt /data/a.txt\nCOPY b.txt /data/b.txt\nCOPY c.txt /data/c.txt\n\
RUN [\"/bin/busybox\",\"rm\",\"/data/b.txt\"]\n",
        &[("busybox", &static_busybox()), ("a.txt", &parts("a.txt")), ("b.txt", &parts("b.txt")), ("c.txt", &parts("c.txt"))],
    )
}

#[test]
fn a_base_of_many_layers_is_unpacked_whole_and_a_corrupt_one_refused() {
    // The layers of a base are made into layer dirs side by side: each one
    // checked on its own, none published unless it verified.
    let sb = Sandbox::new();
    let honest = layered_layout(&sb);
    assert_eq!(layer_digests(&honest).len(), 5);
    let run = "RUN [\"/bin/busybox\",\"sh\",\"-c\",\"/bin/busybox cat /data/a.txt /data/c.txt > /all; /bin/busybox ls /data > /listed\"]\n";
    for driver in ["overlay", "vfs"] {
        sb.write("ctx/Dockerfile", format!("FROM oci:{}:bb:latest\n{run}", honest.display()));
        let out =
            sb.kiln(&["build", "--no-cache", "--storage-driver", driver, "-t", "whole", sb.ctx().to_str().unwrap()]);
        out.ok();
        let img = sb.image("whole");
        assert_eq!(img.file_str("all"), "a\nc\n", "{driver}");
        assert_eq!(img.file_str("listed"), "a.txt\nc.txt\n", "{driver}: the whiteout of the last layer holds");
        // Every layer dir is made again for the next driver.
        let layers = sb.store().join("kiln/layers");
        sb.kiln(&["unshare", "rm", "-rf", layers.to_str().unwrap()]).ok();
    }

    // The same base with a corrupt gzip trailer in its third layer.
    let bad = sb.path("bad-layered");
    sb.sh(&format!("cp -r {} {}", honest.display(), bad.display())).ok();
    let layer = layer_digests(&bad)[2].clone();
    let mut bytes = fs::read(blob_path(&bad, &layer)).unwrap();
    let crc = bytes.len() - 8;
    bytes[crc] ^= 0xff;
    let (bad_blob, _) = put_blob(&bad, &bytes);
    rewrite(&sb, &bad, |manifest, _| manifest["layers"][2]["digest"] = bad_blob.clone().into());
    let fresh = Sandbox::new();
    fresh.kiln(&["images"]).ok();
    smuggle_into_store(&fresh, &bad, "badbase");
    fresh.write("ctx/Dockerfile", format!("FROM badbase\n{run}"));
    let out = fresh.kiln(&["build", "--pull=never", "-t", "bad", fresh.ctx().to_str().unwrap()]);
    out.fails_with(1).stderr_has(&["refused layer", &bad_blob, "gzip stream is corrupt"]);
    // Layers that verified may stay (each is its own); the corrupt one left nothing, not even aside.
    let ids = diff_ids(&bad);
    let mut chain = ids[0].clone();
    let mut chains = vec![chain.clone()];
    for d in &ids[1..] {
        chain = format!("sha256:{}", sha256_hex(format!("{chain} {d}").as_bytes()));
        chains.push(chain.clone());
    }
    let dirs = layer_dirs(&fresh);
    assert!(!dirs.iter().any(|d| d.starts_with('.')), "{dirs:?}");
    assert!(!dirs.contains(&chains[2].trim_start_matches("sha256:").to_string()), "{dirs:?}");
    for d in &dirs {
        let marker = fresh.store().join("kiln/layers").join(d).join("verified");
        assert_eq!(fs::read_to_string(&marker).unwrap().trim(), format!("sha256:{d}"), "{}", marker.display());
    }
}
