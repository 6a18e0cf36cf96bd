//! The logs this server keeps, keyed by (uuid, luid), and the answer to every request.
//!
//! A live and an inactive table may share one UUID (a table reload), so the kernel's `luid`
//! tells their log instances apart.

use std::collections::HashMap;

use dm_ulog_uapi::{
    payload::{self, RegionSync, RemoteRecovering, ResyncWork},
    Header, RequestType,
};
use tracing::{info, warn};

use crate::regions::{OutOfRange, Regions};

/// An errno for the reply header (sent negated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// Invalid argument: malformed requests, unknown logs, regions out of range.
pub const EINVAL: Errno = Errno(22);

impl From<OutOfRange> for Errno {
    fn from(_: OutOfRange) -> Self {
        EINVAL
    }
}

/// The kind of log a table asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// In memory: after a server restart every region is out of sync.
    Core,
}

/// One log instance.
#[derive(Debug)]
struct Log {
    kind: Kind,
    /// The type name as the table gave it (`core` or `clustered-core`).
    type_name: String,
    /// The CTR arguments after the target length, to recognise a repeated CTR.
    args: String,
    region_size: u64,
    regions: Regions,
    /// Between PRESUSPEND and RESUME no resync work is handed out.
    suspended: bool,
}

/// Why a CTR string was refused; the message goes to the server's log for the admin.
fn parse_ctr(ctr: &str) -> Result<(Log, String), String> {
    let mut words = ctr.split_ascii_whitespace();
    let sectors: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("CTR string {ctr:?} does not start with the target length"))?;
    let type_name = words.next().ok_or("no log type in CTR string")?.to_string();
    let rest: Vec<&str> = words.collect();
    let args = std::iter::once(type_name.as_str())
        .chain(rest.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let (kind, params) = match type_name.as_str() {
        "core" | "clustered-core" => (Kind::Core, &rest[..]),
        "disk" | "clustered-disk" => {
            return Err(format!(
                "log type {type_name} is not supported by this server yet; use clustered-core"
            ))
        }
        other => {
            return Err(format!(
                "unknown log type {other:?}: expected clustered-core or core"
            ))
        }
    };
    let region_size: u64 = params
        .first()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("{type_name}: missing or invalid region size in {ctr:?}"))?;
    if region_size == 0 || !region_size.is_power_of_two() || region_size > u64::from(u32::MAX) {
        return Err(format!(
            "{type_name}: region size {region_size} must be a power of two below 2^32 sectors"
        ));
    }
    let mut in_sync = false;
    for p in &params[1..] {
        match *p {
            "sync" => in_sync = false,
            "nosync" => in_sync = true,
            "block_on_error" => {}
            other => return Err(format!("{type_name}: unknown argument {other:?}")),
        }
    }
    let count = sectors.div_ceil(region_size);
    let log = Log {
        kind,
        type_name,
        args: args.clone(),
        region_size,
        regions: Regions::new(count, in_sync),
        suspended: false,
    };
    Ok((log, args))
}

/// Every log this server keeps.
#[derive(Default)]
pub struct Logs {
    logs: HashMap<(Vec<u8>, u64), Log>,
}

impl Logs {
    /// How many log instances exist.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Answers one request: the reply payload, or an errno.
    pub fn handle(&mut self, header: &Header, data: &[u8]) -> Result<Vec<u8>, Errno> {
        let kind = header.kind().map_err(|e| {
            warn!(request_type = header.request_type, "refusing request: {e}");
            EINVAL
        })?;
        let key = (header.uuid_bytes().to_vec(), header.luid);
        let uuid = String::from_utf8_lossy(&key.0).into_owned();
        if kind == RequestType::Ctr {
            return self.create(key, &uuid, data);
        }
        let Some(log) = self.logs.get_mut(&key) else {
            warn!(%uuid, luid = header.luid, request = kind.name(), "request for a log this server does not have");
            return Err(EINVAL);
        };
        let bad = |e: dm_ulog_uapi::WireError| {
            warn!(%uuid, "malformed request: {e}");
            EINVAL
        };
        let none = Ok(Vec::new());
        match kind {
            RequestType::Ctr => unreachable!("handled above"),
            RequestType::Dtr => {
                self.logs.remove(&key);
                info!(%uuid, luid = header.luid, "log destroyed");
                none
            }
            RequestType::Presuspend => {
                log.suspended = true;
                none
            }
            RequestType::Postsuspend => none,
            RequestType::Resume => {
                log.suspended = false;
                log.regions.resume();
                none
            }
            RequestType::GetRegionSize => Ok(log.region_size.to_ne_bytes().to_vec()),
            RequestType::IsClean => {
                let r = payload::decode_u64(kind, data).map_err(bad)?;
                Ok(i64::from(log.regions.is_clean(r)?).to_ne_bytes().to_vec())
            }
            RequestType::InSync => {
                let r = payload::decode_u64(kind, data).map_err(bad)?;
                Ok(i64::from(log.regions.in_sync(r)?).to_ne_bytes().to_vec())
            }
            RequestType::MarkRegion | RequestType::Flush => {
                // v3 integrated flush: the marks travel inside FLUSH and are applied first.
                for r in payload::decode_regions(kind, data).map_err(bad)? {
                    log.regions.mark(r)?;
                }
                // A core log has nothing to make durable.
                none
            }
            RequestType::ClearRegion => {
                for r in payload::decode_regions(kind, data).map_err(bad)? {
                    log.regions.clear(r)?;
                }
                none
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
                Ok(reply.encode().to_vec())
            }
            RequestType::SetRegionSync => {
                let s = RegionSync::decode(data).map_err(bad)?;
                log.regions.set_sync(s.region, s.in_sync)?;
                none
            }
            RequestType::GetSyncCount => Ok(log.regions.sync_count().to_ne_bytes().to_vec()),
            RequestType::StatusInfo => Ok(format!("1 {}", log.type_name).into_bytes()),
            RequestType::StatusTable => Ok(log.args.clone().into_bytes()),
            RequestType::IsRemoteRecovering => {
                payload::decode_u64(kind, data).map_err(bad)?;
                let hint = if log.kind == Kind::Core {
                    log.regions.in_sync_hint()
                } else {
                    0
                };
                Ok(RemoteRecovering {
                    is_recovering: false,
                    in_sync_hint: hint,
                }
                .encode()
                .to_vec())
            }
        }
    }

    fn create(&mut self, key: (Vec<u8>, u64), uuid: &str, data: &[u8]) -> Result<Vec<u8>, Errno> {
        // The reconnecting kernel sends the string with its NUL; the first CTR without.
        let text = std::str::from_utf8(data)
            .map_err(|_| EINVAL)?
            .trim_end_matches('\0');
        let (log, args) = parse_ctr(text).map_err(|msg| {
            warn!(%uuid, "refusing log: {msg}");
            EINVAL
        })?;
        if let Some(existing) = self.logs.get(&key) {
            // A repeated CTR (a resend after a lost reply) is harmless; a different one is not.
            return if existing.args == args {
                Ok(Vec::new())
            } else {
                warn!(%uuid, luid = key.1, "CTR for an existing log with other arguments");
                Err(EINVAL)
            };
        }
        info!(%uuid, luid = key.1, regions = log.regions.count(), %args, "log created");
        self.logs.insert(key, log);
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: RequestType, luid: u64) -> Header {
        Header::request(b"UUID-1", luid, kind, 1, 0).unwrap()
    }

    fn ask(logs: &mut Logs, kind: RequestType, luid: u64, data: &[u8]) -> Result<Vec<u8>, Errno> {
        logs.handle(&header(kind, luid), data)
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
        ] {
            assert_eq!(
                ask(&mut logs, RequestType::Ctr, 2, bad),
                Err(EINVAL),
                "{:?}",
                bad
            );
        }
        assert_eq!(
            ask(&mut logs, RequestType::Ctr, 3, b"16 core 8 nosync"),
            Ok(vec![])
        );
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 3, b""),
            Ok(2u64.to_ne_bytes().to_vec())
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
            ask(&mut logs, RequestType::GetSyncCount, 1, b""),
            Err(EINVAL)
        );
        assert_eq!(
            ask(&mut logs, RequestType::GetSyncCount, 2, b""),
            Ok(8u64.to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn unknown_and_malformed_requests_get_an_error() {
        let mut logs = Logs::default();
        ask(&mut logs, RequestType::Ctr, 1, b"8192 core 1024").unwrap();
        let mut h = header(RequestType::Flush, 1);
        h.request_type = 99;
        assert_eq!(logs.handle(&h, b""), Err(EINVAL));
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
}
