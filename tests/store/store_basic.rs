//! The store's on-disk contract: a valid OCI layout, atomic tags, resolution,
//! verified blobs, concurrent taggers.

use crate::store_util;

use std::io::Write;
use std::sync::Arc;

use kiln::image::manifest::REF_NAME;
use kiln::store::{sha256_digest, Store, StoreError};
use store_util::*;

#[test]
fn open_creates_a_valid_layout_and_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("oci-layout")).unwrap(), r#"{"imageLayoutVersion":"1.0.0"}"#);
    assert!(root.join("blobs/sha256").is_dir());
    assert!(store.list().unwrap().is_empty());

    let desc = simple_image(&store, "a", true);
    store.tag("app", &desc).unwrap();
    drop(store);

    let store = Store::open(&root).unwrap();
    let found = store.resolve("app").unwrap().unwrap();
    assert_eq!(found.digest, desc.digest);
    assert_eq!(found.ref_name(), Some("app:latest"));
    let image = store.load_image(&found).unwrap();
    assert_eq!(image.manifest.layers.len(), 2);
    assert_eq!(image.config.rootfs.diff_ids.len(), 2);
    assert_eq!(image.descriptor.platform.as_ref().unwrap().os, "linux");
    // index.json is indented JSON, readable by other tools.
    let text = std::fs::read_to_string(root.join("index.json")).unwrap();
    assert!(text.contains("\n  \"manifests\""), "{text}");

    // The layout is what the OCI tools accept.
    if tool("oci-image-tool", &["validate", "--type", "image", path_str(&root)]).is_some() {
        let out = tool("skopeo", &["inspect", &format!("oci:{}:app:latest", path_str(&root))]);
        if let Some(out) = out {
            assert!(out.contains(&desc.digest), "{out}");
        }
        if let Some(stat) = tool("umoci", &["stat", "--image", &format!("{}:app:latest", path_str(&root))]) {
            assert!(stat.contains("test layer a"), "{stat}");
        }
    }
}

#[test]
fn open_rejects_a_foreign_layout_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
    assert!(matches!(Store::open(dir.path()), Err(StoreError::LayoutVersion { .. })));
}

#[test]
fn tag_replaces_atomically_and_keeps_other_tags() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = simple_image(&store, "a", false);
    let b = simple_image(&store, "b", false);
    assert_ne!(a.digest, b.digest);

    store.tag("app:v1", &a).unwrap();
    store.tag("app:stable", &a).unwrap();
    store.tag("app:v1", &b).unwrap();
    let list = store.list().unwrap();
    let names: Vec<_> = list.iter().map(|d| (d.ref_name().unwrap().to_string(), d.digest.clone())).collect();
    assert_eq!(names, vec![("app:stable".to_string(), a.digest.clone()), ("app:v1".to_string(), b.digest.clone())]);
    assert!(list
        .iter()
        .all(|d| d.annotations.as_ref().unwrap().len() == 1 && d.annotations.as_ref().unwrap().contains_key(REF_NAME)));

    // No temp files linger in the layout itself.
    let stray: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let mut stray: Vec<_> = stray.iter().map(|n| n.to_string_lossy().into_owned()).collect();
    stray.sort();
    assert_eq!(stray, vec!["blobs", "index.json", "kiln", "oci-layout"]);

    assert!(store.untag("app:v1").unwrap());
    assert!(!store.untag("app:v1").unwrap());
    assert_eq!(store.list().unwrap().len(), 1);
    // Untagging leaves the blobs (pruning is separate).
    assert!(store.has_blob(&b.digest));

    assert!(matches!(store.tag("Bad Name", &a), Err(StoreError::Reference(_))));
}

#[test]
fn resolves_by_tag_id_prefix_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = simple_image(&store, "a", true);
    let b = simple_image(&store, "b", true);
    store.tag("localhost:5000/team/app", &a).unwrap();
    store.tag("other:1.0", &b).unwrap();
    let id_a = store.load_image(&a).unwrap().config_digest;
    let id_b = store.load_image(&b).unwrap().config_digest;

    assert_eq!(store.resolve("localhost:5000/team/app").unwrap().unwrap().digest, a.digest);
    assert_eq!(store.resolve("localhost:5000/team/app:latest").unwrap().unwrap().digest, a.digest);
    assert_eq!(store.resolve("other:1.0").unwrap().unwrap().digest, b.digest);
    assert!(store.resolve("other").unwrap().is_none());
    assert!(store.resolve("missing:tag").unwrap().is_none());

    // Full manifest digest and full image id.
    assert_eq!(store.resolve(&a.digest).unwrap().unwrap().digest, a.digest);
    assert_eq!(store.resolve(&id_b).unwrap().unwrap().digest, b.digest);
    // Unique id prefixes, with or without the algorithm.
    let hex_a = id_a.strip_prefix("sha256:").unwrap();
    let hex_b = id_b.strip_prefix("sha256:").unwrap();
    let common = hex_a.chars().zip(hex_b.chars()).take_while(|(x, y)| x == y).count();
    let unique_len = (common + 1).max(4);
    assert_eq!(store.resolve(&hex_a[..unique_len]).unwrap().unwrap().digest, a.digest);
    assert_eq!(store.resolve(&format!("sha256:{}", &hex_b[..12])).unwrap().unwrap().digest, b.digest);
    assert!(store.resolve(&hex_a[..3]).unwrap().is_none(), "3 hex digits are too short for an id");
    // A digest reference resolves by its digest.
    assert_eq!(store.resolve(&format!("app@{}", a.digest)).unwrap().unwrap().digest, a.digest);

    // Several tags of one image are one id, not an ambiguity.
    store.tag("again", &a).unwrap();
    assert_eq!(store.resolve(&hex_a[..unique_len]).unwrap().unwrap().digest, a.digest);
}

#[test]
fn ambiguous_id_prefix_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Find two configs whose ids share their first 4 hex digits (a birthday
    // search over a few hundred candidates), then store both.
    let mut seen = std::collections::HashMap::<String, String>::new();
    let (m1, m2, prefix) = (0..100_000)
        .find_map(|i| {
            let marker = format!("m{i}");
            let id = sha256_digest(&serde_json::to_vec(&config_for(&marker, vec![])).unwrap());
            let prefix = id[7..11].to_string();
            seen.insert(prefix.clone(), marker.clone()).map(|other| (other, marker, prefix))
        })
        .unwrap();
    let d1 = store.write_image(&config_for(&m1, vec![]), &[]).unwrap();
    let d2 = store.write_image(&config_for(&m2, vec![]), &[]).unwrap();
    store.tag("one", &d1).unwrap();
    store.tag("two", &d2).unwrap();
    assert_eq!(store.load_image(&d1).unwrap().config_digest[7..11], prefix);
    match store.resolve(&prefix) {
        Err(StoreError::AmbiguousId { matches, .. }) => assert_eq!(matches.len(), 2),
        other => panic!("expected an ambiguous id, got {other:?}"),
    }
    // One more digit tells them apart, unless they share it too.
    let id1 = store.load_image(&d1).unwrap().config_digest;
    let id2 = store.load_image(&d2).unwrap().config_digest;
    if id1[11..12] != id2[11..12] {
        assert_eq!(store.resolve(&id1[7..12]).unwrap().unwrap().digest, d1.digest);
    }
}

#[test]
fn blob_writer_verifies_digests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = b"some layer bytes".repeat(1000);
    let digest = sha256_digest(&data);

    let mut w = store.blob_writer().unwrap();
    w.write_all(&data).unwrap();
    let wrong = sha256_digest(b"other");
    assert!(matches!(w.commit_expecting(&wrong, None), Err(StoreError::DigestMismatch { .. })));
    assert!(!store.has_blob(&wrong) && !store.has_blob(&digest));

    let mut w = store.blob_writer().unwrap();
    w.write_all(&data).unwrap();
    assert!(matches!(w.commit_expecting(&digest, Some(3)), Err(StoreError::SizeMismatch { .. })));
    assert!(!store.has_blob(&digest));

    let mut w = store.blob_writer().unwrap();
    w.write_all(&data).unwrap();
    assert_eq!(w.commit_expecting(&digest, Some(data.len() as u64)).unwrap(), (digest.clone(), data.len() as u64));
    assert_eq!(store.read_blob(&digest).unwrap(), data);

    // Writing it again discards the duplicate; plain commit reports the digest.
    let mut w = store.blob_writer().unwrap();
    w.write_all(&data).unwrap();
    assert_eq!(w.commit().unwrap().0, digest);

    // Nothing is left in the temp dir, and a dropped writer cleans up too.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"abandoned").unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path().join("kiln/tmp")).unwrap().count(), 0);

    // A corrupted blob is caught on read.
    std::fs::write(store.blob_path(&digest), b"tampered").unwrap();
    assert!(matches!(store.read_blob(&digest), Err(StoreError::DigestMismatch { .. })));
    // Bad digests never map outside the blob dir.
    assert!(!store.has_blob("sha256:../../oci-layout"));
    assert!(matches!(store.read_blob("sha256:xyz"), Err(StoreError::InvalidDigest { .. })));
}

#[test]
fn write_image_checks_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let config =
        kiln::image::config::ImageConfig { architecture: "amd64".into(), os: "linux".into(), ..Default::default() };
    let missing = kiln::image::manifest::Descriptor::new(kiln::image::manifest::OCI_LAYER_TAR, sha256_digest(b"x"), 1);
    assert!(matches!(store.write_image(&config, &[missing]), Err(StoreError::LayerCountMismatch { .. })));
    let mut with_diff = config.clone();
    with_diff.rootfs.diff_ids.push(sha256_digest(b"x"));
    let missing = kiln::image::manifest::Descriptor::new(kiln::image::manifest::OCI_LAYER_TAR, sha256_digest(b"x"), 1);
    assert!(matches!(store.write_image(&with_diff, &[missing]), Err(StoreError::MissingBlob { .. })));
    // A config-only image (no layers) is fine.
    let desc = store.write_image(&config, &[]).unwrap();
    assert_eq!(desc.platform.unwrap().architecture, "amd64");
}

#[test]
fn concurrent_taggers_keep_every_tag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let seed = Store::open(&root).unwrap();
    let image = simple_image(&seed, "shared", false);

    let image = Arc::new(image);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = root.clone();
            let image = Arc::clone(&image);
            std::thread::spawn(move || {
                // Each thread has its own Store (its own lock file descriptions),
                // as separate kiln processes would.
                let store = Store::open(&root).unwrap();
                for i in 0..25 {
                    store.tag(&format!("t{t}:n{i}"), &image).unwrap();
                }
            })
        })
        .collect();
    // Meanwhile a reader never sees a half-written index.json.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (root, done) = (root.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let bytes = std::fs::read(root.join("index.json")).unwrap();
                serde_json::from_slice::<kiln::image::manifest::Index>(&bytes).expect("index.json always parses");
                reads += 1;
            }
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let list = seed.list().unwrap();
    assert_eq!(list.len(), 100);
    for t in 0..4 {
        for i in 0..25 {
            assert!(seed.resolve(&format!("t{t}:n{i}")).unwrap().is_some(), "t{t}:n{i} lost");
        }
    }
}

#[test]
fn store_lock_excludes_other_holders_and_tag_works_while_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = simple_image(&store, "x", false);
    let guard = store.lock().unwrap();
    // Tagging while holding the store lock must not deadlock.
    store.tag("held", &image).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let other = Store::open(dir.path()).unwrap();
    let waiter = std::thread::spawn(move || {
        let _g = other.lock().unwrap();
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "second lock should block");
    drop(guard);
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("lock released on drop");
    waiter.join().unwrap();
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The store is its owner's alone: created 0700 (root, kiln/, kiln/layers),
/// and a store an older kiln left open is made 0700 again, layer dirs
/// included, while the image trees below them and `empty/` (which stands as
/// an image's root) keep their modes.
#[test]
fn open_keeps_the_store_private() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/store");
    drop(Store::open(&root).unwrap());
    for d in [root.clone(), root.join("kiln"), root.join("kiln/layers")] {
        assert_eq!(mode_of(&d), 0o700, "{} was not created private", d.display());
    }

    let layer = root.join("kiln/layers").join("ab".repeat(32));
    let empty = root.join("kiln/layers/empty");
    std::fs::create_dir_all(layer.join("diff/usr")).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    for (d, m) in [(&root, 0o755), (&root.join("kiln"), 0o2775), (&root.join("kiln/layers"), 0o711), (&layer, 0o755)] {
        set_mode(d, m);
    }
    set_mode(&layer.join("diff"), 0o755);
    set_mode(&layer.join("diff/usr"), 0o755);
    set_mode(&empty, 0o755);
    drop(Store::open(&root).unwrap());
    assert_eq!(mode_of(&root), 0o700);
    assert_eq!(mode_of(&root.join("kiln")), 0o2700, "only the group's and others' bits are taken off");
    assert_eq!(mode_of(&root.join("kiln/layers")), 0o700);
    assert_eq!(mode_of(&layer), 0o700);
    assert_eq!(mode_of(&layer.join("diff")), 0o755, "an image's tree keeps its modes");
    assert_eq!(mode_of(&layer.join("diff/usr")), 0o755);
    assert_eq!(mode_of(&empty), 0o755);
}

#[test]
fn open_refuses_a_store_root_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::write(&root, "not a directory").unwrap();
    let err = Store::open(&root).unwrap_err();
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains(&*root.to_string_lossy()), "{err}");
}
