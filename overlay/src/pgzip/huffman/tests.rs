//! The fast encoder against zlib-rs's own Huffman-only deflate: same bytes, on inputs chosen to reach
//! every branch (fixed, dynamic and stored blocks, code lengths past 15 bits, blocks of exactly 16,383
//! literals, empty input).

use super::super::run;
use super::*;
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Strategy};

fn zlib(data: &[u8], last: bool) -> Vec<u8> {
    let config =
        DeflateConfig { level: 6, window_bits: -15, strategy: Strategy::HuffmanOnly, ..DeflateConfig::default() };
    let mut d = Deflate::new_with_config(config);
    let mut out = Vec::new();
    run(&mut d, data, if last { DeflateFlush::Finish } else { DeflateFlush::SyncFlush }, &mut out).unwrap();
    out
}

fn same(h: &mut Huffman, data: &[u8], what: &str) {
    for last in [false, true] {
        let mut ours = vec![7u8; 3]; // appends after what is there
        h.block(data, last, &mut ours);
        assert_eq!(&ours[..3], &[7, 7, 7], "{what}: overwrote the output's start");
        let theirs = zlib(data, last);
        assert!(
            ours[3..] == theirs[..],
            "{what} ({} bytes, last {last}): {} bytes against zlib-rs's {}",
            data.len(),
            ours.len() - 3,
            theirs.len()
        );
    }
}

/// xorshift, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` bytes drawn from `weights` (byte value -> weight).
fn drawn(rng: &mut Rng, weights: &[(u8, u64)], n: usize) -> Vec<u8> {
    let total: u64 = weights.iter().map(|w| w.1).sum();
    (0..n)
        .map(|_| {
            let mut x = rng.below(total);
            for &(b, w) in weights {
                if x < w {
                    return b;
                }
                x -= w;
            }
            unreachable!()
        })
        .collect()
}

fn base64ish(rng: &mut Rng, n: usize) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..n).map(|i| if i % 77 == 76 { b'\n' } else { A[rng.below(64) as usize] }).collect()
}

#[test]
fn same_bytes_as_zlib_rs_at_chunk_edges() {
    let mut h = Huffman::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let text = base64ish(&mut rng, 4 * CHUNK + 100);
    for n in
        [0, 1, 2, 3, 4, 5, 100, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1, 3 * CHUNK - 1, 4 * CHUNK + 100]
    {
        same(&mut h, &text[..n], "base64 text");
    }
    let random: Vec<u8> = (0..3 * CHUNK + 5).map(|_| rng.next() as u8).collect();
    for n in [10, 1000, CHUNK, 3 * CHUNK + 5] {
        same(&mut h, &random[..n], "random bytes (stored blocks)");
    }
    same(&mut h, &vec![b'a'; 2 * CHUNK + 3], "one byte value");
    same(&mut h, &[0, 255].repeat(CHUNK), "two byte values");
}

#[test]
fn same_bytes_as_zlib_rs_on_skewed_and_small_inputs() {
    let mut h = Huffman::new();
    let mut rng = Rng(12345);
    // Fibonacci weights make the optimal code deeper than 15 bits: zlib's overflow repair.
    let mut fib = vec![(0u8, 1u64), (1, 1)];
    for i in 2..40u8 {
        let w = fib[i as usize - 1].1 + fib[i as usize - 2].1;
        fib.push((i, w));
    }
    let mut data = Vec::new();
    for &(b, w) in &fib[..19] {
        data.extend(std::iter::repeat_n(b, w as usize));
    }
    same(&mut h, &data, "Fibonacci counts");
    same(&mut h, &drawn(&mut rng, &fib, 3 * CHUNK), "Fibonacci weights");
    // Short texts: the fixed code wins.
    for n in [1, 10, 50, 120, 300] {
        let t = drawn(&mut rng, &(b'a'..=b'z').map(|b| (b, 1)).collect::<Vec<_>>(), n);
        same(&mut h, &t, "short text");
    }
    // Random alphabets and weight shapes.
    for round in 0..150 {
        let symbols = 1 + rng.below(256) as usize;
        let mut weights: Vec<(u8, u64)> = Vec::new();
        for _ in 0..symbols {
            let b = rng.below(256) as u8;
            let w = match round % 3 {
                0 => 1 + rng.below(10),
                1 => 1 << rng.below(20),
                _ => 1 + rng.below(1000) * rng.below(1000),
            };
            weights.push((b, w));
        }
        let n = match round % 4 {
            0 => rng.below(200) as usize,
            1 => rng.below(CHUNK as u64 + 10) as usize,
            _ => rng.below(3 * CHUNK as u64) as usize,
        };
        same(&mut h, &drawn(&mut rng, &weights, n), &format!("round {round}"));
    }
}
