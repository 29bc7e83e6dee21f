//! Local bases and outputs: store tags, OCI layouts, OCI archives and docker
//! archives, each checked with skopeo and read back as a base.

use std::io::Read;

use kiln_integration::*;
use serde_json::Value;

fn ref_names(layout: &std::path::Path) -> Vec<String> {
    index_manifests(layout)
        .iter()
        .filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string))
        .collect()
}

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn diff_ids(img: &Image) -> Vec<Value> {
    img.config["rootfs"]["diff_ids"].as_array().unwrap().clone()
}

#[test]
fn from_store_tag_and_oci_layout() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let base = sb.build_busybox("base");
    let child = sb.build("FROM base\nCOPY f.txt /f.txt\n", "child");
    assert_eq!(child.layers[0].digest, base.layers[0].digest);
    assert_eq!(child.layers.len(), 2);
    assert_eq!(child.runtime()["Cmd"], base.runtime()["Cmd"]);
    assert_eq!(child.history().len(), base.history().len() + 1);

    // Export as an OCI layout, then build FROM it.
    let dir = sb.path("layout");
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    sb.dockerfile(BUSYBOX_DOCKERFILE);
    sb.kiln(&["build", "-t", "exp", "-o", &format!("type=oci,dest={}", dir.display()), ctx]).ok();
    let names = ref_names(&dir);
    assert_eq!(names.len(), 1, "one tagged manifest in the exported layout: {names:?}");
    let name = &names[0];
    sb.validate_layout(&dir, name);
    let sk = sb.tool("skopeo", &["inspect", &format!("oci:{}:{name}", dir.display())]);
    sk.ok();
    let exported = read_image(&dir, name);
    assert_eq!(sk.json()["Digest"].as_str().unwrap(), exported.manifest_digest);
    // The store keeps plain layers; the layout gets them gzip'd, same config.
    let stored = sb.image("exp");
    assert_eq!(exported.config_digest, stored.config_digest);
    assert!(stored.layers.iter().all(|l| l.media_type == OCI_LAYER_TAR), "{:?}", stored.layers[0].media_type);
    assert!(exported.layers.iter().all(|l| l.media_type == OCI_LAYER_GZIP), "{:?}", exported.layers[0].media_type);

    let img = sb.build(&format!("FROM oci:{}:{name}\nCOPY f.txt /g.txt\n", dir.display()), "from-oci");
    assert_eq!(img.layers[0].digest, exported.layers[0].digest);
    assert_eq!(img.file_str("g.txt"), "f\n");
    assert_eq!(sha256_hex(&img.file("bin/busybox")), sha256_hex(&std::fs::read(static_busybox()).unwrap()));

    // name= sets the reference written into the layout.
    let dir2 = sb.path("layout2");
    sb.kiln(&["build", "-o", &format!("type=oci,dest={},name=other:7", dir2.display()), ctx]).ok();
    assert_eq!(ref_names(&dir2), ["other:7"]);
    sb.tool("skopeo", &["inspect", &format!("oci:{}:other:7", dir2.display())]).ok();
}

#[test]
fn oci_archive_round_trip() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.dockerfile(BUSYBOX_DOCKERFILE);
    let file = sb.path("img.oci.tar");
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    sb.kiln(&["build", "-t", "exp", "-o", &format!("type=oci-archive,dest={}", file.display()), ctx]).ok();
    let orig = sb.image("exp");

    // The archive is an OCI layout in a tar: unpack it with tar and read it.
    sb.mkdir("unpacked");
    sb.tool("tar", &["-C", "unpacked", "-xf", file.to_str().unwrap()]).ok();
    let names = ref_names(&sb.path("unpacked"));
    assert_eq!(names.len(), 1, "{names:?}");
    let unpacked = read_image(&sb.path("unpacked"), &names[0]);
    assert_eq!(unpacked.config_digest, orig.config_digest);
    assert!(unpacked.layers.iter().all(|l| l.media_type == OCI_LAYER_GZIP));
    let sk = sb.tool("skopeo", &["inspect", &format!("oci-archive:{}", file.display())]);
    sk.ok();
    assert_eq!(sk.json()["Digest"].as_str().unwrap(), unpacked.manifest_digest);

    let img = sb.build(&format!("FROM oci-archive:{}\nCOPY f.txt /f.txt\n", file.display()), "from-archive");
    assert_eq!(diff_ids(&img)[0], diff_ids(&orig)[0]);
    assert_eq!(img.runtime()["Cmd"], orig.runtime()["Cmd"]);
    assert_eq!(img.file_str("f.txt"), "f\n");
}

#[test]
fn docker_archive_round_trip() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    sb.copy_in(&static_busybox(), "ctx/busybox");
    sb.dockerfile(BUSYBOX_DOCKERFILE);
    let file = sb.path("img.docker.tar");
    let ctx = sb.ctx();
    let ctx = ctx.to_str().unwrap();
    sb.kiln(&["build", "-t", "exp", "-o", &format!("type=docker-archive,dest={}", file.display()), ctx]).ok();
    let orig = sb.image("exp");

    let sk = sb.tool("skopeo", &["inspect", &format!("docker-archive:{}", file.display())]);
    sk.ok();
    let sk = sk.json();
    assert_eq!(sk["Architecture"], orig.config["architecture"]);
    assert_eq!(sk["Os"], "linux");
    let skc = sb.tool("skopeo", &["inspect", "--config", &format!("docker-archive:{}", file.display())]);
    skc.ok();
    assert_eq!(skc.json()["rootfs"]["diff_ids"], orig.config["rootfs"]["diff_ids"]);
    assert_eq!(skc.json()["config"]["Cmd"], orig.runtime()["Cmd"]);

    // docker's manifest.json names the tag.
    let mut archive = tar::Archive::new(std::fs::File::open(&file).unwrap());
    let mut manifest = None;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            manifest = Some(serde_json::from_str::<Value>(&s).unwrap());
        }
    }
    let manifest = manifest.expect("manifest.json in the docker archive");
    let tags = serde_json::to_string(&manifest[0]["RepoTags"]).unwrap();
    assert!(tags.contains("exp:latest"), "RepoTags {tags}");

    let img = sb.build(&format!("FROM docker-archive:{}\nCOPY f.txt /f.txt\n", file.display()), "from-docker");
    assert_eq!(diff_ids(&img)[0], diff_ids(&orig)[0]);
    assert_eq!(img.runtime()["Cmd"], orig.runtime()["Cmd"]);
    assert_eq!(sha256_hex(&img.file("bin/busybox")), sha256_hex(&std::fs::read(static_busybox()).unwrap()));
    let store = sb.store();
    sb.validate_layout(&store, "from-docker:latest");
}

#[test]
fn skopeo_copies_out_of_the_store() {
    let sb = Sandbox::new();
    let orig = sb.build_busybox("app");
    let store = sb.store();
    let other = sb.path("other");
    sb.tool(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            &format!("oci:{}:app:latest", store.display()),
            &format!("oci:{}:x", other.display()),
        ],
    )
    .ok();
    let copied = read_image(&other, "x");
    assert_eq!(copied.config, orig.config);
    assert_eq!(copied.config_digest, orig.config_digest);
    // And kiln can build on what skopeo wrote.
    let img = sb.build(&format!("FROM oci:{}:x\nLABEL copied=yes\n", other.display()), "on-copy");
    assert_eq!(diff_ids(&img), diff_ids(&orig));
    assert_eq!(img.runtime()["Labels"]["copied"], "yes");
}

/// The store's blob files with inode and mtime (a blob written again would
/// change them), and its compressed-layer records with their mtimes.
type BlobFiles = Vec<(String, u64, std::time::SystemTime)>;
type RecordFiles = Vec<(String, std::time::SystemTime)>;

fn store_files(store: &std::path::Path) -> (BlobFiles, RecordFiles) {
    let list = |dir: std::path::PathBuf| -> Vec<(String, std::fs::Metadata)> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut out: Vec<_> = entries
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let blobs = kiln_integration::blob_files(store);
    let records = list(store.join("kiln/compressed")).into_iter().map(|(n, m)| (n, m.modified().unwrap())).collect();
    (blobs, records)
}

/// Layers are committed as plain tars (RUN, COPY, --squash); an export
/// compresses each once, remembers it, and the next export reuses it; the
/// copies go with their image; `--compression` still compresses at commit.
#[test]
fn layers_stay_plain_in_the_store_and_are_compressed_once_on_export() {
    let sb = Sandbox::new();
    sb.busybox_context();
    sb.write("ctx/hello", "hello\n");
    let dockerfile = format!("{RUN_BASE}COPY hello /hello\nRUN echo ran > /ran\n");
    let img = sb.build(&dockerfile, "lazy:1");
    let store = sb.store();
    for (layer, diff_id) in img.layers.iter().zip(diff_ids(&img)) {
        assert_eq!(layer.media_type, OCI_LAYER_TAR, "committed as a plain tar");
        assert_eq!(layer.digest, diff_id.as_str().unwrap(), "a plain layer's digest is its diff_id");
    }
    // The store is still a layout the tools read.
    sb.validate_layout(&store, "lazy:1");
    sb.tool("skopeo", &["inspect", &format!("oci:{}:lazy:1", store.display())]).ok();
    sb.tool("umoci", &["stat", "--image", &format!("{}:lazy:1", store.display())]).ok();
    let (blobs_before, records_before) = store_files(&store);
    assert!(records_before.is_empty(), "nothing compressed while the image stays local");

    // Export: gzip layers that decompress to the diff_ids (read_image checks), same config.
    let out = sb.path("out");
    sb.kiln(&["export-layout", out.to_str().unwrap(), "lazy:1"]).ok();
    let exported = read_image(&out, "lazy:1");
    assert_eq!(exported.config_digest, img.config_digest);
    assert_ne!(exported.manifest_digest, img.manifest_digest);
    assert!(exported.layers.iter().all(|l| l.media_type == OCI_LAYER_GZIP), "{:?}", exported.manifest);
    assert_eq!(exported.file_str("ran"), "ran\n");
    assert_eq!(exported.file_str("hello"), "hello\n");
    sb.validate_layout(&out, "lazy:1");
    // The gzip blobs were written into the layout while compressed (no second copy): same bytes as the
    // store's, and no temp file left beside them.
    for entry in std::fs::read_dir(out.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "temp file {name} left in the layout");
    }
    for layer in &exported.layers {
        let hex = &layer.digest[7..];
        assert_eq!(
            std::fs::read(out.join("blobs/sha256").join(hex)).unwrap(),
            std::fs::read(store.join("blobs/sha256").join(hex)).unwrap()
        );
    }
    let sk = sb.tool("skopeo", &["inspect", &format!("oci:{}:lazy:1", out.display())]);
    sk.ok();
    assert_eq!(sk.json()["Digest"].as_str().unwrap(), exported.manifest_digest);
    let bundle = sb.path("bundle");
    sb.tool(
        "umoci",
        &["unpack", "--rootless", "--image", &format!("{}:lazy:1", out.display()), bundle.to_str().unwrap()],
    )
    .ok();
    assert_eq!(std::fs::read_to_string(bundle.join("rootfs/ran")).unwrap(), "ran\n");
    // The stored image is unchanged.
    assert_eq!(sb.image("lazy:1").manifest_digest, img.manifest_digest);

    // Remembered: one record and one gzip blob in the store per layer.
    let (blobs, records) = store_files(&store);
    assert_eq!(records.len(), img.layers.len(), "{records:?}");
    assert_eq!(blobs.len(), blobs_before.len() + img.layers.len());
    for layer in &exported.layers {
        assert!(store.join("blobs/sha256").join(&layer.digest[7..]).is_file(), "{} kept in the store", layer.digest);
    }
    // A second export (a layout, an archive, a build output) compresses nothing again.
    let out2 = sb.path("out2");
    sb.kiln(&["export-layout", out2.to_str().unwrap(), "lazy:1"]).ok();
    sb.kiln(&["save", "--format", "oci-archive", "-o", sb.path("lazy.tar").to_str().unwrap(), "lazy:1"]).ok();
    let ctx = sb.ctx();
    let out3 = sb.path("out3");
    sb.kiln(&["build", "-t", "lazy:1", "-o", &format!("type=oci,dest={}", out3.display()), ctx.to_str().unwrap()]).ok();
    assert_eq!(find_descriptor(&out2, "lazy:1")["digest"], exported.manifest_digest.as_str());
    assert_eq!(find_descriptor(&out3, "lazy:1")["digest"], exported.manifest_digest.as_str());
    assert_eq!(store_files(&store), (blobs, records), "no blob or record was written again");
    let check = sb.kiln(&["system", "check"]);
    check.ok();
    assert!(check.stdout.contains("store is consistent"), "{}", check.transcript());
    // Imported back, the gzip layers are verified and used as they are.
    let back = sb.build(&format!("FROM oci:{}:lazy:1\nLABEL back=1\n", out.display()), "back:1");
    assert_eq!(
        back.layers.iter().map(|l| &l.digest).collect::<Vec<_>>(),
        exported.layers.iter().map(|l| &l.digest).collect::<Vec<_>>()
    );

    // --squash commits plain too; --compression still compresses at commit.
    sb.dockerfile(&dockerfile);
    let squashed = sb.kiln(&["build", "--squash", "-t", "sq:1", ctx.to_str().unwrap()]);
    squashed.ok();
    let sq = sb.image("sq:1");
    assert_eq!(sq.layers.len(), 1, "FROM scratch: everything in one layer");
    assert_eq!(sq.layers[0].media_type, OCI_LAYER_TAR);
    assert_eq!(sq.layers[0].digest, diff_ids(&sq)[0].as_str().unwrap());
    sb.kiln(&["build", "--compression", "zstd", "-t", "z:1", ctx.to_str().unwrap()]).ok();
    let z = sb.image("z:1");
    assert!(z.layers.iter().all(|l| l.media_type == OCI_LAYER_ZSTD), "{:?}", z.manifest);
    let zout = sb.path("zout");
    sb.kiln(&["export-layout", zout.to_str().unwrap(), "z:1"]).ok();
    assert_eq!(read_image(&zout, "z:1").manifest_digest, z.manifest_digest, "compressed layers leave as they are");

    // Removing everything takes the compressed copies and their records with the layers.
    sb.kiln(&["system", "prune", "-a", "-f"]).ok();
    let (blobs, records) = store_files(&store);
    assert!(records.is_empty(), "{records:?}");
    assert!(blobs.is_empty(), "{blobs:?}");
    let check = sb.kiln(&["system", "check"]);
    check.ok();
    assert!(check.stdout.contains("store is consistent"), "{}", check.transcript());
}
