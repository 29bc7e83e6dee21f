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
    assert_eq!(exported.manifest_digest, sb.image("exp").manifest_digest);

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
    assert_eq!(read_image(&sb.path("unpacked"), &names[0]).manifest_digest, orig.manifest_digest);
    let sk = sb.tool("skopeo", &["inspect", &format!("oci-archive:{}", file.display())]);
    sk.ok();
    assert_eq!(sk.json()["Digest"].as_str().unwrap(), orig.manifest_digest);

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
        &["--insecure-policy", "copy", &format!("oci:{}:app:latest", store.display()), &format!("oci:{}:x", other.display())],
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
