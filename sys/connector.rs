// SPDX-License-Identifier: GPL-2.0

//! The connector: the callback that receives the log server's replies, and the sender.

use core::{
    ffi::c_void,
    ptr::null_mut,
    sync::atomic::{AtomicPtr, Ordering},
};

use crate::uapi::{CnMsg, CN_MSG_SIZE};
use kernel::{
    bindings,
    error::to_result,
    prelude::*,
    sync::{rcu, Arc, ArcBorrow},
};

use super::raw;
use crate::transfer::Transport;

/// The handler of the one registration; the connector callback has no context pointer.
///
/// Holds `Arc::as_ptr` of the registration's handler while registered, null otherwise.
static HANDLER: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

/// Connector callbacks for a few `{idx, val}` ids, all handled by one [`Transport`], removed
/// again on drop.
///
/// # Invariants
///
/// While this exists, [`HANDLER`] points to `handler` and the callback is registered for every
/// id in `ids`.
pub(crate) struct Registration<const N: usize> {
    handler: Arc<Transport>,
    ids: [raw::cb_id; N],
}

impl<const N: usize> Registration<N> {
    /// Registers `handler` for messages to each `idx:val`, shown with its name in
    /// /proc/net/connector.
    pub(crate) fn new(
        idx: u32,
        vals: [(u32, &'static CStr); N],
        handler: Arc<Transport>,
    ) -> Result<Self> {
        let ptr = Arc::as_ptr(&handler).cast_mut().cast::<c_void>();
        if HANDLER
            .compare_exchange(null_mut(), ptr, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        let ids = vals.map(|(val, _)| raw::cb_id { idx, val });
        for (done, (id, (_, name))) in ids.iter().zip(vals).enumerate() {
            // SAFETY: `id` and `name` are valid for the call (the connector copies both), and
            // `callback` has the signature the connector expects.
            let r = unsafe { raw::cn_add_callback(id, name.as_char_ptr(), Some(callback)) };
            if let Err(e) = to_result(r) {
                for id in &ids[..done] {
                    // SAFETY: The ids before `done` were registered above.
                    unsafe { raw::cn_del_callback(id) };
                }
                HANDLER.store(null_mut(), Ordering::Release);
                rcu::synchronize_rcu();
                return Err(e);
            }
        }
        // INVARIANT: `HANDLER` was set above and every callback is registered.
        Ok(Self { handler, ids })
    }
}

impl<const N: usize> Drop for Registration<N> {
    fn drop(&mut self) {
        for id in &self.ids {
            // SAFETY: By the type invariant the callback for `id` is registered.
            unsafe { raw::cn_del_callback(id) };
        }
        // `cn_del_callback` does not wait for callbacks still running: they run inside an RCU
        // read-side section, so clearing the pointer and waiting for a grace period leaves
        // none that can still see `self.handler`.
        HANDLER.store(null_mut(), Ordering::Release);
        rcu::synchronize_rcu();
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
unsafe extern "C" fn callback(msg: *mut raw::cn_msg, nsp: *mut bindings::netlink_skb_parms) {
    let _guard = rcu::read_lock();
    let handler = HANDLER
        .load(Ordering::Acquire)
        .cast::<Transport>()
        .cast_const();
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
    // SAFETY: `handler` is non-null, so the registration that set it has not finished
    // dropping: it waits for a grace period after clearing `HANDLER`, and we are inside an RCU
    // read-side section, so its `Arc` is alive.
    unsafe { &*handler }.receive(bytes, privileged);
}

/// The transport of the current registration, if any.
///
/// Logs take their reference in `ctr`: device-mapper holds a reference on the module while a
/// log exists, so the registration outlives every log.
pub(crate) fn registered_transport() -> Option<Arc<Transport>> {
    let _guard = rcu::read_lock();
    let ptr = HANDLER.load(Ordering::Acquire).cast::<Transport>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: A non-null `HANDLER` is `Arc::as_ptr` of a live registration's `Arc`, which stays
    // alive until a grace period after it is cleared; we are inside a read-side section.
    let borrowed = unsafe { ArcBorrow::from_raw(ptr) };
    Some(borrowed.into())
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

/// Broadcasts the message at the start of `buf` to the group of its connector id.
///
/// Fails with `ESRCH` when no server listens on that group.
pub(crate) fn send<const N: usize>(buf: &mut MessageBuf<N>) -> Result {
    let cn = CnMsg::decode(&buf.0).map_err(|_| EINVAL)?;
    if CN_MSG_SIZE + usize::from(cn.len) > N {
        return Err(EINVAL);
    }
    // SAFETY: `buf` is aligned for `cn_msg` and holds the envelope and its `len` bytes (checked
    // above); the connector copies the message before returning. Port and group 0 make it
    // broadcast to the group registered for the envelope's id.
    to_result(unsafe { raw::cn_netlink_send(buf.0.as_mut_ptr().cast(), 0, 0, GFP_NOIO) })
}
