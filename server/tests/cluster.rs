// SPDX-License-Identifier: GPL-2.0
//! Clustered logs on the simulated group: random requests from random nodes' kernels, with
//! crashes, restarts, partitions, merges, joins and flow-control refusals.
//!
//! Checked throughout: members with valid state hold identical replicas at every point of
//! the agreed order they reach (so a joiner's imported state is the others'); every request
//! gets exactly one reply; a node's IS_CLEAN never says clean where its own kernel holds a
//! mark; a node a quorate view saw depart has its marked regions out of sync and its marks
//! gone. Checked when
//! the system has settled: every member of a quorate component has valid state; no region
//! is clean while a node of the component holds a mark on it; at most one kernel recovers,
//! and it holds the replicas' claim. At the end, with the network healed and every mark
//! cleared, recovery completes (no stall) and nothing is left unanswered. Separately, one
//! node's requests get the single-node server's replies. Both with and without clears in a
//! FLUSH (this project's extension).
//!
//! Each property runs twice: with the simulator's ready-made views, and with its nodes
//! reading what corosync would say in batches, as `CpgGroup::dispatch` reads it, through
//! dm-ulogd's own `cpg_views::Views` ([`Mode::Batches`]; quorum notices after the rings and
//! deliveries they belong with, several rings in one batch, quorum lost and regained within
//! a ring).
//!
//! A default run generates the same cases every time (a fixed seed, so CI does not go red
//! on a case nobody has seen): `PROPTEST_CASES` of them, 256 unless set. To explore new
//! ones, set `DMLU_PROPTEST_RANDOM=1`, for instance
//! `DMLU_PROPTEST_RANDOM=1 PROPTEST_CASES=4000 cargo test --release -p dm-ulogd --test
//! cluster`. A failure found so is saved in `cluster.proptest-regressions`, which every run
//! replays first: commit it with the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use dm_ulog_uapi::{
    clears_in_flush::CLEAR_ENTRY,
    payload::{encode_regions, RegionSync, RemoteRecovering, ResyncWork},
    FlushEntry, Header, RequestType,
};
use dm_ulogd::cluster::{
    group::{Group, GroupEvent, NodeId, ViewId},
    member::{Action, Member},
    message::{Message, Standing},
    replica::ReplyError,
    sim::{BatchStats, Sim, SimGroup},
};
use dm_ulogd::logs::{Extensions, Logs};
use dm_ulogd::table;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

mod common;

/// What one node's kernel has sent and believes.
#[derive(Debug, Default)]
struct Kernel {
    next_tag: u64,
    outstanding: BTreeMap<u64, Sent>,
    /// Requests answered EAGAIN, to send again, in the order the kernel first sent them.
    retry: Vec<Sent>,
    /// Marks acknowledged and not cleared since.
    marks: BTreeSet<u64>,
    /// Where in the agreed order each of `marks` was first acknowledged ([`Node::at`]).
    marked_at: BTreeMap<u64, (ViewId, u64)>,
    /// The tag of the request whose answer acknowledged each of `marks` first.
    marked_by: BTreeMap<u64, u64>,
    /// Region to the tag of its last CLEAR.
    cleared: BTreeMap<u64, u64>,
    /// The region it recovers, and whether its member kept valid state since the grant.
    claim: Option<(u64, bool)>,
    asking_work: bool,
    suspended: bool,
    resumed: bool,
    /// Bumped by PRESUSPEND, POSTSUSPEND and RESUME: a grant asked for before is void.
    epoch: u64,
}

#[derive(Debug)]
struct Sent {
    kind: RequestType,
    data: Vec<u8>,
    /// For IS_CLEAN: the kernel held a mark on the region when it asked.
    held_mark: bool,
    epoch: u64,
    /// The tag it was first sent with (a resend after EAGAIN gets a new one): where it
    /// stands in the kernel's order, against its CLEARs.
    first: Option<u64>,
}

struct Node {
    group: SimGroup,
    member: Option<Member>,
    kernel: Kernel,
    /// Its dm-ulogd was killed, and no dm-ulogd of its has had the log's state since: its
    /// kernel holds marks the cluster knows only from the others' replicas.
    orphaned: bool,
    /// The view and a digest of the messages delivered in it: members that went from one
    /// view to different ones (a partition) share its first messages only.
    position: Option<(ViewId, u64)>,
    /// Messages delivered in its current view.
    delivered: u64,
}

impl Node {
    /// Where the node is in the agreed order: its view (the simulator's ids grow) and the
    /// messages delivered in it.
    fn at(&self) -> (ViewId, u64) {
        (self.position.map_or(ViewId(0), |p| p.0), self.delivered)
    }
}

impl Kernel {
    /// The regions acknowledged marked by the answer to request `tag`, at `at` in the agreed
    /// order.
    fn acknowledge(&mut self, regions: impl Iterator<Item = u64>, at: (ViewId, u64), tag: u64) {
        for r in regions {
            self.marks.insert(r);
            self.marked_at.entry(r).or_insert(at);
            self.marked_by.entry(r).or_insert(tag);
        }
    }
}

/// How the nodes hear the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The simulator's views and deliveries.
    Direct,
    /// Corosync's reports, read in batches through `Views` ([`Sim::with_batches`]).
    Batches,
}

struct Cluster {
    sim: Sim,
    nodes: BTreeMap<NodeId, Node>,
    table: String,
    regions: u64,
    writes: Vec<(NodeId, u64)>,
    /// The state members with valid state held at each point of the order.
    states: BTreeMap<(ViewId, u64), Vec<u8>>,
    answers: BTreeMap<(NodeId, u64), Result<Vec<u8>, ReplyError>>,
    withdrawn: Vec<(NodeId, u64, u64)>,
    /// Points of the order where two or more valid members were compared.
    compared: u64,
    /// The last request a kernel sent.
    last_sent: Option<(RequestType, Vec<u8>)>,
    /// What the servers announced: with clears in a FLUSH, the kernels send some that way.
    extensions: Extensions,
    /// The disk log's bitmap on its device (clean bits), once written.
    device: Option<Vec<u8>>,
    /// The log device fails every write.
    disk_fails: bool,
    /// FLUSHes of a disk log answered with success.
    flushed: u64,
    /// Recoveries that put a region in sync, checked against the kernels' marks.
    recoveries: u64,
    /// Where in the agreed order each region was last put in sync by a recovery, and by
    /// which node.
    recovered_at: BTreeMap<u64, ((ViewId, u64), NodeId)>,
    /// Regions checked out of sync at a settled point because a kernel marked them before
    /// their last recovery (it was cut off then, and is back).
    stale_marks_checked: u64,
    /// The requests (origin and tag) each node's member delivered: what came before a point of
    /// its agreed order.
    seen: BTreeMap<NodeId, BTreeSet<(NodeId, u64)>>,
    /// Per member, the nodes that crashed since it last saw them leave: until it takes the
    /// view they left, it may still deliver their old kernel's requests, whose tags their
    /// next kernel numbers again from 1.
    crashed_unseen: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Nodes a quorate component took for dead (departed, not by a process death), and the
    /// view where it did: fenced from then on, until they are back.
    deaths: Vec<(ViewId, NodeId)>,
    /// Daemons killed on live nodes.
    killed: u64,
    /// Nodes fenced (their daemon dead, and nobody with state to vouch for them).
    fenced: u64,
}

/// A kernel request in the random sequences, shaped as dm-raid1 sends them.
#[derive(Clone, Debug)]
enum Req {
    Mark(u64),
    /// Clears the kernel's n-th held mark: inside a FLUSH for even n if the servers take
    /// clears there, else by CLEAR_REGION.
    Clear(usize),
    Flush(Vec<u64>),
    IsClean(u64),
    InSync(u64),
    /// GET_RESYNC_WORK, or SET_REGION_SYNC of the claim with this outcome.
    Work(bool),
    /// A write failure: SET_REGION_SYNC of 0.
    Fail(u64),
    RemoteRecovering(u64),
    SyncCount,
    Presuspend,
    Postsuspend,
    Resume,
    StatusInfo,
}

impl Cluster {
    fn new(
        nodes: u32,
        seed: u64,
        table: &str,
        max_message: usize,
        try_again: f64,
        extensions: Extensions,
        mode: Mode,
    ) -> Self {
        let mut sim = Sim::new(nodes, seed, max_message, try_again);
        if mode == Mode::Batches {
            sim = sim.with_batches();
        }
        let regions = table::parse(table.as_bytes()).unwrap().regions;
        let nodes = (1..=nodes)
            .map(|n| {
                let node = Node {
                    group: sim.group(n),
                    member: None,
                    kernel: Kernel::default(),
                    orphaned: false,
                    position: None,
                    delivered: 0,
                };
                (n, node)
            })
            .collect();
        Self {
            sim,
            nodes,
            table: table.into(),
            regions,
            writes: Vec::new(),
            states: BTreeMap::new(),
            answers: BTreeMap::new(),
            withdrawn: Vec::new(),
            compared: 0,
            last_sent: None,
            extensions,
            device: None,
            disk_fails: false,
            flushed: 0,
            recoveries: 0,
            recovered_at: BTreeMap::new(),
            stale_marks_checked: 0,
            deaths: Vec::new(),
            seen: BTreeMap::new(),
            crashed_unseen: BTreeMap::new(),
            killed: 0,
            fenced: 0,
        }
    }

    fn join(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        if !self.sim.is_up(id) || node.member.is_some() {
            return;
        }
        let spec = table::parse(self.table.as_bytes()).unwrap();
        let mut member = Member::new(id, spec, self.extensions).unwrap();
        // A dm-ulogd started after its predecessor died serves a kernel that re-creates the
        // log; any other serves one that loads it now.
        if !node.orphaned {
            member = member.with_new_kernel();
        }
        member.join(&mut node.group).unwrap();
        node.member = Some(member);
        node.position = None;
    }

    fn crash(&mut self, id: NodeId) {
        if !self.sim.is_up(id) || self.sim.components().concat().len() == 1 {
            return;
        }
        self.sim.crash(id);
        let node = self.nodes.get_mut(&id).unwrap();
        node.member = None;
        node.orphaned = false;
        node.kernel = Kernel::default();
        node.position = None;
        self.writes.retain(|w| w.0 != id);
        self.forget_kernel(id);
    }

    /// Node `id`'s kernel is gone: its next one numbers its requests from 1 again. Each
    /// member forgets what it delivered of the old one when it takes the view `id` left:
    /// before, it may still deliver the old kernel's last requests.
    fn forget_kernel(&mut self, id: NodeId) {
        for (&m, seen) in &mut self.seen {
            seen.retain(|&(n, _)| n != id);
            self.crashed_unseen.entry(m).or_default().insert(id);
        }
    }

    /// dm-ulogd dies on node `id`, which stays up: its kernel keeps its marks and its
    /// recovery (writes and a copy stay in flight), and sends what was unanswered again to
    /// the next server, after re-creating the log (CTR, then RESUME if it was resumed), as
    /// the module does.
    /// Node `o`'s member serves the log, in the view the network has now (its last view's
    /// members are those of its component, and no event waits for it): a
    /// member that only believes it serves, with a partition or a death not delivered yet,
    /// does not count.
    fn holds_state(&self, o: NodeId) -> bool {
        let Some(m) = self.nodes[&o].member.as_ref().filter(|m| m.serving()) else {
            return false;
        };
        let component = self.sim.components().into_iter().find(|c| c.contains(&o));
        let members: Vec<NodeId> = component
            .unwrap_or_default()
            .into_iter()
            .filter(|&n| self.sim.is_joined(n))
            .collect();
        m.view().is_some_and(|v| v.members == members) && !self.sim.has_events(o)
    }

    fn kill_daemon(&mut self, id: NodeId) {
        // Another member of its component holds the log's state (see `fence_orphans`).
        let vouched = self
            .sim
            .components()
            .into_iter()
            .any(|c| c.contains(&id) && c.iter().any(|&o| o != id && self.holds_state(o)));
        // A daemon that dies while its node is cut off, or before its Hello told the others
        // what its kernel holds, adds a failure to a partition nobody fenced: left out.
        if !self.holds_state(id) || !vouched {
            return;
        }
        let node = self.nodes.get_mut(&id).unwrap();
        if node.member.is_none() {
            return;
        }
        self.sim.kill_process(id);
        node.member = None;
        node.orphaned = true;
        node.position = None;
        let k = &mut node.kernel;
        let mut unanswered: Vec<Sent> = std::mem::take(&mut k.outstanding).into_values().collect();
        unanswered.append(&mut k.retry);
        unanswered.sort_by_key(|s| s.first);
        // Some of them were applied already, and a CLEAR sent after an IS_CLEAN may have
        // been: the IS_CLEAN sent again asks of a region the kernel may no longer mark.
        for s in unanswered
            .iter_mut()
            .filter(|s| s.kind == RequestType::IsClean)
        {
            let r = u64::from_ne_bytes(s.data[..8].try_into().unwrap());
            s.held_mark &= k.marks.contains(&r);
        }
        if k.resumed && !k.suspended {
            let resume = Sent {
                kind: RequestType::Resume,
                data: Vec::new(),
                held_mark: false,
                epoch: k.epoch,
                first: None,
            };
            unanswered.insert(0, resume);
        }
        k.retry = unanswered;
        k.asking_work = k.retry.iter().any(|s| s.kind == RequestType::GetResyncWork);
        self.writes.retain(|w| w.0 != id);
        self.killed += 1;
    }

    /// Fences (crashes) every node whose dm-ulogd died (and whose new one, if any, has no
    /// state yet) and which no member with the log's state can vouch for: one cut off in a component without quorum, or left where
    /// no member holds state. The cluster takes it for dead, so fencing must stop its
    /// writes. (When every dm-ulogd holding the state is gone, the marks its kernel made
    /// durable are lost: the module sends again only those no FLUSH made durable. A known
    /// limit, listed in docs/cluster.md.)
    fn fence_orphans(&mut self) {
        let total = self.nodes.len();
        for component in self.sim.components() {
            let quorate = 2 * component.len() > total;
            let vouched = component.iter().any(|o| {
                !self.nodes[o].orphaned
                    && self.nodes[o].member.as_ref().is_some_and(Member::serving)
            });
            if quorate && vouched {
                continue;
            }
            for id in component {
                if self.nodes[&id].orphaned {
                    self.sim.crash(id);
                    let node = self.nodes.get_mut(&id).unwrap();
                    node.orphaned = false;
                    node.member = None;
                    node.kernel = Kernel::default();
                    node.position = None;
                    self.fenced += 1;
                    self.forget_kernel(id);
                }
            }
        }
    }

    fn restart(&mut self, id: NodeId, beside: NodeId) {
        if !self.sim.is_up(id) {
            self.sim.restart(id, Some(beside));
        }
    }

    /// Sends a kernel request as dm-raid1 would; returns its tag.
    fn kernel_request(&mut self, id: NodeId, req: &Req) -> Option<u64> {
        let node = self.nodes.get_mut(&id)?;
        node.member.as_ref()?;
        let k = &mut node.kernel;
        // Requests the kernel sends one at a time. A request applied, left unanswered (a disk
        // log's FLUSH or POSTSUSPEND waits for a write) and answered EAGAIN is applied again
        // when it is resent: had the next one gone meanwhile, it would be undone (a RESUME
        // by the POSTSUSPEND, a mark by the clears of the FLUSH). dm core suspends and
        // resumes a device one step at a time; dm-raid1 marks, clears and flushes from
        // kmirrord, and the marks and clears it collects meanwhile go after the FLUSH.
        let unanswered = |what: fn(RequestType) -> bool| {
            k.outstanding
                .values()
                .chain(&k.retry)
                .any(|s: &Sent| what(s.kind))
        };
        let blocked = match req {
            Req::Presuspend | Req::Postsuspend | Req::Resume => unanswered(is_lifecycle),
            Req::Mark(_) | Req::Clear(_) | Req::Flush(_) => {
                unanswered(|kind| kind == RequestType::Flush)
            }
            _ => false,
        };
        if blocked {
            return None;
        }
        let mut held_mark = false;
        let (kind, data) = match *req {
            Req::Mark(r) => (RequestType::MarkRegion, regions(&[r])),
            Req::Clear(i) => {
                let r = *k.marks.iter().nth(i.checked_rem(k.marks.len())?)?;
                k.marks.remove(&r);
                k.marked_at.remove(&r);
                k.marked_by.remove(&r);
                // The tag this CLEAR gets: a mark acknowledged later but sent before it
                // is cleared too.
                k.cleared.insert(r, k.next_tag + 1);
                if self.extensions.clears_in_flush && i % 2 == 0 {
                    let entry = FlushEntry::Clear(r).encode().to_ne_bytes();
                    (RequestType::Flush, entry.to_vec())
                } else {
                    (RequestType::ClearRegion, regions(&[r]))
                }
            }
            Req::Flush(ref rs) => (RequestType::Flush, regions(rs)),
            Req::IsClean(r) => {
                held_mark = k.marks.contains(&r);
                (RequestType::IsClean, r.to_ne_bytes().to_vec())
            }
            Req::InSync(r) => (RequestType::InSync, r.to_ne_bytes().to_vec()),
            Req::Work(ok) => match k.claim.take() {
                Some((region, _)) => {
                    let s = RegionSync {
                        region,
                        in_sync: ok,
                    };
                    (RequestType::SetRegionSync, s.encode().to_vec())
                }
                None if !k.asking_work => {
                    k.asking_work = true;
                    (RequestType::GetResyncWork, Vec::new())
                }
                None => return None,
            },
            // A failure report racing with a grant of the same region ends a recovery the
            // kernel has not started: a race of the protocol (the report cannot say which
            // it means) that these sequences leave out.
            Req::Fail(_) if k.asking_work => return None,
            Req::Fail(region) => {
                // A failure in the region it recovers ends that recovery, as a report does.
                k.claim = k.claim.filter(|c| c.0 != region);
                let s = RegionSync {
                    region,
                    in_sync: false,
                };
                (RequestType::SetRegionSync, s.encode().to_vec())
            }
            Req::RemoteRecovering(r) => (RequestType::IsRemoteRecovering, r.to_ne_bytes().to_vec()),
            Req::SyncCount => (RequestType::GetSyncCount, Vec::new()),
            // dm-raid1 suspends with PRESUSPEND, then POSTSUSPEND; its recovery stops then.
            // A RESUME without a suspend (a re-created log) keeps it going.
            Req::Presuspend | Req::Postsuspend if !k.suspended => {
                k.claim = None;
                k.epoch += 1;
                k.suspended = true;
                (RequestType::Presuspend, Vec::new())
            }
            Req::Presuspend | Req::Postsuspend => {
                k.claim = None;
                k.epoch += 1;
                k.resumed = false;
                (RequestType::Postsuspend, Vec::new())
            }
            Req::Resume => {
                // The first RESUME, or one after a suspend, starts recovery over.
                if std::mem::take(&mut k.suspended) | !std::mem::replace(&mut k.resumed, true) {
                    k.claim = None;
                    k.epoch += 1;
                }
                (RequestType::Resume, Vec::new())
            }
            Req::StatusInfo => (RequestType::StatusInfo, Vec::new()),
        };
        let epoch = k.epoch;
        let sent = Sent {
            kind,
            data,
            held_mark,
            epoch,
            first: None,
        };
        self.resend(id);
        self.send(id, sent)
    }

    /// Sends again what was answered EAGAIN, as the kernel does at once (its transfer
    /// resends on EAGAIN before the calling thread goes on): whenever the member does not
    /// answer EAGAIN on the spot. So the member gets one kernel's requests in the order
    /// the kernel sent them; resending them only once the member serves would put them
    /// behind requests the kernel sent later, which the member held meanwhile (a PRESUSPEND
    /// behind the GET_RESYNC_WORK that followed it).
    fn resend(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let accepts = node
            .member
            .as_ref()
            .is_some_and(|m| m.view().is_none_or(|v| v.quorate));
        if accepts {
            for sent in std::mem::take(&mut node.kernel.retry) {
                self.send(id, sent);
            }
        }
    }

    /// Sends a request (again after EAGAIN, in the epoch it was first sent in).
    fn send(&mut self, id: NodeId, sent: Sent) -> Option<u64> {
        let node = self.nodes.get_mut(&id).unwrap();
        let member = node.member.as_mut()?;
        let k = &mut node.kernel;
        k.next_tag += 1;
        let tag = k.next_tag;
        let (kind, data) = (sent.kind, sent.data.clone());
        let sent = Sent {
            first: sent.first.or(Some(tag)),
            ..sent
        };
        k.outstanding.insert(tag, sent);
        self.last_sent = Some((kind, data.clone()));
        let actions = member.request(&mut node.group, tag, kind, &data);
        self.act(id, actions);
        Some(tag)
    }

    fn act(&mut self, id: NodeId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Reply { tag, result } => self.kernel_reply(id, tag, result),
                Action::Withdraw { first, count } => self.withdrawn.push((id, first, count)),
                Action::WriteDisk { generation } => self.writes.push((id, generation)),
            }
        }
    }

    fn kernel_reply(&mut self, id: NodeId, tag: u64, result: Result<Vec<u8>, ReplyError>) {
        let node = self.nodes.get_mut(&id).unwrap();
        let at = node.at();
        let k = &mut node.kernel;
        let sent = k
            .outstanding
            .remove(&tag)
            .unwrap_or_else(|| panic!("node {id}: a reply to tag {tag}, which is not waiting"));
        let first = sent.first.expect("sent");
        if sent.kind == RequestType::GetResyncWork && result != Err(ReplyError::NotQuorate) {
            k.asking_work = false;
        }
        let marking = matches!(sent.kind, RequestType::MarkRegion | RequestType::Flush);
        match &result {
            Err(ReplyError::NotQuorate) => {
                k.retry.push(sent);
                self.answers.insert((id, tag), result);
                return;
            }
            // Marks before a bad region are applied, as on a single node: the kernel clears
            // what it asked to mark.
            Err(_) if marking => {
                let marked: Vec<u64> = held(&sent.data, first, &k.cleared)
                    .take_while(|&r| r < self.regions)
                    .collect();
                k.acknowledge(marked.into_iter(), at, tag);
            }
            Err(_) => {}
            Ok(_) if marking => {
                let marked: Vec<u64> = held(&sent.data, first, &k.cleared)
                    .filter(|&r| r < self.regions)
                    .collect();
                k.acknowledge(marked.into_iter(), at, tag);
            }
            Ok(p) => match sent.kind {
                RequestType::GetResyncWork => {
                    let w = ResyncWork::decode(p).unwrap();
                    if w.available && sent.epoch == k.epoch {
                        let other = k.claim.filter(|c| c.0 != w.region);
                        assert_eq!(other, None, "node {id} got work while recovering");
                        k.claim = Some((w.region, true));
                    }
                }
                RequestType::IsClean if sent.held_mark => {
                    assert_eq!(
                        p,
                        &0i64.to_ne_bytes(),
                        "node {id}: clean while it holds a mark"
                    )
                }
                _ => {}
            },
        }
        if sent.kind == RequestType::Flush && result.is_ok() {
            let marks = self.nodes[&id].kernel.marks.clone();
            self.check_flushed(id, &marks);
            self.flushed += 1;
        }
        self.answers.insert((id, tag), result);
    }

    /// A recovery that counts (`recoverer`'s report puts region `r` in sync at member `id`, at
    /// point `now` of the agreed order) must not have run beside a write: no other kernel of
    /// a node up in its component, its dm-ulogd alive or not, holds a mark on `r` whose
    /// request `id` delivered before that point. Nodes cut off in another component are
    /// taken as fenced.
    fn check_recovery_counted(
        &mut self,
        id: NodeId,
        recoverer: NodeId,
        r: u64,
        now: (ViewId, u64),
    ) {
        let component = self
            .sim
            .components()
            .into_iter()
            .find(|c| c.contains(&id))
            .unwrap_or_default();
        for &o in component.iter().filter(|&&o| o != recoverer) {
            let other = &self.nodes[&o];
            // A mark acknowledged later in the order came after the copy: its write reaches
            // both legs of a region in sync. One of a node taken for dead since may hold a
            // write of a node cut off: fencing's business (a known limit); that its region
            // goes out of sync again when the node is back is checked when the cluster
            // settles.
            let seen = |tag: &u64| self.seen.get(&id).is_some_and(|s| s.contains(&(o, *tag)));
            let before = other.kernel.marked_by.get(&r).is_some_and(seen)
                && other.kernel.marked_at.get(&r).is_some_and(|&at| {
                    !self
                        .deaths
                        .iter()
                        .any(|&(view, n)| n == o && at.0 < view && view <= now.0)
                });
            assert!(
                !before,
                "node {id}: node {recoverer}'s recovery of region {r} counted while node {o}'s \
                 kernel holds a mark on it (its dm-ulogd {}): the legs may differ",
                if other.member.is_some() {
                    "alive"
                } else {
                    "dead"
                },
            );
        }
        self.recoveries += 1;
        self.recovered_at.insert(r, (now, recoverer));
    }

    /// Takes one event at `id`; false if there was none.
    fn step(&mut self, id: NodeId) -> bool {
        let all = self.ids();
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(member) = node.member.as_mut() else {
            return false;
        };
        let Some(event) = node.group.next_event() else {
            return false;
        };
        // The checker's id of a view: in batches, views' own ids neither grow nor stay
        // unique.
        let instance = node.group.view_instance();
        // What each departing node had marked, at a member with valid state.
        let mut departing = Vec::new();
        if let GroupEvent::View(v) = &event {
            let instance = instance.expect("a view taken");
            if let Some(crashed) = self.crashed_unseen.get_mut(&id) {
                for l in &v.left {
                    if crashed.remove(l) {
                        if let Some(seen) = self.seen.get_mut(&id) {
                            seen.retain(|&(n, _)| n != *l);
                        }
                    }
                }
            }
            // Nodes a quorate component takes for dead from here on: fencing stops them.
            let gone = v.left.iter().filter(|l| !v.process_down.contains(l));
            let off_ring = all
                .iter()
                .copied()
                .filter(|n| v.ring.as_ref().is_some_and(|ring| !ring.contains(n)));
            if v.quorate {
                for n in gone.copied().chain(off_ring) {
                    self.deaths.push((instance, n));
                }
            }
            // A quorate view takes them for dead; without quorum, what they hold stays.
            if member.standing() == Standing::Valid && v.quorate {
                for &l in v.left.iter().filter(|l| !v.process_down.contains(l)) {
                    let marked: Vec<u64> = (0..self.regions)
                        .filter(|&r| member.replica().holders(r).any(|h| h == l))
                        .collect();
                    departing.push((l, marked));
                }
            }
        }
        match &event {
            GroupEvent::View(_) => node.delivered = 0,
            GroupEvent::Message { .. } => node.delivered += 1,
        }
        node.position = match (&event, node.position) {
            (GroupEvent::View(_), _) => Some((instance.expect("a view taken"), 0)),
            (GroupEvent::Message { from, payload }, Some((v, chain))) => {
                let mut h = DefaultHasher::new();
                (chain, from, payload).hash(&mut h);
                Some((v, h.finish()))
            }
            (GroupEvent::Message { .. }, None) => panic!("node {id}: a message before any view"),
        };
        if let GroupEvent::Message { from, payload } = &event {
            if let Ok(Message::Request { tag, .. }) = Message::decode(payload) {
                self.seen.entry(id).or_default().insert((*from, tag));
            }
        }
        // A report of a recovery, delivered to a member with state: whether it puts the
        // region in sync here (every such member sees it at the same point of the order).
        let report = match &event {
            GroupEvent::Message { from, payload } if member.standing() == Standing::Valid => {
                match Message::decode(payload) {
                    Ok(Message::Request {
                        kind: RequestType::SetRegionSync,
                        data,
                        ..
                    }) => RegionSync::decode(&data)
                        .ok()
                        .filter(|s| s.in_sync && member.replica().in_sync(s.region) == Ok(false))
                        .map(|s| (*from, s)),
                    _ => None,
                }
            }
            _ => None,
        };
        let at = (node.position.map_or(ViewId(0), |p| p.0), node.delivered);
        let actions = member.deliver(&mut node.group, event);
        let counted = report.filter(|(_, s)| member.replica().in_sync(s.region) == Ok(true));
        for (l, marked) in departing {
            for r in marked {
                let rep = member.replica();
                assert!(
                    !rep.in_sync(r).unwrap(),
                    "node {id}: {l} left, its region {r} is in sync"
                );
                assert!(
                    rep.holders(r).all(|h| h != l),
                    "node {id}: {l} left, still marks {r}"
                );
            }
        }
        if member.standing() == Standing::Valid {
            node.orphaned = false;
            let mut state = Vec::new();
            member.replica().snapshot(&mut state);
            let at = node.position.expect("a view");
            match self.states.get(&at) {
                Some(seen) => {
                    assert!(
                        *seen == state,
                        "node {id}: replica differs from another at {at:?}"
                    );
                    self.compared += 1;
                }
                None => {
                    self.states.insert(at, state);
                }
            }
        } else {
            // Its recovery outlives the state it was granted from: only fencing stops it.
            if let Some(c) = node.kernel.claim.as_mut() {
                c.1 = false;
            }
        }
        if let Some((recoverer, s)) = counted {
            self.check_recovery_counted(id, recoverer, s.region, at);
        }
        self.act(id, actions);
        self.resend(id);
        true
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn pump(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).unwrap();
        node.member.as_mut().is_none_or(|m| m.pump(&mut node.group))
    }

    /// Makes the disk writes the leaders were asked for: the bitmap reaches the device,
    /// unless the device fails.
    fn write(&mut self) {
        for (id, generation) in std::mem::take(&mut self.writes) {
            let node = self.nodes.get_mut(&id).unwrap();
            if let Some(m) = node.member.as_mut().filter(|m| m.serving()) {
                let ok = !self.disk_fails;
                if ok {
                    let mut bits = Vec::new();
                    m.replica().clean_bits(&mut bits);
                    self.device = Some(bits);
                }
                m.disk_written(&mut node.group, generation, ok);
            }
        }
    }

    /// A FLUSH of a disk log answered with success: every mark the kernel holds is on the
    /// device (dm-raid1 writes once its marks are durable).
    fn check_flushed(&self, id: NodeId, marks: &BTreeSet<u64>) {
        if !self.table.contains("clustered-disk") {
            return;
        }
        for &r in marks {
            let clean = self
                .device
                .as_ref()
                .is_some_and(|bits| bits[(r / 8) as usize] & (1 << (r % 8)) != 0);
            assert!(
                !clean,
                "node {id}: FLUSH answered while region {r}, which it marked, is clean on the device"
            );
        }
    }

    /// Runs everything until nothing is left to do: messages ordered and delivered, writes
    /// made, refused multicasts and EAGAIN'd requests sent again.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for id in self.ids() {
                busy |= !self.pump(id);
                self.resend(id);
            }
            busy |= self.sim.order(usize::MAX) > 0;
            for id in self.ids() {
                while self.step(id) {
                    busy = true;
                }
            }
            if !self.writes.is_empty() {
                self.write();
                busy = true;
            }
            if !busy && !self.sim.has_pending() {
                self.check_settled();
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    fn quorate_components(&self) -> Vec<Vec<NodeId>> {
        let total = self.nodes.len();
        self.sim
            .components()
            .into_iter()
            .filter(|c| 2 * c.len() > total)
            .collect()
    }

    fn check_settled(&mut self) {
        let stale = std::cell::Cell::new(0);
        for component in self.quorate_components() {
            let members: Vec<(NodeId, &Member)> = component
                .iter()
                .filter_map(|id| Some((*id, self.nodes[id].member.as_ref()?)))
                .filter(|(id, _)| self.sim.is_joined(*id))
                .collect();
            let mut live_claims = Vec::new();
            for &(id, m) in &members {
                assert_eq!(
                    m.standing(),
                    Standing::Valid,
                    "node {id}: no state in a quorate view: {:?} {:?}",
                    m.round(),
                    m.view()
                );
                let rep = m.replica();
                if let Some(c) = rep.claim() {
                    assert!(
                        component.contains(&c.node),
                        "claim of node {} not here",
                        c.node
                    );
                }
                for &(other, _) in &members {
                    let kernel = &self.nodes[&other].kernel;
                    for &r in &kernel.marks {
                        assert!(
                            !rep.is_clean(r).unwrap(),
                            "node {id}: {r} clean, {other} marks it"
                        );
                        // Recovered while this kernel, cut off, held its mark: it may have
                        // written during the copy.
                        let older = kernel.marked_at.get(&r).zip(self.recovered_at.get(&r));
                        if older.is_some_and(|(marked, (recovered, by))| {
                            marked < recovered && *by != other
                        }) {
                            assert!(
                                !rep.in_sync(r).unwrap(),
                                "node {id}: {r} in sync, recovered while node {other}, cut off, \
                                 held a mark on it"
                            );
                            stale.set(stale.get() + 1);
                        }
                    }
                }
                if let Some((region, true)) = self.nodes[&id].kernel.claim {
                    live_claims.push((id, region));
                }
            }
            assert!(live_claims.len() <= 1, "two recoverers: {live_claims:?}");
            for &(id, region) in &live_claims {
                for &(_, m) in &members {
                    let c = m
                        .replica()
                        .claim()
                        .expect("the replica knows the recoverer");
                    assert_eq!((c.node, c.region), (id, region));
                }
            }
        }
        self.stale_marks_checked += stale.get();
    }

    /// Heals everything, clears every mark and recovers: must reach every region in sync.
    fn finish(&mut self) {
        self.disk_fails = false;
        self.sim.heal();
        let first = self.ids()[0];
        for id in self.ids() {
            self.restart(id, first);
        }
        self.sim.heal();
        for id in self.ids() {
            self.join(id);
        }
        self.settle();
        for id in self.ids() {
            if self.nodes[&id].kernel.suspended {
                self.kernel_request(id, &Req::Resume);
            }
        }
        // Clears go until one waits (a FLUSH carrying one, on a disk log), then the rest.
        for _ in 0..=self.regions {
            for id in self.ids() {
                while !self.nodes[&id].kernel.marks.is_empty()
                    && self.kernel_request(id, &Req::Clear(0)).is_some()
                {}
            }
            self.settle();
        }
        for (id, n) in &self.nodes {
            assert!(n.kernel.marks.is_empty(), "node {id}: marks left");
        }
        let mut rounds = 0;
        loop {
            let done = self.nodes.values().all(|n| {
                let m = n.member.as_ref().unwrap();
                m.replica().sync_count() == self.regions
            });
            if done {
                break;
            }
            rounds += 1;
            if rounds >= 3 * self.regions + 20 {
                for (id, n) in &self.nodes {
                    let m = n.member.as_ref().unwrap();
                    eprintln!(
                        "node {id}: {:?} serving={} claim={:?} sync={} kernel={:?}",
                        m.standing(),
                        m.serving(),
                        m.replica().claim(),
                        m.replica().sync_count(),
                        n.kernel
                    );
                }
                panic!("recovery stalls");
            }
            for id in self.ids() {
                self.kernel_request(id, &Req::Work(true));
            }
            self.settle();
        }
        for (id, n) in &self.nodes {
            assert!(
                n.kernel.outstanding.is_empty(),
                "node {id}: unanswered {:?}",
                n.kernel.outstanding
            );
            assert!(n.kernel.retry.is_empty(), "node {id}: still retrying");
        }
    }
}

fn is_lifecycle(kind: RequestType) -> bool {
    matches!(
        kind,
        RequestType::Presuspend | RequestType::Postsuspend | RequestType::Resume
    )
}

fn regions(rs: &[u64]) -> Vec<u8> {
    let mut out = vec![0; rs.len() * 8];
    encode_regions(rs, &mut out).unwrap();
    out
}

/// The regions a MARK or FLUSH first sent as `tag` marks (not the clears a FLUSH carries)
/// that no later CLEAR took back.
fn held<'a>(
    data: &'a [u8],
    tag: u64,
    cleared: &'a BTreeMap<u64, u64>,
) -> impl Iterator<Item = u64> + 'a {
    decode_regions(data)
        .filter(|&r| r & CLEAR_ENTRY == 0)
        .filter(move |r| cleared.get(r).is_none_or(|&c| c < tag))
}

fn decode_regions(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    data.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
}

fn req(regions: u64) -> impl Strategy<Value = Req> {
    // Now and then a region past the end.
    let r = move || 0..regions + 1;
    prop_oneof![
        6 => r().prop_map(Req::Mark),
        5 => any::<usize>().prop_map(Req::Clear),
        3 => prop::collection::vec(r(), 0..4).prop_map(Req::Flush),
        3 => r().prop_map(Req::IsClean),
        2 => r().prop_map(Req::InSync),
        // Recoveries mostly succeed.
        6 => prop_oneof![4 => Just(true), 1 => Just(false)].prop_map(Req::Work),
        1 => r().prop_map(Req::Fail),
        2 => r().prop_map(Req::RemoteRecovering),
        1 => Just(Req::SyncCount),
        1 => Just(Req::Presuspend),
        1 => Just(Req::Postsuspend),
        1 => Just(Req::Resume),
        1 => Just(Req::StatusInfo),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Request(usize, Req),
    Step(usize, u8),
    Order(u8),
    Settle,
    Write,
    /// The log device fails every write from now on (true), or works again.
    DiskFails(bool),
    /// Every node joins, and every kernel resumes the mirror (a cluster running).
    JoinAll,
    Crash(usize),
    KillDaemon(usize),
    Restart(usize, usize),
    Join(usize),
    Partition(Vec<bool>),
    Heal,
    /// Quorum lost and regained within the ring of this node's component (batches only).
    QuorumFlap(usize),
}

fn op(nodes: usize, regions: u64) -> impl Strategy<Value = Op> {
    let n = move || 0..nodes;
    prop_oneof![
        30 => (n(), req(regions)).prop_map(|(i, r)| Op::Request(i, r)),
        10 => (n(), 1u8..8).prop_map(|(i, k)| Op::Step(i, k)),
        6 => (1u8..8).prop_map(Op::Order),
        6 => Just(Op::Settle),
        2 => Just(Op::Write),
        1 => any::<bool>().prop_map(Op::DiskFails),
        1 => n().prop_map(Op::Crash),
        3 => n().prop_map(Op::KillDaemon),
        2 => (n(), n()).prop_map(|(i, j)| Op::Restart(i, j)),
        4 => n().prop_map(Op::Join),
        1 => prop::collection::vec(any::<bool>(), nodes).prop_map(Op::Partition),
        1 => Just(Op::Heal),
    ]
}

fn run(
    nodes: u32,
    seed: u64,
    table: &str,
    max_message: usize,
    extensions: Extensions,
    ops: &[Op],
    mode: Mode,
) -> Cluster {
    let mut c = Cluster::new(nodes, seed, table, max_message, 0.1, extensions, mode);
    c.join(1);
    c.settle();
    let id = |i: usize| i as NodeId + 1;
    for o in ops {
        match o {
            Op::Request(i, r) => {
                c.kernel_request(id(*i), r);
            }
            Op::Step(i, k) => {
                c.pump(id(*i));
                for _ in 0..*k {
                    c.step(id(*i));
                }
            }
            Op::Order(k) => {
                c.sim.order(usize::from(*k));
            }
            Op::Settle => c.settle(),
            Op::Write => c.write(),
            Op::DiskFails(fails) => c.disk_fails = *fails,
            Op::JoinAll => {
                for id in c.ids() {
                    c.join(id);
                }
                c.settle();
                for id in c.ids() {
                    c.kernel_request(id, &Req::Resume);
                }
            }
            Op::Crash(i) => c.crash(id(*i)),
            Op::KillDaemon(i) => c.kill_daemon(id(*i)),
            Op::Restart(i, j) => c.restart(id(*i), id(*j)),
            Op::Join(i) => c.join(id(*i)),
            Op::Partition(side) => {
                let a: Vec<NodeId> = (0..nodes as usize).filter(|&i| side[i]).map(id).collect();
                c.sim.partition(&[a]);
            }
            Op::Heal => c.sim.heal(),
            Op::QuorumFlap(i) => {
                c.sim.quorum_flap(id(*i));
            }
        }
        c.fence_orphans();
    }
    c.settle();
    c.finish();
    c
}

/// One random case: 3 to 5 nodes, core and disk logs, `nosync` or not, snapshots cut into
/// small chunks or not, up to 120 operations, with clears in a FLUSH or not.
type Case = (u32, u64, u64, bool, bool, usize, Vec<Op>, bool);

fn case() -> impl Strategy<Value = Case> {
    case_of(40)
}

/// Cases of logs below `regions` regions: the fewer, the more often nodes meet on one.
fn case_of(regions: u64) -> impl Strategy<Value = Case> {
    (
        3u32..=5,
        any::<u64>(),
        1u64..regions,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(64usize), Just(200), Just(1 << 20)],
        prop::collection::vec(op(5, 40), 1..120),
        // Last, so that the saved seeds still make the cases they made before it.
        any::<bool>(),
    )
}

/// A case of a cluster running from the start (every node joined, every mirror resumed), on
/// a log of fewer than 6 regions, so that nodes meet on regions often: what the planted
/// defects need to show.
fn running_case(flaps: bool) -> impl Strategy<Value = Case> {
    (
        3u32..=5,
        any::<u64>(),
        1u64..6,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(64usize), Just(1 << 20)],
        prop::collection::vec(with_flaps(nemesis_op(5, 6), flaps), 1..80),
        any::<bool>(),
    )
        .prop_map(|mut c| {
            c.6.insert(0, Op::JoinAll);
            c
        })
}

/// The nemesis's operations: writes and recoveries on few regions, daemons killed and
/// started again, disk failures, partitions and crashes, with the order and delivery
/// partial in between.
fn nemesis_op(nodes: usize, regions: u64) -> impl Strategy<Value = Op> {
    let n = move || 0..nodes;
    let r = move || 0..regions;
    prop_oneof![
        10 => (n(), r()).prop_map(|(i, x)| Op::Request(i, Req::Mark(x))),
        10 => (n(), prop_oneof![6 => Just(true), 1 => Just(false)])
            .prop_map(|(i, ok)| Op::Request(i, Req::Work(ok))),
        4 => (n(), any::<usize>()).prop_map(|(i, x)| Op::Request(i, Req::Clear(x))),
        3 => (n(), prop::collection::vec(r(), 0..3)).prop_map(|(i, x)| Op::Request(i, Req::Flush(x))),
        2 => (n(), r()).prop_map(|(i, x)| Op::Request(i, Req::Fail(x))),
        2 => (n(), r()).prop_map(|(i, x)| Op::Request(i, Req::IsClean(x))),
        1 => (n(), r()).prop_map(|(i, x)| Op::Request(i, Req::RemoteRecovering(x))),
        8 => Just(Op::Settle),
        4 => (n(), 1u8..8).prop_map(|(i, k)| Op::Step(i, k)),
        3 => (1u8..8).prop_map(Op::Order),
        3 => Just(Op::Write),
        2 => any::<bool>().prop_map(Op::DiskFails),
        4 => n().prop_map(Op::KillDaemon),
        4 => n().prop_map(Op::Join),
        1 => n().prop_map(Op::Crash),
        1 => (n(), n()).prop_map(|(i, j)| Op::Restart(i, j)),
        2 => prop::collection::vec(any::<bool>(), nodes).prop_map(Op::Partition),
        2 => Just(Op::Heal),
    ]
}

/// The nemesis's operations, with `flaps` also quorum flaps (1 in 34): without, the cases
/// stay as they were.
fn with_flaps(ops: impl Strategy<Value = Op> + 'static, flaps: bool) -> BoxedStrategy<Op> {
    if flaps {
        prop_oneof![66 => ops, 2 => (0..5usize).prop_map(Op::QuorumFlap)].boxed()
    } else {
        ops.boxed()
    }
}

/// Runs `case` to its end in `mode`; panics where a check fails.
fn run_case(case: Case, mode: Mode) -> Cluster {
    let (nodes, seed, regions, disk, nosync, max_message, ops, clears_in_flush) = case;
    let ops: Vec<Op> = ops
        .into_iter()
        .map(|o| clamp(o, nodes as usize, regions))
        .collect();
    let storage = if disk {
        "clustered-disk /dev/null"
    } else {
        "clustered-core"
    };
    let table = format!(
        "{} {storage} 8{}",
        regions * 8,
        if nosync { " nosync" } else { "" }
    );
    let extensions = Extensions {
        in_sync_map: true,
        clears_in_flush,
    };
    run(nodes, seed, &table, max_message, extensions, &ops, mode)
}

proptest! {
    #![proptest_config(common::proptest_seed::config(256))]

    /// Random requests, failures, daemon deaths and joins: the checks of the module's
    /// header hold throughout.
    #[test]
    fn replicas_agree_and_recovery_completes(case in case()) {
        let c = run_case(case, Mode::Direct);
        prop_assert!(!c.states.is_empty());
    }

    /// The same on a cluster running from the start, on a log of few regions.
    #[test]
    fn a_running_cluster_keeps_the_checks(case in running_case(false)) {
        run_case(case, Mode::Direct);
    }

    /// The first property, the nodes reading corosync's reports in batches.
    #[test]
    fn replicas_agree_and_recovery_completes_in_batches(case in case()) {
        let c = run_case(case, Mode::Batches);
        prop_assert!(!c.states.is_empty());
    }

    /// The second, in batches.
    #[test]
    fn a_running_cluster_keeps_the_checks_in_batches(case in running_case(false)) {
        run_case(case, Mode::Batches);
    }
}

proptest! {
    #![proptest_config(common::proptest_seed::config(256))]

    /// The second in batches, with quorum lost and regained within a ring now and then:
    /// members take each flap at one point of the group's agreed order (`cpg_views`).
    #[test]
    fn quorum_flaps_keep_the_checks_in_batches(case in running_case(true)) {
        run_case(case, Mode::Batches);
    }
}

/// What the checks met in some cases.
#[derive(Debug, Default)]
struct Met {
    killed: u64,
    fenced: u64,
    compared: u64,
    flushed: u64,
    recovered: u64,
    stale: u64,
}

impl Met {
    fn add(&mut self, c: &Cluster) {
        self.killed += c.killed;
        self.fenced += c.fenced;
        self.compared += c.compared;
        self.flushed += c.flushed;
        self.recovered += c.recoveries;
        self.stale += c.stale_marks_checked;
    }

    /// Fails below the floors that make a mode's 256 fixed cases worth running.
    fn check(&self, mode: Mode) {
        let Met {
            killed,
            fenced,
            compared,
            flushed,
            recovered,
            stale,
        } = *self;
        eprintln!(
            "256 cases, {mode:?}: {killed} daemons killed, {fenced} fenced, {recovered} \
             recoveries and {flushed} disk FLUSHes checked against the kernels' marks, {stale} \
             regions of marks older than their recovery checked out of sync, {compared} replica \
             comparisons"
        );
        assert!(
            recovered >= 200,
            "{mode:?}: only {recovered} recoveries checked"
        );
        // The fixed cases in batches meet none (their timing differs): the direct ones do.
        assert!(
            stale >= 1 || mode == Mode::Batches,
            "{mode:?}: no mark older than its region's recovery came back"
        );
        assert!(killed >= 80, "{mode:?}: only {killed} daemons killed");
        assert!(
            flushed >= 200,
            "{mode:?}: only {flushed} disk FLUSHes checked"
        );
        assert!(compared >= 20_000, "{mode:?}: only {compared} comparisons");
    }
}

/// Cases in batches in which a node read each order of corosync's reports at least once.
#[derive(Debug, Default)]
struct BatchCases {
    after_deliveries: u64,
    lagged: u64,
    before_ring: u64,
    rings_in_one_batch: u64,
    flaps_in_one_batch: u64,
    flaps_apart: u64,
}

impl BatchCases {
    fn add(&mut self, s: BatchStats) {
        self.after_deliveries += u64::from(s.notices_after_deliveries > 0);
        self.lagged += u64::from(s.notices_lagged > 0);
        self.before_ring += u64::from(s.notices_before_ring > 0);
        self.rings_in_one_batch += u64::from(s.rings_in_one_batch > 0);
        self.flaps_in_one_batch += u64::from(s.flaps_in_one_batch > 0);
        self.flaps_apart += u64::from(s.flaps_apart > 0);
    }
}

/// The fixed cases do exercise what the checks are for: daemons killed on live nodes (and
/// fenced when nobody with state is left to vouch for them), and points of the order where
/// replicas were compared; in batches, quorum notices read after the deliveries of their
/// ring, in a later batch, or before it, and several rings in one batch; and quorum flaps
/// within a ring whose loss and gain a node read in one batch, or apart (128 fixed running
/// cases with flaps). A checker that never met the case proves nothing; the planted defects
/// (below) show that the checks fail on each.
#[test]
fn the_checks_meet_their_cases() {
    let mut batches = BatchCases::default();
    let mut flaps = BatchCases::default();
    for mode in [Mode::Direct, Mode::Batches] {
        let mut met = Met::default();
        for (name, strategy) in [
            ("random", case().boxed()),
            ("running", running_case(false).boxed()),
        ] {
            let config = common::proptest_seed::config(128);
            let mut runner = proptest::test_runner::TestRunner::new(config);
            for _ in 0..128 {
                let case = strategy.new_tree(&mut runner).unwrap().current();
                let c = std::panic::catch_unwind(|| run_case(case.clone(), mode))
                    .unwrap_or_else(|_| panic!("a {name} case failed in {mode:?}: {case:?}"));
                met.add(&c);
                if mode == Mode::Batches {
                    batches.add(c.sim.batch_stats());
                }
            }
        }
        met.check(mode);
    }
    let mut runner = proptest::test_runner::TestRunner::new(common::proptest_seed::config(128));
    for _ in 0..128 {
        let case = running_case(true).new_tree(&mut runner).unwrap().current();
        let c = std::panic::catch_unwind(|| run_case(case.clone(), Mode::Batches))
            .unwrap_or_else(|_| panic!("a case with flaps failed: {case:?}"));
        flaps.add(c.sim.batch_stats());
    }
    eprintln!(
        "128 cases with quorum flaps, where a node read a flap's loss and gain in one batch in \
         {}, apart in {}",
        flaps.flaps_in_one_batch, flaps.flaps_apart
    );
    let BatchCases {
        after_deliveries,
        lagged,
        before_ring,
        rings_in_one_batch,
        ..
    } = batches;
    eprintln!(
        "256 cases in batches, where a node read: a quorum notice after the deliveries of its \
         ring in {after_deliveries}, in a later batch than its ring in {lagged}, before its \
         ring in {before_ring}; several rings in one batch in {rings_in_one_batch}"
    );
    // About 60% of what the fixed cases meet (103, 81, 122 and 81).
    for (what, cases, floor) in [
        ("a notice after its ring's deliveries", after_deliveries, 60),
        ("a notice in a later batch than its ring", lagged, 50),
        ("a notice before its ring", before_ring, 75),
        ("several rings in one batch", rings_in_one_batch, 50),
    ] {
        assert!(cases >= floor, "only {cases} cases in batches read {what}");
    }
    // About 60% of what the fixed cases meet (68 and 20).
    for (what, cases, floor) in [
        (
            "a flap's loss and gain in one batch",
            flaps.flaps_in_one_batch,
            40,
        ),
        ("a flap's loss and gain apart", flaps.flaps_apart, 12),
    ] {
        assert!(cases >= floor, "only {cases} cases with flaps read {what}");
    }
}

/// Defects only the batches can show: they are in `cpg_views`, which direct views skip.
#[cfg(feature = "planted")]
const BATCHES_ONLY: [dm_ulogd::cluster::planted::Bug; 1] =
    [dm_ulogd::cluster::planted::Bug::OlderRingsNoticeCounts];

/// Each defect of [`Bug::ALL`], planted alone, fails the checks within 256 fixed running
/// cases; one in `cpg_views` only in batches, and never with direct views
/// (`cargo test --features planted`; `make check` runs it).
#[cfg(feature = "planted")]
#[test]
fn the_checks_catch_every_planted_defect() {
    use dm_ulogd::cluster::planted::{plant, Bug};
    let caught_in = |bug: Bug, mode: Mode| {
        let mut runner = proptest::test_runner::TestRunner::new(common::proptest_seed::config(256));
        plant(Some(bug));
        let mut caught = 0;
        for _ in 0..256 {
            let case = running_case(false).new_tree(&mut runner).unwrap().current();
            if std::panic::catch_unwind(|| run_case(case, mode)).is_err() {
                caught += 1;
            }
        }
        plant(None);
        eprintln!("planted {bug:?}: caught in {caught} of 256 cases, {mode:?}");
        caught
    };
    let mut missed = Vec::new();
    for bug in Bug::ALL {
        let direct = caught_in(bug, Mode::Direct);
        if BATCHES_ONLY.contains(&bug) {
            assert_eq!(
                direct, 0,
                "{bug:?} caught with direct views, which never show it"
            );
            if caught_in(bug, Mode::Batches) == 0 {
                missed.push(bug);
            }
        } else if direct == 0 {
            missed.push(bug);
        }
    }
    assert!(missed.is_empty(), "the checks missed {missed:?}");
}

/// Keeps node indexes and regions within this case's cluster and log.
fn clamp(o: Op, nodes: usize, regions: u64) -> Op {
    let n = |i: usize| i % nodes;
    let r = |x: u64| x % (regions + 1);
    let req = |q: Req| match q {
        Req::Mark(x) => Req::Mark(r(x)),
        Req::Flush(xs) => Req::Flush(xs.into_iter().map(r).collect()),
        Req::IsClean(x) => Req::IsClean(r(x)),
        Req::InSync(x) => Req::InSync(r(x)),
        Req::Fail(x) => Req::Fail(r(x)),
        Req::RemoteRecovering(x) => Req::RemoteRecovering(r(x)),
        q => q,
    };
    match o {
        Op::Request(i, q) => Op::Request(n(i), req(q)),
        Op::Step(i, k) => Op::Step(n(i), k),
        Op::Crash(i) => Op::Crash(n(i)),
        Op::KillDaemon(i) => Op::KillDaemon(n(i)),
        Op::Restart(i, j) => Op::Restart(n(i), n(j)),
        Op::Join(i) => Op::Join(n(i)),
        Op::Partition(side) => Op::Partition(side.into_iter().take(nodes).collect()),
        Op::QuorumFlap(i) => Op::QuorumFlap(n(i)),
        o => o,
    }
}

/// One node's requests against the single-node server, with every node of the cluster in
/// the group and no failures: the same replies and withdrawals, but for IS_REMOTE_RECOVERING
/// where another node may recover (then every region out of sync is, by design).
fn single_node_equivalence(nodes: u32, seed: u64, table: &str, clears: bool, reqs: &[Req]) {
    let extensions = Extensions {
        in_sync_map: true,
        clears_in_flush: clears,
    };
    let mut c = Cluster::new(nodes, seed, table, 256, 0.2, extensions, Mode::Direct);
    for id in c.ids() {
        c.join(id);
    }
    c.settle();
    let mut logs = Logs::default()
        .with_in_sync_map(true)
        .with_clears_in_flush(clears);
    let header = |kind, len| Header::request(b"UUID", 1, kind, 1, len).unwrap();
    let mut out = Vec::new();
    logs.handle(
        &header(RequestType::Ctr, table.len()),
        table.as_bytes(),
        &mut out,
    )
    .unwrap();
    for q in reqs {
        let withdrawn = c.withdrawn.len();
        let Some(tag) = c.kernel_request(1, q) else {
            continue;
        };
        c.settle();
        assert!(c.nodes[&1].kernel.outstanding.is_empty());
        let got = c.answers[&(1, tag)].clone().map_err(|e| e.errno());
        let (kind, data) = c.last_sent.take().unwrap();
        let want = logs
            .handle(&header(kind, data.len()), &data, &mut out)
            .map(|()| out.clone())
            .map_err(|e| e.errno());
        let mine: Vec<(u64, u64)> = c.withdrawn[withdrawn..]
            .iter()
            .filter(|w| w.0 == 1)
            .map(|w| (w.1, w.2))
            .collect();
        let theirs: Vec<(u64, u64)> = logs
            .pending_withdrawal()
            .map(|w| (w.first, w.count))
            .into_iter()
            .collect();
        logs.withdrawal_sent();
        assert_eq!(mine, theirs, "withdrawals of {kind:?}");
        if kind == RequestType::IsRemoteRecovering && nodes > 1 {
            let (got, want) = (
                RemoteRecovering::decode(&got.unwrap()).unwrap(),
                RemoteRecovering::decode(&want.unwrap()).unwrap(),
            );
            assert_eq!(got.in_sync_hint, want.in_sync_hint);
            let r = u64::from_ne_bytes(data.try_into().unwrap());
            let rep = c.nodes[&1].member.as_ref().unwrap().replica();
            let suspended = c.nodes[&1].kernel.suspended;
            let expect = rep.in_sync(r).is_ok_and(|s| !s) && !suspended;
            assert_eq!(got.is_recovering, expect, "IS_REMOTE_RECOVERING {r}");
        } else {
            assert_eq!(got, want, "{kind:?} {data:?}");
        }
    }
}

proptest! {
    #![proptest_config(common::proptest_seed::config(256))]

    /// A cluster of one to three nodes answers node 1's requests as the single-node server.
    #[test]
    fn one_node_is_answered_as_by_the_single_node_server(
        nodes in 1u32..=3,
        seed in any::<u64>(),
        regions in 1u64..40,
        nosync in any::<bool>(),
        reqs in prop::collection::vec(req(40), 1..80),
        // Last, so that the saved seeds still make the cases they made before it.
        clears_in_flush in any::<bool>(),
    ) {
        let reqs: Vec<Req> = reqs
            .into_iter()
            .map(|q| match clamp(Op::Request(0, q), 1, regions) {
                Op::Request(_, q) => q,
                _ => unreachable!(),
            })
            // With other nodes, IS_REMOTE_RECOVERING puts regions first in line for recovery
            // (cmirrord's priority list): the next work differs from the single node's by
            // design. Its answer is compared below when it is asked alone.
            .filter(|q| nodes == 1 || !matches!(q, Req::RemoteRecovering(_)))
            .collect();
        let table = format!("{} clustered-core 8{}", regions * 8, if nosync { " nosync" } else { "" });
        single_node_equivalence(nodes, seed, &table, clears_in_flush, &reqs);
    }
}

/// Found by 100,000 new running cases (`LONG=1`), a false alarm of the checker: node 2
/// crashed with a request of its kernel (tag 3) still to be delivered, which node 3 then
/// delivered; node 2's next kernel numbered its own requests from 1 again, and its MARK of
/// tag 3, ordered after node 1's report, was taken for one node 3 had delivered before it.
#[test]
fn a_recovery_does_not_count_under_a_mark_made_after_a_restart() {
    use Op::{Crash, Join, JoinAll, Order, Request as R, Restart, Settle};
    use Req::{Clear, Flush, IsClean, Mark, RemoteRecovering, Work};
    let ops = vec![
        JoinAll,
        R(0, Work(true)),
        Settle,
        R(1, Mark(1)),
        R(4, RemoteRecovering(0)),
        Order(2),
        R(1, IsClean(0)),
        Crash(1),
        R(0, Mark(0)),
        R(2, IsClean(0)),
        Restart(1, 2),
        R(0, Clear(0)),
        R(0, RemoteRecovering(0)),
        Join(4),
        R(4, Flush(vec![])),
        R(2, Mark(1)),
        R(4, Work(true)),
        Settle,
        R(0, Work(true)),
        R(3, Mark(0)),
        R(4, Mark(0)),
        R(0, Mark(0)),
    ];
    let case = (3, 417_948_022_750_359_275, 2, false, false, 64, ops, false);
    run_case(case, Mode::Direct);
}
