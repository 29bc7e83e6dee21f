//! Reading a layer blob so that what comes out can be trusted: decompressed, hashed, and read to the very
//! end of the compressed stream.
//!
//! A tar reader stops at the end-of-archive blocks, so anything that only reading further would reveal goes
//! unnoticed: the gzip trailer (CRC32 and length), zstd's content checksum, a cut-off last member, bytes
//! appended after the stream. [`LayerReader::finish`] drains the rest of the stream through the decoder (the
//! decoders check those trailers when they reach the end of their input), refuses anything left after it,
//! and only then hands back the sha256 of the uncompressed bytes, which is what an image config's
//! `rootfs.diff_ids` promises.

use std::io::{self, BufReader, Read};

use sha2::{Digest, Sha256};

use crate::compress::{detect, peek, Format, Peeked, MAGIC_LEN};

/// Why a layer stream cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The compressed bytes themselves could not be read (disk or network).
    #[error("read the layer blob")]
    Read(#[source] io::Error),
    /// The decoder refused the stream: bad data, a wrong checksum or length, or a stream cut short.
    #[error("the layer's {} stream is corrupt or cut short", format_name(*.format))]
    Corrupt {
        format: Format,
        #[source]
        source: io::Error,
    },
    /// Bytes follow the end of the compressed stream.
    #[error("the layer blob has data after the end of its {} stream", format_name(*.format))]
    Trailing { format: Format },
    /// The uncompressed content is not what the image config says it is.
    #[error("the layer's content has digest {actual}, but the image config lists its diff_id as {expected}")]
    DiffId { expected: String, actual: String },
}

/// The name a user knows a compression format by.
pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::None => "tar",
        Format::Gzip => "gzip",
        Format::Xz => "xz",
        Format::Bzip2 => "bzip2",
        Format::Zstd => "zstd",
    }
}

/// The source stream, noting whether it failed, so that a decoder's error can be told from a failing disk
/// or connection underneath it.
struct Source<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed = true;
            }
        })
    }
}

enum Decoder<R: Read> {
    Plain(Peeked<Source<R>>),
    Gzip(flate2::read::MultiGzDecoder<Peeked<Source<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Peeked<Source<R>>>>),
    Xz(liblzma::read::XzDecoder<Peeked<Source<R>>>),
    Bzip2(bzip2::read::MultiBzDecoder<Peeked<Source<R>>>),
}

impl<R: Read> Decoder<R> {
    /// The compressed stream after whatever the decoder has taken from it.
    fn rest(&mut self) -> &mut dyn Read {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.get_mut(),
            // Through the decoder's buffer, which may hold bytes it has not used.
            Decoder::Zstd(d) => d.get_mut(),
            Decoder::Xz(d) => d.get_mut(),
            Decoder::Bzip2(d) => d.get_mut(),
        }
    }

    fn source(&self) -> &Source<R> {
        match self {
            Decoder::Plain(r) => r.get_ref().1,
            Decoder::Gzip(d) => d.get_ref().get_ref().1,
            Decoder::Zstd(d) => d.get_ref().get_ref().get_ref().1,
            Decoder::Xz(d) => d.get_ref().get_ref().1,
            Decoder::Bzip2(d) => d.get_ref().get_ref().1,
        }
    }

    fn into_inner(self) -> R {
        let peeked = match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish().into_inner(),
            Decoder::Xz(d) => d.into_inner(),
            Decoder::Bzip2(d) => d.into_inner(),
        };
        peeked.into_inner().1.inner
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Xz(d) => d.read(buf),
            Decoder::Bzip2(d) => d.read(buf),
        }
    }
}

/// A layer blob's uncompressed bytes (a tar), hashed as they are read. Read what you need (e.g. apply the
/// tar), then call [`LayerReader::finish`] or [`LayerReader::finish_expecting`]: until then nothing about
/// the stream has been verified.
///
/// Compression is told by magic bytes, as in [`crate::compress::decompress`]; concatenated gzip, zstd, xz
/// and bzip2 streams are read whole, as the command-line tools and docker read them.
pub struct LayerReader<R: Read> {
    decoder: Decoder<R>,
    format: Format,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> LayerReader<R> {
    pub fn new(blob: R) -> Result<LayerReader<R>, VerifyError> {
        let (head, stream) = peek(Source { inner: blob, failed: false }, MAGIC_LEN).map_err(VerifyError::Read)?;
        let format = detect(&head);
        let corrupt = |source| VerifyError::Corrupt { format, source };
        let decoder = match format {
            Format::None => Decoder::Plain(stream),
            Format::Gzip => Decoder::Gzip(flate2::read::MultiGzDecoder::new(stream)),
            Format::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::new(stream).map_err(corrupt)?),
            Format::Xz => Decoder::Xz(liblzma::read::XzDecoder::new_multi_decoder(stream)),
            Format::Bzip2 => Decoder::Bzip2(bzip2::read::MultiBzDecoder::new(stream)),
        };
        Ok(LayerReader { decoder, format, hasher: Sha256::new(), bytes: 0 })
    }

    /// The compression the blob's first bytes announced.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Uncompressed bytes read so far.
    pub fn uncompressed_bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads the rest of the stream to its end, checking every trailer on the way, and refuses any byte
    /// after the compressed stream. Returns the diff_id (`sha256:<hex>` of all uncompressed bytes) and the
    /// source reader, positioned at its end.
    pub fn finish(self) -> Result<(String, R), VerifyError> {
        self.finish_counted().map(|(diff_id, _, inner)| (diff_id, inner))
    }

    /// [`LayerReader::finish`], also returning how many uncompressed bytes the stream held.
    pub fn finish_counted(mut self) -> Result<(String, u64, R), VerifyError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.classify(e)),
            }
        }
        // Every decoder above reads its input to the end before it reports the end of the data; a byte that
        // is still there means the decoder stopped early, and whatever it is, it was not verified.
        let mut probe = [0u8; 1];
        loop {
            match self.decoder.rest().read(&mut probe) {
                Ok(0) => break,
                Ok(_) => return Err(VerifyError::Trailing { format: self.format }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(VerifyError::Read(e)),
            }
        }
        let diff_id = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        Ok((diff_id, self.bytes, self.decoder.into_inner()))
    }

    /// [`LayerReader::finish`], then checks the diff_id against `expected`.
    pub fn finish_expecting(self, expected: &str) -> Result<R, VerifyError> {
        self.finish_expecting_counted(expected).map(|(_, inner)| inner)
    }

    /// [`LayerReader::finish_expecting`], also returning the uncompressed size.
    pub fn finish_expecting_counted(self, expected: &str) -> Result<(u64, R), VerifyError> {
        let (actual, bytes, inner) = self.finish_counted()?;
        if actual != expected {
            return Err(VerifyError::DiffId { expected: expected.to_string(), actual });
        }
        Ok((bytes, inner))
    }

    /// A read error is the source's when the source failed, else the decoder's verdict on the data.
    fn classify(&self, e: io::Error) -> VerifyError {
        if self.decoder.source().failed {
            VerifyError::Read(e)
        } else {
            VerifyError::Corrupt { format: self.format, source: e }
        }
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads a whole layer blob and checks that it ends cleanly and that its uncompressed content hashes to
/// `expected` (the image config's diff_id).
pub fn verify_layer<R: Read>(blob: R, expected: &str) -> Result<R, VerifyError> {
    LayerReader::new(blob)?.finish_expecting(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{encoder, Compression};
    use crate::digest::sha256_digest;
    use std::io::Write;

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..20u32 {
            let data: Vec<u8> = (0..5000u32).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("dir/file{i}"), &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = encoder(c, Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd_with_checksum(data: &[u8]) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn verify(blob: &[u8], expected: &str) -> Result<(), VerifyError> {
        verify_layer(io::Cursor::new(blob.to_vec()), expected).map(|_| ())
    }

    /// Reads only the tar (stopping at its end-of-archive blocks, as the applier does), then finishes.
    fn tar_then_finish(blob: &[u8], expected: &str) -> Result<Vec<String>, VerifyError> {
        let mut r = LayerReader::new(io::Cursor::new(blob.to_vec()))?;
        let mut names = Vec::new();
        {
            let mut archive = tar::Archive::new(&mut r);
            for e in archive.entries().unwrap() {
                names.push(e.unwrap().path().unwrap().display().to_string());
            }
        }
        r.finish_expecting(expected)?;
        Ok(names)
    }

    #[test]
    fn good_streams_verify_and_give_the_diff_id() {
        let tar = sample_tar();
        let want = sha256_digest(&tar);
        for (blob, format) in [
            (tar.clone(), Format::None),
            (compress(Compression::Gzip, &tar), Format::Gzip),
            (compress(Compression::Zstd, &tar), Format::Zstd),
            (zstd_with_checksum(&tar), Format::Zstd),
        ] {
            let r = LayerReader::new(io::Cursor::new(blob.clone())).unwrap();
            assert_eq!(r.format(), format);
            let (got, _) = r.finish().unwrap();
            assert_eq!(got, want, "{format:?}");
            assert_eq!(tar_then_finish(&blob, &want).unwrap().len(), 20, "{format:?}");
        }
    }

    #[test]
    fn concatenated_members_are_one_layer() {
        let tar = sample_tar();
        let (a, b) = tar.split_at(tar.len() / 3);
        let mut gz = compress(Compression::Gzip, a);
        gz.extend(compress(Compression::Gzip, b));
        verify(&gz, &sha256_digest(&tar)).unwrap();
        let mut zs = compress(Compression::Zstd, a);
        zs.extend(compress(Compression::Zstd, b));
        verify(&zs, &sha256_digest(&tar)).unwrap();
    }

    #[test]
    fn the_tar_alone_does_not_reach_the_gzip_trailer() {
        // The premise of this module: a tar reader stops before the CRC, so a corrupt CRC is only found by
        // finishing the stream.
        let tar = sample_tar();
        let mut gz = compress(Compression::Gzip, &tar);
        let crc = gz.len() - 8;
        gz[crc] ^= 0xff;
        let mut r = LayerReader::new(io::Cursor::new(gz)).unwrap();
        let mut n = 0;
        for entry in tar::Archive::new(&mut r).entries().unwrap() {
            entry.unwrap();
            n += 1;
        }
        assert_eq!(n, 20, "the tar reads fine");
        assert!(matches!(r.finish(), Err(VerifyError::Corrupt { format: Format::Gzip, .. })));
    }

    #[test]
    fn corrupt_gzip_crc_and_length_are_refused() {
        let tar = sample_tar();
        let want = sha256_digest(&tar);
        let gz = compress(Compression::Gzip, &tar);
        for (what, at) in [("crc", gz.len() - 8), ("isize", gz.len() - 4)] {
            let mut bad = gz.clone();
            bad[at] ^= 0x01;
            let err = tar_then_finish(&bad, &want).unwrap_err();
            assert!(matches!(err, VerifyError::Corrupt { format: Format::Gzip, .. }), "{what}: {err:?}");
            assert!(err.to_string().contains("gzip stream is corrupt"), "{err}");
        }
        // A corrupt CRC in the first of two members is caught too.
        let (a, b) = tar.split_at(100);
        let mut first = compress(Compression::Gzip, a);
        let at = first.len() - 8;
        first[at] ^= 1;
        first.extend(compress(Compression::Gzip, b));
        assert!(matches!(verify(&first, &want), Err(VerifyError::Corrupt { .. })));
    }

    #[test]
    fn corrupt_zstd_checksum_is_refused() {
        let tar = sample_tar();
        let mut zs = zstd_with_checksum(&tar);
        let at = zs.len() - 1;
        zs[at] ^= 0x01;
        let err = tar_then_finish(&zs, &sha256_digest(&tar)).unwrap_err();
        assert!(matches!(err, VerifyError::Corrupt { format: Format::Zstd, .. }), "{err:?}");
    }

    #[test]
    fn truncated_streams_are_refused() {
        let tar = sample_tar();
        let want = sha256_digest(&tar);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&tar).unwrap();
        let xz = xz.finish().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&tar).unwrap();
        let bz = bz.finish().unwrap();
        for (name, blob) in [
            ("gzip", compress(Compression::Gzip, &tar)),
            ("zstd", compress(Compression::Zstd, &tar)),
            ("zstd+checksum", zstd_with_checksum(&tar)),
            ("xz", xz),
            ("bzip2", bz),
        ] {
            verify(&blob, &want).unwrap_or_else(|e| panic!("{name} whole: {e}"));
            // Cut in the trailer, in the middle, and just after the header.
            for keep in [blob.len() - 1, blob.len() - 4, blob.len() / 2, 12] {
                let err = verify(&blob[..keep], &want).unwrap_err();
                assert!(matches!(err, VerifyError::Corrupt { .. }), "{name} cut at {keep}: {err:?}");
            }
        }
        // A plain tar cut short is another tar: its digest tells.
        let err = verify(&tar[..tar.len() - 512], &want).unwrap_err();
        assert!(matches!(err, VerifyError::DiffId { .. }), "{err:?}");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let tar = sample_tar();
        let want = sha256_digest(&tar);
        for c in [Compression::Gzip, Compression::Zstd] {
            for tail in [&b"garbage after the stream"[..], &[0u8; 16][..], &[0x1f][..]] {
                let mut blob = compress(c, &tar);
                blob.extend_from_slice(tail);
                let err = verify(&blob, &want).unwrap_err();
                assert!(
                    matches!(err, VerifyError::Corrupt { .. } | VerifyError::Trailing { .. }),
                    "{c:?} + {tail:?}: {err:?}"
                );
            }
        }
        // In a plain tar, trailing bytes are part of the content the diff_id covers.
        let mut plain = tar.clone();
        plain.extend_from_slice(b"x");
        assert!(matches!(verify(&plain, &want), Err(VerifyError::DiffId { .. })));
    }

    #[test]
    fn a_wrong_diff_id_names_both_digests() {
        let tar = sample_tar();
        let other = sha256_digest(b"something else");
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let err = tar_then_finish(&compress(c, &tar), &other).unwrap_err();
            let VerifyError::DiffId { expected, actual } = &err else { panic!("{c:?}: {err:?}") };
            assert_eq!(expected, &other);
            assert_eq!(actual, &sha256_digest(&tar));
            let text = err.to_string();
            assert!(text.contains(&other) && text.contains(&sha256_digest(&tar)), "{text}");
        }
    }

    #[test]
    fn source_failures_are_read_errors() {
        #[derive(Debug)]
        struct Failing(Vec<u8>, usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.1 >= self.0.len() / 2 {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset"));
                }
                let n = buf.len().min(100).min(self.0.len() - self.1);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let tar = sample_tar();
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let blob = compress(c, &tar);
            let err = verify_layer(Failing(blob, 0), &sha256_digest(&tar)).unwrap_err();
            assert!(matches!(err, VerifyError::Read(_)), "{c:?}: {err:?}");
        }
    }

    #[test]
    fn finish_returns_the_source_at_its_end() {
        let tar = sample_tar();
        let blob = compress(Compression::Gzip, &tar);
        let mut src = verify_layer(io::Cursor::new(blob.clone()), &sha256_digest(&tar)).unwrap();
        assert_eq!(src.position(), blob.len() as u64);
        assert_eq!(src.read(&mut [0u8; 1]).unwrap(), 0);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        verify(b"", &sha256_digest(b"")).unwrap();
        verify(b"ab", &sha256_digest(b"ab")).unwrap();
        assert!(matches!(verify(&[0x1f, 0x8b, 0x08], "x"), Err(VerifyError::Corrupt { .. })));
    }
}
