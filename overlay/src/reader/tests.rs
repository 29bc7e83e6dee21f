use super::header::parse_pax_time;
use super::*;

use std::collections::BTreeMap;

use crate::tarfmt::{EntryKind, EntryMeta, TarWriter};

/// A raw ustar header block, built by hand so the tests do not depend on kiln's writer.
fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    b[100..107].copy_from_slice(b"0000644");
    b[108..115].copy_from_slice(b"0001750");
    b[116..123].copy_from_slice(b"0000144");
    b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    b[136..147].copy_from_slice(b"00000001750");
    b[156] = typeflag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    seal(&mut b);
    b
}

fn seal(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn push(out: &mut Vec<u8>, block: [u8; BLOCK], data: &[u8]) {
    out.extend_from_slice(&block);
    out.extend_from_slice(data);
    out.resize(out.len() + padding(data.len() as u64) as usize, 0);
}

fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
}

/// Every entry with its data.
fn read_all(bytes: &[u8]) -> io::Result<Vec<(Entry, Vec<u8>)>> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        let mut data = Vec::new();
        r.data().read_to_end(&mut data)?;
        out.push((e, data));
    }
    Ok(out)
}

#[test]
fn binary_xattr_with_newline_survives() {
    let cap: &[u8] = b"\x01\x00\x00\x02\n\x00\x20\x00\x00\n\x00\x00\xff";
    let mut t = Vec::new();
    let records = pax(&[("SCHILY.xattr.security.capability", cap), ("SCHILY.xattr.user.after", b"kept")]);
    push(&mut t, header(b"PaxHeaders/bin", b'x', records.len() as u64, b""), &records);
    push(&mut t, header(b"bin", b'0', 3, b""), b"abc");
    end(&mut t);
    let all = read_all(&t).unwrap();
    assert_eq!(all.len(), 1);
    let (e, data) = &all[0];
    assert_eq!(e.xattrs.get("security.capability").map(Vec::as_slice), Some(cap));
    assert_eq!(e.xattrs.get("user.after").map(Vec::as_slice), Some(&b"kept"[..]));
    assert_eq!(data, b"abc");
    assert_eq!((e.uid, e.gid, e.mode, e.mtime), (1000, 100, 0o644, 1000));
}

#[test]
fn gnu_long_names_and_links() {
    let long_name = format!("{}/file", "d".repeat(200));
    let long_link = format!("/{}", "t".repeat(300));
    let mut t = Vec::new();
    let mut n = long_name.clone().into_bytes();
    n.push(0);
    push(&mut t, header(b"././@LongLink", b'L', n.len() as u64, b""), &n);
    push(&mut t, header(b"ddd", b'0', 1, b""), b"x");
    push(&mut t, header(b"././@LongLink", b'K', long_link.len() as u64, b""), long_link.as_bytes());
    push(&mut t, header(b"sym", b'2', 0, b"short"), b"");
    end(&mut t);
    let all = read_all(&t).unwrap();
    assert_eq!(all[0].0.name, long_name.as_bytes());
    assert_eq!(all[0].1, b"x");
    assert_eq!(all[1].0.kind, Kind::Symlink);
    assert_eq!(all[1].0.name, b"sym");
    assert_eq!(all[1].0.link, long_link.as_bytes());
}

#[test]
fn pax_overrides_the_ustar_fields() {
    let mut t = Vec::new();
    let records = pax(&[
        ("path", b"the/real/name"),
        ("uid", b"4000000000"),
        ("gid", b"7"),
        ("mtime", b"1700000000.25"),
        ("linkpath", b"target"),
    ]);
    push(&mut t, header(b"PaxHeaders/x", b'x', records.len() as u64, b""), &records);
    push(&mut t, header(b"truncated-stand-in", b'2', 0, b"stand-in"), b"");
    // The records apply to one entry only.
    push(&mut t, header(b"next", b'0', 0, b""), b"");
    end(&mut t);
    let all = read_all(&t).unwrap();
    let e = &all[0].0;
    assert_eq!(e.name, b"the/real/name");
    assert_eq!(e.link, b"target");
    assert_eq!((e.uid, e.gid), (4_000_000_000, 7));
    assert_eq!((e.mtime, e.mtime_nsec), (1_700_000_000, 250_000_000));
    assert_eq!(all[1].0.name, b"next");
    assert_eq!(all[1].0.uid, 1000);
}

#[test]
fn pax_size_overrides_the_header_size() {
    let mut t = Vec::new();
    let records = pax(&[("size", b"5")]);
    push(&mut t, header(b"PaxHeaders/f", b'x', records.len() as u64, b""), &records);
    push(&mut t, header(b"f", b'0', 0, b""), b"hello");
    push(&mut t, header(b"g", b'0', 2, b""), b"ok");
    end(&mut t);
    let all = read_all(&t).unwrap();
    assert_eq!(all[0].1, b"hello");
    assert_eq!(all[1].1, b"ok");
}

#[test]
fn non_utf8_names_are_kept_as_bytes() {
    let mut t = Vec::new();
    push(&mut t, header(b"x\xff", b'0', 1, b""), b"1");
    push(&mut t, header(b"x\xfe", b'0', 1, b""), b"2");
    let records = pax(&[("path", b"p\x80ax"), ("linkpath", b"l\xc3")]);
    push(&mut t, header(b"PaxHeaders/x", b'x', records.len() as u64, b""), &records);
    push(&mut t, header(b"stand-in", b'2', 0, b"x"), b"");
    end(&mut t);
    let all = read_all(&t).unwrap();
    assert_eq!(all[0].0.name, b"x\xff");
    assert_eq!(all[1].0.name, b"x\xfe");
    assert_eq!(all[2].0.name, b"p\x80ax");
    assert_eq!(all[2].0.link, b"l\xc3");
}

#[test]
fn ustar_prefix_is_joined() {
    let mut b = header(b"name", b'0', 0, b"");
    b[345..351].copy_from_slice(b"prefix");
    seal(&mut b);
    let mut t = Vec::new();
    push(&mut t, b, b"");
    end(&mut t);
    assert_eq!(read_all(&t).unwrap()[0].0.name, b"prefix/name");
}

#[test]
fn header_only_types_have_no_data() {
    // A directory claiming a size: the next header follows right after it, as Go's reader reads it.
    let mut t = Vec::new();
    t.extend_from_slice(&header(b"d/", b'5', 1024, b""));
    push(&mut t, header(b"d/f", b'0', 2, b""), b"hi");
    end(&mut t);
    let all = read_all(&t).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].1, b"hi");
}

#[test]
fn unread_data_is_skipped_and_positions_are_reported() {
    let mut t = Vec::new();
    push(&mut t, header(b"a", b'0', 700, b""), &[7u8; 700]);
    push(&mut t, header(b"b", b'0', 3, b""), b"bbb");
    end(&mut t);
    let mut r = Reader::new(&t[..]);
    let a = r.next_entry().unwrap().unwrap();
    assert_eq!((a.name.as_slice(), r.position()), (&b"a"[..], 512));
    let b = r.next_entry().unwrap().unwrap();
    assert_eq!((b.name.as_slice(), r.position()), (&b"b"[..], 512 + 1024 + 512));
    let mut data = String::new();
    r.data().read_to_string(&mut data).unwrap();
    assert_eq!(data, "bbb");
    assert!(r.next_entry().unwrap().is_none());
}

#[test]
fn corrupt_and_truncated_archives_are_errors() {
    let mut bad = header(b"a", b'0', 0, b"");
    bad[0] = b'b';
    assert!(read_all(&bad).is_err(), "checksum");

    let mut t = Vec::new();
    push(&mut t, header(b"a", b'0', 10, b""), b"0123456789");
    t.truncate(512 + 4);
    let err = read_all(&t).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("\"a\""), "{err}");

    assert!(read_all(&[1u8; 100]).is_err(), "a partial header");

    let mut huge = Vec::new();
    huge.extend_from_slice(&header(b"PaxHeaders/x", b'x', 1 << 30, b""));
    assert!(read_all(&huge).unwrap_err().to_string().contains("extended header"));

    let mut nul = Vec::new();
    let records = pax(&[("path", b"a\0b")]);
    push(&mut nul, header(b"PaxHeaders/x", b'x', records.len() as u64, b""), &records);
    push(&mut nul, header(b"x", b'0', 0, b""), b"");
    assert!(read_all(&nul).is_err());
}

#[test]
fn names_are_checked_and_split() {
    let e = |name: &[u8]| Entry {
        name: name.to_vec(),
        kind: Kind::File,
        link: Vec::new(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        size: 0,
        dev: (0, 0),
        xattrs: BTreeMap::new(),
    };
    assert!(e(b"/etc/passwd").check_inside().is_err());
    assert!(e(b"a/../../b").check_inside().is_err());
    assert!(e(b"..").check_inside().is_err());
    assert!(e(b"./a/b/").check_inside().is_ok());
    assert_eq!(e(b"./a//b/.").components(), [&b"a"[..], &b"b"[..]]);
    assert!(e(b"./").components().is_empty());
    assert_eq!(e(b"./x/y/").meta().unwrap().path, "x/y");
}

#[test]
fn reads_what_kiln_writes() {
    let mut w = TarWriter::new(Vec::new());
    let mut f = EntryMeta::new(format!("{}/f", "long".repeat(50)), EntryKind::File);
    f.size = 4;
    f.uid = 1 << 40;
    f.mtime = -5;
    f.xattrs.insert("user.bin".into(), b"\n\0\n".to_vec());
    w.append(&f, Some(&mut &b"data"[..])).unwrap();
    w.append(&EntryMeta::new("l", EntryKind::Hardlink(f.path.clone())), None).unwrap();
    w.append(&EntryMeta::new("c", EntryKind::CharDev { major: 1, minor: 3 }), None).unwrap();
    let t = w.finish().unwrap();
    let all = read_all(&t).unwrap();
    assert_eq!(all[0].0.meta().unwrap(), f);
    assert_eq!(all[0].1, b"data");
    assert_eq!(all[1].0.meta().unwrap().kind, EntryKind::Hardlink(f.path.clone()));
    assert_eq!(all[2].0.meta().unwrap().kind, EntryKind::CharDev { major: 1, minor: 3 });
}

#[test]
fn pax_times() {
    assert_eq!(parse_pax_time("12"), Some((12, 0)));
    assert_eq!(parse_pax_time("12.000000001"), Some((12, 1)));
    assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
    assert_eq!(parse_pax_time("x"), None);
}

#[test]
fn global_headers_are_skipped_and_base256_numbers_read() {
    let mut t = Vec::new();
    let records = pax(&[("comment", b"ignored")]);
    push(&mut t, header(b"pax_global_header", b'g', records.len() as u64, b""), &records);
    let mut big = header(b"big", b'0', 0, b"");
    // uid 2^40 in GNU base-256.
    big[108..116].copy_from_slice(&[0x80, 0, 0x01, 0, 0, 0, 0, 0]);
    seal(&mut big);
    push(&mut t, big, b"");
    end(&mut t);
    let all = read_all(&t).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0.name, b"big");
    assert_eq!(all[0].0.uid, 1 << 40);
}
