// SPDX-License-Identifier: GPL-2.0
//! A fixed-size bitset whose memory is reserved fallibly.
//!
//! The region count of a log comes from the kernel (a table's length over its region size,
//! up to 2^32 regions), so the server must be able to say "no" to a log it cannot hold rather
//! than abort. `fixedbitset` and `bitvec` allocate with `vec!`, which aborts the process when
//! memory runs out; this one reserves its words with `try_reserve_exact` and never grows.
//!
//! Words are `u64` with bit `i` at `1 << (i % 64)` of word `i / 64`, so a little-endian byte
//! bitmap (the disk log's `test_bit_le` layout) loads eight bytes to a word.

use std::fmt;

/// Memory for a bitset (or another buffer of a log) could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate {bytes} bytes")]
pub struct AllocError {
    /// Bytes asked for.
    pub bytes: u64,
}

/// Reserves exactly `len` elements, each `value`, or fails without aborting.
pub fn try_filled_vec<T: Clone>(len: usize, value: T) -> Result<Vec<T>, AllocError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| AllocError {
        bytes: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    // Within the reserved capacity: `resize` does not reallocate.
    v.resize(len, value);
    Ok(v)
}

const WORD_BITS: u64 = u64::BITS as u64;

/// `len` bits, stored in whole `u64` words; bits past `len` are always zero. Not `Clone`: a
/// copy would allocate infallibly.
#[derive(PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
    len: u64,
}

impl fmt::Debug for Bitset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitset({} of {} set)", self.count_ones(), self.len)
    }
}

impl Bitset {
    /// Bytes of memory `len` bits take.
    pub fn bytes_for(len: u64) -> u64 {
        len.div_ceil(WORD_BITS) * (WORD_BITS / 8)
    }

    /// `len` bits, all `value`; an error instead of an abort when memory is short.
    pub fn try_new(len: u64, value: bool) -> Result<Self, AllocError> {
        let too_big = AllocError {
            bytes: Self::bytes_for(len),
        };
        let words = usize::try_from(len.div_ceil(WORD_BITS)).map_err(|_| too_big)?;
        let mut set = Self {
            words: try_filled_vec(words, 0u64)?,
            len,
        };
        set.fill(value);
        Ok(set)
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(i: u64) -> (usize, u64) {
        ((i / WORD_BITS) as usize, 1 << (i % WORD_BITS))
    }

    /// Bit `i`. Panics past the end, like slice indexing.
    pub fn get(&self, i: u64) -> bool {
        assert!(i < self.len, "bit {i} of {}", self.len);
        let (w, mask) = Self::at(i);
        self.words[w] & mask != 0
    }

    /// Sets bit `i` to `value`; returns whether it changed. Panics past the end.
    pub fn set(&mut self, i: u64, value: bool) -> bool {
        assert!(i < self.len, "bit {i} of {}", self.len);
        let (w, mask) = Self::at(i);
        let old = self.words[w] & mask != 0;
        if value {
            self.words[w] |= mask;
        } else {
            self.words[w] &= !mask;
        }
        old != value
    }

    /// Flips every bit.
    pub fn invert(&mut self) {
        for w in &mut self.words {
            *w = !*w;
        }
        self.clear_tail();
    }

    /// Sets every bit to `value`.
    pub fn fill(&mut self, value: bool) {
        self.words.fill(if value { u64::MAX } else { 0 });
        self.clear_tail();
    }

    /// Keeps the bits past `len` zero, so that counting and searching whole words is exact.
    fn clear_tail(&mut self) {
        let used = self.len % WORD_BITS;
        if let (Some(last), true) = (self.words.last_mut(), used != 0) {
            *last &= (1u64 << used) - 1;
        }
    }

    /// How many bits are set.
    pub fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The first bit at or after `from` among the set bits of `candidates(k)`, a mask of word
    /// `k`'s bits: one word at a time rather than one bit, for the searches of logs of up to
    /// 2^32 regions. Bits past `len` are never found.
    fn find_from(&self, from: u64, candidates: impl Fn(usize) -> u64) -> Option<u64> {
        if from >= self.len {
            return None;
        }
        let first = (from / WORD_BITS) as usize;
        // Bits below `from` in its word are no candidates.
        let at_or_after = u64::MAX << (from % WORD_BITS);
        (first..self.words.len())
            .find_map(|k| {
                let found = candidates(k) & if k == first { at_or_after } else { u64::MAX };
                (found != 0).then(|| k as u64 * WORD_BITS + u64::from(found.trailing_zeros()))
            })
            .filter(|&i| i < self.len)
    }

    /// The first bit at or after `from` that is clear here and in `other` (of the same
    /// length): the next region neither in sync nor being recovered.
    pub fn first_clear_in_both(&self, other: &Self, from: u64) -> Option<u64> {
        debug_assert_eq!(self.len, other.len);
        self.find_from(from, |k| !(self.words[k] | other.words[k]))
    }

    /// The first set bit at or after `from`, if any.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        self.find_from(from, |k| self.words[k])
    }

    /// The first clear bit at or after `from`, if any.
    pub fn next_clear(&self, from: u64) -> Option<u64> {
        self.find_from(from, |k| !self.words[k])
    }

    /// The first clear bit, if any.
    pub fn first_clear(&self) -> Option<u64> {
        self.next_clear(0)
    }

    /// Appends the bits as a little-endian byte bitmap, `len.div_ceil(8)` bytes: the format
    /// [`Bitset::copy_from_le_bytes`] reads back (a cluster's state transfer sends it).
    pub fn append_le_bytes(&self, out: &mut Vec<u8>) {
        let bytes = self.len.div_ceil(8) as usize;
        let start = out.len();
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(start + bytes);
    }

    /// The maximal runs of set bits from `from` (below `len`) on: fills `runs` with
    /// `(first, count)` in order and returns where the answer ends and how many runs it
    /// filled. That is `len`, unless `runs` filled up first: then the end of the last run.
    /// Panics if `runs` is empty.
    pub fn set_runs(&self, from: u64, runs: &mut [(u64, u64)]) -> (u64, usize) {
        assert!(!runs.is_empty(), "no room for a run");
        let mut at = from;
        for (n, run) in runs.iter_mut().enumerate() {
            let Some(first) = self.next_set(at) else {
                return (self.len, n);
            };
            let end = self.next_clear(first).unwrap_or(self.len);
            *run = (first, end - first);
            at = end;
        }
        (at, runs.len())
    }

    /// Loads the bits from a little-endian byte bitmap (bit `i` is `bytes[i / 8] >> (i % 8)`);
    /// bits beyond `bytes` are cleared, and bytes beyond `len` bits ignored. Returns whether
    /// a bit that was set is clear now: for regions, whether any left sync.
    pub fn copy_from_le_bytes(&mut self, bytes: &[u8]) -> bool {
        let mut chunks = bytes.chunks(8);
        let mut lost = 0;
        for word in &mut self.words {
            let mut le = [0u8; 8];
            if let Some(c) = chunks.next() {
                le[..c.len()].copy_from_slice(c);
            }
            let old = std::mem::replace(word, u64::from_le_bytes(le));
            lost |= old & !*word;
        }
        self.clear_tail();
        // The tail was clear before, so nothing cleared there counts.
        lost != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unservable_sizes_are_errors_not_aborts() {
        // More words than the address space holds, and more bytes than any allocator gives.
        assert!(Bitset::try_new(u64::MAX, false).is_err());
        let err = try_filled_vec(usize::MAX / 8, 0u64).unwrap_err();
        assert_eq!(err.bytes, u64::MAX - 7);
        assert_eq!(Bitset::bytes_for(1 << 32), 512 << 20);
        assert_eq!(Bitset::bytes_for(65), 16);
    }

    #[test]
    fn tail_bits_stay_clear() {
        let mut b = Bitset::try_new(70, true).unwrap();
        assert_eq!(b.count_ones(), 70);
        assert_eq!(b.first_clear(), None);
        assert!(b.set(69, false));
        assert!(!b.set(69, false));
        assert_eq!(b.first_clear(), Some(69));
        assert!(
            !b.copy_from_le_bytes(&[0xff; 16]),
            "only bit 69 changed: it was set"
        );
        assert_eq!(b.count_ones(), 70);
        assert!(b.copy_from_le_bytes(&[0x01, 0x02]), "set bits were cleared");
        assert_eq!(b.count_ones(), 2);
        assert!(b.get(0) && b.get(9) && !b.get(8));
        assert!(!b.copy_from_le_bytes(&[0x01, 0x03]), "only a bit was set");
        assert!(Bitset::try_new(0, true).unwrap().is_empty());
    }

    #[test]
    fn search_starts_at_from_and_skips_either_set() {
        let mut a = Bitset::try_new(200, false).unwrap();
        let mut b = Bitset::try_new(200, false).unwrap();
        for i in 0..130 {
            a.set(i, i % 2 == 0);
            b.set(i, i % 2 == 1);
        }
        assert_eq!(a.first_clear_in_both(&b, 0), Some(130));
        assert_eq!(a.first_clear_in_both(&b, 131), Some(131));
        assert_eq!(a.first_clear_in_both(&b, 200), None);
        a.fill(true);
        assert_eq!(a.first_clear_in_both(&b, 0), None);
    }

    #[test]
    fn next_set_and_next_clear_cross_words_and_stop_at_the_end() {
        let mut a = Bitset::try_new(200, false).unwrap();
        assert_eq!((a.next_set(0), a.next_clear(0)), (None, Some(0)));
        for i in 63..=128 {
            a.set(i, true);
        }
        assert_eq!(a.next_set(0), Some(63));
        assert_eq!(a.next_set(100), Some(100));
        assert_eq!(a.next_clear(63), Some(129));
        assert_eq!(a.next_set(129), None);
        a.set(199, true);
        assert_eq!(a.next_set(129), Some(199));
        assert_eq!(a.next_clear(199), None, "the tail past len is no clear bit");
        assert_eq!((a.next_set(200), a.next_clear(200)), (None, None));
        a.fill(true);
        assert_eq!(a.next_clear(0), None);
    }

    proptest! {
        #![proptest_config(crate::proptest_seed::config(256))]
        /// Against `Vec<bool>`: get, count, searches and the byte loader agree.
        #[test]
        fn matches_a_bool_vector(bits in prop::collection::vec(any::<bool>(), 0..300),
                                 other in prop::collection::vec(any::<bool>(), 300),
                                 from in 0u64..320) {
            let n = bits.len() as u64;
            let mut a = Bitset::try_new(n, false).unwrap();
            let mut b = Bitset::try_new(n, false).unwrap();
            let mut bytes = vec![0u8; bits.len().div_ceil(8)];
            for (i, &v) in bits.iter().enumerate() {
                a.set(i as u64, v);
                b.set(i as u64, other[i]);
                bytes[i / 8] |= u8::from(v) << (i % 8);
            }
            prop_assert_eq!(a.count_ones(), bits.iter().filter(|v| **v).count() as u64);
            let want = (from..n).find(|&i| !bits[i as usize] && !other[i as usize]);
            prop_assert_eq!(a.first_clear_in_both(&b, from), want);
            prop_assert_eq!(a.first_clear(), bits.iter().position(|v| !v).map(|i| i as u64));
            prop_assert_eq!(a.next_set(from), (from..n).find(|&i| bits[i as usize]));
            prop_assert_eq!(a.next_clear(from), (from..n).find(|&i| !bits[i as usize]));
            let lost = (0..bits.len()).any(|i| other[i] && !bits[i]);
            prop_assert_eq!(b.copy_from_le_bytes(&bytes), lost);
            prop_assert_eq!(&b, &a);
        }
    }
}
