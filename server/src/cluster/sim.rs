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

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
        let slots = (1..=nodes)
            .map(|n| {
                let slot = Slot {
                    up: true,
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
            })),
        }
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

    /// Whether `node` has events to take.
    pub fn has_events(&self, node: NodeId) -> bool {
        self.net
            .borrow()
            .slots
            .get(&node)
            .is_some_and(|s| !s.inbox.is_empty())
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
            let event = GroupEvent::Message {
                from,
                payload: payload.to_vec(),
            };
            self.slots
                .get_mut(m)
                .expect("a member")
                .inbox
                .push_back(event);
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
            let s = net.slots.get_mut(&node).expect("a node");
            s.joined = true;
            s.killed = false;
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
        let slot = net.slots.get_mut(&self.node)?;
        if !slot.up {
            return None;
        }
        slot.inbox.pop_front()
    }
}
