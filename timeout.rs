// SPDX-License-Identifier: GPL-2.0

//! The module's timeouts are `Delta`s; the kernel's waits and delayed work take jiffies.

use kernel::time::{msecs_to_jiffies, Delta, Jiffies};

/// `wait` in jiffies, rounded up, at least one millisecond's worth and at most `u32::MAX`
/// milliseconds' (a wait of nothing or less would not wait at all, or forever).
pub(crate) fn jiffies(wait: Delta) -> Jiffies {
    // CAST: clamped to a positive number of milliseconds below 2^32.
    msecs_to_jiffies(wait.as_millis_ceil().clamp(1, i64::from(u32::MAX)) as u32)
}
