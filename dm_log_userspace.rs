// SPDX-License-Identifier: GPL-2.0

//! Device-mapper "userspace" dirty log: forwards every log operation to a userspace server.
//!
//! The mirror target (dm-raid1) consults its region log before and after writes. This log
//! keeps no state of its own: each operation becomes a request to a server over the netlink
//! connector (protocol version 3, byte-compatible with upstream's `dm-log-userspace`), so a
//! cluster, or any program, can own the log.

mod atomic_instant;
mod bug;
mod log;
mod presence;
mod stats;
mod sys;
mod table_args;
mod timeout;
mod transfer;
#[path = "uapi/lib.rs"]
mod uapi;

use kernel::prelude::*;

use crate::{
    log::UserspaceLog,
    sys::{connector, dirty_log},
    transfer::Transport,
    uapi::{CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, CN_VAL_DM_USERSPACE_LOG_ANNOUNCE},
};

module! {
    type: DmLogUserspace,
    name: "dm_log_userspace",
    authors: ["dm-log-userspace-rs developers"],
    description: "device-mapper userspace dirty log (Rust)",
    license: "GPL",
    alias: ["dm-log-userspace"],
    params: {
        first_seq: u32 {
            default: 0,
            description: "seq of the first request (lets tests see the counter wrap at 2^32)",
        },
        reuse_in_sync: bool {
            default: true,
            description: "answer the mirror's second IN_SYNC about a region within one pass of \
                its worker from the first (0: ask the server every time, as upstream); read \
                when a table is loaded",
        },
        in_sync_map: bool {
            default: true,
            description: "with a server that announces it, keep the regions it says are in \
                sync and answer IN_SYNC about them without asking (0: ask every time, as \
                upstream); read when a table is loaded",
        },
        hold_clears: bool {
            default: true,
            description: "send clears only with the next FLUSH that carries marks, or with \
                their own FLUSH 3 s later, and cancel one when its region is marked again \
                (0: send them at every flush, as upstream); read when a table is loaded",
        },
        clear_idle_ms: u32 {
            default: 3000,
            description: "with held clears, send a clear only once its region has gone this \
                many milliseconds without a write, as md's bitmap waits daemon_sleep (default \
                3000, upstream's lazy FLUSH period; 0: at the next flush; at most 3600000); \
                read when a table is loaded",
        },
        clears_in_flush: bool {
            default: true,
            description: "with held clears and a server that announces it, send the clears \
                inside the FLUSH (0: as CLEAR_REGION requests); read when a table is loaded",
        },
        max_server_wait: u32 {
            default: 0,
            description: "seconds a log may go without a server before its requests fail \
                (0: wait forever, as upstream); a table's max_server_wait=N overrides it",
        },
    },
}

/// The module: the registered log type and the connector link, torn down in that order.
///
/// Both share the one [`Transport`]: the connector delivers the server's messages to it, and
/// every log sends its requests through it.
struct DmLogUserspace {
    _log_type: dirty_log::Registration<UserspaceLog>,
    _connector: connector::Registration<Transport, 2>,
}

impl kernel::Module for DmLogUserspace {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let transport = Transport::new(module_parameters::first_seq.value())?;
        let connector = connector::Registration::new(
            CN_IDX_DM,
            [
                (CN_VAL_DM_USERSPACE_LOG, c"dmlogusr"),
                (CN_VAL_DM_USERSPACE_LOG_ANNOUNCE, c"dmlogusr_announce"),
            ],
            transport.clone(),
        )
        .inspect_err(|e| {
            pr_err!(
                "Unable to initialize userspace log communications: {}\n",
                e.to_errno()
            )
        })?;
        let log_type =
            dirty_log::Registration::new(c"userspace", module, transport).inspect_err(|e| {
                pr_err!(
                    "Couldn't register userspace dirty log type: {}\n",
                    e.to_errno()
                )
            })?;
        pr_info!("version 1.3.0 loaded (Rust)\n");
        Ok(Self {
            _log_type: log_type,
            _connector: connector,
        })
    }
}

impl Drop for DmLogUserspace {
    fn drop(&mut self) {
        pr_info!("version 1.3.0 unloaded\n");
    }
}
