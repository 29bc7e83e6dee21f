//! One ustar/GNU header block parsed, and what the extended headers before
//! an entry (PAX records, GNU long names) say about it.

use std::collections::BTreeMap;
use std::io;

use super::{malformed, Entry, Kind, BLOCK};

/// The bytes of a NUL-terminated header field.
fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// A numeric header field: octal text (spaces and NULs around it ignored) or GNU base-256 (high bit set,
/// two's complement big-endian).
fn number(field: &[u8], what: &str, at: u64) -> io::Result<i64> {
    let bad = || malformed(format!("bad {what} field in the header at byte {at}"));
    if field[0] & 0x80 != 0 {
        let negative = field[0] & 0x40 != 0;
        let mut v: i128 = if negative { -1 } else { 0 };
        // The first byte's low 7 bits belong to the number; sign-extend through bit 6.
        v = (v << 7) | i128::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256).ok_or_else(bad)? | i128::from(b);
            if v.abs() > i128::from(i64::MAX) {
                return Err(bad());
            }
        }
        return i64::try_from(v).map_err(|_| bad());
    }
    let text = field.iter().copied().skip_while(|&b| b == b' ' || b == 0);
    let text: Vec<u8> = text.take_while(|&b| b != b' ' && b != 0).collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).map_err(|_| bad())?;
    i64::from_str_radix(s, 8).map_err(|_| bad())
}

fn unsigned(field: &[u8], what: &str, at: u64) -> io::Result<u64> {
    u64::try_from(number(field, what, at)?)
        .map_err(|_| malformed(format!("negative {what} in the header at byte {at}")))
}

/// One 512-byte header, parsed.
pub(super) struct Header {
    pub(super) name: Vec<u8>,
    pub(super) typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    pub(super) size: u64,
    mtime: i64,
    link: Vec<u8>,
    dev: (u32, u32),
}

impl Header {
    pub(super) fn parse(b: &[u8; BLOCK], at: u64) -> io::Result<Header> {
        let stored = unsigned(&b[148..156], "checksum", at)?;
        let unsigned_sum: u64 =
            b.iter().enumerate().map(|(i, &x)| if (148..156).contains(&i) { 32 } else { u64::from(x) }).sum();
        let signed_sum: i64 =
            b.iter().enumerate().map(|(i, &x)| if (148..156).contains(&i) { 32 } else { i64::from(x as i8) }).sum();
        if stored != unsigned_sum && stored as i64 != signed_sum {
            return Err(malformed(format!(
                "header checksum mismatch at byte {at} (not a tar archive, or a corrupt one)"
            )));
        }
        let magic = &b[257..263];
        let ustar = magic == b"ustar\0";
        let gnu = magic == b"ustar " && &b[263..265] == b" \0";
        let mut name = cstr(&b[0..100]).to_vec();
        if ustar {
            let prefix = cstr(&b[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let dev = if ustar || gnu {
            let d = |f: &[u8], what| -> io::Result<u32> {
                u32::try_from(unsigned(f, what, at)?)
                    .map_err(|_| malformed(format!("{what} out of range at byte {at}")))
            };
            (d(&b[329..337], "device major")?, d(&b[337..345], "device minor")?)
        } else {
            (0, 0)
        };
        Ok(Header {
            name,
            typeflag: b[156],
            mode: (unsigned(&b[100..108], "mode", at)? & 0o7777) as u32,
            uid: unsigned(&b[108..116], "uid", at)?,
            gid: unsigned(&b[116..124], "gid", at)?,
            size: unsigned(&b[124..136], "size", at)?,
            mtime: number(&b[136..148], "mtime", at)?,
            link: cstr(&b[157..257]).to_vec(),
            dev,
        })
    }

    pub(super) fn into_entry(self, ext: Extensions) -> io::Result<Entry> {
        let mut name = ext.long_name.unwrap_or(self.name);
        let mut link = ext.long_link.unwrap_or(self.link);
        let pax = ext.pax;
        if let Some(p) = pax.path {
            name = p;
        }
        if let Some(l) = pax.linkpath {
            link = l;
        }
        let kind = match self.typeflag {
            b'0' | 0 | b'7' if name.ends_with(b"/") => Kind::Dir,
            b'0' | 0 | b'7' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => Kind::Other(other),
        };
        let shown = || String::from_utf8_lossy(&name).into_owned();
        if name.is_empty() {
            return Err(malformed("an entry has an empty name".into()));
        }
        if name.contains(&0) || link.contains(&0) {
            return Err(malformed(format!("entry {:?} has a NUL byte in its name or link target", shown())));
        }
        if matches!(kind, Kind::Symlink | Kind::Hardlink) && link.is_empty() {
            return Err(malformed(format!("link {:?} has no target", shown())));
        }
        if !matches!(kind, Kind::Symlink | Kind::Hardlink) {
            link.clear();
        }
        let (mtime, mtime_nsec) = pax.mtime.unwrap_or((self.mtime, 0));
        Ok(Entry {
            kind,
            link,
            mode: self.mode,
            uid: pax.uid.unwrap_or(self.uid),
            gid: pax.gid.unwrap_or(self.gid),
            mtime,
            mtime_nsec,
            size: pax.size.unwrap_or(self.size),
            dev: if matches!(kind, Kind::Char | Kind::Block) { self.dev } else { (0, 0) },
            xattrs: pax.xattrs,
            name,
        })
    }
}

/// What the headers before an entry said about it.
#[derive(Default)]
pub(super) struct Extensions {
    pub(super) pax: Pax,
    pub(super) long_name: Option<Vec<u8>>,
    pub(super) long_link: Option<Vec<u8>>,
}

/// The PAX records kiln understands.
#[derive(Default)]
pub(super) struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    size: Option<u64>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Pax {
    pub(super) fn merge(&mut self, records: Vec<(String, Vec<u8>)>) -> io::Result<()> {
        for (key, value) in records {
            let text = || String::from_utf8_lossy(&value).into_owned();
            let bad = || malformed(format!("bad PAX record {key}={:?}", text()));
            match key.as_str() {
                "path" => self.path = Some(value.clone()),
                "linkpath" => self.linkpath = Some(value.clone()),
                "uid" => self.uid = Some(text().parse().map_err(|_| bad())?),
                "gid" => self.gid = Some(text().parse().map_err(|_| bad())?),
                "size" => self.size = Some(text().parse().map_err(|_| bad())?),
                "mtime" => self.mtime = Some(parse_pax_time(&text()).ok_or_else(bad)?),
                k if k.starts_with("GNU.sparse.") => {
                    return Err(malformed("an entry is a GNU sparse file, which kiln does not read".into()))
                }
                k => {
                    if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                        self.xattrs.insert(x.to_string(), value);
                    }
                }
            }
        }
        Ok(())
    }
}

/// PAX times are decimal seconds with an optional fraction.
pub(super) fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = secs.starts_with('-');
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += c.to_digit(10)? * 10u32.pow(8 - i as u32);
    }
    if negative && nanos > 0 {
        // -1.5 is 1.5 s before the epoch: -2 s + 0.5 s.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}
