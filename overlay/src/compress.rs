//! Compression: gzip / zstd / none writers for layer blobs, and readers for every format docker's ADD
//! unpacks (gzip, xz, bzip2, zstd), chosen by magic bytes.
//!
//! Writers use every core and give the same bytes for the same input on any machine:
//! - gzip is [`crate::pgzip`]: 256 KiB blocks deflated in parallel (zlib-rs) with the previous 32 KiB as
//!   dictionary, joined into one gzip member; blocks whose byte histogram is near uniform are stored, and
//!   blocks where string matching gains under 2 % on samples are Huffman-coded only (a sample with next to
//!   no repeated 4-byte strings is judged by counting them, without a trial deflate). Default level 6.
//! - zstd uses libzstd's own workers (`zstdmt`) in fixed 4 MiB jobs, level 3 by default.
//!
//! Measured on the 2-core development machine while ~7 other sessions were compiling (load 13–18), with
//! `cargo run --release -p kiln-overlay --example compress_bench -- FILE gzip 0 2 1` and `/usr/bin/time`;
//! "CPU" is user+sys seconds, the figure an idle machine's wall time approaches (divided by the cores):
//!
//! | input                     | kiln gzip -6 (2 threads)          | one-stream flate2 -6 (1 thread) | `gzip -6`             |
//! |---------------------------|-----------------------------------|-------------------------------|-----------------------|
//! | 512 MiB /dev/urandom      | 1135 MB/s median wall, 0.56 s CPU, ratio 1.0001 | 27 MB/s, 8.7 s CPU  | 12.5 s CPU, ratio 1.0002 |
//! | 256 MiB base64 text       | 49 MB/s median wall, 1.8 s CPU, ratio 0.7564    | 16 MB/s, 5.2 s CPU  | 9.6 s CPU, ratio 0.7599  |
//! | 237 MB tar of C headers and docs | 2.5 s CPU, ratio 0.3659           | 2.9 s CPU, ratio 0.3634       | 4.7 s user, ratio 0.3626 |
//!
//! (flate2 there already runs on zlib-rs; kiln's layers used to go through flate2's slower miniz_oxide.)
//! Since then Huffman-only blocks go through pgzip's own encoder (the same bytes, see `pgzip/huffman.rs`):
//! the 256 MiB base64 text takes 0.60 s CPU on one thread instead of 1.8 s.
//! zstd -3 (2 workers): 512 MiB random 1016 MB/s median wall, 256 MiB base64 337 MB/s, ratio 0.7537.
//! A whole `LayerWriter` (file read, tar, two sha256, gzip) streaming 512 MiB of random data: 0.94 s CPU,
//! peak RSS 6.6 MiB (58 MiB with zstd); 256 MiB of base64: 1.8 s CPU, 7.3 MiB. A release `kiln build` of
//! `FROM scratch` + `COPY` of that 512 MiB file into a fresh store (load 6–8): 3.65 s median wall with gzip
//! (1.9 s with `--compression none`), peak RSS 13 MiB (64 MiB with zstd); of the 256 MiB base64 file 5.2 s.

use std::io::{self, Read, Write};

use crate::pgzip::{self, ParGzEncoder};

/// How a layer blob is compressed on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    None,
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    /// The suffix an OCI layer media type carries for this compression (`+gzip`, `+zstd`, none).
    pub fn media_type_suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "+gzip",
            Compression::Zstd => "+zstd",
        }
    }
}

/// zstd's own default; fast enough that compression does not dominate a commit.
const ZSTD_LEVEL: i32 = 3;
/// gzip's own default, which `gzip -6`, docker and buildah use too.
const GZIP_LEVEL: u32 = 6;

/// A `--compression-level` that the chosen compression does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("compression level {level} is out of range for {name}: use a level from {min} to {max}")]
    OutOfRange { name: &'static str, level: u32, min: u32, max: u32 },
    #[error("a compression level was given with --compression none: choose gzip or zstd, or drop the level")]
    Uncompressed,
}

impl Compression {
    /// The levels this compression accepts: gzip 1–9 (deflate's), zstd 1–19 (its regular levels).
    pub fn level_range(self) -> Option<std::ops::RangeInclusive<u32>> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(1..=9),
            Compression::Zstd => Some(1..=19),
        }
    }

    /// The level used when none is given: gzip's 6, zstd's 3; none for no compression.
    pub fn default_level(self) -> Option<u32> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(GZIP_LEVEL),
            Compression::Zstd => Some(ZSTD_LEVEL as u32),
        }
    }

    /// Checks a user's level against [`Compression::level_range`].
    pub fn check_level(self, level: u32) -> Result<(), LevelError> {
        let range = self.level_range().ok_or(LevelError::Uncompressed)?;
        if range.contains(&level) {
            return Ok(());
        }
        let name = match self {
            Compression::Gzip => "gzip",
            _ => "zstd",
        };
        Err(LevelError::OutOfRange { name, level, min: *range.start(), max: *range.end() })
    }
}

/// A compressing writer for one of the [`Compression`] kinds. `finish` must be called: it writes the
/// trailer (gzip CRC, zstd frame end) and hands back the inner writer.
pub enum Encoder<W: Write> {
    None(W),
    /// Boxed: the parallel encoder's state is large next to the other variants.
    Gzip(Box<ParGzEncoder<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// Wraps `w` in the encoder for `c` at its default level, using every core. The output is the same bytes
/// for the same input, whatever the number of cores.
pub fn encoder<W: Write + 'static>(c: Compression, w: W) -> io::Result<Encoder<W>> {
    encoder_with(c, None, w)
}

/// [`encoder`] at `level` (None: the default), which must be in [`Compression::level_range`].
pub fn encoder_with<W: Write + 'static>(c: Compression, level: Option<u32>, w: W) -> io::Result<Encoder<W>> {
    encoder_threads(c, level, pgzip::default_threads(), w)
}

/// [`encoder_with`] on `threads` threads (at least one). The bytes do not depend on `threads`.
pub fn encoder_threads<W: Write + 'static>(
    c: Compression,
    level: Option<u32>,
    threads: usize,
    w: W,
) -> io::Result<Encoder<W>> {
    if let Some(l) = level {
        c.check_level(l).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    Ok(match c {
        Compression::None => Encoder::None(w),
        Compression::Gzip => Encoder::Gzip(Box::new(ParGzEncoder::new(w, level.unwrap_or(GZIP_LEVEL), threads))),
        Compression::Zstd => {
            let level = level.map_or(ZSTD_LEVEL, |l| l as i32);
            let mut e = zstd::stream::write::Encoder::new(w, level)?;
            // Always at least one worker: zstd's output with workers is the same for any number of them,
            // but differs from its single-threaded mode, and the bytes must not depend on the machine.
            e.multithread(zstd_workers(threads))?;
            // zstd's default job is 4 windows (8 MiB at level 3, 32 MiB at 19) and it keeps several per
            // worker: 110 MiB peak RSS on two cores for 512 MiB of random data. 4 MiB jobs measured 58 MiB
            // and a blob within 1 % of `zstd -3`'s (3 MiB: 45 MiB, +2.7 %). Being fixed, the job size also
            // keeps the output the same on every machine.
            e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
            Encoder::Zstd(e)
        }
    })
}

/// Bytes per zstd worker job; see [`encoder_threads`].
const ZSTD_JOB: u32 = 4 << 20;

/// zstd keeps about two jobs of several MiB per worker; past 8 workers memory grows faster than speed.
fn zstd_workers(threads: usize) -> u32 {
    threads.clamp(1, 8) as u32
}

impl<W: Write> Encoder<W> {
    /// Writes any trailer and returns the inner writer, flushed.
    pub fn finish(self) -> io::Result<W> {
        let mut w = match self {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
        };
        w.flush()?;
        Ok(w)
    }

    pub fn get_ref(&self) -> &W {
        match self {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e.get_ref(),
            Encoder::Zstd(e) => e.get_ref(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A stream's compression as told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    None,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b, 0x08];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// zstd skippable frames use magics 0x184D2A50..=0x184D2A5F (little-endian); moby counts them as zstd too.
const ZSTD_SKIPPABLE_BASE: u32 = 0x184d_2a50;
const ZSTD_SKIPPABLE_MASK: u32 = 0xffff_fff0;

/// The most bytes [`detect`] looks at.
pub const MAGIC_LEN: usize = 6;

/// Tells a stream's compression from its first bytes (the same magics moby's `DetectCompression` uses).
pub fn detect(head: &[u8]) -> Format {
    if head.starts_with(GZIP_MAGIC) {
        Format::Gzip
    } else if head.starts_with(XZ_MAGIC) {
        Format::Xz
    } else if head.starts_with(BZIP2_MAGIC) {
        Format::Bzip2
    } else if head.starts_with(ZSTD_MAGIC) || is_zstd_skippable(head) {
        Format::Zstd
    } else {
        Format::None
    }
}

fn is_zstd_skippable(head: &[u8]) -> bool {
    match head.get(..4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & ZSTD_SKIPPABLE_MASK == ZSTD_SKIPPABLE_BASE,
        None => false,
    }
}

/// A stream whose first bytes were already read: those bytes, then the rest.
pub type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads up to `n` bytes from the start of `r` (fewer only at end of stream) and returns them together with
/// a reader that yields the whole stream again, those bytes included.
pub fn peek<R: Read>(mut r: R, n: usize) -> io::Result<(Vec<u8>, Peeked<R>)> {
    let mut head = Vec::with_capacity(n);
    (&mut r).take(n as u64).read_to_end(&mut head)?;
    Ok((head.clone(), io::Cursor::new(head).chain(r)))
}

/// Detects the compression of `r` and returns a reader of its decompressed bytes. Concatenated gzip, bzip2,
/// xz and zstd streams are all read to the end, as the command-line tools do.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<(Format, Box<dyn Read + 'a>)> {
    let (head, stream) = peek(r, MAGIC_LEN)?;
    let format = detect(&head);
    let reader: Box<dyn Read + 'a> = match format {
        Format::None => Box::new(stream),
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(stream)?),
    };
    Ok((format, reader))
}

const TAR_BLOCK: usize = 512;
const CHKSUM_RANGE: std::ops::Range<usize> = 148..156;

/// Whether `head` starts with a tar header block that a tar reader would accept: 512 bytes, not all zero, with
/// a valid checksum (signed or unsigned, as old tars differ). The magic is not required, so v7 archives count,
/// as they do in Go's archive/tar, which docker uses to decide whether ADD unpacks a file.
pub fn looks_like_tar(head: &[u8]) -> bool {
    let Some(block) = head.get(..TAR_BLOCK) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let Some(stored) = parse_octal(&block[CHKSUM_RANGE]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if CHKSUM_RANGE.contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Whether a stream is an archive that ADD unpacks, decided as docker does: decompress it if its magic says
/// so, then see whether a tar header starts it. A stream whose decompression fails is no archive (docker copies
/// it as a file); errors are returned only for reads that fail for other reasons.
pub fn is_archive<R: Read + 'static>(r: R) -> io::Result<bool> {
    let (_, plain) = match decompress(r) {
        Ok(d) => d,
        Err(e) if is_decode_error(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    match peek(plain, TAR_BLOCK) {
        Ok((head, _)) => Ok(looks_like_tar(&head)),
        Err(e) if is_decode_error(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Decoders report corrupt input with these kinds; a failing device or a missing file uses others.
fn is_decode_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
    )
}

/// Parses a tar octal field the way Go's archive/tar does: spaces and NULs trimmed at both ends, empty is 0.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let is_pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !is_pad(b)).unwrap_or(field.len());
    let end = field.iter().rposition(|b| !is_pad(b)).map_or(start, |e| e + 1);
    let digits = &field[start..end];
    if digits.is_empty() {
        return Some(0);
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 8).ok()
}

#[cfg(test)]
mod tests;
