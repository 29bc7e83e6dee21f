//! kiln save, load and export-layout: round trips between stores, and
//! against podman, skopeo and umoci.

use crate::cli_util;

use std::path::Path;
use std::process::Command;

use cli_util::{s, tool, Env};
use serde_json::Value;

/// Three images in `env`: app:v1 (also named app:stable), app:v2 sharing
/// its first layer, and tools:1.
fn three_images(env: &Env) -> (String, String, String) {
    let v1 = env.build("app:v1", &[("base", "base layer\n"), ("v", "1\n")], "CMD [\"/v\"]\n");
    let v2 = env.build("app:v2", &[("base", "base layer\n"), ("v", "2\n")], "ENV V=2\n");
    let tools = env.build("tools:1", &[("t", "tools\n")], "");
    env.ok(&["tag", "app:v1", "app:stable"]);
    (v1, v2, tools)
}

fn names(env: &Env) -> Vec<String> {
    let out = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn save_and_load_round_trip_both_formats_and_compressions() {
    let env = Env::new();
    let (v1, v2, tools) = three_images(&env);
    for format in ["docker-archive", "oci-archive"] {
        let archive = env.path(&format!("{format}.tar"));
        env.ok(&["save", "--format", format, "-o", s(&archive), "app:v1", "app:stable", "app:v2", &tools[..12]]);
        let gz = env.path(&format!("{format}.tar.gz"));
        let xz = env.path(&format!("{format}.tar.xz"));
        let zst = env.path(&format!("{format}.tar.zst"));
        let compress = |prog: &str, out: &Path| {
            let bytes = Command::new(prog).arg("-c").arg(&archive).output().unwrap().stdout;
            std::fs::write(out, bytes).unwrap();
        };
        compress("gzip", &gz);
        compress("xz", &xz);
        compress("zstd", &zst);
        for input in [&archive, &gz, &xz, &zst] {
            let other = Env::new();
            let out = other.ok(&["load", "-i", s(input)]);
            assert!(out.contains("Loaded image: app:v1\n") && out.contains("Loaded image: app:stable\n"), "{out}");
            assert!(out.contains(&format!("Loaded image ID: sha256:{tools}")), "tools:1 was saved by id: {out}");
            let mut want = vec![
                format!("app:stable {}", &v1[..12]),
                format!("app:v1 {}", &v1[..12]),
                format!("app:v2 {}", &v2[..12]),
                format!("<none>:<none> {}", &tools[..12]),
            ];
            want.sort();
            assert_eq!(names(&other), want, "{format} {}", input.display());
            assert_eq!(other.inspect("app:v2")["Config"], env.inspect("app:v2")["Config"]);
        }
        // From standard input too.
        let other = Env::new();
        let bytes = std::fs::read(&gz).unwrap();
        let out = other.kiln(&["load", "-q"]).write_stdin(bytes).output().unwrap();
        assert!(out.status.success() && out.stdout.is_empty());
        assert_eq!(names(&other).len(), 4);
    }
    // The docker archive holds the shared layer once.
    let list = tool("tar", &["tf", s(&env.path("docker-archive.tar"))]).unwrap();
    assert_eq!(list.lines().filter(|l| l.ends_with(".tar")).count(), 4, "{list}");

    let stdout = env.kiln(&["save", "app:v1"]).output().unwrap();
    assert!(stdout.status.success());
    assert!(stdout.stdout.len() > 1024 && stdout.stdout.len() % 512 == 0, "a tar on stdout");
    assert!(env.fails(&["save", "-o", s(&env.path("x.tar")), "nope:1"]).contains("no such image"));
    assert!(env.fails(&["load", "-i", s(&env.path("missing.tar"))]).contains("missing.tar"));
}

#[test]
fn export_layout_is_read_by_skopeo_and_umoci() {
    let env = Env::new();
    three_images(&env);
    let layout = env.path("layout");
    env.ok(&["export-layout", s(&layout), "app:v1", "app:v2"]);
    env.ok(&["export-layout", s(&layout), "tools:1"]); // merged into the same layout
    if let Some(out) = tool("umoci", &["ls", "--layout", s(&layout)]) {
        let mut tags: Vec<&str> = out.lines().collect();
        tags.sort();
        assert_eq!(tags, ["app:v1", "app:v2", "tools:1"]);
    }
    for name in ["app:v1", "app:v2", "tools:1"] {
        let Some(out) = tool("skopeo", &["inspect", &format!("oci:{}:{name}", s(&layout))]) else { return };
        let v: Value = serde_json::from_str(&out).unwrap();
        // Plain layers in the store leave gzip'd: another manifest, the same config.
        assert_ne!(v["Digest"], env.inspect(name)["Digest"], "{name}");
        let raw = tool("skopeo", &["inspect", "--raw", &format!("oci:{}:{name}", s(&layout))]).unwrap();
        let manifest: Value = serde_json::from_str(&raw).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "{name}");
        }
        let config = tool("skopeo", &["inspect", "--config", "--raw", &format!("oci:{}:{name}", s(&layout))]).unwrap();
        let id = format!("sha256:{}", env.inspect(name)["Id"].as_str().unwrap());
        assert_eq!(kiln::store::sha256_digest(config.as_bytes()), id, "{name}");
    }
    // And kiln loads the layout directory back.
    let other = Env::new();
    other.ok(&["load", "-i", s(&layout)]);
    assert_eq!(other.ok(&["images", "-q"]).lines().count(), 3);
}

/// podman with a throwaway storage root; `None` (with a notice) if podman is missing.
fn podman(root: &Path, args: &[&str]) -> Option<String> {
    let storage = root.join("storage");
    let run = root.join("run");
    let mut full = vec!["--root", s(&storage), "--runroot", s(&run), "--storage-driver", "vfs"];
    full.extend_from_slice(args);
    tool("podman", &full)
}

#[test]
fn podman_loads_kiln_saves_and_kiln_loads_podman_saves() {
    let env = Env::new();
    let (v1, v2, _) = three_images(&env);
    let archive = env.path("kiln.tar");
    env.ok(&["save", "-o", s(&archive), "app:v1", "app:v2"]);
    let pod = env.path("podman");
    let Some(out) = podman(&pod, &["load", "-i", s(&archive)]) else { return };
    assert!(out.contains("app:v1") && out.contains("app:v2"), "{out}");
    let ids = podman(&pod, &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]).unwrap();
    assert!(ids.lines().any(|l| l.ends_with(&format!("/app:v1 {}", &v1[..12]))), "{ids}");
    assert!(ids.lines().any(|l| l.ends_with(&format!("/app:v2 {}", &v2[..12]))), "{ids}");
    let oci = env.path("kiln-oci.tar");
    env.ok(&["save", "--format", "oci-archive", "-o", s(&oci), "tools:1"]);
    let out = podman(&pod, &["load", "-i", s(&oci)]).unwrap();
    let id = podman(&pod, &["image", "inspect", "--format", "{{.Id}}", out.trim().rsplit(' ').next().unwrap()]);
    assert_eq!(id.unwrap().trim(), env.inspect("tools:1")["Id"]);

    // Back: podman's multi-image docker-archive and its oci-archive.
    let saved = env.path("podman-multi.tar");
    let app1 = ids.lines().find(|l| l.contains("app:v1")).unwrap().split(' ').next().unwrap().to_string();
    let app2 = ids.lines().find(|l| l.contains("app:v2")).unwrap().split(' ').next().unwrap().to_string();
    podman(&pod, &["save", "-m", "-o", s(&saved), &app1, &app2]).unwrap();
    let other = Env::new();
    let out = other.ok(&["load", "-i", s(&saved)]);
    assert!(out.contains(&format!("Loaded image: {app1}")) && out.contains(&format!("Loaded image: {app2}")), "{out}");
    assert_eq!(other.inspect(&app1)["Id"], v1.as_str());
    assert_eq!(other.inspect(&app2)["Id"], v2.as_str());
    let saved_oci = env.path("podman-oci.tar");
    podman(&pod, &["save", "--format", "oci-archive", "-o", s(&saved_oci), &app2]).unwrap();
    let other = Env::new();
    let out = other.ok(&["load", "-i", s(&saved_oci)]);
    assert!(out.starts_with("Loaded image"), "{out}");
    let listed = other.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(
        listed.trim(),
        format!("sha256:{v2}"),
        "podman's copy: {}\nours: {}",
        other.ok(&["inspect", listed.trim()]),
        env.ok(&["inspect", "app:v2"])
    );
}

/// `--compression-level`: checked against `--compression` before anything runs, changes the blob but not
/// the layer's content, and the default level given explicitly is the same build as none given.
#[test]
fn compression_level_is_checked_and_changes_only_the_blob() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY data /data\n").unwrap();
    let mut text = String::new();
    let mut x = 12345u64;
    while text.len() < 400_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        text.push_str(["layer ", "blob ", "digest ", "level ", "kiln\n"][(x >> 61) as usize % 5]);
        text.push_str(&format!("{} ", (x >> 40) % 300));
    }
    std::fs::write(ctx.join("data"), &text).unwrap();
    // (layer digest, layer size, diff_id) of the image built with `extra` flags.
    let layer = |tag: &str, extra: &[&str]| {
        let mut args = vec!["build", "-q", "-t", tag];
        if !extra.contains(&"--compression") {
            // Asked for explicitly, so the blob is compressed at commit whatever the default.
            args.extend(["--compression", "gzip"]);
        }
        args.extend(extra);
        args.push(s(&ctx));
        env.ok(&args);
        let info = env.inspect(tag);
        let digest = info["Digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(env.path("store/blobs/sha256").join(digest)).unwrap()).unwrap();
        let l = &manifest["layers"][0];
        (l["digest"].as_str().unwrap().to_string(), l["size"].as_u64().unwrap(), info["RootFS"]["Layers"][0].clone())
    };
    let default = layer("d:1", &[]);
    assert_eq!(layer("d:6", &["--compression-level", "6"]), default, "level 6 is gzip's default");
    let fast = layer("d:fast", &["--compression-level", "1"]);
    let small = layer("d:small", &["--compression-level", "9"]);
    assert_eq!(fast.2, default.2, "the tar is the same at every level");
    assert_eq!(small.2, default.2);
    assert!(small.1 < fast.1, "level 9 gave {} bytes, level 1 {}", small.1, fast.1);
    assert!(small.1 < text.len() as u64 / 2);
    for (flags, says) in [
        (&["--compression-level", "10"][..], "out of range for gzip: use a level from 1 to 9"),
        (&["--compression-level", "0"][..], "from 1 to 9"),
        (
            &["--compression", "zstd", "--compression-level", "20"][..],
            "out of range for zstd: use a level from 1 to 19",
        ),
        (&["--compression", "none", "--compression-level", "3"][..], "--compression none"),
    ] {
        let mut args = vec!["build", "-q"];
        args.extend(flags);
        args.push(s(&ctx));
        let err = env.fails(&args);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    // zstd takes its own range.
    let zstd = layer("d:zstd", &["--compression", "zstd", "--compression-level", "19"]);
    assert_eq!(zstd.2, default.2);
}

/// A gzip layer many parallel-compression blocks long, mixing random (stored), base64 (Huffman-only) and
/// text (deflated) stretches, is read by Go's gzip (umoci unpack) and by python3's gzip module, byte for byte.
#[test]
fn parallel_gzip_layers_are_read_by_umoci_and_python() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY data /data\n").unwrap();
    let mut data = Vec::new();
    let mut x = 0x2545f4914f6cdd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for part in 0..12 {
        for _ in 0..150_000 {
            let r = next();
            match part % 3 {
                0 => data.push((r >> 24) as u8),
                1 => data.push(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(r & 63) as usize]),
                _ => data.extend_from_slice(["kiln ", "layer ", "block\n"][(r % 3) as usize].as_bytes()),
            }
        }
    }
    std::fs::write(ctx.join("data"), &data).unwrap();
    env.ok(&["build", "-q", "--compression", "gzip", "-t", "mixed:1", s(&ctx)]);
    let layout = env.path("layout");
    env.ok(&["export-layout", s(&layout), "mixed:1"]);
    let digest = env.inspect("mixed:1")["Digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap()).unwrap();
    let layer = &manifest["layers"][0];
    assert!(layer["mediaType"].as_str().unwrap().ends_with("+gzip"), "{layer}");
    let blob = layout.join("blobs/sha256").join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    assert!(layer["size"].as_u64().unwrap() > 1 << 20, "several blocks: {layer}");
    let script = "import gzip,hashlib,sys; print('sha256:'+hashlib.sha256(gzip.open(sys.argv[1]).read()).hexdigest())";
    if let Some(out) = tool("python3", &["-c", script, s(&blob)]) {
        assert_eq!(Value::String(out.trim().to_string()), env.inspect("mixed:1")["RootFS"]["Layers"][0]);
    }
    let bundle = env.path("bundle");
    let image = format!("{}:mixed:1", s(&layout));
    if tool("umoci", &["unpack", "--rootless", "--image", &image, s(&bundle)]).is_some() {
        assert!(std::fs::read(bundle.join("rootfs/data")).unwrap() == data, "umoci unpacked other bytes");
    }
}
