use super::*;
use crate::digest::sha256_digest;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// An entry plus the content a file carries.
struct Fixture {
    meta: EntryMeta,
    data: Vec<u8>,
}

fn entry(path: &str, kind: EntryKind, mode: u32) -> EntryMeta {
    EntryMeta { mode, mtime: 1_700_000_000, ..EntryMeta::new(path, kind) }
}

fn file(path: &str, mode: u32, data: &[u8]) -> Fixture {
    let mut meta = entry(path, EntryKind::File, mode);
    meta.size = data.len() as u64;
    Fixture { meta, data: data.to_vec() }
}

fn other(meta: EntryMeta) -> Fixture {
    Fixture { meta, data: Vec::new() }
}

/// A long path whose components each fit ustar, so it splits into prefix + name without PAX.
fn splittable_path() -> String {
    format!("{}/{}/leaf.txt", "d".repeat(70), "e".repeat(60))
}

fn long_component() -> String {
    format!("dir/{}", "n".repeat(120))
}

fn very_long_path() -> String {
    (0..30).map(|i| format!("component{i:02}")).collect::<Vec<_>>().join("/")
}

/// Bytes from a real `setcap cap_net_bind_service,cap_net_raw+ep` (VFS_CAP_REVISION_2), no newline in them.
fn capability_plain() -> Vec<u8> {
    let mut v = vec![0x01, 0x00, 0x00, 0x02, 0x00, 0x24, 0x00, 0x00];
    v.extend_from_slice(&[0u8; 12]);
    v
}

/// A capability value holding a newline, '=' and NUL bytes: cap_dac_override + cap_fowner (bits 1 and 3).
fn capability_tricky() -> Vec<u8> {
    let mut v = vec![0x01, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x00];
    v.extend_from_slice(&[b'=', 0, b'\n', 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v
}

fn fixtures() -> Vec<Fixture> {
    let mut v = vec![
        other(entry("etc", EntryKind::Dir, 0o755)),
        file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n"),
        other(entry("tmp/", EntryKind::Dir, 0o1777)),
        other(entry("srv", EntryKind::Dir, 0o2775)),
        file("usr-bin-su", 0o4755, b"\x7fELF pretend"),
        file("setgid-file", 0o2711, b"g"),
        file("empty", 0o600, b""),
        other(entry("link-to-passwd", EntryKind::Symlink("etc/passwd".into()), 0o777)),
        other(entry("abs-link", EntryKind::Symlink("/usr/lib/os-release".into()), 0o777)),
        other(entry("hard-passwd", EntryKind::Hardlink("etc/passwd".into()), 0o644)),
        other(entry("dev-null", EntryKind::CharDev { major: 1, minor: 3 }, 0o666)),
        other(entry("sda1", EntryKind::BlockDev { major: 8, minor: 1 }, 0o660)),
        other(entry("big-minor", EntryKind::CharDev { major: 4095, minor: 1_048_575 }, 0o600)),
        other(entry("fifo", EntryKind::Fifo, 0o644)),
        file("café/naïve.txt", 0o644, "non-ascii name".as_bytes()),
        file(&splittable_path(), 0o644, b"split"),
        file(&long_component(), 0o644, b"pax path"),
        file(&very_long_path(), 0o640, b"very long"),
        other(entry(&format!("{}/", "D".repeat(130)), EntryKind::Dir, 0o700)),
        other(entry("long-symlink", EntryKind::Symlink(format!("../{}/target", "t".repeat(200)).into()), 0o777)),
        other(entry("long-hardlink", EntryKind::Hardlink(very_long_path().into()), 0o640)),
    ];
    let mut big_ids = file("big-ids", 0o644, b"owned far away");
    big_ids.meta.uid = 3_000_000;
    big_ids.meta.gid = 4_000_000_000;
    v.push(big_ids);
    let mut edge_ids = file("edge-ids", 0o644, b"owned at the edge");
    edge_ids.meta.uid = 2_097_151;
    edge_ids.meta.gid = 2_097_152;
    v.push(edge_ids);
    let mut caps = file("ping", 0o755, b"ping binary");
    caps.meta.xattrs.insert("security.capability".into(), capability_plain());
    caps.meta.xattrs.insert("user.comment".into(), b"hello world".to_vec());
    caps.meta.xattrs.insert("user.empty".into(), Vec::new());
    v.push(caps);
    let mut dir_x = other(entry("xdir", EntryKind::Dir, 0o755));
    dir_x.meta.xattrs.insert("trusted.overlay.opaque".into(), b"y".to_vec());
    v.push(dir_x);
    // Content that crosses block boundaries.
    let blob: Vec<u8> = (0..70_001u32).map(|i| (i % 251) as u8).collect();
    v.push(file("blob.bin", 0o644, &blob));
    v
}

fn write_archive(items: &[Fixture]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for f in items {
        let mut data = &f.data[..];
        let reader: Option<&mut dyn Read> = if f.meta.kind == EntryKind::File { Some(&mut data) } else { None };
        w.append(&f.meta, reader).unwrap();
    }
    w.finish().unwrap()
}

/// A tar name as a host path: the same bytes.
fn host(name: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(name))
}

fn expected_name(meta: &EntryMeta) -> BString {
    match meta.kind {
        EntryKind::Dir if !meta.path.ends_with(b"/") => [&meta.path[..], b"/"].concat().into(),
        _ => meta.path.clone(),
    }
}

#[test]
fn round_trips_through_the_tar_crate() {
    let items = fixtures();
    let bytes = write_archive(&items);
    assert_eq!(bytes.len() % 512, 0);
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut n = 0;
    for (got, want) in archive.entries().unwrap().zip(&items) {
        let mut got = got.unwrap();
        let m = &want.meta;
        let name = BString::from(got.path_bytes().into_owned());
        assert_eq!(name, expected_name(m));
        let h = got.header().clone();
        assert_eq!(h.mode().unwrap(), m.mode, "{name}");
        assert_eq!(h.uid().unwrap(), m.uid, "{name}");
        assert_eq!(h.gid().unwrap(), m.gid, "{name}");
        assert_eq!(h.mtime().unwrap(), m.mtime as u64, "{name}");
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{name}");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "{name}");
        let (ty, link, dev) = match &m.kind {
            EntryKind::File => (tar::EntryType::Regular, None, None),
            EntryKind::Dir => (tar::EntryType::Directory, None, None),
            EntryKind::Symlink(t) => (tar::EntryType::Symlink, Some(t.clone()), None),
            EntryKind::Hardlink(t) => (tar::EntryType::Link, Some(t.clone()), None),
            EntryKind::CharDev { major, minor } => (tar::EntryType::Char, None, Some((*major, *minor))),
            EntryKind::BlockDev { major, minor } => (tar::EntryType::Block, None, Some((*major, *minor))),
            EntryKind::Fifo => (tar::EntryType::Fifo, None, None),
        };
        assert_eq!(h.entry_type(), ty, "{name}");
        let got_link = got.link_name_bytes().map(|l| BString::from(l.into_owned()));
        assert_eq!(got_link, link, "{name}");
        if let Some((major, minor)) = dev {
            assert_eq!(h.device_major().unwrap(), Some(major), "{name}");
            assert_eq!(h.device_minor().unwrap(), Some(minor), "{name}");
        }
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = got.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(k) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        assert_eq!(xattrs, m.xattrs, "{name}");
        let mut content = Vec::new();
        got.read_to_end(&mut content).unwrap();
        assert_eq!(content, want.data, "{name}");
        n += 1;
    }
    assert_eq!(n, items.len());
}

/// The raw headers, PAX data included, as (typeflag, name field, pax data) — to see exactly what was written.
fn raw_entries(bytes: &[u8]) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in archive.entries().unwrap().raw(true) {
        let mut e = e.unwrap();
        let ty = e.header().entry_type().as_byte();
        let name = e.header().path_bytes().into_owned();
        let mut data = Vec::new();
        if ty == b'x' {
            e.read_to_end(&mut data).unwrap();
        }
        out.push((ty, name, data));
    }
    out
}

#[test]
fn pax_only_where_ustar_cannot_say_it() {
    let cases: Vec<(EntryMeta, Vec<&str>)> = vec![
        (entry("plain", EntryKind::File, 0o644), vec![]),
        (entry(&splittable_path(), EntryKind::File, 0o644), vec![]),
        (entry(&format!("{}/", "D".repeat(99)), EntryKind::Dir, 0o755), vec![]),
        (entry(&format!("{}/", "D".repeat(100)), EntryKind::Dir, 0o755), vec!["path"]),
        (entry(&long_component(), EntryKind::File, 0o644), vec!["path"]),
        (entry("ü", EntryKind::File, 0o644), vec!["path"]),
        (entry("l", EntryKind::Symlink("x".repeat(100).into()), 0o777), vec![]),
        (entry("l", EntryKind::Symlink("x".repeat(101).into()), 0o777), vec!["linkpath"]),
        (EntryMeta { uid: 2_097_152, ..entry("u", EntryKind::File, 0o644) }, vec!["uid"]),
        (EntryMeta { gid: u64::from(u32::MAX), ..entry("g", EntryKind::File, 0o644) }, vec!["gid"]),
        (EntryMeta { mtime: -1, ..entry("t", EntryKind::File, 0o644) }, vec!["mtime"]),
        (EntryMeta { mtime: 1 << 34, ..entry("t", EntryKind::File, 0o644) }, vec!["mtime"]),
    ];
    for (meta, keys) in cases {
        let bytes = write_archive(&[other(meta.clone())]);
        let raw = raw_entries(&bytes);
        let pax: Vec<_> = raw.iter().filter(|r| r.0 == b'x').collect();
        let got_keys: Vec<String> = pax.iter().flat_map(|r| parse_pax_records(&r.2).unwrap()).map(|(k, _)| k).collect();
        assert_eq!(got_keys, keys, "{:?}", meta.path);
    }
}

/// Names and link targets that are not UTF-8 go in PAX records byte for byte, the way GNU tar and Go write
/// them: `x\xff` and `x\xfe` stay two names, and a long one keeps every byte past ustar's 100.
#[test]
fn names_that_are_not_utf8_are_written_byte_exact() {
    let long: Vec<u8> = [&b"dir\xfe/"[..], &[b'n'; 120], b"\xff"].concat();
    let items = [
        other(entry("x\u{0}", EntryKind::File, 0o644)).meta,
        EntryMeta::new(&b"x\xff"[..], EntryKind::File),
        EntryMeta::new(&b"x\xfe"[..], EntryKind::File),
        EntryMeta::new(long.clone(), EntryKind::File),
        EntryMeta::new(&b"l"[..], EntryKind::Symlink((&b"t\xfd"[..]).into())),
        EntryMeta::new(&b"d\xfc"[..], EntryKind::Dir),
    ];
    // A NUL is never a name byte: refused, and the message shows the name escaped.
    let err = TarWriter::new(Vec::new()).append(&items[0], None).unwrap_err();
    assert!(err.to_string().contains("x\\0"), "{err}");
    let fixtures: Vec<Fixture> = items[1..].iter().cloned().map(other).collect();
    let bytes = write_archive(&fixtures);
    let records: Vec<Vec<(String, Vec<u8>)>> =
        raw_entries(&bytes).into_iter().filter(|r| r.0 == b'x').map(|r| parse_pax_records(&r.2).unwrap()).collect();
    let want: Vec<Vec<(String, Vec<u8>)>> = vec![
        vec![("path".into(), b"x\xff".to_vec())],
        vec![("path".into(), b"x\xfe".to_vec())],
        vec![("path".into(), long.clone())],
        vec![("linkpath".into(), b"t\xfd".to_vec())],
        vec![("path".into(), b"d\xfc/".to_vec())],
    ];
    assert_eq!(records, want);
    // The ustar name field holds only an ASCII stand-in for readers that skip PAX.
    let names: Vec<Vec<u8>> = raw_entries(&bytes).into_iter().filter(|r| r.0 != b'x').map(|r| r.1).collect();
    assert_eq!(names[0], b"x");
    let read: Vec<BString> = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| BString::from(e.unwrap().path_bytes().into_owned()))
        .collect();
    let want: Vec<&[u8]> = vec![b"x\xff", b"x\xfe", &long, b"l", b"d\xfc/"];
    assert_eq!(read, want);
}

#[test]
fn negative_and_far_mtimes_are_in_pax() {
    for t in [-1_234_567_890i64, 1 << 40] {
        let meta = EntryMeta { mtime: t, ..entry("t", EntryKind::File, 0o644) };
        let raw = raw_entries(&write_archive(&[other(meta)]));
        let records = parse_pax_records(&raw[0].2).unwrap();
        assert_eq!(records, vec![("mtime".to_string(), t.to_string().into_bytes())]);
    }
}

#[test]
fn binary_xattr_values_survive_exactly() {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut meta = entry("bin", EntryKind::File, 0o755);
    meta.xattrs.insert("security.capability".into(), capability_tricky());
    meta.xattrs.insert("user.all-bytes".into(), all_bytes.clone());
    let bytes = write_archive(&[other(meta)]);
    let raw = raw_entries(&bytes);
    assert_eq!(raw.len(), 2);
    assert_eq!(raw[0].0, b'x');
    let records = parse_pax_records(&raw[0].2).unwrap();
    assert_eq!(
        records,
        vec![
            ("SCHILY.xattr.security.capability".to_string(), capability_tricky()),
            ("SCHILY.xattr.user.all-bytes".to_string(), all_bytes),
        ]
    );
}

#[test]
fn pax_record_lengths_are_right_at_digit_boundaries() {
    for vlen in (0..1100).chain(9980..10010) {
        let mut records = BTreeMap::new();
        records.insert("k".to_string(), vec![b'v'; vlen]);
        let data = encode_pax(&records);
        let space = data.iter().position(|&b| b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&data[..space]).unwrap().parse().unwrap();
        assert_eq!(len, data.len(), "value length {vlen}");
        assert_eq!(parse_pax_records(&data).unwrap(), vec![("k".to_string(), vec![b'v'; vlen])]);
    }
}

#[test]
fn parse_pax_records_rejects_garbage() {
    for bad in [&b"abc"[..], b"5 k=v", b"99 k=v\n", b"7 kv\nxx", b"x k=v\n"] {
        assert!(parse_pax_records(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn same_input_gives_identical_bytes() {
    let a = write_archive(&fixtures());
    let b = write_archive(&fixtures());
    assert_eq!(sha256_digest(&a), sha256_digest(&b));
    assert_eq!(a, b);
}

#[test]
fn every_header_has_a_valid_checksum() {
    let bytes = write_archive(&fixtures());
    let mut archive = tar::Archive::new(&bytes[..]);
    for e in archive.entries().unwrap().raw(true) {
        let e = e.unwrap();
        assert!(crate::compress::looks_like_tar(e.header().as_bytes()));
    }
}

#[test]
fn huge_sizes_go_to_pax_and_base256() {
    let size = 10u64 << 30;
    let meta = EntryMeta { size, ..entry("huge", EntryKind::File, 0o644) };
    let (pax, block) = build_headers(&meta).unwrap();
    assert_eq!(pax.get("size"), Some(&size.to_string().into_bytes()));
    let h = tar::Header::from_byte_slice(&block);
    assert_eq!(h.size().unwrap(), size, "base-256 fallback for readers that skip PAX");
    let just_fits = EntryMeta { size: (8 << 30) - 1, ..meta };
    let (pax, block) = build_headers(&just_fits).unwrap();
    assert!(pax.is_empty());
    assert_eq!(tar::Header::from_byte_slice(&block).size().unwrap(), (8 << 30) - 1);
}

#[test]
fn bad_entries_are_refused() {
    let bad_paths = ["", "/etc/passwd", "./etc", "a//b", "a/../b", "..", ".", "a/./b", "nul\0byte", "file/"];
    for p in bad_paths {
        let mut w = TarWriter::new(Vec::new());
        let err = w.append(&entry(p, EntryKind::File, 0o644), Some(&mut &b""[..])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{p:?}");
    }
    let mut w = TarWriter::new(Vec::new());
    let hl = entry("h", EntryKind::Hardlink("/etc/passwd".into()), 0o644);
    assert!(w.append(&hl, None).is_err());
    let empty_target = entry("s", EntryKind::Symlink(BString::default()), 0o777);
    assert!(w.append(&empty_target, None).is_err());
    let mut eq_xattr = entry("x", EntryKind::Dir, 0o755);
    eq_xattr.xattrs.insert("user.a=b".into(), b"v".to_vec());
    assert!(w.append(&eq_xattr, None).is_err());
    let missing = EntryMeta { size: 3, ..entry("f", EntryKind::File, 0o644) };
    assert!(w.append(&missing, None).is_err());
}

#[test]
fn short_data_is_an_error_and_extra_data_is_left() {
    let meta = EntryMeta { size: 10, ..entry("f", EntryKind::File, 0o644) };
    let mut w = TarWriter::new(Vec::new());
    let err = w.append(&meta, Some(&mut &b"12345"[..])).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let mut w = TarWriter::new(Vec::new());
    let mut src = &b"0123456789abcdef"[..];
    w.append(&meta, Some(&mut src)).unwrap();
    assert_eq!(src, b"abcdef");
    let bytes = w.finish().unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut e = archive.entries().unwrap().next().unwrap().unwrap();
    let mut got = String::new();
    e.read_to_string(&mut got).unwrap();
    assert_eq!(got, "0123456789");
}

#[test]
fn empty_archive_is_two_zero_blocks() {
    let bytes = TarWriter::new(Vec::new()).finish().unwrap();
    assert_eq!(bytes, vec![0u8; 1024]);
    assert_eq!(tar::Archive::new(&bytes[..]).entries().unwrap().count(), 0);
}

fn gnu_tar() -> bool {
    Command::new("tar").arg("--version").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn gnu_tar_lists_the_same_entries() {
    if !gnu_tar() {
        eprintln!("GNU tar not installed; skipped");
        return;
    }
    let items = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar");
    std::fs::write(&archive, write_archive(&items)).unwrap();
    let names = run(Command::new("tar").args(["--quoting-style=literal", "-tf"]).arg(&archive));
    let want: Vec<String> = items.iter().map(|f| expected_name(&f.meta).to_string()).collect();
    assert_eq!(names.lines().collect::<Vec<_>>(), want);

    let long = run(Command::new("tar")
        .args(["--quoting-style=literal", "--numeric-owner", "--full-time", "-tvf"])
        .arg(&archive));
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), items.len());
    let line_of = |path: &str| {
        let i = items.iter().position(|f| f.meta.path == path).unwrap();
        // GNU tar pads its columns; compare with single spaces.
        lines[i].split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert!(line_of("usr-bin-su").starts_with("-rwsr-xr-x 0/0 "), "{}", line_of("usr-bin-su"));
    assert!(line_of("tmp/").starts_with("drwxrwxrwt "), "{}", line_of("tmp/"));
    assert!(line_of("srv").starts_with("drwxrwsr-x "), "{}", line_of("srv"));
    assert!(line_of("setgid-file").starts_with("-rwx--s--x "), "{}", line_of("setgid-file"));
    assert!(line_of("big-ids").starts_with("-rw-r--r-- 3000000/4000000000 "), "{}", line_of("big-ids"));
    assert!(line_of("dev-null").starts_with("crw-rw-rw- 0/0 1,3 "), "{}", line_of("dev-null"));
    assert!(line_of("sda1").starts_with("brw-rw---- 0/0 8,1 "), "{}", line_of("sda1"));
    assert!(line_of("fifo").starts_with("prw-r--r-- "), "{}", line_of("fifo"));
    assert!(line_of("etc/passwd").contains(" 2023-11-14 22:13:20 etc/passwd"), "{}", line_of("etc/passwd"));
    let target = format!("../{}/target", "t".repeat(200));
    assert!(line_of("long-symlink").ends_with(&format!("long-symlink -> {target}")));
    assert!(line_of("long-hardlink").ends_with(&format!("long-hardlink link to {}", very_long_path())));
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective uid; this avoids an unsafe geteuid call in tests.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn gnu_tar_extracts_contents_links_and_xattrs() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !gnu_tar() {
        eprintln!("GNU tar not installed; skipped");
        return;
    }
    let root = is_root();
    // Devices need privilege to create; everything else extracts as any user.
    let items: Vec<Fixture> = fixtures()
        .into_iter()
        .filter(|f| !matches!(f.meta.kind, EntryKind::CharDev { .. } | EntryKind::BlockDev { .. }))
        .filter(|f| root || !f.meta.xattrs.keys().any(|k| !k.starts_with("user.")))
        .map(|mut f| {
            if !root {
                f.meta.uid = 0;
                f.meta.gid = 0;
            }
            f
        })
        .collect();
    let mut tricky = file("tricky-caps", 0o755, b"x");
    tricky.meta.xattrs.insert("user.binary".into(), capability_tricky());
    let mut items = items;
    items.push(tricky);

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar");
    std::fs::write(&archive, write_archive(&items)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let probe = out.join(".probe");
    std::fs::write(&probe, b"").unwrap();
    let fs_has_xattrs = xattr::set(&probe, "user.probe", b"1").is_ok();
    std::fs::remove_file(&probe).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "-xf"])
        .arg(&archive)
        .arg("-C")
        .arg(&out));

    for f in &items {
        let m = &f.meta;
        let p = out.join(host(m.path.trim_end_with(|c| c == '/')));
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", m.path));
        match &m.kind {
            EntryKind::File => assert_eq!(std::fs::read(&p).unwrap(), f.data, "{}", m.path),
            EntryKind::Dir => assert!(md.is_dir()),
            EntryKind::Symlink(t) => assert_eq!(std::fs::read_link(&p).unwrap(), host(t)),
            EntryKind::Hardlink(t) => {
                assert_eq!(md.ino(), std::fs::metadata(out.join(host(t))).unwrap().ino(), "{}", m.path)
            }
            EntryKind::Fifo => assert_eq!(md.mode() & libc::S_IFMT, libc::S_IFIFO),
            _ => {}
        }
        if !matches!(m.kind, EntryKind::Symlink(_) | EntryKind::Hardlink(_)) {
            assert_eq!(md.permissions().mode() & 0o7777, m.mode, "{}", m.path);
            assert_eq!(md.mtime(), m.mtime, "{}", m.path);
            if root {
                assert_eq!((u64::from(md.uid()), u64::from(md.gid())), (m.uid, m.gid), "{}", m.path);
            }
        }
        if fs_has_xattrs {
            for (k, v) in &m.xattrs {
                if k.starts_with("trusted.") && !root {
                    continue;
                }
                assert_eq!(xattr::get(&p, k).unwrap().as_ref(), Some(v), "{} {k}", m.path);
            }
        }
    }
}

#[test]
fn python_tarfile_reads_binary_xattrs() {
    let Ok(probe) = Command::new("python3").arg("-c").arg("import tarfile").output() else {
        eprintln!("python3 not installed; skipped");
        return;
    };
    if !probe.status.success() {
        return;
    }
    let mut meta = entry(&very_long_path(), EntryKind::File, 0o755);
    meta.uid = 5_000_000;
    meta.xattrs.insert("security.capability".into(), capability_tricky());
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar");
    std::fs::write(&archive, write_archive(&[other(meta.clone())])).unwrap();
    let script = r#"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t.getmembers():
        v = m.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
        print(m.name, m.uid, v.hex())
"#;
    let out = run(Command::new("python3").arg("-c").arg(script).arg(&archive));
    assert_eq!(out.trim(), format!("{} 5000000 {}", meta.path, hex::encode(capability_tricky())));
}
