// SPDX-License-Identifier: GPL-2.0
//! A log the host has no memory for is refused with ENOMEM, and the server goes on: its
//! region state is reserved fallibly. (Its own test binary: it lowers the process's address
//! space limit, which every thread shares.)

use dm_ulog_uapi::{Header, RequestType};
use dm_ulogd::logs::Logs;
use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

fn ctr(logs: &mut Logs, luid: u64, args: &[u8]) -> Result<(), Errno> {
    let h = Header::request(b"OOM-LOG", luid, RequestType::Ctr, 1, args.len()).unwrap();
    logs.handle(&h, args, &mut Vec::new())
        .map_err(|e| e.errno())
}

/// The address space in use now, from /proc/self/status.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kib << 10
}

#[test]
fn unallocatable_log_is_refused_and_others_are_served() {
    // No limit of the server's own: only the host (here, the address space limit) says no.
    let mut logs = Logs::with_memory_limit(u64::MAX);
    let (_, hard) = getrlimit(Resource::RLIMIT_AS).unwrap();
    // Room for 256 MiB more: not for the 1.5 GiB of 2^32 - 1 regions.
    setrlimit(Resource::RLIMIT_AS, vm_size() + (256 << 20), hard).unwrap();
    // A mirror just under 16 TiB with 4 KiB regions.
    assert_eq!(ctr(&mut logs, 1, b"34359738360 core 8"), Err(Errno::ENOMEM));
    assert!(logs.is_empty());
    assert_eq!(ctr(&mut logs, 2, b"8192 core 1024"), Ok(()));
    assert_eq!(logs.len(), 1);
}
