//! Huffman-only deflate, bit for bit what zlib-rs (and zlib-ng, whose port it is) writes with
//! `Strategy::HuffmanOnly` on a fresh raw stream given a whole block at once, but about four times as fast.
//!
//! Why a second encoder: for base64 and similar text, [`super::Plan::Huffman`] is the plan of nearly every
//! block, and zlib-rs spends about 5 ns per byte on it (a symbol buffer filled one literal at a time, then
//! walked again to emit codes through a general literal/match writer). Here a block's 16,383-byte chunks are
//! counted and coded straight from the input. The output must stay exactly zlib-rs's, so that the blobs
//! kiln exported before stay the blobs it exports now (their digests are remembered and pushed): the tree
//! construction below is zlib's (`trees.c`: heap order with the depth tie-break, bit-length overflow
//! repair, canonical codes, run-length coded code lengths, and the stored / fixed / dynamic choice) as
//! zlib-rs 0.6 has it, restricted to literals, and `tests` compares the two on many inputs.
//!
//! Long because zlib's tree construction is one algorithm that must match zlib's step for step, and reads best
//! whole beside the encoder that uses it.

/// Literals zlib collects before it ends a block: `lit_bufsize - 1` with the default memLevel 8.
const CHUNK: usize = (1 << 14) - 1;
/// Literal/length codes, distance codes, code-length codes.
const L_CODES: usize = 286;
const D_CODES: usize = 30;
const BL_CODES: usize = 19;
const HEAP_SIZE: usize = 2 * L_CODES + 1;
const MAX_BITS: usize = 15;
const MAX_BL_BITS: usize = 7;
const END_BLOCK: usize = 256;
const REP_3_6: usize = 16;
const REPZ_3_10: usize = 17;
const REPZ_11_138: usize = 18;
const EXTRA_BLBITS: [u32; BL_CODES] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7];
const BL_ORDER: [usize; BL_CODES] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// The fixed literal code's length of `n` (RFC 1951, 3.2.6).
fn static_len(n: usize) -> u32 {
    match n {
        0..=143 => 8,
        144..=255 => 9,
        256..=279 => 7,
        _ => 8,
    }
}

/// One Huffman tree being built: zlib's `ct_data` with its two unions taken apart, plus the node depths
/// the heap breaks ties with.
struct Tree {
    freq: Vec<u32>,
    dad: Vec<usize>,
    len: Vec<u32>,
    code: Vec<u32>,
    max_code: usize,
}

impl Tree {
    fn new(size: usize) -> Self {
        Tree { freq: vec![0; size], dad: vec![0; size], len: vec![0; size], code: vec![0; size], max_code: 0 }
    }
}

/// zlib's heap: every entry and depth it reads was written earlier in the same `build_tree`, so one heap
/// serves every tree without being cleared.
struct Heap {
    heap: [usize; HEAP_SIZE],
    len: usize,
    max: usize,
    depth: [u8; HEAP_SIZE],
}

impl Heap {
    fn key(&self, t: &Tree, i: usize) -> u32 {
        (t.freq[i] << 8) | u32::from(self.depth[i])
    }

    fn downheap(&mut self, t: &Tree, mut k: usize) {
        let v = self.heap[k];
        let v_key = self.key(t, v);
        let mut j = k << 1;
        while j <= self.len {
            let mut j_key = self.key(t, self.heap[j]);
            if j < self.len {
                let j1_key = self.key(t, self.heap[j + 1]);
                if j1_key <= j_key {
                    j += 1;
                    j_key = j1_key;
                }
            }
            if v_key <= j_key {
                break;
            }
            self.heap[k] = self.heap[j];
            k = j;
            j <<= 1;
        }
        self.heap[k] = v;
    }
}

/// How a tree is built: `elems` leaves, codes at most `max_length` bits, extra bits per leaf (`extra`,
/// from leaf `base` on), and whether the fixed literal code's lengths are summed alongside.
struct Desc {
    elems: usize,
    max_length: u32,
    extra: &'static [u32],
    base: usize,
    fixed: Option<fn(usize) -> u32>,
}

const L_DESC: Desc =
    Desc { elems: L_CODES, max_length: MAX_BITS as u32, extra: &[], base: L_CODES, fixed: Some(static_len) };
/// Distance codes: only the two forced ones ever occur here, and codes 0 and 1 have no extra bits.
const D_DESC: Desc =
    Desc { elems: D_CODES, max_length: MAX_BITS as u32, extra: &[], base: D_CODES, fixed: Some(|_| 5) };
const BL_DESC: Desc =
    Desc { elems: BL_CODES, max_length: MAX_BL_BITS as u32, extra: &EXTRA_BLBITS, base: 0, fixed: None };

/// Bit lengths of the dynamic block (`opt`) and of the fixed-code block (`fixed`), as zlib sums them.
#[derive(Default)]
struct Lens {
    opt: i64,
    fixed: i64,
}

/// zlib's `build_tree`: lengths and codes of `t` from its frequencies.
fn build_tree(t: &mut Tree, d: &Desc, h: &mut Heap, lens: &mut Lens) {
    h.len = 0;
    h.max = HEAP_SIZE;
    let mut max_code: isize = -1;
    for n in 0..d.elems {
        if t.freq[n] > 0 {
            h.len += 1;
            h.heap[h.len] = n;
            max_code = n as isize;
            h.depth[n] = 0;
        } else {
            t.len[n] = 0;
        }
    }
    // At least two codes, so every code is at least one bit long.
    while h.len < 2 {
        h.len += 1;
        let node = if max_code < 2 {
            max_code += 1;
            max_code as usize
        } else {
            0
        };
        h.heap[h.len] = node;
        t.freq[node] = 1;
        h.depth[node] = 0;
        lens.opt -= 1;
        if let Some(fixed) = d.fixed {
            lens.fixed -= i64::from(fixed(node));
        }
    }
    let max_code = max_code as usize;
    t.max_code = max_code;
    let mut n = h.len / 2;
    while n >= 1 {
        h.downheap(t, n);
        n -= 1;
    }
    // Combine the two least frequent nodes until one is left.
    let mut node = d.elems;
    loop {
        let n = h.heap[1];
        h.heap[1] = h.heap[h.len];
        h.len -= 1;
        h.downheap(t, 1);
        let m = h.heap[1];
        h.max -= 1;
        h.heap[h.max] = n;
        h.max -= 1;
        h.heap[h.max] = m;
        t.freq[node] = t.freq[n] + t.freq[m];
        h.depth[node] = h.depth[n].max(h.depth[m]) + 1;
        t.dad[n] = node;
        t.dad[m] = node;
        h.heap[1] = node;
        node += 1;
        h.downheap(t, 1);
        if h.len < 2 {
            break;
        }
    }
    h.max -= 1;
    h.heap[h.max] = h.heap[1];
    let bl_count = gen_bitlen(t, d, h, lens);
    gen_codes(t, max_code, &bl_count);
}

fn gen_bitlen(t: &mut Tree, d: &Desc, h: &Heap, lens: &mut Lens) -> [u32; MAX_BITS + 1] {
    let mut bl_count = [0u32; MAX_BITS + 1];
    let max_code = t.max_code;
    t.len[h.heap[h.max]] = 0;
    let mut overflow = 0i32;
    for &n in &h.heap[h.max + 1..HEAP_SIZE] {
        let mut bits = t.len[t.dad[n]] + 1;
        if bits > d.max_length {
            bits = d.max_length;
            overflow += 1;
        }
        t.len[n] = bits;
        if n > max_code {
            continue;
        }
        bl_count[bits as usize] += 1;
        let xbits = if n >= d.base { d.extra[n - d.base] } else { 0 };
        let f = i64::from(t.freq[n]);
        lens.opt += f * i64::from(bits + xbits);
        if let Some(fixed) = d.fixed {
            lens.fixed += f * i64::from(fixed(n) + xbits);
        }
    }
    if overflow == 0 {
        return bl_count;
    }
    let max_length = d.max_length as usize;
    loop {
        let mut bits = max_length - 1;
        while bl_count[bits] == 0 {
            bits -= 1;
        }
        bl_count[bits] -= 1;
        bl_count[bits + 1] += 2;
        bl_count[max_length] -= 1;
        overflow -= 2;
        if overflow <= 0 {
            break;
        }
    }
    let mut k = HEAP_SIZE;
    for bits in (1..=d.max_length).rev() {
        let mut n = bl_count[bits as usize];
        while n != 0 {
            k -= 1;
            let m = h.heap[k];
            if m > max_code {
                continue;
            }
            if t.len[m] != bits {
                lens.opt += i64::from(bits) * i64::from(t.freq[m]);
                lens.opt -= i64::from(t.len[m]) * i64::from(t.freq[m]);
                t.len[m] = bits;
            }
            n -= 1;
        }
    }
    bl_count
}

/// Canonical codes from the lengths, bit-reversed for deflate's LSB-first order.
fn gen_codes(t: &mut Tree, max_code: usize, bl_count: &[u32; MAX_BITS + 1]) {
    let mut next_code = [0u32; MAX_BITS + 1];
    let mut code = 0u32;
    for bits in 1..=MAX_BITS {
        code = (code + bl_count[bits - 1]) << 1;
        next_code[bits] = code;
    }
    for n in 0..=max_code {
        let len = t.len[n];
        if len == 0 {
            continue;
        }
        t.code[n] = reverse(next_code[len as usize], len);
        next_code[len as usize] += 1;
    }
}

fn reverse(code: u32, len: u32) -> u32 {
    (code as u16).reverse_bits() as u32 >> (16 - len)
}

/// The run-length coding of code lengths (zlib's `scan_tree` and `send_tree` walk the same way): calls
/// `emit(symbol, extra bits value, extra bit count)` for each code-length symbol.
fn walk_tree(len: &[u32], max_code: usize, mut emit: impl FnMut(usize, u32, u32)) {
    let mut prevlen: i64 = -1;
    let mut nextlen = len[0];
    let mut count = 0u32;
    let (mut max_count, mut min_count) = if nextlen == 0 { (138, 3) } else { (7, 4) };
    for n in 0..=max_code {
        let curlen = nextlen;
        // Past max_code: zlib's guard, a length no code has.
        nextlen = if n < max_code { len[n + 1] } else { u32::MAX };
        count += 1;
        if count < max_count && curlen == nextlen {
            continue;
        } else if count < min_count {
            for _ in 0..count {
                emit(curlen as usize, 0, 0);
            }
        } else if curlen != 0 {
            if i64::from(curlen) != prevlen {
                emit(curlen as usize, 0, 0);
                count -= 1;
            }
            emit(REP_3_6, count - 3, 2);
        } else if count <= 10 {
            emit(REPZ_3_10, count - 3, 3);
        } else {
            emit(REPZ_11_138, count - 11, 7);
        }
        count = 0;
        prevlen = i64::from(curlen);
        (max_count, min_count) = if nextlen == 0 {
            (138, 3)
        } else if curlen == nextlen {
            (6, 3)
        } else {
            (7, 4)
        };
    }
}

/// An LSB-first bit writer into a byte vector that always has 8 bytes of room past `pos`.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    pos: usize,
    buf: u64,
    n: u32,
}

impl Bits<'_> {
    /// Room for `bytes` more output.
    fn reserve(&mut self, bytes: usize) {
        let want = self.pos + bytes + 16;
        if self.out.len() < want {
            self.out.resize(want, 0);
        }
    }

    /// Moves whole bytes from `buf` out; leaves at most 7 bits.
    #[inline(always)]
    fn spill(&mut self) {
        self.out[self.pos..self.pos + 8].copy_from_slice(&self.buf.to_le_bytes());
        let bytes = self.n >> 3;
        self.pos += bytes as usize;
        // bytes <= 7 here (n < 64), so the shift is in range.
        self.buf >>= bytes * 8;
        self.n &= 7;
    }

    /// At most 32 bits at a time.
    #[inline(always)]
    fn send(&mut self, val: u32, len: u32) {
        self.buf |= u64::from(val) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.spill();
        }
    }

    /// Pads to a byte boundary with zero bits.
    fn align(&mut self) {
        self.spill();
        if self.n > 0 {
            self.out[self.pos] = self.buf as u8;
            self.pos += 1;
            self.buf = 0;
            self.n = 0;
        }
    }

    fn bytes(&mut self, data: &[u8]) {
        debug_assert_eq!(self.n, 0);
        self.reserve(data.len());
        self.out[self.pos..self.pos + data.len()].copy_from_slice(data);
        self.pos += data.len();
    }

    /// A stored block's header (after the 3 block bits) and its data.
    fn stored(&mut self, data: &[u8], last: bool) {
        self.send(u32::from(last), 3);
        self.align();
        let len = data.len() as u16;
        self.bytes(&len.to_le_bytes());
        self.bytes(&(!len).to_le_bytes());
        self.bytes(data);
    }

    /// Codes every byte of `data` with `table` (code << 8 | length, lengths up to 15 bits).
    fn literals(&mut self, data: &[u8], table: &[u32; 256]) {
        self.reserve(data.len() * 2);
        self.spill();
        // As many codes between spills as fit in the 64-bit buffer next to the up to 7 bits a spill leaves.
        let longest = table.iter().map(|e| e & 0xff).max().unwrap_or(15);
        match longest {
            0..=8 => self.literals_by::<7>(data, table),
            9 => self.literals_by::<6>(data, table),
            10..=11 => self.literals_by::<5>(data, table),
            12..=14 => self.literals_by::<4>(data, table),
            _ => self.literals_by::<3>(data, table),
        }
    }

    /// [`Bits::literals`], `G` codes at a time: 7 + G × (longest code) must stay within 64 bits.
    #[inline(always)]
    fn literals_by<const G: usize>(&mut self, data: &[u8], table: &[u32; 256]) {
        let mut groups = data.chunks_exact(G);
        for g in &mut groups {
            for &b in g {
                let e = table[b as usize];
                self.buf |= u64::from(e >> 8) << self.n;
                self.n += e & 0xff;
            }
            self.spill();
        }
        for &b in groups.remainder() {
            let e = table[b as usize];
            self.send(e >> 8, e & 0xff);
        }
    }
}

/// Reusable trees for one worker.
pub(super) struct Huffman {
    l: Tree,
    d: Tree,
    bl: Tree,
    fixed_table: [u32; 256],
    fixed_end: u32,
    /// Byte counts of each chunk of the block last passed to [`Huffman::count`].
    counts: Vec<[u32; 256]>,
    /// The same for [`Huffman::block`] (samples), so they leave `counts` alone.
    own_counts: Vec<[u32; 256]>,
    heap: Box<Heap>,
}

/// Counts the bytes of each of `data`'s chunks into `counts` and returns the counts over all of `data`.
fn count_chunks(data: &[u8], counts: &mut Vec<[u32; 256]>) -> [u64; 256] {
    counts.clear();
    let mut total = [0u64; 256];
    for chunk in data.chunks(CHUNK) {
        // Two tables, so runs of one byte value do not wait on their own increments.
        let mut c = [[0u32; 256]; 2];
        let mut pairs = chunk.chunks_exact(2);
        for p in &mut pairs {
            c[0][p[0] as usize] += 1;
            c[1][p[1] as usize] += 1;
        }
        for &b in pairs.remainder() {
            c[0][b as usize] += 1;
        }
        let mut sum = [0u32; 256];
        for n in 0..256 {
            sum[n] = c[0][n] + c[1][n];
            total[n] += u64::from(sum[n]);
        }
        counts.push(sum);
    }
    total
}

impl Huffman {
    pub(super) fn new() -> Self {
        // The fixed literal/length code, built the way zlib builds its static tree.
        let mut fixed = Tree::new(L_CODES + 2);
        let mut bl_count = [0u32; MAX_BITS + 1];
        for n in 0..L_CODES + 2 {
            fixed.len[n] = static_len(n);
            bl_count[fixed.len[n] as usize] += 1;
        }
        gen_codes(&mut fixed, L_CODES + 1, &bl_count);
        let mut fixed_table = [0u32; 256];
        for (n, e) in fixed_table.iter_mut().enumerate() {
            *e = (fixed.code[n] << 8) | fixed.len[n];
        }
        Huffman {
            l: Tree::new(HEAP_SIZE),
            d: Tree::new(2 * D_CODES + 1),
            bl: Tree::new(2 * BL_CODES + 1),
            fixed_table,
            fixed_end: (fixed.code[END_BLOCK] << 8) | fixed.len[END_BLOCK],
            counts: Vec::new(),
            own_counts: Vec::new(),
            heap: Box::new(Heap { heap: [0; HEAP_SIZE], len: 0, max: HEAP_SIZE, depth: [0; HEAP_SIZE] }),
        }
    }

    /// Counts the bytes of each of `data`'s chunks, for [`Huffman::block_counted`], and returns the
    /// counts over all of `data` (so the caller's own look at the histogram costs no second pass).
    pub(super) fn count(&mut self, data: &[u8]) -> [u64; 256] {
        count_chunks(data, &mut self.counts)
    }

    /// Like [`Huffman::block`]; [`Huffman::count`] must have been given this same `data` last.
    pub(super) fn block_counted(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) {
        let counts = std::mem::take(&mut self.counts);
        self.encode(data, &counts, last, out);
        self.counts = counts;
    }

    fn encode(&mut self, data: &[u8], counts: &[[u32; 256]], last: bool, out: &mut Vec<u8>) {
        assert_eq!(counts.len(), data.chunks(CHUNK).count(), "counts of other data");
        let start = out.len();
        let mut bits = Bits { pos: start, out, buf: 0, n: 0 };
        bits.reserve(64);
        let mut chunks = data.chunks(CHUNK).zip(counts).peekable();
        while let Some((chunk, count)) = chunks.next() {
            // zlib ends a block as soon as its symbol buffer is full, and once more at the end: with
            // `Finish` that last block is always written (empty if the input ended with a full one).
            let full = chunk.len() == CHUNK;
            let is_last = last && !full && chunks.peek().is_none();
            self.flush_block(&mut bits, chunk, count, is_last);
            if last && full && chunks.peek().is_none() {
                self.flush_block(&mut bits, &[], &[0; 256], true);
            }
        }
        if data.is_empty() && last {
            self.flush_block(&mut bits, &[], &[0; 256], true);
        }
        if !last {
            bits.stored(&[], false);
        }
        let end = bits.pos;
        out.truncate(end);
    }

    /// Appends `data` Huffman-coded to `out`, ending with a sync flush (an empty stored block, so the
    /// stream is byte-aligned) or, when `last`, with the final block: exactly what a reset zlib-rs raw
    /// deflate stream with `Strategy::HuffmanOnly` writes for `compress(data, SyncFlush | Finish)`.
    pub(super) fn block(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) {
        let mut counts = std::mem::take(&mut self.own_counts);
        count_chunks(data, &mut counts);
        self.encode(data, &counts, last, out);
        self.own_counts = counts;
    }

    /// zlib's `_tr_flush_block` for a block of literals `chunk`.
    fn flush_block(&mut self, bits: &mut Bits<'_>, chunk: &[u8], counts: &[u32; 256], last: bool) {
        // Every block here is smaller than its input plus a few bytes (else it would be stored), and the
        // dynamic header takes at most ~300 bytes.
        bits.reserve(chunk.len() * 2 + 1024);
        if chunk.is_empty() {
            // No symbols: a fixed-code block holding only the end-of-block code.
            bits.send(2 | u32::from(last), 3);
            bits.send(self.fixed_end >> 8, self.fixed_end & 0xff);
            if last {
                bits.align();
            }
            return;
        }
        let (l, d, bl) = (&mut self.l, &mut self.d, &mut self.bl);
        let h = &mut *self.heap;
        l.freq[..L_CODES].fill(0);
        d.freq[..D_CODES].fill(0);
        bl.freq[..BL_CODES].fill(0);
        l.freq[..256].copy_from_slice(counts);
        l.freq[END_BLOCK] = 1;
        let mut lens = Lens::default();
        build_tree(l, &L_DESC, h, &mut lens);
        build_tree(d, &D_DESC, h, &mut lens);
        // build_bl_tree
        for t in [&*l, &*d] {
            walk_tree(&t.len, t.max_code, |sym, _, _| bl.freq[sym] += 1);
        }
        build_tree(bl, &BL_DESC, h, &mut lens);
        let mut max_blindex = BL_CODES - 1;
        while max_blindex >= 3 && bl.len[BL_ORDER[max_blindex]] == 0 {
            max_blindex -= 1;
        }
        lens.opt += 3 * (max_blindex as i64 + 1) + 5 + 5 + 4;

        let mut opt_lenb = (lens.opt + 3 + 7) >> 3;
        let static_lenb = (lens.fixed + 3 + 7) >> 3;
        if static_lenb <= opt_lenb {
            opt_lenb = static_lenb;
        }
        if chunk.len() as i64 + 4 <= opt_lenb {
            bits.stored(chunk, last);
        } else if static_lenb == opt_lenb {
            bits.send(2 | u32::from(last), 3);
            bits.literals(chunk, &self.fixed_table);
            bits.send(self.fixed_end >> 8, self.fixed_end & 0xff);
        } else {
            bits.send(4 | u32::from(last), 3);
            let (lcodes, dcodes, blcodes) = (l.max_code + 1, d.max_code + 1, max_blindex + 1);
            bits.reserve(512);
            bits.send((lcodes - 257) as u32, 5);
            bits.send((dcodes - 1) as u32, 5);
            bits.send((blcodes - 4) as u32, 4);
            for &sym in &BL_ORDER[..blcodes] {
                bits.send(bl.len[sym], 3);
            }
            for t in [&*l, &*d] {
                walk_tree(&t.len, t.max_code, |sym, extra, extra_bits| {
                    bits.send(bl.code[sym], bl.len[sym]);
                    if extra_bits > 0 {
                        bits.send(extra, extra_bits);
                    }
                });
            }
            let mut table = [0u32; 256];
            for (n, e) in table.iter_mut().enumerate() {
                *e = (l.code[n] << 8) | l.len[n];
            }
            bits.literals(chunk, &table);
            bits.send(l.code[END_BLOCK], l.len[END_BLOCK]);
        }
        if last {
            bits.align();
        }
    }
}

#[cfg(test)]
mod tests;
