// SPDX-License-Identifier: GPL-2.0

//! The connector: a callback that hands userspace's messages to a [`Receiver`], and the sender.

use core::{
    ffi::c_void,
    marker::PhantomData,
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
pub(crate) trait Receiver: Send + Sync + 'static {
    /// Handles one message: the `cn_msg` envelope and its payload.
    ///
    /// `privileged` says whether the sender holds `CAP_SYS_ADMIN`. Runs in the sender's
    /// process context, inside an RCU read-side section: must not sleep.
    fn receive(&self, msg: &[u8], privileged: bool);
}

/// The receiver of the one registration; the connector callback has no context pointer.
///
/// Holds `Arc::as_ptr` of the registration's receiver while registered, null otherwise. Only
/// [`Registration::<T>::new`] sets it, and only while it is null, so the callback registered
/// for `T` finds a `T` here.
static HANDLER: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

/// Connector callbacks for a few `{idx, val}` ids, all handled by one [`Receiver`], removed
/// again on drop. One registration may exist at a time.
///
/// # Invariants
///
/// While this exists, [`HANDLER`] points to `handler` and `callback::<T>` is registered for
/// every id in `ids`.
pub(crate) struct Registration<T: Receiver, const N: usize> {
    handler: Arc<T>,
    ids: [raw::cb_id; N],
    _receiver: PhantomData<T>,
}

impl<T: Receiver, const N: usize> Registration<T, N> {
    /// Registers `handler` for messages to each `idx:val`, shown with its name in
    /// /proc/net/connector. Fails with `EBUSY` while another registration exists.
    pub(crate) fn new(idx: u32, vals: [(u32, &'static CStr); N], handler: Arc<T>) -> Result<Self> {
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
            // `callback::<T>` has the signature the connector expects.
            let r = unsafe { raw::cn_add_callback(id, name.as_char_ptr(), Some(callback::<T>)) };
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
        Ok(Self {
            handler,
            ids,
            _receiver: PhantomData,
        })
    }
}

impl<T: Receiver, const N: usize> Drop for Registration<T, N> {
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
unsafe extern "C" fn callback<T: Receiver>(
    msg: *mut raw::cn_msg,
    nsp: *mut bindings::netlink_skb_parms,
) {
    let _guard = rcu::read_lock();
    let handler = HANDLER.load(Ordering::Acquire).cast::<T>().cast_const();
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
    // SAFETY: `handler` is non-null, so the registration that set it, a `Registration<T, _>`
    // (only it registers this callback), has not finished dropping: it waits for a grace
    // period after clearing `HANDLER`, and we are inside an RCU read-side section, so its
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
