//! A deterministic tar writer: ustar headers, with a PAX extended header where ustar cannot say it (long
//! names and link targets, big ids, sizes and times, xattrs). Only what the entry describes goes in: no user
//! or group names, no atime or ctime, no host metadata, so the same entries always give the same bytes.
//!
//! Names and link targets are bytes, as on Linux: a name that is not UTF-8 is written exactly, in a PAX
//! `path` (or `linkpath`) record holding its raw bytes. That is what GNU tar and Go's archive/tar (so docker)
//! write, and what they, the `tar` crate and kiln's applier read back verbatim. POSIX would add
//! `hdrcharset=BINARY`, but GNU tar warns about that keyword on every entry and reads the bytes the same way
//! without it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bstr::{BStr, BString, ByteSlice};

/// What an entry is; link targets and device numbers travel with the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink and its target, verbatim (any bytes but NUL).
    Symlink(BString),
    /// A hard link to an earlier entry's path in the same archive.
    Hardlink(BString),
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One archive entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Relative, `/`-separated, no leading `/` or `./`; a directory may end in `/`. Bytes, not text: a
    /// name need not be UTF-8.
    pub path: BString,
    pub kind: EntryKind,
    /// Permission bits plus setuid, setgid and sticky (`0o7777`); file type bits are ignored.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Content length; used for [`EntryKind::File`] only.
    pub size: u64,
    /// Extended attributes by full name (`user.foo`, `security.capability`); values are raw bytes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryMeta {
    /// An entry with root ownership, mtime 0, no xattrs, and the usual mode for its kind.
    pub fn new(path: impl Into<BString>, kind: EntryKind) -> Self {
        let mode = match kind {
            EntryKind::Dir => 0o755,
            EntryKind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        EntryMeta { path: path.into(), kind, mode, uid: 0, gid: 0, mtime: 0, size: 0, xattrs: BTreeMap::new() }
    }
}

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Largest value an octal field of `len` bytes holds (len - 1 digits and a NUL).
const fn octal_max(len: usize) -> u64 {
    (1u64 << (3 * (len as u32 - 1))) - 1
}

/// Field offsets and lengths in a ustar header block.
mod field {
    pub const NAME: (usize, usize) = (0, 100);
    pub const MODE: (usize, usize) = (100, 8);
    pub const UID: (usize, usize) = (108, 8);
    pub const GID: (usize, usize) = (116, 8);
    pub const SIZE: (usize, usize) = (124, 12);
    pub const MTIME: (usize, usize) = (136, 12);
    pub const CHKSUM: (usize, usize) = (148, 8);
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: (usize, usize) = (157, 100);
    pub const MAGIC: (usize, usize) = (257, 6);
    pub const VERSION: (usize, usize) = (263, 2);
    pub const DEVMAJOR: (usize, usize) = (329, 8);
    pub const DEVMINOR: (usize, usize) = (337, 8);
    pub const PREFIX: (usize, usize) = (345, 155);
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Checks that `path` is a clean relative path: non-empty, no leading `/`, no empty, `.` or `..` components,
/// no NUL. A single trailing `/` is allowed and returned separately.
fn clean_path(path: &BStr, what: &str) -> io::Result<(Vec<u8>, bool)> {
    let (body, trailing_slash) = match path.strip_suffix(b"/") {
        Some(b) => (b, true),
        None => (path.as_bytes(), false),
    };
    let bad = body.is_empty()
        || body.contains(&0)
        || body.starts_with(b"/")
        || body.split(|&b| b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        return Err(invalid(format!("write tar entry: {what} {path:?} is not a clean relative path")));
    }
    Ok((body.to_vec(), trailing_slash))
}

/// The archive name of an entry: directories always end in `/`, nothing else does.
fn entry_name(meta: &EntryMeta) -> io::Result<Vec<u8>> {
    let (mut body, trailing_slash) = clean_path(meta.path.as_bstr(), "path")?;
    match (&meta.kind, trailing_slash) {
        (EntryKind::Dir, _) => {
            body.push(b'/');
            Ok(body)
        }
        (_, false) => Ok(body),
        (_, true) => Err(invalid(format!("write tar entry: non-directory path {:?} ends in '/'", meta.path))),
    }
}

/// Splits a long ASCII name into ustar prefix and name at a `/`, as Go's archive/tar does; None when no split
/// fits.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= NAME_LEN || !name.is_ascii() {
        return None;
    }
    // A directory's trailing '/' stays with the name part and is no place to split.
    let search_end = (name.len() - 1).min(PREFIX_LEN + 1);
    let i = name[..search_end].rfind_byte(b'/')?;
    let (prefix, rest) = (&name[..i], &name[i + 1..]);
    (i > 0 && prefix.len() <= PREFIX_LEN && !rest.is_empty() && rest.len() <= NAME_LEN).then_some((prefix, rest))
}

/// What goes into a header's name fields, and whether a PAX `path` record is needed instead.
fn place_name(name: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
    if name.len() <= NAME_LEN && name.is_ascii() {
        return (Vec::new(), name.to_vec(), false);
    }
    match split_ustar(name) {
        Some((prefix, rest)) => (prefix.to_vec(), rest.to_vec(), false),
        None => (Vec::new(), ascii_truncated(name, NAME_LEN), true),
    }
}

/// A stand-in for readers that ignore PAX: the ASCII bytes of `s`, cut to `len` bytes.
fn ascii_truncated(s: &[u8], len: usize) -> Vec<u8> {
    s.iter().copied().filter(u8::is_ascii).take(len).collect()
}

fn typeflag(kind: &EntryKind) -> u8 {
    match kind {
        EntryKind::File => b'0',
        EntryKind::Hardlink(_) => b'1',
        EntryKind::Symlink(_) => b'2',
        EntryKind::CharDev { .. } => b'3',
        EntryKind::BlockDev { .. } => b'4',
        EntryKind::Dir => b'5',
        EntryKind::Fifo => b'6',
    }
}

/// A 512-byte header block being filled.
struct Block([u8; BLOCK]);

impl Block {
    fn new() -> Self {
        let mut b = Block([0; BLOCK]);
        b.put_bytes(field::MAGIC, b"ustar\0");
        b.put_bytes(field::VERSION, b"00");
        b
    }

    fn put_bytes(&mut self, (off, len): (usize, usize), bytes: &[u8]) {
        let n = bytes.len().min(len);
        self.0[off..off + n].copy_from_slice(&bytes[..n]);
    }

    /// Writes `value` as zero-padded octal and a NUL. Values too big for the field are written in the GNU
    /// base-256 form, which tar readers that skip the PAX record still understand; the caller adds the PAX
    /// record that standard readers use.
    fn put_num(&mut self, (off, len): (usize, usize), value: u64) {
        let dst = &mut self.0[off..off + len];
        if value <= octal_max(len) {
            let text = format!("{value:0width$o}", width = len - 1);
            dst[..len - 1].copy_from_slice(text.as_bytes());
            dst[len - 1] = 0;
        } else {
            let be = value.to_be_bytes();
            dst.fill(0);
            dst[len - be.len()..].copy_from_slice(&be);
            dst[0] = 0x80;
        }
    }

    fn seal(mut self) -> [u8; BLOCK] {
        let (off, len) = field::CHKSUM;
        self.0[off..off + len].fill(b' ');
        let sum: u64 = self.0.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        self.0[off..off + len].copy_from_slice(text.as_bytes());
        self.0
    }
}

/// Encodes PAX records (`"<len> <key>=<value>\n"`, len counting the whole record) in key order.
fn encode_pax(records: &PaxRecords) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
                                                // The length counts its own digits: grow it until it agrees with itself.
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Parses a PAX extended header's data by the records' lengths, so values may hold any byte (a binary
/// `security.capability` often holds a newline, which splitting on lines gets wrong).
pub fn parse_pax_records(mut data: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("parse pax record: {what}"));
    let mut records = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(|| malformed("no length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("bad length"))?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed("length does not match the record"));
        }
        let kv = &data[space + 1..len - 1];
        let eq = kv.iter().position(|&b| b == b'=').ok_or_else(|| malformed("no '='"))?;
        let key = String::from_utf8(kv[..eq].to_vec()).map_err(|_| malformed("key is not utf-8"))?;
        records.push((key, kv[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

/// Writes tar entries with deterministic headers. Call [`TarWriter::finish`] to end the archive.
pub struct TarWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

const COPY_BUF: usize = 64 * 1024;
const ZEROS: [u8; BLOCK] = [0; BLOCK];

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out, buf: Vec::new() }
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Appends one entry. For a file, exactly `meta.size` bytes are copied from `data` (an error if it ends
    /// early; anything past that is left unread). Other kinds take no data.
    pub fn append(&mut self, meta: &EntryMeta, data: Option<&mut dyn Read>) -> io::Result<()> {
        let (pax, header) = build_headers(meta)?;
        if !pax.is_empty() {
            self.write_pax(meta, &pax)?;
        }
        self.out.write_all(&header)?;
        if meta.kind == EntryKind::File {
            match data {
                Some(r) => self.copy_exact(r, meta.size, meta.path.as_bstr())?,
                None if meta.size == 0 => {}
                None => {
                    return Err(invalid(format!(
                        "write tar entry {:?}: file of {} bytes has no data",
                        meta.path, meta.size
                    )))
                }
            }
            self.pad(meta.size)?;
        }
        Ok(())
    }

    /// Ends the archive with two zero blocks and returns the writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&ZEROS)?;
        self.out.write_all(&ZEROS)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write_pax(&mut self, meta: &EntryMeta, records: &PaxRecords) -> io::Result<()> {
        let data = encode_pax(records);
        let mut b = Block::new();
        b.put_bytes(field::NAME, &pax_header_name(meta.path.as_bstr()));
        b.put_num(field::MODE, 0o644);
        b.put_num(field::UID, 0);
        b.put_num(field::GID, 0);
        b.put_num(field::SIZE, data.len() as u64);
        b.put_num(field::MTIME, 0);
        b.0[field::TYPEFLAG] = b'x';
        b.put_num(field::DEVMAJOR, 0);
        b.put_num(field::DEVMINOR, 0);
        self.out.write_all(&b.seal())?;
        self.out.write_all(&data)?;
        self.pad(data.len() as u64)
    }

    fn copy_exact(&mut self, r: &mut dyn Read, size: u64, path: &BStr) -> io::Result<()> {
        if self.buf.len() < COPY_BUF {
            self.buf.resize(COPY_BUF, 0);
        }
        let mut left = size;
        while left > 0 {
            let want = left.min(COPY_BUF as u64) as usize;
            let n = match r.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("write tar entry {path:?}: data ended {left} bytes short of {size}"),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&ZEROS[..BLOCK - rem])?;
        }
        Ok(())
    }
}

/// The name of a PAX header block, as Go's archive/tar makes it: `<dir>/PaxHeaders.0/<base>`, ASCII, cut to
/// fit. Readers that do not know PAX extract it as a plain file; no reader relies on it.
fn pax_header_name(path: &BStr) -> Vec<u8> {
    let path = path.trim_end_with(|c| c == '/');
    let name = match path.rsplit_once_str("/") {
        Some((dir, base)) => [dir, b"/PaxHeaders.0/", base].concat(),
        None => [b"PaxHeaders.0/", path].concat(),
    };
    ascii_truncated(&name, NAME_LEN)
}

/// PAX records by key; a BTreeMap so they are always written in the same order.
type PaxRecords = BTreeMap<String, Vec<u8>>;

/// Builds the PAX records (empty when none are needed) and the ustar header block for an entry.
fn build_headers(meta: &EntryMeta) -> io::Result<(PaxRecords, [u8; BLOCK])> {
    let mut pax = PaxRecords::new();
    let mut b = Block::new();

    let name = entry_name(meta)?;
    let (prefix, short, needs_pax) = place_name(&name);
    if needs_pax {
        pax.insert("path".into(), name);
    }
    b.put_bytes(field::NAME, &short);
    b.put_bytes(field::PREFIX, &prefix);

    let link = match &meta.kind {
        EntryKind::Symlink(target) => {
            if target.is_empty() || target.contains(&0) {
                return Err(invalid(format!("write tar entry {:?}: bad symlink target {target:?}", meta.path)));
            }
            Some(target.to_vec())
        }
        EntryKind::Hardlink(target) => Some(clean_path(target.as_bstr(), "hard link target")?.0),
        _ => None,
    };
    if let Some(link) = link {
        if link.len() > NAME_LEN || !link.is_ascii() {
            b.put_bytes(field::LINKNAME, &ascii_truncated(&link, NAME_LEN));
            pax.insert("linkpath".into(), link);
        } else {
            b.put_bytes(field::LINKNAME, &link);
        }
    }

    b.put_num(field::MODE, u64::from(meta.mode & 0o7777));
    for (key, fld, id) in [("uid", field::UID, meta.uid), ("gid", field::GID, meta.gid)] {
        if id > octal_max(fld.1) {
            pax.insert(key.into(), id.to_string().into_bytes());
        }
        b.put_num(fld, id);
    }

    let size = if meta.kind == EntryKind::File { meta.size } else { 0 };
    if size > octal_max(field::SIZE.1) {
        pax.insert("size".into(), size.to_string().into_bytes());
    }
    b.put_num(field::SIZE, size);

    match u64::try_from(meta.mtime) {
        Ok(t) if t <= octal_max(field::MTIME.1) => b.put_num(field::MTIME, t),
        Ok(t) => {
            pax.insert("mtime".into(), t.to_string().into_bytes());
            b.put_num(field::MTIME, t);
        }
        // Before 1970: only PAX can say it; the field stays 0 for readers that cannot.
        Err(_) => {
            pax.insert("mtime".into(), meta.mtime.to_string().into_bytes());
            b.put_num(field::MTIME, 0);
        }
    }

    b.0[field::TYPEFLAG] = typeflag(&meta.kind);
    let (major, minor) = match meta.kind {
        EntryKind::CharDev { major, minor } | EntryKind::BlockDev { major, minor } => (major, minor),
        _ => (0, 0),
    };
    b.put_num(field::DEVMAJOR, u64::from(major));
    b.put_num(field::DEVMINOR, u64::from(minor));

    for (name, value) in &meta.xattrs {
        // '=' ends a PAX key and NUL ends a C string: no reader could get such a name back.
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(invalid(format!("write tar entry {:?}: xattr name {name:?} cannot be stored", meta.path)));
        }
        pax.insert(format!("{PAX_XATTR_PREFIX}{name}"), value.clone());
    }

    Ok((pax, b.seal()))
}

#[cfg(test)]
mod tests;
