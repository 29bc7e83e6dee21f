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
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        // Mildly compressible, not trivially so.
        (0..200_000u32).map(|i| ((i * 7919) % 97) as u8 ^ (i >> 11) as u8).collect()
    }

    fn compress_with(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = encoder(c, Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decompress_all(bytes: Vec<u8>) -> (Format, Vec<u8>) {
        let (f, mut r) = decompress(io::Cursor::new(bytes)).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        (f, out)
    }

    #[test]
    fn every_compression_round_trips() {
        let data = sample();
        for (c, f) in
            [(Compression::None, Format::None), (Compression::Gzip, Format::Gzip), (Compression::Zstd, Format::Zstd)]
        {
            let blob = compress_with(c, &data);
            if c != Compression::None {
                assert!(blob.len() < data.len(), "{c:?} did not compress");
            }
            assert_eq!(detect(&blob), f);
            let (got_f, out) = decompress_all(blob);
            assert_eq!(got_f, f);
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[test]
    fn encoders_are_deterministic() {
        let data = sample();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(compress_with(c, &data), compress_with(c, &data), "{c:?}");
        }
    }

    /// Compresses with an explicit level and thread count, in uneven writes.
    fn compress_threads(c: Compression, level: Option<u32>, threads: usize, data: &[u8]) -> Vec<u8> {
        let mut e = encoder_threads(c, level, threads, Vec::new()).unwrap();
        for piece in data.chunks(100_003) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    /// Several MiB, so zstd's workers get more than one job and gzip many blocks.
    fn big_sample() -> Vec<u8> {
        let mut out = Vec::with_capacity(12 << 20);
        let mut x = 88172645463325252u64;
        while out.len() < 12 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Runs of words with random stretches between them.
            if x.is_multiple_of(3) {
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                out.extend_from_slice(format!("entry {} of layer {}\n", x % 5000, x % 7).as_bytes());
            }
        }
        out
    }

    #[test]
    fn multithreaded_output_does_not_depend_on_threads() {
        let data = big_sample();
        for c in [Compression::Gzip, Compression::Zstd] {
            let one = compress_threads(c, None, 1, &data);
            assert!(one.len() < data.len() / 2, "{c:?} did not compress");
            let (_, out) = decompress_all(one.clone());
            assert!(out == data, "{c:?} round trip");
            for threads in [2, 3] {
                assert!(compress_threads(c, None, threads, &data) == one, "{c:?} on {threads} threads");
            }
        }
    }

    #[test]
    fn levels_are_used_and_checked() {
        // zstd -19 is slow in a debug build: 2 MiB is enough to tell levels apart.
        let data = &big_sample()[..2 << 20];
        for (c, low, high) in [(Compression::Gzip, 1, 9), (Compression::Zstd, 1, 19)] {
            let fast = compress_threads(c, Some(low), 2, data);
            let small = compress_threads(c, Some(high), 2, data);
            assert!(
                small.len() < fast.len(),
                "{c:?}: level {high} gave {} bytes, level {low} {}",
                small.len(),
                fast.len()
            );
            for blob in [fast, small] {
                assert!(decompress_all(blob).1 == data, "{c:?}");
            }
            for bad in [0, high + 1] {
                let err = c.check_level(bad).unwrap_err();
                assert!(err.to_string().contains(&format!("from {low} to {high}")), "{err}");
                let err = encoder_with(c, Some(bad), Vec::new()).err().expect("bad level accepted");
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            }
            assert!(c.check_level(low).is_ok() && c.check_level(high).is_ok());
        }
        assert_eq!(Compression::None.check_level(1), Err(LevelError::Uncompressed));
        assert!(encoder_with(Compression::None, Some(1), Vec::new()).is_err());
    }

    #[test]
    fn empty_input_round_trips() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let (_, out) = decompress_all(compress_with(c, b""));
            assert!(out.is_empty(), "{c:?}");
        }
    }

    #[test]
    fn crate_made_xz_and_bzip2_are_detected_and_read() {
        let data = sample();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&data).unwrap();
        let xz = xz.finish().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&data).unwrap();
        let bz = bz.finish().unwrap();
        assert_eq!(detect(&xz), Format::Xz);
        assert_eq!(detect(&bz), Format::Bzip2);
        assert_eq!(decompress_all(xz), (Format::Xz, data.clone()));
        assert_eq!(decompress_all(bz), (Format::Bzip2, data));
    }

    #[test]
    fn concatenated_streams_are_read_whole() {
        let mut gz = compress_with(Compression::Gzip, b"hello ");
        gz.extend(compress_with(Compression::Gzip, b"world"));
        assert_eq!(decompress_all(gz).1, b"hello world");
        let mut zs = compress_with(Compression::Zstd, b"hello ");
        zs.extend(compress_with(Compression::Zstd, b"world"));
        assert_eq!(decompress_all(zs).1, b"hello world");
    }

    #[test]
    fn detect_plain_and_short_inputs() {
        assert_eq!(detect(b""), Format::None);
        assert_eq!(detect(&[0x1f]), Format::None);
        assert_eq!(detect(&[0x1f, 0x8b]), Format::None, "gzip needs the deflate method byte too");
        assert_eq!(detect(b"BZ"), Format::None);
        assert_eq!(detect(b"hello world"), Format::None);
        assert_eq!(detect(&[0x5e, 0x2a, 0x4d, 0x18, 0, 0, 0, 0]), Format::Zstd, "skippable frame");
        // Short plain input passes through untouched.
        assert_eq!(decompress_all(b"ab".to_vec()), (Format::None, b"ab".to_vec()));
        assert_eq!(decompress_all(Vec::new()), (Format::None, Vec::new()));
    }

    #[test]
    fn corrupt_stream_is_an_error_not_a_panic() {
        let mut blob = compress_with(Compression::Gzip, &sample());
        let mid = blob.len() / 2;
        blob.truncate(mid);
        let (_, mut r) = decompress(io::Cursor::new(blob)).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }

    /// Runs a command-line compressor on `data` if it is installed; None when it is not.
    fn cli_compress(tool: &str, data: &[u8]) -> Option<Vec<u8>> {
        let which = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().ok()?;
        if !which.status.success() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, data).unwrap();
        let out = Command::new(tool).arg("-c").arg(&input).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "{tool} failed");
        Some(out.stdout)
    }

    #[test]
    fn command_line_tools_output_is_detected_and_read() {
        let data = sample();
        let mut seen = 0;
        for (tool, f) in [("gzip", Format::Gzip), ("xz", Format::Xz), ("bzip2", Format::Bzip2), ("zstd", Format::Zstd)]
        {
            let Some(blob) = cli_compress(tool, &data) else {
                eprintln!("{tool} not installed; skipped");
                continue;
            };
            seen += 1;
            assert_eq!(detect(&blob), f, "{tool}");
            assert_eq!(decompress_all(blob), (f, data.clone()), "{tool}");
        }
        // Our own gzip and zstd output must be readable by the real tools.
        for (tool, c) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
            if !Path::new("/usr/bin").join(tool).exists() {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("blob");
            std::fs::write(&file, compress_with(c, &data)).unwrap();
            let out = Command::new(tool).args(["-d", "-c"]).arg(&file).output().unwrap();
            assert!(out.status.success(), "{tool} -d rejected our output");
            assert_eq!(out.stdout, data, "{tool}");
        }
        eprintln!("{seen} command-line compressors checked");
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn looks_like_tar_accepts_tar_headers() {
        assert!(looks_like_tar(&tar_of(&[("a.txt", b"hi")])));
        let mut gnu = tar::Header::new_gnu();
        gnu.set_path("x").unwrap();
        gnu.set_cksum();
        assert!(looks_like_tar(gnu.as_bytes()));
        let mut old = tar::Header::new_old();
        old.set_path("x").unwrap();
        old.set_cksum();
        assert!(looks_like_tar(old.as_bytes()), "v7 header without magic");
    }

    #[test]
    fn looks_like_tar_rejects_other_bytes() {
        assert!(!looks_like_tar(b""));
        assert!(!looks_like_tar(&[0u8; 1024]), "end-of-archive blocks are not a header");
        let text = "just some text in a file that is not an archive\n".repeat(20);
        assert!(!looks_like_tar(text.as_bytes()));
        // Deterministic pseudo-random bytes (xorshift).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(!looks_like_tar(&random));
        let mut bad = tar_of(&[("a.txt", b"hi")]);
        bad[0] ^= 1;
        assert!(!looks_like_tar(&bad), "checksum must match");
        assert!(!looks_like_tar(&tar_of(&[("a.txt", b"hi")])[..511]), "short header");
    }

    #[test]
    fn is_archive_decompresses_first() {
        let tar = tar_of(&[("a.txt", b"hello")]);
        assert!(is_archive(io::Cursor::new(tar.clone())).unwrap());
        for c in [Compression::Gzip, Compression::Zstd] {
            assert!(is_archive(io::Cursor::new(compress_with(c, &tar))).unwrap(), "{c:?}");
            let text = compress_with(c, b"not a tar at all");
            assert!(!is_archive(io::Cursor::new(text)).unwrap(), "{c:?}");
        }
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&tar).unwrap();
        assert!(is_archive(io::Cursor::new(bz.finish().unwrap())).unwrap());
        assert!(!is_archive(io::Cursor::new(b"plain text".to_vec())).unwrap());
        assert!(!is_archive(io::Cursor::new(Vec::new())).unwrap());
        // A truncated gzip member looks compressed but is no archive.
        let mut broken = compress_with(Compression::Gzip, &tar);
        broken.truncate(12);
        assert!(!is_archive(io::Cursor::new(broken)).unwrap());
    }

    #[test]
    fn looks_like_tar_on_real_gnu_tar_output() {
        if !Path::new("/usr/bin/tar").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"content").unwrap();
        let out = Command::new("tar").arg("-C").arg(dir.path()).args(["-cf", "-", "f"]).output().unwrap();
        assert!(out.status.success());
        assert!(looks_like_tar(&out.stdout));
        // After decompression, as ADD does.
        let gz = compress_with(Compression::Gzip, &out.stdout);
        assert!(!looks_like_tar(&gz));
        let (_, mut r) = decompress(io::Cursor::new(gz)).unwrap();
        let mut head = vec![0u8; 512];
        r.read_exact(&mut head).unwrap();
        assert!(looks_like_tar(&head));
    }
}
