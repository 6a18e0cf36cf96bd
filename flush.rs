// SPDX-License-Identifier: GPL-2.0

//! Marks and clears recorded between two flushes.
//!
//! `mark_region` is called under dm-region-hash's rwlock, so recording must not sleep: the
//! lists are preallocated and grow only with `GFP_NOWAIT`. A mark that cannot be recorded is
//! never dropped silently: the next flush fails, so the mirror sees a log failure before the
//! write it guards is issued.

use kernel::{new_spinlock, prelude::*, sync::SpinLock};

/// Entries each list holds without allocating.
const RESERVED: usize = 256;

/// The lock-protected lists.
struct Pending {
    marks: KVec<u64>,
    clears: KVec<u64>,
    /// A mark was lost to an allocation failure since the last flush.
    lost_mark: bool,
}

/// Regions waiting to be sent at the next flush.
#[pin_data]
pub(crate) struct FlushBatch {
    #[pin]
    pending: SpinLock<Pending>,
}

/// Appends without sleeping: within the reserve, else a `GFP_NOWAIT` growth.
fn push_atomic(list: &mut KVec<u64>, region: u64) -> bool {
    match list.push_within_capacity(region) {
        Ok(()) => true,
        Err(_) => list.push(region, GFP_NOWAIT).is_ok(),
    }
}

/// Moves up to `out.len()` entries from the end of `list` into `out`.
fn take_into(list: &mut KVec<u64>, out: &mut [u64]) -> usize {
    let n = list.len().min(out.len());
    let start = list.len() - n;
    out[..n].copy_from_slice(&list[start..]);
    list.truncate(start);
    n
}

impl FlushBatch {
    /// Empty lists with their reserve allocated.
    pub(crate) fn new() -> Result<Pin<KBox<Self>>> {
        let pending = Pending {
            marks: KVec::with_capacity(RESERVED, GFP_KERNEL)?,
            clears: KVec::with_capacity(RESERVED, GFP_KERNEL)?,
            lost_mark: false,
        };
        KBox::pin_init(
            pin_init!(Self { pending <- new_spinlock!(pending, "FlushBatch::pending") }),
            GFP_KERNEL,
        )
    }

    /// Records a mark. Never sleeps.
    pub(crate) fn mark(&self, region: u64) {
        let mut p = self.pending.lock();
        if !push_atomic(&mut p.marks, region) {
            p.lost_mark = true;
        }
    }

    /// Records a clear; returns false if it had to be dropped. Never sleeps.
    pub(crate) fn clear(&self, region: u64) -> bool {
        push_atomic(&mut self.pending.lock().clears, region)
    }

    /// Takes up to `out.len()` pending clears.
    pub(crate) fn take_clears(&self, out: &mut [u64]) -> usize {
        take_into(&mut self.pending.lock().clears, out)
    }

    /// Takes up to `out.len()` pending marks.
    pub(crate) fn take_marks(&self, out: &mut [u64]) -> usize {
        take_into(&mut self.pending.lock().marks, out)
    }

    /// Whether a mark was lost since the last call; resets the flag.
    pub(crate) fn take_lost_mark(&self) -> bool {
        core::mem::take(&mut self.pending.lock().lost_mark)
    }
}
