// SPDX-License-Identifier: GPL-2.0

//! Cancelling delayed work: the kernel crate queues delayed work but can neither flush nor
//! cancel it.

use kernel::{
    bindings,
    sync::Arc,
    workqueue::{HasDelayedWork, WorkItem},
};

/// Cancels `this`'s delayed work and waits until no run of it is in progress.
///
/// A queued instance holds a reference to `this` (`Arc::into_raw` at enqueue); when the
/// cancel removes it from the queue, that reference is dropped here. Afterwards nothing of
/// the work is queued or running, unless it is queued again. Returns whether it was queued.
///
/// May sleep.
pub(crate) fn cancel_delayed_sync<T, const ID: u64>(this: &Arc<T>) -> bool
where
    T: HasDelayedWork<T, ID> + WorkItem<ID, Pointer = Arc<T>>,
{
    let ptr = Arc::as_ptr(this).cast_mut();
    // SAFETY: `ptr` points to a live `T` (we hold a reference), as `raw_get_work` requires.
    let work = unsafe { <T as kernel::workqueue::HasWork<T, ID>>::raw_get_work(ptr) };
    // CAST: by `HasDelayedWork`'s contract the `work_struct` is the `work` field of a
    // `delayed_work`, its first field, so both share an address; `Work` is transparent over
    // `work_struct`.
    let raw = work.cast::<bindings::delayed_work>();
    // SAFETY: `raw` is an initialised `delayed_work` inside `*this`, alive for the call;
    // cancelling is allowed whether or not it is queued or running.
    let was_queued = unsafe { bindings::cancel_delayed_work_sync(raw) };
    if was_queued {
        // SAFETY: The cancelled instance was queued by `enqueue_delayed` with the pointer that
        // `Arc::into_raw` gave for this same allocation, which is `Arc::as_ptr(this)`; it will
        // never run, so its reference is ours to drop, exactly once.
        drop(unsafe { Arc::from_raw(ptr.cast_const()) });
    }
    was_queued
}
