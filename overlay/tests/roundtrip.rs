//! apply → mount → change → diff round trips for every storage driver, and the safety of applying layers.
//!
//! These tests run with whatever privilege the test process has. As real root on the host they also run
//! themselves again, unprivileged, inside user namespaces (`rootless_*` tests): as a user `kilnovl` the test
//! creates (with a subuid range), through `runuser -u kilnovl -- unshare --map-users=<subuid>,1,65535
//! --map-groups=… --map-root-user --mount <this test binary> --exact <test>` (a full id map, as kiln makes
//! with newuidmap), and once with `unshare -Urm` (uid 0 only, the single-id fallback). The inner run sees
//! `KILN_OVL_INNER=1`. fuse-overlayfs is skipped where /dev/fuse cannot be opened (here it is root-only).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kiln_overlay::compress::Compression;
use kiln_overlay::layer::LayerWriter;
use kiln_overlay::tarfmt::EntryKind;
use kiln_overlay::{
    apply_layer, apply_tar, mount, write_diff, ApplyOptions, DiffOptions, DiffReport, Driver, Rootfs, WhiteoutFormat,
    XattrPrefix,
};

fn apply_opts(format: WhiteoutFormat) -> ApplyOptions {
    ApplyOptions { whiteouts: format, ..ApplyOptions::default() }
}

/// Builds the two base layers every round trip starts from.
fn base_layers() -> (Vec<u8>, Vec<u8>) {
    let mut setuid = file("bin/su", b"#!/bin/sh\n");
    setuid.meta.mode = 0o4755;
    let mut linked = file("data/a", b"shared contents");
    linked.meta.mode = 0o640;
    let l1 = tar_of(&[
        dir("bin"),
        setuid,
        dir("data"),
        linked,
        entry("data/b", EntryKind::Hardlink("data/a".into())),
        file("data/keep.txt", b"keep"),
        file("data/del.txt", b"delete me"),
        dir("gone"),
        dir("gone/sub"),
        file("gone/sub/x", b"x"),
        dir("replace"),
        file("replace/old1", b"1"),
        file("replace/old2", b"2"),
        dir("etc"),
        file("etc/config", b"v1"),
        file("etc/layer2-deletes", b"soon gone"),
    ]);
    let l2 = tar_of(&[
        dir("etc"),
        file("etc/.wh.layer2-deletes", b""),
        file("etc/config", b"v2"),
        dir("opt"),
        file("opt/tool", b"tool"),
    ]);
    (l1, l2)
}

/// The changes a RUN step makes, done through the mounted (or snapshot) tree.
fn run_step(root: &Path) {
    fs::remove_file(root.join("data/del.txt")).unwrap();
    fs::remove_dir_all(root.join("gone")).unwrap();
    fs::remove_dir_all(root.join("replace")).unwrap();
    fs::create_dir(root.join("replace")).unwrap();
    fs::write(root.join("replace/new"), b"new").unwrap();
    fs::write(root.join("etc/config"), b"v3").unwrap();
    fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    fs::write(root.join("usr/local/bin/app"), b"app").unwrap();
    fs::hard_link(root.join("usr/local/bin/app"), root.join("usr/local/bin/app-link")).unwrap();
    std::os::unix::fs::symlink("/usr/local/bin/app", root.join("usr/local/bin/abs")).unwrap();
    std::os::unix::fs::symlink("app", root.join("usr/local/bin/rel")).unwrap();
    fs::write(root.join("usr/local/bin/suid"), b"s").unwrap();
    fs::set_permissions(root.join("usr/local/bin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("opt/tagged"), b"t").unwrap();
    xattr::set(root.join("opt/tagged"), "user.x", b"hello\nworld").unwrap();
    // v2 capability: cap_net_bind_service permitted + effective; bytes include a '\n' (0x0a) on purpose.
    let mut cap = Vec::new();
    cap.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    cap.extend_from_slice(&(1u32 << 10 | 1 << 3 | 1 << 1).to_le_bytes());
    cap.extend_from_slice(&[0u8; 12]);
    fs::write(root.join("opt/capped"), b"c").unwrap();
    xattr::set(root.join("opt/capped"), "security.capability", &cap).unwrap();
    let owners: &[(u32, &str)] = &[(0, "root"), (1000, "user"), (65534, "nobody"), (4242, "other")];
    fs::create_dir(root.join("owned")).unwrap();
    for (id, name) in owners {
        let p = root.join("owned").join(name);
        fs::write(&p, name.as_bytes()).unwrap();
        if full_id_map() {
            std::os::unix::fs::lchown(&p, Some(*id), Some(*id)).unwrap();
        }
    }
}

struct Mounted {
    _tmp: tempfile::TempDir,
    merged: PathBuf,
    root: Option<Rootfs>,
}

fn prepare(driver: Driver, layers: &[Vec<u8>]) -> Mounted {
    let tmp = scratch();
    let mut lowers = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let d = tmp.path().join(format!("layers/{i}"));
        fs::create_dir_all(&d).unwrap();
        apply_layer(&layer[..], &d, &apply_opts(WhiteoutFormat::Overlay)).unwrap();
        lowers.insert(0, d);
    }
    let step = tempfile::Builder::new().prefix("step-").tempdir_in(tmp.path()).unwrap();
    let root = Rootfs::mount(driver, lowers, step).unwrap();
    Mounted { _tmp: tmp, merged: root.path().to_path_buf(), root: Some(root) }
}

/// Unmounts and writes the root's changes to `w`, as a RUN's commit does.
fn commit_to<W: Write + 'static>(m: &mut Mounted, w: &mut LayerWriter<W>, opts: &DiffOptions) -> DiffReport {
    let root = m.root.take().unwrap();
    root.commit(w, opts).unwrap().0
}

/// Unmounts and returns the diff as a plain tar.
fn commit(m: &mut Mounted, opts: &DiffOptions) -> (Vec<u8>, DiffReport) {
    let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
    let report = commit_to(m, &mut w, opts);
    let (tar_bytes, info) = w.finish().unwrap();
    assert!(info.diff_id.starts_with("sha256:"));
    (tar_bytes, report)
}

fn driver_usable(driver: Driver) -> bool {
    if driver == Driver::FuseOverlayfs && fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_err() {
        eprintln!("skipping fuse-overlayfs: /dev/fuse cannot be opened here");
        return false;
    }
    true
}

fn roundtrip(driver: Driver) {
    if !driver_usable(driver) {
        return;
    }
    let (l1, l2) = base_layers();
    let mut m = prepare(driver, &[l1.clone(), l2.clone()]);
    // The lowers as the mount shows them.
    let merged = &m.merged;
    assert_eq!(fs::read(merged.join("etc/config")).unwrap(), b"v2");
    assert!(!merged.join("etc/layer2-deletes").exists(), "layer 2's whiteout hides layer 1's file");
    assert_eq!(fs::metadata(merged.join("data/a")).unwrap().ino(), fs::metadata(merged.join("data/b")).unwrap().ino());
    assert_eq!(fs::metadata(merged.join("bin/su")).unwrap().mode() & 0o7777, 0o4755);

    run_step(merged);
    let expected = list_tree(merged);
    let (tar_bytes, report) = commit(&mut m, &DiffOptions::default());

    // Read the layer back with the tar crate and check what the step did.
    let items = list_tar(&tar_bytes);
    let by_path: BTreeMap<&str, &TarItem> = items.iter().map(|i| (i.path.as_str(), i)).collect();
    let names: Vec<&str> = items.iter().map(|i| i.path.as_str()).collect();
    for wh in ["data/.wh.del.txt", "gone/", "replace/", "replace/.wh..wh..opq", "replace/new"] {
        if wh == "gone/" {
            assert!(by_path.contains_key(".wh.gone"), "{driver}: rm -rf gone: {names:?}");
        } else {
            assert!(by_path.contains_key(wh), "{driver}: missing {wh}: {names:?}");
        }
    }
    assert!(
        !names.iter().any(|n| n.starts_with("replace/old")),
        "{driver}: opaque dir keeps no old entries: {names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("bin")), "{driver}: untouched dirs stay out: {names:?}");
    assert!(!names.contains(&"data/keep.txt"), "{driver}: unchanged file stays out");
    assert!(by_path.contains_key("data/"), "{driver}: parent of a change is present");
    let links: Vec<_> = ["usr/local/bin/app", "usr/local/bin/app-link"].iter().map(|p| by_path[p]).collect();
    assert!(
        (links[0].kind == '0' && links[1].kind == '1' && links[1].link == "usr/local/bin/app"),
        "{driver}: hardlink inside the layer: {links:?}"
    );
    assert_eq!(by_path["usr/local/bin/abs"].link, "/usr/local/bin/app");
    assert_eq!(by_path["usr/local/bin/rel"].link, "app");
    assert_eq!(by_path["usr/local/bin/suid"].mode & 0o7777, 0o4755);
    if full_id_map() {
        for (name, id) in [("root", 0), ("user", 1000), ("nobody", 65534), ("other", 4242)] {
            let it = by_path[format!("owned/{name}").as_str()];
            assert_eq!((it.uid, it.gid), (id, id), "{driver}: owner of {name}");
        }
    }
    // Names are sorted within each directory, parents first.
    let mut seen_dirs = std::collections::BTreeSet::new();
    for n in &names {
        let parent = n.trim_end_matches('/').rsplit_once('/').map(|(p, _)| format!("{p}/"));
        if let Some(p) = parent {
            assert!(seen_dirs.contains(&p), "{driver}: {n} before its parent {p}");
        }
        if n.ends_with('/') {
            seen_dirs.insert(n.to_string());
        }
    }
    assert_eq!(report.whiteouts, 2, "{driver}: {report:?} {names:?}");
    assert_eq!(report.opaque_dirs, 1, "{driver}: {report:?}");

    // xattrs, binary-safe, read by python's tarfile.
    let tmp = scratch();
    let tar_path = tmp.path().join("layer.tar");
    fs::write(&tar_path, &tar_bytes).unwrap();
    let pax = pax_records_python(&tar_path);
    assert!(
        pax.iter()
            .any(|(p, k, v)| p == "opt/tagged" && k == "SCHILY.xattr.user.x" && v == &hex::encode(b"hello\nworld")),
        "{pax:?}"
    );
    let cap = pax
        .iter()
        .find(|(p, k, _)| p == "opt/capped" && k == "SCHILY.xattr.security.capability")
        .expect("capability in PAX");
    assert_eq!(&cap.2[..8], "01000002", "{driver}: v2 capability header");
    assert_eq!(cap.2.len(), 40, "{driver}: v2 capability is 20 bytes");
    assert!(!pax.iter().any(|(_, k, _)| k.contains(".overlay.") || k.contains("fuseoverlayfs")), "{driver}: {pax:?}");

    // Applying the three layers in order onto one tree gives exactly what the step saw.
    let out = scratch();
    for layer in [&l1, &l2, &tar_bytes] {
        apply_layer(&layer[..], out.path(), &apply_opts(WhiteoutFormat::Naive)).unwrap();
    }
    let got = list_tree(out.path());
    let strip = |t: BTreeMap<String, Node>| -> BTreeMap<String, Node> {
        t.into_iter()
            .map(|(k, mut v)| {
                // Directory mtimes and the root differ by design; everything listed must match.
                v.xattrs.retain(|n, _| n != "security.selinux");
                (k, v)
            })
            .collect()
    };
    let (got, expected) = (strip(got), strip(expected));
    for (k, v) in &expected {
        assert_eq!(got.get(k), Some(v), "{driver}: {k} after applying the diff");
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{driver}");
}

#[test]
fn roundtrip_kernel_overlay() {
    roundtrip(Driver::Overlay);
}

#[test]
fn roundtrip_fuse_overlayfs() {
    roundtrip(Driver::FuseOverlayfs);
}

#[test]
fn roundtrip_vfs() {
    roundtrip(Driver::Vfs);
}

fn large_tree(driver: Driver) {
    if !driver_usable(driver) {
        return;
    }
    let (l1, _) = base_layers();
    let mut m = prepare(driver, &[l1]);
    let big = m.merged.join("big");
    {
        let mut f = fs::File::create(&big).unwrap();
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        for _ in 0..64 {
            f.write_all(&chunk).unwrap();
        }
    }
    // A sparse file: 256 MiB apparent, 4 KiB of data.
    let sparse = m.merged.join("sparse");
    {
        let f = fs::File::create(&sparse).unwrap();
        f.set_len(256 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"tail", (256 << 20) - 4).unwrap();
    }
    let many = m.merged.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..20_000 {
        fs::write(many.join(format!("f{i:05}")), i.to_string()).unwrap();
    }
    let big_sum = sha256_file(&big);
    // Written gzip, as a commit does, to a file.
    let out = scratch();
    let blob_path = out.path().join("layer.tar.gz");
    let mut w = LayerWriter::new(fs::File::create(&blob_path).unwrap(), Compression::Gzip).unwrap();
    let report = commit_to(&mut m, &mut w, &DiffOptions::default());
    let (_, info) = w.finish().unwrap();
    assert_eq!(report.entries, 20_000 + 3, "{driver}: {report:?}");
    assert!(info.size < 80 << 20, "{driver}: sparse zeros compress away: {}", info.size);
    let dest = out.path().join("tree");
    fs::create_dir(&dest).unwrap();
    apply_layer(fs::File::open(&blob_path).unwrap(), &dest, &apply_opts(WhiteoutFormat::Overlay)).unwrap();
    assert_eq!(sha256_file(&dest.join("big")), big_sum);
    assert_eq!(fs::read_dir(dest.join("many")).unwrap().count(), 20_000);
    assert_eq!(fs::read_to_string(dest.join("many/f12345")).unwrap(), "12345");
    let md = fs::metadata(dest.join("sparse")).unwrap();
    assert_eq!(md.len(), 256 << 20);
    assert!(md.blocks() * 512 < 1 << 20, "{driver}: sparse file stays sparse: {} blocks", md.blocks());
}

#[test]
fn large_tree_kernel_overlay() {
    large_tree(Driver::Overlay);
}

#[test]
fn large_tree_vfs() {
    large_tree(Driver::Vfs);
}

/// 120 layers under long paths: the lowerdir option string is far over a page.
fn deep_stack(legacy: bool) {
    let tmp = scratch();
    let base = tmp.path().join("a-rather-long-store-directory-name-to-make-the-options-long/layers");
    let mut lowers = Vec::new();
    for i in 0..120 {
        let d = base.join(format!("{i:03}-0123456789abcdef0123456789abcdef0123456789abcdef"));
        fs::create_dir_all(&d).unwrap();
        let mut entries = vec![dir("layers"), file(&format!("layers/{i:03}"), i.to_string().as_bytes())];
        if i == 119 {
            entries.push(file("layers/.wh.000", b""));
        }
        apply_layer(&tar_of(&entries)[..], &d, &apply_opts(WhiteoutFormat::Overlay)).unwrap();
        lowers.insert(0, d);
    }
    let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(total > 8192, "the test must exceed a page: {total}");
    let [upper, work, merged] = mkdirs(tmp.path(), &["upper", "work", "merged"]).try_into().unwrap();
    let guard = if legacy {
        kiln_overlay::mount::mount_overlay_legacy(&lowers, &upper, &work, &merged).unwrap();
        None
    } else {
        Some(mount(Driver::Overlay, &lowers, &upper, &work, &merged).unwrap())
    };
    let names: Vec<String> =
        fs::read_dir(merged.join("layers")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 119, "119 visible, layer 0's file whited out");
    assert_eq!(fs::read_to_string(merged.join("layers/077")).unwrap(), "77");
    fs::write(merged.join("layers/new"), b"n").unwrap();
    match guard {
        Some(g) => g.unmount().unwrap(),
        None => nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap(),
    }
    assert_eq!(fs::read(upper.join("layers/new")).unwrap(), b"n");
}

#[test]
fn deep_stack_120_layers_fsconfig() {
    deep_stack(false);
}

#[test]
fn deep_stack_120_layers_legacy_short_links() {
    deep_stack(true);
}

#[test]
fn malicious_layers_are_rejected_and_nothing_escapes() {
    let tmp = scratch();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"safe").unwrap();
    let out_s = outside.to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("dotdot", end_of_archive(raw_entry("../outside/victim", b'0', "", b"pwned")), true),
        ("nested dotdot", end_of_archive(raw_entry("a/../../outside/x", b'0', "", b"pwned")), true),
        ("absolute", end_of_archive(raw_entry(&format!("{out_s}/victim"), b'0', "", b"pwned")), true),
        ("hardlink dotdot", end_of_archive(raw_entry("h", b'1', "../outside/victim", b"")), true),
        ("hardlink absolute", end_of_archive(raw_entry("h", b'1', &format!("{out_s}/victim"), b"")), true),
        ("whiteout dotdot", end_of_archive(raw_entry("a/.wh...", b'0', "", b"")), true),
        (
            "symlink parent absolute",
            end_of_archive(
                [raw_entry("evil", b'2', &out_s, b""), raw_entry("evil/victim", b'0', "", b"pwned")].concat(),
            ),
            false,
        ),
        (
            "symlink parent relative",
            end_of_archive(
                [
                    raw_entry("evil", b'2', "../../../../../../..", b""),
                    raw_entry(&format!("evil{out_s}/victim"), b'0', "", b"pwned"),
                ]
                .concat(),
            ),
            false,
        ),
        (
            "hardlink through symlink",
            end_of_archive([raw_entry("evil", b'2', &out_s, b""), raw_entry("h", b'1', "evil/victim", b"")].concat()),
            false,
        ),
        (
            "symlink then whiteout through it",
            end_of_archive(
                [raw_entry("evil", b'2', &out_s, b""), raw_entry("evil/.wh.victim", b'0', "", b"")].concat(),
            ),
            false,
        ),
        (
            "symlink then opaque marker through it",
            end_of_archive(
                [raw_entry("evil", b'2', &out_s, b""), raw_entry("evil/.wh..wh..opq", b'0', "", b"")].concat(),
            ),
            false,
        ),
        (
            "opaque marker through '..'",
            end_of_archive(raw_entry(&format!("../../../../../../..{out_s}/.wh..wh..opq"), b'0', "", b"")),
            true,
        ),
    ];
    for format in [WhiteoutFormat::Overlay, WhiteoutFormat::Naive] {
        for (name, archive, must_fail) in &cases {
            let dest = tmp.path().join(format!("dest-{name}-{format:?}").replace(' ', "-"));
            fs::create_dir(&dest).unwrap();
            let res = apply_layer(&archive[..], &dest, &apply_opts(format));
            if *must_fail {
                assert!(res.is_err(), "{name}: accepted");
            }
            // Whatever happened, it happened inside dest.
            assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe", "{name} ({format:?})");
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "{name} ({format:?})");
            if res.is_ok() && name.starts_with("symlink parent") {
                // The write landed where the symlink points inside the root, as in the container.
                assert!(
                    dest.join(outside.strip_prefix("/").unwrap()).join("victim").exists()
                        || dest.join("victim").exists(),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn apply_keeps_metadata_and_reports_skips() {
    let tmp = scratch();
    let mut f = file("bin/tool", b"tool");
    f.meta.mode = 0o6755;
    f.meta.mtime = 1_234_567_890;
    let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
    cap.extend_from_slice(&[0x0a, 0x04, 0, 0]);
    cap.extend_from_slice(&[0u8; 12]);
    f.meta.xattrs.insert("security.capability".into(), cap.clone());
    f.meta.xattrs.insert("user.note".into(), b"a\nb".to_vec());
    f.meta.xattrs.insert("user.overlay.redirect".into(), b"/etc".to_vec());
    let mut sticky = dir("tmp");
    sticky.meta.mode = 0o1777;
    let mut owned = file("home/u/file", b"u");
    owned.meta.uid = 1000;
    owned.meta.gid = 1000;
    let mut long = file(&format!("deep/{}/file", "d".repeat(150)), b"long");
    long.meta.xattrs.insert("user.bin".into(), vec![0, 10, 255, 10]);
    let archive = tar_of(&[
        dir("bin"),
        f,
        entry("bin/tool2", EntryKind::Hardlink("bin/tool".into())),
        sticky,
        entry("dev/null", EntryKind::CharDev { major: 1, minor: 3 }),
        entry("dev/fifo", EntryKind::Fifo),
        owned,
        long,
        file("dev/.wh.gone", b""),
        dir("opq"),
        file("opq/.wh..wh..opq", b""),
    ]);
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let report = apply_layer(&archive[..], &dest, &apply_opts(WhiteoutFormat::Overlay)).unwrap();
    let md = fs::metadata(dest.join("bin/tool")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o6755);
    assert_eq!(md.mtime(), 1_234_567_890);
    assert_eq!(md.ino(), fs::metadata(dest.join("bin/tool2")).unwrap().ino());
    assert_eq!(xattr::get(dest.join("bin/tool"), "security.capability").unwrap().unwrap(), cap);
    assert_eq!(xattr::get(dest.join("bin/tool"), "user.note").unwrap().unwrap(), b"a\nb");
    assert_eq!(xattr::get(dest.join("bin/tool"), "user.overlay.redirect").unwrap(), None);
    assert_eq!(report.dropped_overlay_xattrs, 1);
    assert_eq!(fs::metadata(dest.join("tmp")).unwrap().mode() & 0o7777, 0o1777);
    let long_path = dest.join(format!("deep/{}/file", "d".repeat(150)));
    assert_eq!(xattr::get(&long_path, "user.bin").unwrap().unwrap(), vec![0, 10, 255, 10]);
    let prefix = XattrPrefix::for_current_namespace();
    let wh = fs::symlink_metadata(dest.join("dev/gone")).unwrap();
    assert!(kiln_overlay::whiteout::is_whiteout(&dest.join("dev/gone"), &wh, &prefix));
    assert!(kiln_overlay::whiteout::is_opaque(&dest.join("opq"), &prefix));
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(dest.join("dev/fifo")).unwrap().file_type().is_fifo());
    let null = fs::symlink_metadata(dest.join("dev/null"));
    if is_real_root() {
        assert_eq!(null.unwrap().rdev(), libc::makedev(1, 3));
        assert!(report.skipped.is_empty(), "{report:?}");
    } else {
        assert!(null.is_err());
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        assert!(report.skipped[0].contains("dev/null"));
    }
    let owned_md = fs::metadata(dest.join("home/u/file")).unwrap();
    if full_id_map() {
        assert_eq!((owned_md.uid(), owned_md.gid()), (1000, 1000));
    } else {
        assert_eq!(
            xattr::get(dest.join("home/u/file"), "user.containers.override_stat").unwrap().unwrap(),
            b"1000:1000:0644"
        );
        assert_eq!(report.unmapped_owners, 1);
        // The owner comes back out in a diff of this tree.
        let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
        write_diff(&dest, &[], &mut w, &DiffOptions::default()).unwrap();
        let (bytes, _) = w.finish().unwrap();
        let it = list_tar(&bytes).into_iter().find(|i| i.path == "home/u/file").unwrap();
        assert_eq!((it.uid, it.gid), (1000, 1000));
    }
}

#[test]
fn overlay_bookkeeping_never_reaches_a_layer_and_v3_caps_become_v2() {
    let tmp = scratch();
    let [upper] = mkdirs(tmp.path(), &["upper"]).try_into().unwrap();
    fs::create_dir(upper.join("d")).unwrap();
    fs::write(upper.join("d/f"), b"f").unwrap();
    for name in ["user.overlay.origin", "user.overlay.impure", "user.overlay.metacopy", "user.fuseoverlayfs.origin"] {
        xattr::set(upper.join("d/f"), name, b"\x00\x01").unwrap();
    }
    xattr::set(upper.join("d"), "user.overlay.impure", b"y").unwrap();
    let is_root = is_real_root();
    if is_root {
        xattr::set(upper.join("d/f"), "trusted.overlay.origin", b"\x00\xfb").unwrap();
        xattr::set(upper.join("d/f"), "trusted.overlay.redirect", b"/x").unwrap();
        // v3 capability with a namespace root id, as a rootless tool's layer dir holds seen from the host.
        let mut v3 = 0x0300_0001u32.to_le_bytes().to_vec();
        v3.extend_from_slice(&(1u32 << 10).to_le_bytes());
        v3.extend_from_slice(&[0u8; 12]);
        v3.extend_from_slice(&100_000u32.to_le_bytes());
        fs::write(upper.join("d/cap"), b"c").unwrap();
        xattr::set(upper.join("d/cap"), "security.capability", &v3).unwrap();
        assert_eq!(xattr::get(upper.join("d/cap"), "security.capability").unwrap().unwrap().len(), 24);
    }
    let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
    write_diff(&upper, &[], &mut w, &DiffOptions { prefix: XattrPrefix::user(), ..DiffOptions::default() }).unwrap();
    let (bytes, _) = w.finish().unwrap();
    let tar_path = tmp.path().join("l.tar");
    fs::write(&tar_path, &bytes).unwrap();
    let pax = pax_records_python(&tar_path);
    assert!(!pax.iter().any(|(_, k, _)| k.contains("overlay")), "{pax:?}");
    if is_root {
        let cap = pax.iter().find(|(p, k, _)| p == "d/cap" && k == "SCHILY.xattr.security.capability").unwrap();
        let want = [0x0200_0001u32.to_le_bytes().to_vec(), (1u32 << 10).to_le_bytes().to_vec(), vec![0u8; 12]].concat();
        assert_eq!(cap.2, hex::encode(want));
    }
}

// ---- running the suite rootless ----

/// The user's first subordinate uid and gid.
fn ensure_user(name: &str) -> (u64, u64) {
    let user = kiln_integration::users::ensure_user(name, kiln_integration::users::SubIds::Range);
    (user.subuid.expect("a subuid range"), user.subgid.expect("a subgid range"))
}

/// Runs `tests` of this binary as an unprivileged user inside a user + mount namespace.
fn run_inner(tests: &[&str], full_map: bool) {
    let user = "kilnovl";
    let (subuid, subgid) = ensure_user(user);
    let dir = scratch();
    let exe = dir.path().join("roundtrip-test");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    for test in tests {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "unshare"]);
        if full_map {
            cmd.arg(format!("--map-users={subuid},1,65535")).arg(format!("--map-groups={subgid},1,65535"));
        }
        cmd.args(["--map-root-user", "--mount"]).arg(&exe).args(["--exact", test, "--nocapture", "--test-threads=1"]);
        cmd.env(INNER_ENV, "1").current_dir("/tmp");
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "rootless {test} (full map: {full_map}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const SUITE: &[&str] = &[
    "roundtrip_kernel_overlay",
    "roundtrip_fuse_overlayfs",
    "roundtrip_vfs",
    "large_tree_kernel_overlay",
    "deep_stack_120_layers_fsconfig",
    "deep_stack_120_layers_legacy_short_links",
    "malicious_layers_are_rejected_and_nothing_escapes",
    "apply_keeps_metadata_and_reports_skips",
    "overlay_bookkeeping_never_reaches_a_layer_and_v3_caps_become_v2",
];

#[test]
fn rootless_full_subuid_map() {
    if !is_real_root() {
        eprintln!("not real root: the suite already runs as it is");
        return;
    }
    run_inner(SUITE, true);
}

#[test]
fn rootless_single_id_map() {
    if !is_real_root() {
        return;
    }
    run_inner(&["roundtrip_kernel_overlay", "roundtrip_vfs", "apply_keeps_metadata_and_reports_skips"], false);
}

/// Layers applied in order to one root (COPY --from, bind mounts from an image): a symlink planted by one
/// layer and a whiteout, opaque marker or file through it in the next never reach the host.
#[test]
fn rootfs_layers_in_order_stay_inside() {
    let tmp = scratch();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"safe").unwrap();
    let out_s = outside.to_str().unwrap().to_string();
    let plant = end_of_archive(
        [raw_entry("evil", b'2', &out_s, b""), raw_entry("rel", b'2', "../../../../../..", b"")].concat(),
    );
    let seconds = [
        ("opaque", end_of_archive(raw_entry("evil/.wh..wh..opq", b'0', "", b""))),
        ("whiteout", end_of_archive(raw_entry("evil/.wh.victim", b'0', "", b""))),
        ("file", end_of_archive(raw_entry("evil/victim", b'0', "", b"pwned"))),
        ("relative", end_of_archive(raw_entry(&format!("rel{out_s}/.wh..wh..opq"), b'0', "", b""))),
        ("relative file", end_of_archive(raw_entry(&format!("rel{out_s}/victim"), b'0', "", b"pwned"))),
    ];
    for (name, second) in &seconds {
        let dest = tmp.path().join(format!("root-{}", name.replace(' ', "-")));
        fs::create_dir(&dest).unwrap();
        apply_layer(&plant[..], &dest, &ApplyOptions::rootfs()).unwrap();
        let _ = apply_layer(&second[..], &dest, &ApplyOptions::rootfs());
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe", "{name}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "{name}");
    }
}

/// A build context is no layer: `.wh.` names are files, owners stay the caller's, and a path through a
/// symlink the archive made is refused, not followed.
#[test]
fn plain_archives_keep_names_and_refuse_symlinked_parents() {
    let tmp = scratch();
    let mut owned = file("owned", b"o");
    owned.meta.uid = 4242;
    let archive = tar_of(&[file(".wh.kept", b"k"), dir("d"), file("d/.wh..wh..opq", b"q"), owned]);
    let dest = tmp.path().join("ctx");
    fs::create_dir(&dest).unwrap();
    apply_tar(&archive[..], &dest, &ApplyOptions::plain()).unwrap();
    assert_eq!(fs::read(dest.join(".wh.kept")).unwrap(), b"k");
    assert_eq!(fs::read(dest.join("d/.wh..wh..opq")).unwrap(), b"q");
    assert_eq!(fs::metadata(dest.join("owned")).unwrap().uid(), nix::unistd::geteuid().as_raw());

    let dest = tmp.path().join("ctx2");
    fs::create_dir(&dest).unwrap();
    let archive = end_of_archive(
        [raw_entry("sub", b'5', "", b""), raw_entry("link", b'2', "sub", b""), raw_entry("link/x", b'0', "", b"x")]
            .concat(),
    );
    let err = apply_tar(&archive[..], &dest, &ApplyOptions::plain()).unwrap_err();
    assert!(err.to_string().contains("goes through a symlink"), "{err}");
    assert!(!dest.join("sub/x").exists());
}

/// The applier reads the stream to its end, past the end-of-archive blocks, so a digest or checksum taken
/// over the stream covers all of it (docker drains the same way).
#[test]
fn apply_reads_the_whole_stream() {
    let tmp = scratch();
    let mut archive = tar_of(&[file("f", b"x")]);
    archive.extend_from_slice(&[0u8; 4096]);
    let total = archive.len();
    let mut cursor = std::io::Cursor::new(archive);
    let dest = tmp.path().join("d");
    fs::create_dir(&dest).unwrap();
    apply_layer(&mut cursor, &dest, &ApplyOptions::rootfs()).unwrap();
    assert_eq!(cursor.position() as usize, total);
    // A gzip layer whose trailer is wrong is refused only if the trailer is read.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_of(&[file("g", b"y")])).unwrap();
    let mut gz = gz.finish().unwrap();
    let crc = gz.len() - 8;
    gz[crc] ^= 0xff;
    let dest = tmp.path().join("e");
    fs::create_dir(&dest).unwrap();
    assert!(apply_layer(&gz[..], &dest, &ApplyOptions::rootfs()).is_err(), "the corrupt CRC was not noticed");
}
