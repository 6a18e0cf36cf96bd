// SPDX-License-Identifier: GPL-2.0

//! Plants one bug on purpose, chosen by `plant`, so that the test suite can show that the
//! debug kernel's detectors work on Rust code before it counts "0 reports" as meaning
//! anything: 1 leaks an allocation (kmemleak), 2 reads past the end of one (KASAN), 3 takes
//! two locks in both orders (lockdep). Each runs in a guest of its own; never load this
//! module anywhere else.

use kernel::{new_mutex, prelude::*, sync::Mutex};

module! {
    type: Detectors,
    name: "dmlu_detectors",
    authors: ["dm-log-userspace-rs developers"],
    description: "plants a leak, an out-of-bounds read or a lock inversion (test only)",
    license: "GPL",
    params: {
        plant: u32 {
            default: 0,
            description: "1: leak, 2: out-of-bounds read, 3: lock inversion",
        },
    },
}

struct Detectors;

/// Bytes of the allocation the out-of-bounds read overruns: not a size class, so the bytes
/// after it up to the slab object's end are KASAN's redzone.
const OOB_LEN: usize = 17;

impl kernel::Module for Detectors {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        match module_parameters::plant.value() {
            1 => leak()?,
            2 => read_out_of_bounds()?,
            3 => invert_locks()?,
            other => {
                pr_err!("plant={other}: choose 1 (leak), 2 (out of bounds) or 3 (lock inversion)\n");
                return Err(EINVAL);
            }
        }
        Ok(Self)
    }
}

/// Blocks the planted leak loses.
const LEAKS: usize = 8;

/// Allocates and forgets [`LEAKS`] blocks of 4 KiB, one call each, so that at most the last
/// address can linger in a stale stack slot (kmemleak scans stacks and would see it there).
fn leak() -> Result {
    for _ in 0..LEAKS {
        leak_one()?;
    }
    pr_info!("planted {LEAKS} leaks of 4096 bytes\n");
    Ok(())
}

#[inline(never)]
fn leak_one() -> Result {
    let lost = KBox::new([0x5au8; 4096], GFP_KERNEL)?;
    let _ = KBox::into_raw(lost);
    Ok(())
}

/// Reads one byte just past the end of a 17-byte allocation.
fn read_out_of_bounds() -> Result {
    let buf = KVec::<u8>::from_elem(1, OOB_LEN, GFP_KERNEL)?;
    let base = buf.as_ptr();
    // SAFETY: None: this read is the bug planted on purpose; it stays inside the slab object
    // that holds `buf` (the rest of its 32-byte size class), so it cannot fault, and KASAN is
    // expected to report it.
    let past_end = unsafe { core::ptr::read_volatile(base.add(OOB_LEN)) };
    pr_info!("read {past_end} past the end of a {OOB_LEN}-byte allocation\n");
    Ok(())
}

/// Takes lock A then B, then B then A, in one thread: lockdep must call it a possible
/// deadlock even though none happens here.
fn invert_locks() -> Result {
    let a = KBox::pin_init(new_mutex!(0u32, "dmlu_detectors::a"), GFP_KERNEL)?;
    let b = KBox::pin_init(new_mutex!(0u32, "dmlu_detectors::b"), GFP_KERNEL)?;
    lock_in_order(&a, &b);
    lock_in_order(&b, &a);
    pr_info!("took two locks in both orders\n");
    Ok(())
}

fn lock_in_order(first: &Mutex<u32>, second: &Mutex<u32>) {
    let mut x = first.lock();
    let mut y = second.lock();
    *x += 1;
    *y += 1;
}
