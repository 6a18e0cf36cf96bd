// SPDX-License-Identifier: GPL-2.0
//! CPG's callbacks turned into the views and deliveries of [`Group`](super::group::Group):
//! what [`super::corosync`] hears from corosync goes through [`Views::feed`], in the order
//! the callbacks came, and comes out as [`GroupEvent`]s. No corosync here, so the rules are
//! tested on their own.
//!
//! - **Views.** A view's id is a hash of what all its members see alike: the members with
//!   their process ids, and quorum (CPG's confchg carries no ring id, and the totem ring id
//!   reaches a client only at a ring change it saw, never the initial one). It is the same
//!   at every member, a merged view included, and differs from the view before it. It
//!   repeats only if the same processes form the same group again in one totem ring, which
//!   takes a member's log leaving and joining again; a message of the earlier view would
//!   have to wait in corosync's queue all that time to be taken for one of the later.
//! - **Quorum** comes with the rings: see [`Views::install`]. `CpgGroup::dispatch` reads a
//!   whole CPG batch and then the quorum notices, so [`Views::feed`] takes notices in any
//!   order against the rings: a ring's view is installed once, with the first quorum known
//!   for that ring; a notice for an older ring changes nothing.
//! - **Quorum changes within a ring** ([`Flaps`]) go through the group's agreed order: a
//!   member that reads one multicasts it ([`Message::Quorum`]), and every member takes it at
//!   the first such message delivered, under an id chained from the view's, so a flap
//!   never repeats an id and every member's rounds meet. A loss stops this node at once,
//!   before its message comes back. A view that processes joining or leaving make starts
//!   with the first word of quorum a member tells for it ([`Flaps::unsure`]): a joiner
//!   cannot know a change the others agreed on.
//! - **Deliveries without quorum** are kept ([`Unquorate`]): when a ring's quorum comes,
//!   the other members' Hellos for the quorate view may be read before this node's notice.

use std::collections::{BTreeMap, VecDeque};

use tracing::warn;

use super::group::{GroupError, GroupEvent, NodeId, View, ViewId};
use super::message::Message;
use super::planted::{planted, Bug};

/// What corosync said, in the order its callbacks said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Raw {
    /// A message.
    Deliver {
        /// Its sender.
        from: NodeId,
        /// What it sent.
        payload: Vec<u8>,
    },
    /// The group's members changed.
    Members {
        /// The members: node and process id.
        members: Vec<(NodeId, u32)>,
        /// Nodes came or went (CPG's NODEUP or NODEDOWN), rather than processes joining or
        /// leaving: the ring changed.
        ring_change: bool,
        /// Members whose process stopped without leaving while their node stays (CPG's
        /// PROCDOWN).
        process_down: Vec<NodeId>,
    },
    /// A totem ring was installed, with its nodes (empty: not known): CPG sends it after the
    /// group changes that the ring brought, so the group's members are final for that ring.
    Ring(u64, Vec<NodeId>),
    /// Quorum in a ring (from the quorum service, on its own connection: not in the group's
    /// order).
    Quorum {
        /// Whether the ring is quorate.
        quorate: bool,
        /// The ring.
        seq: u64,
    },
}

/// The views of one node's membership of a group, as corosync reports them.
#[derive(Debug, Default)]
pub struct Views {
    me: NodeId,
    /// Joined: views are installed (CPG sends nothing else before).
    joined: bool,
    /// The last view's members (with process ids) and quorum.
    current: Option<Current>,
    /// Members reported PROCDOWN since the last view.
    process_down: Vec<NodeId>,
    /// The ring CPG reported last, with its nodes, until its view is installed.
    ring_nodes: Option<(u64, Vec<NodeId>)>,
    /// The last ring CPG reported (0: none since the connection was made).
    ring: u64,
    /// The members a ring change brought, installed when CPG reports the ring.
    pending: Option<Vec<(NodeId, u32)>>,
    /// A ring CPG reported before the quorum service said whether it is quorate, and its
    /// members: the view waits for that word, and what CPG delivers meanwhile waits in
    /// `backlog`.
    awaiting: Option<(u64, Vec<(NodeId, u32)>)>,
    /// What came after a ring that awaits its quorum.
    backlog: VecDeque<Raw>,
    /// Quorum of the latest rings, as the quorum service reported it first.
    quorum_of_ring: BTreeMap<u64, bool>,
    /// Quorum of the latest rings, as the last notice taken for each said.
    read_of_ring: BTreeMap<u64, bool>,
    /// Deliveries while the current view is not quorate.
    unquorate: Unquorate,
    /// Quorum changes within the current view's ring.
    flaps: Option<Flaps>,
    /// [`Message::Quorum`]s to multicast ([`Views::take_outbox`]).
    outbox: Vec<Vec<u8>>,
    events: VecDeque<GroupEvent>,
}

/// Quorum changes within a ring, as the group agreed on them and as this node read them,
/// since the last view a membership change (or a ring's quorum) made. Each change chains a
/// new view id from the one before ([`flap_id`]): every member that reads the same notices
/// from the same view computes the same chain, so their [`Message::Quorum`]s name the same
/// changes, and the first one delivered is taken by all, duplicates and late ones ignored.
#[derive(Debug)]
struct Flaps {
    /// The view the agreed order is in, and its quorum.
    agreed: (ViewId, bool),
    /// Views the agreed order went through since the chain began.
    history: Vec<ViewId>,
    /// Where this node's own notices lead, and their quorum.
    read: (ViewId, bool),
    /// Processes joining or leaving made this view: a joiner asked corosync for quorum, and
    /// the others may have agreed on a change of it that it never read. Every member tells
    /// the quorum it has, and the first word delivered is the view's ([`Views::told`]);
    /// until then what is delivered waits in `early`.
    unsure: bool,
    /// What was delivered while `unsure`.
    early: Vec<(NodeId, Vec<u8>)>,
}

impl Flaps {
    fn new(id: ViewId, quorate: bool) -> Self {
        Self {
            agreed: (id, quorate),
            history: vec![id],
            read: (id, quorate),
            unsure: false,
            early: Vec::new(),
        }
    }
}

/// The last view installed: its members with process ids, and quorum.
type Current = (Vec<(NodeId, u32)>, bool);

/// What CPG delivered while the node's view was not quorate. Another member may see quorum
/// come back (within the ring) before this node reads its notice, and its Hello for the
/// quorate view then comes first: dropped, this node's round would wait for it for good. So
/// the deliveries are kept, and follow the quorate view if it has the same members; any
/// other view drops them (they belong to a view the member did not serve).
#[derive(Debug, Default)]
struct Unquorate {
    kept: Vec<(NodeId, Vec<u8>)>,
    bytes: usize,
    /// More than [`Unquorate::MAX_BYTES`] came (a node left out of quorum for long while
    /// the others go on): none are kept, since a round cannot use a part of them.
    overflowed: bool,
}

impl Unquorate {
    /// Bounds what a node without quorum keeps: a round needs only the few Hellos sent
    /// since quorum came back.
    const MAX_BYTES: usize = 16 << 20;

    fn keep(&mut self, from: NodeId, payload: Vec<u8>) {
        if self.overflowed {
            return;
        }
        self.bytes += payload.len();
        if self.bytes > Self::MAX_BYTES {
            warn!("too much delivered while not quorate: dropped; the next view starts over");
            *self = Self {
                overflowed: true,
                ..Self::default()
            };
            return;
        }
        self.kept.push((from, payload));
    }

    /// What was kept, as deliveries, and forgets it (and an overflow: a new view starts).
    fn take(&mut self) -> impl Iterator<Item = GroupEvent> {
        std::mem::take(self)
            .kept
            .into_iter()
            .map(|(from, payload)| GroupEvent::Message { from, payload })
    }
}

impl Views {
    /// Node `me`'s views, before it joins.
    pub fn new(me: NodeId) -> Self {
        Self {
            me,
            ..Self::default()
        }
    }

    /// The node joined, or left (and forgets its views).
    pub fn set_joined(&mut self, joined: bool) {
        *self = Self {
            me: self.me,
            joined,
            ..Self::default()
        };
    }

    /// The next event, if one is ready.
    pub fn next_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// What to multicast to the group for these views (quorum changes this node read), in
    /// order: the caller sends it ahead of anything else it has to send.
    pub fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Takes what the callbacks said since the last call, in order; `ask` asks the quorum
    /// service for quorum now (only for the view that joining brings).
    pub fn feed(
        &mut self,
        raws: Vec<Raw>,
        ask: &mut dyn FnMut() -> Result<bool, GroupError>,
    ) -> Result<(), GroupError> {
        // Quorum notices are on their own connection: those read now may be for rings that
        // CPG reported earlier in this batch. A ring's view has the first quorum the ring
        // had: the changes after it go through the agreed order.
        for raw in &raws {
            if let Raw::Quorum { quorate, seq } = *raw {
                self.quorum_of_ring.entry(seq).or_insert(quorate);
            }
        }
        while self.quorum_of_ring.len() > 16 {
            self.quorum_of_ring.pop_first();
        }
        while self.read_of_ring.len() > 16 {
            self.read_of_ring.pop_first();
        }
        self.backlog.extend(raws);
        let mut deferred = VecDeque::new();
        while let Some(raw) = self.backlog.pop_front() {
            if self.awaiting.is_some() && !matches!(raw, Raw::Quorum { .. }) {
                deferred.push_back(raw);
                continue;
            }
            tracing::trace!(node = self.me, "corosync: {raw:?}");
            if self.take(raw, ask)? {
                // The awaited view is in: what came after it goes on, in order.
                while let Some(raw) = deferred.pop_back() {
                    self.backlog.push_front(raw);
                }
            }
        }
        self.backlog = deferred;
        Ok(())
    }

    /// Turns one thing corosync said into events; true if it installed the view that
    /// awaited its quorum.
    fn take(
        &mut self,
        raw: Raw,
        ask: &mut dyn FnMut() -> Result<bool, GroupError>,
    ) -> Result<bool, GroupError> {
        if matches!(raw, Raw::Members { .. } | Raw::Ring(..)) {
            if let Some(flaps) = self.flaps.as_mut().filter(|f| f.unsure) {
                // The group changed before a joiner got word of its quorum: what waited is
                // taken first, with the quorum it asked for.
                flaps.unsure = false;
                let early = std::mem::take(&mut flaps.early);
                self.backlog.push_front(raw);
                for (from, payload) in early.into_iter().rev() {
                    self.backlog.push_front(Raw::Deliver { from, payload });
                }
                return Ok(false);
            }
        }
        match raw {
            Raw::Deliver { from, payload } => {
                let told = Message::quorum(&payload);
                if let Some(flaps) = self.flaps.as_mut().filter(|f| f.unsure) {
                    // A joiner waits for the others' word of the quorum they agreed on.
                    if let Some(Message::Quorum {
                        view,
                        quorate,
                        told: true,
                    }) = told
                    {
                        if view == flaps.agreed.0 {
                            self.told(quorate);
                        }
                    } else {
                        flaps.early.push((from, payload));
                    }
                    return Ok(false);
                }
                match (told, &self.current) {
                    (
                        Some(Message::Quorum {
                            view,
                            quorate,
                            told: false,
                        }),
                        _,
                    ) => self.agree(view, quorate),
                    (Some(_), _) | (None, None) => {}
                    (None, Some((_, true))) => {
                        self.events.push_back(GroupEvent::Message { from, payload });
                    }
                    (None, Some((_, false))) => self.unquorate.keep(from, payload),
                }
            }
            // Nodes came or went: CPG's report of the ring ends the ring's group changes.
            Raw::Members {
                members,
                ring_change,
                process_down,
            } => {
                self.process_down.extend(process_down);
                if ring_change || self.pending.is_some() {
                    self.pending = Some(members);
                } else {
                    // Processes joined or left: the same ring, quorum as the group agreed
                    // (asked for the first view, joining). A change this node read that the
                    // group has not taken yet follows at once, and is told again for the new
                    // view.
                    let (quorate, read) = match (&self.flaps, &self.current) {
                        (Some(f), _) => (f.agreed.1, f.read.1),
                        (None, Some((_, quorate))) => (*quorate, *quorate),
                        (None, None) => {
                            let quorate = ask()?;
                            (quorate, quorate)
                        }
                    };
                    let process_down = std::mem::take(&mut self.process_down);
                    let ring = self.ring_nodes.take();
                    let made = self.install_view(members, quorate, ring, process_down, true);
                    if let Some(flaps) = self.flaps.as_mut().filter(|_| made) {
                        flaps.unsure = true;
                        let told = Message::Quorum {
                            view: flaps.agreed.0,
                            quorate,
                            told: true,
                        };
                        self.outbox.push(told.encode());
                    }
                    self.read_flap(read);
                }
            }
            Raw::Ring(seq, nodes) => {
                self.ring = self.ring.max(seq);
                if !nodes.is_empty() {
                    self.ring_nodes = Some((seq, nodes));
                }
                let members = self
                    .pending
                    .take()
                    .or_else(|| self.current.as_ref().map(|(m, _)| m.clone()));
                if let Some(members) = members {
                    match self.quorum_of_ring.get(&seq) {
                        Some(&quorate) => self.install_ring(members, quorate, seq),
                        None => self.awaiting = Some((seq, members)),
                    }
                }
            }
            Raw::Quorum { quorate, seq } => {
                self.read_of_ring.insert(seq, quorate);
                if let Some((ring, members)) = self.awaiting.take() {
                    if seq < ring {
                        // An older ring's notice, read late.
                        self.awaiting = Some((ring, members));
                        return Ok(false);
                    }
                    // The ring's first notice gives its view's quorum. A notice for a later
                    // ring: the awaited one's was skipped; not quorate then (the later
                    // ring's report follows).
                    self.install_ring(members, quorate && seq == ring, ring);
                    return Ok(true);
                }
                if seq < self.ring && !planted(Bug::OlderRingsNoticeCounts) {
                    // An older ring's notice, read after CPG's report of a later ring, whose
                    // own quorum stands.
                    return Ok(false);
                }
                if self.ring == 0 && self.pending.is_none() {
                    // No ring reported since joining (CPG never reports the one a node joins
                    // in): the notice is for the ring the view is in, or for one whose report
                    // follows with its members. Waiting for that report instead, a node that
                    // joined without quorum never saw it come back within its first ring.
                    self.ring = seq;
                }
                match self.current.clone() {
                    // A change within the ring CPG reported last (expected votes changed).
                    Some(_) if seq == self.ring && self.pending.is_none() => {
                        self.read_flap(quorate)
                    }
                    // A loss is taken at once, for a ring CPG has not reported yet; a gain
                    // waits for that report.
                    Some((members, true)) if !quorate => self.requorum(members, false),
                    _ => {}
                }
            }
        }
        Ok(false)
    }

    /// Queues a view of `members` with `quorate`, unless nothing changed.
    ///
    /// Quorum comes with the rings: CPG reports a ring's group changes, then the ring
    /// ([`Raw::Ring`]), and the quorum service notifies the ring's quorum on its own
    /// connection, before or after. The view of a ring is installed once both have come,
    /// and what CPG delivers after the ring waits for it. Asking for quorum at the report
    /// instead could give a later ring's, which a node still alone in a minority would take
    /// for its own (seen in the `cluster_group_minority_partition` test). A loss is taken at
    /// once. Deliveries kept without quorum follow a quorate view of the same members.
    fn install(&mut self, members: Vec<(NodeId, u32)>, quorate: bool) {
        let ring = self.ring_nodes.take();
        let process_down = std::mem::take(&mut self.process_down);
        self.install_view(members, quorate, ring, process_down, false);
    }

    /// Queues the view of ring `seq`, with the first quorum known for it; if this node read
    /// a change of it since (before the ring's report), the change follows, as
    /// [`Views::read_flap`].
    fn install_ring(&mut self, members: Vec<(NodeId, u32)>, quorate: bool, seq: u64) {
        self.install(members, quorate);
        if let Some(&read) = self.read_of_ring.get(&seq) {
            self.read_flap(read);
        }
    }

    /// Queues a view of the current members with `quorate` (a loss read before its ring's
    /// report), leaving a pending change's PROCDOWNs and ring to the view that change makes.
    fn requorum(&mut self, members: Vec<(NodeId, u32)>, quorate: bool) {
        self.install_view(members, quorate, None, Vec::new(), false);
    }

    /// This node read that quorum within its view's ring changed to `quorate`: it tells the
    /// group, which takes the change at the first such message ([`Views::agree`]). A loss
    /// stops this node at once (the member stops answering its kernel), under the id the
    /// agreed loss will have; a gain waits for the agreed order.
    fn read_flap(&mut self, quorate: bool) {
        let Some(flaps) = self.flaps.as_mut() else {
            return;
        };
        let (from, was) = flaps.read;
        if was == quorate {
            return;
        }
        let id = flap_id(from, quorate);
        flaps.read = (id, quorate);
        self.outbox.push(
            Message::Quorum {
                view: from,
                quorate,
                told: false,
            }
            .encode(),
        );
        // The agreed order went through this change already (another member told first).
        let known = flaps.history.contains(&id);
        if !known && !quorate && self.current.as_ref().is_some_and(|c| c.1) {
            self.flap_view(false, id);
        }
    }

    /// A member's [`Message::Quorum`], delivered in the agreed order: the first one for the
    /// agreed view makes the change for every member, at this point of the order; any other
    /// (a duplicate, or one sent before a view it did not know) changes nothing.
    fn agree(&mut self, view: ViewId, quorate: bool) {
        let Some(flaps) = self.flaps.as_mut() else {
            return;
        };
        if flaps.agreed != (view, !quorate) {
            return;
        }
        let id = flap_id(view, quorate);
        flaps.agreed = (id, quorate);
        flaps.history.push(id);
        if flaps.history.len() > 64 {
            flaps.history.remove(0);
        }
        // A loss this node read already stopped it, under this id.
        if quorate || self.current.as_ref().is_some_and(|c| c.1) {
            self.flap_view(quorate, id);
        }
    }

    /// The first word of the view's quorum a member told ([`Flaps::unsure`]): every member
    /// takes it at this point of the order, before any change of it (each member tells
    /// before it tells a change). The view is shown again if its quorum differs, though not
    /// as quorate to a node that read a loss since the view began (its own word of the loss
    /// follows); what was delivered meanwhile is taken now, in order.
    fn told(&mut self, quorate: bool) {
        let Some(flaps) = self.flaps.as_mut() else {
            return;
        };
        flaps.unsure = false;
        let view = flaps.agreed.0;
        flaps.agreed.1 = quorate;
        if flaps.read.0 == view {
            flaps.read.1 = quorate;
        }
        let show = !quorate || flaps.read.1;
        let early = std::mem::take(&mut flaps.early);
        if show && self.current.as_ref().is_some_and(|c| c.1 != quorate) {
            self.flap_view(quorate, view);
        }
        for (from, payload) in early.into_iter().rev() {
            self.backlog.push_front(Raw::Deliver { from, payload });
        }
    }

    /// Queues view `id` of the current members, a quorum change within the view's ring (the
    /// same at every member). What was delivered without quorum came before the change in
    /// the agreed order: it belongs to views before this one.
    fn flap_view(&mut self, quorate: bool, id: ViewId) {
        let Some((members, now)) = self.current.as_mut() else {
            return;
        };
        *now = quorate;
        let nodes: Vec<NodeId> = members.iter().map(|&(n, _)| n).collect();
        drop(self.unquorate.take());
        let view = View::after(id, &nodes, nodes.clone(), quorate);
        self.events.push_back(GroupEvent::View(view));
    }

    fn install_view(
        &mut self,
        mut members: Vec<(NodeId, u32)>,
        quorate: bool,
        ring: Option<(u64, Vec<NodeId>)>,
        process_down: Vec<NodeId>,
        by_members: bool,
    ) -> bool {
        members.sort_unstable();
        if !self.joined || !members.iter().any(|&(n, _)| n == self.me) {
            return false;
        }
        let previous = self.current.replace((members.clone(), quorate));
        // A ring's report makes a view even if the members stayed: it may be the news that
        // a node whose process had stopped is gone. Every member hears every report.
        if ring.is_none() && previous.as_ref() == Some(&(members.clone(), quorate)) {
            return false;
        }
        let regained = quorate && previous.as_ref().is_some_and(|(m, _)| *m == members);
        let before: Vec<NodeId> = previous
            .map(|(m, _)| m.into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default();
        let mut nodes: Vec<NodeId> = members.iter().map(|&(n, _)| n).collect();
        nodes.dedup();
        if nodes.len() != members.len() {
            warn!(
                node = self.me,
                "two processes of one node are in the group: one dm-ulogd per node serves a log"
            );
        }
        // Processes joining or leaving make a view with the id of its members alone: one
        // joining cannot know whether the others took a quorum change of the ring yet.
        let id = view_id(&members, quorate || by_members, ring.as_ref());
        self.flaps = Some(Flaps::new(id, quorate));
        let mut view = View::after(id, &before, nodes, quorate);
        // A node CPG reported PROCDOWN is alive then; a later ring without it died.
        view.process_down = view
            .left
            .iter()
            .copied()
            .filter(|n| process_down.contains(n))
            .filter(|n| ring.as_ref().is_none_or(|(_, r)| r.contains(n)))
            .collect();
        view.ring = ring.map(|(_, nodes)| nodes);
        self.events.push_back(GroupEvent::View(view));
        let kept = self.unquorate.take();
        if regained {
            self.events.extend(kept);
        }
        true
    }
}

/// The id of the view quorum changes to `quorate` after `view`, within its ring: FNV-1a,
/// as [`view_id`].
pub(super) fn flap_id(view: ViewId, quorate: bool) -> ViewId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in b"flap".iter().chain(&view.0.to_le_bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ u64::from(u8::from(quorate))).wrapping_mul(0x0100_0000_01b3);
    ViewId(hash)
}

/// The id of the view of `members` (sorted), `quorate` and the `ring` it comes with (its seq
/// and nodes): FNV-1a over their bytes (a view without a ring report hashes as before rings
/// counted).
pub(super) fn view_id(
    members: &[(NodeId, u32)],
    quorate: bool,
    ring: Option<&(u64, Vec<NodeId>)>,
) -> ViewId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&[u8::from(quorate)]);
    for &(node, pid) in members {
        eat(&node.to_le_bytes());
        eat(&pid.to_le_bytes());
    }
    if let Some((seq, nodes)) = ring {
        eat(b"ring");
        eat(&seq.to_le_bytes());
        for &node in nodes {
            eat(&node.to_le_bytes());
        }
    }
    ViewId(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_ids_follow_members_processes_and_quorum() {
        let a = [(1, 100), (2, 200)];
        assert_eq!(view_id(&a, true, None), view_id(&a.clone(), true, None));
        assert_ne!(view_id(&a, true, None), view_id(&a, false, None));
        assert_ne!(
            view_id(&a, true, None),
            view_id(&[(1, 100), (2, 201)], true, None)
        );
        assert_ne!(view_id(&a, true, None), view_id(&[(1, 100)], true, None));
    }

    const ALL: [(NodeId, u32); 3] = [(1, 10), (2, 20), (3, 30)];

    fn members(m: &[(NodeId, u32)], ring_change: bool) -> Raw {
        Raw::Members {
            members: m.to_vec(),
            ring_change,
            process_down: Vec::new(),
        }
    }

    /// Node 3's views for `batches` of what corosync said, the quorum service answering
    /// `asked` when asked.
    pub(super) fn views_of(batches: Vec<Vec<Raw>>, asked: bool) -> Vec<GroupEvent> {
        let mut v = Views::new(3);
        v.set_joined(true);
        let mut out = Vec::new();
        for batch in batches {
            v.feed(batch, &mut || Ok(asked)).unwrap();
            // The quorum changes node 3 tells come back in a batch of their own, as node 1
            // (which reads the same notices) tells them first.
            let back = v
                .take_outbox()
                .into_iter()
                .map(|payload| Raw::Deliver { from: 1, payload })
                .collect();
            v.feed(back, &mut || Ok(asked)).unwrap();
            while let Some(e) = v.next_event() {
                out.push(e);
            }
        }
        out
    }

    pub(super) fn summary(events: &[GroupEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                GroupEvent::View(v) => format!("view {:?} {}", v.members, v.quorate),
                GroupEvent::Message { from, .. } => format!("msg {from}"),
            })
            .collect()
    }

    /// Node 3 cut off (ring 17, then 21, alone), then healed (ring 25). Read late, when
    /// corosync is already back in a quorate ring, the minority's rings must still count as
    /// not quorate: once, node 3 took itself for a quorate group of one here (the quorum it
    /// asked for was the healed ring's).
    #[test]
    fn a_node_cut_off_never_sees_itself_quorate_alone() {
        let trace = vec![
            members(&ALL, false),
            members(&[(3, 30)], true),
            Raw::Ring(17, Vec::new()),
            Raw::Quorum {
                quorate: false,
                seq: 17,
            },
            Raw::Ring(21, Vec::new()),
            Raw::Quorum {
                quorate: false,
                seq: 21,
            },
            members(&ALL, true),
            Raw::Ring(25, Vec::new()),
            Raw::Quorum {
                quorate: true,
                seq: 25,
            },
        ];
        // All at once, one at a time, and each notice read before its ring's report.
        let mut early = trace.clone();
        for i in 0..early.len() {
            if matches!(early[i], Raw::Quorum { .. }) {
                early.swap(i - 1, i);
            }
        }
        for batches in [
            vec![trace.clone()],
            trace.iter().map(|r| vec![r.clone()]).collect(),
            vec![early],
        ] {
            let views = summary(&views_of(batches, true));
            assert!(!views.contains(&"view [3] true".to_string()), "{views:?}");
            assert!(views.contains(&"view [3] false".to_string()), "{views:?}");
            assert_eq!(views.last().unwrap(), "view [1, 2, 3] true", "{views:?}");
        }
    }

    /// What CPG delivers after a ring's report waits for the ring's quorum, and comes after
    /// its view.
    #[test]
    fn deliveries_after_a_ring_wait_for_its_view() {
        let msg = Raw::Deliver {
            from: 1,
            payload: b"m".to_vec(),
        };
        let batches = vec![
            vec![members(&ALL, false)],
            vec![
                members(&ALL[1..], true),
                Raw::Ring(5, Vec::new()),
                msg.clone(),
            ],
            vec![Raw::Quorum {
                quorate: true,
                seq: 5,
            }],
        ];
        let events = views_of(batches, true);
        assert_eq!(
            summary(&events),
            ["view [1, 2, 3] true", "view [2, 3] true", "msg 1"]
        );
    }

    /// Quorum notices read after the CPG batch of their rings: each ring's view is
    /// installed once, with that ring's latest quorum; an older ring's notice undoes nothing,
    /// and the deliveries stay in the healed view.
    #[test]
    fn notices_read_after_their_rings_install_each_view_once() {
        let msg = |from| Raw::Deliver {
            from,
            payload: b"hello".to_vec(),
        };
        let batches = vec![
            vec![members(&ALL, false)],
            vec![
                members(&[(3, 30)], true),
                Raw::Ring(17, Vec::new()),
                members(&ALL, true),
                Raw::Ring(25, Vec::new()),
                msg(1),
                msg(2),
                Raw::Quorum {
                    quorate: false,
                    seq: 17,
                },
                Raw::Quorum {
                    quorate: true,
                    seq: 25,
                },
            ],
        ];
        assert_eq!(
            summary(&views_of(batches, true)),
            [
                "view [1, 2, 3] true",
                "view [3] false",
                "view [1, 2, 3] true",
                "msg 1",
                "msg 2"
            ]
        );
    }

    /// Quorum back within a ring: what was delivered while the view was not quorate came
    /// before the change in the agreed order (node 3's own message telling it), so it
    /// belongs to no quorate view and is dropped; a membership change drops it too.
    #[test]
    fn deliveries_without_quorum_do_not_follow_a_flap_or_a_change() {
        let msg = Raw::Deliver {
            from: 1,
            payload: b"hello".to_vec(),
        };
        let q = |quorate, seq| Raw::Quorum { quorate, seq };
        let start = vec![
            vec![members(&ALL, false)],
            vec![Raw::Ring(30, Vec::new()), q(false, 30)],
        ];
        let mut regained = start.clone();
        regained.push(vec![msg.clone(), q(true, 30)]);
        assert_eq!(
            summary(&views_of(regained, false)),
            ["view [1, 2, 3] false", "view [1, 2, 3] true"]
        );
        let mut changed = start;
        changed.push(vec![
            msg,
            members(&ALL[1..], true),
            Raw::Ring(31, Vec::new()),
            q(true, 31),
        ]);
        assert_eq!(
            summary(&views_of(changed, false)),
            ["view [1, 2, 3] false", "view [2, 3] true"]
        );
    }

    /// A node that joined without quorum, which then comes back within the ring it joined in
    /// (CPG never reports that ring): the notice makes the quorate view. Before, it waited
    /// for a ring report that never came (attack finding: ring 0).
    #[test]
    fn quorum_regained_within_the_first_ring_is_installed() {
        let batches = vec![
            vec![members(&ALL, false)],
            vec![Raw::Quorum {
                quorate: true,
                seq: 4,
            }],
        ];
        assert_eq!(
            summary(&views_of(batches, false)),
            ["view [1, 2, 3] false", "view [1, 2, 3] true"]
        );
    }

    /// CPG's PROCDOWN (dm-ulogd died, its node stays) is told apart from a node going down,
    /// and a later ring without that node says it died.
    #[test]
    fn a_process_death_is_told_apart_from_a_node_death() {
        let batches = vec![
            vec![members(&ALL, false)],
            vec![Raw::Members {
                members: ALL[1..].to_vec(),
                ring_change: false,
                process_down: vec![1],
            }],
            vec![
                Raw::Ring(8, vec![2, 3]),
                Raw::Quorum {
                    quorate: true,
                    seq: 8,
                },
            ],
        ];
        let views: Vec<View> = views_of(batches, true)
            .into_iter()
            .filter_map(|e| match e {
                GroupEvent::View(v) => Some(v),
                GroupEvent::Message { .. } => None,
            })
            .collect();
        assert_eq!(views.len(), 3, "{views:?}");
        assert_eq!(
            (views[1].left.clone(), views[1].process_down.clone()),
            (vec![1], vec![1])
        );
        assert_eq!(views[1].ring, None);
        assert_eq!(views[2].members, [2, 3]);
        assert_eq!(
            views[2].ring,
            Some(vec![2, 3]),
            "node 1 is gone from the ring"
        );
        assert_ne!(views[1].id, views[2].id);
    }

    /// An older ring's loss and gain, read late in one batch after a later ring's report,
    /// change nothing: the later ring's view stands.
    #[test]
    fn an_older_rings_flap_read_late_changes_nothing() {
        let q = |quorate, seq| Raw::Quorum { quorate, seq };
        let batches = vec![
            vec![members(&ALL, false)],
            vec![Raw::Ring(30, Vec::new()), q(true, 30)],
            vec![q(false, 20), q(true, 20)],
        ];
        assert_eq!(summary(&views_of(batches, true)), ["view [1, 2, 3] true"]);
    }

    /// A loss of quorum is taken at once, before CPG reports the ring.
    #[test]
    fn a_loss_of_quorum_is_taken_at_once() {
        let batches = vec![
            vec![members(&ALL, false)],
            vec![Raw::Quorum {
                quorate: false,
                seq: 9,
            }],
        ];
        assert_eq!(
            summary(&views_of(batches, true)),
            ["view [1, 2, 3] true", "view [1, 2, 3] false"]
        );
    }
}

/// A member behind [`Views`], read as `CpgGroup::dispatch` reads corosync: a CPG batch,
/// then the quorum notices read with it.
#[cfg(test)]
mod dispatch_tests {
    use super::*;
    use crate::cluster::group::Group;
    use crate::cluster::member::Member;
    use crate::cluster::message::{Message, Standing};
    use crate::cluster::replica::{NodeState, Replica};
    use crate::logs::Extensions;
    use crate::table;

    const ALL: [(NodeId, u32); 3] = [(1, 10), (2, 20), (3, 30)];
    const TABLE: &[u8] = b"64 clustered-core 8";

    /// One node's corosync connection: what it reads goes through [`Views`]; what its member
    /// multicasts is kept for the test to deliver.
    pub(super) struct Corosync {
        pub(super) views: Views,
        pub(super) sent: Vec<Vec<u8>>,
        pub(super) quorate: bool,
    }

    impl Corosync {
        /// What its member multicast since, as CPG delivers it (from this node).
        pub(super) fn take_sent(&mut self) -> Vec<Raw> {
            let from = self.views.me;
            self.sent
                .drain(..)
                .map(|payload| Raw::Deliver { from, payload })
                .collect()
        }
    }

    impl Group for Corosync {
        fn local_node(&self) -> NodeId {
            self.views.me
        }
        fn max_message_size(&self) -> usize {
            1 << 20
        }
        fn join(&mut self) -> Result<(), GroupError> {
            self.views.set_joined(true);
            Ok(())
        }
        fn multicast(&mut self, payload: &[u8]) -> Result<(), GroupError> {
            self.sent.push(payload.to_vec());
            Ok(())
        }
        fn leave(&mut self) -> Result<(), GroupError> {
            Ok(())
        }
        fn next_event(&mut self) -> Option<GroupEvent> {
            self.views.next_event()
        }
    }

    fn node(me: NodeId, quorate: bool) -> (Corosync, Member) {
        let mut g = Corosync {
            views: Views::new(me),
            sent: Vec::new(),
            quorate,
        };
        let spec = table::parse(TABLE).unwrap();
        let mut m = Member::new(me, spec, Extensions::default()).unwrap();
        m.join(&mut g).unwrap();
        (g, m)
    }

    /// One dispatch: the CPG batch, then the quorum notices, fed as `dispatch` feeds them.
    fn dispatch(g: &mut Corosync, m: &mut Member, cpg: Vec<Raw>, quorum: Vec<Raw>) {
        let quorate = g.quorate;
        let raws = cpg.into_iter().chain(quorum).collect();
        g.views.feed(raws, &mut || Ok(quorate)).unwrap();
        g.sent.extend(g.views.take_outbox());
        while let Some(e) = g.views.next_event() {
            m.deliver(g, e);
        }
    }

    fn deliver(from: NodeId, msg: &Message) -> Raw {
        Raw::Deliver {
            from,
            payload: msg.encode(),
        }
    }

    fn valid_hello(view: ViewId) -> Message {
        Message::Hello {
            view,
            standing: Standing::Valid,
            state: NodeState::default(),
            applied: 0,
            table: Replica::new(2, table::parse(TABLE).unwrap(), Extensions::default())
                .unwrap()
                .table(),
            marks: Vec::new(),
            last: true,
        }
    }

    /// The snapshot `from` (valid) sends at `view`'s cut for `to`, as one chunk.
    fn snapshot(from: NodeId, to: NodeId, view: ViewId) -> Message {
        let spec = table::parse(TABLE).unwrap();
        let mut r = Replica::new(from, spec, Extensions::default()).unwrap();
        r.seed(false);
        r.cut(&[1, 2, 3], &[to], &[], &[]);
        let mut bytes = Vec::new();
        r.snapshot(&mut bytes);
        Message::Chunk {
            view,
            index: 0,
            total: 1,
            bytes,
        }
    }

    fn quorum(seq: u64, quorate: bool) -> Raw {
        Raw::Quorum { quorate, seq }
    }

    /// Node 1, started while cut off (ring 17, alone), reads the heal (ring 25) with the
    /// others' Hellos, and only then the quorum notices of both rings. It must install the
    /// healed view once, keep those Hellos for its round, and get the state.
    #[test]
    fn a_cpg_batch_read_before_its_quorum_notices_still_gets_state() {
        let (mut g, mut m) = node(1, false);
        let alone = Raw::Members {
            members: vec![(1, 10)],
            ring_change: false,
            process_down: Vec::new(),
        };
        dispatch(&mut g, &mut m, vec![alone], vec![]);
        assert_eq!(m.view().map(|v| v.quorate), Some(false));
        let healed = view_id(&ALL, true, None);
        let cpg = vec![
            Raw::Ring(17, Vec::new()),
            Raw::Members {
                members: ALL.to_vec(),
                ring_change: true,
                process_down: Vec::new(),
            },
            Raw::Ring(25, Vec::new()),
            deliver(2, &valid_hello(healed)),
            deliver(3, &valid_hello(healed)),
        ];
        dispatch(
            &mut g,
            &mut m,
            cpg,
            vec![quorum(17, false), quorum(25, true)],
        );
        let view = m.view().expect("a view");
        assert!(view.quorate && view.id == healed, "{view:?}");
        // Node 1's own Hello comes back, then node 2's snapshot.
        let mine: Vec<Raw> = g.take_sent();
        let hellos = mine
            .iter()
            .filter(|raw| {
                matches!(raw, Raw::Deliver { payload, .. }
                    if matches!(Message::decode(payload), Ok(Message::Hello { .. })))
            })
            .count();
        let chunk = deliver(2, &snapshot(2, 1, healed));
        dispatch(
            &mut g,
            &mut m,
            mine.into_iter().chain([chunk]).collect(),
            vec![],
        );
        assert_eq!(m.standing(), Standing::Valid, "node 1 never got state");
        assert!(m.serving());
        assert_eq!(hellos, 1, "one round for one view");
    }

    /// Quorum comes back without a ring change: node 1 read it first and told the group;
    /// node 3 reads node 1's word and its Hello for the quorate view before its own notice.
    /// The view comes at node 1's word, the Hello counts in its round, and node 3's notice,
    /// read later, changes nothing.
    #[test]
    fn a_hello_read_with_the_quorum_that_makes_its_view_is_kept() {
        let (mut g, mut m) = node(3, false);
        let ring = vec![
            Raw::Members {
                members: ALL.to_vec(),
                ring_change: true,
                process_down: Vec::new(),
            },
            Raw::Ring(30, Vec::new()),
        ];
        dispatch(&mut g, &mut m, ring, vec![quorum(30, false)]);
        assert_eq!(m.view().map(|v| v.quorate), Some(false));
        let before = view_id(&ALL, false, None);
        let view = flap_id(before, true);
        let told = deliver(
            1,
            &Message::Quorum {
                view: before,
                quorate: true,
                told: false,
            },
        );
        let hello_1 = deliver(1, &valid_hello(view));
        dispatch(&mut g, &mut m, vec![told, hello_1], vec![]);
        assert_eq!(m.view().map(|v| (v.id, v.quorate)), Some((view, true)));
        dispatch(&mut g, &mut m, vec![], vec![quorum(30, true)]);
        assert_eq!(m.view().map(|v| (v.id, v.quorate)), Some((view, true)));
        let mut rest = vec![deliver(2, &valid_hello(view))];
        rest.extend(g.take_sent());
        rest.push(deliver(1, &snapshot(1, 3, view)));
        dispatch(&mut g, &mut m, rest, vec![]);
        assert_eq!(m.standing(), Standing::Valid, "node 1's Hello was dropped");
        assert!(m.serving());
    }

    /// Delivers what every node multicast, in one agreed order, to every node, until
    /// nothing more is sent.
    fn exchange(nodes: &mut [(NodeId, &mut Corosync, &mut Member)]) {
        for _ in 0..100 {
            let mut order = Vec::new();
            for (_, g, _) in nodes.iter_mut() {
                order.extend(g.take_sent());
            }
            if order.is_empty() {
                return;
            }
            for (_, g, m) in nodes.iter_mut() {
                dispatch(g, m, order.clone(), vec![]);
            }
        }
        panic!("the nodes do not settle");
    }

    /// Quorum flaps within the ring (a qdevice vote lost and regained: no ring change). Node
    /// 1 reads both notices in one dispatch, node 3 in two: node 3 goes stale and starts a
    /// round. Before, node 1 took the loss for superseded, ignored node 3's Hello and sent
    /// none: node 3 waited for state forever in a quorate cluster (attack finding). Now a
    /// loss is never superseded, so both go through the same round.
    #[test]
    fn a_quorum_blip_read_in_one_batch_still_goes_through_its_round() {
        const TWO: [(NodeId, u32); 2] = [(1, 10), (3, 30)];
        let (mut g1, mut m1) = node(1, true);
        let (mut g3, mut m3) = node(3, true);
        let first = || Raw::Members {
            members: TWO.to_vec(),
            ring_change: false,
            process_down: Vec::new(),
        };
        dispatch(&mut g1, &mut m1, vec![first()], vec![]);
        dispatch(&mut g3, &mut m3, vec![first()], vec![]);
        exchange(&mut [(1, &mut g1, &mut m1), (3, &mut g3, &mut m3)]);
        assert!(m1.serving() && m3.serving(), "the log is served");
        // The blip: node 3 reads the loss, then the gain; node 1 reads both at once.
        dispatch(&mut g3, &mut m3, vec![], vec![quorum(40, false)]);
        assert!(!m3.serving());
        dispatch(
            &mut g1,
            &mut m1,
            vec![],
            vec![quorum(40, false), quorum(40, true)],
        );
        dispatch(&mut g3, &mut m3, vec![], vec![quorum(40, true)]);
        exchange(&mut [(1, &mut g1, &mut m1), (3, &mut g3, &mut m3)]);
        assert!(
            m1.serving() && m3.serving(),
            "both went through the blip's round"
        );
        exchange(&mut [(1, &mut g1, &mut m1), (3, &mut g3, &mut m3)]);
        assert!(
            m3.serving(),
            "node 3 is in a quorate view ({:?}) with node 1 serving, yet it never gets \
             state back: its round waits for a Hello node 1 never sends, and its kernel's \
             request is held for good",
            m3.view().map(|v| (v.id, v.quorate))
        );
    }

    /// Batch nemesis finding: a quorum flap within a ring repeated view ids. A view's id
    /// without a ring report hashed its members and quorum alone, so the view quorum came
    /// back to had the id of the view before the loss, and a Hello of the earlier round,
    /// kept while the view was not quorate, counted in the later one. Node 1 serves; node 2
    /// joins (view h); node 1 reads the flap's loss before both Hellos for h, then the
    /// Hellos with the gain: its round of the second h cut at once on them, took its own
    /// earlier Hello (valid) for the sender's, and node 1, stale since the loss, waited for
    /// a snapshot from itself. Now the regained view's id chains from h and the flap.
    #[test]
    fn a_hello_of_the_round_before_a_quorum_flap_does_not_count_after_it() {
        let members = |m: &[(NodeId, u32)]| Raw::Members {
            members: m.to_vec(),
            ring_change: false,
            process_down: Vec::new(),
        };
        let (mut g1, mut m1) = node(1, true);
        dispatch(&mut g1, &mut m1, vec![members(&ALL[..1])], vec![]);
        exchange(&mut [(1, &mut g1, &mut m1)]);
        assert!(m1.serving());
        let (mut g2, mut m2) = node(2, true);
        dispatch(&mut g1, &mut m1, vec![members(&ALL[..2])], vec![]);
        dispatch(&mut g2, &mut m2, vec![members(&ALL[..2])], vec![]);
        let hellos: Vec<Raw> = [g1.take_sent(), g2.take_sent()].concat();
        dispatch(&mut g1, &mut m1, vec![], vec![quorum(1, false)]);
        dispatch(&mut g1, &mut m1, hellos.clone(), vec![quorum(1, true)]);
        dispatch(
            &mut g2,
            &mut m2,
            hellos,
            vec![quorum(1, false), quorum(1, true)],
        );
        exchange(&mut [(1, &mut g1, &mut m1), (2, &mut g2, &mut m2)]);
        assert!(
            m1.serving() && m2.serving(),
            "after the flap: node 1 {:?}, node 2 {:?}",
            m1.round(),
            m2.round()
        );
    }

    /// Batch nemesis finding: quorum was not in the group's agreed order, so a member could
    /// read the Hello another member sent for the view after a flap while it was still in
    /// the quorate view before it (its notices come after the CPG batch that holds the
    /// Hello): the Hello belonged to no round there, and the round of the view after the
    /// flap waited for it for good. Node 3 reads the loss and the gain; node 1 reads what
    /// node 3 sent in the batch before its own notices. Now node 3 sends word of the flap
    /// first, and node 1 takes the flap there, as node 3 does.
    #[test]
    fn a_hello_read_before_this_nodes_flap_still_counts_after_it() {
        const TWO: [(NodeId, u32); 2] = [(1, 10), (3, 30)];
        let (mut g1, mut m1) = node(1, true);
        let (mut g3, mut m3) = node(3, true);
        let first = || Raw::Members {
            members: TWO.to_vec(),
            ring_change: false,
            process_down: Vec::new(),
        };
        dispatch(&mut g1, &mut m1, vec![first()], vec![]);
        dispatch(&mut g3, &mut m3, vec![first()], vec![]);
        exchange(&mut [(1, &mut g1, &mut m1), (3, &mut g3, &mut m3)]);
        assert!(m1.serving() && m3.serving(), "the log is served");
        let flap = || vec![quorum(40, false), quorum(40, true)];
        dispatch(&mut g3, &mut m3, vec![], flap());
        let hello_3: Vec<Raw> = g3.take_sent();
        dispatch(&mut g1, &mut m1, hello_3.clone(), flap());
        dispatch(&mut g3, &mut m3, hello_3, vec![]);
        exchange(&mut [(1, &mut g1, &mut m1), (3, &mut g3, &mut m3)]);
        assert!(
            m1.serving() && m3.serving(),
            "after the flap: node 1 {:?}, node 3 {:?}",
            m1.round(),
            m3.round()
        );
    }

    /// A node joins within the ring while the others are between a flap's loss and its gain:
    /// it asks for quorum (back already) and cannot know the loss the others agreed on. Its
    /// first view must have the others' id, and it takes their word of the gain, so all
    /// three meet in one round (the batch nemesis found the joiner in a round of its own).
    #[test]
    fn a_node_joining_within_a_flap_takes_the_others_word_for_it() {
        const TWO: [(NodeId, u32); 2] = [(1, 10), (2, 20)];
        let (mut g1, mut m1) = node(1, true);
        let (mut g2, mut m2) = node(2, true);
        let members = |m: &[(NodeId, u32)]| Raw::Members {
            members: m.to_vec(),
            ring_change: false,
            process_down: Vec::new(),
        };
        dispatch(&mut g1, &mut m1, vec![members(&TWO)], vec![]);
        dispatch(&mut g2, &mut m2, vec![members(&TWO)], vec![]);
        exchange(&mut [(1, &mut g1, &mut m1), (2, &mut g2, &mut m2)]);
        assert!(m1.serving() && m2.serving(), "the log is served");
        dispatch(&mut g1, &mut m1, vec![], vec![quorum(40, false)]);
        dispatch(&mut g2, &mut m2, vec![], vec![quorum(40, false)]);
        exchange(&mut [(1, &mut g1, &mut m1), (2, &mut g2, &mut m2)]);
        assert!(!m1.serving() && !m2.serving());
        let (mut g3, mut m3) = node(3, true);
        for (g, m) in [(&mut g1, &mut m1), (&mut g2, &mut m2), (&mut g3, &mut m3)] {
            dispatch(g, m, vec![members(&ALL)], vec![]);
        }
        let ids = [&m1, &m2, &m3].map(|m| m.view().map(|v| v.id));
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        dispatch(&mut g1, &mut m1, vec![], vec![quorum(40, true)]);
        dispatch(&mut g2, &mut m2, vec![], vec![quorum(40, true)]);
        exchange(&mut [
            (1, &mut g1, &mut m1),
            (2, &mut g2, &mut m2),
            (3, &mut g3, &mut m3),
        ]);
        assert!(
            m1.serving() && m2.serving() && m3.serving(),
            "after the join within the flap: {:?} {:?} {:?}",
            m1.round(),
            m2.round(),
            m3.round()
        );
    }

    /// Attack finding: a PROCDOWN consumed by a quorum loss read before its ring's report. Node 3's
    /// view is {1, 2, 3}, quorate, in ring 10. A ring change comes in which node 2's dm-ulogd
    /// is reported PROCDOWN (node 2 stays in the ring) while other nodes go down, and the
    /// quorum service's loss notice for the new ring 11 is read before CPG's report of the
    /// ring (notices are on their own connection: before or after). The loss is installed at
    /// once as a view of the old members, which takes the pending PROCDOWN with it although
    /// nobody left in that view; the ring's view then has node 2 in `left` without
    /// `process_down`: every member took a process death for a node death and dropped node
    /// 2's marks while its kernel went on writing. Now a quorum change within the view
    /// leaves a pending change's PROCDOWNs and ring to that change's view.
    #[test]
    fn a_loss_read_before_its_ring_keeps_the_process_death() {
        const ALL3: [(NodeId, u32); 3] = [(1, 10), (2, 20), (3, 30)];
        let events = super::tests::views_of(
            vec![
                vec![
                    Raw::Members {
                        members: ALL3.to_vec(),
                        ring_change: false,
                        process_down: Vec::new(),
                    },
                    Raw::Ring(10, vec![1, 2, 3, 4, 5]),
                    Raw::Quorum {
                        quorate: true,
                        seq: 10,
                    },
                ],
                vec![
                    Raw::Members {
                        members: vec![(1, 10), (3, 30)],
                        ring_change: true,
                        process_down: vec![2],
                    },
                    Raw::Quorum {
                        quorate: false,
                        seq: 11,
                    },
                ],
                vec![Raw::Ring(11, vec![1, 2, 3])],
            ],
            true,
        );
        let left_2: Vec<&View> = events
            .iter()
            .filter_map(|e| match e {
                GroupEvent::View(v) if v.left.contains(&2) => Some(v),
                _ => None,
            })
            .collect();
        assert!(!left_2.is_empty(), "{:?}", super::tests::summary(&events));
        for v in left_2 {
            assert_eq!(
                v.process_down,
                [2],
                "node 2 (PROCDOWN, its node in ring 11) left as a dead node: the quorum \
                 loss installed before the ring's report swallowed its PROCDOWN ({:?})",
                super::tests::summary(&events)
            );
        }
    }
}

/// Attack 29: quorum notices are read at different points of the CPG order by different
/// nodes, and the replicas of the stale members differ when nobody is valid.
#[cfg(test)]
mod attack29_tests {
    use super::dispatch_tests::Corosync;
    use super::*;
    use crate::cluster::member::{Action, Member};
    use crate::logs::Extensions;
    use crate::table;
    use dm_ulog_uapi::payload::{RegionSync, ResyncWork};
    use dm_ulog_uapi::RequestType;

    const ALL: [(NodeId, u32); 3] = [(1, 10), (2, 20), (3, 30)];
    const TABLE: &[u8] = b"64 clustered-core 8";

    fn node_with(me: NodeId, quorate: bool, t: &[u8]) -> (Corosync, Member) {
        let mut g = Corosync {
            views: Views::new(me),
            sent: Vec::new(),
            quorate,
        };
        let spec = table::parse(t).unwrap();
        let mut m = Member::new(me, spec, Extensions::default()).unwrap();
        m.join(&mut g).unwrap();
        (g, m)
    }

    fn node(me: NodeId, quorate: bool) -> (Corosync, Member) {
        node_with(me, quorate, TABLE)
    }

    /// One dispatch: the CPG batch, then the quorum notices; returns the member's actions.
    fn dispatch_acts(
        g: &mut Corosync,
        m: &mut Member,
        cpg: Vec<Raw>,
        quorum: Vec<Raw>,
    ) -> Vec<Action> {
        let quorate = g.quorate;
        let raws = cpg.into_iter().chain(quorum).collect();
        g.views.feed(raws, &mut || Ok(quorate)).unwrap();
        g.sent.extend(g.views.take_outbox());
        let mut out = Vec::new();
        while let Some(e) = g.views.next_event() {
            out.extend(m.deliver(g, e));
        }
        out
    }

    fn dispatch(g: &mut Corosync, m: &mut Member, cpg: Vec<Raw>, quorum: Vec<Raw>) {
        dispatch_acts(g, m, cpg, quorum);
    }

    fn quorum(seq: u64, quorate: bool) -> Raw {
        Raw::Quorum { quorate, seq }
    }

    /// Delivers what every node multicast, in one agreed order, to every node, until
    /// nothing more is sent; the actions go to `acts[i]` for the i-th node.
    fn run(nodes: &mut [(NodeId, &mut Corosync, &mut Member)], acts: &mut [Vec<Action>]) {
        for _ in 0..100 {
            let mut order = Vec::new();
            for (_, g, _) in nodes.iter_mut() {
                order.extend(g.take_sent());
            }
            if order.is_empty() {
                return;
            }
            for (i, (_, g, m)) in nodes.iter_mut().enumerate() {
                acts[i].extend(dispatch_acts(g, m, order.clone(), vec![]));
            }
        }
        panic!("the nodes do not settle");
    }

    /// A quorum blip within the ring (a qdevice vote lost and regained). Node 2's kernel is
    /// granted region 0 (it applied the grant, then read the loss); node 1 read the loss
    /// notice before the grant's delivery (notices come on their own connection), so its
    /// replica never applied it. At the regain nobody is valid. Found by an attack: node 1,
    /// the lowest stale member, seeded the log again from its replica, which had no claim;
    /// node 3 was then granted region 0 while node 2's kernel copied it, region 0 went in
    /// sync, and node 1 wrote it during node 2's copy. Now the stale member whose replica
    /// applied most (node 2, its Hello says) seeds, with the claim.
    #[test]
    fn a_loss_read_before_a_grant_by_the_seeder_keeps_the_claim() {
        let (mut g1, mut m1) = node(1, true);
        let (mut g2, mut m2) = node(2, true);
        let (mut g3, mut m3) = node(3, true);
        let mut a = [Vec::new(), Vec::new(), Vec::new()];
        let first = || Raw::Members {
            members: ALL.to_vec(),
            ring_change: false,
            process_down: Vec::new(),
        };
        for (g, m) in [(&mut g1, &mut m1), (&mut g2, &mut m2), (&mut g3, &mut m3)] {
            dispatch(g, m, vec![first()], vec![]);
        }
        run(
            &mut [
                (1, &mut g1, &mut m1),
                (2, &mut g2, &mut m2),
                (3, &mut g3, &mut m3),
            ],
            &mut a,
        );
        assert!(m1.serving() && m2.serving() && m3.serving());
        // Node 2's kernel asks for resync work.
        let now = m2.request(&mut g2, 1, RequestType::GetResyncWork, b"");
        assert!(now.is_empty());
        let grant: Vec<Raw> = g2.take_sent();
        // Node 1 reads the loss first; nodes 2 and 3 read the grant, then the loss.
        a[0].extend(dispatch_acts(
            &mut g1,
            &mut m1,
            vec![],
            vec![quorum(40, false)],
        ));
        a[0].extend(dispatch_acts(&mut g1, &mut m1, grant.clone(), vec![]));
        a[1].extend(dispatch_acts(
            &mut g2,
            &mut m2,
            grant.clone(),
            vec![quorum(40, false)],
        ));
        a[2].extend(dispatch_acts(
            &mut g3,
            &mut m3,
            grant,
            vec![quorum(40, false)],
        ));
        let granted = Action::Reply {
            tag: 1,
            result: Ok(ResyncWork::from(Some(0)).encode().to_vec()),
        };
        assert!(
            a[1].contains(&granted),
            "node 2 granted region 0: {:?}",
            a[1]
        );
        // Node 2's kernel copies region 0 (kcopyd) and reports only when done.
        for (i, (g, m)) in [(&mut g1, &mut m1), (&mut g2, &mut m2), (&mut g3, &mut m3)]
            .into_iter()
            .enumerate()
        {
            a[i].extend(dispatch_acts(g, m, vec![], vec![quorum(40, true)]));
        }
        run(
            &mut [
                (1, &mut g1, &mut m1),
                (2, &mut g2, &mut m2),
                (3, &mut g3, &mut m3),
            ],
            &mut a,
        );
        assert!(m1.serving() && m2.serving() && m3.serving(), "quorum back");
        // Node 3's kernel asks for work.
        let now = m3.request(&mut g3, 1, RequestType::GetResyncWork, b"");
        a[2].extend(now);
        run(
            &mut [
                (1, &mut g1, &mut m1),
                (2, &mut g2, &mut m2),
                (3, &mut g3, &mut m3),
            ],
            &mut a,
        );
        let given = a[2]
            .iter()
            .find_map(|x| match x {
                Action::Reply { tag: 1, result } => Some(result.clone()),
                _ => None,
            })
            .expect("node 3 answered");
        let work = ResyncWork::decode(&given.unwrap()).unwrap();
        if work.available && work.region == 0 {
            // Node 3 copies region 0 and reports it; node 1 marks it and writes, during
            // node 2's copy; node 2 reports its copy.
            let done = RegionSync {
                region: 0,
                in_sync: true,
            }
            .encode();
            m3.request(&mut g3, 2, RequestType::SetRegionSync, &done);
            run(
                &mut [
                    (1, &mut g1, &mut m1),
                    (2, &mut g2, &mut m2),
                    (3, &mut g3, &mut m3),
                ],
                &mut a,
            );
            m1.request(&mut g1, 1, RequestType::MarkRegion, &0u64.to_ne_bytes());
            run(
                &mut [
                    (1, &mut g1, &mut m1),
                    (2, &mut g2, &mut m2),
                    (3, &mut g3, &mut m3),
                ],
                &mut a,
            );
            assert!(
                a[0].contains(&Action::Reply {
                    tag: 1,
                    result: Ok(Vec::new())
                }),
                "node 1's mark answered"
            );
            m2.request(&mut g2, 2, RequestType::SetRegionSync, &done);
            run(
                &mut [
                    (1, &mut g1, &mut m1),
                    (2, &mut g2, &mut m2),
                    (3, &mut g3, &mut m3),
                ],
                &mut a,
            );
            m1.request(&mut g1, 2, RequestType::ClearRegion, &0u64.to_ne_bytes());
            run(
                &mut [
                    (1, &mut g1, &mut m1),
                    (2, &mut g2, &mut m2),
                    (3, &mut g3, &mut m3),
                ],
                &mut a,
            );
        }
        for m in [&m1, &m2, &m3] {
            let rep = m.replica();
            assert!(
                !rep.is_clean(0).unwrap(),
                "node {}: region 0 clean (claim {:?}); node 3 was granted it while node 2's \
                 kernel copied it (granted before the quorum blip; node 1, the seeder, read \
                 the loss before that grant), and node 1 wrote it during node 2's copy",
                rep.me(),
                rep.claim()
            );
        }
    }

    /// A quorum blip within the ring while the log's first round runs. The first view V
    /// (every node joined, no ring report) has the id of its members and quorum; the view
    /// that the regained quorum installed had the same members and quorum, so the same id.
    /// Node 1 reads the loss notice right after V, before the Hellos of V's round are
    /// delivered: they were kept, and replayed after the regained view, where their view id
    /// matched the new round's. Node 1 counted the old Hellos, cut at once, seeded the log
    /// and sent its snapshot before the others had their new round's cut: they ignored it,
    /// and at their cut waited for node 1's snapshot, which never came again (attack
    /// finding). Now the regained view has an id of its own, which every node takes at the
    /// same point of the order.
    #[test]
    fn hellos_of_the_view_before_a_blip_do_not_count_after_it() {
        let (mut g1, mut m1) = node(1, true);
        let (mut g2, mut m2) = node(2, true);
        let (mut g3, mut m3) = node(3, true);
        let mut a = [Vec::new(), Vec::new(), Vec::new()];
        let first = || Raw::Members {
            members: ALL.to_vec(),
            ring_change: false,
            process_down: Vec::new(),
        };
        for (g, m) in [(&mut g1, &mut m1), (&mut g2, &mut m2), (&mut g3, &mut m3)] {
            dispatch(g, m, vec![first()], vec![]);
        }
        let v = m1.view().unwrap().id;
        // The Hellos of V's round, in CPG's order.
        let hellos = [g1.take_sent(), g2.take_sent(), g3.take_sent()].concat();
        // Node 1 reads the loss before them; nodes 2 and 3 after them.
        dispatch(&mut g1, &mut m1, vec![], vec![quorum(40, false)]);
        dispatch(&mut g1, &mut m1, hellos.clone(), vec![]);
        dispatch(&mut g2, &mut m2, hellos.clone(), vec![quorum(40, false)]);
        dispatch(&mut g3, &mut m3, hellos, vec![quorum(40, false)]);
        // Quorum back: every node reads the notice.
        for (g, m) in [(&mut g1, &mut m1), (&mut g2, &mut m2), (&mut g3, &mut m3)] {
            dispatch(g, m, vec![], vec![quorum(40, true)]);
        }
        let regained = m1.view().unwrap().id;
        run(
            &mut [
                (1, &mut g1, &mut m1),
                (2, &mut g2, &mut m2),
                (3, &mut g3, &mut m3),
            ],
            &mut a,
        );
        assert!(
            m1.serving() && m2.serving() && m3.serving(),
            "quorate and stable, yet not every member has state: {:?} {:?} {:?} (rounds \
             waiting: {:?} {:?}; view before the blip {v}, after it {regained})",
            m1.standing(),
            m2.standing(),
            m3.standing(),
            m2.round(),
            m3.round()
        );
    }
}
