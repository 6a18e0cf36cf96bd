// SPDX-License-Identifier: GPL-2.0
//! The logs this server keeps, keyed by (uuid, luid), and the answer to every request.
//!
//! A live and an inactive table may share one UUID (a table reload), so the kernel's `luid`
//! tells their log instances apart.
//!
//! With the in-sync map (`uapi/in_sync_map.rs`) the kernel answers IN_SYNC itself for the
//! regions it was told are in sync. A request that takes a region out of sync therefore
//! leaves a [`Withdrawal`] pending here ([`Logs::pending_withdrawal`]), which the caller
//! sends the kernel before the request's reply (`serve::Exchange::answer` does).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;

use dm_ulog_uapi::{
    in_sync_map::{MAX_RANGES, MAX_RANGES_REPLY},
    payload::{self, RegionSync, RemoteRecovering, ResyncWork},
    FlushEntry, Header, InSyncRanges, RequestType, Uuid, WireError, Withdrawal,
};
use nix::errno::Errno;
use tracing::{debug, info, warn};

use crate::bitset::AllocError;
use crate::device::LogDevice;
use crate::disk::{self, DiskLog};
use crate::regions::{OutOfRange, Regions};
use crate::table::{self, LogSpec, Storage, SyncMode, TableError};

/// Why a request failed. The reply carries [`LogError::errno`]; the text, logged by
/// [`Logs::handle`], tells the admin what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log is not here (the server restarted): the kernel answers `ESRCH` by re-creating
    /// the log (CTR, RESUME) and retrying.
    #[error("request for a log this server does not have: asking the kernel to re-create it")]
    UnknownLog,
    /// The request does not parse.
    #[error("malformed request: {0}")]
    Malformed(#[from] WireError),
    /// A region number past the end of the log.
    #[error("malformed request: {0}")]
    OutOfRange(#[from] OutOfRange),
    /// GET_IN_SYNC_RANGES to a server that did not announce the in-sync map.
    #[error(
        "GET_IN_SYNC_RANGES, but this server did not announce the in-sync map (started with \
         --no-in-sync-map or --no-announce): the kernel module should not have asked; \
         update it, or start the server without those flags"
    )]
    InSyncMapOff,
    /// A withdrawal of an earlier request has not reached the kernel yet; the caller
    /// broke [`Logs::handle`]'s contract.
    #[error(
        "a withdrawal from the kernel's in-sync map is not sent yet: no request is applied \
         before it is (the kernel resends this one)"
    )]
    WithdrawalPending,
    /// A disk log asked about its regions between its CTR and its first RESUME, which reads
    /// them from the device (a log re-created after a server restart): any answer would be
    /// made up. The kernel asks again.
    #[error(
        "a disk log's regions are read from its device at RESUME, and this request came          before it (the kernel asks again)"
    )]
    NotResumed,
    /// The CTR string names no log this server can keep.
    #[error("refusing log: {0}")]
    Table(#[from] TableError),
    /// A CTR for a live log with other arguments; the live log is kept.
    #[error("CTR for an existing log with other arguments")]
    OtherArguments,
    /// The log would take more memory than one log may.
    #[error(
        "refusing log: {regions} regions of {region_size} sectors need {} MiB of server \
         memory, more than the {} MiB one log may take: use a larger region size in the table \
         (each doubling halves the memory), or start the server with a larger \
         --max-log-memory", mib(*.need), mib(*.limit)
    )]
    TooLarge {
        /// Regions of the log.
        regions: u64,
        /// Sectors per region.
        region_size: u64,
        /// Bytes it needs.
        need: u64,
        /// Bytes one log may take.
        limit: u64,
    },
    /// The memory was within the limit, but the host has not got it.
    #[error(
        "refusing log: {regions} regions need {} MiB of server memory and the host has not \
         got it ({source}): free memory, or use a larger region size in the table", mib(*.need)
    )]
    NoMemory {
        /// Regions of the log.
        regions: u64,
        /// Bytes it needs.
        need: u64,
        /// The failed allocation.
        source: AllocError,
    },
    /// The disk log's device cannot be used.
    #[error("refusing log: {0:#}")]
    Device(anyhow::Error),
    /// A clustered log whose group cannot be joined (corosync is not running).
    #[error("refusing clustered log: {0}")]
    Cluster(String),
    /// The disk log's device failed a write.
    #[error(
        "log device {}: cannot write the log{what}: {source}; the mirror will see the log fail \
         (check or replace the device)", path.display()
    )]
    DeviceIo {
        /// The device.
        path: PathBuf,
        /// What was written: "" for the bitmap, " header" for the header alone.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl LogError {
    /// The errno the reply carries (negated).
    pub fn errno(&self) -> Errno {
        match self {
            Self::UnknownLog => Errno::ESRCH,
            Self::Malformed(_)
            | Self::OutOfRange(_)
            | Self::InSyncMapOff
            | Self::Table(_)
            | Self::OtherArguments
            | Self::Device(_) => Errno::EINVAL,
            Self::TooLarge { .. } | Self::NoMemory { .. } => Errno::ENOMEM,
            Self::DeviceIo { .. } => Errno::EIO,
            Self::Cluster(_) => Errno::ENOTCONN,
            Self::WithdrawalPending | Self::NotResumed => Errno::EAGAIN,
        }
    }
}

/// The memory one log may take unless `--max-log-memory` says otherwise: 256 MiB holds a
/// core log of about 700 million regions (a 2.6 TiB mirror with 4 KiB regions, 340 TiB with
/// the default 512 KiB ones), a disk log of 530 million. A limit, so that one table cannot
/// take the memory every other log's server needs.
pub const DEFAULT_MAX_LOG_MEMORY: u64 = 256 << 20;

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// A log's identity: its UUID and the kernel's instance id (luid).
///
/// Hashed by the luid alone, compared whole: the luid tells the kernel's logs apart already,
/// and hashing a UUID field's 129 bytes on every request cost more than the rest of the
/// lookup. Two logs with one luid (different UUIDs) still are two keys.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(Uuid, u64);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.1.hash(state);
    }
}

/// One log instance.
#[derive(Debug)]
struct Log {
    spec: LogSpec,
    regions: Regions,
    /// Where a disk log's bitmap lives; `None` for core logs.
    disk: Option<DiskLog>,
    /// Between PRESUSPEND and RESUME no resync work is handed out.
    suspended: bool,
    /// The next RESUME loads the state from the device: true until the first RESUME and
    /// after each POSTSUSPEND that wrote the bitmap. Otherwise the log is live and what the
    /// server holds is newer than the device (marks not flushed yet), so a RESUME (the
    /// kernel re-creating its log after a reconnect) must not replace it.
    needs_load: bool,
    /// Another instance of this UUID (a reloaded table) has resumed since this one did: this
    /// one's state is stale, and it does not write the device, whatever it is sent (a late
    /// clear and FLUSH would write its whole old bitmap over the newer one's marks), until it
    /// resumes again (which reads the device first).
    superseded: bool,
    /// A disk log not yet resumed since its CTR: what the server holds is not the log's state
    /// (the device holds that), so it answers nothing about regions and writes nothing.
    awaits_first_resume: bool,
}

/// Bytes of memory a log takes: its region state, and a disk log's I/O buffer.
pub(crate) fn memory_for(spec: &LogSpec) -> u64 {
    let disk = match spec.storage {
        Storage::Core => 0,
        Storage::Disk(_) => disk::memory_for(spec.regions),
    };
    Regions::bytes_for(spec.regions) + disk
}

/// Refuses a log that would take more than `limit` bytes, telling the admin the way out.
pub(crate) fn check_memory(spec: &LogSpec, limit: u64) -> Result<(), LogError> {
    let need = memory_for(spec);
    if need <= limit {
        return Ok(());
    }
    Err(LogError::TooLarge {
        regions: spec.regions,
        region_size: spec.region_size,
        need,
        limit,
    })
}

/// Opens the disk log `dev` of the log `spec` describes.
pub(crate) fn open_disk(spec: &LogSpec, dev: &str) -> Result<DiskLog, LogError> {
    let device = LogDevice::open(dev).map_err(LogError::Device)?;
    DiskLog::new(device, spec.regions, spec.sync).map_err(|e| {
        match e.chain().find_map(|c| c.downcast_ref::<AllocError>()) {
            Some(a) => alloc_failure(spec, *a),
            None => LogError::Device(e),
        }
    })
}

/// Memory that was within the limit and could still not be had.
fn alloc_failure(spec: &LogSpec, source: AllocError) -> LogError {
    LogError::NoMemory {
        regions: spec.regions,
        need: memory_for(spec),
        source,
    }
}

impl Log {
    /// A log as dm-log.c's constructor leaves it: every region clean, in sync only for
    /// `nosync`. A disk log's bitmap is read at RESUME. Everything the log needs is reserved
    /// here, fallibly: a log too large for `limit` or for the host is refused with ENOMEM.
    fn create(spec: LogSpec, limit: u64) -> Result<Self, LogError> {
        check_memory(&spec, limit)?;
        let regions = Regions::try_new(spec.regions, spec.sync == SyncMode::NoSync)
            .map_err(|e| alloc_failure(&spec, e))?;
        let disk = match &spec.storage {
            Storage::Core => None,
            Storage::Disk(dev) => Some(open_disk(&spec, dev)?),
        };
        Ok(Self {
            awaits_first_resume: disk.is_some(),
            regions,
            disk,
            suspended: false,
            needs_load: true,
            superseded: false,
            spec,
        })
    }

    /// The CTR reply: the device as `major:minor` for the kernel to claim (protocol v2).
    fn ctr_reply(&self, out: &mut Vec<u8>) {
        if let Some(dev) = self.disk.as_ref().and_then(|d| d.device().dev()) {
            out.extend_from_slice(dev.to_string().as_bytes());
            out.push(0);
        }
    }

    /// Passes a region's new state on to the bitmap the next flush writes.
    fn note(&mut self, region: u64) {
        if self.superseded {
            return;
        }
        if let Some(disk) = &mut self.disk {
            disk.set_clean(region, self.regions.clean_on_disk(region).unwrap_or(false));
        }
    }

    fn flush(&mut self) -> Result<(), LogError> {
        let Some(disk) = self
            .disk
            .as_mut()
            .filter(|_| !self.superseded && !self.awaits_first_resume)
        else {
            // A core log has nothing to make durable, a superseded one nothing of its own,
            // and one never resumed nothing but what the device already holds.
            return Ok(());
        };
        disk.flush()
            .map(|_| ())
            .map_err(|source| LogError::DeviceIo {
                path: disk.device().path().to_owned(),
                what: "",
                source,
            })
    }

    /// POSTSUSPEND: dm-log.c's disk log writes its bitmap once the mirror has suspended.
    /// Only once that succeeded may the next RESUME read the device back.
    fn postsuspend(&mut self) -> Result<(), LogError> {
        self.flush()?;
        self.needs_load = true;
        Ok(())
    }

    fn resume(&mut self, uuid: &Uuid, luid: u64) -> Result<(), LogError> {
        let was_suspended = std::mem::take(&mut self.suspended);
        let load = std::mem::take(&mut self.needs_load);
        if !load {
            if was_suspended {
                // PRESUSPEND stopped recovery; a RESUME without POSTSUSPEND restarts it.
                self.regions.resume();
            }
            // A log that is running: the kernel re-created it after a reconnect. What the
            // server holds is newer than the device; keep it, recovery included.
            debug!(
                %uuid,
                luid,
                dirty = self.regions.dirty_count(),
                "RESUME of a running log: keeping its state"
            );
            return Ok(());
        }
        let Some(disk) = &mut self.disk else {
            self.regions.resume();
            return Ok(());
        };
        self.awaits_first_resume = false;
        let written = disk.resume(&mut self.regions);
        info!(
            %uuid,
            in_sync = self.regions.sync_count(),
            regions = self.regions.count(),
            "log read from {}",
            disk.device().path().display()
        );
        written.map_err(|source| LogError::DeviceIo {
            path: disk.device().path().to_owned(),
            what: " header",
            source,
        })
    }

    /// Answers every request but CTR and DTR (which [`Logs`] handles): the reply payload goes
    /// to `out`. GET_IN_SYNC_RANGES, and clears in a FLUSH, only with the extensions the
    /// server announced.
    fn answer(
        &mut self,
        kind: RequestType,
        uuid: &Uuid,
        luid: u64,
        data: &[u8],
        out: &mut Vec<u8>,
        extensions: Extensions,
    ) -> Result<(), LogError> {
        if self.awaits_first_resume
            && matches!(
                kind,
                RequestType::IsClean
                    | RequestType::InSync
                    | RequestType::GetInSyncRanges
                    | RequestType::MarkRegion
                    | RequestType::Flush
                    | RequestType::ClearRegion
                    | RequestType::GetResyncWork
                    | RequestType::SetRegionSync
            )
        {
            return Err(LogError::NotResumed);
        }
        match kind {
            RequestType::Ctr | RequestType::Dtr => unreachable!("handled by Logs::apply"),
            RequestType::Presuspend => self.suspended = true,
            RequestType::Postsuspend => self.postsuspend()?,
            RequestType::Resume => self.resume(uuid, luid)?,
            RequestType::GetRegionSize => {
                out.extend_from_slice(&self.spec.region_size.to_ne_bytes())
            }
            RequestType::IsClean => {
                let r = payload::decode_u64(kind, data)?;
                out.extend_from_slice(&i64::from(self.regions.is_clean(r)?).to_ne_bytes());
            }
            RequestType::GetInSyncRanges => {
                // A kernel asks only a server that announced the in-sync map.
                if !extensions.in_sync_map {
                    return Err(LogError::InSyncMapOff);
                }
                let from = payload::decode_u64(kind, data)?;
                let mut runs = [(0, 0); MAX_RANGES];
                let (next, n) = self.regions.in_sync_runs(from, &mut runs)?;
                // Within the capacity the reply buffer keeps: no allocation.
                out.resize(MAX_RANGES_REPLY, 0);
                let len = InSyncRanges::encode(next, &runs[..n], out)?;
                out.truncate(len);
            }
            RequestType::InSync => {
                let r = payload::decode_u64(kind, data)?;
                out.extend_from_slice(&i64::from(self.regions.in_sync(r)?).to_ne_bytes());
            }
            RequestType::MarkRegion | RequestType::Flush => {
                // v3 integrated flush: the marks travel inside FLUSH and are applied first,
                // and with the extension clears too (uapi/clears_in_flush.rs).
                let clears = kind == RequestType::Flush && extensions.clears_in_flush;
                for raw in payload::decode_regions(kind, data)? {
                    let r = match FlushEntry::decode(raw, clears) {
                        FlushEntry::Mark(r) => {
                            self.regions.mark(r)?;
                            r
                        }
                        FlushEntry::Clear(r) => {
                            self.regions.clear(r)?;
                            r
                        }
                    };
                    self.note(r);
                }
                if kind == RequestType::Flush {
                    self.flush()?;
                }
            }
            RequestType::ClearRegion => {
                for r in payload::decode_regions(kind, data)? {
                    self.regions.clear(r)?;
                    self.note(r);
                }
            }
            RequestType::GetResyncWork => {
                let work = if self.suspended {
                    None
                } else {
                    self.regions.resync_work()
                };
                out.extend_from_slice(&ResyncWork::from(work).encode());
            }
            RequestType::SetRegionSync => {
                let s = RegionSync::decode(data)?;
                self.regions.set_sync(s.region, s.in_sync)?;
                self.note(s.region);
            }
            RequestType::GetSyncCount => {
                out.extend_from_slice(&self.regions.sync_count().to_ne_bytes())
            }
            RequestType::StatusInfo => self.status_info(out),
            RequestType::StatusTable => out.extend_from_slice(self.spec.args.as_bytes()),
            RequestType::IsRemoteRecovering => {
                payload::decode_u64(kind, data)?;
                let reply = RemoteRecovering {
                    is_recovering: false,
                    in_sync_hint: self.regions.in_sync_hint(),
                };
                out.extend_from_slice(&reply.encode());
            }
        }
        Ok(())
    }

    fn status_info(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match &self.disk {
            None => write!(out, "1 {}", self.spec.type_name),
            Some(d) => write!(
                out,
                "3 {} {} {}",
                self.spec.type_name,
                d.device().name(),
                d.health().letter()
            ),
        };
    }
}

/// One line of the status dump.
pub struct LogSummary<'a> {
    uuid: &'a Uuid,
    luid: u64,
    log: &'a Log,
}

impl LogSummary<'_> {
    /// The log's UUID.
    pub fn uuid(&self) -> &Uuid {
        self.uuid
    }
}

impl fmt::Display for LogSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log uuid={} luid={} type={} regions={} in_sync={} dirty={} suspended={}",
            self.uuid,
            self.luid,
            self.log.spec.type_name,
            self.log.regions.count(),
            self.log.regions.sync_count(),
            self.log.regions.dirty_count(),
            self.log.suspended
        )?;
        if let Some(d) = &self.log.disk {
            write!(
                f,
                " device={} health={}",
                d.device().name(),
                d.health().letter()
            )?;
        }
        Ok(())
    }
}

/// This project's protocol extensions a server announced, and so implements (single-node
/// logs here, clustered ones in [`crate::cluster::replica`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// It answers GET_IN_SYNC_RANGES and withdraws (`uapi/in_sync_map.rs`).
    pub in_sync_map: bool,
    /// It takes clears in a FLUSH (`uapi/clears_in_flush.rs`).
    pub clears_in_flush: bool,
}

/// Every log this server keeps.
pub struct Logs {
    logs: HashMap<Key, Log>,
    /// Bytes one log may take (`--max-log-memory`).
    max_log_memory: u64,
    /// The extensions the server announced.
    extensions: Extensions,
    /// What the last request took out of the kernel's in-sync map, until the caller has sent
    /// it. One slot is enough: a request withdraws at most one span, and no request is
    /// applied while one is pending.
    withdrawal: Option<Withdrawal>,
}

impl Default for Logs {
    fn default() -> Self {
        Self::with_memory_limit(DEFAULT_MAX_LOG_MEMORY)
    }
}

impl Logs {
    /// No logs yet; each may take at most `max_log_memory` bytes. Without the in-sync map,
    /// as upstream's protocol has it.
    pub fn with_memory_limit(max_log_memory: u64) -> Self {
        Self {
            logs: HashMap::new(),
            max_log_memory,
            extensions: Extensions::default(),
            withdrawal: None,
        }
    }

    /// With the in-sync map, for a server that announces it (and so sends the kernel every
    /// [`Logs::pending_withdrawal`]), if `enabled`.
    pub fn with_in_sync_map(mut self, enabled: bool) -> Self {
        self.extensions.in_sync_map = enabled;
        self
    }

    /// Taking clears in a FLUSH, for a server that announces it, if `enabled`.
    pub fn with_clears_in_flush(mut self, enabled: bool) -> Self {
        self.extensions.clears_in_flush = enabled;
        self
    }

    /// The extensions the server announced.
    pub fn extensions(&self) -> Extensions {
        self.extensions
    }

    /// Regions the last request took out of sync, for the kernel to forget before it hears
    /// the reply (or anything else): the caller sends it, then calls
    /// [`Logs::withdrawal_sent`]. Only with the in-sync map.
    pub fn pending_withdrawal(&self) -> Option<Withdrawal> {
        self.withdrawal
    }

    /// The kernel has [`Logs::pending_withdrawal`]: its `sendmsg` returned.
    pub fn withdrawal_sent(&mut self) {
        self.withdrawal = None;
    }

    /// How many log instances exist.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether no log exists.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// A summary of every log, for the status dump.
    pub fn summaries(&self) -> impl Iterator<Item = LogSummary<'_>> {
        self.logs.iter().map(|(Key(uuid, luid), log)| LogSummary {
            uuid,
            luid: *luid,
            log,
        })
    }

    /// Answers one request: the reply payload goes to `out` (cleared first), or an error
    /// for the reply's errno, which is logged here.
    ///
    /// With the in-sync map, the caller sends [`Logs::pending_withdrawal`] before the reply:
    /// while one is pending, requests are refused (`EAGAIN`) without being applied.
    pub fn handle(
        &mut self,
        header: &Header,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        out.clear();
        let uuid = header.uuid();
        let result = match self.withdrawal {
            Some(_) => Err(LogError::WithdrawalPending),
            None => self.apply(header, uuid, data, out),
        };
        if let Err(e) = &result {
            let request = header.kind().map_or("?", RequestType::name);
            let luid = header.luid;
            match e {
                LogError::UnknownLog => info!(%uuid, luid, request, "{e}"),
                LogError::Malformed(_) => {
                    warn!(%uuid, luid, request_type = header.request_type, "{e}")
                }
                _ => warn!(%uuid, luid, request, "{e}"),
            }
        }
        result
    }

    fn apply(
        &mut self,
        header: &Header,
        uuid: Uuid,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let kind = header.kind()?;
        let key = Key(uuid, header.luid);
        let uuid = &key.0;
        if kind == RequestType::Ctr {
            return self.create(key, data, out);
        }
        let Some(log) = self.logs.get_mut(&key) else {
            if kind == RequestType::Dtr {
                info!(%uuid, luid = header.luid, "DTR for a log this server does not have");
                return Ok(());
            }
            // After a server restart: ESRCH makes the kernel send CTR and RESUME again.
            return Err(LogError::UnknownLog);
        };
        if kind == RequestType::Dtr {
            self.logs.remove(&key);
            info!(%uuid, luid = header.luid, "log destroyed");
            return Ok(());
        }
        let result = log.answer(kind, uuid, header.luid, data, out, self.extensions);
        if kind == RequestType::Resume && result.is_ok() {
            // The instance that resumed last is the live table's (a RESUME that re-creates an
            // old instance after a server restart may come before the new one's).
            log.superseded = false;
            self.supersede_others(&key);
        }
        let Some(log) = self.logs.get_mut(&key) else {
            return result;
        };
        // Failed or not, the request may have taken regions out of sync (a disk log's RESUME
        // that read the device and then failed to write it back): withdraw them all the same.
        let left_sync = log.regions.take_left_sync();
        if let Some((first, count)) = left_sync.filter(|_| self.extensions.in_sync_map) {
            self.withdrawal = Some(Withdrawal {
                luid: header.luid,
                first,
                count,
            });
        }
        result
    }

    /// The log `current` resumed: every other instance of its UUID belongs to a table it
    /// replaced (device-mapper destroys that one after this RESUME), and must not write the
    /// device they share from now on.
    fn supersede_others(&mut self, current: &Key) {
        for (key, log) in self.logs.iter_mut() {
            if key.0 == current.0 && key.1 != current.1 && !log.superseded {
                log.superseded = true;
                info!(
                    uuid = %key.0,
                    luid = key.1,
                    successor = current.1,
                    "log superseded by a reloaded table: it no longer writes its device"
                );
            }
        }
    }

    fn create(&mut self, key: Key, data: &[u8], out: &mut Vec<u8>) -> Result<(), LogError> {
        let uuid = &key.0;
        let spec = table::parse(data)?;
        if let Some(existing) = self.logs.get(&key) {
            // A repeated CTR (a resend after a lost reply, or the kernel re-creating the log
            // after a reconnect) keeps the live log and its state, and is answered as the
            // first was; a different one is refused and the live log kept.
            if existing.spec.args != spec.args {
                return Err(LogError::OtherArguments);
            }
            debug!(%uuid, luid = key.1, "CTR for a live log: keeping it");
            existing.ctr_reply(out);
            return Ok(());
        }
        let log = Log::create(spec, self.max_log_memory)?;
        log.ctr_reply(out);
        info!(%uuid, luid = key.1, regions = log.regions.count(), args = %log.spec.args, "log created");
        self.logs.insert(key, log);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: RequestType, luid: u64) -> Header {
        Header::request(b"UUID-1", luid, kind, 1, 0).unwrap()
    }

    fn ask(logs: &mut Logs, kind: RequestType, luid: u64, data: &[u8]) -> Result<Vec<u8>, Errno> {
        let mut out = vec![0xEE; 3];
        logs.handle(&header(kind, luid), data, &mut out)
            .map(|()| out)
            .map_err(|e| e.errno())
    }

    fn set_sync(logs: &mut Logs, region: u64, in_sync: bool) {
        let s = RegionSync { region, in_sync };
        ask(logs, RequestType::SetRegionSync, 1, &s.encode()).unwrap();
    }

    /// A region recovered as the kernel reports it: in sync, then its clear (which the module
    /// sends once the legs the recovery wrote are flushed).
    fn recovered(logs: &mut Logs, region: u64) {
        set_sync(logs, region, true);
        ask(logs, RequestType::ClearRegion, 1, &region.to_ne_bytes()).unwrap();
    }

    /// The runs and `next` of a GET_IN_SYNC_RANGES reply.
    fn ranges(logs: &mut Logs, from: u64) -> Result<(u64, Vec<(u64, u64)>), Errno> {
        let out = ask(logs, RequestType::GetInSyncRanges, 1, &from.to_ne_bytes())?;
        let r = InSyncRanges::decode(from, &out).expect("a reply the kernel takes");
        Ok((r.next, r.runs().collect()))
    }

    #[test]
    fn clears_ride_in_a_flush_only_when_announced() {
        let is_clean = |logs: &mut Logs, r: u64| {
            let out = ask(logs, RequestType::IsClean, 1, &r.to_ne_bytes()).unwrap();
            out == 1i64.to_ne_bytes()
        };
        let flush = |logs: &mut Logs, entries: &[FlushEntry]| {
            let payload: Vec<u8> = entries
                .iter()
                .flat_map(|e| e.encode().to_ne_bytes())
                .collect();
            ask(logs, RequestType::Flush, 1, &payload)
        };
        let mut logs = Logs::default().with_clears_in_flush(true);
        ask(&mut logs, RequestType::Ctr, 1, b"800 core 8 nosync").unwrap();
        flush(&mut logs, &[FlushEntry::Mark(3), FlushEntry::Mark(4)]).unwrap();
        assert!(!is_clean(&mut logs, 3) && !is_clean(&mut logs, 4));
        // Clears first, then a mark: region 3 clean, 4 still marked, 6 marked.
        flush(&mut logs, &[FlushEntry::Clear(3), FlushEntry::Mark(6)]).unwrap();
        assert!(is_clean(&mut logs, 3) && !is_clean(&mut logs, 4) && !is_clean(&mut logs, 6));
        // A MARK_REGION never carries clears: the flagged entry is out of range there.
        let clear = FlushEntry::Clear(4).encode().to_ne_bytes();
        assert_eq!(
            ask(&mut logs, RequestType::MarkRegion, 1, &clear),
            Err(Errno::EINVAL)
        );
        // Not announced: the same entry is a mark out of range, refused.
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"800 core 8 nosync").unwrap();
        assert_eq!(
            flush(&mut logs, &[FlushEntry::Clear(3)]),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn in_sync_ranges_are_answered_only_with_the_map() {
        let mut logs = Logs::default().with_in_sync_map(true);
        ask(&mut logs, RequestType::Ctr, 1, b"800 core 8 nosync").unwrap();
        set_sync(&mut logs, 3, false);
        logs.withdrawal_sent();
        assert_eq!(ranges(&mut logs, 0), Ok((100, vec![(0, 3), (4, 96)])));
        assert_eq!(ranges(&mut logs, 99), Ok((100, vec![(99, 1)])));
        // Past the end, or no u64: malformed.
        assert_eq!(ranges(&mut logs, 100), Err(Errno::EINVAL));
        assert_eq!(
            ask(&mut logs, RequestType::GetInSyncRanges, 1, &[0; 4]),
            Err(Errno::EINVAL)
        );
        // Without the map (not announced) it is refused, whatever it asks.
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"800 core 8 nosync").unwrap();
        assert_eq!(ranges(&mut logs, 0), Err(Errno::EINVAL));
    }

    #[test]
    fn regions_leaving_sync_are_withdrawn_with_the_map_only() {
        let mut logs = Logs::default().with_in_sync_map(true);
        ask(&mut logs, RequestType::Ctr, 1, b"800 core 8 nosync").unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        assert_eq!(logs.pending_withdrawal(), None);
        set_sync(&mut logs, 5, false);
        assert_eq!(
            logs.pending_withdrawal(),
            Some(Withdrawal {
                luid: 1,
                first: 5,
                count: 1
            })
        );
        // Nothing is applied until the kernel has it.
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Err(Errno::EAGAIN)
        );
        logs.withdrawal_sent();
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Ok(99u64.to_ne_bytes().to_vec())
        );
        // Out of sync already, or into sync: nothing to withdraw.
        set_sync(&mut logs, 5, false);
        set_sync(&mut logs, 5, true);
        set_sync(&mut logs, 6, true);
        assert_eq!(logs.pending_withdrawal(), None);
        // Without the map, nothing is ever withdrawn.
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"800 core 8 nosync").unwrap();
        set_sync(&mut logs, 5, false);
        assert_eq!(logs.pending_withdrawal(), None);
    }

    /// A disk log's RESUME after POSTSUSPEND reads the device again, where in-sync regions
    /// with a write outstanding are not clean: they leave sync, and the whole log is
    /// withdrawn. A RESUME that reads back the same regions in sync withdraws nothing.
    #[test]
    fn a_disk_log_reloaded_out_of_sync_is_withdrawn_whole() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let ctr = format!("8192 disk {} 1024", tmp.path().display());
        let mut logs = Logs::default().with_in_sync_map(true);
        ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        assert_eq!(logs.pending_withdrawal(), None, "a first load");
        for r in 0..8 {
            recovered(&mut logs, r);
        }
        let suspend_resume = |logs: &mut Logs| {
            for kind in [
                RequestType::Presuspend,
                RequestType::Postsuspend,
                RequestType::Resume,
            ] {
                ask(logs, kind, 1, b"").unwrap();
            }
        };
        suspend_resume(&mut logs);
        assert_eq!(logs.pending_withdrawal(), None, "the same regions in sync");
        ask(&mut logs, RequestType::MarkRegion, 1, &2u64.to_ne_bytes()).unwrap();
        suspend_resume(&mut logs);
        assert_eq!(
            logs.pending_withdrawal(),
            Some(Withdrawal {
                luid: 1,
                first: 0,
                count: u64::MAX
            })
        );
        logs.withdrawal_sent();
        assert_eq!(ranges(&mut logs, 0), Ok((8, vec![(0, 2), (3, 5)])));
    }

    #[test]
    fn ctr_parses_core_logs_and_refuses_bad_tables() {
        let mut logs = Logs::default();
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 1, b"16384 clustered-core 1024"),
            Ok(vec![])
        );
        assert_eq!(
            ask(&mut logs, RequestType::GetRegionSize, 1, b""),
            Ok(1024u64.to_ne_bytes().to_vec())
        );
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Ok(0u64.to_ne_bytes().to_vec())
        );
        // Repeated CTR with the NUL the reconnect sends: accepted.
        assert_eq!(
            ask(
                &mut logs,
                RequestType::Ctr,
                1,
                b"16384 clustered-core 1024\0"
            ),
            Ok(vec![])
        );
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 1, b"16384 clustered-core 2048"),
            Err(Errno::EINVAL)
        );
        for bad in [
            &b"x core 8"[..],
            b"16 core 0",
            b"16 core 3",
            b"16 core 8 wat",
            b"16 tape 8",
            b"16",
            b"\xff",
            b"16 disk /nonexistent/log/device 8",
        ] {
            assert_eq!(
                ask(&mut logs, RequestType::Ctr, 2, bad),
                Err(Errno::EINVAL),
                "{:?}",
                bad
            );
        }
        assert_eq!(logs.len(), 1);
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 3, b"16 core 8 nosync"),
            Ok(vec![])
        );
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 3, b""),
            Ok(2u64.to_ne_bytes().to_vec())
        );
        assert_eq!(
            ask(&mut logs, RequestType::StatusInfo, 3, b""),
            Ok(b"1 core".to_vec())
        );
    }

    #[test]
    fn instances_with_one_uuid_are_separate() {
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"8192 core 1024").unwrap();
        ask(&mut logs, RequestType::Ctr, 2, b"8192 core 1024 nosync").unwrap();
        assert_eq!(logs.len(), 2);
        ask(&mut logs, RequestType::Dtr, 1, b"").unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 2, b""),
            Ok(8u64.to_ne_bytes().to_vec())
        );
        let lines: Vec<String> = logs.summaries().map(|s| s.to_string()).collect();
        assert_eq!(
            lines,
            ["log uuid=UUID-1 luid=2 type=core regions=8 in_sync=8 dirty=0 suspended=false"]
        );
    }

    /// The luid finds a log only with its UUID: a request naming another UUID is for a log
    /// this server does not have.
    #[test]
    fn one_luid_with_two_uuids_is_two_logs() {
        let mut logs = Logs::default();
        let other = |kind| Header::request(b"UUID-2", 1, kind, 1, 0).unwrap();
        ask(&mut logs, RequestType::Ctr, 1, b"8192 core 1024").unwrap();
        assert_eq!(
            logs.handle(&other(RequestType::GetSyncCount), b"", &mut Vec::new())
                .map_err(|e| e.errno()),
            Err(Errno::ESRCH)
        );
        logs.handle(
            &other(RequestType::Ctr),
            b"8192 core 1024 nosync",
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(logs.len(), 2);
        let mut out = Vec::new();
        logs.handle(&other(RequestType::GetSyncCount), b"", &mut out)
            .unwrap();
        assert_eq!(out, 8u64.to_ne_bytes());
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Ok(0u64.to_ne_bytes().to_vec())
        );
        logs.handle(&other(RequestType::Dtr), b"", &mut Vec::new())
            .unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Ok(0u64.to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn unknown_logs_are_re_created_by_the_kernel() {
        let mut logs = Logs::default();
        // ESRCH makes the kernel send CTR and RESUME again (after a server restart).
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Err(Errno::ESRCH)
        );
        assert_eq!(
            ask(&mut logs, RequestType::Flush, 1, b""),
            Err(Errno::ESRCH)
        );
        // Nothing to destroy is no failure.
        assert_eq!(ask(&mut logs, RequestType::Dtr, 1, b""), Ok(vec![]));
    }

    #[test]
    fn unknown_and_malformed_requests_get_an_error() {
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"8192 core 1024").unwrap();
        let mut h = header(RequestType::Flush, 1);
        h.request_type = 99;
        assert_eq!(
            logs.handle(&h, b"", &mut Vec::new()).map_err(|e| e.errno()),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            ask(&mut logs, RequestType::MarkRegion, 1, &[0; 7]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            ask(&mut logs, RequestType::MarkRegion, 1, &8u64.to_ne_bytes()),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            ask(&mut logs, RequestType::IsClean, 1, b""),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn integrated_flush_applies_its_marks() {
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"8192 core 1024 nosync").unwrap();
        let mut marks = [0u8; 16];
        payload::encode_regions(&[1, 5], &mut marks).unwrap();
        ask(&mut logs, RequestType::Flush, 1, &marks).unwrap();
        let clean =
            |logs: &mut Logs, r: u64| ask(logs, RequestType::IsClean, 1, &r.to_ne_bytes()).unwrap();
        assert_eq!(clean(&mut logs, 1), 0i64.to_ne_bytes());
        assert_eq!(clean(&mut logs, 0), 1i64.to_ne_bytes());
        ask(&mut logs, RequestType::ClearRegion, 1, &marks[..8]).unwrap();
        assert_eq!(clean(&mut logs, 1), 1i64.to_ne_bytes());
    }

    #[test]
    fn no_resync_work_while_suspended() {
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"4096 core 1024").unwrap();
        let work = |logs: &mut Logs| {
            ResyncWork::decode(&ask(logs, RequestType::GetResyncWork, 1, b"").unwrap()).unwrap()
        };
        assert_eq!(
            work(&mut logs),
            ResyncWork {
                available: true,
                region: 0
            }
        );
        ask(&mut logs, RequestType::Presuspend, 1, b"").unwrap();
        assert!(!work(&mut logs).available);
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        assert_eq!(
            work(&mut logs),
            ResyncWork {
                available: true,
                region: 0
            }
        );
    }

    /// A 16 TiB mirror with 4 KiB regions: 2^32 regions (refused by the table's limit), and
    /// one 4 KiB region less, which fits the limit but not the memory a log may take. Both
    /// get an error reply; the server goes on serving other logs.
    #[test]
    fn huge_region_counts_get_an_error_not_an_abort() {
        let mut logs = Logs::default();
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 1, b"34359738368 core 8"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            ask(
                &mut logs,
                RequestType::Ctr,
                2,
                b"34359738360 clustered-core 8"
            ),
            Err(Errno::ENOMEM)
        );
        // A disk log of as many regions, on a (sparse) file large enough for its bitmap.
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(600 << 20).unwrap();
        let ctr = format!("34359738360 disk {} 8", tmp.path().display());
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 4, ctr.as_bytes()),
            Err(Errno::ENOMEM)
        );
        assert!(logs.is_empty());
        ask(&mut logs, RequestType::Ctr, 3, b"8192 core 1024").unwrap();
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 3, b""),
            Ok(0u64.to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn memory_limit_is_per_log_and_says_what_to_do() {
        // 8192 regions take 4 KiB of bitsets.
        let mut logs = Logs::with_memory_limit(4 << 10);
        ask(&mut logs, RequestType::Ctr, 1, b"65536 core 8").unwrap();
        ask(&mut logs, RequestType::Ctr, 2, b"65536 core 8").unwrap();
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 3, b"65544 core 8"),
            Err(Errno::ENOMEM)
        );
        assert_eq!(logs.len(), 2);
        let spec = table::parse(b"34359738360 core 8").unwrap();
        let msg = check_memory(&spec, DEFAULT_MAX_LOG_MEMORY)
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("refusing log: 4294967295 regions of 8 sectors need 2048 MiB of server memory, more than the 256 MiB"),
            "{msg}"
        );
        assert!(
            msg.contains("larger region size") && msg.contains("--max-log-memory"),
            "{msg}"
        );
        let spec = table::parse(b"34359738360 core 16").unwrap();
        assert!(check_memory(&spec, 1 << 30).is_ok());
    }

    /// Issue 12, section 2: a RESUME for a log that is running (no POSTSUSPEND since its last
    /// RESUME; the kernel re-creating its log after a reconnect) keeps the marks it holds
    /// instead of re-reading a device that does not have them yet, and so does a repeated CTR.
    #[test]
    fn second_resume_keeps_live_marks() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let ctr = format!("8192 disk {} 1024", tmp.path().display());
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        for r in 0..8u64 {
            recovered(&mut logs, r);
        }
        ask(&mut logs, RequestType::Flush, 1, b"").unwrap();
        ask(&mut logs, RequestType::MarkRegion, 1, &5u64.to_ne_bytes()).unwrap();
        // The reconnect: CTR (with its NUL) and RESUME again, then the retried FLUSH.
        let again = format!("{ctr}\0");
        ask(&mut logs, RequestType::Ctr, 1, again.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        ask(&mut logs, RequestType::Flush, 1, b"").unwrap();
        let dev = LogDevice::open(tmp.path().to_str().unwrap()).unwrap();
        assert_eq!(
            crate::disk::summarize(&dev, None).unwrap().to_string(),
            "magic=ok version=2 nr_regions=8 clean=7"
        );
        let mut bits = dev.buffer(1536).unwrap();
        dev.read_at(&mut bits, 0).unwrap();
        assert!(
            !crate::disk::test_bit(&bits.as_ref()[crate::disk::BITS_OFFSET..], 5),
            "region 5 is clean on the device"
        );
        assert_eq!(
            ask(&mut logs, RequestType::IsClean, 1, &5u64.to_ne_bytes()),
            Ok(0i64.to_ne_bytes().to_vec())
        );
        // A real suspend (POSTSUSPEND) writes the bitmap; the next RESUME reads it back.
        ask(&mut logs, RequestType::Presuspend, 1, b"").unwrap();
        ask(&mut logs, RequestType::Postsuspend, 1, b"").unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Ok(7u64.to_ne_bytes().to_vec())
        );
    }

    /// A table reloaded under writes: the old instance's late clears and FLUSH (sent after
    /// the new one resumed and marked) must not write its stale bitmap over the new marks.
    #[test]
    fn a_superseded_instance_never_writes_the_device() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        // No sync argument: a reload reads the device (nosync or sync would start anew).
        let ctr = format!("8192 disk {} 1024", tmp.path().display());
        let summary = || {
            let dev = LogDevice::open(tmp.path().to_str().unwrap()).unwrap();
            crate::disk::summarize(&dev, None).unwrap().to_string()
        };
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        for r in 0..8u64 {
            recovered(&mut logs, r);
        }
        // Region 0 written through the old table, region 1 through the new one.
        ask(&mut logs, RequestType::Flush, 1, &0u64.to_ne_bytes()).unwrap();
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=7");
        ask(&mut logs, RequestType::Ctr, 2, ctr.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Presuspend, 1, b"").unwrap();
        ask(&mut logs, RequestType::Postsuspend, 1, b"").unwrap();
        ask(&mut logs, RequestType::Resume, 2, b"").unwrap();
        ask(&mut logs, RequestType::Flush, 2, &1u64.to_ne_bytes()).unwrap();
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=6");
        // The old instance's writes completed while it suspended: its late clears.
        ask(&mut logs, RequestType::ClearRegion, 1, &0u64.to_ne_bytes()).unwrap();
        ask(&mut logs, RequestType::Flush, 1, b"").unwrap();
        ask(&mut logs, RequestType::Dtr, 1, b"").unwrap();
        assert_eq!(
            summary(),
            "magic=ok version=2 nr_regions=8 clean=6",
            "the superseded instance wrote its bitmap over the new instance's marks"
        );
        // The new instance goes on writing the device.
        ask(&mut logs, RequestType::ClearRegion, 2, &1u64.to_ne_bytes()).unwrap();
        ask(&mut logs, RequestType::Flush, 2, b"").unwrap();
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=7");
    }

    /// After a server restart, the old table's instance can be re-created (CTR and RESUME)
    /// between the new table's CTR and its RESUME: the instance that resumed last writes.
    #[test]
    fn the_instance_that_resumed_last_writes_the_device() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let ctr = format!("8192 disk {} 1024", tmp.path().display());
        let summary = || {
            let dev = LogDevice::open(tmp.path().to_str().unwrap()).unwrap();
            crate::disk::summarize(&dev, None).unwrap().to_string()
        };
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        for r in 0..8u64 {
            recovered(&mut logs, r);
        }
        ask(&mut logs, RequestType::Flush, 1, b"").unwrap();
        ask(&mut logs, RequestType::Ctr, 2, ctr.as_bytes()).unwrap();
        // The old instance re-created on a restarted server, then suspended for the swap.
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        ask(&mut logs, RequestType::Presuspend, 1, b"").unwrap();
        ask(&mut logs, RequestType::Postsuspend, 1, b"").unwrap();
        ask(&mut logs, RequestType::Resume, 2, b"").unwrap();
        ask(&mut logs, RequestType::Flush, 2, &1u64.to_ne_bytes()).unwrap();
        assert_eq!(
            summary(),
            "magic=ok version=2 nr_regions=8 clean=7",
            "the live table's mark never reached the device"
        );
    }

    #[test]
    fn disk_log_in_a_file_is_read_at_resume_and_written_at_flush() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let ctr = format!("8192 clustered-disk {} 1024", tmp.path().display());
        let mut logs = Logs::default();
        // A regular file has no device number: nothing for the kernel to claim.
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()),
            Ok(vec![])
        );
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        let summary = || {
            let dev = LogDevice::open(tmp.path().to_str().unwrap()).unwrap();
            crate::disk::summarize(&dev, None).unwrap().to_string()
        };
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=0");
        for r in 0..8u64 {
            let mut set = [0u8; 16];
            set[..8].copy_from_slice(&r.to_ne_bytes());
            set[8..].copy_from_slice(&1i64.to_ne_bytes());
            ask(&mut logs, RequestType::SetRegionSync, 1, &set).unwrap();
        }
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=0");
        // In sync is not clean on the device: the kernel's clears (sent once the legs the
        // recovery wrote are flushed) make the regions clean, as dm-log.c's clean bits.
        ask(&mut logs, RequestType::Flush, 1, b"").unwrap();
        assert_eq!(
            summary(),
            "magic=ok version=2 nr_regions=8 clean=0",
            "recovered regions written clean before their clears (and the leg flush)"
        );
        for r in 0..8u64 {
            ask(&mut logs, RequestType::ClearRegion, 1, &r.to_ne_bytes()).unwrap();
        }
        ask(&mut logs, RequestType::Flush, 1, b"").unwrap();
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=8");
        ask(&mut logs, RequestType::Flush, 1, &3u64.to_ne_bytes()).unwrap();
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=7");
        let info = ask(&mut logs, RequestType::StatusInfo, 1, b"").unwrap();
        let info = String::from_utf8(info).unwrap();
        assert!(
            info.starts_with("3 clustered-disk /") && info.ends_with(" A"),
            "{info}"
        );
        // A restarted server: the kernel sends CTR and RESUME again.
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Ok(7u64.to_ne_bytes().to_vec())
        );
        assert_eq!(
            ask(&mut logs, RequestType::InSync, 1, &3u64.to_ne_bytes()),
            Ok(0i64.to_ne_bytes().to_vec())
        );
    }

    /// A disk log re-created on a restarted server knows nothing of its regions until RESUME
    /// reads the device: a MARK or FLUSH acknowledged before would never reach the device
    /// (the write it guards then runs with its region clean there), and an IN_SYNC answered 0
    /// would send a write to one leg only with no mark, the region then read back in sync.
    /// Such requests are refused with EAGAIN (the kernel asks again) until RESUME.
    #[test]
    fn a_disk_log_answers_nothing_of_its_regions_before_resume() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(4096).unwrap();
        let ctr = format!("8192 disk {} 1024", tmp.path().display());
        let summary = || {
            let dev = LogDevice::open(tmp.path().to_str().unwrap()).unwrap();
            crate::disk::summarize(&dev, None).unwrap().to_string()
        };
        // A first server leaves every region in sync and clean on the device.
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()).unwrap();
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        for r in 0..8u64 {
            recovered(&mut logs, r);
            ask(&mut logs, RequestType::ClearRegion, 1, &r.to_ne_bytes()).unwrap();
        }
        ask(&mut logs, RequestType::Flush, 1, b"").unwrap();
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=8");
        // The server restarts; the kernel's CTR comes, its RESUME not yet.
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, ctr.as_bytes()).unwrap();
        let three = 3u64.to_ne_bytes();
        for (kind, data) in [
            (RequestType::MarkRegion, &three[..]),
            (RequestType::Flush, &three[..]),
            (RequestType::Flush, &[][..]),
            (RequestType::InSync, &three[..]),
            (RequestType::IsClean, &three[..]),
            (RequestType::ClearRegion, &three[..]),
            (RequestType::GetResyncWork, &[][..]),
        ] {
            assert_eq!(
                ask(&mut logs, kind, 1, data),
                Err(Errno::EAGAIN),
                "{kind:?} answered before the disk log was read at RESUME"
            );
        }
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=8");
        // Table loads and status still work.
        assert_eq!(
            ask(&mut logs, RequestType::GetRegionSize, 1, b""),
            Ok(1024u64.to_ne_bytes().to_vec())
        );
        ask(&mut logs, RequestType::Resume, 1, b"").unwrap();
        assert_eq!(
            ask(&mut logs, RequestType::InSync, 1, &three),
            Ok(1i64.to_ne_bytes().to_vec())
        );
        ask(&mut logs, RequestType::Flush, 1, &three).unwrap();
        assert_eq!(summary(), "magic=ok version=2 nr_regions=8 clean=7");
    }
}
