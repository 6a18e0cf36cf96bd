// SPDX-License-Identifier: GPL-2.0
//! A process group with totally ordered multicast and virtual synchrony: what corosync's
//! CPG offers, and what the in-process simulator ([`super::sim`]) imitates for tests.
//!
//! The contract the members of a log rely on ([`super::member`]):
//!
//! - **Agreed order.** Every member of a view delivers the messages of that view, its own
//!   included, in one order; a sender's messages stay in the order it sent them.
//! - **Virtual synchrony.** Members that go from one view to the next together delivered the
//!   same messages in between. A view change is delivered at the same point of the order to
//!   all of them.
//! - **Views.** A view names its members, who joined and who left since the receiver's last
//!   view (a healed partition shows the other side as joined), and whether the receiver's
//!   component holds a quorum of the configured nodes. View ids grow and are never reused
//!   (corosync's ring id). A view also says which departed members only lost their process
//!   (the node is still in the ring) and which nodes the ring has, so that a member whose
//!   daemon died is told apart from a node that died.

use std::fmt;
use std::os::fd::BorrowedFd;

/// A cluster node (corosync's `nodeid`).
pub type NodeId = u32;

/// A view's id: every installed view has a new one, across all components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewId(pub u64);

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "view {}", self.0)
    }
}

/// A membership change as one member sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The view's id.
    pub id: ViewId,
    /// The members, in ascending order.
    pub members: Vec<NodeId>,
    /// Members that were not in the receiver's previous view.
    pub joined: Vec<NodeId>,
    /// Members of the receiver's previous view that are gone.
    pub left: Vec<NodeId>,
    /// Whether the receiver's component holds a majority of the configured nodes.
    pub quorate: bool,
    /// Members of `left` whose process stopped without leaving (CPG's `PROCDOWN`: dm-ulogd
    /// died or was killed) while their node stays in the receiver's component: their kernel
    /// keeps the log, and may go on writing.
    pub process_down: Vec<NodeId>,
    /// The nodes of the receiver's component (the totem ring), members or not, ascending,
    /// when the view comes with the ring's report (`None`: processes joined or left, and the
    /// view says nothing of the nodes). A node whose process stopped is alive while it is
    /// here; a ring without it means it died.
    pub ring: Option<Vec<NodeId>>,
}

impl View {
    /// View `id` of `members` (ascending), as a node whose previous view had the members
    /// `before` sees it; no process stopped alone, and no ring reported (set
    /// [`View::process_down`] and [`View::ring`] where the group knows better).
    pub fn after(id: ViewId, before: &[NodeId], members: Vec<NodeId>, quorate: bool) -> Self {
        Self {
            process_down: Vec::new(),
            ring: None,
            id,
            joined: members
                .iter()
                .filter(|n| !before.contains(n))
                .copied()
                .collect(),
            left: before
                .iter()
                .filter(|n| !members.contains(n))
                .copied()
                .collect(),
            members,
            quorate,
        }
    }
}

/// What a member receives, in agreed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// A new view.
    View(View),
    /// A message multicast by `from`.
    Message {
        /// The sender.
        from: NodeId,
        /// What it sent.
        payload: Vec<u8>,
    },
}

/// Why the group refused a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// Flow control (`CS_ERR_TRY_AGAIN`): the caller keeps the message and sends it again
    /// later. Never an error for the kernel.
    #[error("the group is busy (flow control): try again")]
    TryAgain,
    /// A message larger than the group carries.
    #[error("a message of {len} bytes exceeds the group's largest of {max} bytes")]
    TooLarge {
        /// Bytes of the message.
        len: usize,
        /// The largest message.
        max: usize,
    },
    /// Not a member (not joined yet, or left).
    #[error("not a member of the group")]
    NotJoined,
    /// Joined already.
    #[error("already a member of the group")]
    AlreadyJoined,
    /// The connection to the group daemon is gone (it, or this node, stopped).
    #[error("the connection to the group is gone: is corosync running on this node?")]
    Closed,
}

/// One node's handle on one process group (one log).
pub trait Group {
    /// This node.
    fn local_node(&self) -> NodeId;
    /// The largest message [`Group::multicast`] takes.
    fn max_message_size(&self) -> usize;
    /// Joins the group: a view with this node in it follows.
    fn join(&mut self) -> Result<(), GroupError>;
    /// Multicasts `payload` in agreed order to the members, this node included.
    fn multicast(&mut self, payload: &[u8]) -> Result<(), GroupError>;
    /// Leaves the group; nothing is delivered afterwards.
    fn leave(&mut self) -> Result<(), GroupError>;
    /// The next delivery or view change, if one is there.
    fn next_event(&mut self) -> Option<GroupEvent>;
    /// Descriptors that become readable when [`Group::next_event`] has something (none for
    /// an in-process group, which is asked whenever the caller likes).
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }
    /// Whether the connection to the group is gone for good (its daemon stopped): nothing
    /// more is delivered, and the node has to connect and join again.
    fn is_closed(&self) -> bool {
        false
    }
}

impl<G: Group + ?Sized> Group for Box<G> {
    fn local_node(&self) -> NodeId {
        (**self).local_node()
    }
    fn max_message_size(&self) -> usize {
        (**self).max_message_size()
    }
    fn join(&mut self) -> Result<(), GroupError> {
        (**self).join()
    }
    fn multicast(&mut self, payload: &[u8]) -> Result<(), GroupError> {
        (**self).multicast(payload)
    }
    fn leave(&mut self) -> Result<(), GroupError> {
        (**self).leave()
    }
    fn next_event(&mut self) -> Option<GroupEvent> {
        (**self).next_event()
    }
    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        (**self).poll_fds()
    }
    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }
}
