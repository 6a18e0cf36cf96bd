// SPDX-License-Identifier: GPL-2.0

//! The connector transport: sends a request to the log server and waits for its reply.
//!
//! Requests use preallocated slots: each slot owns a message buffer, a reply buffer and a
//! completion, so the I/O path allocates nothing. Many requests, from many logs, may wait at
//! once; a reply finds its waiter by the request's seq. A request that gets no reply within
//! 15 s, or a reply of `-EAGAIN`, is sent again with a new seq; a late reply to the old seq
//! matches nothing and is dropped.

use kernel::{
    new_condvar, new_spinlock,
    prelude::*,
    str::BStr,
    sync::{atomic::Relaxed, Arc, CondVar, SpinLock},
    time::{msecs_to_jiffies, Instant, Monotonic},
};

use crate::{
    stats::{Diagnostics, LogStats, StatsFile, TransportStats},
    sys::{
        connector::{self, MessageBuf},
        wait::{TimedCompletion, WaitOutcome},
    },
    uapi::{
        encode_message, Header, Reply, RequestType, CN_MSG_SIZE, HEADER_SIZE, MAX_REQUEST_PAYLOAD,
    },
};

/// Requests that may be in flight at once; further callers wait for a free slot.
const SLOTS: usize = 64;
/// Bytes of one outgoing message: envelope, header and the largest payload.
const MESSAGE_SIZE: usize = CN_MSG_SIZE + HEADER_SIZE + MAX_REQUEST_PAYLOAD;
/// Largest reply payload a request can take; larger replies fail with `ENOSPC`.
pub(crate) const MAX_REPLY: usize = 512;
/// How long to wait for a reply before sending the request again (as upstream).
const REPLY_TIMEOUT_MS: u32 = 15_000;
/// Entries of the seq → slot index; a power of two above [`SLOTS`].
const SEQ_INDEX: usize = 256;
const _: () = assert!(SLOTS <= 256 && SEQ_INDEX.is_power_of_two() && SEQ_INDEX > SLOTS);

/// Who a request is for: one log instance.
#[derive(Clone, Copy)]
pub(crate) struct LogAddress<'a> {
    /// The log's UUID.
    pub(crate) uuid: &'a [u8],
    /// The instance's local unique id.
    pub(crate) luid: u64,
    /// Where the log counts its requests.
    pub(crate) stats: &'a LogStats,
}

/// How the server answered one send.
#[derive(Clone, Copy)]
struct Outcome {
    /// 0 or a negative errno.
    error: i32,
    /// Reply payload bytes copied to the slot's reply buffer.
    len: usize,
}

/// A request waiting for its reply.
struct Waiter {
    seq: u32,
    /// Reply bytes the caller can take.
    capacity: usize,
    /// Set by the receive path when the reply arrives.
    outcome: Option<Outcome>,
}

/// Exclusive use of one slot, with its message buffer.
struct Ticket {
    slot: usize,
    message: KBox<MessageBuf<MESSAGE_SIZE>>,
}

/// The transport's lock-protected state.
struct Inner {
    /// The next seq to hand out; one wrapping counter for all requests.
    next_seq: u32,
    /// Per slot: the request waiting in it, if any.
    waiters: KVec<Option<Waiter>>,
    /// `seq % SEQ_INDEX` → the slot that last sent such a seq: finds a reply's waiter in one
    /// step. Only a hint: two waiting seqs 256 apart share an entry, and the older one is then
    /// found by a scan.
    slot_by_seq: [u8; SEQ_INDEX],
    /// Per slot: the payload of its reply.
    replies: KVec<[u8; MAX_REPLY]>,
    /// Slots no request uses.
    free: KVec<Ticket>,
}

/// The link to the log server, shared by every log.
#[pin_data]
pub(crate) struct Transport {
    #[pin]
    inner: SpinLock<Inner>,
    /// Signalled when a slot becomes free.
    #[pin]
    slot_freed: CondVar,
    /// Per slot: completed when its reply arrives.
    done: KVec<Pin<KBox<TimedCompletion>>>,
    stats: Arc<TransportStats>,
    _stats_file: StatsFile<TransportStats>,
    /// Where logs show their counters.
    pub(crate) diagnostics: Diagnostics,
}

/// What one send of a request came to.
enum Attempt {
    /// The server answered.
    Answered(Outcome),
    /// No answer in time.
    TimedOut(u32),
}

impl Transport {
    /// Allocates the transport and all its slots; seqs start at `first_seq`.
    pub(crate) fn new(first_seq: u32) -> Result<Arc<Self>> {
        let mut waiters = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        let mut replies = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        let mut free = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        let mut done = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        for slot in 0..SLOTS {
            waiters.push(None, GFP_KERNEL)?;
            replies.push([0; MAX_REPLY], GFP_KERNEL)?;
            let message = KBox::new(MessageBuf::new(), GFP_KERNEL)?;
            free.push(Ticket { slot, message }, GFP_KERNEL)?;
            done.push(
                KBox::pin_init(TimedCompletion::new(), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let diagnostics = Diagnostics::new();
        let stats = Arc::new(TransportStats::new(), GFP_KERNEL)?;
        let stats_file = diagnostics.transport_file(stats.clone())?;
        let inner = Inner {
            next_seq: first_seq,
            waiters,
            slot_by_seq: [0; SEQ_INDEX],
            replies,
            free,
        };
        Arc::pin_init(
            try_pin_init!(Self {
                inner <- new_spinlock!(inner, "Transport::inner"),
                slot_freed <- new_condvar!("Transport::slot_freed"),
                done,
                stats,
                _stats_file: stats_file,
                diagnostics,
            }),
            GFP_KERNEL,
        )
    }

    /// Sends a request and waits for the server's reply; returns the reply's payload size.
    ///
    /// The reply payload lands in `reply`; one larger than `reply` fails with `ENOSPC`. Fails
    /// with `ESRCH` at once when no server listens, with the server's error when it reports
    /// one, and with `EINTR` when the calling task is killed. May sleep.
    pub(crate) fn request(
        &self,
        to: LogAddress<'_>,
        kind: RequestType,
        payload: &[u8],
        reply: &mut [u8],
    ) -> Result<usize> {
        if payload.len() > MAX_REQUEST_PAYLOAD {
            return Err(EINVAL);
        }
        let capacity = reply.len().min(MAX_REPLY);
        let start = Instant::<Monotonic>::now();
        let mut ticket = self.take_ticket();
        let result = loop {
            match self.send_and_wait(&mut ticket, to, kind, payload, capacity, reply) {
                Ok(Attempt::Answered(o)) if o.error == EAGAIN.to_errno() => {
                    to.stats.eagain();
                    continue;
                }
                Ok(Attempt::Answered(o)) => break outcome_result(o),
                Ok(Attempt::TimedOut(seq)) => {
                    to.stats.timed_out();
                    pr_warn!(
                        "[{}] Request timed out: [{}/{}] - retrying\n",
                        uuid_tail(to.uuid),
                        kind.name(),
                        seq
                    );
                    continue;
                }
                Err(e) => break Err(e),
            }
        };
        self.return_ticket(ticket);
        to.stats.request_done(kind, start.elapsed(), result.is_ok());
        result
    }

    /// Sends the request once with a fresh seq and waits for its answer.
    fn send_and_wait(
        &self,
        ticket: &mut Ticket,
        to: LogAddress<'_>,
        kind: RequestType,
        payload: &[u8],
        capacity: usize,
        reply: &mut [u8],
    ) -> Result<Attempt> {
        let slot = ticket.slot;
        let done = &self.done[slot];
        // Nobody else uses this slot's completion while we hold the ticket.
        done.reset();
        let seq = {
            let mut inner = self.inner.lock();
            let seq = inner.next_seq;
            inner.next_seq = seq.wrapping_add(1);
            inner.waiters[slot] = Some(Waiter {
                seq,
                capacity,
                outcome: None,
            });
            // CAST: `SLOTS` is at most 256 (checked at build time), so the slot fits.
            inner.slot_by_seq[seq_index(seq)] = slot as u8;
            seq
        };
        let header =
            Header::request(to.uuid, to.luid, kind, seq, payload.len()).map_err(|_| EINVAL)?;
        let sent = encode_message(&mut ticket.message.0, &header, payload)
            .map_err(|_| EINVAL)
            .and_then(|_| connector::send(&mut ticket.message));
        if let Err(e) = sent {
            self.inner.lock().waiters[slot] = None;
            if e != ESRCH {
                pr_err!(
                    "Unable to send log request [{}] to userspace: {}\n",
                    kind.name(),
                    e.to_errno()
                );
            }
            return Err(e);
        }
        let waited = done.wait(msecs_to_jiffies(REPLY_TIMEOUT_MS));
        let mut inner = self.inner.lock();
        let outcome = inner.waiters[slot].take().and_then(|w| w.outcome);
        match (outcome, waited) {
            (Some(o), _) => {
                reply[..o.len].copy_from_slice(&inner.replies[slot][..o.len]);
                Ok(Attempt::Answered(o))
            }
            (None, WaitOutcome::Killed) => Err(EINTR),
            (None, _) => Ok(Attempt::TimedOut(seq)),
        }
    }

    /// Takes a free slot, waiting for one if all are in use.
    fn take_ticket(&self) -> Ticket {
        let mut inner = self.inner.lock();
        loop {
            if let Some(t) = inner.free.pop() {
                return t;
            }
            self.slot_freed.wait(&mut inner);
        }
    }

    fn return_ticket(&self, ticket: Ticket) {
        let mut inner = self.inner.lock();
        // `free` has room for every slot, so this never allocates and never fails.
        if inner.free.push_within_capacity(ticket).is_err() {
            pr_err!("transport slot list overflow\n");
        }
        drop(inner);
        self.slot_freed.notify_one();
    }

    /// Handles one message from userspace: completes the request it answers, if any.
    ///
    /// Runs in the sender's process context; does not sleep.
    pub(crate) fn receive(&self, msg: &[u8], privileged: bool) {
        if !privileged {
            self.stats.unprivileged.fetch_add(1, Relaxed);
            return;
        }
        let reply = match Reply::parse(msg) {
            Ok(r) => r,
            Err(_) => {
                self.stats.malformed.fetch_add(1, Relaxed);
                return;
            }
        };
        let seq = reply.seq();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let waits_for =
            |w: &Option<Waiter>| matches!(w, Some(w) if w.seq == seq && w.outcome.is_none());
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
        waiter.outcome = Some(outcome);
        // Completed under the lock: the waiter cannot reuse the slot before this returns.
        self.done[slot].complete();
    }
}

/// Where `seq` goes in [`Inner::slot_by_seq`].
fn seq_index(seq: u32) -> usize {
    // CAST: the remainder is below `SEQ_INDEX`, which fits `usize`.
    (seq % SEQ_INDEX as u32) as usize
}

/// A bare ACK carries a positive errno.
fn ack_to_error(ack: u32) -> i32 {
    i32::try_from(ack).map_or(EPROTO.to_errno(), |a| -a)
}

/// Turns the server's answer into the request's result.
///
/// A positive error is a server bug; it must not read as success or as a count.
fn outcome_result(o: Outcome) -> Result<usize> {
    match o.error {
        0 => Ok(o.len),
        e if (-4095..0).contains(&e) => Err(Error::from_errno(e)),
        _ => Err(EPROTO),
    }
}

/// The last 8 characters of a UUID, as upstream's messages show it.
pub(crate) fn uuid_tail(uuid: &[u8]) -> &BStr {
    BStr::from_bytes(&uuid[uuid.len().saturating_sub(8)..])
}
