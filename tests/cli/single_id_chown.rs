//! chown to other ids in RUN under the single-id map (a user without a
//! subuid range): the build succeeds and the layer carries the intended
//! owners. Needs root, to create that user.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const SINGLE_USER: &str = "kilnrt1";

/// Creates `name` without a subuid/subgid range (removing one it has).
fn ensure_user_without_range(name: &str) {
    kiln_integration::users::ensure_user(name, kiln_integration::users::SubIds::None);
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(store: &Path, digest: &str) -> std::path::PathBuf {
    store.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

/// (path, uid, gid, mode) of every entry of the image's last layer.
fn last_layer_entries(store: &Path) -> Vec<(String, u64, u64, u32)> {
    let index = json(&store.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    let manifest = json(&blob(store, manifests.last().unwrap()["digest"].as_str().unwrap()));
    let layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"].as_str().unwrap().to_string();
    // Plain in the store (compressed only on push or export); decompressed by magic either way.
    let (_, mut plain) = kiln_overlay::compress::decompress(std::fs::File::open(blob(store, &layer)).unwrap()).unwrap();
    let mut tar = Vec::new();
    plain.read_to_end(&mut tar).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header();
        let (uid, gid, mode) = (h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap());
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut pax = String::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                pax.push_str(ext.key().unwrap_or(""));
            }
        }
        assert!(!pax.contains("override_stat"), "{path}: the record itself must not reach the layer: {pax}");
        out.push((path, uid, gid, mode & 0o7777));
    }
    out
}

#[test]
fn chown_in_run_under_a_single_id_map_reaches_the_layer() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: creating the test user needs root");
        return;
    }
    ensure_user_without_range(SINGLE_USER);
    let dir = tempfile::Builder::new().prefix("kiln-single-chown").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &exe).unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n\
         RUN touch /f && chown 4242:4243 /f && mkdir /app && touch /app/run.sh && chown -R 1000:1000 /app \
         && chmod 750 /app/run.sh && ln -s /f /lnk && chown -h 5:5 /lnk && touch /g && chown 7:7 /g \
         && chown 0:0 /g && test \"$(stat -c %u /f)\" = 0\n",
    )
    .unwrap();
    assert!(Command::new("chown").args(["-R", SINGLE_USER]).arg(dir.path()).status().unwrap().success());
    let store = dir.path().join("store");
    let out = Command::new("runuser")
        .args(["-u", SINGLE_USER, "--"])
        .arg(&exe)
        .arg("--root")
        .arg(&store)
        .args(["build", "-t", "owners"])
        .arg(&ctx)
        .current_dir(dir.path())
        .env_remove("KILN_USERNS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("single-id map"), "the build ran under the single-id map: {stderr}");

    let entries = last_layer_entries(&store);
    let owner = |p: &str| {
        entries
            .iter()
            .find(|e| e.0.trim_end_matches('/') == p)
            .map(|e| (e.1, e.2, e.3))
            .unwrap_or_else(|| panic!("{p}: {entries:?}"))
    };
    assert_eq!(owner("f"), (4242, 4243, 0o644));
    assert_eq!(owner("app"), (1000, 1000, 0o755));
    assert_eq!(owner("app/run.sh"), (1000, 1000, 0o750), "chmod after chown keeps the recorded owner");
    assert_eq!(owner("g"), (0, 0, 0o644), "chown back to 0 leaves no record");
    // A symlink cannot carry the record: its owner stays 0.
    assert_eq!(owner("lnk").0, 0);
}
