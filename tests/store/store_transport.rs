//! Image transports: round trips through OCI dirs, OCI archives and docker
//! archives, checked with skopeo, umoci and oci-image-tool where installed.

use crate::store_util;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use kiln::image::manifest::{
    Descriptor, Index, Manifest, Platform, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD,
    OCI_MANIFEST, REF_NAME,
};
use kiln::store::{sha256_digest, Image, LayerError, Store};
use kiln::transport::{
    export_docker_archive, export_oci_archive, export_oci_dir, import, parse_transport, Transport, TransportError,
};
use kiln_overlay::compress::Compression;
use kiln_overlay::verify::VerifyError;
use store_util::*;

fn layer_files(store: &Store, layer: &Descriptor) -> BTreeMap<String, String> {
    let bytes = store.read_blob(&layer.digest).unwrap();
    let tar_bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).unwrap();
        out
    } else {
        bytes
    };
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut content = String::new();
        entry.read_to_string(&mut content).unwrap();
        files.insert(entry.path().unwrap().to_string_lossy().into_owned(), content);
    }
    files
}

/// Same config, same layer contents.
fn assert_same_image(a_store: &Store, a: &Image, b_store: &Store, b: &Image) {
    assert_eq!(a.config_digest, b.config_digest, "image id survives the trip");
    assert_eq!(a.config, b.config);
    assert_eq!(a.manifest.layers.len(), b.manifest.layers.len());
    for (la, lb) in a.manifest.layers.iter().zip(&b.manifest.layers) {
        assert_eq!(layer_files(a_store, la), layer_files(b_store, lb));
    }
}

fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

#[test]
fn oci_dir_round_trip_and_merge() {
    let (dir, store) = fresh_store();
    let a = simple_image(&store, "a", true);
    let b = simple_image(&store, "b", false);
    store.tag("app:v1", &a).unwrap(); // the store's annotation must not leak into the export
    let a_desc = store.resolve("app:v1").unwrap().unwrap();
    let out = dir.path().join("layout");

    export_oci_dir(&store, &[(Some("v1".into()), a_desc.clone())], &out, Compression::None).unwrap();
    export_oci_dir(
        &store,
        &[(Some("v2".into()), b.clone()), (Some("latest".into()), b.clone())],
        &out,
        Compression::None,
    )
    .unwrap();
    // Re-exporting a tag replaces it.
    export_oci_dir(&store, &[(Some("latest".into()), a.clone())], &out, Compression::None).unwrap();

    let index: Index = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let refs: Vec<_> = index.manifests.iter().map(|d| (d.ref_name().unwrap(), d.digest.as_str())).collect();
    assert_eq!(refs, vec![("v1", a.digest.as_str()), ("v2", b.digest.as_str()), ("latest", a.digest.as_str())]);
    assert!(index.manifests.iter().all(|d| d.annotations.as_ref().unwrap().len() == 1));

    let layout = path_str(&out);
    // oci-image-tool 1.0.0-rc1 calls a ref "not unique" when two tags share a
    // manifest, so validate all refs at once rather than by name.
    tool("oci-image-tool", &["validate", "--type", "image", layout]);
    for tag in ["v1", "v2", "latest"] {
        if let Some(json) = tool("skopeo", &["inspect", &format!("oci:{layout}:{tag}")]) {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
        }
        if let Some(stat) = tool("umoci", &["stat", "--image", &format!("{layout}:{tag}")]) {
            assert!(stat.contains("test layer"), "{stat}");
        }
    }

    let (_d2, other) = fresh_store();
    for (tag, want) in [("v1", &a), ("v2", &b)] {
        let t = parse_transport(&format!("oci:{layout}:{tag}"));
        let imported = import(&other, &t).unwrap();
        assert_eq!(imported.manifest_digest, want.digest, "manifest bytes are copied as is");
        assert_same_image(&store, &store.load_image(want).unwrap(), &other, &imported);
        other.tag(tag, &imported.descriptor).unwrap();
    }
    // Several images and no tag: the error lists the tags.
    let err = import(&other, &Transport::OciDir { path: out.clone(), tag: None }).unwrap_err();
    assert!(matches!(err, TransportError::Ambiguous { .. }));
    assert!(err.to_string().contains("v1, v2, latest"), "{err}");
    let err = import(&other, &Transport::OciDir { path: out.clone(), tag: Some("nope".into()) }).unwrap_err();
    assert!(matches!(err, TransportError::TagNotFound { .. }), "{err}");

    // Importing from the store transport just looks the image up.
    let same = import(&other, &Transport::Store("v2".into())).unwrap();
    assert_eq!(same.manifest_digest, b.digest);
}

#[test]
fn oci_dir_import_verifies_digests() {
    let (dir, store) = fresh_store();
    let a = simple_image(&store, "a", false);
    let out = dir.path().join("layout");
    export_oci_dir(&store, &[(Some("v1".into()), a.clone())], &out, Compression::None).unwrap();
    let image = store.load_image(&a).unwrap();
    let layer = &image.manifest.layers[1];
    let layer_path = out.join("blobs/sha256").join(&layer.digest[7..]);
    let mut bytes = std::fs::read(&layer_path).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&layer_path, bytes).unwrap();

    let (_d2, other) = fresh_store();
    let err = import(&other, &parse_transport(&format!("oci:{}:v1", out.display()))).unwrap_err();
    assert!(err.to_string().contains("image store") || err.to_string().contains("digest"), "{err}");
    assert!(!other.has_blob(&layer.digest));
    assert!(!other.has_blob(&a.digest), "no manifest without its layers");
    assert_eq!(std::fs::read_dir(other.root().join("kiln/tmp")).unwrap().count(), 0);
}

#[test]
fn oci_dir_import_follows_a_nested_index() {
    let (dir, store) = fresh_store();
    let a = simple_image(&store, "a", true);
    let out = dir.path().join("layout");
    export_oci_dir(&store, &[(Some("multi".into()), a.clone())], &out, Compression::Gzip).unwrap();

    // Wrap the manifest in an index with a second, foreign platform.
    let mut own = a.clone();
    own.platform =
        Some(Platform { architecture: kiln_integration::host_arch(), os: "linux".into(), ..Default::default() });
    let mut foreign = own.clone();
    foreign.digest = sha256_digest(b"not stored");
    foreign.platform = Some(Platform { architecture: "s390x".into(), os: "linux".into(), ..Default::default() });
    let nested = Index { manifests: vec![foreign, own], ..Default::default() };
    let nested_bytes = serde_json::to_vec(&nested).unwrap();
    let nested_digest = sha256_digest(&nested_bytes);
    std::fs::write(out.join("blobs/sha256").join(&nested_digest[7..]), &nested_bytes).unwrap();
    let mut top = Descriptor::new(OCI_INDEX, nested_digest, nested_bytes.len() as u64);
    top.annotations = Some(BTreeMap::from([(REF_NAME.to_string(), "multi".to_string())]));
    let index = Index { manifests: vec![top], ..Default::default() };
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    let (_d2, other) = fresh_store();
    let imported = import(&other, &Transport::OciDir { path: out, tag: None }).unwrap();
    assert_eq!(imported.manifest_digest, a.digest);
}

#[test]
fn oci_archive_round_trip_is_deterministic() {
    let (dir, store) = fresh_store();
    let a = simple_image(&store, "a", true);
    let b = simple_image(&store, "b", true);
    let images = [(Some("latest".to_string()), a.clone()), (Some("b".to_string()), b.clone())];
    let f1 = dir.path().join("one.tar");
    let f2 = dir.path().join("two.tar");
    export_oci_archive(&store, &images, &f1, Compression::Gzip).unwrap();
    export_oci_archive(&store, &images, &f2, Compression::Gzip).unwrap();
    assert_eq!(std::fs::read(&f1).unwrap(), std::fs::read(&f2).unwrap());

    if let Some(json) = tool("skopeo", &["inspect", &format!("oci-archive:{}:latest", f1.display())]) {
        assert!(json.contains(&a.digest), "{json}");
    }
    // The archive unpacks to a valid layout.
    let unpacked = dir.path().join("unpacked");
    tar::Archive::new(std::fs::File::open(&f1).unwrap()).unpack(&unpacked).unwrap();
    tool("oci-image-tool", &["validate", "--type", "image", path_str(&unpacked)]);

    let (_d2, other) = fresh_store();
    let imported = import(&other, &parse_transport(&format!("oci-archive:{}:b", f1.display()))).unwrap();
    assert_eq!(imported.manifest_digest, b.digest);
    assert_same_image(&store, &store.load_image(&b).unwrap(), &other, &imported);

    // A gzip'd copy of the archive imports too.
    let gz = dir.path().join("one.tar.gz");
    std::fs::write(&gz, gzip(&std::fs::read(&f1).unwrap())).unwrap();
    let (_d3, third) = fresh_store();
    let imported = import(&third, &Transport::OciArchive { path: gz, tag: Some("latest".into()) }).unwrap();
    assert_eq!(imported.manifest_digest, a.digest);
}

#[test]
fn docker_archive_round_trip() {
    let (dir, store) = fresh_store();
    let a = simple_image(&store, "a", true); // gzip layers are decompressed on export
    let file = dir.path().join("docker.tar");
    export_docker_archive(&store, &[(vec!["app:latest".into(), "app:v1".into()], a.clone())], &file).unwrap();

    // The archive has docker's shape.
    let mut archive = tar::Archive::new(std::fs::File::open(&file).unwrap());
    let mut names = Vec::new();
    let mut manifest_json = Vec::new();
    let mut repositories = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" {
            entry.read_to_end(&mut manifest_json).unwrap();
        } else if name == "repositories" {
            entry.read_to_end(&mut repositories).unwrap();
        }
        names.push(name);
    }
    let image = store.load_image(&a).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_json).unwrap();
    assert_eq!(manifest[0]["Config"], format!("{}.json", &image.config_digest[7..]));
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["app:latest", "app:v1"]));
    let layers: Vec<String> = image.config.rootfs.diff_ids.iter().map(|d| format!("{}.tar", &d[7..])).collect();
    assert_eq!(manifest[0]["Layers"], serde_json::json!(layers));
    let repos: serde_json::Value = serde_json::from_slice(&repositories).unwrap();
    assert_eq!(repos["app"]["v1"], layers[1].trim_end_matches(".tar"));
    assert!(names.contains(&layers[0]));

    if let Some(json) = tool("skopeo", &["inspect", &format!("docker-archive:{}", file.display())]) {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    }

    let (_d2, other) = fresh_store();
    let imported = import(&other, &parse_transport(&format!("docker-archive:{}", file.display()))).unwrap();
    assert_same_image(&store, &image, &other, &imported);
    assert!(imported.manifest.layers.iter().all(|l| l.media_type == OCI_LAYER_TAR));
    for (layer, diff_id) in imported.manifest.layers.iter().zip(&imported.config.rootfs.diff_ids) {
        assert_eq!(&layer.digest, diff_id, "uncompressed layer blob is its diff id");
    }
}

#[test]
fn docker_archive_from_skopeo_imports() {
    let (dir, store) = fresh_store();
    let a = simple_image(&store, "a", true);
    let layout = dir.path().join("layout");
    export_oci_dir(&store, &[(Some("v1".into()), a.clone())], &layout, Compression::Gzip).unwrap();
    let file = dir.path().join("skopeo.tar");
    let copied = tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker-archive:{}:app:v1", file.display()),
        ],
    );
    if copied.is_none() {
        return;
    }
    let (_d2, other) = fresh_store();
    let imported = import(&other, &Transport::DockerArchive { path: file }).unwrap();
    assert_same_image(&store, &store.load_image(&a).unwrap(), &other, &imported);
}

#[test]
fn legacy_docker_save_layout_with_symlinks_and_gzip() {
    // `<id>/layer.tar` per layer, a shared layer symlinked, one layer gzip'd.
    let l1 = layer_tar(&[("a.txt", "one\n")]);
    let l2 = layer_tar(&[("b.txt", "two\n")]);
    let l2_gz = gzip(&l2);
    let diff_ids = vec![sha256_digest(&l1), sha256_digest(&l2), sha256_digest(&l1)];
    let config = serde_json::to_vec(&config_for("legacy", diff_ids.clone())).unwrap();
    let config_name = format!("{}.json", &sha256_digest(&config)[7..]);
    let (id1, id2, id3) = ("1".repeat(64), "2".repeat(64), "3".repeat(64));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["legacy:latest"],
        "Layers": [format!("{id1}/layer.tar"), format!("{id2}/layer.tar"), format!("{id3}/layer.tar")],
    }]);

    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, data).unwrap();
    };
    add(&format!("./{id1}/layer.tar"), &l1);
    add(&format!("{id2}/layer.tar"), &l2_gz);
    add(&config_name, &config);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    builder.append_link(&mut h, format!("{id3}/layer.tar"), format!("../{id1}/layer.tar")).unwrap();
    let bytes = builder.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("legacy.tar");
    std::fs::File::create(&file).unwrap().write_all(&bytes).unwrap();
    let (_d, store) = fresh_store();
    let image = import(&store, &Transport::DockerArchive { path: file.clone() }).unwrap();
    let types: Vec<_> = image.manifest.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(types, vec![OCI_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_TAR]);
    assert_eq!(image.manifest.layers[1].digest, sha256_digest(&l2_gz));
    assert_eq!(image.config_digest, sha256_digest(&config));
    assert_eq!(layer_files(&store, &image.manifest.layers[2]).get("a.txt").map(String::as_str), Some("one\n"));
}

#[test]
fn docker_archive_wrong_diff_id_is_refused() {
    let l1 = layer_tar(&[("a.txt", "one\n")]);
    let config = serde_json::to_vec(&config_for("bad", vec![sha256_digest(b"wrong")])).unwrap();
    let manifest = serde_json::json!([{ "Config": "config.json", "RepoTags": null, "Layers": ["layer.tar"] }]);
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("layer.tar", &l1[..]),
        ("config.json", &config[..]),
        ("manifest.json", &serde_json::to_vec(&manifest).unwrap()[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, data).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.tar");
    std::fs::write(&file, builder.into_inner().unwrap()).unwrap();
    let (_d, store) = fresh_store();
    let err = import(&store, &Transport::DockerArchive { path: file }).unwrap_err();
    let TransportError::Layer(LayerError::Refused { layer, source: VerifyError::DiffId { expected, actual }, .. }) =
        &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(layer, "layer.tar");
    assert_eq!(expected, &sha256_digest(b"wrong"));
    assert_eq!(actual, &sha256_digest(&l1));
    assert!(!store.has_blob(&sha256_digest(&l1)));
}

/// podman with a throwaway storage root, if podman is usable here (it needs
/// root or a working rootless setup; set KILN_TEST_PODMAN=1 to force).
fn podman(root: &std::path::Path, args: &[&str]) -> Option<String> {
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root && std::env::var_os("KILN_TEST_PODMAN").is_none() {
        eprintln!("notice: not root and KILN_TEST_PODMAN unset; skipping podman checks");
        return None;
    }
    let storage = root.join("storage");
    let run = root.join("run");
    let mut full = vec!["--root", path_str(&storage), "--runroot", path_str(&run), "--storage-driver", "vfs"];
    full.extend_from_slice(args);
    tool("podman", &full)
}

#[test]
fn podman_loads_exports_and_kiln_imports_podman_saves() {
    let (dir, store) = fresh_store();
    let a = simple_image(&store, "podman", true);
    let image = store.load_image(&a).unwrap();
    let docker_tar = dir.path().join("docker.tar");
    let oci_tar = dir.path().join("oci.tar");
    export_docker_archive(&store, &[(vec!["localhost/kiln-test:v1".into()], a.clone())], &docker_tar).unwrap();
    export_oci_archive(&store, &[(Some("localhost/kiln-test:v2".into()), a.clone())], &oci_tar, Compression::Gzip)
        .unwrap();

    let Some(out) = podman(dir.path(), &["load", "-i", path_str(&docker_tar)]) else { return };
    assert!(out.contains("localhost/kiln-test:v1"), "{out}");
    podman(dir.path(), &["load", "-i", path_str(&oci_tar)]);
    let id = podman(dir.path(), &["image", "inspect", "--format", "{{.Id}}", "localhost/kiln-test:v1"]).unwrap();
    assert_eq!(id.trim(), &image.config_digest[7..], "podman sees kiln's image id");

    // And back: podman's docker-archive and oci-archive both import.
    for (format, transport) in [("docker-archive", "docker-archive"), ("oci-archive", "oci-archive")] {
        let saved = dir.path().join(format!("saved-{format}.tar"));
        podman(dir.path(), &["save", "--format", format, "-o", path_str(&saved), "localhost/kiln-test:v1"]);
        let (_d, other) = fresh_store();
        let t = parse_transport(&format!("{transport}:{}", saved.display()));
        let imported = import(&other, &t).unwrap();
        assert_eq!(imported.config.rootfs, image.config.rootfs, "{format}");
        assert_same_image(&store, &image, &other, &imported);
    }
}

/// Writes an OCI layout at `dir` holding one image tagged `x` whose only
/// layer is `blob` and whose config lists `diff_id` for it.
fn one_layer_layout(dir: &std::path::Path, blob: &[u8], media_type: &str, diff_id: &str) -> Descriptor {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        std::fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        (digest, bytes.len() as u64)
    };
    let (layer_digest, layer_size) = put(blob);
    let config = serde_json::to_vec(&config_for("forged", vec![diff_id.to_string()])).unwrap();
    let (config_digest, config_size) = put(&config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor::new(OCI_CONFIG, config_digest, config_size),
        layers: vec![Descriptor::new(media_type, layer_digest, layer_size)],
        annotations: None,
    };
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let mut entry = Descriptor::new(OCI_MANIFEST, manifest_digest, manifest_size);
    entry.annotations = Some([(REF_NAME.to_string(), "x".to_string())].into_iter().collect());
    let index = Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.into()),
        manifests: vec![entry.clone()],
        annotations: None,
    };
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    entry
}

fn import_x(store: &Store, layout: &std::path::Path) -> Result<Image, TransportError> {
    import(store, &parse_transport(&format!("oci:{}:x", layout.display())))
}

#[test]
fn oci_import_refuses_a_config_that_lies_about_a_diff_id() {
    let honest = layer_tar(&[("bin/sh", "the real shell\n")]);
    let evil = layer_tar(&[("POISONED", "gotcha\n")]);
    let (dir, store) = fresh_store();

    // A blob the store does not have: refused while streaming, nothing kept.
    let forged = dir.path().join("forged");
    let entry = one_layer_layout(&forged, &gzip(&evil), OCI_LAYER_GZIP, &sha256_digest(&honest));
    let err = import_x(&store, &forged).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&sha256_digest(&gzip(&evil))), "names the layer: {text}");
    let TransportError::Layer(LayerError::Refused { source: VerifyError::DiffId { expected, actual }, .. }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((expected, actual), (&sha256_digest(&honest), &sha256_digest(&evil)));
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains(&sha256_digest(&honest)) && cause.contains(&sha256_digest(&evil)), "{cause}");
    assert!(!store.has_blob(&sha256_digest(&gzip(&evil))), "the layer blob was not stored");
    assert!(!store.has_blob(&entry.digest), "the manifest was not stored");
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0, "no temp files left");

    // The honest image imports, and its pair (blob, diff_id) is remembered.
    let good = dir.path().join("good");
    one_layer_layout(&good, &gzip(&honest), OCI_LAYER_GZIP, &sha256_digest(&honest));
    let image = import_x(&store, &good).unwrap();
    assert_eq!(store.verified_diff_id(&image.manifest.layers[0].digest), Some(sha256_digest(&honest)));

    // A blob the store already has, claimed with another diff_id: refused too.
    let reuse = dir.path().join("reuse");
    let entry = one_layer_layout(&reuse, &gzip(&honest), OCI_LAYER_GZIP, &sha256_digest(&evil));
    let err = import_x(&store, &reuse).unwrap_err();
    assert!(
        matches!(&err, TransportError::Layer(LayerError::Refused { source: VerifyError::DiffId { .. }, .. })),
        "{err:?}"
    );
    assert!(!store.has_blob(&entry.digest));

    // The same, in a store that has the blob but no record of it (an older kiln): read and checked.
    std::fs::remove_dir_all(store.root().join("kiln/diffids")).unwrap();
    assert!(import_x(&store, &reuse).is_err());
    assert!(import_x(&store, &good).is_ok());
}

#[test]
fn oci_import_refuses_corrupt_and_truncated_gzip_layers() {
    let tar = layer_tar(&[("etc/data", &"some content ".repeat(2000))]);
    let gz = gzip(&tar);
    let (dir, store) = fresh_store();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("crc", {
            let mut b = gz.clone();
            let at = b.len() - 8;
            b[at] ^= 0xff;
            b
        }),
        ("isize", {
            let mut b = gz.clone();
            let at = b.len() - 2;
            b[at] ^= 0x01;
            b
        }),
        ("truncated", gz[..gz.len() - 6].to_vec()),
        ("trailing", [&gz[..], b"junk"].concat()),
    ];
    for (name, blob) in cases {
        // The manifest names this (bad) blob correctly: only the content check can catch it.
        let layout = dir.path().join(name);
        one_layer_layout(&layout, &blob, OCI_LAYER_GZIP, &sha256_digest(&tar));
        let err = import_x(&store, &layout).unwrap_err();
        let TransportError::Layer(LayerError::Refused { source, .. }) = &err else { panic!("{name}: {err:?}") };
        assert!(matches!(source, VerifyError::Corrupt { .. } | VerifyError::Trailing { .. }), "{name}: {source:?}");
        assert!(!store.has_blob(&sha256_digest(&blob)), "{name}: the blob was not stored");
    }
    let layout = dir.path().join("fine");
    one_layer_layout(&layout, &gz, OCI_LAYER_GZIP, &sha256_digest(&tar));
    import_x(&store, &layout).unwrap();
}

/// The store's blob files with inode and mtime: a blob written again would
/// change them.
fn blob_list(store: &Store) -> Vec<(String, u64, std::time::SystemTime)> {
    kiln_integration::blob_files(store.root())
}

/// The image entry of a layout's index.json and its manifest, checked against its digest.
fn layout_manifest(layout: &std::path::Path) -> (Descriptor, Manifest) {
    let index: Index = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index.manifests[0].clone();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(&entry.digest[7..])).unwrap();
    assert_eq!((sha256_digest(&bytes), bytes.len() as u64), (entry.digest.clone(), entry.size));
    (entry, serde_json::from_slice(&bytes).unwrap())
}

fn record_times(store: &Store) -> Vec<std::time::SystemTime> {
    store.compressed_records().unwrap().iter().map(|(p, _)| std::fs::metadata(p).unwrap().modified().unwrap()).collect()
}

#[test]
fn plain_layers_leave_compressed_once_and_go_with_their_image() {
    let (dir, store) = fresh_store();
    let plain = simple_image(&store, "lazy", false);
    store.tag("lazy:1", &plain).unwrap();
    let image = store.load_image(&plain).unwrap();
    let diff_ids = image.config.rootfs.diff_ids.clone();
    for (layer, diff_id) in image.manifest.layers.iter().zip(&diff_ids) {
        assert_eq!((layer.media_type.as_str(), &layer.digest), (OCI_LAYER_TAR, diff_id));
    }
    let blobs_before = blob_list(&store);

    let out = dir.path().join("layout");
    export_oci_dir(&store, &[(Some("v1".into()), plain.clone())], &out, Compression::Gzip).unwrap();
    let (entry, manifest) = layout_manifest(&out);
    assert_ne!(entry.digest, plain.digest, "the exported manifest lists the gzip blobs");
    assert_eq!(manifest.config, image.manifest.config, "same config, so the same diff_ids");
    for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
        assert_eq!(layer.media_type, OCI_LAYER_GZIP);
        let blob = std::fs::read(out.join("blobs/sha256").join(&layer.digest[7..])).unwrap();
        assert_eq!((sha256_digest(&blob), blob.len() as u64), (layer.digest.clone(), layer.size));
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(&sha256_digest(&tar), diff_id, "decompressed, it is the layer");
        assert!(store.has_blob(&layer.digest), "the compressed blob is kept in the store");
    }
    assert_eq!(store.resolve("lazy:1").unwrap().unwrap().digest, plain.digest, "the stored image is unchanged");
    let layout = path_str(&out);
    tool("oci-image-tool", &["validate", "--type", "image", layout]);
    if let Some(json) = tool("skopeo", &["inspect", &format!("oci:{layout}:v1")]) {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let layers: Vec<&str> = v["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(layers, manifest.layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>());
    }
    if let Some(stat) = tool("umoci", &["stat", "--image", &format!("{layout}:v1")]) {
        assert!(stat.contains("test layer lazy"), "{stat}");
    }

    // One record per layer; a second export (a layout, an archive) compresses nothing again.
    let records = store.compressed_records().unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|(_, r)| r.as_ref().is_ok_and(|r| r.compression == "gzip")), "{records:?}");
    let after_first = blob_list(&store);
    assert_eq!(after_first.len(), blobs_before.len() + 2);
    let times = record_times(&store);
    let out2 = dir.path().join("layout2");
    export_oci_dir(&store, &[(Some("v1".into()), plain.clone())], &out2, Compression::Gzip).unwrap();
    export_oci_archive(&store, &[(Some("v1".into()), plain.clone())], &dir.path().join("a.tar"), Compression::Gzip)
        .unwrap();
    assert_eq!(layout_manifest(&out2).0.digest, entry.digest, "the same blobs again");
    assert_eq!(blob_list(&store), after_first, "no blob was written again");
    assert_eq!(record_times(&store), times, "no record was written again");

    // zstd is another copy with its own record; `none` leaves the layers as stored.
    let zstd = dir.path().join("zstd");
    export_oci_dir(&store, &[(Some("v1".into()), plain.clone())], &zstd, Compression::Zstd).unwrap();
    assert!(layout_manifest(&zstd).1.layers.iter().all(|l| l.media_type == OCI_LAYER_ZSTD));
    assert_eq!(store.compressed_records().unwrap().len(), 4);
    let none = dir.path().join("none");
    export_oci_dir(&store, &[(Some("v1".into()), plain.clone())], &none, Compression::None).unwrap();
    assert_eq!(layout_manifest(&none).0.digest, plain.digest);

    // Imported back into the store that made them, the gzip blobs are
    // verified against the diff_ids like any layer already in the store.
    for layer in &manifest.layers {
        assert_eq!(store.verified_diff_id(&layer.digest), None, "nothing was taken on trust yet");
    }
    let imported = import(&store, &parse_transport(&format!("oci:{layout}:v1"))).unwrap();
    assert_eq!(imported.manifest_digest, entry.digest);
    for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
        assert_eq!(store.verified_diff_id(&layer.digest).as_ref(), Some(diff_id), "read and checked on import");
    }
    let report = store.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);

    // rmi of both images: plain layers, compressed copies and records all go.
    store.untag("lazy:1").unwrap();
    let what = kiln::store::Collect {
        images: [plain.digest.clone(), imported.manifest_digest.clone()].into(),
        ..Default::default()
    };
    let reclaimed = store.collect(&what).unwrap();
    assert!(reclaimed.failed.is_empty(), "{:?}", reclaimed.failed);
    assert!(store.compressed_records().unwrap().is_empty());
    assert_eq!(blob_list(&store), Vec::new(), "every blob went with its image");
    let report = store.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// Sets a file's mtime two hours back, past the collector's grace period.
fn age(path: &std::path::Path) {
    let status = std::process::Command::new("touch").args(["-h", "-d", "2 hours ago"]).arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn recorded_copies_live_with_their_layer_and_check_judges_records() {
    let (dir, store) = fresh_store();
    let plain = simple_image(&store, "keep", false);
    store.tag("keep:1", &plain).unwrap();
    export_oci_dir(&store, &[(None, plain.clone())], &dir.path().join("out"), Compression::Gzip).unwrap();
    let records: Vec<_> = store.compressed_records().unwrap().into_iter().map(|(p, r)| (p, r.unwrap())).collect();
    assert_eq!(records.len(), 2);
    for (path, record) in &records {
        age(path);
        age(&store.blob_path(&record.digest));
    }
    // Old and named by no manifest, but recorded for a live layer: kept.
    store.collect(&kiln::store::Collect::default()).unwrap();
    assert!(records.iter().all(|(_, r)| store.has_blob(&r.digest)));
    assert_eq!(store.compressed_records().unwrap().len(), 2);
    let report = store.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);

    // Without its record, an old copy is garbage like any unnamed blob.
    std::fs::remove_file(&records[0].0).unwrap();
    store.collect(&kiln::store::Collect::default()).unwrap();
    assert!(!store.has_blob(&records[0].1.digest));
    assert!(store.has_blob(&records[1].1.digest));

    // A record naming a missing blob, one naming a blob of the wrong size or
    // compression, and one that is no record: each is a problem `--repair` removes.
    let dir_of = records[1].0.parent().unwrap().to_path_buf();
    let r = &records[1].1;
    let write = |name: String, record: serde_json::Value| {
        let path = dir_of.join(name);
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        path
    };
    let diff_ids = store.load_image(&plain).unwrap().config.rootfs.diff_ids;
    let other_layer = diff_ids.iter().find(|d| **d != r.diff_id).unwrap();
    let mut bad = vec![write(
        format!("{}.gzip", &other_layer[7..]),
        serde_json::json!({"diffId": other_layer, "compression": "gzip", "digest": sha256_digest(b"gone"), "size": 4}),
    )];
    bad.push(write(
        format!("{}.zstd", &r.diff_id[7..]),
        serde_json::json!({"diffId": r.diff_id, "compression": "zstd", "digest": r.digest, "size": r.size}),
    ));
    let junk = dir_of.join("junk");
    std::fs::write(&junk, b"{").unwrap();
    bad.push(junk);
    let report = store.check().unwrap();
    let flagged: Vec<_> = report.problems.iter().map(|p| p.path.clone()).collect();
    for path in &bad {
        assert!(flagged.contains(path), "{path:?} not flagged: {:?}", report.problems);
    }
    assert_eq!(report.problems.len(), bad.len(), "{:?}", report.problems);
    let text = report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("is no zstd stream") && text.contains("not a valid compressed-layer record"), "{text}");
    let (_, after) = store.repair().unwrap();
    assert!(after.is_consistent(), "{:?}", after.problems);
    assert!(bad.iter().all(|p| !p.exists()));
    assert!(records[1].0.exists() && store.has_blob(&r.digest), "the good record and its blob stay");
}
