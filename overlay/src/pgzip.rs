//! Parallel gzip in the manner of pigz: the input is cut into fixed-size blocks, each block is deflated on
//! its own worker thread with the previous 32 KiB of input as preset dictionary and ends with a sync flush
//! (which leaves the bit stream byte-aligned), and the blocks are written in order behind one gzip header,
//! followed by the CRC-32 (combined from the blocks' CRCs) and length of the whole input. The result is one
//! ordinary gzip member that every gzip reader accepts.
//!
//! Determinism: a block's bytes depend only on its own input, the 32 KiB before it and whether it is the
//! last one, never on the number of threads or on timing, so the same input always gives the same blob.
//!
//! Incompressible blocks (random or already-compressed data) skip deflate altogether and are written as
//! stored blocks, which costs about a copy; see [`looks_incompressible`].

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver};

use zlib_rs::{Deflate, DeflateConfig, DeflateError, DeflateFlush, Status, Strategy};

mod huffman;
mod pool;
mod repeats;

use self::pool::{Done, Job, Pool};

/// Input per block. pigz uses 128 KiB; a larger block loses less to the per-block Huffman tables and sync
/// markers (within 0.1 % of single-stream gzip at this size, see compress.rs) while a few blocks per thread
/// still bound memory to a few MiB.
pub const BLOCK: usize = 256 * 1024;
/// Deflate's window: the most history a block can refer back to.
const DICT: usize = 32 * 1024;
/// Blocks in flight per worker: one being compressed, one queued, so no worker waits on the writer.
const IN_FLIGHT_PER_THREAD: usize = 2;
/// Below this a block is deflated as is: the incompressibility test needs some bytes to be meaningful.
const MIN_TEST: usize = 4096;
/// The largest stored block deflate allows.
const STORED_MAX: usize = 65535;

/// gzip header: magic, deflate, no flags, mtime 0 (so equal input gives equal bytes), XFL, OS unknown.
fn header(level: u32) -> [u8; 10] {
    // XFL: 2 = maximum compression, 4 = fastest, as gzip(1) writes it.
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// Whether deflate could save next to nothing on `data`: its byte histogram is so close to uniform that
/// Huffman coding gains well under 1 % (chi-square against the uniform distribution below n/16 means a
/// Kullback-Leibler divergence of about 0.005 bits per byte). Long repeats inside such a block (say the same
/// random file twice) are not looked for; they are rare in layers and cost only ratio, never correctness.
/// Integer arithmetic only, so the decision, and with it the output, is the same on every machine.
/// `counts` is the byte histogram of `len` bytes.
fn looks_incompressible(counts: &[u64; 256], len: usize) -> bool {
    if len < MIN_TEST {
        return false;
    }
    let n = len as u128;
    // chi2 = sum((c - n/256)^2 / (n/256)) = sum((256c - n)^2) / (256 n)
    let s: u128 = counts
        .iter()
        .map(|&c| {
            let d = (256 * u128::from(c)).abs_diff(n);
            d * d
        })
        .sum();
    // chi2 < n / 16  <=>  s < 256 n * n / 16
    s < 16 * n * n
}

/// Appends `data` as stored deflate blocks; the last one carries BFINAL when `last`. Starts and ends
/// byte-aligned, as the sync flush before it left the stream.
fn store(data: &[u8], last: bool, out: &mut Vec<u8>) {
    out.reserve(data.len() + 5 * (data.len() / STORED_MAX + 1));
    let mut chunks = data.chunks(STORED_MAX).peekable();
    if chunks.peek().is_none() {
        // No input: a non-final block needs nothing, a final one an empty stored block.
        if last {
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        return;
    }
    while let Some(chunk) = chunks.next() {
        let fin = last && chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(fin));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// How a block is encoded, decided from the block's own bytes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Stored blocks: the data does not compress.
    Stored,
    /// Huffman coding without string matching: matches would save next to nothing (base64, most
    /// non-text binary noise), and looking for them is what makes deflate slow.
    Huffman,
    /// Deflate at the chosen level.
    Deflate,
}

/// Samples per block tried both ways to decide between [`Plan::Huffman`] and [`Plan::Deflate`], their size,
/// and how much of the input before each one is its dictionary.
const SAMPLES: usize = 4;
const SAMPLE: usize = 4 * 1024;
const SAMPLE_HISTORY: usize = 8 * 1024;
/// Blocks shorter than this many bytes per sample are deflated without sampling.
const SAMPLE_SPACING: usize = 4 * SAMPLE_HISTORY;
const _: () = assert!(SAMPLE_HISTORY + SAMPLE <= repeats::MAX_WINDOW);
/// String matching must beat Huffman-only coding on the sample by at least this many percent to be used.
const MATCH_GAIN_PERCENT: usize = 2;
/// The most bits one repeated 4-byte string can save by matching: it lengthens a match by at most 4
/// literals (the match's first 4 bytes count one repeat, each further byte one more), and no literal code
/// is longer than 15 bits.
const BITS_PER_REPEAT: usize = 4 * 15;
/// What a sample's block header may shrink by when matches change its trees, on top of the literals saved.
const HEADER_SLACK_BITS: usize = 160;

/// One worker's deflate states, reused block after block.
struct Deflater {
    /// A fresh matcher for each stream it starts (see [`Deflater::fresh_lz`]).
    lz: Deflate,
    level: i32,
    /// Huffman-only coding; the same bytes as zlib-rs's `Strategy::HuffmanOnly`, faster.
    huff: huffman::Huffman,
    repeats: repeats::Repeats,
    scratch: Vec<u8>,
    /// A sample's history and the sample, contiguous.
    window: Vec<u8>,
}

fn deflate_error(e: DeflateError) -> io::Error {
    io::Error::other(format!("deflate failed: {}", e.as_str()))
}

/// Runs `d` over all of `data` with `flush` (sync or finish), appending to `out`.
fn run(d: &mut Deflate, data: &[u8], flush: DeflateFlush, out: &mut Vec<u8>) -> io::Result<()> {
    let finish = flush == DeflateFlush::Finish;
    let mut consumed = 0;
    loop {
        let len = out.len();
        // Deflate grows incompressible data by a few bytes per 16 KiB at most; start there, grow if needed.
        let room = (data.len() - consumed + (data.len() - consumed) / 64 + 64).max(4096);
        out.resize(len + room, 0);
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d.compress(&data[consumed..], &mut out[len..], flush).map_err(deflate_error)?;
        consumed += (d.total_in() - in0) as usize;
        let written = (d.total_out() - out0) as usize;
        out.truncate(len + written);
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once deflate returns with output space left over.
            Status::Ok | Status::BufError => !finish && consumed == data.len() && written < room,
        };
        if done {
            return Ok(());
        }
    }
}

impl Deflater {
    fn new(level: u32) -> Self {
        let level = level as i32;
        Deflater {
            lz: Self::matcher(level),
            level,
            huff: huffman::Huffman::new(),
            repeats: repeats::Repeats::new(),
            scratch: Vec::new(),
            window: Vec::new(),
        }
    }

    fn matcher(level: i32) -> Deflate {
        Deflate::new_with_config(DeflateConfig {
            level,
            window_bits: -15,
            strategy: Strategy::Default,
            ..DeflateConfig::default()
        })
    }

    /// Starts the matcher afresh. zlib's matcher reads a few bytes past the
    /// end of its input near the end of a stream (they decide between
    /// candidate matches, never what is emitted as data), and a reset keeps
    /// the window of the stream before, so a reused matcher's output depended
    /// on which blocks its worker compressed earlier: the same layer gave
    /// another blob now and then on several threads. A new one starts from
    /// a zeroed window.
    fn fresh_lz(&mut self) {
        self.lz = Self::matcher(self.level);
    }

    #[cfg(test)]
    fn plan(&mut self, dict: &[u8], data: &[u8]) -> io::Result<Plan> {
        let counts = self.huff.count(data);
        self.plan_counted(dict, data, &counts)
    }

    /// The plan for `data`, whose byte histogram is `counts`.
    fn plan_counted(&mut self, dict: &[u8], data: &[u8], counts: &[u64; 256]) -> io::Result<Plan> {
        if looks_incompressible(counts, data.len()) {
            return Ok(Plan::Stored);
        }
        // Level 1 too: its fast matcher codes with fixed Huffman tables, which on base64 gives almost no
        // compression (ratio 0.999 against 0.757 for Huffman-only coding).
        if data.len() < SAMPLES * SAMPLE_SPACING {
            return Ok(Plan::Deflate);
        }
        // Samples spread over the block, each with some of the history before it as dictionary, so one odd
        // stretch (a small image inside a text tar) does not decide for the whole block. Matching is given up
        // only when no sample gains from it.
        let spacing = data.len() / SAMPLES;
        for i in 0..SAMPLES {
            let at = i * spacing;
            let sample = &data[at..at + SAMPLE];
            let history = if i == 0 {
                &dict[dict.len().saturating_sub(SAMPLE_HISTORY)..]
            } else {
                &data[at - SAMPLE_HISTORY..at]
            };
            self.scratch.clear();
            self.huff.block(sample, true, &mut self.scratch);
            let huffman = self.scratch.len();
            // Too few repeats for matching to gain the margin: this sample is no reason to match, and the
            // trial deflate below would say the same at many times the cost.
            self.window.clear();
            self.window.extend_from_slice(history);
            self.window.extend_from_slice(sample);
            let margin = (huffman * 8 * MATCH_GAIN_PERCENT / 100).saturating_sub(HEADER_SLACK_BITS);
            let few = margin.div_ceil(BITS_PER_REPEAT).saturating_sub(1);
            if margin > 0 && self.repeats.count(&self.window, history.len(), few) <= few {
                continue;
            }
            self.scratch.clear();
            self.fresh_lz();
            if !history.is_empty() {
                self.lz.set_dictionary(history).map_err(deflate_error)?;
            }
            run(&mut self.lz, sample, DeflateFlush::Finish, &mut self.scratch)?;
            let matched = self.scratch.len();
            if matched * 100 < huffman * (100 - MATCH_GAIN_PERCENT) {
                return Ok(Plan::Deflate);
            }
        }
        Ok(Plan::Huffman)
    }

    /// Compresses one block into `out` (cleared first) and returns the block's CRC.
    fn block(&mut self, dict: &[u8], data: &[u8], last: bool, out: &mut Vec<u8>) -> io::Result<crc32fast::Hasher> {
        out.clear();
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        let flush = if last { DeflateFlush::Finish } else { DeflateFlush::SyncFlush };
        // One pass counts the bytes for both the plan and Huffman coding (sampling below counts its own).
        let counts = self.huff.count(data);
        let plan = self.plan_counted(dict, data, &counts)?;
        match plan {
            Plan::Stored => store(data, last, out),
            Plan::Huffman => self.huff.block_counted(data, last, out),
            Plan::Deflate => {
                self.fresh_lz();
                if !dict.is_empty() {
                    self.lz.set_dictionary(dict).map_err(deflate_error)?;
                }
                run(&mut self.lz, data, flush, out)?;
            }
        }
        Ok(crc)
    }
}

/// The number of threads compression uses by default: every core this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A gzip writer that compresses blocks on `threads` worker threads. [`ParGzEncoder::finish`] must be
/// called to write the last block and the trailer.
pub struct ParGzEncoder<W: Write> {
    inner: W,
    level: u32,
    threads: usize,
    /// Input not yet handed to a worker.
    buf: Vec<u8>,
    /// The last [`DICT`] bytes of input before `buf`.
    dict: Vec<u8>,
    /// Started on the first full block, so small layers never start threads.
    pool: Option<Pool>,
    /// Results in input order.
    pending: VecDeque<Receiver<io::Result<Done>>>,
    /// Compresses on the caller's thread when there is no pool.
    local: Option<Deflater>,
    /// Buffers back from finished blocks, for the next ones.
    spare: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    /// Input bytes so far, for the trailer's ISIZE.
    total: u64,
    header_written: bool,
}

fn worker_gone() -> io::Error {
    io::Error::other("a gzip compression thread ended unexpectedly")
}

impl<W: Write> ParGzEncoder<W> {
    /// `level` is a deflate level 1–9 (checked by the caller); `threads` at least 1.
    pub fn new(inner: W, level: u32, threads: usize) -> Self {
        ParGzEncoder {
            inner,
            level,
            threads: threads.max(1),
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            pool: None,
            pending: VecDeque::new(),
            local: None,
            spare: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            header_written: false,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&header(self.level))?;
            self.header_written = true;
        }
        Ok(())
    }

    fn take_result(&mut self, res: io::Result<Done>) -> io::Result<()> {
        let done = res?;
        self.crc.combine(&done.crc);
        let written = self.inner.write_all(&done.out);
        self.recycle(done.out);
        self.recycle(done.dict);
        self.recycle(done.data);
        written
    }

    /// Keeps a buffer for reuse; as many as the blocks in flight can need.
    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < 3 * (self.threads * IN_FLIGHT_PER_THREAD + 2) {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// An empty buffer, reused when one is spare.
    fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        self.spare.pop().unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Writes out the oldest result, waiting for it.
    fn drain_one(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let res = rx.recv().map_err(|_| worker_gone())?;
            self.take_result(res)?;
        }
        Ok(())
    }

    /// Compresses `buf` as the next block, on a worker when one is running.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        self.write_header()?;
        let fresh = self.buffer(BLOCK);
        let data = std::mem::replace(&mut self.buf, fresh);
        let dict = std::mem::take(&mut self.dict);
        // The next block's dictionary: the tail of this block, topped up from the older dictionary.
        let mut next = self.buffer(DICT);
        if data.len() < DICT {
            next.extend_from_slice(&dict[dict.len().saturating_sub(DICT - data.len())..]);
        }
        next.extend_from_slice(&data[data.len().saturating_sub(DICT)..]);
        self.dict = next;

        // Workers start with the first full block: a small layer (ended by a flush and the last, empty
        // block, as the tar writer does) is compressed on the caller's thread without starting any.
        let use_pool = self.threads > 1 && (self.pool.is_some() || data.len() == BLOCK);
        if !use_pool {
            let mut out = self.buffer(BLOCK);
            let d = self.local.get_or_insert_with(|| Deflater::new(self.level));
            let res = d.block(&dict, &data, last, &mut out).map(|crc| Done { out, crc, dict, data });
            return self.take_result(res);
        }
        if self.pool.is_none() {
            self.pool = Some(Pool::new(self.threads, self.level)?);
        }
        while self.pending.len() >= self.threads * IN_FLIGHT_PER_THREAD {
            self.drain_one()?;
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let out = self.buffer(BLOCK);
        let jobs = self.pool.as_ref().and_then(|p| p.jobs.as_ref()).ok_or_else(worker_gone)?;
        jobs.send(Job { dict, data, out, last, reply }).map_err(|_| worker_gone())?;
        self.pending.push_back(rx);
        // Write whatever is already done without waiting, so output keeps flowing.
        while let Some(res) = self.pending.front().and_then(|rx| rx.try_recv().ok()) {
            self.pending.pop_front();
            self.take_result(res)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE: the input length modulo 2^32.
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.inner.flush()?;
        self.pool.take();
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.total += n as u64;
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Ends the current block early with a sync flush, so everything written so far reaches the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.submit(false)?;
        }
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
