//! Platform selection: `--platform` and per-stage `FROM --platform` pick the
//! image of that platform from a multi-platform base (an OCI layout, or an
//! index in a registry), and a base without the platform fails as docker
//! fails: "no match for platform in manifest", naming what the image has.
//!
//! The multi-platform fixtures are made by hand: an image per platform whose
//! only layer holds `/platform.txt`. Nothing in them runs; the steps on them
//! are COPY and LABEL, so the foreign architecture is never executed.

use crate::fault_util;

use kiln_integration::*;
use serde_json::{json, Value};

/// A platform that is not this machine's, for the second image.
fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// One layer holding `platform.txt` with `text`, uncompressed.
fn layer(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("platform.txt").unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(text.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, text.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

/// Writes `bytes` as a blob of the layout at `ctx/../layout`; returns its descriptor.
fn blob(sb: &Sandbox, media_type: &str, bytes: &[u8]) -> Value {
    let hex = sha256_hex(bytes);
    sb.write(&format!("layout/blobs/sha256/{hex}"), bytes);
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// An image for `arch` whose one file says `arch`; returns its manifest descriptor.
fn image(sb: &Sandbox, arch: &str) -> Value {
    let layer = layer(&format!("{arch}\n"));
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let layer_desc = blob(sb, "application/vnd.oci.image.layer.v1.tar", &layer);
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [SCRATCH_PATH_ENV, format!("ARCHDIR=/opt/{arch}")], "Labels": {"base.arch": arch}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": format!("fixture for {arch}")}],
    });
    let config_desc = blob(sb, "application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    });
    blob(sb, "application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes())
}

/// The layout `layout/`: `multi` (an index of the host's image and another
/// architecture's) and `single` (the host's image alone, no index).
fn layout(sb: &Sandbox) -> std::path::PathBuf {
    let host = host_arch();
    let mut entries = Vec::new();
    for arch in [host.as_str(), other_arch()] {
        let mut d = image(sb, arch);
        d["platform"] = json!({"os": "linux", "architecture": arch});
        entries.push(d);
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    let mut multi = blob(sb, "application/vnd.oci.image.index.v1+json", index.to_string().as_bytes());
    multi["annotations"] = json!({"org.opencontainers.image.ref.name": "multi"});
    let mut single = image(sb, &host);
    single["annotations"] = json!({"org.opencontainers.image.ref.name": "single"});
    let top = json!({"schemaVersion": 2, "manifests": [multi, single]});
    sb.write("layout/index.json", top.to_string());
    sb.write("layout/oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#);
    sb.path("layout")
}

fn arch_of(img: &Image) -> String {
    img.config["architecture"].as_str().unwrap_or_default().to_string()
}

#[test]
fn from_platform_picks_the_image_of_an_oci_layout() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let dir = layout(&sb);
    let (host, other) = (host_arch(), other_arch());
    let base = format!("oci:{}:multi", dir.display());

    // A stage's FROM --platform picks that image; the result says so.
    let img = sb
        .build(&format!("FROM --platform=linux/{other} {base}\nCOPY f.txt /\nLABEL archdir=$ARCHDIR\n"), "stage-other");
    assert_eq!(img.file_str("platform.txt"), format!("{other}\n"), "the {other} image's layer");
    assert_eq!(
        img.config["config"]["Labels"]["archdir"],
        format!("/opt/{other}"),
        "$VARs expand with that image's env"
    );
    assert_eq!(img.file_str("f.txt"), "f\n");
    assert_eq!(arch_of(&img), other);
    assert_eq!(img.config["config"]["Labels"]["base.arch"], other);

    // --platform picks for every stage without its own; FROM --platform wins,
    // with $BUILDPLATFORM as BuildKit expands it (this machine).
    let df = format!(
        "FROM --platform=$BUILDPLATFORM {base} AS tools\n\
         FROM {base}\n\
         COPY --from=tools /platform.txt /build-platform.txt\n"
    );
    let (_, img) = sb.build_with(&df, "build-wide", &["--platform", &format!("linux/{other}")]);
    assert_eq!(img.file_str("platform.txt"), format!("{other}\n"), "--platform selects the final stage's base");
    assert_eq!(img.file_str("build-platform.txt"), format!("{host}\n"), "$BUILDPLATFORM selects this machine's");
    assert_eq!(arch_of(&img), other, "the image config carries the target platform");

    // $TARGETPLATFORM is --platform's value.
    let df = format!("FROM --platform=$TARGETPLATFORM {base}\nLABEL x=1\n");
    let (_, img) = sb.build_with(&df, "target", &["--platform", &format!("linux/{other}")]);
    assert_eq!(img.file_str("platform.txt"), format!("{other}\n"));

    // FROM scratch takes the stage's platform over --platform.
    let (_, img) = sb.build_with(
        &format!("FROM --platform=linux/{host} scratch\nCOPY f.txt /\n"),
        "scratch",
        &["--platform", &format!("linux/{other}")],
    );
    assert_eq!(arch_of(&img), host);
}

#[test]
fn a_missing_platform_fails_like_docker() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let dir = layout(&sb);
    let (host, other) = (host_arch(), other_arch());

    // An index without the platform.
    let out = sb.try_build(
        &format!("FROM oci:{}:multi\nCOPY f.txt /\n", dir.display()),
        "s390x",
        &["--platform", "linux/s390x"],
    );
    out.fails_with(1).stderr_has(&[
        "no match for platform in manifest",
        "linux/s390x",
        &format!("linux/{host}"),
        &format!("linux/{other}"),
    ]);
    assert!(!sb.kiln(&["inspect", "s390x"]).success(), "nothing is tagged");

    // A single image for another platform: its config says what it is.
    let df = format!("FROM --platform=linux/{other} oci:{}:single\nCOPY f.txt /\n", dir.display());
    let out = sb.try_build(&df, "single", &[]);
    out.fails_with(1).stderr_has(&[
        "no match for platform in manifest",
        &format!("linux/{other}"),
        &format!("linux/{host}"),
    ]);
    // Without a platform asked for, the single image is used as before.
    let img = sb.build(&format!("FROM oci:{}:single\nCOPY f.txt /\n", dir.display()), "single-ok");
    assert_eq!(img.file_str("platform.txt"), format!("{host}\n"));
}

#[test]
fn registry_index_and_single_manifest() {
    let sb = Sandbox::new();
    sb.write("ctx/f.txt", "f\n");
    let dir = layout(&sb);
    let (host, other) = (host_arch(), other_arch());
    let reg = fault_util::Registry::start();
    for (tag, name) in [("multi", "multi"), ("single", "single")] {
        sb.tool(
            "skopeo",
            &[
                "copy",
                "--all",
                "--dest-tls-verify=false",
                &format!("oci:{}:{tag}", dir.display()),
                &format!("docker://{}/{name}:latest", reg.host()),
            ],
        )
        .ok();
    }
    let multi = format!("{}/multi:latest", reg.host());

    let img = sb.build(&format!("FROM --platform=linux/{other} {multi}\nCOPY f.txt /\n"), "reg-other");
    assert_eq!(img.file_str("platform.txt"), format!("{other}\n"), "the {other} manifest's layer");
    assert_eq!(arch_of(&img), other);
    // The store now holds the other platform's image under that name: a
    // stage for this machine's platform pulls its own, it does not reuse it.
    let img = sb.build(&format!("FROM --platform=linux/{host} {multi}\nCOPY f.txt /\n"), "reg-host");
    assert_eq!(img.file_str("platform.txt"), format!("{host}\n"));
    assert_eq!(arch_of(&img), host);
    // Both in one build.
    let df = format!("FROM --platform=linux/{other} {multi} AS o\nFROM --platform=linux/{host} {multi}\nCOPY --from=o /platform.txt /o.txt\n");
    let img = sb.build(&df, "reg-both");
    assert_eq!(img.file_str("platform.txt"), format!("{host}\n"));
    assert_eq!(img.file_str("o.txt"), format!("{other}\n"));

    let out = sb.try_build(&format!("FROM {multi}\n"), "reg-s390x", &["--platform", "linux/s390x"]);
    out.fails_with(1).stderr_has(&[
        "no match for platform in manifest",
        "linux/s390x",
        &format!("linux/{host}"),
        &format!("linux/{other}"),
    ]);
    let single = format!("{}/single:latest", reg.host());
    let out = sb.try_build(&format!("FROM {single}\n"), "reg-single", &["--platform", &format!("linux/{other}")]);
    out.fails_with(1).stderr_has(&[
        "no match for platform in manifest",
        &format!("linux/{other}"),
        &format!("linux/{host}"),
    ]);
}
