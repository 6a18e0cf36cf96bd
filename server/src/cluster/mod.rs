//! Clustered logs: one mirror's log served by dm-ulogd on several nodes, kept identical by a
//! process group's agreed order (corosync CPG), as cmirrord does, without its gaps.
//!
//! - [`replica`]: the log's replicated state and its deterministic transitions;
//! - [`member`]: one node's member of a log: routing, rounds and state transfer, quorum;
//! - [`group`]: the group interface (CPG's), [`sim`]: an in-process simulation of it,
//!   `corosync`: corosync's (the `corosync` feature), its callbacks turned into views by
//!   [`cpg_views`];
//! - [`message`], [`transfer`]: the members' messages and snapshots;
//! - [`planted`]: defects the checker must catch, planted by its tests only.
//!
//! `docs/cluster.md` describes the design and what is left to do.

#[cfg(feature = "corosync")]
pub mod corosync;
pub mod cpg_views;
pub mod group;
pub mod member;
pub mod message;
pub mod planted;
pub mod replica;
pub mod service;
pub mod sim;
pub mod transfer;

/// How dm-ulogd opens a clustered log's group: corosync CPG, or `None` (with a warning) in
/// a build without the `corosync` feature, which serves clustered logs on one node.
pub fn connect() -> Option<service::Connect<Box<dyn group::Group>>> {
    #[cfg(feature = "corosync")]
    {
        Some(Box::new(|uuid: &str| {
            corosync::CpgGroup::connect(uuid)
                .map(|g| Box::new(g) as Box<dyn group::Group>)
                .map_err(|e| e.to_string())
        }))
    }
    #[cfg(not(feature = "corosync"))]
    {
        tracing::warn!(
            "built without corosync (cargo feature `corosync`): clustered logs are served on \
             this node alone"
        );
        None
    }
}
