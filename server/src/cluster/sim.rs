// SPDX-License-Identifier: GPL-2.0
//! An in-process simulation of a process group over N nodes, deterministic under a seed: one
//! agreed order per component, virtual synchrony, crashes, partitions and merges, and flow
//! control refusals, and member processes that die on a live node. Each node's [`SimGroup`] is its [`Group`].
//!
//! Nothing happens on its own: multicast messages wait, unordered, until [`Sim::order`]
//! puts them in their component's agreed order (a seeded choice among the senders, each
//! sender's own order kept) and queues them for every member. A membership change first
//! settles what is waiting, as totem's membership protocol does: messages of senders that
//! stay in a component reach all its members that were in the old view; of the messages of
//! a sender that crashed or is cut off, each new component gets the same seeded prefix for
//! all its members. Then every component whose membership or quorum changed installs a view.
//!
//! **Batches** ([`Sim::with_batches`]). Corosync hands dm-ulogd no views: CPG reports group
//! changes, rings and deliveries, and the quorum service its notices on a connection of its
//! own, and `CpgGroup::dispatch` reads a CPG batch first and the notices after it. In this
//! mode each node's connection queues what corosync would say ([`Raw`]) and reads it as
//! `dispatch` does, in seeded batches (a part of what CPG has, then the notices queued by
//! then, some left for a later batch), through its own [`Views`], the code dm-ulogd runs. So
//! notices come after the rings and deliveries they belong with, several rings come in one
//! batch, and quorum may be lost and regained within one ring ([`Sim::quorum_flap`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cpg_views::{view_id, Raw, Views};
use super::group::{Group, GroupError, GroupEvent, NodeId, View, ViewId};

/// One node as the network sees it.
#[derive(Debug, Default)]
struct Slot {
    up: bool,
    joined: bool,
    /// Index into `components`.
    component: usize,
    inbox: VecDeque<GroupEvent>,
    /// The member's process stopped (not the node): the next views say so.
    killed: bool,
    /// Members, quorum and ring of the last view installed here.
    last: Option<(Vec<NodeId>, bool, Vec<NodeId>)>,
    /// The nodes of its ring after the last change, and the ring's seq.
    ring: Vec<NodeId>,
    seq: u64,
    /// The checker's id of the last view taken here ([`SimGroup::view_instance`]).
    instance: Option<ViewId>,
    /// What corosync says to its connection, in batches.
    corosync: Connection,
}

/// One node's connection to corosync, in batches: what it has not read yet, and its views.
#[derive(Debug, Default)]
struct Connection {
    /// Its dm-ulogd's process id (a new one at each join).
    pid: u32,
    /// The members CPG last reported to it.
    reported: Vec<(NodeId, u32)>,
    /// What CPG queued, in order.
    cpg: VecDeque<Raw>,
    /// The quorum service's notices, on their own connection.
    notices: VecDeque<Raw>,
    /// Its dm-ulogd's [`Views`].
    views: Views,
    /// Batches read.
    batches: u64,
    /// The latest ring reported to it (or the one it joined in).
    ring_read: u64,
    /// Rings reported whose notice it has not read: the batch of the report, and whether a
    /// delivery was read after it.
    unnoticed: BTreeMap<u64, (u64, bool)>,
    /// A loss it read last in a batch, for a ring whose gain may follow.
    loss_read: Option<u64>,
}

/// How often the batches met what `CpgGroup::dispatch` meets: the checker's floors count
/// them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches read.
    pub dispatches: u64,
    /// Batches whose CPG part held the reports of two rings or more.
    pub rings_in_one_batch: u64,
    /// Quorum notices read after a delivery that came after their ring's report.
    pub notices_after_deliveries: u64,
    /// Quorum notices read in a later batch than their ring's report.
    pub notices_lagged: u64,
    /// Quorum notices read before their ring's report.
    pub notices_before_ring: u64,
    /// Quorum flaps within a ring made.
    pub flaps: u64,
    /// Flaps whose loss and gain a node read in one batch.
    pub flaps_in_one_batch: u64,
    /// Flaps whose loss and gain a node read in different batches.
    pub flaps_apart: u64,
}

#[derive(Debug)]
struct Net {
    /// Nodes the quorum is counted against.
    configured: usize,
    rng: ChaCha8Rng,
    max_message: usize,
    /// Chance that a multicast is refused with `TryAgain`.
    try_again: f64,
    next_view: u64,
    slots: BTreeMap<NodeId, Slot>,
    /// Number of components; slots name theirs.
    components: usize,
    /// Per component, per sender: messages not ordered yet.
    pending: Vec<BTreeMap<NodeId, VecDeque<Vec<u8>>>>,
    /// Nodes hear corosync's reports in batches rather than views.
    batches: bool,
    next_seq: u64,
    next_pid: u32,
    /// In batches: the checker's id of each view id a report may make, numbered in the order
    /// of the reports ([`SimGroup::view_instance`]).
    born: BTreeMap<ViewId, ViewId>,
    stats: BatchStats,
}

/// The simulated network; clone-free handles to it are [`SimGroup`]s.
#[derive(Debug)]
pub struct Sim {
    net: Rc<RefCell<Net>>,
}

/// One node's handle on the simulated group.
#[derive(Debug)]
pub struct SimGroup {
    net: Rc<RefCell<Net>>,
    node: NodeId,
}

impl Sim {
    /// Nodes `1..=nodes`, all up in one component, none joined. Multicasts larger than
    /// `max_message` are refused; with `try_again` chance one is refused for flow control.
    pub fn new(nodes: u32, seed: u64, max_message: usize, try_again: f64) -> Self {
        // Ring 1, of every node: the one the first joiners join in.
        let slots = (1..=nodes)
            .map(|n| {
                let slot = Slot {
                    up: true,
                    ring: (1..=nodes).collect(),
                    seq: 1,
                    ..Slot::default()
                };
                (n, slot)
            })
            .collect();
        Self {
            net: Rc::new(RefCell::new(Net {
                configured: nodes as usize,
                rng: ChaCha8Rng::seed_from_u64(seed),
                max_message,
                try_again,
                next_view: 1,
                slots,
                components: 1,
                pending: vec![BTreeMap::new()],
                batches: false,
                next_seq: 1,
                next_pid: 100,
                born: BTreeMap::new(),
                stats: BatchStats::default(),
            })),
        }
    }

    /// The same network, but each node hears what corosync would say, read in batches as
    /// `CpgGroup::dispatch` reads it, through its own [`Views`]: see the module's doc. Before
    /// any node joins.
    pub fn with_batches(self) -> Self {
        self.net.borrow_mut().batches = true;
        self
    }

    /// What the batches met so far.
    pub fn batch_stats(&self) -> BatchStats {
        self.net.borrow().stats
    }

    /// Quorum is lost and regained within the ring of `node`'s component, as votequorum may
    /// report it (expected votes changed, a quorum device's vote lost and back): each member
    /// there gets both notices for the ring. Only in batches (a view cannot say it), and
    /// only in a quorate component; false if nothing happened.
    pub fn quorum_flap(&self, node: NodeId) -> bool {
        let mut net = self.net.borrow_mut();
        let Some(&Slot { component, seq, .. }) = net.slots.get(&node).filter(|s| s.up) else {
            return false;
        };
        if !net.batches || !net.quorate(component) {
            return false;
        }
        let here = |s: &&mut Slot| s.up && s.joined && s.component == component;
        for s in net.slots.values_mut().filter(here) {
            s.corosync.notices.extend([
                Raw::Quorum {
                    quorate: false,
                    seq,
                },
                Raw::Quorum { quorate: true, seq },
            ]);
        }
        net.stats.flaps += 1;
        true
    }

    /// Node `node`'s group handle.
    pub fn group(&self, node: NodeId) -> SimGroup {
        SimGroup {
            net: Rc::clone(&self.net),
            node,
        }
    }

    /// Orders up to `count` waiting messages; returns how many it ordered.
    pub fn order(&self, count: usize) -> usize {
        let mut net = self.net.borrow_mut();
        (0..count).take_while(|_| net.order_one()).count()
    }

    /// Whether messages wait to be ordered.
    pub fn has_pending(&self) -> bool {
        self.net
            .borrow()
            .pending
            .iter()
            .any(|c| c.values().any(|q| !q.is_empty()))
    }

    /// Whether `node` has events to take (in batches: or reports to read).
    pub fn has_events(&self, node: NodeId) -> bool {
        self.net
            .borrow()
            .slots
            .get(&node)
            .is_some_and(|s| !s.inbox.is_empty() || s.corosync.unread())
    }

    /// Whether the node is up.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.net.borrow().slots.get(&node).is_some_and(|s| s.up)
    }

    /// Whether the node is a member of the group.
    pub fn is_joined(&self, node: NodeId) -> bool {
        self.net.borrow().slots.get(&node).is_some_and(|s| s.joined)
    }

    /// The nodes that are up, by component.
    pub fn components(&self) -> Vec<Vec<NodeId>> {
        let net = self.net.borrow();
        let mut by: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for (&n, s) in net.slots.iter().filter(|(_, s)| s.up) {
            by.entry(s.component).or_default().push(n);
        }
        by.into_values().collect()
    }

    /// The node stops (its daemon, or the machine): it leaves every view, unannounced.
    pub fn crash(&self, node: NodeId) {
        self.net.borrow_mut().reconfigure(|net| {
            let s = net.slots.get_mut(&node).expect("a node of the simulation");
            s.up = false;
            s.joined = false;
        });
    }

    /// The node's member process stops (dm-ulogd dies), unannounced, while the node stays up
    /// in its component: the others' next view has it in [`View::process_down`].
    pub fn kill_process(&self, node: NodeId) {
        self.net.borrow_mut().reconfigure(|net| {
            let s = net.slots.get_mut(&node).expect("a node of the simulation");
            if s.joined {
                s.joined = false;
                s.killed = true;
                s.inbox.clear();
                s.corosync = Connection::default();
            }
        });
    }

    /// A crashed node comes back (not joined), in the component of `beside`, or alone.
    pub fn restart(&self, node: NodeId, beside: Option<NodeId>) {
        self.net.borrow_mut().reconfigure(|net| {
            let component = match beside.and_then(|b| net.slots.get(&b)).filter(|b| b.up) {
                Some(b) => b.component,
                None => net.components,
            };
            let s = net.slots.get_mut(&node).expect("a node of the simulation");
            *s = Slot {
                up: true,
                component,
                ..Slot::default()
            };
        });
    }

    /// Cuts the network: each side's nodes can reach only the nodes of their side that
    /// they reached before; nodes on no side stay together.
    pub fn partition(&self, sides: &[Vec<NodeId>]) {
        self.net.borrow_mut().reconfigure(|net| {
            let ways = sides.len() + 1;
            for (n, s) in net.slots.iter_mut() {
                let side = sides
                    .iter()
                    .position(|x| x.contains(n))
                    .unwrap_or(sides.len());
                // The old component and the side make the new one.
                s.component = s.component * ways + side;
            }
        });
    }

    /// Heals every partition: all nodes that are up reach each other.
    pub fn heal(&self) {
        self.net.borrow_mut().reconfigure(|net| {
            for s in net.slots.values_mut() {
                s.component = 0;
            }
        });
    }
}

impl Net {
    fn members(&self, component: usize) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.up && s.joined && s.component == component)
            .map(|(&n, _)| n)
            .collect()
    }

    /// The nodes up in `component`, members or not.
    fn ring(&self, component: usize) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.up && s.component == component)
            .map(|(&n, _)| n)
            .collect()
    }

    fn quorate(&self, component: usize) -> bool {
        let up = self
            .slots
            .values()
            .filter(|s| s.up && s.component == component)
            .count();
        2 * up > self.configured
    }

    fn order_one(&mut self) -> bool {
        let waiting: Vec<(usize, NodeId)> = self
            .pending
            .iter()
            .enumerate()
            .flat_map(|(c, q)| {
                q.iter()
                    .filter(|(_, m)| !m.is_empty())
                    .map(move |(&n, _)| (c, n))
            })
            .collect();
        if waiting.is_empty() {
            return false;
        }
        let (c, from) = waiting[self.rng.random_range(0..waiting.len())];
        let payload = self.pending[c]
            .get_mut(&from)
            .and_then(VecDeque::pop_front)
            .expect("a waiting message");
        let members = self.members(c);
        self.deliver(&members, from, &payload);
        true
    }

    /// Puts a message from `from` into the inbox of each of `recipients`.
    fn deliver(&mut self, recipients: &[NodeId], from: NodeId, payload: &[u8]) {
        for m in recipients {
            let payload = payload.to_vec();
            let slot = self.slots.get_mut(m).expect("a member");
            if self.batches {
                slot.corosync.cpg.push_back(Raw::Deliver { from, payload });
            } else {
                slot.inbox.push_back(GroupEvent::Message { from, payload });
            }
        }
    }

    /// Applies a membership change: settles waiting messages against the new components,
    /// then installs the views that changed.
    fn reconfigure(&mut self, change: impl FnOnce(&mut Net)) {
        let before: BTreeMap<NodeId, (bool, usize)> = self
            .slots
            .iter()
            .map(|(&n, s)| (n, (s.up && s.joined, s.component)))
            .collect();
        change(self);
        self.renumber_components();
        let pending = std::mem::take(&mut self.pending);
        self.pending = vec![BTreeMap::new(); self.components];
        // Per old component, per new component: who gets which sender's messages.
        for (old, mut senders) in pending.into_iter().enumerate() {
            senders.retain(|_, q| !q.is_empty());
            let mut by_new: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
            for (&n, &(member, c)) in &before {
                let s = &self.slots[&n];
                if member && c == old && s.up && s.joined {
                    by_new.entry(s.component).or_default().push(n);
                }
            }
            for (new, recipients) in by_new {
                // Senders still reachable deliver everything; others a seeded prefix.
                let mut queues: Vec<(NodeId, VecDeque<Vec<u8>>)> = Vec::new();
                for (&from, q) in &senders {
                    let s = &self.slots[&from];
                    let keep = if s.up && s.component == new {
                        q.len()
                    } else {
                        self.rng.random_range(0..=q.len())
                    };
                    queues.push((from, q.iter().take(keep).cloned().collect()));
                }
                queues.retain(|(_, q)| !q.is_empty());
                while !queues.is_empty() {
                    let i = self.rng.random_range(0..queues.len());
                    let from = queues[i].0;
                    let payload = queues[i].1.pop_front().expect("not empty");
                    if queues[i].1.is_empty() {
                        queues.swap_remove(i);
                    }
                    self.deliver(&recipients, from, &payload);
                }
            }
        }
        for s in self.slots.values_mut().filter(|s| !(s.up && s.joined)) {
            s.last = None;
            if !s.up {
                s.inbox.clear();
            }
            if self.batches {
                s.corosync = Connection::default();
            }
        }
        if self.batches {
            self.report();
            return;
        }
        for c in 0..self.components {
            let members = self.members(c);
            let quorate = self.quorate(c);
            let ring = self.ring(c);
            let now = (members.clone(), quorate, ring.clone());
            let changed = members
                .iter()
                .any(|m| self.slots[m].last.as_ref() != Some(&now));
            if !changed {
                continue;
            }
            let id = ViewId(self.next_view);
            self.next_view += 1;
            for &m in &members {
                let slot = &self.slots[&m];
                let last = slot.last.as_ref().map(|l| l.0.clone()).unwrap_or_default();
                let mut view = View::after(id, &last, members.clone(), quorate);
                view.process_down = view
                    .left
                    .iter()
                    .copied()
                    .filter(|n| self.slots[n].killed && ring.contains(n))
                    .collect();
                view.ring = Some(ring.clone());
                let slot = self.slots.get_mut(&m).expect("a member");
                slot.inbox.push_back(GroupEvent::View(view));
                slot.last = Some(now.clone());
            }
        }
    }

    /// What corosync says after a change, in batches: to each member whose group changed,
    /// CPG's confchg (why members left or joined, as CPG tells: a node down or up is a ring
    /// change, a process down on a live node is `PROCDOWN`); to each member whose ring
    /// changed, CPG's report of the ring after it, and the quorum service's notice for it.
    fn report(&mut self) {
        for c in 0..self.components {
            let ring = self.ring(c);
            if ring.is_empty() {
                continue;
            }
            let quorate = self.quorate(c);
            let seq = ring.iter().any(|n| self.slots[n].ring != ring).then(|| {
                self.next_seq += 1;
                self.next_seq
            });
            let members: Vec<(NodeId, u32)> = self
                .members(c)
                .into_iter()
                .map(|n| (n, self.slots[&n].corosync.pid))
                .collect();
            let mut reports = Vec::new();
            let mut born = Vec::new();
            for &(m, _) in &members {
                let slot = &self.slots[&m];
                let before = &slot.corosync.reported;
                let mut raws = Vec::new();
                // A loss read before the ring's report makes a view of the members before.
                if seq.is_some() && !quorate && !before.is_empty() {
                    born.push((before.clone(), None, false));
                }
                if *before != members {
                    let left: Vec<NodeId> = before
                        .iter()
                        .filter(|a| !members.contains(a))
                        .map(|a| a.0)
                        .collect();
                    let mut joined = members.iter().filter(|a| !before.contains(a));
                    let process_down = left
                        .iter()
                        .copied()
                        .filter(|l| self.slots[l].killed && ring.contains(l))
                        .collect();
                    // A joiner's first confchg is its own JOIN.
                    let ring_change = !before.is_empty()
                        && (left.iter().any(|l| !ring.contains(l))
                            || joined.any(|j| !slot.ring.contains(&j.0)));
                    raws.push(Raw::Members {
                        members: members.clone(),
                        ring_change,
                        process_down,
                    });
                    if !ring_change {
                        born.push((members.clone(), None, false));
                        born.push((members.clone(), None, true));
                    }
                }
                if let Some(seq) = seq {
                    raws.push(Raw::Ring(seq, ring.clone()));
                    // Not quorate either, if its notice was skipped for a later ring's.
                    let with = Some((seq, ring.clone()));
                    born.push((members.clone(), with.clone(), false));
                    born.push((members.clone(), with, quorate));
                }
                reports.push((m, raws));
            }
            for (members, ring, quorate) in born {
                self.born(&members, ring.as_ref(), &[quorate]);
            }
            for (m, raws) in reports {
                let corosync = &mut self.slots.get_mut(&m).expect("a member").corosync;
                corosync.cpg.extend(raws);
                corosync.reported.clone_from(&members);
                if let Some(seq) = seq {
                    corosync.notices.push_back(Raw::Quorum { quorate, seq });
                }
            }
            for n in &ring {
                let s = self.slots.get_mut(n).expect("a node");
                s.ring.clone_from(&ring);
                s.seq = seq.unwrap_or(s.seq);
            }
        }
    }

    /// Reads one batch at `node` as `CpgGroup::dispatch` does: a seeded part of what CPG has
    /// (often all of it), then the quorum notices (often all of them, else the first ones:
    /// the others lag into a later batch), at least one thing in all; its [`Views`] turn
    /// them into events, asking for quorum as it is now.
    fn dispatch(&mut self, node: NodeId) {
        let quorate = self.quorate(self.slots[&node].component);
        let rng = &mut self.rng;
        let c = &mut self.slots.get_mut(&node).expect("a node").corosync;
        let mut some = |len: usize, all: f64| {
            if rng.random_bool(all) {
                len
            } else {
                rng.random_range(0..=len)
            }
        };
        let mut cpg = some(c.cpg.len(), 0.5);
        let mut notices = some(c.notices.len(), 0.75);
        if cpg + notices == 0 {
            if c.cpg.is_empty() {
                notices = 1;
            } else {
                cpg = 1;
            }
        }
        let raws: Vec<Raw> = c
            .cpg
            .drain(..cpg)
            .chain(c.notices.drain(..notices))
            .collect();
        c.count(&raws, &mut self.stats);
        c.views
            .feed(raws, &mut || Ok(quorate))
            .expect("the simulation answers for quorum");
        // What the views multicast (quorum changes read), as `CpgGroup` sends it.
        let outbox = c.views.take_outbox();
        let component = self.slots[&node].component;
        self.pending[component]
            .entry(node)
            .or_default()
            .extend(outbox);
        let slot = self.slots.get_mut(&node).expect("a node");
        while let Some(event) = slot.corosync.views.next_event() {
            slot.inbox.push_back(event);
        }
    }

    /// Numbers the views of `members` (with process ids) with each quorum of `quorum`, and
    /// with `ring` if they come with its report, as [`Views`] would id them: the checker's
    /// ids, in the order the reports were made.
    fn born(
        &mut self,
        members: &[(NodeId, u32)],
        ring: Option<&(u64, Vec<NodeId>)>,
        quorum: &[bool],
    ) {
        for &quorate in quorum {
            self.born
                .insert(view_id(members, quorate, ring), ViewId(self.next_view));
            self.next_view += 1;
        }
    }

    /// The checker's id of `view`, taken now: its own id, except in batches, where ids are
    /// hashes, which do not grow (and repeat if the same processes form a group again in
    /// one ring): there, the number of the last report that could make it. Any other view
    /// gets a new number the first time a node takes it: one a quorum change within a ring
    /// made (the group agrees on its id), one without quorum made by a loss read before its
    /// ring's report (of members older than those reported last), or one `Views` should not
    /// have made.
    fn instance(&mut self, view: &View) -> ViewId {
        if !self.batches {
            return view.id;
        }
        let next = &mut self.next_view;
        *self.born.entry(view.id).or_insert_with(|| {
            *next += 1;
            ViewId(*next - 1)
        })
    }

    /// Numbers the components `0..n` again, keeping their grouping.
    fn renumber_components(&mut self) {
        let mut numbers: BTreeMap<usize, usize> = BTreeMap::new();
        for s in self.slots.values_mut() {
            let next = numbers.len();
            s.component = *numbers.entry(s.component).or_insert(next);
        }
        self.components = numbers.len().max(1);
    }
}

impl Group for SimGroup {
    fn local_node(&self) -> NodeId {
        self.node
    }

    fn max_message_size(&self) -> usize {
        self.net.borrow().max_message
    }

    fn join(&mut self) -> Result<(), GroupError> {
        let mut net = self.net.borrow_mut();
        let slot = &net.slots[&self.node];
        if !slot.up {
            return Err(GroupError::Closed);
        }
        if slot.joined {
            return Err(GroupError::AlreadyJoined);
        }
        let node = self.node;
        net.reconfigure(|net| {
            net.next_pid += 1;
            let pid = net.next_pid;
            let s = net.slots.get_mut(&node).expect("a node");
            s.joined = true;
            s.killed = false;
            let mut views = Views::new(node);
            views.set_joined(true);
            s.corosync = Connection {
                pid,
                views,
                ring_read: s.seq,
                ..Connection::default()
            };
        });
        Ok(())
    }

    fn multicast(&mut self, payload: &[u8]) -> Result<(), GroupError> {
        let mut net = self.net.borrow_mut();
        let slot = &net.slots[&self.node];
        if !slot.up {
            return Err(GroupError::Closed);
        }
        if !slot.joined {
            return Err(GroupError::NotJoined);
        }
        let component = slot.component;
        if payload.len() > net.max_message {
            return Err(GroupError::TooLarge {
                len: payload.len(),
                max: net.max_message,
            });
        }
        let chance = net.try_again;
        if chance > 0.0 && net.rng.random_bool(chance) {
            return Err(GroupError::TryAgain);
        }
        net.pending[component]
            .entry(self.node)
            .or_default()
            .push_back(payload.to_vec());
        Ok(())
    }

    fn leave(&mut self) -> Result<(), GroupError> {
        let mut net = self.net.borrow_mut();
        if !net.slots[&self.node].joined {
            return Err(GroupError::NotJoined);
        }
        let node = self.node;
        net.reconfigure(|net| net.slots.get_mut(&node).expect("a node").joined = false);
        net.slots.get_mut(&node).expect("a node").inbox.clear();
        Ok(())
    }

    fn next_event(&mut self) -> Option<GroupEvent> {
        let mut net = self.net.borrow_mut();
        let slot = net.slots.get(&self.node)?;
        if !slot.up {
            return None;
        }
        while net.batches
            && net.slots[&self.node].inbox.is_empty()
            && net.slots[&self.node].corosync.unread()
        {
            net.dispatch(self.node);
        }
        let event = net.slots.get_mut(&self.node)?.inbox.pop_front()?;
        if let GroupEvent::View(v) = &event {
            let instance = net.instance(v);
            net.slots.get_mut(&self.node)?.instance = Some(instance);
        }
        Some(event)
    }
}

impl SimGroup {
    /// The checker's id of the last view this node took: the view's id, except in batches,
    /// where it numbers the views in the order of the reports that made them (their own
    /// ids are hashes, which do not grow).
    pub fn view_instance(&self) -> Option<ViewId> {
        self.net.borrow().slots.get(&self.node)?.instance
    }
}

impl Connection {
    /// Whether corosync said something it has not read.
    fn unread(&self) -> bool {
        !(self.cpg.is_empty() && self.notices.is_empty())
    }

    /// Counts what one batch holds against what was read before.
    fn count(&mut self, raws: &[Raw], stats: &mut BatchStats) {
        self.batches += 1;
        stats.dispatches += 1;
        let mut rings = 0;
        let mut losses = BTreeSet::new();
        for raw in raws {
            match *raw {
                Raw::Ring(seq, _) => {
                    rings += 1;
                    self.ring_read = self.ring_read.max(seq);
                    self.unnoticed.insert(seq, (self.batches, false));
                }
                Raw::Deliver { .. } => {
                    for (_, delivered) in self.unnoticed.values_mut() {
                        *delivered = true;
                    }
                }
                Raw::Members { .. } => {}
                Raw::Quorum { quorate, seq } => {
                    match self.unnoticed.remove(&seq) {
                        Some((batch, delivered)) => {
                            stats.notices_after_deliveries += u64::from(delivered);
                            stats.notices_lagged += u64::from(batch < self.batches);
                        }
                        None if seq > self.ring_read => stats.notices_before_ring += 1,
                        None => {}
                    }
                    if !quorate {
                        losses.insert(seq);
                        self.loss_read = Some(seq);
                    } else {
                        if losses.contains(&seq) {
                            stats.flaps_in_one_batch += 1;
                        } else if self.loss_read == Some(seq) {
                            stats.flaps_apart += 1;
                        }
                        self.loss_read = None;
                    }
                }
            }
        }
        stats.rings_in_one_batch += u64::from(rings >= 2);
    }
}
