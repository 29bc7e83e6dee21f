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

mod header;

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

use crate::tarfmt::{parse_pax_records, EntryKind, EntryMeta};
use header::{Extensions, Header};

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

#[cfg(test)]
mod tests;
