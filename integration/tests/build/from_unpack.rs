//! `COPY --from` and `RUN --mount=type=bind,from=` read an image through the
//! one safe applier (layer dirs stacked by overlay, or unpacked with
//! whiteouts as deletions): a layer that plants a symlink to a directory of
//! the user's, and a later layer that writes or deletes through it, never
//! touches that directory, with either storage driver.

use std::path::Path;

use kiln_integration::*;

/// Appends an entry; long names and link targets go in GNU extension headers.
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, body: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(body.len() as u64);
    h.set_mtime(1_600_000_000);
    if kind == tar::EntryType::Symlink {
        b.append_link(&mut h, name, link).unwrap();
    } else {
        b.append_data(&mut h, name, body).unwrap();
    }
}

fn blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    (format!("sha256:{hex}"), bytes.len())
}

/// Writes an OCI layout holding one image `evil` with uncompressed `layers`.
fn write_layout(sb: &Sandbox, rel: &str, layers: &[Vec<u8>]) -> std::path::PathBuf {
    let layout = sb.mkdir(rel);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let (digest, size) = blob(&layout, l);
        diff_ids.push(digest.clone());
        descs.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}),
        );
    }
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cdigest, csize) = blob(&layout, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": descs,
    });
    let (mdigest, msize) = blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": msize,
                       "annotations": {"org.opencontainers.image.ref.name": "evil"}}],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    sb.give_tree(&layout);
    layout
}

#[test]
fn copy_from_and_bind_from_a_hostile_image_never_reach_the_host() {
    let sb = Sandbox::new();
    sb.busybox_context();
    let victim = sb.mkdir("home/victim");
    sb.write("home/victim/keep", "precious\n");
    let victim_s = victim.to_str().unwrap().to_string();
    use tar::EntryType::{Regular as F, Symlink as S};

    let mut l1 = tar::Builder::new(Vec::new());
    raw_entry(&mut l1, "ok", F, "", b"fine\n");
    raw_entry(&mut l1, "evil", S, &victim_s, b"");
    raw_entry(&mut l1, "up", S, "../../../../../../../../../..", b"");
    let l1 = l1.into_inner().unwrap();
    let mut l2 = tar::Builder::new(Vec::new());
    raw_entry(&mut l2, "evil/.wh..wh..opq", F, "", b"");
    raw_entry(&mut l2, "evil/.wh.keep", F, "", b"");
    raw_entry(&mut l2, "evil/planted", F, "", b"pwned\n");
    let through_up = format!("up{victim_s}");
    raw_entry(&mut l2, &format!("{through_up}/.wh.keep"), F, "", b"");
    raw_entry(&mut l2, &format!("{through_up}/planted2"), F, "", b"pwned\n");
    let l2 = l2.into_inner().unwrap();
    let layout = write_layout(&sb, "layout", &[l1, l2]);
    let image = format!("oci:{}:evil", layout.display());

    for driver in ["overlay", "vfs"] {
        let df = format!(
            "{RUN_BASE}\
COPY --from={image} /ok /got-ok
RUN --mount=type=bind,from={image},target=/m cat /m/ok > /seen-ok
"
        );
        let out = sb.try_build(&df, &format!("from-evil-{driver}"), &["--storage-driver", driver]);
        let mut names: Vec<String> = std::fs::read_dir(&victim)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keep"], "{driver}: the victim directory changed:\n{}", out.transcript());
        assert_eq!(std::fs::read_to_string(victim.join("keep")).unwrap(), "precious\n", "{driver}");
        // The writes landed inside the image, where the symlinks lead there, so the build goes on.
        out.ok();
        let img = sb.image(&format!("from-evil-{driver}"));
        assert_eq!(img.file_str("got-ok"), "fine\n");
        assert_eq!(img.file_str("seen-ok"), "fine\n");
    }
}
