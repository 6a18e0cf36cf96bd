// SPDX-License-Identifier: GPL-2.0
//! [`Group`] over corosync's CPG (closed process groups), through the `rust-corosync` crate:
//! one CPG connection per log, its group named after the log's UUID, and quorum from
//! corosync's quorum service (votequorum).
//!
//! The crate calls back with plain function pointers while it holds a global lock, so the
//! callbacks only queue what they were given ([`Raw`]) in this module's inboxes, found by the
//! connection's context. [`CpgGroup::next_event`] dispatches, and [`Views`] turns the queue
//! into [`GroupEvent`]s (view ids, quorum: `cpg_views.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rust_corosync::{cpg, quorum, CsError, DispatchFlags};
use tracing::{error, warn};

use super::cpg_views::{Raw, Views};
use super::group::{Group, GroupError, GroupEvent, NodeId};

/// Prefix of every log's group name: another program's groups (cmirrord's are bare UUIDs)
/// never meet ours.
const GROUP_PREFIX: &str = "dm-ulogd:";

/// The callbacks' queues, one per connection, by the key set as the connection's context.
static INBOXES: Mutex<BTreeMap<u64, Vec<Raw>>> = Mutex::new(BTreeMap::new());
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn push(key: Result<u64, CsError>, raw: Raw) {
    let Ok(key) = key else {
        error!("a corosync callback without its context: event dropped");
        return;
    };
    let mut inboxes = INBOXES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(queue) = inboxes.get_mut(&key) {
        queue.push(raw);
    }
}

fn on_deliver(
    h: &cpg::Handle,
    _: String,
    node: rust_corosync::NodeId,
    _: u32,
    msg: &[u8],
    _: usize,
) {
    let payload = msg.to_vec();
    push(
        cpg::context_get(h),
        Raw::Deliver {
            from: node.into(),
            payload,
        },
    );
}

fn on_confchg(
    h: &cpg::Handle,
    _: &str,
    members: Vec<cpg::Address>,
    left: Vec<cpg::Address>,
    joined: Vec<cpg::Address>,
) {
    let ring_change = left
        .iter()
        .chain(&joined)
        .any(|a| matches!(a.reason, cpg::Reason::NodeDown | cpg::Reason::NodeUp));
    let members = members.iter().map(|a| (a.nodeid.into(), a.pid)).collect();
    let process_down = left
        .iter()
        .filter(|a| matches!(a.reason, cpg::Reason::ProcDown))
        .map(|a| a.nodeid.into())
        .collect();
    push(
        cpg::context_get(h),
        Raw::Members {
            members,
            ring_change,
            process_down,
        },
    );
}

fn on_ring(h: &cpg::Handle, ring: cpg::RingId, nodes: Vec<rust_corosync::NodeId>) {
    let mut nodes: Vec<NodeId> = nodes.into_iter().map(Into::into).collect();
    nodes.sort_unstable();
    push(cpg::context_get(h), Raw::Ring(ring.seq, nodes));
}

fn on_quorum(
    h: &quorum::Handle,
    quorate: bool,
    ring: quorum::RingId,
    _: Vec<rust_corosync::NodeId>,
) {
    push(
        quorum::context_get(h),
        Raw::Quorum {
            quorate,
            seq: ring.seq,
        },
    );
}

/// What a corosync call's error means to a member.
fn group_error(e: CsError) -> GroupError {
    match e {
        CsError::CsErrTryAgain => GroupError::TryAgain,
        CsError::CsErrExist => GroupError::AlreadyJoined,
        CsError::CsErrNotExist | CsError::CsErrBadHandle => GroupError::NotJoined,
        _ => GroupError::Closed,
    }
}

/// Why [`CpgGroup::connect`] failed, with what the admin can do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No corosync to talk to.
    #[error(
        "cannot connect to corosync's {service} service ({error}): is corosync running on this \
         node (systemctl start corosync), and is dm-ulogd allowed to use it (run it as root)?"
    )]
    NoCorosync {
        /// cpg or quorum.
        service: &'static str,
        /// The library's error.
        error: String,
    },
    /// Corosync runs without a quorum provider: every partition would think itself quorate.
    #[error(
        "corosync has no quorum provider: add `quorum {{ provider: corosync_votequorum }}` to \
         corosync.conf; without it, both halves of a split cluster would serve the log"
    )]
    NoQuorumProvider,
    /// A UUID too long for a CPG group name.
    #[error("the log UUID {0:?} is too long for a corosync group name (at most 118 bytes)")]
    NameTooLong(String),
}

/// This node's connection to one log's CPG group.
pub struct CpgGroup {
    cpg: cpg::Handle,
    quorum: quorum::Handle,
    key: u64,
    name: String,
    me: NodeId,
    max_message: usize,
    joined: bool,
    /// Corosync closed the connection (it stopped): nothing more comes.
    closed: bool,
    /// Corosync's reports turned into views and deliveries.
    views: Views,
    /// What `views` asked to multicast that flow control held back.
    unsent: VecDeque<Vec<u8>>,
}

impl std::fmt::Debug for CpgGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpgGroup")
            .field("name", &self.name)
            .field("me", &self.me)
            .field("joined", &self.joined)
            .finish_non_exhaustive()
    }
}

impl CpgGroup {
    /// Connects to corosync for the log `uuid` (not joined yet: [`Group::join`]).
    pub fn connect(uuid: &str) -> Result<Self, ConnectError> {
        let name = format!("{GROUP_PREFIX}{uuid}");
        // CPG_MAX_NAME_LENGTH is 128 with the terminating NUL.
        if name.len() > 127 {
            return Err(ConnectError::NameTooLong(uuid.to_owned()));
        }
        let no = |service| {
            move |e: CsError| ConnectError::NoCorosync {
                service,
                error: e.to_string(),
            }
        };
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, Vec::new());
        // From here on, `Drop` removes the inbox; each handle finalizes itself when dropped.
        let model = cpg::ModelData::ModelV1(cpg::Model1Data {
            flags: cpg::Model1Flags::None,
            deliver_fn: Some(on_deliver),
            confchg_fn: Some(on_confchg),
            totem_confchg_fn: Some(on_ring),
        });
        let inbox = InboxGuard(key);
        let cpg = cpg::initialize(&model, 0).map_err(no("cpg"))?;
        // The crate does not keep the context given to `initialize`.
        cpg::context_set(&cpg, key).map_err(no("cpg"))?;
        let me = cpg::local_get(&cpg).map_err(no("cpg"))?.into();
        let max_message = cpg::max_atomic_msgsize_get(&cpg).map_err(no("cpg"))? as usize;
        let qmodel = quorum::ModelData::ModelV1(quorum::Model1Data {
            flags: quorum::Model1Flags::None,
            quorum_notification_fn: Some(on_quorum),
            nodelist_notification_fn: None,
        });
        let (quorum, kind) = quorum::initialize(&qmodel, 0).map_err(no("quorum"))?;
        if matches!(kind, quorum::QuorumType::Free) {
            return Err(ConnectError::NoQuorumProvider);
        }
        quorum::context_set(&quorum, key).map_err(no("quorum"))?;
        quorum::trackstart(&quorum, rust_corosync::TrackFlags::Changes).map_err(no("quorum"))?;
        std::mem::forget(inbox);
        Ok(Self {
            cpg,
            quorum,
            key,
            name,
            me,
            max_message,
            joined: false,
            closed: false,
            views: Views::new(me),
            unsent: VecDeque::new(),
        })
    }

    /// The descriptors to poll for input: then call [`Group::next_event`] until `None`.
    pub fn fds(&self) -> Result<[BorrowedFd<'_>; 2], GroupError> {
        let cpg: RawFd = cpg::fd_get(&self.cpg).map_err(group_error)?;
        let quorum: RawFd = quorum::fd_get(&self.quorum).map_err(group_error)?;
        // SAFETY: both are the libraries' sockets to corosync, which stay open until the
        // handles are finalized, when `self` is dropped; the borrows cannot outlive `self`.
        Ok([cpg, quorum].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) }))
    }

    /// The group's name in corosync (`corosync-cpgtool` lists it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes what corosync has and turns it into events. A connection corosync closed is
    /// [`GroupError::Closed`].
    fn dispatch(&mut self) -> Result<(), GroupError> {
        for result in [
            cpg::dispatch(&self.cpg, DispatchFlags::All),
            quorum::dispatch(&self.quorum, DispatchFlags::All),
        ] {
            match result {
                Ok(()) | Err(CsError::CsErrTryAgain) => {}
                Err(e) => {
                    warn!(group = self.name, "corosync dispatch failed: {e}");
                    self.closed = true;
                    return Err(GroupError::Closed);
                }
            }
        }
        let raws = std::mem::take(
            INBOXES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(&self.key)
                .expect("the inbox lives as long as the group"),
        );
        let Self {
            views,
            quorum,
            name,
            closed,
            ..
        } = self;
        views.feed(raws, &mut || {
            quorum::getquorate(quorum).map_err(|e| {
                warn!(group = %name, "asking corosync for quorum failed: {e}");
                *closed = true;
                GroupError::Closed
            })
        })?;
        self.unsent.extend(self.views.take_outbox());
        self.send_unsent();
        Ok(())
    }

    /// Multicasts the quorum changes `views` read (see `cpg_views`) until flow control holds
    /// them back. One that fails otherwise is dropped: the other members tell the same
    /// change, or a membership change starts over.
    fn send_unsent(&mut self) {
        while let Some(payload) = self.unsent.pop_front() {
            match self.multicast(&payload) {
                Ok(()) => {}
                Err(GroupError::TryAgain) => {
                    self.unsent.push_front(payload);
                    return;
                }
                Err(e) => warn!(group = self.name, "telling a quorum change failed: {e}"),
            }
        }
    }
}

/// Removes an inbox when a connection is dropped (or could not be made).
struct InboxGuard(u64);

impl Drop for InboxGuard {
    fn drop(&mut self) {
        INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

impl Drop for CpgGroup {
    fn drop(&mut self) {
        drop(InboxGuard(self.key));
    }
}

impl Group for CpgGroup {
    fn local_node(&self) -> NodeId {
        self.me
    }

    fn max_message_size(&self) -> usize {
        self.max_message
    }

    fn join(&mut self) -> Result<(), GroupError> {
        if self.joined {
            return Err(GroupError::AlreadyJoined);
        }
        cpg::join(&self.cpg, &self.name).map_err(group_error)?;
        self.joined = true;
        self.views.set_joined(true);
        Ok(())
    }

    fn multicast(&mut self, payload: &[u8]) -> Result<(), GroupError> {
        if self.closed {
            return Err(GroupError::Closed);
        }
        if !self.joined {
            return Err(GroupError::NotJoined);
        }
        if payload.len() > self.max_message {
            return Err(GroupError::TooLarge {
                len: payload.len(),
                max: self.max_message,
            });
        }
        cpg::mcast_joined(&self.cpg, cpg::Guarantee::TypeAgreed, payload).map_err(group_error)
    }

    fn leave(&mut self) -> Result<(), GroupError> {
        if !self.joined {
            return Err(GroupError::NotJoined);
        }
        cpg::leave(&self.cpg, &self.name).map_err(group_error)?;
        self.joined = false;
        self.views.set_joined(false);
        self.unsent.clear();
        Ok(())
    }

    fn poll_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds().map(Vec::from).unwrap_or_default()
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn next_event(&mut self) -> Option<GroupEvent> {
        self.send_unsent();
        if let Some(event) = self.views.next_event() {
            return Some(event);
        }
        if !self.closed {
            if let Err(e) = self.dispatch() {
                warn!(group = self.name, "{e}");
            }
        }
        self.views.next_event()
    }
}
