// SPDX-License-Identifier: GPL-2.0

//! A completion with a killable, timed wait.
//!
//! `kernel::sync::Completion` only waits without a timeout, and `CondVar` only offers an
//! interruptible timed wait, which would spin while a non-fatal signal is pending. A request
//! to the log server needs both a timeout (to resend) and a way out for a killed process.

use kernel::{bindings, prelude::*, time::Jiffies, types::Opaque};

/// How a wait on a [`TimedCompletion`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// `complete()` was called.
    Completed,
    /// The timeout passed first.
    TimedOut,
    /// The waiting task received a fatal signal.
    Killed,
}

/// A `struct completion` that one waiter waits on, with a timeout.
#[pin_data]
pub(crate) struct TimedCompletion {
    #[pin]
    inner: Opaque<bindings::completion>,
}

// SAFETY: A `struct completion` may be completed and waited on from any task.
unsafe impl Send for TimedCompletion {}
// SAFETY: All operations on a `struct completion` are internally synchronised.
unsafe impl Sync for TimedCompletion {}

impl TimedCompletion {
    /// An initialiser for a completion that is not done.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` points to valid, uninitialised memory for a `struct completion`.
            inner <- Opaque::ffi_init(|slot| unsafe { bindings::init_completion(slot) }),
        })
    }

    /// Takes a `complete()` that no wait has taken, without waiting; returns whether there
    /// was one.
    ///
    /// A waiter that timed out just before the completion came must take it, or its next
    /// wait would return at once.
    pub(crate) fn take_pending(&self) -> bool {
        // SAFETY: `inner` is an initialised completion; trying a wait never sleeps.
        unsafe { bindings::try_wait_for_completion(self.inner.get()) }
    }

    /// Marks the completion done and wakes its waiter.
    pub(crate) fn complete(&self) {
        // SAFETY: `inner` is an initialised completion.
        unsafe { bindings::complete(self.inner.get()) };
    }

    /// Waits until completed, `timeout` jiffies pass, or the task is killed.
    pub(crate) fn wait(&self, timeout: Jiffies) -> WaitOutcome {
        let completion = self.inner.get();
        // SAFETY: `completion` is an initialised completion; the wait may sleep, which callers
        // of the transport are allowed to do.
        let r = unsafe { bindings::wait_for_completion_killable_timeout(completion, timeout) };
        match r {
            0 => WaitOutcome::TimedOut,
            r if r < 0 => WaitOutcome::Killed,
            _ => WaitOutcome::Completed,
        }
    }
}
