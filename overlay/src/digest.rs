//! sha256 tee reader and writer: a layer's diff_id and blob digest are computed while the bytes stream past,
//! so nothing is read or written twice.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// Formats a finished hash the way OCI names content: `sha256:<lowercase hex>`.
fn format_digest(hasher: &Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.clone().finalize()))
}

/// Returns the OCI digest (`sha256:<hex>`) of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A writer that hashes and counts every byte the inner writer accepted.
pub struct HashingWriter<W: Write> {
    inner: W,
    /// `None`: count only (the caller knows the digest another way).
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Some(Sha256::new()), bytes: 0 }
    }

    /// Counts bytes without hashing them: for a stream whose digest is
    /// already computed elsewhere (an uncompressed layer blob is its tar).
    pub fn counting(inner: W) -> Self {
        HashingWriter { inner, hasher: None, bytes: 0 }
    }

    /// The digest of the bytes written so far; `None` for a counting writer.
    pub fn try_digest(&self) -> Option<String> {
        self.hasher.as_ref().map(format_digest)
    }

    /// The digest of the bytes written so far.
    ///
    /// # Panics
    /// On a [`HashingWriter::counting`] writer, which has none.
    pub fn digest(&self) -> String {
        self.try_digest().expect("digest of a counting-only writer")
    }

    /// How many bytes were written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Hash only what the inner writer took, so a short write followed by a retry is not hashed twice.
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts every byte it hands out.
pub struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// The digest of the bytes read so far.
    pub fn digest(&self) -> String {
        format_digest(&self.hasher)
    }

    /// How many bytes were read so far. Method lookup picks `Read::bytes` for `r.bytes()` on a value, so call
    /// this as `HashingReader::bytes(&r)`, `(&r).bytes()`, or use [`HashingReader::bytes_read`].
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many bytes were read so far (same as [`HashingReader::bytes`], without the name clash).
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha256("abc") from FIPS 180-2, appendix B.1.
    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    // sha256 of the empty string.
    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// A writer that accepts at most `n` bytes per call, to exercise partial writes.
    struct Trickle {
        out: Vec<u8>,
        n: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.n);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writer_known_vectors() {
        let w = HashingWriter::new(Vec::new());
        assert_eq!(w.digest(), EMPTY);
        assert_eq!(w.bytes(), 0);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        assert_eq!(w.digest(), ABC);
        assert_eq!(w.bytes(), 3);
        assert_eq!(w.into_inner(), b"abc");
    }

    #[test]
    fn writer_partial_writes_hash_only_accepted_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut w = HashingWriter::new(Trickle { out: Vec::new(), n: 7 });
        w.write_all(&data).unwrap();
        assert_eq!(w.digest(), sha256_digest(&data));
        assert_eq!(w.bytes(), data.len() as u64);
        assert_eq!(w.into_inner().out, data);
    }

    #[test]
    fn reader_matches_independent_hash() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i ^ (i >> 7)) as u8).collect();
        let mut r = HashingReader::new(&data[..]);
        let mut small = [0u8; 1000];
        let n = r.read(&mut small).unwrap();
        assert_eq!(r.digest(), sha256_digest(&data[..n]));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(HashingReader::bytes(&r), data.len() as u64);
        assert_eq!(r.bytes_read(), data.len() as u64);
        assert_eq!(r.digest(), sha256_digest(&data));
        let mut r = HashingReader::new(&b"abc"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.digest(), ABC);
    }
}
