// SPDX-License-Identifier: GPL-2.0

//! Creating a log: parse the table's arguments, create the log on the server, and check what
//! the server answers (region size, log device).

use kernel::{
    new_condvar, new_delayed_work, new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, UniqueArc,
    },
    time::Delta,
};

use super::{flush::FlushBatch, in_sync::InSyncAnswers, in_sync_map::InSyncMap, UserspaceLog};
use crate::{
    atomic_instant::AtomicInstant,
    stats::LogStats,
    sys::dirty_log::{Args, Constructing, LogDevice},
    table_args,
    transfer::{uuid_tail, LogAddress, Transport},
    uapi::{ctr, payload, RequestType, DEVICE_NAME_SIZE, MAX_REQUEST_PAYLOAD},
};

/// The longest idle time a held clear may wait for (the `clear_idle_ms` parameter): an hour.
const MAX_CLEAR_IDLE_MS: u32 = 3_600_000;

/// Source of `luid`s: unique per log instance on this machine, never 0 (a wildcard to
/// cmirrord), and unlike upstream's pointer value it reveals no kernel address.
static NEXT_LUID: Atomic<u64> = Atomic::new(1);

/// Prints a `core::fmt::Display` value (the protocol's errors) with the kernel's printing macros.
struct Shown<'a, T>(&'a T);

impl<T: core::fmt::Display> kernel::fmt::Display for Shown<'_, T> {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        core::fmt::Display::fmt(self.0, f)
    }
}

/// Creates the log instance on the server and checks what it answers.
///
/// The server hears of the log only once everything the log needs is allocated; a failure after
/// its CTR destroys the log there again.
pub(super) fn construct(
    transport: &Arc<Transport>,
    ctx: &Constructing,
    args: &Args<'_>,
) -> Result<Arc<UserspaceLog>> {
    construct_inner(transport, ctx, args).inspect_err(|e| {
        // dm-raid1 reports every log that fails to construct as EINVAL: name this cause.
        if *e == ENOMEM {
            pr_err!("Unable to create the log: out of memory\n");
        }
    })
}

fn construct_inner(
    transport: &Arc<Transport>,
    ctx: &Constructing,
    args: &Args<'_>,
) -> Result<Arc<UserspaceLog>> {
    let target = ctx.target();
    let mut words = KVec::with_capacity(args.len(), GFP_KERNEL)?;
    for a in args.iter() {
        words.push(a.to_bytes(), GFP_KERNEL)?;
    }
    let parsed = table_args::parse_args(&words).map_err(|e| {
        pr_warn!("{}\n", Shown(&e));
        EINVAL
    })?;
    // Built at its largest, kept at its length (the log keeps it for as long as it lives).
    let mut built = KVec::from_elem(0u8, MAX_REQUEST_PAYLOAD, GFP_KERNEL)?;
    let len = ctr::ctr_string(target.len(), parsed.server_args, &mut built).map_err(|e| {
        pr_warn!("{}\n", Shown(&e));
        EINVAL
    })?;
    // With the NUL that the reconnecting CTR sends.
    let mut ctr_string = KVec::with_capacity(len + 1, GFP_KERNEL)?;
    ctr_string.extend_from_slice(&built[..len], GFP_KERNEL)?;
    ctr_string.push(0, GFP_KERNEL)?;
    drop(built);
    let transport = transport.clone();
    // Allocate what does not depend on the server's answers before the server learns of
    // the log.
    let slot = UniqueArc::new_uninit(GFP_KERNEL)?;
    // A clustered log sends every mark (see `FlushBatch::new`) and asks IN_SYNC twice: another
    // node may take a region out of sync between the mirror's two questions, and a server
    // that withdraws voids kept answers, cmirrord does not withdraw.
    let clustered = parsed
        .server_args
        .first()
        .is_some_and(|t| t.starts_with(b"clustered-"));
    let luid = NEXT_LUID.fetch_add(1, Relaxed);
    let stats = LogStats::new(parsed.uuid, luid)?;
    let uuid = stats.uuid();
    let listed = transport.diagnostics.list(stats.clone())?;
    let wait_secs = parsed
        .features
        .max_server_wait
        .unwrap_or_else(|| crate::module_parameters::max_server_wait.value());
    let max_wait = (wait_secs > 0).then(|| Delta::from_secs(i64::from(wait_secs)));
    let to = LogAddress {
        uuid,
        luid,
        stats: &stats,
        max_wait,
    };
    let attached_epoch = transport.announcements();

    let mut device = [0u8; DEVICE_NAME_SIZE];
    let device_len = transport
        .request(to, RequestType::Ctr, &ctr_string[..len], &mut device)
        .inspect_err(|e| {
            if *e == ESRCH {
                pr_err!("[{}] Userspace log server not found\n", uuid_tail(uuid));
            } else if *e == EINTR || *e == ETIMEDOUT {
                // The server may have created the log without the answer reaching us (the
                // caller was killed, or gave up): it must not keep it.
                pr_err!(
                    "[{}] Log creation interrupted ({}): destroying it on the server\n",
                    uuid_tail(uuid),
                    e.to_errno()
                );
                let _ = transport.request(to, RequestType::Dtr, &[], &mut []);
            } else if *e == ENOSPC {
                // The server created the log but answered with more than a device name fits:
                // it must not keep it. (A server that failed with ENOSPC itself has no log and
                // answers the DTR with an error, which changes nothing.)
                pr_err!(
                    "[{}] Userspace log server's answer to CTR does not fit: destroying the log\n",
                    uuid_tail(uuid)
                );
                let _ = transport.request(to, RequestType::Dtr, &[], &mut []);
            } else {
                pr_err!(
                    "[{}] Userspace log server failed to create log: {}\n",
                    uuid_tail(uuid),
                    e.to_errno()
                );
            }
        })?;

    // The server now has the log: any failure from here on must destroy it there too.
    let finish = || -> Result<(u32, u64, Option<LogDevice>)> {
        let mut reply = [0u8; 8];
        let n = transport
            .request(to, RequestType::GetRegionSize, &[], &mut reply)
            .inspect_err(|e| {
                pr_err!("Failed to get region size of dirty log: {}\n", e.to_errno())
            })?;
        let size = payload::decode_u64(RequestType::GetRegionSize, &reply[..n]).map_err(|_| {
            pr_err!(
                "[{}] malformed region size reply ({} bytes)\n",
                uuid_tail(uuid),
                n
            );
            EPROTO
        })?;
        let region_size = u32::try_from(size)
            .ok()
            .filter(|s| s.is_power_of_two())
            .ok_or_else(|| {
                pr_err!(
                "[{}] server gave region size {} sectors: it must be a power of two below 2^32\n",
                uuid_tail(uuid),
                size
            );
                EINVAL
            })?;
        let region_count = target.len().div_ceil(u64::from(region_size));
        let log_dev = match payload::ctr_reply_device(&device[..device_len]) {
            Ok(None) => None,
            Ok(Some(_)) => {
                let name = CStr::from_bytes_with_nul(&device[..device_len]).map_err(|_| EINVAL)?;
                Some(ctx.get_device(name).inspect_err(|e| {
                    pr_err!(
                        "Failed to register {} with device-mapper: {}\n",
                        name.to_str().unwrap_or("?"),
                        e.to_errno()
                    )
                })?)
            }
            Err(_) => {
                pr_err!("DM_ULOG_CTR device return string not properly terminated\n");
                return Err(EINVAL);
            }
        };
        Ok((region_size, region_count, log_dev))
    };
    let (region_size, region_count, log_dev) = finish().inspect_err(|_| {
        let _ = transport.request(to, RequestType::Dtr, &[], &mut []);
    })?;
    // Sized by the region count, which the server's answer gave: a failure destroys the log
    // there too.
    let batch = FlushBatch::new(
        crate::module_parameters::hold_clears.value(),
        crate::module_parameters::clears_in_flush.value(),
        Delta::from_millis(
            crate::module_parameters::clear_idle_ms
                .value()
                .min(MAX_CLEAR_IDLE_MS)
                .into(),
        ),
        clustered,
        region_count,
    )
    .inspect_err(|_| {
        let _ = transport.request(to, RequestType::Dtr, &[], &mut []);
    })?;
    let reuse_in_sync = crate::module_parameters::reuse_in_sync.value() && !clustered;
    let map_wanted = crate::module_parameters::in_sync_map.value();
    let in_sync_map = InSyncMap::new(region_count, map_wanted);
    let Ok(log) = slot.write_pin_init(pin_init!(UserspaceLog {
        transport,
        target,
        leg_flush <- ctx.leg_flush(),
        legs_failed: Atomic::new(false),
        luid,
        ctr_string,
        table_argc: parsed.table_argc,
        features: parsed.features,
        max_wait,
        attached_epoch: Atomic::new(attached_epoch),
        reattach <- new_mutex!(false, "UserspaceLog::reattach"),
        reattached <- new_condvar!("UserspaceLog::reattached"),
        generation: Atomic::new(0),
        half_attached: Atomic::new(false),
        stopping: Atomic::new(false),
        outage_reported: Atomic::new(false),
        region_size,
        region_count,
        _log_dev: log_dev,
        batch <- batch,
        in_sync_answers <- InSyncAnswers::new(reuse_in_sync),
        in_sync_map <- in_sync_map,
        in_sync_hint: Atomic::new(0),
        hint_withdrawals: Atomic::new(0),
        last_sync_count: Atomic::new(0),
        last_recovery_query: AtomicInstant::new(),
        lazy_flush_due: AtomicInstant::new(),
        lazy_flush <- new_delayed_work!("UserspaceLog::lazy_flush"),
        flushing <- new_mutex!((), "UserspaceLog::flushing"),
        stats,
        _listed: listed,
    }));
    if map_wanted && !log.in_sync_map.exists() {
        pr_warn!(
            "[{}] no memory for an in-sync map of {} regions: every IN_SYNC goes to the server\n",
            uuid_tail(log.uuid()),
            region_count
        );
    }
    Ok(log.into())
}
