//! kiln against a real Distribution registry over plain HTTP on 127.0.0.1:
//! push, pull, FROM, formats, platforms, corruption, parallel pulls, errors.

use crate::registry_util;

use std::path::Path;

use kiln::image::manifest::{
    Descriptor, Index, DOCKER_MANIFEST, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, REF_NAME,
};
use kiln::registry::{self, RegistryOptions};
use kiln::store::{sha256_digest, Store};
use kiln_overlay::compress::Compression;
use registry_util::*;

/// How each blob's transfer ended (`mounted from …`, `done`), in order.
#[derive(Default)]
struct Lines(std::sync::Mutex<Vec<String>>);

impl kiln::progress::Reporter for Lines {
    fn report(&self, event: kiln::progress::Event) {
        use kiln::progress::{Event, Transfer};
        if let Event::Transfer(Transfer::Finished { digest, note, .. }) = event {
            self.0.lock().unwrap().push(format!("{digest} {note}"));
        }
    }
}

fn store_at(root: &Path) -> Store {
    Store::open(root).unwrap()
}

fn image_in(root: &Path, name: &str) -> kiln::store::Image {
    let store = store_at(root);
    let desc = store.resolve(name).unwrap().unwrap_or_else(|| panic!("{name} is not in the store"));
    store.load_image(&desc).unwrap()
}

#[test]
fn push_then_skopeo_and_kiln_pull_back_the_same_digest() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let (_ctx, id) = build_scratch(&a, "app:1", &[("x", &noise(3000, 1)), ("y", b"hello\n")], &[]);
    let dest = format!("{}/team/app:1", reg.host());
    let out = kiln(&a, &["push", "app:1", &dest]);
    let digest = last_line(&ok(&out));
    assert!(digest.starts_with("sha256:"), "{digest}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Copying blob"), "{stderr}");
    assert_eq!(stderr.matches("Compressing layer").count(), 2, "{stderr}");

    assert_eq!(skopeo_digest(&dest, &[]), digest, "skopeo sees the digest kiln printed");

    // The store keeps its plain layers (blob digest = diff_id) and its
    // manifest; the registry got gzip layers, the same config.
    let stored = image_in(&a, "app:1");
    assert_ne!(stored.manifest_digest, digest, "the pushed manifest lists other blobs");
    for (layer, diff_id) in stored.manifest.layers.iter().zip(&stored.config.rootfs.diff_ids) {
        assert_eq!((layer.media_type.as_str(), &layer.digest), (OCI_LAYER_TAR, diff_id));
    }
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{dest}")]))
            .unwrap();
    assert_eq!(raw["config"]["digest"], stored.config_digest.as_str());
    let pushed_layers = raw["layers"].as_array().unwrap().clone();
    for (layer, diff_id) in pushed_layers.iter().zip(&stored.config.rootfs.diff_ids) {
        assert_eq!(layer["mediaType"], OCI_LAYER_GZIP);
        assert_ne!(layer["digest"], diff_id.as_str());
        // Kept in the store, for the next push.
        assert!(store_at(&a).has_blob(layer["digest"].as_str().unwrap()), "{layer}");
    }
    let blobs_after_first_push = kiln_integration::blob_files(&a);

    // skopeo pulls it back: the layout's manifest is the same one.
    let layout = tmp.path().join("layout");
    skopeo(&["copy", "--src-tls-verify=false", &format!("docker://{dest}"), &format!("oci:{}:back", layout.display())]);
    let index: Index = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests[0].digest, digest);

    // kiln pulls it into an empty store: same manifest digest, same image id.
    let b = tmp.path().join("b");
    let pulled_id = last_line(&ok(&kiln(&b, &["pull", &dest])));
    assert_eq!(pulled_id, id);
    let image = image_in(&b, &dest);
    assert_eq!(image.manifest_digest, digest);
    let store = store_at(&b);
    assert_eq!(sha256_digest(&store.read_blob(&digest).unwrap()), digest, "manifest stored byte for byte");

    // Pulled layers keep their compressed blobs.
    assert_eq!(image.manifest.layers, serde_json::from_value::<Vec<Descriptor>>(raw["layers"].clone()).unwrap());

    // A second push skips every blob, and compresses nothing again.
    let again = kiln(&a, &["push", "app:1", &dest]);
    assert_eq!(last_line(&ok(&again)), digest);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.matches("skipped: already exists").count(), 3, "two layers and the config: {stderr}");
    assert!(!stderr.contains("Compressing"), "{stderr}");
    // Another repository of the registry: mounted, not uploaded.
    let other = format!("{}/elsewhere/app:1", reg.host());
    let mounted = kiln(&a, &["push", "app:1", &other]);
    assert_eq!(last_line(&ok(&mounted)), digest);
    let stderr = String::from_utf8_lossy(&mounted.stderr);
    assert_eq!(stderr.matches("mounted").count(), 3, "two layers and the config: {stderr}");
    assert_eq!(kiln_integration::blob_files(&a), blobs_after_first_push, "no blob was made again");
    assert_eq!(image_in(&a, "app:1").manifest_digest, stored.manifest_digest, "the stored image is unchanged");
}

#[test]
fn zstd_built_layers_are_pushed_as_they_are() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    build_scratch(&a, "app:1", &[("x", &noise(20_000, 7))], &["--compression", "zstd"]);
    let stored = image_in(&a, "app:1");
    assert_eq!(stored.manifest.layers[0].media_type, OCI_LAYER_ZSTD, "--compression compresses at commit");
    assert_eq!(store_at(&a).read_blob(&stored.manifest.layers[0].digest).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    let dest = format!("{}/z/app:1", reg.host());
    let digest = last_line(&ok(&kiln(&a, &["push", "app:1", &dest])));
    assert_eq!(digest, stored.manifest_digest, "the manifest goes as stored");
    let b = tmp.path().join("b");
    ok(&kiln(&b, &["pull", "-q", &dest]));
    assert_eq!(image_in(&b, &dest).config_digest, stored.config_digest);
    assert!(!a.join("kiln/compressed").exists(), "nothing was compressed again");
}

#[test]
fn from_a_registry_image_seeded_by_skopeo() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let seed_root = tmp.path().join("seed");
    let layout = tmp.path().join("layout");
    let out_spec = format!("type=oci,dest={},name=seed", layout.display());
    let (_ctx, seed_id) =
        build_scratch(&seed_root, "seed:1", &[("base.txt", b"from the base\n")], &["--output", &out_spec]);
    let base = format!("{}/base/seed:1", reg.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:seed:latest", layout.display()),
        &format!("docker://{base}"),
    ]);

    let root = tmp.path().join("fresh");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {base}\nENV FROM_BASE=$PATH\nCOPY top.txt /top.txt\n"))
        .unwrap();
    std::fs::write(ctx.path().join("top.txt"), "on top\n").unwrap();
    let out = ok(&kiln(&root, &["build", "-t", "child:1", ctx.path().to_str().unwrap()]));
    assert!(out.contains(&format!("Pulling {base}")), "{out}");

    let base_image = image_in(&root, &base);
    assert_eq!(base_image.config_digest, format!("sha256:{seed_id}"));
    let child = image_in(&root, "child:1");
    assert_eq!(child.manifest.layers.len(), base_image.manifest.layers.len() + 1);
    assert_eq!(child.manifest.layers[0], base_image.manifest.layers[0]);
    let env = child.config.config.env.clone().unwrap_or_default();
    assert!(env.iter().any(|e| e.starts_with("FROM_BASE=/usr/local/sbin")), "base env reached the plan: {env:?}");

    // The base is now local: a second build does not pull.
    let out = ok(&kiln(&root, &["build", "-t", "child:2", ctx.path().to_str().unwrap()]));
    assert!(!out.contains("Pulling"), "{out}");
    // --pull=always asks the registry again (the blobs are already here).
    let out = ok(&kiln(&root, &["build", "--pull=always", "-t", "child:3", ctx.path().to_str().unwrap()]));
    assert!(out.contains(&format!("Pulling {base}")) && out.contains("skipped: already exists"), "{out}");
    // `--pull` alone is docker's switch (always), not a policy that swallows
    // the context after it.
    let out = ok(&kiln(&root, &["build", "-t", "child:5", "--pull", ctx.path().to_str().unwrap()]));
    assert!(out.contains(&format!("Pulling {base}")), "{out}");
    // An image the registry does not have: "Pulling …" once, then the error.
    let missing = tempfile::tempdir().unwrap();
    std::fs::write(missing.path().join("Dockerfile"), format!("FROM {}/base/missing:1\n", reg.host())).unwrap();
    let out = kiln(&root, &["build", missing.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = failed(&out);
    assert!(err.contains("base/missing:1"), "{err}");
    assert_eq!(stdout.matches("Pulling").count(), 1, "a failed pull says Pulling once\n{stdout}\n{err}");
    // --pull=newer keeps the stored base when the registry is gone.
    drop(reg);
    let out = kiln(&root, &["build", "--pull=newer", "-t", "child:4", ctx.path().to_str().unwrap()]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("using the image in the store"));
    let err = failed(&kiln(&root, &["build", "--pull=always", ctx.path().to_str().unwrap()]));
    assert!(err.contains("connection refused") && err.contains(&base), "{err}");
    // --pull=never with an empty store refuses, naming the image.
    let never = failed(&kiln(&tmp.path().join("empty"), &["build", "--pull=never", ctx.path().to_str().unwrap()]));
    assert!(never.contains(&base) && never.contains("--pull=never"), "{never}");
}

#[test]
fn docker_v2s2_push_and_digestfile() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    build_scratch(&a, "app:1", &[("x", &noise(500, 2))], &[]);
    let dest = format!("{}/fmt/app:docker", reg.host());
    let digestfile = tmp.path().join("digest");
    let digest = last_line(&ok(&kiln(
        &a,
        &["push", "--format", "docker", "--digestfile", digestfile.to_str().unwrap(), "app:1", &dest],
    )));
    assert_eq!(std::fs::read_to_string(&digestfile).unwrap(), digest);
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{dest}")]))
            .unwrap();
    assert_eq!(raw["mediaType"], DOCKER_MANIFEST);
    assert_eq!(raw["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip");
    assert_eq!(skopeo_digest(&dest, &[]), digest);

    let b = tmp.path().join("b");
    ok(&kiln(&b, &["pull", "-q", &dest]));
    let image = image_in(&b, &dest);
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(image.manifest.media_type.as_deref(), Some(DOCKER_MANIFEST));
    assert_eq!(image.config_digest, image_in(&a, "app:1").config_digest, "same config blob in both formats");

    // Build --output type=registry pushes too.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {dest}\nLABEL pushed=yes\n")).unwrap();
    let target = format!("{}/fmt/labelled:1", reg.host());
    let out =
        ok(&kiln(&b, &["build", "--output", &format!("type=registry,name={target}"), ctx.path().to_str().unwrap()]));
    let pushed =
        out.lines().find_map(|l| l.strip_prefix(&format!("Pushed {target}@"))).expect("pushed line").to_string();
    assert_eq!(skopeo_digest(&target, &[]), pushed);
}

#[test]
fn multi_arch_index_picks_the_platform() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("build");
    // gzip layers at commit: skopeo would compress plain ones on the way
    // to the registry, and the index below would name other manifests.
    let gz = ["--compression", "gzip"];
    build_scratch(&root, "multi:amd64", &[("arch", b"amd64\n")], &["--platform", "linux/amd64", gz[0], gz[1]]);
    build_scratch(&root, "multi:arm64", &[("arch", b"arm64\n")], &["--platform", "linux/arm64/v8", gz[0], gz[1]]);
    let store = store_at(&root);
    let amd = store.resolve("multi:amd64").unwrap().unwrap();
    let arm = store.resolve("multi:arm64").unwrap().unwrap();
    let layout = tmp.path().join("layout");
    let entry = |d: &Descriptor| {
        let mut d = d.clone();
        d.annotations = None;
        d
    };
    kiln::transport::export_oci_dir(&store, &[(None, entry(&amd)), (None, entry(&arm))], &layout, Compression::Gzip)
        .unwrap();
    // Replace the layout's two entries by one index over both.
    let index = Index { manifests: vec![entry(&amd), entry(&arm)], ..Default::default() };
    assert!(index.manifests.iter().all(|d| d.platform.is_some()));
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = sha256_digest(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    let mut top = Descriptor::new(OCI_INDEX, digest.clone(), bytes.len() as u64);
    top.annotations = Some([(REF_NAME.to_string(), "multi".to_string())].into());
    let layout_index = Index { manifests: vec![top], ..Default::default() };
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&layout_index).unwrap()).unwrap();
    let dest = format!("{}/multi/app:1", reg.host());
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{dest}"),
    ]);
    assert_eq!(raw_digest(&dest), digest, "the registry holds the index");

    // The host's platform by default.
    let host = tmp.path().join("host");
    ok(&kiln(&host, &["pull", "-q", &dest]));
    let image = image_in(&host, &dest);
    let (arch, expected) = if std::env::consts::ARCH == "aarch64" { ("arm64", &arm) } else { ("amd64", &amd) };
    assert_eq!(image.config.architecture, arch);
    assert_eq!(image.manifest_digest, expected.digest);

    // --platform picks another; an absent one is named with what there is.
    let other = tmp.path().join("arm");
    ok(&kiln(&other, &["pull", "-q", "--platform", "linux/arm64", &dest]));
    assert_eq!(image_in(&other, &dest).manifest_digest, arm.digest);
    let err = failed(&kiln(&other, &["pull", "--platform", "linux/s390x", &dest]));
    assert!(
        err.contains("no match for platform in manifest")
            && err.contains("linux/s390x")
            && err.contains("linux/arm64")
            && err.contains(&dest),
        "{err}"
    );

    // The same as a Docker manifest list (skopeo converts it).
    let list = format!("{}/multi/app:list", reg.host());
    skopeo(&[
        "copy",
        "--all",
        "--format",
        "v2s2",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("docker://{list}"),
    ]);
    let raw: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{list}")]))
            .unwrap();
    assert_eq!(raw["mediaType"], kiln::image::manifest::DOCKER_MANIFEST_LIST);
    let from_list = tmp.path().join("list");
    ok(&kiln(&from_list, &["pull", "-q", "--platform", "linux/arm64", &list]));
    let image = image_in(&from_list, &list);
    assert_eq!(image.config.architecture, "arm64");
    assert_eq!(image.manifest.media_type.as_deref(), Some(DOCKER_MANIFEST));

    // A build for arm64 FROM the index gets the arm64 base.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {dest}\nLABEL x=1\n")).unwrap();
    let fresh = tmp.path().join("fresh");
    ok(&kiln(&fresh, &["build", "--platform", "linux/arm64", "-t", "built:1", ctx.path().to_str().unwrap()]));
    let built = image_in(&fresh, "built:1");
    assert_eq!(built.config.architecture, "arm64");
    assert_eq!(built.manifest.layers, image_in(&other, &dest).manifest.layers);
}

#[test]
fn a_corrupted_blob_is_refused_and_leaves_nothing() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    // gzip at commit, so the pushed layer is the stored one.
    build_scratch(&a, "app:1", &[("x", &noise(20_000, 3))], &["--compression", "gzip"]);
    let dest = format!("{}/bad/app:1", reg.host());
    ok(&kiln(&a, &["push", "-q", "app:1", &dest]));
    let layer = image_in(&a, "app:1").manifest.layers[0].clone();
    let data = reg.blob_data(&layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let b = tmp.path().join("b");
    let err = failed(&kiln(&b, &["pull", &dest]));
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        line.contains(&dest) && line.contains("does not match its digest") && line.contains(&layer.digest),
        "{err}"
    );
    let store = store_at(&b);
    assert!(!store.has_blob(&layer.digest), "the bad blob did not enter the store");
    assert!(store.resolve(&dest).unwrap().is_none(), "no tag for a failed pull");
    let leftovers: Vec<_> = std::fs::read_dir(store.tmp_dir()).unwrap().filter_map(Result::ok).collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn parallel_pulls_of_the_same_base_both_succeed() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let big: Vec<Vec<u8>> = (0..3).map(|i| noise(3 << 20, 10 + i)).collect();
    build_scratch(&a, "app:1", &[("l1", &big[0]), ("l2", &big[1]), ("l3", &big[2])], &["--compression", "none"]);
    let dest = format!("{}/par/app:1", reg.host());
    ok(&kiln(&a, &["push", "-q", "app:1", &dest]));

    let b = tmp.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let spawn = || {
        std::process::Command::new(kiln_bin())
            .arg("--root")
            .arg(&b)
            .args(["pull", &dest])
            .env("HOME", tmp.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn(), spawn());
    let (one, two) = (one.wait_with_output().unwrap(), two.wait_with_output().unwrap());
    let id = image_in(&a, "app:1").config_digest;
    assert_eq!(format!("sha256:{}", last_line(&ok(&one))), id);
    assert_eq!(format!("sha256:{}", last_line(&ok(&two))), id);
    let image = image_in(&b, &dest);
    let store = store_at(&b);
    for layer in &image.manifest.layers {
        store.read_blob(&layer.digest).unwrap();
    }
    let fetched = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).matches(" done").count();
    // Per-blob locks: each layer came down once, by one pull or the other.
    assert_eq!(fetched(&one) + fetched(&two), image.manifest.layers.len());
}

#[test]
fn chunked_uploads_and_cross_repository_mounts() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    build_scratch(&a, "app:1", &[("x", &noise(50_000, 4))], &["--compression", "none"]);
    let store = store_at(&a);
    let image = image_in(&a, "app:1");
    let opts = RegistryOptions { progress: true, chunk_size: Some(7_000), ..Default::default() };
    let first = format!("{}/chunks/one:1", reg.host());
    let digest = registry::push(&store, &image, &first, &opts, None, Compression::None, &Lines::default()).unwrap();
    assert_eq!(skopeo_digest(&first, &[]), digest);

    let second = format!("{}/chunks/two:1", reg.host());
    let out = Lines::default();
    assert_eq!(registry::push(&store, &image, &second, &opts, None, Compression::None, &out).unwrap(), digest);
    let text = out.0.lock().unwrap().join("\n");
    assert_eq!(text.matches("mounted").count(), 2, "{text}");

    // Pulled back whole, byte for byte.
    let b = tmp.path().join("b");
    let pulled = registry::pull(&store_at(&b), &second, &RegistryOptions::default(), &kiln::progress::Silent).unwrap();
    assert_eq!(pulled.manifest_digest, digest);
    assert_eq!(
        store_at(&b).read_blob(&image.manifest.layers[0].digest).unwrap(),
        store.read_blob(&image.manifest.layers[0].digest).unwrap()
    );
}

#[test]
fn errors_are_one_line_naming_reference_and_cause() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s");
    let one_line = |args: &[&str], wanted: &[&str]| {
        let err = failed(&kiln(&root, args));
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        for w in wanted {
            assert!(lines[0].contains(w), "{w:?} missing in {err}");
        }
    };
    let missing = format!("{}/none/app:nope", reg.host());
    one_line(&["pull", "-q", &missing], &[&missing, "manifest unknown"]);
    let closed = format!("127.0.0.1:{}/x/app:1", free_port());
    // A refused connection is retried (with a warning per try) unless --retry 0.
    one_line(&["pull", "-q", "--retry", "0", &closed], &[&closed, "connection refused"]);
    one_line(&["pull", "-q", "no-such-host.invalid/x/app:1"], &["no-such-host.invalid/x/app:1", "unknown host"]);
    one_line(&["pull", "-q", "Bad/Name"], &["Bad/Name", "invalid reference"]);
    one_line(&["push", "-q", "nothing:here", &format!("{}/x/y:1", reg.host())], &["nothing:here"]);
    // Nothing was written for any of them.
    let store = store_at(&root);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn server_errors_are_retried_and_cut_transfers_refused() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    build_scratch(&a, "app:1", &[("x", &noise(100_000, 5))], &["--compression", "none"]);
    ok(&kiln(&a, &["push", "-q", "app:1", &format!("{}/flaky/app:1", reg.host())]));
    let layer = image_in(&a, "app:1").manifest.layers[0].digest.clone();

    // Two 503s on the manifest, then it comes through.
    let flaky = FaultProxy::start(reg.port, Fault::ServerErrors(2));
    let through = format!("{}/flaky/app:1", flaky.host());
    let b = tmp.path().join("b");
    ok(&kiln(&b, &["pull", "-q", &through]));
    assert_eq!(image_in(&b, &through).config_digest, image_in(&a, "app:1").config_digest);
    let log = flaky.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.ends_with("503")).count(), 2, "{log:?}");

    // Blob bodies cut in half: tried again, then refused; nothing stored.
    let cutting = FaultProxy::start(reg.port, Fault::TruncateBlobs);
    let through = format!("{}/flaky/app:1", cutting.host());
    let c = tmp.path().join("c");
    let err = failed(&kiln(&c, &["pull", "-q", &through]));
    assert!(err.contains(&through) && err.contains("ended early"), "{err}");
    let log = cutting.log.lock().unwrap().clone();
    // The first blob (the config) is tried four times (--retry's default is
    // 3 more), then the pull stops.
    assert_eq!(log.iter().filter(|l| l.contains("cut")).count(), 4, "retried: {log:?}");
    let store = store_at(&c);
    assert!(!store.has_blob(&layer));
    assert!(store.list().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0, "no temp files left");
}

#[test]
fn pull_and_push_need_no_root() {
    if !tools_present() || !nix::unistd::geteuid().is_root() || !which("setpriv") {
        eprintln!("skipping: needs root (to switch to an unprivileged user) and setpriv");
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    build_scratch(&a, "app:1", &[("x", b"unprivileged\n")], &[]);
    let src = format!("{}/root/app:1", reg.host());
    let digest = last_line(&ok(&kiln(&a, &["push", "-q", "app:1", &src])));

    let home = tmp.path().join("nobody");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", kiln_bin(), "--root"])
            .arg(home.join("store"))
            .args(args)
            .env("HOME", &home)
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap()
    };
    ok(&as_nobody(&["pull", "-q", &src]));
    let dest = format!("{}/nobody/app:1", reg.host());
    assert_eq!(last_line(&ok(&as_nobody(&["push", "-q", &src, &dest]))), digest);
}

#[test]
fn short_names_find_pulled_images_by_their_full_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s");
    build_scratch(&root, "local-only:1", &[("f", b"short names\n")], &[]);
    let store = store_at(&root);
    let desc = store.resolve("local-only:1").unwrap().unwrap();
    // As if pulled: the store knows it only by its registry name.
    store.tag(&registry::store_name("seedimage").unwrap(), &desc).unwrap();
    assert!(store.resolve("docker.io/library/seedimage:latest").unwrap().is_some());

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM seedimage\nLABEL short=1\n").unwrap();
    let out = ok(&kiln(&root, &["build", "--pull=never", "-t", "from-short:1", ctx.path().to_str().unwrap()]));
    assert!(out.contains("--> using seedimage"), "{out}");
    assert_eq!(image_in(&root, "from-short:1").manifest.layers, image_in(&root, "local-only:1").manifest.layers);
    // And push finds it by the short name too (the registry is not there: the error names it).
    let err = failed(&kiln(&root, &["push", "-q", "seedimage", &format!("127.0.0.1:{}/x/y:1", free_port())]));
    assert!(err.contains("connection refused"), "{err}");
}
