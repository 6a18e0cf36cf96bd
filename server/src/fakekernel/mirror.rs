// SPDX-License-Identifier: GPL-2.0
//! What the fake kernel asks, and when: dm-raid1 on the module's log, for one mirror.
//!
//! Four actors send requests, each one at a time, as the kernel's threads do:
//!
//! - **lifecycle** (dm core, `dmsetup`): CTR, RESUME; suspend cycles (PRESUSPEND,
//!   POSTSUSPEND, a pause, RESUME), each step once the one before is answered and once the
//!   mirror's worker is quiet (dm-raid1 stops recovery and flushes its work first); at the
//!   end PRESUSPEND, POSTSUSPEND, DTR.
//! - **kmirrord** (the mirror's worker): write batches and recovery, one request at a time,
//!   so no MARK, CLEAR or FLUSH goes while a FLUSH waits. A batch picks up to `--batch`
//!   random regions (seeded); for each, IS_REMOTE_RECOVERING (unless the module's hint says
//!   the region is in sync, or it asked less than 250 ms ago: then the write is held, as the
//!   module answers "recovering") and IN_SYNC, as `dm_rh_get_state` asks; a held region is
//!   not written. Then MARK_REGION, FLUSH (the marks are acknowledged at its reply), the
//!   write (`--write-ms`), CLEAR_REGION, FLUSH. Between batches it asks GET_RESYNC_WORK
//!   (dm-raid1 recovers one region at a time); a granted region is copied (`--copy-ms`, writes
//!   to it held meanwhile) and reported with SET_REGION_SYNC, after which it asks
//!   GET_SYNC_COUNT, as `do_recovery` does.
//! - **status** (`dmsetup status`): GET_SYNC_COUNT every `--status-ms`, and now and then
//!   IS_CLEAN of a region the node holds a mark on.
//! - **reattach** (the module's `log/reconnect.rs`): a request answered ESRCH comes from a
//!   server that does not know the log (restarted): the log is re-created there (CTR with its
//!   NUL, RESUME, the marks no FLUSH has made durable) and the request is sent again. DTR,
//!   PRESUSPEND and POSTSUSPEND are not retried, as in the module.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use dm_ulog_uapi::payload::{
    decode_u64, encode_regions, encode_u64, RegionSync, RemoteRecovering, ResyncWork,
    MAX_FLUSH_GROUP, REGION_SIZE,
};
use dm_ulog_uapi::RequestType;
use nix::errno::Errno;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::events::{Event, EventLog};
use super::transport::Answer;
use super::{Actor, Options, Request};

/// The module asks IS_REMOTE_RECOVERING at most this often; a write meanwhile is held.
const REMOTE_RECOVERY_QUERY_INTERVAL: Duration = Duration::from_millis(250);
/// How long kmirrord waits before asking for recovery work again when there was none.
const RECOVERY_RETRY: Duration = Duration::from_millis(100);
/// How long a suspend cycle keeps the mirror suspended.
const SUSPENDED_FOR: Duration = Duration::from_millis(100);
/// The module's pause before it tries a missing server again.
const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// CTR and RESUME.
    Create,
    /// The workload.
    Run,
    /// No more writes; recovery goes on until every region is in sync (or `--settle`).
    Settle,
    /// Waiting for kmirrord to be quiet.
    Teardown,
    /// PRESUSPEND, POSTSUSPEND and DTR queued or sent.
    Destroying,
    /// DTR answered.
    Done,
}

/// A suspend cycle's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cycle {
    /// None in progress.
    Idle,
    /// Waiting for kmirrord to be quiet.
    Quiescing,
    /// PRESUSPEND and POSTSUSPEND queued or sent.
    Suspending,
    /// Suspended until then, then RESUME.
    Suspended(Instant),
    /// RESUME sent.
    Resuming,
}

/// kmirrord's recovery of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recovery {
    /// No region; asks for one from then on.
    Idle(Instant),
    /// GET_RESYNC_WORK sent.
    Asking,
    /// Copying the region until then.
    Copying(u64, Instant),
    /// SET_REGION_SYNC sent.
    Reporting(u64),
}

/// A batch's step: its request is sent when kmirrord is idle, and its answer moves the
/// batch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// About `candidates[next]`: held, or IS_REMOTE_RECOVERING (or straight to IN_SYNC).
    Probe,
    /// IN_SYNC of `candidates[next]`.
    InSync,
    /// MARK_REGION of the regions written.
    Mark,
    /// FLUSH of the marks.
    FlushMarks,
    /// Writing until then; then CLEAR_REGION.
    Write(Instant),
    /// CLEAR_REGION sent.
    Clear,
    /// FLUSH of the clears.
    FlushClears,
}

/// One batch of writes.
#[derive(Debug)]
struct Batch {
    candidates: Vec<u64>,
    /// The candidate asked about.
    next: usize,
    /// The regions written: candidates not held, each once.
    writing: BTreeSet<u64>,
    step: Step,
}

/// The module re-creating the log on a new server.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reattach {
    /// CTR due (after the pause, when a try failed).
    Ctr(Instant),
    /// RESUME due.
    Resume,
    /// The unflushed marks, from this index of their list.
    Marks(usize),
}

/// The kernel's side of one mirror: see the module's doc.
pub struct Mirror {
    regions: u64,
    ctr: Vec<u8>,
    rng: ChaCha8Rng,
    opts: Options,
    phase: Phase,
    /// When the workload ends, and when the settling gives up.
    deadline: Option<Instant>,
    next_id: u64,
    outbox: Vec<Request>,
    busy: [bool; 4],
    lifecycle: VecDeque<RequestType>,
    cycle: Cycle,
    next_suspend: Option<Instant>,
    /// kmirrord starts no new work: a suspend or the teardown waits for it.
    quiesce: bool,
    suspended: bool,
    batch: Option<Batch>,
    recovery: Recovery,
    /// Ask GET_SYNC_COUNT next (after a recovery step, as `do_recovery` does).
    check_sync: bool,
    /// The module's `in_sync_hint`: every region below it is in sync.
    hint: u64,
    /// The server's withdrawals so far: a new one voids the hint, as in the module (a
    /// cluster node's departure takes regions out of sync that the hint covers).
    withdrawals: u64,
    last_remote_query: Option<Instant>,
    /// Marks sent since the last FLUSH answered: a re-created log is told them again.
    unflushed: BTreeSet<u64>,
    /// Marks acknowledged and not cleared.
    held_marks: BTreeSet<u64>,
    in_sync: bool,
    next_status: Instant,
    status_ticks: u64,
    /// Re-creations of the log; a request answered ESRCH in an older one is just retried.
    generation: u64,
    reattach: Option<Reattach>,
    /// Requests answered ESRCH, sent again once the log is re-created.
    parked: Vec<Request>,
    /// Region writes done, and writes held.
    pub writes: u64,
    /// Writes held (another node recovers the region, or this one).
    pub held: u64,
}

impl Mirror {
    /// A mirror of the table in `opts`, not created yet.
    pub fn new(opts: &Options) -> Result<Self> {
        let spec = crate::table::parse(opts.table.as_bytes())?;
        let now = Instant::now();
        Ok(Self {
            regions: spec.regions,
            ctr: opts.table.as_bytes().to_vec(),
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            opts: opts.clone(),
            phase: Phase::Create,
            deadline: None,
            next_id: 0,
            outbox: Vec::new(),
            busy: [false; 4],
            lifecycle: [RequestType::Ctr, RequestType::Resume].into(),
            cycle: Cycle::Idle,
            next_suspend: None,
            quiesce: false,
            suspended: false,
            batch: None,
            recovery: Recovery::Idle(now),
            check_sync: false,
            hint: 0,
            withdrawals: 0,
            last_remote_query: None,
            unflushed: BTreeSet::new(),
            held_marks: BTreeSet::new(),
            in_sync: false,
            next_status: now,
            status_ticks: 0,
            generation: 0,
            reattach: None,
            parked: Vec::new(),
            writes: 0,
            held: 0,
        })
    }

    /// The log's region count.
    pub fn regions(&self) -> u64 {
        self.regions
    }

    /// Requests issued so far.
    pub fn requests(&self) -> u64 {
        self.next_id
    }

    /// The server has sent `count` withdrawals so far: after a new one the hint counts for
    /// nothing until an answer sets it again, so recovery and IS_REMOTE_RECOVERING resume.
    pub fn withdrawals(&mut self, count: u64) {
        if count != self.withdrawals {
            self.withdrawals = count;
            self.hint = 0;
            // The run's own notion: wait for the next GET_SYNC_COUNT to say all in sync.
            self.in_sync = false;
        }
    }

    /// Where the run is, for a report of a run that cannot go on.
    pub fn state(&self) -> String {
        format!(
            "phase {:?}, cycle {:?}, busy {:?}, lifecycle {:?}, quiesce {}, suspended {}, batch {:?}, \
             recovery {:?}, reattach {:?}, parked {}, in_sync {}, hint {}",
            self.phase,
            self.cycle,
            self.busy,
            self.lifecycle,
            self.quiesce,
            self.suspended,
            self.batch.as_ref().map(|b| b.step),
            self.recovery,
            self.reattach,
            self.parked.len(),
            self.in_sync,
            self.hint
        )
    }

    /// DTR has been answered.
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The requests to send now.
    pub fn take_outbox(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.outbox)
    }

    /// The next moment at which [`Mirror::step`] may have something to do without a reply
    /// coming first.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        let mut times = vec![self.deadline, self.next_suspend, Some(self.next_status)];
        if let Cycle::Suspended(t) = self.cycle {
            times.push(Some(t));
        }
        match self.recovery {
            Recovery::Idle(t) | Recovery::Copying(_, t) => times.push(Some(t)),
            _ => {}
        }
        if let Some(Batch {
            step: Step::Write(t),
            ..
        }) = self.batch
        {
            times.push(Some(t));
        }
        if let Some(Reattach::Ctr(t)) = self.reattach {
            times.push(Some(t));
        }
        // Times past are waiting for a reply, which wakes the loop.
        times.into_iter().flatten().filter(|&t| t > now).min()
    }

    fn request(&mut self, actor: Actor, kind: RequestType, payload: Vec<u8>) {
        self.next_id += 1;
        self.busy[actor as usize] = true;
        let request = Request {
            id: self.next_id,
            actor,
            kind,
            payload,
            generation: self.generation,
            answered_seq: None,
        };
        self.outbox.push(request);
    }

    /// Decides what each idle actor sends now. An actor's turn can settle what the run
    /// waits for (a batch that ends without a request lets the teardown or a suspend begin),
    /// so the turns go round until nothing moves: the loop must not sleep with work that no
    /// reply or timer would start.
    pub fn step(&mut self, events: &mut EventLog) -> Result<()> {
        loop {
            let before = self.progress();
            self.turn(events)?;
            if self.progress() == before {
                return Ok(());
            }
        }
    }

    /// What a turn of the actors can change that another turn may act on.
    fn progress(&self) -> (Phase, Cycle, usize, bool, [bool; 4]) {
        (
            self.phase,
            self.cycle,
            self.outbox.len(),
            self.batch.is_some(),
            self.busy,
        )
    }

    /// One turn: the run moves along, then each idle actor sends what it has.
    fn turn(&mut self, events: &mut EventLog) -> Result<()> {
        let now = Instant::now();
        self.advance(now);
        if !self.busy[Actor::Reattach as usize] {
            self.reattach_next(now, events)?;
        }
        if !self.busy[Actor::Lifecycle as usize] {
            if let Some(kind) = self.lifecycle.pop_front() {
                let payload = if kind == RequestType::Ctr {
                    self.ctr.clone()
                } else {
                    Vec::new()
                };
                self.request(Actor::Lifecycle, kind, payload);
            }
        }
        if !self.busy[Actor::Kmirrord as usize] {
            self.kmirrord_next(now, events)?;
        }
        if !self.busy[Actor::Status as usize] {
            self.status_next(now);
        }
        Ok(())
    }

    /// Moves the run along: the workload's end, suspend cycles, the teardown.
    fn advance(&mut self, now: Instant) {
        let lifecycle_idle = !self.busy[Actor::Lifecycle as usize] && self.lifecycle.is_empty();
        let past = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.phase {
            Phase::Run => {
                let enough = self.opts.writes.is_some_and(|n| self.writes >= n);
                if self.cycle == Cycle::Idle && (enough || past(self.deadline)) {
                    tracing::info!("workload over: {} writes, {} held", self.writes, self.held);
                    self.phase = Phase::Settle;
                    self.deadline = Some(now + self.opts.settle);
                } else if self.cycle == Cycle::Idle && past(self.next_suspend) {
                    self.cycle = Cycle::Quiescing;
                    self.quiesce = true;
                    self.next_suspend = None;
                }
            }
            Phase::Settle if self.in_sync || past(self.deadline) => {
                if !self.in_sync {
                    tracing::warn!("recovery did not complete within --settle");
                }
                self.phase = Phase::Teardown;
                self.deadline = None;
                self.quiesce = true;
            }
            Phase::Teardown if lifecycle_idle && self.kmirrord_quiet() => {
                self.lifecycle.extend([
                    RequestType::Presuspend,
                    RequestType::Postsuspend,
                    RequestType::Dtr,
                ]);
                self.phase = Phase::Destroying;
            }
            _ => {}
        }
        match self.cycle {
            Cycle::Quiescing if lifecycle_idle && self.kmirrord_quiet() => {
                self.lifecycle
                    .extend([RequestType::Presuspend, RequestType::Postsuspend]);
                // POSTSUSPEND's answer starts the pause.
                self.cycle = Cycle::Suspending;
            }
            Cycle::Suspended(t) if self.suspended && t <= now && lifecycle_idle => {
                self.lifecycle.push_back(RequestType::Resume);
                self.cycle = Cycle::Resuming;
            }
            _ => {}
        }
    }

    /// kmirrord has nothing in flight or under way that a suspend must wait for.
    fn kmirrord_quiet(&self) -> bool {
        !self.busy[Actor::Kmirrord as usize]
            && self.batch.is_none()
            && matches!(self.recovery, Recovery::Idle(_))
            && self.reattach.is_none()
    }

    fn kmirrord_next(&mut self, now: Instant, events: &mut EventLog) -> Result<()> {
        if self.suspended || self.phase == Phase::Create {
            return Ok(());
        }
        if let Recovery::Copying(region, until) = self.recovery {
            if until <= now {
                self.recovery = Recovery::Reporting(region);
                events.log(Event::Recovered {
                    region,
                    in_sync: true,
                })?;
                let report = RegionSync {
                    region,
                    in_sync: true,
                };
                self.request(
                    Actor::Kmirrord,
                    RequestType::SetRegionSync,
                    report.encode().to_vec(),
                );
                return Ok(());
            }
        }
        if self.batch.is_some() {
            return self.batch_next(now, events);
        }
        if self.quiesce {
            return Ok(());
        }
        if std::mem::take(&mut self.check_sync) {
            self.request(Actor::Kmirrord, RequestType::GetSyncCount, Vec::new());
            return Ok(());
        }
        if matches!(self.recovery, Recovery::Idle(t) if t <= now) && self.hint < self.regions {
            self.recovery = Recovery::Asking;
            self.request(Actor::Kmirrord, RequestType::GetResyncWork, Vec::new());
            return Ok(());
        }
        if self.phase == Phase::Run {
            let n = self.rng.random_range(1..=self.opts.batch);
            let candidates = (0..n)
                .map(|_| self.rng.random_range(0..self.regions))
                .collect();
            self.batch = Some(Batch {
                candidates,
                next: 0,
                writing: BTreeSet::new(),
                step: Step::Probe,
            });
            return self.batch_next(now, events);
        }
        Ok(())
    }

    /// Sends the batch's next request, if its step has one now.
    fn batch_next(&mut self, now: Instant, events: &mut EventLog) -> Result<()> {
        loop {
            let Some(batch) = self.batch.as_mut() else {
                return Ok(());
            };
            let (kind, payload) = match batch.step {
                Step::Probe => {
                    let Some(&region) = batch.candidates.get(batch.next) else {
                        if batch.writing.is_empty() {
                            self.batch = None;
                            return Ok(());
                        }
                        batch.step = Step::Mark;
                        continue;
                    };
                    // dm-raid1 holds writes to a region it recovers; the module says
                    // "recovering" when it asked less than 250 ms ago.
                    let recovering_here = matches!(
                        self.recovery,
                        Recovery::Copying(r, _) | Recovery::Reporting(r) if r == region
                    );
                    let asked_lately = self
                        .last_remote_query
                        .is_some_and(|t| now < t + REMOTE_RECOVERY_QUERY_INTERVAL);
                    if recovering_here || (region >= self.hint && asked_lately) {
                        self.held += 1;
                        events.log(Event::Held { region })?;
                        batch.next += 1;
                        continue;
                    }
                    if region < self.hint {
                        batch.step = Step::InSync;
                        continue;
                    }
                    self.last_remote_query = Some(now);
                    (RequestType::IsRemoteRecovering, encode_u64(region).to_vec())
                }
                Step::InSync => (
                    RequestType::InSync,
                    encode_u64(batch.candidates[batch.next]).to_vec(),
                ),
                Step::Mark => {
                    self.unflushed.extend(&batch.writing);
                    (RequestType::MarkRegion, region_list(&batch.writing))
                }
                Step::FlushMarks | Step::FlushClears => (RequestType::Flush, Vec::new()),
                Step::Write(until) if until <= now => {
                    self.writes += batch.writing.len() as u64;
                    for r in &batch.writing {
                        self.held_marks.remove(r);
                    }
                    batch.step = Step::Clear;
                    events.log(Event::ClearSent {
                        regions: batch.writing.iter().copied().collect(),
                    })?;
                    (RequestType::ClearRegion, region_list(&batch.writing))
                }
                Step::Write(_) | Step::Clear => return Ok(()),
            };
            self.request(Actor::Kmirrord, kind, payload);
            return Ok(());
        }
    }

    fn status_next(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Run | Phase::Settle) || now < self.next_status {
            return;
        }
        self.next_status = now + self.opts.status_every;
        self.status_ticks += 1;
        let marked: Vec<u64> = self.held_marks.iter().copied().collect();
        if self.status_ticks % 4 == 0 && !marked.is_empty() {
            let region = marked[self.rng.random_range(0..marked.len())];
            self.request(
                Actor::Status,
                RequestType::IsClean,
                encode_u64(region).to_vec(),
            );
        } else {
            self.request(Actor::Status, RequestType::GetSyncCount, Vec::new());
        }
    }

    fn reattach_next(&mut self, now: Instant, events: &mut EventLog) -> Result<()> {
        match self.reattach.clone() {
            Some(Reattach::Ctr(t)) if t <= now => {
                events.log(Event::Reattach {
                    generation: self.generation + 1,
                })?;
                // A re-created log's CTR carries its NUL, as the module sends it.
                let mut ctr = self.ctr.clone();
                ctr.push(0);
                self.request(Actor::Reattach, RequestType::Ctr, ctr);
            }
            Some(Reattach::Resume) => {
                self.request(Actor::Reattach, RequestType::Resume, Vec::new());
            }
            Some(Reattach::Marks(_)) if self.kmirrord_in_flight() => {
                // No MARK while kmirrord's FLUSH may be waiting: after its answer.
            }
            Some(Reattach::Marks(from)) => {
                let marks: Vec<u64> = self.unflushed.iter().copied().collect();
                if from >= marks.len() {
                    return self.reattached();
                }
                let group = &marks[from..marks.len().min(from + MAX_FLUSH_GROUP)];
                self.request(Actor::Reattach, RequestType::MarkRegion, region_list(group));
            }
            _ => {}
        }
        Ok(())
    }

    /// kmirrord has a request with the server (not parked for the re-creation).
    fn kmirrord_in_flight(&self) -> bool {
        self.busy[Actor::Kmirrord as usize]
            && !self.parked.iter().any(|r| r.actor == Actor::Kmirrord)
    }

    /// The log is re-created: the requests answered ESRCH go again.
    fn reattached(&mut self) -> Result<()> {
        self.reattach = None;
        self.generation += 1;
        // What the old server said of the sync state no longer holds.
        self.hint = 0;
        self.in_sync = false;
        tracing::info!(
            "log re-created (generation {}): {} requests go again",
            self.generation,
            self.parked.len()
        );
        for mut request in std::mem::take(&mut self.parked) {
            request.generation = self.generation;
            self.outbox.push(request);
        }
        Ok(())
    }

    /// Takes a request's final answer.
    pub fn answer(&mut self, answer: Answer, events: &mut EventLog) -> Result<()> {
        let actor = answer.request.actor;
        if answer.error == -(Errno::ESRCH as i32) && self.retried_on_esrch(&answer.request) {
            let mut request = answer.request;
            request.answered_seq = Some(answer.seq);
            if request.generation != self.generation {
                request.generation = self.generation;
                self.outbox.push(request);
            } else {
                if self.reattach.is_none() {
                    self.reattach = Some(Reattach::Ctr(Instant::now()));
                }
                self.parked.push(request);
            }
            return Ok(());
        }
        self.busy[actor as usize] = false;
        let now = Instant::now();
        let kind = answer.request.kind;
        match actor {
            Actor::Lifecycle => self.lifecycle_answered(kind, answer.error, now),
            Actor::Reattach => self.reattach_answered(kind, answer.error, now),
            Actor::Kmirrord | Actor::Status => self.data_answered(&answer, now, events),
        }
    }

    /// Whether a request answered ESRCH waits for the log to be re-created and goes again:
    /// not DTR, PRESUSPEND or POSTSUSPEND (the module sends them once), nor the re-creation's
    /// own, nor a status read of a suspended mirror (the module does not wait for a server
    /// then).
    fn retried_on_esrch(&self, request: &Request) -> bool {
        let once = matches!(
            request.kind,
            RequestType::Ctr
                | RequestType::Dtr
                | RequestType::Presuspend
                | RequestType::Postsuspend
        );
        !once
            && request.actor != Actor::Reattach
            && !(self.suspended && request.actor == Actor::Status)
    }

    fn lifecycle_answered(&mut self, kind: RequestType, error: i32, now: Instant) -> Result<()> {
        if error != 0 {
            tracing::warn!("{} answered {error}", kind.name());
        }
        match kind {
            RequestType::Ctr if error != 0 => bail!("the server refused the CTR: error {error}"),
            RequestType::Resume => {
                self.suspended = false;
                self.quiesce = false;
                // The module forgets its hint at resume.
                self.hint = 0;
                self.in_sync = false;
                self.recovery = Recovery::Idle(now);
                if self.phase == Phase::Create {
                    self.phase = Phase::Run;
                    self.deadline = Some(now + self.opts.duration);
                }
                if self.cycle == Cycle::Resuming {
                    self.cycle = Cycle::Idle;
                }
                self.next_suspend = self.opts.suspend_every.map(|every| now + every);
            }
            RequestType::Postsuspend => {
                self.suspended = true;
                if self.cycle == Cycle::Suspending {
                    self.cycle = Cycle::Suspended(now + SUSPENDED_FOR);
                }
            }
            RequestType::Dtr => self.phase = Phase::Done,
            _ => {}
        }
        Ok(())
    }

    fn reattach_answered(&mut self, kind: RequestType, error: i32, now: Instant) -> Result<()> {
        if error != 0 {
            tracing::warn!(
                "re-creating the log: {} answered {error}; trying again in {:?}",
                kind.name(),
                RECONNECT_DELAY
            );
            self.reattach = Some(Reattach::Ctr(now + RECONNECT_DELAY));
            return Ok(());
        }
        self.reattach = match (kind, self.reattach.take()) {
            (RequestType::Ctr, _) => Some(Reattach::Resume),
            (RequestType::Resume, _) => Some(Reattach::Marks(0)),
            (RequestType::MarkRegion, Some(Reattach::Marks(from))) => {
                Some(Reattach::Marks(from + MAX_FLUSH_GROUP))
            }
            (_, state) => state,
        };
        Ok(())
    }

    /// A kmirrord or status request's answer.
    fn data_answered(
        &mut self,
        answer: &Answer,
        now: Instant,
        events: &mut EventLog,
    ) -> Result<()> {
        let (request, error, data) = (&answer.request, answer.error, &answer.data[..]);
        let region = || decode_u64(request.kind, &request.payload).unwrap_or(u64::MAX);
        let value = decode_u64(request.kind, data).ok().filter(|_| error == 0);
        match request.kind {
            RequestType::GetSyncCount => {
                if let Some(count) = value {
                    events.log(Event::SyncCount { count })?;
                    self.in_sync = count >= self.regions;
                    if self.in_sync {
                        self.hint = self.regions;
                    }
                }
            }
            RequestType::IsClean => {
                if let Some(v) = value {
                    events.log(Event::IsClean {
                        region: region(),
                        clean: v != 0,
                    })?;
                }
            }
            RequestType::GetResyncWork => {
                match ResyncWork::decode(data).ok().filter(|_| error == 0) {
                    Some(ResyncWork {
                        available: true,
                        region,
                    }) if region < self.regions => {
                        events.log(Event::Grant { region })?;
                        self.recovery = Recovery::Copying(region, now + self.opts.copy_time);
                    }
                    _ => {
                        self.recovery = Recovery::Idle(now + RECOVERY_RETRY);
                        self.check_sync = true;
                    }
                }
            }
            RequestType::SetRegionSync => {
                self.recovery = Recovery::Idle(now);
                self.check_sync = true;
            }
            _ => self.batch_answered(answer, now, events)?,
        }
        Ok(())
    }

    /// A write batch's request's answer: the batch's next step.
    fn batch_answered(
        &mut self,
        answer: &Answer,
        now: Instant,
        events: &mut EventLog,
    ) -> Result<()> {
        let Some(batch) = self.batch.as_mut() else {
            return Ok(());
        };
        let (request, error, data) = (&answer.request, answer.error, &answer.data[..]);
        if error != 0 {
            tracing::warn!("{} answered {error}", request.kind.name());
        }
        match (batch.step, request.kind) {
            (Step::Probe, RequestType::IsRemoteRecovering) => {
                let region = batch.candidates[batch.next];
                let answer = RemoteRecovering::decode(data).ok().filter(|_| error == 0);
                if let Some(r) = answer {
                    self.hint = r.in_sync_hint;
                    events.log(Event::RemoteRecovering {
                        region,
                        recovering: r.is_recovering,
                        hint: r.in_sync_hint,
                    })?;
                }
                // The module answers "recovering" when it cannot tell.
                if answer.is_none_or(|r| r.is_recovering) {
                    self.held += 1;
                    events.log(Event::Held { region })?;
                    batch.next += 1;
                } else {
                    batch.step = Step::InSync;
                }
            }
            (Step::InSync, RequestType::InSync) => {
                let region = batch.candidates[batch.next];
                if let Ok(v) = decode_u64(request.kind, data) {
                    events.log(Event::InSync {
                        region,
                        in_sync: v != 0 && error == 0,
                    })?;
                }
                batch.writing.insert(region);
                batch.next += 1;
                batch.step = Step::Probe;
            }
            (Step::Mark, RequestType::MarkRegion) => batch.step = Step::FlushMarks,
            (Step::FlushMarks, RequestType::Flush) => {
                if error == 0 {
                    // Durable: the node holds these marks until it clears them.
                    let regions = std::mem::take(&mut self.unflushed);
                    self.held_marks.extend(&regions);
                    events.log(Event::MarkAck {
                        regions: regions.into_iter().collect(),
                    })?;
                }
                batch.step = Step::Write(now + self.opts.write_time);
            }
            (Step::Clear, RequestType::ClearRegion) => batch.step = Step::FlushClears,
            (Step::FlushClears, RequestType::Flush) => self.batch = None,
            (step, kind) => tracing::warn!("{} answered in batch step {step:?}", kind.name()),
        }
        Ok(())
    }
}

/// A MARK, CLEAR or FLUSH payload.
fn region_list<'a>(regions: impl IntoIterator<Item = &'a u64>) -> Vec<u8> {
    let regions: Vec<u64> = regions.into_iter().copied().collect();
    let mut out = vec![0; regions.len() * REGION_SIZE];
    encode_regions(&regions, &mut out).expect("sized for the regions");
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use dm_ulog_uapi::Header;

    use super::*;
    use crate::logs::Logs;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        opts: Options,
    }

    /// Runs a mirror against the single-node log state, answering each request at once, until
    /// DTR; fails if the mirror ever waits with nothing in flight and nothing due (the real
    /// loop would sleep forever).
    fn run_to_the_end(args: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        let mut argv = vec![
            "fk",
            "--listen",
            "unused",
            "--events",
            events.to_str().unwrap(),
        ];
        argv.extend(args);
        let opts = Args::parse_from(argv).opts;
        let mut mirror = Mirror::new(&opts).unwrap();
        let mut events = EventLog::create(&opts.events).unwrap();
        let mut logs = Logs::default();
        let mut seq = 0;
        let start = Instant::now();
        loop {
            mirror.step(&mut events).unwrap();
            let outbox = mirror.take_outbox();
            if mirror.done() {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no end in 20 s");
            if outbox.is_empty() {
                let now = Instant::now();
                let Some(due) = mirror.next_due(now) else {
                    panic!("nothing in flight, nothing due, no end: the run would hang ({args:?})");
                };
                std::thread::sleep(due.saturating_duration_since(now));
            }
            for request in outbox {
                seq += 1;
                let header =
                    Header::request(b"FAKE", 1, request.kind, seq, request.payload.len()).unwrap();
                let mut data = Vec::new();
                let error = match logs.handle(&header, &request.payload, &mut data) {
                    Ok(()) => 0,
                    Err(e) => -(e.errno() as i32),
                };
                let answer = Answer {
                    request,
                    seq,
                    error,
                    data,
                };
                mirror.answer(answer, &mut events).unwrap();
            }
        }
    }

    /// Whole runs, answered by the single-node log state, end.
    #[test]
    fn runs_end() {
        for seed in 1..=10 {
            let table = if seed % 2 == 0 {
                "8192 core 1024 nosync"
            } else {
                "65536 core 1024"
            };
            let seed = seed.to_string();
            run_to_the_end(&[
                "--table",
                table,
                "--duration",
                "0.05",
                "--write-ms",
                "3",
                "--copy-ms",
                "1",
                "--status-ms",
                "7",
                "--seed",
                &seed,
            ]);
        }
    }

    /// The teardown waits for kmirrord's last batch; when the batch ends without a request
    /// (every region it probed was held), the teardown starts in that same step. It did not:
    /// the run then waited for nothing, for ever (seen in the cluster suite).
    #[test]
    fn the_teardown_starts_in_the_step_that_ends_the_last_batch() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events");
        let argv = [
            "fk",
            "--listen",
            "unused",
            "--events",
            events.to_str().unwrap(),
            "--table",
            "8192 core 1024",
        ];
        let mut mirror = Mirror::new(&Args::parse_from(argv).opts).unwrap();
        let mut events = EventLog::create(&events).unwrap();
        // Created and resumed, the workload over, every region in sync.
        mirror.lifecycle.clear();
        mirror.phase = Phase::Teardown;
        mirror.quiesce = true;
        mirror.in_sync = true;
        mirror.recovery = Recovery::Idle(Instant::now());
        mirror.batch = Some(Batch {
            candidates: Vec::new(),
            next: 0,
            writing: BTreeSet::new(),
            step: Step::Probe,
        });
        mirror.step(&mut events).unwrap();
        let sent: Vec<RequestType> = mirror.take_outbox().iter().map(|r| r.kind).collect();
        assert_eq!(sent, [RequestType::Presuspend], "{}", mirror.state());
    }
}
