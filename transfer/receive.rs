// SPDX-License-Identifier: GPL-2.0

//! The receive path: a reply completes the request it answers; an announcement of a
//! (re)started server makes every waiting request go again; a withdrawal voids the in-sync
//! maps (`uapi/in_sync_map.rs`) before the server's `sendmsg` of it returns.
//!
//! Runs in the sending process's context from the connector callback: it never sleeps, and it
//! trusts nothing in a message, which any process with `CAP_SYS_ADMIN` can forge.

use kernel::{prelude::*, sync::atomic::Relaxed};

use super::{seq_index, Answer, Outcome, Transport, Waiter};
use crate::{
    sys::connector::{Receiver, ReceiverSlot},
    uapi::{Announce, CnMsg, Reply, RequestType, Withdrawal, CN_VAL_DM_USERSPACE_LOG_ANNOUNCE},
};

impl Transport {
    /// A (re)started server announced itself: every waiting request is sent again at once,
    /// and logs waiting to reconnect try now.
    fn announced(&self, msg: &[u8]) {
        let Ok(announce) = Announce::parse(msg) else {
            self.stats.malformed.fetch_add(1, Relaxed);
            return;
        };
        let mut resent = 0;
        let mut inner = self.inner.lock();
        self.presence.announced(announce.features);
        for (slot, waiter) in inner.waiters.iter_mut().enumerate() {
            if let Some(w @ Waiter { answer: None, .. }) = waiter {
                w.answer = Some(Answer::Resend);
                // Under the lock, as for replies.
                self.done[slot].complete();
                resent += 1;
            }
        }
        drop(inner);
        self.server_announced.notify_all();
        pr_info!(
            "userspace log server (pid {}, features {:#x}) announced itself: resending {} \
             waiting requests\n",
            announce.pid,
            announce.features,
            resent
        );
    }

    /// Handles the server's other message on the announcement's connector id.
    fn notice(&self, msg: &[u8]) {
        if Withdrawal::parse(msg).is_ok() {
            // Every log forgets its map: withdrawals are rare, and a map is learned again.
            self.presence.withdrawn();
        } else {
            self.announced(msg);
        }
    }
}

impl Receiver for Transport {
    fn slot() -> &'static ReceiverSlot<Self> {
        static SLOT: ReceiverSlot<Transport> = ReceiverSlot::new();
        &SLOT
    }

    /// Handles a server's announcement, or a reply, which completes the request it answers,
    /// if any.
    fn receive(&self, msg: &[u8], privileged: bool) {
        if !privileged {
            self.stats.unprivileged.fetch_add(1, Relaxed);
            return;
        }
        if CnMsg::decode(msg).is_ok_and(|cn| cn.val == CN_VAL_DM_USERSPACE_LOG_ANNOUNCE) {
            return self.notice(msg);
        }
        let reply = match Reply::parse(msg) {
            Ok(r) => r,
            Err(_) => {
                self.stats.malformed.fetch_add(1, Relaxed);
                return;
            }
        };
        self.presence.found();
        let seq = reply.seq();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        // A full reply must also name the request's type, and its log unless it names none:
        // a server that mixed up two requests must not answer one with the other's data. (A
        // bare ACK has only a seq; cmirrord answers with luid 0 once a request went through
        // its cluster.)
        let addressed = |w: &Waiter| match &reply {
            Reply::Ack { .. } => true,
            Reply::Full { header, .. } => {
                (header.luid == w.luid || header.luid == 0)
                    && RequestType::try_from(header.request_type).is_ok_and(|k| k == w.kind)
            }
        };
        let waits_for = |w: &Option<Waiter>| matches!(w, Some(w) if w.seq == seq && w.answer.is_none() && addressed(w));
        let hint = usize::from(inner.slot_by_seq[seq_index(seq)]);
        let slot = if waits_for(&inner.waiters[hint]) {
            Some(hint)
        } else {
            inner.waiters.iter().position(waits_for)
        };
        let Some((slot, Some(waiter))) = slot.map(|s| (s, &mut inner.waiters[s])) else {
            self.stats.unmatched.fetch_add(1, Relaxed);
            return;
        };
        let outcome = match reply {
            Reply::Ack { ack, .. } => Outcome {
                error: ack_to_error(ack),
                len: 0,
            },
            Reply::Full { data, .. } if data.len() > waiter.capacity => {
                pr_err!(
                    "Insufficient space to receive package [{}] ({} vs {})\n",
                    seq,
                    data.len(),
                    waiter.capacity
                );
                Outcome {
                    error: ENOSPC.to_errno(),
                    len: 0,
                }
            }
            Reply::Full { header, data } => {
                inner.replies[slot][..data.len()].copy_from_slice(data);
                Outcome {
                    error: header.error,
                    len: data.len(),
                }
            }
        };
        waiter.answer = Some(Answer::Reply(outcome));
        // Completed under the lock: the waiter cannot reuse the slot before this returns.
        self.done[slot].complete();
    }
}

/// A bare ACK carries a positive errno.
fn ack_to_error(ack: u32) -> i32 {
    i32::try_from(ack).map_or(EPROTO.to_errno(), |a| -a)
}
