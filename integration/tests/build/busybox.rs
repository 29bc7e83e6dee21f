//! The smallest real image: Debian's static busybox FROM scratch, checked
//! with oci-image-tool, umoci and skopeo, and run with crun.

use kiln_integration::*;
use serde_json::{json, Value};

#[test]
fn busybox_image_is_valid_for_every_tool() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.dockerfile(BUSYBOX_DOCKERFILE);
    let ctx = sb.ctx();
    let out = sb.kiln(&["build", "-t", "app", ctx.to_str().unwrap()]);
    out.ok();

    // Progress: one STEP line per instruction, then the tag, then the id.
    let steps: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("STEP ")).collect();
    assert_eq!(steps.len(), 3, "{}", out.transcript());
    assert!(steps[0].starts_with("STEP 1/3: FROM scratch"), "{}", out.transcript());
    assert!(steps[1].starts_with("STEP 2/3: COPY busybox /bin/busybox"), "{}", out.transcript());
    assert!(steps[2].starts_with("STEP 3/3: CMD"), "{}", out.transcript());
    assert!(out.stdout.lines().any(|l| l == "Successfully tagged app:latest"), "{}", out.transcript());
    let id = out.last_line().to_string();
    assert_eq!(id.len(), 64, "image id must be 64 hex digits: {id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    let store = sb.store();
    let store_s = store.to_str().unwrap();
    let img = sb.image("app:latest");
    assert_eq!(img.id(), id, "the printed id must be the config digest");

    sb.validate_layout(&store, "app:latest");

    let stat = sb.tool("umoci", &["stat", "--image", &format!("{store_s}:app:latest"), "--json"]);
    stat.ok();
    let stat = stat.json();
    assert_eq!(
        stat["history"].as_array().map(|h| h.len()),
        Some(img.history().len()),
        "umoci sees a different history: {stat}"
    );

    let inspect = sb.tool("skopeo", &["inspect", &format!("oci:{store_s}:app:latest")]);
    inspect.ok();
    let inspect = inspect.json();
    let desc = find_descriptor(&store, "app:latest");
    assert_eq!(inspect["Digest"], desc["digest"], "skopeo's Digest vs index.json");
    assert_eq!(inspect["Digest"].as_str().unwrap(), img.manifest_digest);
    assert_eq!(inspect["Architecture"], json!(host_arch()));
    assert_eq!(inspect["Os"], "linux");
    let layer_digests: Vec<Value> = img.layers.iter().map(|l| json!(l.digest)).collect();
    assert_eq!(inspect["Layers"], Value::Array(layer_digests));

    // skopeo's raw config is byte-for-byte the blob we read.
    let raw_config = sb.tool("skopeo", &["inspect", "--config", "--raw", &format!("oci:{store_s}:app:latest")]);
    raw_config.ok();
    assert_eq!(raw_config.json(), img.config);

    // Config fields.
    assert_eq!(img.config["architecture"], json!(host_arch()));
    assert_eq!(img.config["os"], "linux");
    assert_eq!(img.config["rootfs"]["type"], "layers");
    assert_eq!(img.runtime()["Cmd"], json!(["/bin/busybox", "echo", "hi"]));
    assert_eq!(img.runtime()["Env"], json!([SCRATCH_PATH_ENV]));
    assert!(img.runtime().get("Entrypoint").is_none_or(Value::is_null), "no ENTRYPOINT was set");
    let history = img.history();
    assert_eq!(history.len(), 2, "one history entry per COPY and CMD: {history:?}");
    assert!(history[0]["created_by"].as_str().unwrap_or("").contains("COPY"), "{history:?}");
    assert_ne!(history[0]["empty_layer"], json!(true));
    assert!(history[1]["created_by"].as_str().unwrap_or("").contains("CMD"), "{history:?}");
    assert_eq!(history[1]["empty_layer"], json!(true));
    assert_eq!(img.manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(img.manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");

    // The layer: busybox, byte-identical to the host's, root-owned, 0755.
    assert_eq!(img.layers.len(), 1);
    // Stored as a plain tar: compressed only when the image leaves the store.
    assert_eq!(img.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar");
    assert_eq!(img.layers[0].digest, img.config["rootfs"]["diff_ids"][0].as_str().unwrap());
    let bb = img.layers[0].entry("bin/busybox").expect("bin/busybox in the layer");
    assert_eq!(bb.kind, Kind::File);
    assert_eq!(bb.mode, 0o755);
    assert_eq!((bb.uid, bb.gid), (0, 0), "COPY without --chown gives root ownership");
    let host = std::fs::read(static_busybox()).unwrap();
    assert_eq!(sha256_hex(&bb.data), sha256_hex(&host));
    let bin = img.entry("bin").expect("the parent dir bin/ has its own entry");
    assert_eq!(bin.kind, Kind::Dir);
    assert_eq!(bin.mode, 0o755);
    assert_eq!((bin.uid, bin.gid), (0, 0));
}

#[test]
fn images_lists_the_tag_with_its_id() {
    let sb = Sandbox::new();
    let img = sb.build_busybox("app:v1");
    let out = sb.kiln(&["images"]);
    out.ok();
    let row = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("app"))
        .unwrap_or_else(|| panic!("no row for app:\n{}", out.transcript()));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "v1");
    assert!(img.id().starts_with(cols[2]) && cols[2].len() >= 12, "short id {} vs {}", cols[2], img.id());

    let q = sb.kiln(&["images", "-q"]);
    q.ok();
    let ids: Vec<&str> = q.stdout.lines().collect();
    assert_eq!(ids.len(), 1, "{}", q.transcript());
    assert!(img.id().starts_with(ids[0].trim_start_matches("sha256:")), "{}", q.transcript());

    let full = sb.kiln(&["images", "--no-trunc"]);
    full.ok();
    assert!(full.stdout.contains(img.id()), "--no-trunc shows the full id\n{}", full.transcript());
}

#[test]
fn zstd_and_uncompressed_layers() {
    let sb = Sandbox::new();
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.dockerfile(BUSYBOX_DOCKERFILE);
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    let store = sb.store();
    let host = sha256_hex(&std::fs::read(static_busybox()).unwrap());
    for (comp, suffix) in [("zstd", "tar+zstd"), ("none", "layer.v1.tar")] {
        let tag = format!("app:{comp}");
        sb.kiln(&["build", "--compression", comp, "-t", &tag, ctx]).ok();
        let img = sb.image(&tag);
        assert!(img.layers[0].media_type.ends_with(suffix), "{comp}: {}", img.layers[0].media_type);
        assert_eq!(sha256_hex(&img.file("bin/busybox")), host);
        // oci-image-tool 1.0.0-rc1 predates the zstd media type; skopeo knows it.
        if comp == "zstd" {
            let sk = sb.tool("skopeo", &["inspect", &format!("oci:{}:{tag}", store.display())]);
            sk.ok();
            assert_eq!(sk.json()["Digest"].as_str().unwrap(), img.manifest_digest);
        } else {
            sb.validate_layout(&store, &tag);
        }
    }
    // Same entries whatever the compression (created parent dirs carry the
    // build time, as with BuildKit, so the diff_ids may differ).
    let shape = |img: &Image| -> Vec<_> {
        img.layers[0]
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.kind, e.mode, e.uid, e.gid, sha256_hex(&e.data)))
            .collect()
    };
    assert_eq!(shape(&sb.image("app:zstd")), shape(&sb.image("app:none")));
}
