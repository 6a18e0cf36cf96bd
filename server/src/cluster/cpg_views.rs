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
//! - **Quorum** comes with the rings: see [`Views::install`].

use std::collections::{BTreeMap, VecDeque};

use tracing::warn;

use super::group::{GroupError, GroupEvent, NodeId, View, ViewId};

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
    },
    /// A totem ring was installed: CPG sends it after the group changes that the ring
    /// brought, so the group's members are final for that ring.
    Ring(u64),
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
    current: Option<(Vec<(NodeId, u32)>, bool)>,
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
    /// Quorum of the latest rings, as the quorum service reported it.
    quorum_of_ring: BTreeMap<u64, bool>,
    events: VecDeque<GroupEvent>,
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

    /// Takes what the callbacks said since the last call, in order; `ask` asks the quorum
    /// service for quorum now (only for the view that joining brings).
    pub fn feed(
        &mut self,
        raws: Vec<Raw>,
        ask: &mut dyn FnMut() -> Result<bool, GroupError>,
    ) -> Result<(), GroupError> {
        // Quorum notices are on their own connection: those read now may be for rings that
        // CPG reported earlier in this batch.
        for raw in &raws {
            if let Raw::Quorum { quorate, seq } = *raw {
                self.quorum_of_ring.insert(seq, quorate);
            }
        }
        while self.quorum_of_ring.len() > 16 {
            self.quorum_of_ring.pop_first();
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
        match raw {
            Raw::Deliver { from, payload } => {
                if self.current.is_some() {
                    self.events.push_back(GroupEvent::Message { from, payload });
                }
            }
            // Nodes came or went: CPG's report of the ring ends the ring's group changes.
            Raw::Members {
                members,
                ring_change: true,
            } => self.pending = Some(members),
            Raw::Members { members, .. } if self.pending.is_some() => {
                self.pending = Some(members);
            }
            // Processes joined or left: the same ring, quorum as it was (asked for the first
            // view, joining).
            Raw::Members { members, .. } => {
                let quorate = match &self.current {
                    Some((_, quorate)) => *quorate,
                    None => ask()?,
                };
                self.install(members, quorate);
            }
            Raw::Ring(seq) => {
                self.ring = self.ring.max(seq);
                let members = self
                    .pending
                    .take()
                    .or_else(|| self.current.as_ref().map(|(m, _)| m.clone()));
                if let Some(members) = members {
                    match self.quorum_of_ring.get(&seq) {
                        Some(&quorate) => self.install(members, quorate),
                        None => self.awaiting = Some((seq, members)),
                    }
                }
            }
            Raw::Quorum { quorate, seq } => {
                self.quorum_of_ring.insert(seq, quorate);
                if let Some((ring, members)) = self.awaiting.take() {
                    if seq < ring {
                        // An older ring's notice, read late.
                        self.awaiting = Some((ring, members));
                        return Ok(false);
                    }
                    // A notice for a later ring: the awaited one's was skipped; not quorate
                    // then (the later ring's report follows).
                    self.install(members, quorate && seq == ring);
                    return Ok(true);
                }
                match self.current.clone() {
                    // A change within the ring CPG reported last (expected votes changed).
                    Some((members, _)) if seq == self.ring && self.pending.is_none() => {
                        self.install(members, quorate);
                    }
                    // A loss is taken at once, whatever its ring; a gain for a ring CPG has
                    // not reported yet waits for that report.
                    Some((members, true)) if !quorate => self.install(members, false),
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
    /// once.
    fn install(&mut self, mut members: Vec<(NodeId, u32)>, quorate: bool) {
        members.sort_unstable();
        if !self.joined || !members.iter().any(|&(n, _)| n == self.me) {
            return;
        }
        let previous = self.current.replace((members.clone(), quorate));
        if previous.as_ref() == Some(&(members.clone(), quorate)) {
            return;
        }
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
        let id = view_id(&members, quorate);
        self.events
            .push_back(GroupEvent::View(View::after(id, &before, nodes, quorate)));
    }
}

/// The id of the view of `members` (sorted) and `quorate`: FNV-1a over their bytes.
fn view_id(members: &[(NodeId, u32)], quorate: bool) -> ViewId {
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
    ViewId(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_ids_follow_members_processes_and_quorum() {
        let a = [(1, 100), (2, 200)];
        assert_eq!(view_id(&a, true), view_id(&a.clone(), true));
        assert_ne!(view_id(&a, true), view_id(&a, false));
        assert_ne!(view_id(&a, true), view_id(&[(1, 100), (2, 201)], true));
        assert_ne!(view_id(&a, true), view_id(&[(1, 100)], true));
    }

    const ALL: [(NodeId, u32); 3] = [(1, 10), (2, 20), (3, 30)];

    fn members(m: &[(NodeId, u32)], ring_change: bool) -> Raw {
        Raw::Members {
            members: m.to_vec(),
            ring_change,
        }
    }

    /// Node 3's views for `batches` of what corosync said, the quorum service answering
    /// `asked` when asked.
    fn views_of(batches: Vec<Vec<Raw>>, asked: bool) -> Vec<GroupEvent> {
        let mut v = Views::new(3);
        v.set_joined(true);
        let mut out = Vec::new();
        for batch in batches {
            v.feed(batch, &mut || Ok(asked)).unwrap();
            while let Some(e) = v.next_event() {
                out.push(e);
            }
        }
        out
    }

    fn summary(events: &[GroupEvent]) -> Vec<String> {
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
            Raw::Ring(17),
            Raw::Quorum {
                quorate: false,
                seq: 17,
            },
            Raw::Ring(21),
            Raw::Quorum {
                quorate: false,
                seq: 21,
            },
            members(&ALL, true),
            Raw::Ring(25),
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
            vec![members(&ALL[1..], true), Raw::Ring(5), msg.clone()],
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
