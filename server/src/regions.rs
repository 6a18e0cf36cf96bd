//! The state of one log's regions: which are in sync, which are dirty, what to recover next.
//!
//! The semantics are those of the kernel's own core log (drivers/md/dm-log.c): every region
//! starts clean; a `sync` log starts with every region out of sync (a full resync), a
//! `nosync` log with every region in sync; resync work is handed out once per region, in
//! ascending order, and not again until it is reported or the log resumes.

use crate::bitset::{AllocError, Bitset};

/// Region bookkeeping of one log: three bits per region, in bitsets reserved fallibly at
/// creation (a log the server cannot hold is refused, never an abort), and never
/// reallocated afterwards. Not `Clone`: a copy would allocate infallibly.
#[derive(Debug, PartialEq, Eq)]
pub struct Regions {
    in_sync: Bitset,
    clean: Bitset,
    recovering: Bitset,
    /// Where the search for resync work continues.
    sync_search: u64,
    sync_count: u64,
}

/// A region number outside the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("region {0} is outside the log")]
pub struct OutOfRange(pub u64);

impl Regions {
    /// Bytes of memory the state of `count` regions takes.
    pub fn bytes_for(count: u64) -> u64 {
        3 * Bitset::bytes_for(count)
    }

    /// `count` regions, all clean, all in sync or all out of sync; an error when the memory
    /// cannot be had.
    pub fn try_new(count: u64, in_sync: bool) -> Result<Self, AllocError> {
        Ok(Self {
            in_sync: Bitset::try_new(count, in_sync)?,
            clean: Bitset::try_new(count, true)?,
            recovering: Bitset::try_new(count, false)?,
            sync_search: 0,
            sync_count: if in_sync { count } else { 0 },
        })
    }

    /// Regions as a disk log finds them at resume: in sync exactly where the little-endian
    /// clean bitmap `bits` says clean (dm-log.c copies its clean bits to its sync bits), none
    /// with a write outstanding, none being recovered. Allocates nothing.
    pub fn load_clean_bits(&mut self, bits: &[u8]) {
        self.in_sync.copy_from_le_bytes(bits);
        self.clean.fill(true);
        self.recovering.fill(false);
        self.sync_search = 0;
        self.sync_count = self.in_sync.count_ones();
    }

    /// Number of regions.
    pub fn count(&self) -> u64 {
        self.in_sync.len()
    }

    fn check(&self, region: u64) -> Result<u64, OutOfRange> {
        if region < self.count() {
            Ok(region)
        } else {
            Err(OutOfRange(region))
        }
    }

    /// A region is clean when it is in sync and no write to it is outstanding.
    pub fn is_clean(&self, region: u64) -> Result<bool, OutOfRange> {
        let i = self.check(region)?;
        Ok(self.clean.get(i) && self.in_sync.get(i))
    }

    /// Whether the region's legs hold the same data.
    pub fn in_sync(&self, region: u64) -> Result<bool, OutOfRange> {
        Ok(self.in_sync.get(self.check(region)?))
    }

    /// A write to the region begins (idempotent).
    pub fn mark(&mut self, region: u64) -> Result<(), OutOfRange> {
        let i = self.check(region)?;
        self.clean.set(i, false);
        Ok(())
    }

    /// Writes to the region are complete (idempotent).
    pub fn clear(&mut self, region: u64) -> Result<(), OutOfRange> {
        let i = self.check(region)?;
        self.clean.set(i, true);
        Ok(())
    }

    /// The next region to recover, if any: each is handed out once until reported.
    pub fn resync_work(&mut self) -> Option<u64> {
        let found = self
            .in_sync
            .first_clear_in_both(&self.recovering, self.sync_search)?;
        self.recovering.set(found, true);
        self.sync_search = found + 1;
        Some(found)
    }

    /// Records the outcome of a recovery (or a write failure, with `in_sync` false).
    pub fn set_sync(&mut self, region: u64, in_sync: bool) -> Result<(), OutOfRange> {
        let i = self.check(region)?;
        self.recovering.set(i, false);
        if self.in_sync.set(i, in_sync) {
            if in_sync {
                self.sync_count += 1;
            } else {
                self.sync_count -= 1;
            }
        }
        if !in_sync {
            // Recover it again on this pass.
            self.sync_search = self.sync_search.min(region);
        }
        Ok(())
    }

    /// How many regions are in sync.
    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }

    /// How many regions have a write outstanding (marked and not yet cleared).
    pub fn dirty_count(&self) -> u64 {
        self.count() - self.clean.count_ones()
    }

    /// Every region below this one is in sync.
    pub fn in_sync_hint(&self) -> u64 {
        self.in_sync.first_clear().unwrap_or(self.count())
    }

    /// The mirror resumes: recovery starts over from the first region.
    pub fn resume(&mut self) {
        self.sync_search = 0;
        self.recovering.fill(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sync_log_hands_out_every_region_once_in_order() {
        let mut r = Regions::try_new(4, false).unwrap();
        assert_eq!(r.sync_count(), 0);
        assert_eq!(r.resync_work(), Some(0));
        assert_eq!(r.resync_work(), Some(1));
        r.set_sync(0, true).unwrap();
        assert_eq!(r.resync_work(), Some(2));
        assert_eq!(r.resync_work(), Some(3));
        assert_eq!(r.resync_work(), None);
        r.set_sync(1, true).unwrap();
        r.set_sync(2, true).unwrap();
        r.set_sync(3, true).unwrap();
        assert_eq!(r.sync_count(), 4);
        assert_eq!(r.in_sync_hint(), 4);
    }

    #[test]
    fn clean_needs_sync_and_no_outstanding_mark() {
        let mut r = Regions::try_new(2, true).unwrap();
        assert!(r.is_clean(0).unwrap());
        r.mark(0).unwrap();
        r.mark(0).unwrap();
        assert!(!r.is_clean(0).unwrap());
        r.clear(0).unwrap();
        assert!(r.is_clean(0).unwrap());
        r.set_sync(1, false).unwrap();
        assert!(!r.is_clean(1).unwrap());
        assert_eq!(r.mark(2), Err(OutOfRange(2)));
        assert_eq!(r.in_sync(9), Err(OutOfRange(9)));
    }

    #[test]
    fn loaded_clean_bits_put_exactly_the_clean_regions_in_sync() {
        let mut r = Regions::try_new(3, false).unwrap();
        r.mark(1).unwrap();
        assert_eq!(r.resync_work(), Some(0));
        r.load_clean_bits(&[0b101]);
        assert_eq!(r.count(), 3);
        assert_eq!(r.sync_count(), 2);
        assert_eq!(r.dirty_count(), 0);
        assert!(r.is_clean(0).unwrap());
        assert!(!r.in_sync(1).unwrap());
        assert!(!r.is_clean(1).unwrap());
        assert_eq!(r.resync_work(), Some(1));
        assert_eq!(r.resync_work(), None);
        r.mark(2).unwrap();
        assert_eq!(r.dirty_count(), 1);
    }

    #[test]
    fn unservable_region_counts_are_an_error() {
        assert!(Regions::try_new(u64::MAX, false).is_err());
        assert_eq!(Regions::bytes_for(1 << 32), 3 << 29);
    }

    #[test]
    fn resume_restarts_recovery() {
        let mut r = Regions::try_new(3, false).unwrap();
        assert_eq!(r.resync_work(), Some(0));
        r.resume();
        assert_eq!(r.resync_work(), Some(0));
    }

    /// One operation of the random sequences.
    #[derive(Clone, Debug)]
    enum Op {
        Mark(u64),
        Clear(u64),
        Work,
        SetSync(u64, bool),
        Resume,
    }

    fn op(n: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..n).prop_map(Op::Mark),
            (0..n).prop_map(Op::Clear),
            Just(Op::Work),
            ((0..n), any::<bool>()).prop_map(|(r, s)| Op::SetSync(r, s)),
            Just(Op::Resume),
        ]
    }

    proptest! {
        /// Against a plain model: sync count, clean and in-sync answers always agree, and
        /// work is only ever offered for regions out of sync and not already offered.
        #[test]
        fn matches_a_simple_model(start_in_sync in any::<bool>(), ops in prop::collection::vec(op(16), 0..200)) {
            let n = 16u64;
            let mut r = Regions::try_new(n, start_in_sync).unwrap();
            let mut sync = [start_in_sync; 16];
            let mut dirty = [false; 16];
            let mut offered = [false; 16];
            for o in ops {
                match o {
                    Op::Mark(x) => { r.mark(x).unwrap(); dirty[x as usize] = true; }
                    Op::Clear(x) => { r.clear(x).unwrap(); dirty[x as usize] = false; }
                    Op::Work => {
                        if let Some(x) = r.resync_work() {
                            prop_assert!(!sync[x as usize], "offered region {} that is in sync", x);
                            prop_assert!(!offered[x as usize], "offered region {} twice", x);
                            offered[x as usize] = true;
                        } else {
                            prop_assert!((0..16).all(|i| sync[i] || offered[i]), "no work offered though some is left");
                        }
                    }
                    Op::SetSync(x, s) => { r.set_sync(x, s).unwrap(); sync[x as usize] = s; offered[x as usize] = false; }
                    Op::Resume => { r.resume(); offered.fill(false); }
                }
                prop_assert_eq!(r.sync_count(), sync.iter().filter(|s| **s).count() as u64);
                prop_assert_eq!(r.dirty_count(), dirty.iter().filter(|d| **d).count() as u64);
                for i in 0..n {
                    prop_assert_eq!(r.in_sync(i).unwrap(), sync[i as usize]);
                    prop_assert_eq!(r.is_clean(i).unwrap(), sync[i as usize] && !dirty[i as usize]);
                }
            }
        }
    }
}
