//! The logs this server keeps, keyed by (uuid, luid), and the answer to every request.
//!
//! A live and an inactive table may share one UUID (a table reload), so the kernel's `luid`
//! tells their log instances apart.

use std::collections::HashMap;
use std::fmt;

use dm_ulog_uapi::{
    payload::{self, RegionSync, RemoteRecovering, ResyncWork},
    Header, RequestType, UUID_FIELD_SIZE,
};
use tracing::{info, warn};

use crate::device::LogDevice;
use crate::disk::DiskLog;
use crate::regions::{OutOfRange, Regions};
use crate::table::{self, LogSpec, Storage, SyncMode};

/// An errno for the reply header (sent negated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// No such process: the kernel answers it by re-creating the log (CTR, RESUME) and retrying.
pub const ESRCH: Errno = Errno(3);
/// I/O error: the log device failed.
pub const EIO: Errno = Errno(5);
/// Invalid argument: malformed requests, bad tables, regions out of range.
pub const EINVAL: Errno = Errno(22);

impl From<OutOfRange> for Errno {
    fn from(_: OutOfRange) -> Self {
        EINVAL
    }
}

/// A log's identity: the UUID field (NUL-padded) and the kernel's instance id.
type Key = ([u8; UUID_FIELD_SIZE], u64);

fn key(header: &Header) -> Key {
    // Normalised: bytes after the UUID's NUL do not make another log.
    let mut uuid = [0u8; UUID_FIELD_SIZE];
    let bytes = header.uuid_bytes();
    uuid[..bytes.len()].copy_from_slice(bytes);
    (uuid, header.luid)
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
}

impl Log {
    /// A log as dm-log.c's constructor leaves it: every region clean, in sync only for
    /// `nosync`. A disk log's bitmap is read at RESUME.
    fn create(spec: LogSpec) -> Result<Self, String> {
        let disk = match &spec.storage {
            Storage::Core => None,
            Storage::Disk(dev) => {
                let device = LogDevice::open(dev).map_err(|e| format!("{e:#}"))?;
                Some(DiskLog::new(device, spec.regions, spec.sync).map_err(|e| format!("{e:#}"))?)
            }
        };
        Ok(Self {
            regions: Regions::new(spec.regions, spec.sync == SyncMode::NoSync),
            disk,
            suspended: false,
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
        if let Some(disk) = &mut self.disk {
            disk.set_clean(region, self.regions.is_clean(region).unwrap_or(false));
        }
    }

    fn flush(&mut self, uuid: &str) -> Result<(), Errno> {
        let Some(disk) = &mut self.disk else {
            // A core log has nothing to make durable.
            return Ok(());
        };
        disk.flush().map(|_| ()).map_err(|e| {
            warn!(
                %uuid,
                "log device {}: cannot write the log: {e}; the mirror will see the log fail \
                 (check or replace the device)",
                disk.device().path().display()
            );
            EIO
        })
    }

    fn resume(&mut self, uuid: &str) -> Result<(), Errno> {
        self.suspended = false;
        let Some(disk) = &mut self.disk else {
            self.regions.resume();
            return Ok(());
        };
        let resumed = disk.resume();
        self.regions = resumed.regions;
        info!(
            %uuid,
            in_sync = self.regions.sync_count(),
            regions = self.regions.count(),
            "log read from {}",
            disk.device().path().display()
        );
        resumed.write.map_err(|e| {
            warn!(
                %uuid,
                "log device {}: cannot write the log header: {e} (check or replace the device)",
                disk.device().path().display()
            );
            EIO
        })
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
    uuid: &'a [u8],
    luid: u64,
    log: &'a Log,
}

impl LogSummary<'_> {
    /// The log's UUID, for messages.
    pub fn uuid_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.uuid)
    }
}

impl fmt::Display for LogSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log uuid={} luid={} type={} regions={} in_sync={} dirty={} suspended={}",
            String::from_utf8_lossy(self.uuid),
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

/// Every log this server keeps.
#[derive(Default)]
pub struct Logs {
    logs: HashMap<Key, Log>,
}

impl Logs {
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
        self.logs.iter().map(|((uuid, luid), log)| LogSummary {
            uuid: uuid.split(|&b| b == 0).next().unwrap_or(&[]),
            luid: *luid,
            log,
        })
    }

    /// Answers one request: the reply payload goes to `out` (cleared first), or an errno.
    pub fn handle(&mut self, header: &Header, data: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.clear();
        let kind = header.kind().map_err(|e| {
            warn!(request_type = header.request_type, "refusing request: {e}");
            EINVAL
        })?;
        let key = key(header);
        let uuid = String::from_utf8_lossy(header.uuid_bytes());
        if kind == RequestType::Ctr {
            return self.create(key, &uuid, data, out);
        }
        let Some(log) = self.logs.get_mut(&key) else {
            if kind == RequestType::Dtr {
                info!(%uuid, luid = header.luid, "DTR for a log this server does not have");
                return Ok(());
            }
            // After a server restart: ESRCH makes the kernel send CTR and RESUME again.
            info!(
                %uuid,
                luid = header.luid,
                request = kind.name(),
                "request for a log this server does not have: asking the kernel to re-create it"
            );
            return Err(ESRCH);
        };
        let bad = |e: dm_ulog_uapi::WireError| {
            warn!(%uuid, "malformed request: {e}");
            EINVAL
        };
        match kind {
            RequestType::Ctr => unreachable!("handled above"),
            RequestType::Dtr => {
                self.logs.remove(&key);
                info!(%uuid, luid = header.luid, "log destroyed");
            }
            RequestType::Presuspend => log.suspended = true,
            // dm-log.c's disk log writes its bitmap when the mirror has suspended.
            RequestType::Postsuspend => log.flush(&uuid)?,
            RequestType::Resume => log.resume(&uuid)?,
            RequestType::GetRegionSize => {
                out.extend_from_slice(&log.spec.region_size.to_ne_bytes())
            }
            RequestType::IsClean => {
                let r = payload::decode_u64(kind, data).map_err(bad)?;
                out.extend_from_slice(&i64::from(log.regions.is_clean(r)?).to_ne_bytes());
            }
            RequestType::InSync => {
                let r = payload::decode_u64(kind, data).map_err(bad)?;
                out.extend_from_slice(&i64::from(log.regions.in_sync(r)?).to_ne_bytes());
            }
            RequestType::MarkRegion | RequestType::Flush => {
                // v3 integrated flush: the marks travel inside FLUSH and are applied first.
                for r in payload::decode_regions(kind, data).map_err(bad)? {
                    log.regions.mark(r)?;
                    log.note(r);
                }
                if kind == RequestType::Flush {
                    log.flush(&uuid)?;
                }
            }
            RequestType::ClearRegion => {
                for r in payload::decode_regions(kind, data).map_err(bad)? {
                    log.regions.clear(r)?;
                    log.note(r);
                }
            }
            RequestType::GetResyncWork => {
                let work = if log.suspended {
                    None
                } else {
                    log.regions.resync_work()
                };
                let reply = ResyncWork {
                    available: work.is_some(),
                    region: work.unwrap_or(0),
                };
                out.extend_from_slice(&reply.encode());
            }
            RequestType::SetRegionSync => {
                let s = RegionSync::decode(data).map_err(bad)?;
                log.regions.set_sync(s.region, s.in_sync)?;
                log.note(s.region);
            }
            RequestType::GetSyncCount => {
                out.extend_from_slice(&log.regions.sync_count().to_ne_bytes())
            }
            RequestType::StatusInfo => log.status_info(out),
            RequestType::StatusTable => out.extend_from_slice(log.spec.args.as_bytes()),
            RequestType::IsRemoteRecovering => {
                payload::decode_u64(kind, data).map_err(bad)?;
                let reply = RemoteRecovering {
                    is_recovering: false,
                    in_sync_hint: log.regions.in_sync_hint(),
                };
                out.extend_from_slice(&reply.encode());
            }
        }
        Ok(())
    }

    fn create(
        &mut self,
        key: Key,
        uuid: &str,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        // The reconnecting kernel sends the string with its NUL; the first CTR without.
        let text = std::str::from_utf8(data)
            .map_err(|_| {
                warn!(%uuid, "refusing log: CTR string is not UTF-8");
                EINVAL
            })?
            .trim_end_matches('\0');
        let spec = table::parse(text).map_err(|msg| {
            warn!(%uuid, "refusing log: {msg}");
            EINVAL
        })?;
        if let Some(existing) = self.logs.get(&key) {
            // A repeated CTR (a resend after a lost reply) is harmless; a different one is not.
            if existing.spec.args != spec.args {
                warn!(%uuid, luid = key.1, "CTR for an existing log with other arguments");
                return Err(EINVAL);
            }
            existing.ctr_reply(out);
            return Ok(());
        }
        let log = Log::create(spec).map_err(|msg| {
            warn!(%uuid, "refusing log: {msg}");
            EINVAL
        })?;
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
            Err(EINVAL)
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
                Err(EINVAL),
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

    #[test]
    fn unknown_logs_are_re_created_by_the_kernel() {
        let mut logs = Logs::default();
        // ESRCH makes the kernel send CTR and RESUME again (after a server restart).
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Err(ESRCH)
        );
        assert_eq!(ask(&mut logs, RequestType::Flush, 1, b""), Err(ESRCH));
        // Nothing to destroy is no failure.
        assert_eq!(ask(&mut logs, RequestType::Dtr, 1, b""), Ok(vec![]));
    }

    #[test]
    fn unknown_and_malformed_requests_get_an_error() {
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"8192 core 1024").unwrap();
        let mut h = header(RequestType::Flush, 1);
        h.request_type = 99;
        assert_eq!(logs.handle(&h, b"", &mut Vec::new()), Err(EINVAL));
        assert_eq!(
            ask(&mut logs, RequestType::MarkRegion, 1, &[0; 7]),
            Err(EINVAL)
        );
        assert_eq!(
            ask(&mut logs, RequestType::MarkRegion, 1, &8u64.to_ne_bytes()),
            Err(EINVAL)
        );
        assert_eq!(ask(&mut logs, RequestType::IsClean, 1, b""), Err(EINVAL));
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
}
