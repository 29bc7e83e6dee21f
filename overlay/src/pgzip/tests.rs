use super::*;
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// xorshift bytes: incompressible, and the same on every run.
fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Text with plenty of repeats, as source code and documentation have.
fn text(n: usize) -> Vec<u8> {
    let words = ["layer ", "kiln ", "overlay ", "digest ", "the ", "of ", "compress ", "block\n", "tar ", "a "];
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0u64;
    while out.len() < n {
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(i >> 60) as usize % words.len()].as_bytes());
        if i.is_multiple_of(7) {
            out.extend_from_slice(format!("{} ", i % 1000).as_bytes());
        }
    }
    out.truncate(n);
    out
}

/// Base64 of random bytes in 76-column lines: no useful matches, but only 65 distinct bytes.
fn base64ish(n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    random(n, 99)
        .iter()
        .enumerate()
        .map(|(i, b)| if i % 77 == 76 { b'\n' } else { ALPHABET[(*b & 63) as usize] })
        .collect()
}

/// Compresses `data` written in pieces of `chunk` bytes.
fn gz(data: &[u8], level: u32, threads: usize, chunk: usize) -> Vec<u8> {
    let mut e = ParGzEncoder::new(Vec::new(), level, threads);
    for piece in data.chunks(chunk.max(1)) {
        e.write_all(piece).unwrap();
    }
    e.finish().unwrap()
}

/// Decompresses with flate2's single-member reader: the blob must be one gzip member whose CRC and ISIZE
/// match (the reader checks both).
fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut r = flate2::read::GzDecoder::new(blob);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    let mut rest = Vec::new();
    r.into_inner().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} bytes after the first member", rest.len());
    out
}

fn trailer(blob: &[u8]) -> (u32, u32) {
    let t = &blob[blob.len() - 8..];
    (u32::from_le_bytes(t[..4].try_into().unwrap()), u32::from_le_bytes(t[4..].try_into().unwrap()))
}

/// Input sizes around the block boundaries, including none at all.
fn sizes() -> Vec<usize> {
    vec![0, 1, 100, DICT, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + 4097]
}

/// Text, then random, then zeros, then base64: every plan in one stream, changing mid-block.
fn mixed() -> Vec<u8> {
    let mut data = text(BLOCK + 1000);
    data.extend(random(2 * BLOCK, 7));
    data.extend(vec![0u8; BLOCK / 2]);
    data.extend(base64ish(2 * BLOCK + 333));
    data.extend(text(BLOCK / 3));
    data
}

#[test]
fn round_trips_around_block_boundaries() {
    for n in sizes() {
        for data in [text(n), random(n, n as u64), base64ish(n)] {
            let blob = gz(&data, 6, 2, 128 * 1024);
            assert_eq!(gunzip(&blob), data, "{n} bytes");
            assert_eq!(trailer(&blob), (crc32fast::hash(&data), n as u32), "{n} bytes");
        }
    }
}

#[test]
fn bytes_do_not_depend_on_threads_or_write_sizes() {
    let data = mixed();
    let reference = gz(&data, 6, 1, 1 << 20);
    assert_eq!(gunzip(&reference), data);
    for (threads, chunk) in [(2, 512), (3, 100_000), (4, 7), (8, BLOCK)] {
        assert!(gz(&data, 6, threads, chunk) == reference, "{threads} threads, {chunk}-byte writes");
    }
    for level in [1, 9] {
        let one = gz(&data, level, 1, 4096);
        assert_eq!(gunzip(&one), data);
        assert!(gz(&data, level, 3, 65536) == one, "level {level}");
    }
}

#[test]
fn every_plan_is_taken_where_it_fits() {
    let mut d = Deflater::new(6);
    assert_eq!(d.plan(&[], &random(BLOCK, 1)).unwrap(), Plan::Stored);
    assert_eq!(d.plan(&[], &base64ish(BLOCK)).unwrap(), Plan::Huffman);
    assert_eq!(d.plan(&[], &text(BLOCK)).unwrap(), Plan::Deflate);
    assert_eq!(d.plan(&[], &vec![0u8; BLOCK]).unwrap(), Plan::Deflate);
    // Text with random stretches: string matching still pays, so the block is deflated.
    let mut patchy = text(BLOCK);
    patchy[BLOCK / 2..BLOCK / 2 + 40_000].copy_from_slice(&random(40_000, 3));
    assert_eq!(d.plan(&[], &patchy).unwrap(), Plan::Deflate);
    // Too short to judge: deflated.
    assert_eq!(d.plan(&[], &random(MIN_TEST - 1, 1)).unwrap(), Plan::Deflate);
}

#[test]
fn random_data_costs_about_its_own_size() {
    let data = random(4 * BLOCK + 5, 11);
    let blob = gz(&data, 6, 2, 65536);
    // Header, trailer, and 5 bytes per stored block of at most 64 KiB: well under 0.1 %.
    let overhead = blob.len() - data.len();
    let stored_blocks = 4 * BLOCK.div_ceil(STORED_MAX) + 1;
    assert!(overhead <= 18 + 5 * stored_blocks + 16, "{overhead} bytes over");
    assert_eq!(gunzip(&blob), data);
}

#[test]
fn ratio_stays_close_to_one_stream_gzip() {
    let single = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap().len()
    };
    for (name, data) in [("text", text(6 * BLOCK)), ("base64", base64ish(6 * BLOCK))] {
        let ours = gz(&data, 6, 2, 65536).len();
        let theirs = single(&data);
        assert!(ours * 100 <= theirs * 103, "{name}: {ours} bytes against {theirs} from one gzip stream");
    }
}

#[test]
fn flush_ends_a_block_and_the_stream_goes_on() {
    let data = mixed();
    let mut e = ParGzEncoder::new(Vec::new(), 6, 2);
    let (a, b) = data.split_at(BLOCK + 12345);
    e.write_all(a).unwrap();
    e.flush().unwrap();
    // Everything written so far can be decompressed from what reached the inner writer.
    let partial = e.get_ref().clone();
    let mut d = flate2::read::GzDecoder::new(&partial[..]);
    let mut got = vec![0u8; a.len()];
    d.read_exact(&mut got).unwrap();
    assert!(got == a);
    e.write_all(b).unwrap();
    e.flush().unwrap();
    e.flush().unwrap();
    let blob = e.finish().unwrap();
    assert!(gunzip(&blob) == data);
}

#[test]
fn stored_blocks_are_well_formed() {
    for (n, last) in
        [(0, true), (0, false), (1, true), (STORED_MAX, true), (STORED_MAX + 1, false), (3 * STORED_MAX, true)]
    {
        let data = random(n, 5);
        let mut out = Vec::new();
        store(&data, last, &mut out);
        if !last {
            // A non-final run needs an end: a final empty stored block.
            store(&[], true, &mut out);
        }
        let mut d = flate2::read::DeflateDecoder::new(&out[..]);
        let mut got = Vec::new();
        d.read_to_end(&mut got).unwrap();
        assert_eq!(got, data, "{n} bytes, last {last}");
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// gzip(1) and python's gzip module, the readers people check blobs with, accept the stream and agree on it.
#[test]
fn gzip_and_python_accept_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed();
    let blob = dir.path().join("blob.gz");
    std::fs::write(&blob, gz(&data, 6, 2, 65536)).unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, &data).unwrap();
    let mut checked = 0;
    if have("gzip") {
        let t = Command::new("gzip").arg("-t").arg(&blob).output().unwrap();
        assert!(t.status.success(), "gzip -t: {}", String::from_utf8_lossy(&t.stderr));
        let d = Command::new("gzip").args(["-d", "-c"]).arg(&blob).output().unwrap();
        assert!(d.status.success() && d.stdout == data, "gzip -d disagrees");
        checked += 1;
    }
    if have("python3") {
        let script = "import gzip,sys; a=gzip.open(sys.argv[1]).read(); b=open(sys.argv[2],'rb').read(); sys.exit(0 if a==b else 3)";
        let out = Command::new("python3").args(["-c", script]).args([&blob, &plain]).output().unwrap();
        assert!(out.status.success(), "python3 gzip: {}", String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    eprintln!("{checked} external gzip readers checked");
    assert!(Path::new(&blob).exists());
}

#[test]
fn dropping_an_unfinished_encoder_stops_its_threads() {
    let data = random(6 * BLOCK, 2);
    let mut e = ParGzEncoder::new(Vec::new(), 6, 3);
    e.write_all(&data).unwrap();
    assert!(e.pool.is_some(), "a full block starts the workers");
    drop(e);
    // Small input never starts them.
    let mut e = ParGzEncoder::new(Vec::new(), 6, 3);
    e.write_all(&data[..1000]).unwrap();
    e.flush().unwrap();
    assert!(e.pool.is_none(), "a flushed small stream needs no workers");
    let blob = e.finish().unwrap();
    assert_eq!(gunzip(&blob), &data[..1000]);
}
