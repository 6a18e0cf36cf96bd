// SPDX-License-Identifier: GPL-2.0

//! The connector transport: sends a request to the log server and waits for its reply.
//!
//! Requests use preallocated slots: each slot owns a message buffer, a reply buffer and a
//! completion, so the I/O path allocates nothing. Many requests, from many logs, may wait at
//! once; a reply finds its waiter by the request's seq. A request that gets no reply within
//! 15 s, or a reply of `-EAGAIN`, is sent again with a new seq; a late reply to the old seq
//! matches nothing and is dropped. When a (re)started server announces itself (this project's
//! extension, see `uapi/announce.rs`), every waiting request is sent again at once.
//!
//! Requests of a log with a bounded wait (`max_server_wait`) fail with `ETIMEDOUT` once the
//! server has been unreachable for longer than the bound.

mod receive;

use kernel::{
    new_condvar, new_spinlock,
    prelude::*,
    str::BStr,
    sync::{
        lock::{spinlock::SpinLockBackend, Guard},
        Arc, CondVar, CondVarTimeoutResult, SpinLock,
    },
    time::{Delta, Instant, Monotonic},
};

use crate::{
    bug,
    presence::{MapStamp, Presence},
    stats::{Diagnostics, LogStats, StatsFile, TransportStats, TransportView},
    sys::{
        connector::{self, MessageBuf},
        wait::{TimedCompletion, WaitOutcome},
    },
    timeout,
    uapi::{encode_request, RequestType, CN_MSG_SIZE, HEADER_SIZE, MAX_REQUEST_PAYLOAD},
};

/// Requests that may be in flight at once; further callers wait for a free slot.
const SLOTS: usize = 64;
/// Bytes of one outgoing message: envelope, header and the largest payload.
const MESSAGE_SIZE: usize = CN_MSG_SIZE + HEADER_SIZE + MAX_REQUEST_PAYLOAD;
/// Largest reply payload a request can take; larger replies fail with `ENOSPC`.
pub(crate) const MAX_REPLY: usize = 512;
/// How long to wait for a reply before sending the request again (as upstream).
const REPLY_TIMEOUT: Delta = Delta::from_millis(15_000);
/// Past its `max_server_wait`, a request still gets this long for an answer: a server that
/// answers ends the outage, so requests must keep reaching it.
const REPLY_TIMEOUT_PAST_BOUND: Delta = Delta::from_millis(100);
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
    /// How long the log may go without a server; `None`: forever.
    pub(crate) max_wait: Option<Delta>,
}

/// How the server answered one send.
#[derive(Clone, Copy)]
struct Outcome {
    /// 0 or a negative errno.
    error: i32,
    /// Reply payload bytes copied to the slot's reply buffer.
    len: usize,
}

/// What the receive path left for a waiting request.
#[derive(Clone, Copy)]
enum Answer {
    /// The server's reply.
    Reply(Outcome),
    /// A server announced itself: send the request again now.
    Resend,
}

/// A request waiting for its reply.
struct Waiter {
    seq: u32,
    /// The log instance that asked; a full reply must name it.
    luid: u64,
    /// What was asked; a full reply must be of this type.
    kind: RequestType,
    /// Reply bytes the caller can take.
    capacity: usize,
    /// Set by the receive path when the reply arrives.
    answer: Option<Answer>,
}

/// Exclusive use of one slot, with its message buffer.
struct Ticket {
    slot: usize,
    /// Taken back into the free list when a final answer frees the slot (the ticket is spent).
    message: Option<KBox<MessageBuf<MESSAGE_SIZE>>>,
    /// The seq registered for the slot's next send.
    seq: u32,
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
    /// Requests waiting for a free slot.
    slot_waiters: usize,
}

/// The link to the log server, shared by every log.
#[pin_data]
pub(crate) struct Transport {
    #[pin]
    inner: SpinLock<Inner>,
    /// Signalled when a slot becomes free.
    #[pin]
    slot_freed: CondVar,
    /// Signalled when a server announces itself.
    #[pin]
    server_announced: CondVar,
    /// Per slot: completed when its reply arrives.
    done: KVec<Pin<KBox<TimedCompletion>>>,
    /// Whether the server answers; announcements are counted there, under `inner`'s lock.
    presence: Arc<Presence>,
    stats: Arc<TransportStats>,
    _stats_file: StatsFile<TransportView>,
    /// Where logs show their counters.
    pub(crate) diagnostics: Diagnostics,
}

/// What one send of a request came to.
enum Attempt {
    /// The server answered for good (not `EAGAIN`): its slot is free again.
    Done(Outcome),
    /// The server answered `EAGAIN`: send again.
    Again,
    /// No answer in time to the send of `seq` at `sent`.
    TimedOut { seq: u32, sent: Instant<Monotonic> },
    /// A new server came: send again.
    Resend,
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
            free.push(
                Ticket {
                    slot,
                    message: Some(message),
                    seq: 0,
                },
                GFP_KERNEL,
            )?;
            done.push(
                KBox::pin_init(TimedCompletion::new(), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let diagnostics = Diagnostics::new()?;
        let presence = Arc::new(Presence::new(), GFP_KERNEL)?;
        let stats = Arc::new(TransportStats::new(), GFP_KERNEL)?;
        let stats_file = diagnostics.transport_file(presence.clone(), stats.clone())?;
        let inner = Inner {
            next_seq: first_seq,
            waiters,
            slot_by_seq: [0; SEQ_INDEX],
            replies,
            free,
            slot_waiters: 0,
        };
        Arc::pin_init(
            try_pin_init!(Self {
                inner <- new_spinlock!(inner, "Transport::inner"),
                slot_freed <- new_condvar!("Transport::slot_freed"),
                server_announced <- new_condvar!("Transport::server_announced"),
                done,
                presence,
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
            return Err(bug::broken(
                "a request payload larger than the protocol allows",
            ));
        }
        let start = Instant::<Monotonic>::now();
        let capacity = reply.len().min(MAX_REPLY);
        let mut ticket = self.take_ticket(to, kind, capacity)?;
        let result = loop {
            let attempt = match self.send_and_wait(&mut ticket, to, kind, payload, reply) {
                Ok(Attempt::Done(o)) => break outcome_result(o),
                Ok(Attempt::Again) => {
                    to.stats.eagain();
                    // A server that answers but keeps saying EAGAIN (a cluster minority) is
                    // as good as gone to the mirror: `max_server_wait` bounds it too.
                    if to.max_wait.is_some_and(|bound| start.elapsed() >= bound) {
                        to.stats.gave_up();
                        Err(ETIMEDOUT)
                    } else {
                        Ok(())
                    }
                }
                Ok(Attempt::Resend) => {
                    to.stats.announce_resent();
                    Ok(())
                }
                Ok(Attempt::TimedOut { seq, sent }) => {
                    to.stats.timed_out();
                    self.presence.lost(sent);
                    if self.past_bound(to.max_wait) {
                        Err(ETIMEDOUT)
                    } else {
                        pr_warn!(
                            "[{}] Request timed out: [{}/{}] - retrying\n",
                            uuid_tail(to.uuid),
                            kind.name(),
                            seq
                        );
                        Ok(())
                    }
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(()) => ticket.seq = self.inner.lock().register(ticket.slot, to, kind, capacity),
                Err(e) => {
                    self.return_ticket(ticket);
                    break Err(e);
                }
            }
        };
        to.stats.request_done(kind, start.elapsed(), result.is_ok());
        result
    }

    /// How long the server has been unreachable; `None` while it answers.
    pub(crate) fn unreachable_for(&self) -> Option<Delta> {
        self.presence.unreachable_for()
    }

    /// Whether the server has been unreachable for longer than `bound`.
    pub(crate) fn past_bound(&self, bound: Option<Delta>) -> bool {
        matches!((bound, self.unreachable_for()), (Some(b), Some(gone)) if gone >= b)
    }

    /// How long one send waits for its answer: 15 s, or less when that would overstep the
    /// log's bound on waiting for a missing server.
    fn reply_timeout(&self, bound: Option<Delta>) -> Delta {
        let left = match (bound, self.unreachable_for()) {
            (Some(b), Some(gone)) => b - gone,
            (Some(b), None) => b,
            (None, _) => return REPLY_TIMEOUT,
        };
        if left < REPLY_TIMEOUT_PAST_BOUND {
            REPLY_TIMEOUT_PAST_BOUND
        } else if left > REPLY_TIMEOUT {
            REPLY_TIMEOUT
        } else {
            left
        }
    }

    /// Announcements received so far.
    pub(crate) fn announcements(&self) -> u64 {
        self.presence.announcements()
    }

    /// The extensions the server announced (`FEATURE_*`); none if it did not announce.
    pub(crate) fn server_features(&self) -> u32 {
        self.presence.features()
    }

    /// The server in place did not announce itself: it has no extensions.
    pub(crate) fn forget_features(&self) {
        self.presence.forget_features();
    }

    /// Withdrawals received so far, whether or not the server announced the map.
    pub(crate) fn withdrawals(&self) -> u64 {
        self.presence.withdrawals()
    }

    /// What in-sync map bits learned now are valid under; `None` if the server did not
    /// announce the map.
    pub(crate) fn map_stamp(&self) -> Option<MapStamp> {
        self.presence.map_stamp()
    }

    /// Waits up to `timeout` for a server to announce itself, unless one has since `seen`;
    /// returns early once `give_up` holds (checked whenever [`Self::wake_server_waiters`]
    /// wakes the waiters).
    ///
    /// Fails with `EINTR` when a signal arrives, so a waiting `dmsetup` can be interrupted.
    pub(crate) fn wait_for_server(
        &self,
        seen: u64,
        timeout: Delta,
        give_up: impl Fn() -> bool,
    ) -> Result {
        let deadline = Instant::<Monotonic>::now() + timeout;
        let mut inner = self.inner.lock();
        loop {
            // Announcements are counted, and `give_up` is woken, under this lock: neither
            // slips between check and wait.
            if self.presence.announcements() != seen || give_up() {
                return Ok(());
            }
            let left = deadline - Instant::<Monotonic>::now();
            if left <= Delta::ZERO {
                return Ok(());
            }
            match self
                .server_announced
                .wait_interruptible_timeout(&mut inner, timeout::jiffies(left))
            {
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
                CondVarTimeoutResult::Timeout => return Ok(()),
                CondVarTimeoutResult::Woken { .. } => {}
            }
        }
    }

    /// Wakes every [`Self::wait_for_server`] to check its `give_up` again: for a log that
    /// stops, whose requests must not wait for a missing server any longer.
    pub(crate) fn wake_server_waiters(&self) {
        let _inner = self.inner.lock();
        self.server_announced.notify_all();
    }

    /// Sends the request under the ticket's registered seq and waits for its answer, as long
    /// as [`Self::reply_timeout`] allows. A final answer frees the slot in the same lock
    /// section that collects it ([`Attempt::Done`]: the ticket is then spent).
    fn send_and_wait(
        &self,
        ticket: &mut Ticket,
        to: LogAddress<'_>,
        kind: RequestType,
        payload: &[u8],
        reply: &mut [u8],
    ) -> Result<Attempt> {
        let wait = self.reply_timeout(to.max_wait);
        let slot = ticket.slot;
        let seq = ticket.seq;
        let done = &self.done[slot];
        let message = ticket
            .message
            .as_mut()
            .ok_or_else(|| bug::broken("a request slot without its message buffer"))?;
        let sent = encode_request(&mut message.0, to.uuid, to.luid, kind, seq, payload)
            .map_err(|_| bug::broken("a request the protocol cannot carry"))
            .and_then(|_| connector::send(message));
        if let Err(e) = sent {
            // An announcement may have answered the waiter already: take its completion too.
            if self.inner.lock().waiters[slot]
                .take()
                .is_some_and(|w| w.answer.is_some())
            {
                done.take_pending();
            }
            if e == ESRCH {
                self.presence.lost(Instant::now());
            } else {
                pr_err!(
                    "Unable to send log request [{}] to userspace: {}\n",
                    kind.name(),
                    e.to_errno()
                );
            }
            return Err(e);
        }
        let waited = done.wait(timeout::jiffies(wait));
        let mut inner = self.inner.lock();
        let answer = inner.waiters[slot].take().and_then(|w| w.answer);
        // The receive path completes under this lock, and only while an answer is missing:
        // an answer the wait did not see left its completion pending. Take it, so that the
        // slot's next wait does not end at once.
        if answer.is_some() && waited != WaitOutcome::Completed {
            done.take_pending();
        }
        match (answer, waited) {
            (Some(Answer::Reply(o)), _) if o.error == EAGAIN.to_errno() => Ok(Attempt::Again),
            (Some(Answer::Reply(o)), _) => {
                reply[..o.len].copy_from_slice(&inner.replies[slot][..o.len]);
                self.free_slot(inner, ticket);
                Ok(Attempt::Done(o))
            }
            (Some(Answer::Resend), _) => Ok(Attempt::Resend),
            (None, WaitOutcome::Killed) => Err(EINTR),
            // The whole wait passed: the send was that long ago.
            (None, _) => Ok(Attempt::TimedOut {
                seq,
                sent: Instant::now() - wait,
            }),
        }
    }

    /// Takes a free slot and registers its first send, waiting for a slot if all are in use:
    /// at most the log's `max_wait` (`ETIMEDOUT`), and not past a signal (`EINTR`).
    ///
    /// All slots busy means the server answers nothing (stopped, or swamped by more mirrors
    /// than slots): a log with a bounded wait must not wait for it longer than the bound.
    fn take_ticket(
        &self,
        to: LogAddress<'_>,
        kind: RequestType,
        capacity: usize,
    ) -> Result<Ticket> {
        let mut inner = self.inner.lock();
        let mut ticket = match inner.free.pop() {
            Some(t) => t,
            None => {
                // Every slot is busy: the clock is read only now, off the common path.
                let start = Instant::<Monotonic>::now();
                inner.slot_waiters += 1;
                let taken = self.wait_for_ticket(&mut inner, start, to.max_wait);
                inner.slot_waiters -= 1;
                taken?
            }
        };
        ticket.seq = inner.register(ticket.slot, to, kind, capacity);
        self.stats.slots_busy(SLOTS - inner.free.len());
        Ok(ticket)
    }

    /// [`Self::take_ticket`]'s wait for a slot, counted in [`Inner::slot_waiters`].
    fn wait_for_ticket(
        &self,
        inner: &mut Guard<'_, Inner, SpinLockBackend>,
        start: Instant<Monotonic>,
        max_wait: Option<Delta>,
    ) -> Result<Ticket> {
        loop {
            if let Some(t) = inner.free.pop() {
                return Ok(t);
            }
            let step = match max_wait {
                Some(bound) => {
                    let left = bound - start.elapsed();
                    if left <= Delta::ZERO {
                        self.pass_on_wakeup(inner);
                        return Err(ETIMEDOUT);
                    }
                    if left < REPLY_TIMEOUT {
                        left
                    } else {
                        REPLY_TIMEOUT
                    }
                }
                None => REPLY_TIMEOUT,
            };
            if let CondVarTimeoutResult::Signal { .. } = self
                .slot_freed
                .wait_interruptible_timeout(inner, timeout::jiffies(step))
            {
                self.pass_on_wakeup(inner);
                return Err(EINTR);
            }
        }
    }

    /// A slot waiter that gives up may have taken the wake-up of a freed slot: pass it on.
    fn pass_on_wakeup(&self, inner: &Inner) {
        if !inner.free.is_empty() {
            self.slot_freed.notify_one();
        }
    }

    /// Gives back a slot whose request ends without a final answer (no seq is waited for).
    fn return_ticket(&self, mut ticket: Ticket) {
        let mut inner = self.inner.lock();
        inner.waiters[ticket.slot] = None;
        self.free_slot(inner, &mut ticket);
    }

    /// Puts the ticket's slot back into the free list (the ticket is spent) and wakes a
    /// request waiting for a slot, if any.
    fn free_slot(&self, mut inner: Guard<'_, Inner, SpinLockBackend>, ticket: &mut Ticket) {
        if let Some(message) = ticket.message.take() {
            let t = Ticket {
                slot: ticket.slot,
                message: Some(message),
                seq: 0,
            };
            // `free` has room for every slot, so this never allocates and never fails.
            if inner.free.push_within_capacity(t).is_err() {
                pr_err!("transport slot list overflow\n");
            }
        }
        self.stats.slots_busy(SLOTS - inner.free.len());
        // A wake-up costs a lock of the wait queue even when nobody waits on it.
        let wake = inner.slot_waiters > 0;
        drop(inner);
        if wake {
            self.slot_freed.notify_one();
        }
    }
}

impl Inner {
    /// Hands out the next seq and records that `slot` waits for its answer.
    fn register(
        &mut self,
        slot: usize,
        to: LogAddress<'_>,
        kind: RequestType,
        capacity: usize,
    ) -> u32 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.waiters[slot] = Some(Waiter {
            seq,
            luid: to.luid,
            kind,
            capacity,
            answer: None,
        });
        // CAST: `SLOTS` is at most 256 (checked at build time), so the slot fits.
        self.slot_by_seq[seq_index(seq)] = slot as u8;
        seq
    }
}

/// Where `seq` goes in [`Inner::slot_by_seq`].
fn seq_index(seq: u32) -> usize {
    // CAST: the remainder is below `SEQ_INDEX`, which fits `usize`.
    (seq % SEQ_INDEX as u32) as usize
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
