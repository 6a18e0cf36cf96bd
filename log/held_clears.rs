// SPDX-License-Identifier: GPL-2.0

//! Clears recorded and not sent yet, in the order recorded, with what a mark must know of
//! them in constant time.
//!
//! A mark of a region whose clear is held cancels that clear. dm-raid1 marks under
//! dm-region-hash's lock, once for every write to a region that went clean, so a busy
//! mirror with held clears cancels one on almost every write: searching the list for it
//! cost as much as the rest of the write's path in the log. Here a bit per region says
//! whether its clear is held, and a cancelled clear's entry is only left behind, stale;
//! stale entries are swept out in one pass when the list is full or before it is read in
//! order (`compact`), and the list then grows to twice what is left: a mark costs the same
//! whatever the list holds, and a clear the same on average.
//!
//! A region's live entry is its newest: a region cleared twice without a mark in between
//! (a recovery's clear) keeps the later idle time.

use kernel::{
    prelude::*,
    time::{Instant, Monotonic},
};

/// Bits per word of the maps.
const WORD_BITS: u64 = u64::BITS as u64;

/// A clear recorded, and when it falls due: once its region has been idle for the idle time.
#[derive(Clone, Copy)]
pub(super) struct HeldClear {
    pub(super) region: u64,
    pub(super) due: Instant<Monotonic>,
}

/// One bit per region, in plain words: changed only under the caller's lock.
struct RegionBits(KVVec<u64>);

impl RegionBits {
    fn new(regions: u64) -> Result<Self> {
        let words = usize::try_from(regions.div_ceil(WORD_BITS)).map_err(|_| ENOMEM)?;
        Ok(Self(KVVec::from_elem(0, words, GFP_KERNEL)?))
    }

    /// The word and bit of `region`; none beyond the map (a region the log does not have).
    fn at(&self, region: u64) -> Option<(usize, u64)> {
        let word = usize::try_from(region / WORD_BITS).ok()?;
        (word < self.0.len()).then(|| (word, 1 << (region % WORD_BITS)))
    }

    fn get(&self, region: u64) -> bool {
        self.at(region).is_some_and(|(w, b)| self.0[w] & b != 0)
    }

    /// Sets `region`'s bit to `on`; returns what it was.
    fn put(&mut self, region: u64, on: bool) -> bool {
        let Some((w, b)) = self.at(region) else {
            return false;
        };
        let was = self.0[w] & b != 0;
        if on {
            self.0[w] |= b;
        } else {
            self.0[w] &= !b;
        }
        was
    }
}

/// What a cancelled clear stood for.
pub(super) struct Cancelled {
    /// The clear followed writes whose mark this log made durable: the server holds the
    /// region marked until the clear reaches it. Not so for a recovered region's clear.
    pub(super) backed: bool,
}

/// The held clears of one log: see the module's documentation.
pub(super) struct HeldClears {
    /// In the order recorded; with stale entries when `tracked`.
    list: KVec<HeldClear>,
    /// Per region: its newest entry in `list` is live. Empty when not `tracked`.
    held: RegionBits,
    /// Per region, while its clear is held: the clear stands for no durable mark.
    unbacked: RegionBits,
    /// Live entries (regions with a held clear).
    live: usize,
    /// Entries in `list` that are not live.
    stale: usize,
    /// Marks cancel clears here: without, every entry is live and a mark leaves them alone.
    tracked: bool,
}

impl HeldClears {
    /// An empty set for a log of `regions`, with room for `reserve` entries; `tracked` if
    /// marks will cancel clears. Fails if the memory is not there.
    pub(super) fn new(regions: u64, reserve: usize, tracked: bool) -> Result<Self> {
        let bits = if tracked { regions } else { 0 };
        Ok(Self {
            list: KVec::with_capacity(reserve, GFP_KERNEL)?,
            held: RegionBits::new(bits)?,
            unbacked: RegionBits::new(bits)?,
            live: 0,
            stale: 0,
            tracked,
        })
    }

    /// How many regions have a held clear.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Records a clear of `region`, due at `due`; returns false if there was no room without
    /// sleeping (the clear is then lost: its region stays marked, the safe side).
    pub(super) fn push(&mut self, region: u64, due: Instant<Monotonic>) -> bool {
        if self.tracked && self.held.at(region).is_none() {
            // Not a region of this log: kept marked.
            return false;
        }
        if self.list.len() == self.list.capacity() {
            self.compact();
            // Room for as many again: the next sweep is as many pushes away as the list is
            // long, so sweeps cost each push a constant, however many clears are live. If the
            // memory is not there without sleeping, the next push may sweep again.
            let _ = self.list.reserve(self.list.len(), GFP_NOWAIT);
        }
        let entry = HeldClear { region, due };
        let pushed = match self.list.push_within_capacity(entry) {
            Ok(()) => true,
            Err(full) => self.list.push(full.0, GFP_NOWAIT).is_ok(),
        };
        if !pushed {
            return false;
        }
        if self.tracked && self.held.put(region, true) {
            // The older entry of the region is stale now; if that clear stood for no durable
            // mark, so does the region's (the safe side: a mark then is sent).
            self.stale += 1;
        } else {
            self.live += 1;
            self.unbacked.put(region, false);
        }
        true
    }

    /// Cancels `region`'s held clear, if it has one. Constant time.
    pub(super) fn cancel(&mut self, region: u64) -> Option<Cancelled> {
        if !self.tracked || !self.held.put(region, false) {
            return None;
        }
        self.live -= 1;
        self.stale += 1;
        let backed = !self.unbacked.put(region, false);
        Some(Cancelled { backed })
    }

    /// `region`'s held clear, if any, stands for no durable mark.
    pub(super) fn unback(&mut self, region: u64) {
        if self.held.get(region) {
            self.unbacked.put(region, true);
        }
    }

    /// When the first live clear falls due.
    pub(super) fn earliest_due(&mut self) -> Option<Instant<Monotonic>> {
        self.compact();
        // (`Instant` is not `Ord` for every clock: compared by their difference.)
        self.list.iter().map(|c| c.due).reduce(|a, b| {
            if b - a < kernel::time::Delta::ZERO {
                b
            } else {
                a
            }
        })
    }

    /// Keeps the live clears for which `keep` says so, in order, and forgets the others.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&HeldClear) -> bool) {
        self.compact();
        let (held, unbacked) = (&mut self.held, &mut self.unbacked);
        let mut forgotten = 0;
        self.list.retain(|c| {
            let kept = keep(c);
            if !kept {
                held.put(c.region, false);
                unbacked.put(c.region, false);
                forgotten += 1;
            }
            kept
        });
        self.live -= forgotten;
    }

    /// Forgets every clear; returns how many regions had one.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.live;
        self.retain(|_| false);
        n
    }

    /// Drops the stale entries: newest first, the first entry of each held region is its
    /// live one. Its bit is taken down while the older ones go by, and put back after.
    fn compact(&mut self) {
        if self.stale == 0 {
            return;
        }
        let n = self.list.len();
        let mut first = n;
        for at in (0..n).rev() {
            let c = self.list[at];
            if self.held.put(c.region, false) {
                first -= 1;
                self.list[first] = c;
            }
        }
        self.list.copy_within(first..n, 0);
        self.list.truncate(n - first);
        for c in self.list.iter() {
            self.held.put(c.region, true);
        }
        self.stale = 0;
    }
}
