// SPDX-License-Identifier: GPL-2.0

//! Requests that survive a server restart: while no server listens, a request waits for one,
//! re-creates the log there (CTR, RESUME, the marks no FLUSH has made durable) and is retried.
//!
//! One caller at a time re-creates the log; the others wait for it, so a server instance hears
//! one CTR and one RESUME per log. A `generation` counts the re-creations, so that a FLUSH can
//! tell whether the server that answered it had every mark sent before it.

use kernel::{
    prelude::*,
    sync::{atomic::Relaxed, CondVarTimeoutResult, MutexGuard},
    time::Delta,
};

use super::UserspaceLog;
use crate::{
    bug, timeout,
    transfer::uuid_tail,
    uapi::{payload, RequestType, DEVICE_NAME_SIZE, MAX_REQUEST_PAYLOAD},
};

/// How long to wait before trying to reach a missing server again (as upstream).
const RECONNECT_DELAY: Delta = Delta::from_millis(2000);

impl UserspaceLog {
    /// One request; while no server listens, waits for one, re-creates the log there (CTR,
    /// RESUME, the marks no FLUSH has made durable yet) and tries again. With a bounded wait,
    /// fails with `ETIMEDOUT` once the server has been gone for longer than the bound, and
    /// tells the table.
    pub(super) fn request(
        &self,
        kind: RequestType,
        payload: &[u8],
        reply: &mut [u8],
    ) -> Result<usize> {
        let r = loop {
            // Not while another caller re-creates the log (between its CTR and RESUME the
            // server does not know the log's state), nor after a re-creation stopped half way
            // (its caller got a signal after the CTR): wait for it, or complete it. A log
            // that is stopping sends as it is: no more writes come.
            let seen = if self.stopping.load(Relaxed) {
                self.generation.load(Relaxed)
            } else {
                match self.settled_generation() {
                    Ok(generation) => generation,
                    Err(e) => break Err(e),
                }
            };
            match self.request_once(kind, payload, reply) {
                Err(e) if e == ESRCH => {
                    pr_err!(
                        "[{}] Userspace log server not found.\n",
                        uuid_tail(self.uuid())
                    );
                    if let Err(e) = self.reattach(seen) {
                        break Err(e);
                    }
                }
                r => break r,
            }
        };
        match r {
            Err(e) if e == ETIMEDOUT && self.transport.past_bound(self.max_wait) => {
                self.give_up();
            }
            Ok(_) if self.outage_reported.load(Relaxed) => {
                self.outage_reported.store(false, Relaxed);
            }
            _ => {}
        }
        r
    }

    /// A request failed because the server stayed away past `max_server_wait`: the first
    /// such failure of an outage raises a table event, for dmeventd-style monitors.
    fn give_up(&self) {
        self.stats.gave_up();
        if !self.outage_reported.xchg(true, Relaxed) {
            pr_err!(
                "[{}] no userspace log server for {} ms (max_server_wait): log requests fail\n",
                uuid_tail(self.uuid()),
                self.transport
                    .unreachable_for()
                    .map_or(0, |d| d.as_millis())
            );
            self.target.table_event();
        }
    }

    /// How long to pause before the next try to reach a server: upstream's 2 s, cut short by
    /// the log's bound on waiting.
    fn reconnect_pause(&self) -> Delta {
        match (self.max_wait, self.transport.unreachable_for()) {
            (Some(bound), Some(gone)) if bound - gone < RECONNECT_DELAY => bound - gone,
            _ => RECONNECT_DELAY,
        }
    }

    /// Re-creates the log on a new server, unless that happened since generation `seen`.
    ///
    /// One caller at a time does it; the others wait for it and then retry their requests, so
    /// a server instance hears one CTR and one RESUME per log.
    fn reattach(&self, seen: u64) -> Result {
        {
            let mut busy = self.reattach.lock();
            loop {
                if self.generation.load(Relaxed) != seen {
                    return Ok(());
                }
                if !*busy {
                    *busy = true;
                    break;
                }
                self.wait_reattached(&mut busy)?;
            }
        }
        // The new server's answers may differ.
        self.in_sync_map.forget();
        let r = self.reconnect();
        self.in_sync_answers.forget();
        let mut busy = self.reattach.lock();
        *busy = false;
        // A CTR that went through starts a new generation, complete or not: FLUSHes answered
        // meanwhile prove nothing.
        if r.is_ok() || self.half_attached.load(Relaxed) {
            self.generation.fetch_add(1, Relaxed);
        }
        drop(busy);
        self.reattached.notify_all();
        r
    }

    /// Waits a while for the caller that re-creates the log: up to the reconnect pause, less
    /// past the log's bound on waiting (`ETIMEDOUT`); a signal ends it with `EINTR`.
    fn wait_reattached(&self, busy: &mut MutexGuard<'_, bool>) -> Result {
        if self.transport.past_bound(self.max_wait) {
            return Err(ETIMEDOUT);
        }
        let pause = timeout::jiffies(self.reconnect_pause());
        match self.reattached.wait_interruptible_timeout(busy, pause) {
            CondVarTimeoutResult::Signal { .. } => Err(EINTR),
            _ => Ok(()),
        }
    }

    /// Waits until no caller is re-creating the log, and completes a re-creation that stopped
    /// half way; returns the generation then.
    pub(super) fn settled_generation(&self) -> Result<u64> {
        loop {
            let generation = {
                let mut busy = self.reattach.lock();
                while *busy {
                    self.wait_reattached(&mut busy)?;
                }
                self.generation.load(Relaxed)
            };
            if !self.half_attached.load(Relaxed) {
                return Ok(generation);
            }
            self.reattach(generation)?;
        }
    }

    /// Waits for a server and re-creates this log instance on it: CTR, RESUME, then every
    /// mark that no FLUSH has made durable, which the new server has not heard.
    ///
    /// Waits 2 s between tries, as upstream, unless a server announces itself: then it goes
    /// at once. Fails with `ETIMEDOUT` past the log's bound on waiting, with `EINTR` when
    /// the calling task gets a signal, and with `ESRCH` at once while the log is suspending
    /// or being destroyed.
    fn reconnect(&self) -> Result {
        // Unlike upstream, the CTR has room for the device name a disk log's server returns,
        // and a string that fills a request is sent without its NUL, as at creation.
        let ctr = if self.ctr_string.len() <= MAX_REQUEST_PAYLOAD {
            &self.ctr_string[..]
        } else {
            self.ctr_payload()
        };
        let mut device = [0u8; DEVICE_NAME_SIZE];
        let known = self.attached_epoch.load(Relaxed);
        loop {
            if self.stopping.load(Relaxed) {
                return Err(ESRCH);
            }
            if self.transport.past_bound(self.max_wait) {
                return Err(ETIMEDOUT);
            }
            // Returns at once if a server announced itself since the log was last created
            // (that server does not know the log yet), or when the log starts stopping.
            self.transport.wait_for_server(
                self.attached_epoch.load(Relaxed),
                self.reconnect_pause(),
                || self.stopping.load(Relaxed),
            )?;
            if self.stopping.load(Relaxed) {
                return Err(ESRCH);
            }
            if self.transport.past_bound(self.max_wait) {
                return Err(ETIMEDOUT);
            }
            pr_warn!(
                "[{}] Attempting to contact userspace log server...\n",
                uuid_tail(self.uuid())
            );
            let epoch = self.transport.announcements();
            // From the CTR on, the server may know the log without its state: a caller
            // interrupted before RESUME leaves the re-creation half done for the next one.
            self.half_attached.store(true, Relaxed);
            let r = self.request_once(RequestType::Ctr, ctr, &mut device);
            // Whether or not it worked, this server has been tried: wait for the next one.
            self.attached_epoch.store(epoch, Relaxed);
            match r {
                Ok(_) => break,
                Err(e) if e == EINTR => return Err(e),
                Err(_) => continue,
            }
        }
        if self.attached_epoch.load(Relaxed) == known {
            // A server that took the CTR without announcing itself first implements none of
            // this project's extensions, whatever an earlier server announced.
            self.transport.forget_features();
        }
        // Clears not sent yet would only let regions go clean on a server that may resync
        // them anyway: the regions stay marked.
        self.batch.drop_clears();
        self.stats.reconnected();
        // What the log knew of the old server's sync state is stale: a restarted core-log
        // server resyncs everything, which a kept hint would hide from the mirror for good.
        self.in_sync_hint.store(0, Relaxed);
        pr_info!(
            "[{}] Reconnected to userspace log server... DM_ULOG_CTR complete\n",
            uuid_tail(self.uuid())
        );
        self.request_once(RequestType::Resume, &[], &mut [])
            .inspect_err(|e| pr_err!("Error trying to resume userspace log: {}\n", e.to_errno()))
            .map_err(|_| ESRCH)?;
        self.resend_unflushed_marks()?;
        self.half_attached.store(false, Relaxed);
        self.hand_over_in_sync_map();
        Ok(())
    }

    /// Sends the marks that no FLUSH has made durable again, to a server that has just
    /// re-created the log: the one that answered them may have died before writing them.
    fn resend_unflushed_marks(&self) -> Result {
        // A bug planted for the crash checker's self-test (scripts/build-module.sh,
        // DMLU_PLANTED), never in the module users get: the new server never hears them.
        if cfg!(dmlu_planted_forget_unflushed_marks) {
            return Ok(());
        }
        let mut group = [0u64; payload::MAX_FLUSH_GROUP];
        let mut buf = [0u8; MAX_REQUEST_PAYLOAD];
        let mut from = 0;
        loop {
            let n = self.batch.unflushed_marks(from, &mut group);
            if n == 0 {
                break;
            }
            let len = payload::encode_regions(&group[..n], &mut buf)
                .map_err(|_| bug::broken("a group of marks does not fit a request"))?;
            self.request_once(self.mark_kind(), &buf[..len], &mut [])
                .inspect_err(|e| {
                    pr_err!(
                        "[{}] Unable to re-send marks to the userspace log server: {}\n",
                        uuid_tail(self.uuid()),
                        e.to_errno()
                    )
                })?;
            from += n;
        }
        if from > 0 {
            pr_info!(
                "[{}] re-sent {} marks not yet flushed\n",
                uuid_tail(self.uuid()),
                from
            );
        }
        Ok(())
    }
}
