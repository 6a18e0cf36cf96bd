// SPDX-License-Identifier: GPL-2.0
//! The CTR string a table sends: `"<target sectors> <log type> <type args...>"`.
//!
//! Log types and arguments are those of dm-log.c's `core` and `disk` logs, plus the
//! `clustered-` names cmirrord serves and its `block_on_error` flag:
//!
//! - `core` | `clustered-core` `<region_size> [sync|nosync] [block_on_error]`
//! - `disk` | `clustered-disk` `<dev> <region_size> [sync|nosync] [block_on_error]`

use dm_ulog_uapi::ctr::{Ctr, CtrError};

/// How a log starts out (dm-log.c's `enum sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// No argument: a disk log trusts its bitmap; a new log resyncs everything.
    Default,
    /// `sync`: every region is resynchronised at every resume.
    Force,
    /// `nosync`: the legs are known to be identical; every region starts in sync.
    NoSync,
}

/// Where the log keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In the server's memory only.
    Core,
    /// In a bitmap on a device, in dm-log.c's disk format; the table's `<dev>` argument.
    Disk(String),
}

/// A parsed CTR string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    /// The log type as the table names it.
    pub type_name: String,
    /// Core or disk.
    pub storage: Storage,
    /// Sectors per region.
    pub region_size: u64,
    /// How regions start out.
    pub sync: SyncMode,
    /// Number of regions: the target length divided by the region size, rounded up.
    pub regions: u64,
    /// Everything after the target length, to recognise a repeated CTR.
    pub args: String,
}

/// Why a CTR string names no log this server can keep; the text is for the admin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The string is not what the kernel sends.
    #[error("{0}")]
    Ctr(#[from] CtrError),
    /// A log type other than dm-log.c's and cmirrord's.
    #[error("unknown log type {0:?}: expected core, disk, clustered-core or clustered-disk")]
    UnknownType(String),
    /// A disk log without its device.
    #[error("{0}: no log device in the table")]
    NoDevice(String),
    /// The region size is missing or not a number.
    #[error("{0}: missing or invalid region size")]
    NoRegionSize(String),
    /// A region size the kernel cannot use.
    #[error("{type_name}: region size {size} must be a power of two below 2^32 sectors")]
    BadRegionSize {
        /// The log type.
        type_name: String,
        /// The size given.
        size: u64,
    },
    /// An argument after the region size that no log type takes.
    #[error("{type_name}: unknown argument {arg:?}")]
    UnknownArgument {
        /// The log type.
        type_name: String,
        /// The argument.
        arg: String,
    },
    /// `sync` and `nosync` together.
    #[error("{0}: both sync and nosync given")]
    SyncAndNosync(String),
    /// More regions than the kernel's region numbers reach.
    #[error(
        "{type_name}: {regions} regions exceed the limit of {} (use a larger region size)",
        u32::MAX
    )]
    TooManyRegions {
        /// The log type.
        type_name: String,
        /// The regions the table needs.
        regions: u64,
    },
}

/// Parses a CTR payload (with or without its NUL).
pub fn parse(payload: &[u8]) -> Result<LogSpec, TableError> {
    let ctr = Ctr::parse(payload)?;
    let words: Vec<&str> = ctr.words().collect();
    let (type_name, rest) = words.split_first().ok_or(CtrError::NoLogType)?;
    let type_name = type_name.to_string();
    let args = words.join(" ");
    let (storage, params) = match type_name.as_str() {
        "core" | "clustered-core" => (Storage::Core, rest),
        "disk" | "clustered-disk" => {
            let (dev, params) = rest
                .split_first()
                .ok_or_else(|| TableError::NoDevice(type_name.clone()))?;
            (Storage::Disk((*dev).to_string()), params)
        }
        _ => return Err(TableError::UnknownType(type_name)),
    };
    let region_size: u64 = params
        .first()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| TableError::NoRegionSize(type_name.clone()))?;
    if region_size == 0 || !region_size.is_power_of_two() || region_size > u64::from(u32::MAX) {
        return Err(TableError::BadRegionSize {
            type_name,
            size: region_size,
        });
    }
    let mut sync = SyncMode::Default;
    for p in &params[1..] {
        let mode = match *p {
            "sync" => SyncMode::Force,
            "nosync" => SyncMode::NoSync,
            "block_on_error" => continue,
            other => {
                return Err(TableError::UnknownArgument {
                    type_name,
                    arg: other.to_string(),
                })
            }
        };
        if sync != SyncMode::Default && sync != mode {
            return Err(TableError::SyncAndNosync(type_name));
        }
        sync = mode;
    }
    let regions = ctr.target_sectors.div_ceil(region_size);
    if regions > u64::from(u32::MAX) {
        return Err(TableError::TooManyRegions { type_name, regions });
    }
    Ok(LogSpec {
        type_name,
        storage,
        region_size,
        sync,
        regions,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_disk_logs() {
        let s = parse(b"16384 clustered-core 1024").unwrap();
        assert_eq!(s.storage, Storage::Core);
        assert_eq!(
            (s.region_size, s.regions, s.sync),
            (1024, 16, SyncMode::Default)
        );
        assert_eq!(s.args, "clustered-core 1024");
        let s = parse(b"16385 disk /dev/ram2 1024 nosync block_on_error").unwrap();
        assert_eq!(s.storage, Storage::Disk("/dev/ram2".into()));
        assert_eq!(
            (s.region_size, s.regions, s.sync),
            (1024, 17, SyncMode::NoSync)
        );
        assert_eq!(s.args, "disk /dev/ram2 1024 nosync block_on_error");
        let s = parse(b"8 clustered-disk 1:2 8 sync\0").unwrap();
        assert_eq!(s.storage, Storage::Disk("1:2".into()));
        assert_eq!(s.sync, SyncMode::Force);
    }

    #[test]
    fn bad_tables_are_refused_with_a_reason() {
        for (bad, why) in [
            ("x core 8", "target length"),
            ("16", "no log type"),
            ("16 tape 8", "unknown log type"),
            ("16 core", "region size"),
            ("16 core 0", "power of two"),
            ("16 core 3", "power of two"),
            ("16 core 8 wat", "unknown argument"),
            ("16 core 8 sync nosync", "both"),
            ("16 disk", "no log device"),
            ("16 disk /dev/ram2", "region size"),
            ("18446744073709551615 core 2", "exceed"),
        ] {
            let err = parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
