// SPDX-License-Identifier: GPL-2.0

//! Running delayed work early: the kernel crate queues delayed work but cannot flush it.

use kernel::{bindings, workqueue::DelayedWork};

/// If `work`'s timer is pending, runs it now; then waits until no run of it is in progress.
///
/// May sleep.
pub(crate) fn flush_delayed<T: ?Sized, const ID: u64>(work: &DelayedWork<T, ID>) {
    // CAST: `DelayedWork` is `repr(transparent)` over `Opaque<delayed_work>`, which is
    // `repr(transparent)` over the C struct.
    let raw = core::ptr::from_ref(work)
        .cast_mut()
        .cast::<bindings::delayed_work>();
    // SAFETY: `raw` points to a `delayed_work` that `DelayedWork::new` initialised and that
    // `work` keeps alive for the call; flushing is allowed whether or not it is queued.
    unsafe { bindings::flush_delayed_work(raw) };
}
