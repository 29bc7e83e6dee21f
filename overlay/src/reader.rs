//! The one tar reader: every layer, ADD archive and build context kiln reads goes through [`Reader`].
//!
//! Headers are parsed here, not by the `tar` crate, so that every reader in kiln agrees on what an archive
//! holds (no parser differentials between the applier and the tree walkers), and so that:
//!
//! - names and link targets stay bytes (a name that is not UTF-8 is kept exactly);
//! - PAX records are split by their lengths ([`parse_pax_records`]), so binary xattr values holding a
//!   newline (a `security.capability` often does) arrive intact;
//! - PAX `path`, `linkpath`, `uid`, `gid`, `mtime` and `size` override the ustar fields, and GNU long
//!   names and link targets (`L`, `K`) are applied, as GNU tar and Go's archive/tar do;
//! - headers that only describe the next entry (`x`, `L`, `K`) are capped at 1 MiB, as Go caps them, so a
//!   crafted archive cannot make kiln buffer gigabytes;
//! - header-only types (directories, links, devices, fifos) carry no data whatever their size field says,
//!   as in Go's archive/tar, which docker uses.
//!
//! The reader yields entries; it never touches the filesystem. Whether a name is safe to create is the
//! applier's business ([`Entry::check_inside`] is the shared rule).

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

use crate::tarfmt::{parse_pax_records, EntryKind, EntryMeta};

const BLOCK: usize = 512;
/// The largest PAX or GNU long-name header accepted (Go's `maxSpecialFileSize`).
const MAX_SPECIAL: u64 = 1 << 20;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// A type kiln does not create (e.g. a GNU volume label); its typeflag byte.
    Other(u8),
}

/// One archive entry, with every extended header before it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as the archive gives it, bytes exactly.
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Symlink or hard-link target, bytes exactly; empty for other kinds.
    pub link: Vec<u8>,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch, and nanoseconds (from a PAX `mtime`).
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Bytes of data that follow ([`Reader::data`]); 0 for all but files.
    pub size: u64,
    /// Device major and minor, for [`Kind::Char`] and [`Kind::Block`].
    pub dev: (u32, u32),
    /// `SCHILY.xattr.*` records by xattr name; values are raw bytes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    /// The name for messages (lossy where it is not UTF-8).
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The name's components, without empty and `.` ones; `..` is kept (see [`Entry::check_inside`]).
    /// Empty for the root itself.
    pub fn components(&self) -> Vec<&[u8]> {
        components(&self.name)
    }

    /// Refuses names no well-formed layer has: absolute ones and ones with a `..` component.
    pub fn check_inside(&self) -> Result<(), &'static str> {
        check_inside(&self.name)
    }

    /// The entry as [`EntryMeta`] (the form layers are written from), its path the clean components joined
    /// with `/`. `None` for [`Kind::Other`].
    pub fn meta(&self) -> Option<EntryMeta> {
        let kind = match self.kind {
            Kind::File => EntryKind::File,
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink => EntryKind::Symlink(self.link.clone().into()),
            Kind::Hardlink => EntryKind::Hardlink(join(&components(&self.link)).into()),
            Kind::Char => EntryKind::CharDev { major: self.dev.0, minor: self.dev.1 },
            Kind::Block => EntryKind::BlockDev { major: self.dev.0, minor: self.dev.1 },
            Kind::Fifo => EntryKind::Fifo,
            Kind::Other(_) => return None,
        };
        Some(EntryMeta {
            path: join(&self.components()).into(),
            kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            size: if self.kind == Kind::File { self.size } else { 0 },
            xattrs: self.xattrs.clone(),
        })
    }
}

/// Splits a name into components, dropping empty and `.` ones.
pub fn components(name: &[u8]) -> Vec<&[u8]> {
    name.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").collect()
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

/// Refuses absolute names and names with a `..` component.
pub fn check_inside(name: &[u8]) -> Result<(), &'static str> {
    if name.starts_with(b"/") {
        return Err("is an absolute path");
    }
    if name.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err("leaves the root through '..'");
    }
    Ok(())
}

/// Reads a plain (decompressed) tar stream entry by entry.
///
/// ```no_run
/// # fn f(r: impl std::io::Read) -> std::io::Result<()> {
/// let mut reader = kiln_overlay::reader::Reader::new(r);
/// while let Some(entry) = reader.next_entry()? {
///     let mut data = Vec::new();
///     std::io::Read::read_to_end(&mut reader.data(), &mut data)?;
/// }
/// # Ok(()) }
/// ```
pub struct Reader<R> {
    inner: R,
    /// Data bytes of the current entry not read yet.
    left: u64,
    /// Padding after the current entry's data.
    pad: u64,
    /// Bytes consumed from `inner`.
    pos: u64,
    done: bool,
    /// The current entry's name, for messages about its data.
    current: String,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, left: 0, pad: 0, pos: 0, done: false, current: String::new() }
    }

    /// The next entry, skipping whatever of the previous one's data was not read; `None` at the end of
    /// the archive (two zero blocks, one, or the end of the stream at a header boundary).
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.skip_rest()?;
        let mut ext = Extensions::default();
        loop {
            let Some(block) = self.header_block()? else { return Ok(None) };
            let h = Header::parse(&block, self.pos - BLOCK as u64)?;
            match h.typeflag {
                b'x' | b'L' | b'K' | b'g' => {
                    let size = h.size;
                    if size > MAX_SPECIAL {
                        return Err(malformed(format!(
                            "an extended header of {size} bytes (over {MAX_SPECIAL}) at byte {}",
                            self.pos - BLOCK as u64
                        )));
                    }
                    let data = self.read_special(h.size)?;
                    match h.typeflag {
                        b'x' => ext.pax.merge(parse_pax_records(&data)?)?,
                        b'L' => ext.long_name = Some(trim_nul(data)),
                        b'K' => ext.long_link = Some(trim_nul(data)),
                        // Global records would apply to every later entry; no layer tool sets one that
                        // matters (Go's archive/tar ignores them too).
                        _ => {}
                    }
                }
                b'S' => {
                    return Err(malformed(format!(
                        "entry {:?} is a GNU sparse file, which kiln does not read",
                        String::from_utf8_lossy(&h.name)
                    )))
                }
                _ => {
                    let entry = h.into_entry(ext)?;
                    let data = match entry.kind {
                        Kind::File | Kind::Other(_) => entry.size,
                        _ => 0,
                    };
                    self.left = data;
                    self.pad = padding(data);
                    self.current = entry.display();
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// The current entry's data (exactly its size; reads past it return 0).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { reader: self }
    }

    /// Bytes of the stream consumed so far; right after [`Reader::next_entry`], where the entry's data
    /// starts.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Unwraps the stream, positioned wherever reading stopped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.left + self.pad;
        if n > 0 {
            let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
            self.pos += copied;
            if copied != n {
                return Err(self.truncated());
            }
            self.left = 0;
            self.pad = 0;
        }
        Ok(())
    }

    fn truncated(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the archive ends inside the data of entry {:?}", self.current),
        )
    }

    /// The next header block, or `None` at the end of the archive.
    fn header_block(&mut self) -> io::Result<Option<[u8; BLOCK]>> {
        if self.done {
            return Ok(None);
        }
        let mut block = [0u8; BLOCK];
        let n = read_full(&mut self.inner, &mut block)?;
        self.pos += n as u64;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        if n < BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside a header at byte {}", self.pos - n as u64),
            ));
        }
        if block.iter().all(|&b| b == 0) {
            // End of archive. The second zero block is not required (Go accepts one too).
            self.done = true;
            return Ok(None);
        }
        Ok(Some(block))
    }

    fn read_special(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut data = Vec::with_capacity(size as usize);
        let n = (&mut self.inner).take(size).read_to_end(&mut data)? as u64;
        self.pos += n;
        if n != size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside an extended header"));
        }
        let pad = padding(size);
        let skipped = io::copy(&mut (&mut self.inner).take(pad), &mut io::sink())?;
        self.pos += skipped;
        if skipped != pad {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside an extended header"));
        }
        Ok(data)
    }
}

impl<R: Read + Seek> Reader<R> {
    /// Like [`Reader::next_entry`], but seeks over the unread data of the previous entry instead of
    /// reading it (indexing a large archive on disk).
    pub fn next_entry_seeking(&mut self) -> io::Result<Option<Entry>> {
        let n = self.left + self.pad;
        if n > 0 {
            let n_signed = i64::try_from(n).map_err(|_| malformed(format!("entry {:?} is too large", self.current)))?;
            self.inner.seek(SeekFrom::Current(n_signed))?;
            self.pos += n;
            self.left = 0;
            self.pad = 0;
        }
        self.next_entry()
    }
}

/// The data of the entry a [`Reader`] is on.
pub struct Data<'a, R> {
    reader: &'a mut Reader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = &mut *self.reader;
        if r.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(r.left).unwrap_or(usize::MAX));
        let n = r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(r.truncated());
        }
        r.left -= n as u64;
        r.pos += n as u64;
        Ok(n)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn malformed(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed tar archive: {msg}"))
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

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
struct Header {
    name: Vec<u8>,
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    link: Vec<u8>,
    dev: (u32, u32),
}

impl Header {
    fn parse(b: &[u8; BLOCK], at: u64) -> io::Result<Header> {
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

    fn into_entry(self, ext: Extensions) -> io::Result<Entry> {
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
struct Extensions {
    pax: Pax,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// The PAX records kiln understands.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    size: Option<u64>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Pax {
    fn merge(&mut self, records: Vec<(String, Vec<u8>)>) -> io::Result<()> {
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
fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
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

#[cfg(test)]
mod tests;
