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
        assert!(small.len() < fast.len(), "{c:?}: level {high} gave {} bytes, level {low} {}", small.len(), fast.len());
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
    for (tool, f) in [("gzip", Format::Gzip), ("xz", Format::Xz), ("bzip2", Format::Bzip2), ("zstd", Format::Zstd)] {
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
