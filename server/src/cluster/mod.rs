// SPDX-License-Identifier: GPL-2.0
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

/// How dm-ulogd opens a clustered log's group: corosync CPG, or, in a build without the
/// `corosync` feature, a refusal (the table fails to load with a message): serving a
/// clustered log alone while other nodes write the same mirror would be unsafe, and
/// `--single-node` says the machine is alone.
pub fn connect() -> service::Connect<Box<dyn group::Group>> {
    #[cfg(feature = "corosync")]
    {
        Box::new(|uuid: &str| {
            corosync::CpgGroup::connect(uuid)
                .map(|g| Box::new(g) as Box<dyn group::Group>)
                .map_err(|e| e.to_string())
        })
    }
    #[cfg(not(feature = "corosync"))]
    {
        refuse_without_corosync()
    }
}

/// The connection of a dm-ulogd built without corosync: none.
#[cfg_attr(feature = "corosync", allow(dead_code))]
fn refuse_without_corosync() -> service::Connect<Box<dyn group::Group>> {
    Box::new(|_uuid: &str| {
        Err(
            "this dm-ulogd was built without corosync (cargo feature `corosync`), so it cannot \
             serve a clustered log with the other nodes: run it with --single-node if this \
             machine alone uses the mirror, or install a build with corosync"
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_without_corosync_refuses_clustered_logs_with_a_reason() {
        let err = refuse_without_corosync()("CLUSTER-LOG-1").err().unwrap();
        assert!(err.contains("--single-node"), "{err}");
    }
}
