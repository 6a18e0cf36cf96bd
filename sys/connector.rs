// SPDX-License-Identifier: GPL-2.0

//! The connector: a callback that hands userspace's messages to a [`Receiver`], and the sender.

use core::{
    ptr::null_mut,
    sync::atomic::{AtomicPtr, Ordering},
};

use kernel::{
    bindings,
    error::to_result,
    prelude::*,
    sync::{rcu, Arc},
};

use super::raw;
use crate::uapi::{CnMsg, CN_MSG_SIZE};

/// What handles the messages userspace sends to a [`Registration`]'s ids.
pub(crate) trait Receiver: Send + Sync + Sized + 'static {
    /// This type's slot: a `static` of the implementation's own (the connector callback has no
    /// context pointer, so it finds its receiver there).
    fn slot() -> &'static ReceiverSlot<Self>;

    /// Handles one message: the `cn_msg` envelope and its payload.
    ///
    /// `privileged` says whether the sender holds `CAP_SYS_ADMIN`. Runs in the sender's
    /// process context, inside an RCU read-side section: must not sleep.
    fn receive(&self, msg: &[u8], privileged: bool);
}

/// Where the registration of a receiver type keeps its receiver for the callback.
///
/// Holds `Arc::as_ptr` of the registered receiver while a [`Registration<T, _>`] exists, null
/// otherwise: only that registration sets it, so whatever the callback finds is a `T`, even a
/// callback that the connector started before the registration it belonged to went away.
pub(crate) struct ReceiverSlot<T>(AtomicPtr<T>);

impl<T> ReceiverSlot<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        Self(AtomicPtr::new(null_mut()))
    }
}

/// Connector callbacks for a few `{idx, val}` ids, all handled by one [`Receiver`], removed
/// again on drop. One registration per receiver type may exist at a time.
///
/// # Invariants
///
/// While this exists, `T::slot()` points to `handler` and `callback::<T>` is registered for
/// every id in `ids`.
pub(crate) struct Registration<T: Receiver, const N: usize> {
    /// Keeps the receiver the slot points to alive.
    handler: Arc<T>,
    ids: [raw::cb_id; N],
}

impl<T: Receiver, const N: usize> Registration<T, N> {
    /// Registers `handler` for messages to each `idx:val`, shown with its name in
    /// /proc/net/connector. Fails with `EBUSY` while another registration of `T` exists.
    pub(crate) fn new(idx: u32, vals: [(u32, &'static CStr); N], handler: Arc<T>) -> Result<Self> {
        let slot = &T::slot().0;
        let ptr = Arc::as_ptr(&handler).cast_mut();
        if slot
            .compare_exchange(null_mut(), ptr, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        let ids = vals.map(|(val, _)| raw::cb_id { idx, val });
        for (done, (id, (_, name))) in ids.iter().zip(vals).enumerate() {
            // SAFETY: `id` and `name` are valid for the call (the connector copies both), and
            // `callback::<T>` has the signature the connector expects.
            let r = unsafe { raw::cn_add_callback(id, name.as_char_ptr(), Some(callback::<T>)) };
            if let Err(e) = to_result(r) {
                for id in &ids[..done] {
                    // SAFETY: The ids before `done` were registered above.
                    unsafe { raw::cn_del_callback(id) };
                }
                slot.store(null_mut(), Ordering::Release);
                rcu::synchronize_rcu();
                return Err(e);
            }
        }
        // INVARIANT: The slot was set above and every callback is registered.
        Ok(Self { handler, ids })
    }
}

impl<T: Receiver, const N: usize> Drop for Registration<T, N> {
    fn drop(&mut self) {
        for id in &self.ids {
            // SAFETY: By the type invariant the callback for `id` is registered.
            unsafe { raw::cn_del_callback(id) };
        }
        // `cn_del_callback` does not wait for callbacks still running. Each reads the slot
        // inside an RCU read-side section, so clearing it and waiting for a grace period leaves
        // none that can still see `self.handler`; one that starts later finds the slot empty
        // (or, after a new registration of `T`, that registration's receiver).
        T::slot().0.store(null_mut(), Ordering::Release);
        rcu::synchronize_rcu();
        // Only now may the receiver go: `handler` drops after this returns.
        let _ = &self.handler;
    }
}

/// The connector callback.
///
/// # Safety
///
/// Only called by the connector core, with `msg` pointing to a `cn_msg` followed by `msg->len`
/// bytes (the core checks the netlink length against it before calling), and `nsp` to the
/// message's netlink control block (or null).
unsafe extern "C" fn callback<T: Receiver>(
    msg: *mut raw::cn_msg,
    nsp: *mut bindings::netlink_skb_parms,
) {
    let _guard = rcu::read_lock();
    let handler = T::slot().0.load(Ordering::Acquire).cast_const();
    if handler.is_null() {
        return;
    }
    // SAFETY: Per the function's contract `msg` is a valid `cn_msg`.
    let len = usize::from(unsafe { (*msg).len });
    let start = msg.cast::<u8>().cast_const();
    // SAFETY: Per the function's contract the envelope and `len` bytes after it are readable
    // for the duration of the call.
    let bytes = unsafe { core::slice::from_raw_parts(start, CN_MSG_SIZE + len) };
    // Netlink's semantics, as `netlink_capable()`: the task that sent (connector input runs
    // synchronously in the sender's `sendmsg()`) and, unless the message named its
    // destination, the socket's opener must hold CAP_SYS_ADMIN. Upstream checks only the task.
    let privileged = if nsp.is_null() {
        // SAFETY: `capable` may be called from any process context.
        unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
    } else {
        // SAFETY: `nsp` is the control block of the message being delivered, valid for the
        // call; `init_user_ns` is a static that lives for ever and is only read.
        unsafe {
            bindings::__netlink_ns_capable(
                nsp,
                core::ptr::addr_of_mut!(bindings::init_user_ns),
                bindings::CAP_SYS_ADMIN as i32,
            )
        }
    };
    // SAFETY: Only a `Registration<T, _>` fills `T::slot()`, with its `Arc<T>`'s pointer. That
    // registration has not finished dropping, since the pointer is still there: it waits for a
    // grace period after clearing the slot, and we are inside an RCU read-side section, so the
    // `Arc<T>` is alive.
    unsafe { &*handler }.receive(bytes, privileged);
}

/// A message buffer aligned for `struct cn_msg`.
#[repr(C, align(8))]
pub(crate) struct MessageBuf<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> MessageBuf<N> {
    /// A zeroed buffer.
    pub(crate) const fn new() -> Self {
        Self([0; N])
    }
}

/// `GFP_NOIO`: sending runs on the mirror's I/O path, so it must not start I/O to reclaim.
const GFP_NOIO: bindings::gfp_t =
    bindings::GFP_KERNEL & !((1 << bindings::___GFP_IO_BIT) | (1 << bindings::___GFP_FS_BIT));

/// Broadcasts the message at the start of `buf` to the group of its connector id, which is
/// the id's `idx` (the connector registers every callback with that group). Naming the group
/// spares the connector a search of its callbacks under a lock on every message.
///
/// Fails with `ESRCH` when no server listens on that group.
pub(crate) fn send<const N: usize>(buf: &mut MessageBuf<N>) -> Result {
    let cn = CnMsg::decode(&buf.0).map_err(|_| EINVAL)?;
    if CN_MSG_SIZE + usize::from(cn.len) > N {
        return Err(EINVAL);
    }
    // SAFETY: `buf` is aligned for `cn_msg` and holds the envelope and its `len` bytes (checked
    // above); the connector copies the message before returning. Port 0 and a group make it
    // a broadcast to that group.
    to_result(unsafe { raw::cn_netlink_send(buf.0.as_mut_ptr().cast(), 0, cn.idx, GFP_NOIO) })
}
