//! Counting repeated 4-byte strings in a sample, the cheap first look behind [`super::Plan`]'s choice
//! between Huffman-only coding and string matching.
//!
//! deflate's matcher only gains where a string of at least 4 bytes (zlib-ng hashes 4) occurred before
//! within the window. Where a sample has next to no such repeats (base64 of random bytes has about 3 by
//! chance in 4 KiB after 8 KiB of history), matching cannot beat Huffman-only coding by the margin the plan
//! asks for, and the trial deflate of the sample (a fresh zlib-rs matcher: ~370 KiB allocated and ~256 KiB
//! zeroed, page faults included, four times per block) can be skipped. The count depends only on the
//! bytes given: stale table entries from earlier samples are never read as present.

/// Table slots (a power of two); more than twice the most strings one call inserts.
const SLOTS_LOG: u32 = 15;
const SLOTS: usize = 1 << SLOTS_LOG;
/// The most bytes one call looks at (history and sample together).
pub(super) const MAX_WINDOW: usize = SLOTS / 2;

/// An open-addressing set of 4-byte strings, reused from call to call: each slot holds the call's stamp
/// in its high half and the string in its low half, so a slot of another call counts as empty and the
/// table is never cleared (cleared once when the stamp wraps).
pub(super) struct Repeats {
    slots: Vec<u64>,
    stamp: u32,
}

impl Repeats {
    pub(super) fn new() -> Self {
        Repeats { slots: vec![0; SLOTS], stamp: 0 }
    }

    /// How many of the 4-byte strings starting in `window[start..]` occur earlier in `window` (at an
    /// earlier start). `window` is the sample's history followed by the sample; at most [`MAX_WINDOW`]
    /// bytes. Counting stops past `enough` (the caller's answer is known then).
    pub(super) fn count(&mut self, window: &[u8], start: usize, enough: usize) -> usize {
        assert!(window.len() <= MAX_WINDOW, "window of {} bytes", window.len());
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.slots.fill(0);
            self.stamp = 1;
        }
        let tag = u64::from(self.stamp) << 32;
        let mask = SLOTS - 1;
        let mut repeats = 0;
        for (i, w) in window.windows(4).enumerate() {
            let gram = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            let entry = tag | u64::from(gram);
            let mut h = (gram.wrapping_mul(0x9e37_79b1) >> (32 - SLOTS_LOG)) as usize;
            loop {
                let slot = self.slots[h];
                if slot == entry {
                    if i >= start {
                        repeats += 1;
                        if repeats > enough {
                            return repeats;
                        }
                    }
                    break;
                }
                if slot >> 32 != u64::from(self.stamp) {
                    self.slots[h] = entry;
                    break;
                }
                h = (h + 1) & mask;
            }
        }
        repeats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same count the slow way.
    fn naive(window: &[u8], start: usize) -> usize {
        (start..window.len().saturating_sub(3))
            .filter(|&i| (0..i).any(|j| window[j..j + 4] == window[i..i + 4]))
            .count()
    }

    #[test]
    fn counts_what_a_direct_search_counts() {
        let mut r = Repeats::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut random = |n: usize, alphabet: u64| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'a' + (x % alphabet) as u8
                })
                .collect()
        };
        for (window, start) in [
            (random(3000, 4), 1000),
            (random(3000, 26), 2000),
            (b"abcdabcdabcd".to_vec(), 4),
            (b"abc".to_vec(), 0),
            (Vec::new(), 0),
            (vec![0u8; 100], 50),
        ] {
            assert_eq!(
                r.count(&window, start, usize::MAX),
                naive(&window, start),
                "{:?}",
                String::from_utf8_lossy(&window)
            );
        }
    }

    #[test]
    fn earlier_calls_leave_no_trace() {
        let mut r = Repeats::new();
        let a = b"the same words, the same words, the same words".to_vec();
        let first = r.count(&a, 0, usize::MAX);
        assert!(first > 0);
        // Strings seen in the call before are not counted as seen now.
        assert_eq!(r.count(b"the same", 0, usize::MAX), 0);
        assert_eq!(r.count(&a, 0, usize::MAX), first);
        r.stamp = u32::MAX;
        assert_eq!(r.count(&a, 0, usize::MAX), first, "the stamp wraps");
        assert_eq!(r.count(b"the same", 0, usize::MAX), 0);
        assert_eq!(r.count(&a, 0, 2), 3, "stops past enough");
    }
}
