// SPDX-License-Identifier: GPL-2.0
//! The receive loop allocates nothing per request once warmed up: requests driven through
//! [`Server::receive_waiting`] over an in-memory link, with a global allocator that counts.
//! (Its own test binary: the allocator is the whole program's.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::path::PathBuf;

use dm_ulog_uapi::{
    encode_message, payload::encode_regions, payload::RegionSync, Header, Reply, RequestType,
    Withdrawal,
};
use dm_ulogd::link::{datagram, KernelLink, Loopback, Transmit, NLMSG_HDR};
use dm_ulogd::serve::{Config, Honest, LogService, Server};

/// Counts the allocations of each thread (the test harness runs tests on threads of their
/// own).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // A thread's TLS is gone while it exits; nothing is counted then.
    let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees are the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations this thread made in `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Judges each reply without keeping it (keeping would allocate): counts replies, errors and
/// withdrawals.
#[derive(Default)]
struct Tally {
    replies: Cell<u64>,
    errors: Cell<u64>,
    withdrawals: Cell<u64>,
}

impl Transmit for Tally {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        if Withdrawal::parse(&datagram[NLMSG_HDR..]).is_ok() {
            self.withdrawals.set(self.withdrawals.get() + 1);
            return Ok(());
        }
        self.replies.set(self.replies.get() + 1);
        match Reply::parse(&datagram[NLMSG_HDR..]) {
            Ok(Reply::Full { header, .. }) if header.error == 0 => {}
            _ => self.errors.set(self.errors.get() + 1),
        }
        Ok(())
    }
}

fn request(uuid: &[u8], luid: u64, kind: RequestType, data: &[u8]) -> Vec<u8> {
    let h = Header::request(uuid, luid, kind, 1, data.len()).unwrap();
    let mut msg = vec![0; 1024];
    let n = encode_message(&mut msg, &h, data).unwrap();
    datagram(&msg[..n])
}

/// Every request type a running mirror sends, for one log.
fn round(uuid: &[u8], luid: u64) -> Vec<Vec<u8>> {
    let mut marks = [0u8; 16];
    encode_regions(&[3, 7], &mut marks).unwrap();
    let region = 5u64.to_ne_bytes();
    let from = 0u64.to_ne_bytes();
    let [sync, unsync] = [true, false].map(|in_sync| RegionSync { region: 2, in_sync }.encode());
    use RequestType::*;
    [
        (MarkRegion, &marks[..8]),
        (Flush, &marks[8..]),
        (IsClean, &region[..]),
        (InSync, &region[..]),
        (ClearRegion, &marks[..]),
        (Flush, &[][..]),
        (GetResyncWork, &[][..]),
        (SetRegionSync, &sync[..]),
        (GetInSyncRanges, &from[..]),
        // Out of sync again: a withdrawal, then the reply.
        (SetRegionSync, &unsync[..]),
        (GetSyncCount, &[][..]),
        (GetRegionSize, &[][..]),
        (StatusInfo, &[][..]),
        (StatusTable, &[][..]),
        (IsRemoteRecovering, &region[..]),
        (Presuspend, &[][..]),
        (Resume, &[][..]),
    ]
    .into_iter()
    .map(|(kind, data)| request(uuid, luid, kind, data))
    .collect()
}

/// A core and a disk log served with and without `--record`, with the in-sync map: after one
/// round of every request type, a thousand more rounds allocate nothing, withdrawals
/// included.
#[test]
fn requests_allocate_nothing_after_warm_up() {
    // Logging as dm-ulogd's default filter has it, into nothing.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(io::sink)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("disk-log");
    std::fs::File::create(&device)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    for record in [None, Some(dir.path().join("record"))] {
        let config = Config {
            record: record.clone(),
            ..Config::default()
        };
        let service = LogService::new(&config, Honest).unwrap();
        let link = KernelLink::new(Loopback::new(Tally::default()));
        let mut server = Server::with_link(link, service).unwrap();
        let logs: [(&[u8], u64, String); 2] = [
            (b"CORE-LOG", 1, "65536 core 8".into()),
            (
                b"DISK-LOG",
                2,
                format!("65536 disk {} 8", PathBuf::from(&device).display()),
            ),
        ];
        let mut requests = Vec::new();
        for (uuid, luid, ctr) in &logs {
            let endpoint = server.link().endpoint();
            endpoint.push(request(uuid, *luid, RequestType::Ctr, ctr.as_bytes()));
            endpoint.push(request(uuid, *luid, RequestType::Resume, b""));
            requests.extend(round(uuid, *luid));
        }
        let drain = |server: &mut Server<LogService<Honest>, Loopback<Tally>>| {
            while server.link().endpoint().queued() > 0 {
                assert!(server.receive_waiting().unwrap().is_continue());
            }
        };
        // Warm-up: the logs, and one round, which sizes every buffer.
        for r in &requests {
            server.link().endpoint().push(r.clone());
        }
        drain(&mut server);
        const ROUNDS: usize = 1000;
        for _ in 0..ROUNDS {
            for r in &requests {
                server.link().endpoint().push(r.clone());
            }
        }
        let allocations = allocations_in(|| drain(&mut server));
        let tally = &server.link().endpoint().out;
        assert_eq!(tally.errors.get(), 0, "every request answered with success");
        assert_eq!(
            tally.replies.get(),
            (4 + requests.len() * (ROUNDS + 1)) as u64
        );
        assert_eq!(
            server.handler().stats().of(RequestType::Flush).count(),
            (4 * (ROUNDS + 1)) as u64
        );
        assert_eq!(tally.withdrawals.get(), (2 * (ROUNDS + 1)) as u64);
        assert_eq!(
            allocations,
            0,
            "{} requests (record: {record:?})",
            requests.len() * ROUNDS
        );
    }
}

/// The ping-pong's echo, in the same loop, allocates nothing either.
#[test]
fn echoes_allocate_nothing_after_warm_up() {
    use dm_ulogd::bench::{ping_message, Echo};
    struct Count(Cell<u64>);
    impl Transmit for Count {
        fn transmit(&self, _: &[u8]) -> io::Result<()> {
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }
    let link = KernelLink::new(Loopback::new(Count(Cell::new(0))));
    let mut server = Server::with_link(link, Echo::new(None)).unwrap();
    let ping = |seq| datagram(&ping_message(seq));
    server.link().endpoint().push(ping(0));
    assert!(server.receive_waiting().unwrap().is_continue());
    for seq in 1..=1000 {
        server.link().endpoint().push(ping(seq));
    }
    let allocations = allocations_in(|| {
        while server.link().endpoint().queued() > 0 {
            assert!(server.receive_waiting().unwrap().is_continue());
        }
    });
    assert_eq!(server.handler().echoed(), 1001);
    assert_eq!(server.link().endpoint().out.0.get(), 1001);
    assert_eq!(allocations, 0);
}

/// The netlink socket's batched receive (`recvmmsg`) allocates nothing: datagrams unicast by
/// a second socket (where this host has netlink connector sockets and may unicast).
#[test]
fn netlink_receives_allocate_nothing() {
    use dm_ulogd::link::connector_socket_pair;
    use dm_ulogd::link::{Endpoint, NetlinkSocket, RECEIVE_BATCH};
    use netlink_sys::SocketAddr;
    let Some((a, b)) = connector_socket_pair() else {
        eprintln!("no NETLINK_CONNECTOR sockets here: not checked");
        return;
    };
    let mut to = SocketAddr::new(0, 0);
    a.get_address(&mut to).unwrap();
    let mut endpoint = NetlinkSocket::new(a);
    const SLOT: usize = 4096;
    let mut rx = vec![0u8; RECEIVE_BATCH * SLOT];
    let mut got = [(0, 0); RECEIVE_BATCH];
    for round in 0..3 {
        for _ in 0..8 {
            if let Err(e) = b.send_to(&[1u8; 200], &to, 0) {
                eprintln!("cannot unicast to a netlink socket ({e}): not checked");
                return;
            }
        }
        let allocations = allocations_in(|| {
            assert_eq!(endpoint.receive_many(&mut rx, SLOT, &mut got).unwrap(), 8);
        });
        assert!(got[..8].iter().all(|&(n, _)| n == 200));
        assert_eq!(allocations, 0, "round {round}");
    }
}
