use super::*;
use crate::compress::{decompress, detect, Format};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

/// sha256 of 1024 zero bytes: the diff_id every empty layer has.
const EMPTY_TAR_DIFF_ID: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Same as the tarfmt tests' plain capability: cap_net_bind_service,cap_net_raw+ep, revision 2.
fn capability() -> Vec<u8> {
    let mut v = vec![0x01, 0x00, 0x00, 0x02, 0x00, 0x24, 0x00, 0x00];
    v.extend_from_slice(&[0u8; 12]);
    v
}

/// A tree with every kind of entry a layer holds (devices and foreign owners only when root).
fn make_tree(root: &Path) {
    let d = |p: &str| root.join(p);
    fs::create_dir_all(d("bin")).unwrap();
    fs::write(d("bin/su"), b"\x7fELF su").unwrap();
    set_mode(&d("bin/su"), 0o4755);
    fs::write(d("bin/ping"), b"\x7fELF ping").unwrap();
    fs::create_dir(d("tmp")).unwrap();
    set_mode(&d("tmp"), 0o1777);
    fs::create_dir(d("etc")).unwrap();
    fs::write(d("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(d("etc/empty"), b"").unwrap();
    fs::hard_link(d("etc/hosts"), d("etc/hosts.hard")).unwrap();
    symlink("hosts", d("etc/link")).unwrap();
    symlink(format!("/{}/target", "x".repeat(300)), d("etc/long-link")).unwrap();
    let deep: PathBuf = (0..12).map(|i| format!("level-{i:02}-{}", "p".repeat(20))).collect();
    fs::create_dir_all(root.join(&deep)).unwrap();
    fs::write(root.join(&deep).join("deep.txt"), b"deep").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(d("big.bin"), big).unwrap();
    run(Command::new("mkfifo").arg(d("fifo")));
    if xattr::set(d("etc/hosts"), "user.comment", b"hi\nthere").is_ok() {
        xattr::set(d("tmp"), "user.overlay.opaque", b"y").unwrap();
    }
    if is_root() {
        run(Command::new("mknod").arg(d("null")).args(["c", "1", "3"]));
        run(Command::new("mknod").arg(d("sda1")).args(["b", "8", "1"]));
        std::os::unix::fs::lchown(d("etc/hosts"), Some(3_000_000), Some(4_000_000)).unwrap();
        std::os::unix::fs::lchown(d("etc/link"), Some(1000), Some(1000)).unwrap();
        // Needs CAP_SETFCAP; tolerated if the sandbox refuses it.
        let _ = xattr::set(d("bin/ping"), "security.capability", &capability());
    }
}

/// Walks a tree in sorted order and returns its entries, repeated inodes as hard links (a minimal diff.rs).
fn walk(root: &Path) -> Vec<(PathBuf, EntryMeta)> {
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let mut meta = entry_from_path(e.path(), &rel).unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        if meta.kind == EntryKind::File && md.nlink() > 1 {
            if let Some(first) = seen.get(&(md.dev(), md.ino())) {
                meta.kind = EntryKind::Hardlink(first.clone().into());
                meta.size = 0;
            } else {
                seen.insert((md.dev(), md.ino()), rel.clone());
            }
        }
        out.push((e.path().to_path_buf(), meta));
    }
    out
}

fn write_layer(entries: &[(PathBuf, EntryMeta)], c: Compression, out: &Path) -> LayerInfo {
    let mut w = LayerWriter::new(File::create(out).unwrap(), c).unwrap();
    for (path, meta) in entries {
        if meta.kind == EntryKind::File {
            w.append(meta, Some(&mut File::open(path).unwrap())).unwrap();
        } else {
            w.append(meta, None).unwrap();
        }
    }
    let (file, info) = w.finish().unwrap();
    file.sync_all().unwrap();
    info
}

fn decompressed(path: &Path) -> (Format, Vec<u8>) {
    let (format, mut r) = decompress(File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    (format, out)
}

#[test]
fn digests_match_the_bytes_for_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let entries = walk(&tree);
    let mut diff_ids = Vec::new();
    for (c, f) in
        [(Compression::None, Format::None), (Compression::Gzip, Format::Gzip), (Compression::Zstd, Format::Zstd)]
    {
        let blob = dir.path().join(format!("layer-{c:?}"));
        let info = write_layer(&entries, c, &blob);
        let bytes = fs::read(&blob).unwrap();
        assert_eq!(info.compression, c);
        assert_eq!(info.size, bytes.len() as u64, "{c:?}");
        assert_eq!(info.digest, sha256(&bytes), "{c:?}");
        assert_eq!(detect(&bytes), f);
        let (format, plain) = decompressed(&blob);
        assert_eq!(format, f);
        assert_eq!(info.diff_id, sha256(&plain), "{c:?}");
        if c == Compression::None {
            assert_eq!(info.digest, info.diff_id);
        } else {
            assert_ne!(info.digest, info.diff_id);
            assert!(bytes.len() < plain.len(), "{c:?} did not shrink the layer");
        }
        // The real decompressors agree on the plain tar.
        let tool = match c {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        };
        if let Some(tool) = tool.filter(|t| have(t)) {
            let out = Command::new(tool).args(["-d", "-c"]).arg(&blob).output().unwrap();
            assert!(out.status.success());
            assert_eq!(sha256(&out.stdout), info.diff_id, "{tool}");
        }
        diff_ids.push(info.diff_id);
    }
    assert!(diff_ids.windows(2).all(|w| w[0] == w[1]), "diff_id must not depend on compression");
}

#[test]
fn same_tree_gives_the_same_layer() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    for c in [Compression::Gzip, Compression::Zstd] {
        let a = write_layer(&walk(&tree), c, &dir.path().join("a"));
        let b = write_layer(&walk(&tree), c, &dir.path().join("b"));
        assert_eq!(a, b, "{c:?}");
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), fs::read(dir.path().join("b")).unwrap());
    }
}

#[test]
fn empty_layer_has_the_well_known_diff_id() {
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (bytes, info) = LayerWriter::new(Vec::new(), c).unwrap().finish().unwrap();
        assert_eq!(info.diff_id, EMPTY_TAR_DIFF_ID, "{c:?}");
        assert_eq!(info.digest, sha256(&bytes));
        assert_eq!(info.size, bytes.len() as u64);
        let (_, mut r) = decompress(io::Cursor::new(bytes)).unwrap();
        let mut plain = Vec::new();
        r.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, vec![0u8; 1024]);
    }
}

#[test]
fn tar_crate_reads_the_layer_back() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let entries = walk(&tree);
    let blob = dir.path().join("layer.tar.gz");
    write_layer(&entries, Compression::Gzip, &blob);
    let (_, plain) = decompressed(&blob);
    let mut archive = tar::Archive::new(&plain[..]);
    let got: Vec<(String, u32, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            (name, e.header().mode().unwrap(), e.header().uid().unwrap())
        })
        .collect();
    let want: Vec<(String, u32, u64)> = entries
        .iter()
        .map(|(_, m)| {
            let name = if m.kind == EntryKind::Dir { format!("{}/", m.path) } else { m.path.to_string() };
            (name, m.mode, m.uid)
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn gnu_tar_lists_and_extracts_the_layer() {
    if !have("tar") {
        eprintln!("tar not installed; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let entries = walk(&tree);
    let blob = dir.path().join("layer.tar.gz");
    write_layer(&entries, Compression::Gzip, &blob);

    let listed = run(Command::new("tar").args(["--quoting-style=literal", "-tzf"]).arg(&blob));
    let want: Vec<String> = entries
        .iter()
        .map(|(_, m)| if m.kind == EntryKind::Dir { format!("{}/", m.path) } else { m.path.to_string() })
        .collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);
    let verbose = run(Command::new("tar").args(["--quoting-style=literal", "--numeric-owner", "-tvzf"]).arg(&blob));
    assert!(verbose.lines().any(|l| l.starts_with("-rwsr-xr-x ") && l.ends_with(" bin/su")), "{verbose}");
    assert!(verbose.lines().any(|l| l.starts_with("drwxrwxrwt ") && l.ends_with(" tmp/")), "{verbose}");
    assert!(verbose.lines().any(|l| l.ends_with("etc/hosts.hard link to etc/hosts")), "{verbose}");
    assert!(verbose.lines().any(|l| l.starts_with("prw-r--r-- ") && l.ends_with(" fifo")), "{verbose}");

    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-xzf"])
        .arg(&blob)
        .arg("-C")
        .arg(&out));
    let root = is_root();
    let extracted = walk(&out);
    assert_eq!(extracted.len(), entries.len());
    for ((_, got), (_, want)) in extracted.iter().zip(&entries) {
        assert_eq!(got.path, want.path);
        assert_eq!(got.kind, want.kind, "{}", want.path);
        assert_eq!(got.size, want.size, "{}", want.path);
        if !matches!(want.kind, EntryKind::Symlink(_)) {
            assert_eq!(got.mode, want.mode, "{}", want.path);
            assert_eq!(got.mtime, want.mtime, "{}", want.path);
        }
        if root {
            assert_eq!((got.uid, got.gid), (want.uid, want.gid), "{}", want.path);
        }
        assert_eq!(got.xattrs, want.xattrs, "{}", want.path);
    }
}

#[test]
fn entry_from_path_reads_lstat_and_xattrs() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_tree(&tree);

    let su = entry_from_path(&tree.join("bin/su"), "bin/su").unwrap();
    assert_eq!(su.kind, EntryKind::File);
    assert_eq!(su.mode, 0o4755);
    assert_eq!(su.size, 7);
    let md = fs::metadata(tree.join("bin/su")).unwrap();
    assert_eq!((su.uid, su.gid, su.mtime), (u64::from(md.uid()), u64::from(md.gid()), md.mtime()));

    let tmp = entry_from_path(&tree.join("tmp"), "tmp").unwrap();
    assert_eq!((tmp.kind.clone(), tmp.mode, tmp.size), (EntryKind::Dir, 0o1777, 0));
    assert!(tmp.xattrs.is_empty(), "overlay xattrs are skipped: {:?}", tmp.xattrs);

    let link = entry_from_path(&tree.join("etc/link"), "etc/link").unwrap();
    assert_eq!(link.kind, EntryKind::Symlink("hosts".into()));
    let long = entry_from_path(&tree.join("etc/long-link"), "etc/long-link").unwrap();
    assert_eq!(long.kind, EntryKind::Symlink(format!("/{}/target", "x".repeat(300)).into()));

    let fifo = entry_from_path(&tree.join("fifo"), "fifo").unwrap();
    assert_eq!(fifo.kind, EntryKind::Fifo);

    let hosts = entry_from_path(&tree.join("etc/hosts"), "etc/hosts").unwrap();
    if xattr::get(tree.join("etc/hosts"), "user.comment").is_ok_and(|v| v.is_some()) {
        assert_eq!(hosts.xattrs.get("user.comment"), Some(&b"hi\nthere".to_vec()));
    }
    if is_root() {
        assert_eq!((hosts.uid, hosts.gid), (3_000_000, 4_000_000));
        assert_eq!(link.uid, 1000, "lstat, not stat, of a symlink");
        let null = entry_from_path(&tree.join("null"), "null").unwrap();
        assert_eq!(null.kind, EntryKind::CharDev { major: 1, minor: 3 });
        let sda = entry_from_path(&tree.join("sda1"), "sda1").unwrap();
        assert_eq!(sda.kind, EntryKind::BlockDev { major: 8, minor: 1 });
        if let Ok(Some(cap)) = xattr::get(tree.join("bin/ping"), "security.capability") {
            let ping = entry_from_path(&tree.join("bin/ping"), "bin/ping").unwrap();
            assert_eq!(ping.xattrs.get("security.capability"), Some(&cap));
        }
    }
}

#[test]
fn sockets_are_unsupported_and_missing_paths_fail() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = entry_from_path(&sock, "s.sock").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    let err = entry_from_path(&dir.path().join("missing"), "missing").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn filesystems_without_xattrs_are_tolerated() {
    // procfs answers listxattr with nothing or ENOTSUP depending on the kernel; either is fine.
    let meta = entry_from_path(Path::new("/proc/self/status"), "status").unwrap();
    assert!(meta.xattrs.is_empty());
}

#[test]
fn append_path_copies_file_contents() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    fs::write(&f, b"contents").unwrap();
    let mut w = LayerWriter::new(Vec::new(), Compression::None).unwrap();
    let meta = w.append_path(&f, "f").unwrap();
    assert_eq!(meta.size, 8);
    assert!(w.tar_bytes() >= 1024);
    let (bytes, info) = w.finish().unwrap();
    assert_eq!(info.diff_id, sha256(&bytes));
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut e = archive.entries().unwrap().next().unwrap().unwrap();
    let mut s = String::new();
    e.read_to_string(&mut s).unwrap();
    assert_eq!(s, "contents");
}

/// A layer several compression blocks long, with random, text and empty files (so the stored, Huffman and
/// deflate paths all meet block boundaries), read back through kiln's own [`crate::verify::LayerReader`]:
/// the diff_id matches, gzip's CRC and length trailer check out, and the blob is the same on any number
/// of threads.
#[test]
fn large_layer_round_trips_through_layer_reader_on_any_thread_count() {
    use crate::pgzip::BLOCK;
    use crate::verify::{verify_layer, LayerReader, VerifyError};
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let mut x = 0x9e3779b97f4a7c15u64;
    let random: Vec<u8> = (0..3 * BLOCK + 77)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let b64: Vec<u8> = random
        .iter()
        .map(|b| b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(b & 63) as usize])
        .collect();
    let text: Vec<u8> =
        (0..200_000u32).flat_map(|i| format!("line {} of {}\n", i % 977, i % 13).into_bytes()).collect();
    fs::write(tree.join("random.bin"), &random).unwrap();
    fs::write(tree.join("empty"), b"").unwrap();
    fs::write(tree.join("text.txt"), &text).unwrap();
    fs::write(tree.join("b64.txt"), &b64[..2 * BLOCK + 5]).unwrap();
    let entries = walk(&tree);
    for c in [Compression::Gzip, Compression::Zstd] {
        let mut first: Option<(Vec<u8>, LayerInfo)> = None;
        for threads in [1, 2, 4] {
            let mut w = LayerWriter::with_threads(Vec::new(), c, None, threads).unwrap();
            for (path, meta) in &entries {
                if meta.kind == EntryKind::File {
                    w.append(meta, Some(&mut File::open(path).unwrap())).unwrap();
                } else {
                    w.append(meta, None).unwrap();
                }
            }
            let (blob, info) = w.finish().unwrap();
            assert!(info.size == blob.len() as u64 && info.digest == sha256(&blob), "{c:?}");
            let mut r = LayerReader::new(&blob[..]).unwrap();
            let mut plain = Vec::new();
            r.read_to_end(&mut plain).unwrap();
            assert!(plain.len() > 4 * BLOCK, "{c:?}: {} bytes of tar", plain.len());
            assert_eq!(sha256(&plain), info.diff_id, "{c:?}");
            assert_eq!(r.finish().unwrap().0, info.diff_id, "{c:?}");
            verify_layer(&blob[..], &info.diff_id).unwrap();
            match &first {
                None => first = Some((blob, info)),
                Some((b, i)) => assert!(*b == blob && *i == info, "{c:?} on {threads} threads gave another blob"),
            }
        }
        if c == Compression::Gzip {
            // The CRC and the length in the trailer are checked: a flipped bit in either is refused.
            let (blob, info) = first.unwrap();
            for back in [8, 1] {
                let mut bad = blob.clone();
                let at = bad.len() - back;
                bad[at] ^= 1;
                let err = verify_layer(&bad[..], &info.diff_id).expect_err("corrupt trailer accepted");
                assert!(matches!(err, VerifyError::Corrupt { .. }), "{err:?}");
            }
        }
    }
}
