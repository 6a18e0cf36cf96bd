// SPDX-License-Identifier: GPL-2.0
//! The server's end of the connector: a netlink socket in group `CN_IDX_DM` (or, for tests,
//! a fake kernel's socket: [`seqpacket`]).

pub mod seqpacket;

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dm_ulog_uapi::{
    encode_message, Announce, CnMsg, Header, Withdrawal, ANNOUNCE_VERSION, CN_IDX_DM, CN_MSG_SIZE,
};
use netlink_sys::{protocols::NETLINK_CONNECTOR, Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{
    getsockopt, recvmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders, NetlinkAddr,
};

use crate::cli::Fatal;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDR: usize = 16;
/// `NLMSG_DONE`: the type the connector uses for its messages.
const NLMSG_DONE: u16 = 3;
/// Buffers: one connector message is at most 16 KiB plus headers; a datagram may hold several.
const BUF_SIZE: usize = 64 * 1024;
/// Datagrams one receive takes at most (`recvmmsg`), each in a buffer of its own.
pub const RECEIVE_BATCH: usize = 16;
/// The socket receive buffer asked for, in bytes: room for thousands of queued requests.
/// A datagram the socket drops because it is full costs its request the kernel's timeout
/// (15 s) before the resend.
pub const RECEIVE_BUFFER: usize = 8 << 20;

/// Where the receive loop's datagrams come from and its messages go: the kernel's netlink
/// socket ([`NetlinkSocket`]), or in a test an in-memory stand-in.
pub trait Endpoint: Transmit {
    /// Takes one waiting datagram into `buf` without blocking; returns its length and the
    /// netlink port of its sender (0: the kernel). [`io::ErrorKind::WouldBlock`] when none
    /// is waiting.
    fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, u32)>;

    /// Takes up to one waiting datagram per `slot` bytes of `bufs` and per entry of `got`,
    /// without blocking: each one's length and sender's port go to `got`, in order. Returns
    /// how many were taken, [`io::ErrorKind::WouldBlock`] if none was waiting. Fewer than
    /// there was room for means that none was left. By default one [`Endpoint::receive`]
    /// after the other.
    fn receive_many(
        &mut self,
        bufs: &mut [u8],
        slot: usize,
        got: &mut [(usize, u32)],
    ) -> io::Result<usize> {
        let mut n = 0;
        for (buf, got) in bufs.chunks_exact_mut(slot).zip(got) {
            match self.receive(buf) {
                Ok(datagram) => *got = datagram,
                // What was taken first is handed on; a lasting error comes back next time.
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
            n += 1;
        }
        Ok(n)
    }
}

/// The kernel's end: a netlink socket, which takes several waiting datagrams with one system
/// call (`recvmmsg`).
pub struct NetlinkSocket {
    socket: Socket,
    /// `recvmmsg`'s headers and sender addresses, allocated once.
    headers: MultiHeaders<NetlinkAddr>,
}

impl NetlinkSocket {
    /// Receives on `socket`, which is bound already.
    pub fn new(socket: Socket) -> Self {
        Self {
            socket,
            headers: MultiHeaders::preallocate(RECEIVE_BATCH, None),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }
}

impl Transmit for NetlinkSocket {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        self.socket.transmit(datagram)
    }
}

impl Endpoint for NetlinkSocket {
    fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        let (n, from) = self
            .socket
            .recv_from(&mut &mut buf[..], MsgFlags::MSG_DONTWAIT.bits())?;
        Ok((n, from.port_number()))
    }

    fn receive_many(
        &mut self,
        bufs: &mut [u8],
        slot: usize,
        got: &mut [(usize, u32)],
    ) -> io::Result<usize> {
        // No empty buffer goes to the kernel: it would take a datagram and keep nothing.
        let room = got.len().min(bufs.len() / slot).min(RECEIVE_BATCH);
        let mut slots = bufs.chunks_exact_mut(slot);
        let mut iovs: [[IoSliceMut<'_>; 1]; RECEIVE_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let received = recvmmsg(
            self.socket.as_raw_fd(),
            &mut self.headers,
            iovs[..room].iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut n = 0;
        for (datagram, got) in received.zip(got) {
            // A netlink datagram always has its sender's address; without one it would be
            // taken for no kernel's.
            let port = datagram.address.map_or(u32::MAX, |a| a.pid());
            *got = (datagram.bytes, port);
            n += 1;
        }
        Ok(n)
    }
}

impl AsFd for NetlinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// How a socket's receive buffer was set by [`enlarge_receive_buffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveBuffer {
    /// The size asked for.
    pub asked: usize,
    /// The size the kernel reports now (it doubles what is set, for its bookkeeping).
    pub got: usize,
    /// Whether `SO_RCVBUFFORCE` set it; otherwise `SO_RCVBUF` did, within
    /// `net.core.rmem_max`.
    pub forced: bool,
}

impl std::fmt::Display for ReceiveBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "netlink receive buffer: {} bytes", self.got)?;
        if self.forced {
            write!(f, " (SO_RCVBUFFORCE of {})", self.asked)
        } else {
            write!(
                f,
                " (SO_RCVBUF of {}, within net.core.rmem_max: SO_RCVBUFFORCE needs CAP_NET_ADMIN)",
                self.asked
            )
        }
    }
}

/// Asks for a receive buffer of `bytes`: with `SO_RCVBUFFORCE`, past `net.core.rmem_max`,
/// where the process has `CAP_NET_ADMIN`, else with `SO_RCVBUF`.
pub fn enlarge_receive_buffer(socket: &impl AsFd, bytes: usize) -> nix::Result<ReceiveBuffer> {
    let forced = match setsockopt(socket, sockopt::RcvBufForce, &bytes) {
        Ok(()) => true,
        Err(Errno::EPERM) => {
            setsockopt(socket, sockopt::RcvBuf, &bytes)?;
            false
        }
        Err(e) => return Err(e),
    };
    Ok(ReceiveBuffer {
        asked: bytes,
        got: getsockopt(socket, sockopt::RcvBuf)?,
        forced,
    })
}

/// The socket the kernel's requests arrive on and replies leave from (normally the netlink
/// socket; any [`Endpoint`] in tests).
pub struct KernelLink<E = NetlinkSocket> {
    sock: E,
    /// [`RECEIVE_BATCH`] buffers of `BUF_SIZE` bytes, for the datagrams of one receive.
    rx: Vec<u8>,
    /// Length and sender's port of each datagram of the last receive.
    got: [(usize, u32); RECEIVE_BATCH],
    /// The datagrams of the last receive not passed on yet.
    pending: std::ops::Range<usize>,
    /// The last receive took fewer than it had room for: nothing is waiting (until poll says
    /// otherwise).
    drained: bool,
    tx: Vec<u8>,
    /// This process's id, for the netlink header of every message sent: asked once.
    pid: u32,
}

impl KernelLink {
    /// Joins the device-mapper connector group, with a large receive buffer (logged). Needs
    /// `CAP_NET_ADMIN`.
    pub fn open() -> Result<Self> {
        let sock = connector_socket()?;
        match enlarge_receive_buffer(&sock, RECEIVE_BUFFER) {
            Ok(size) => tracing::info!("{size}"),
            Err(e) => tracing::warn!(
                "cannot enlarge the netlink receive buffer ({e}): under a burst of requests \
                 some may wait for the kernel's resend"
            ),
        }
        // Not a failure that goes away with a restart: an exit status that stops systemd's
        // retries.
        sock.add_membership(CN_IDX_DM).map_err(|e| {
            Fatal::permission(format!(
                "cannot join connector group 7 (device-mapper): {e}; this needs CAP_NET_ADMIN, \
                 run as root"
            ))
        })?;
        Ok(Self::new(NetlinkSocket::new(sock)))
    }
}

/// A bound `NETLINK_CONNECTOR` socket, in no group yet.
fn connector_socket() -> Result<Socket> {
    // Not a failure that goes away with a restart: an exit status that stops systemd's retries.
    let mut sock = Socket::new(NETLINK_CONNECTOR).map_err(|e| {
        Fatal::config(format!(
            "cannot open a NETLINK_CONNECTOR socket: {e} (is CONFIG_CONNECTOR enabled? \
             under systemd, RestrictAddressFamilies= must allow AF_NETLINK)"
        ))
    })?;
    sock.bind(&SocketAddr::new(0, 0))
        .context("cannot bind the netlink socket")?;
    Ok(sock)
}

/// Sends the kernel one withdrawal from a connector socket of its own, outside any server
/// (as a cluster peer's failure would make a server withdraw): for tests. It joins no group
/// and takes no lock, so it works beside a running server; the kernel has acted on the
/// withdrawal when this returns. The kernel ignores it without `CAP_SYS_ADMIN`.
pub fn send_withdrawal(withdrawal: &Withdrawal) -> Result<()> {
    let sock = connector_socket()?;
    let mut tx = Vec::new();
    Replier::new(&sock, &mut tx).withdraw(withdrawal)
}

impl<E: Endpoint> KernelLink<E> {
    /// A link over `sock`, which is set up already.
    pub fn new(sock: E) -> Self {
        Self {
            sock,
            rx: vec![0; RECEIVE_BATCH * BUF_SIZE],
            got: [(0, 0); RECEIVE_BATCH],
            pending: 0..0,
            drained: false,
            tx: vec![0; BUF_SIZE],
            pid: std::process::id(),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &E {
        &self.sock
    }

    /// A replier for messages that answer no datagram of [`KernelLink::receive`] (replies
    /// that waited for a clustered log's group).
    pub fn replier(&mut self) -> Replier<'_> {
        Replier::with_pid(&self.sock, &mut self.tx, self.pid)
    }

    /// Tells the kernel a server is here (see `uapi/announce.rs`), with the `FEATURE_*` bits
    /// of the extensions it implements (`features`); kernels without the extension drop the
    /// message.
    pub fn announce(&mut self, features: u32) -> Result<()> {
        let mut replier = Replier::with_pid(&self.sock, &mut self.tx, self.pid);
        let n = replier.encode_announce(features);
        replier
            .send(n)
            .context("announcing the server to the kernel")
    }

    /// Takes one datagram without blocking and calls `f` with each connector message in it
    /// (the bytes after its netlink header) and the time the datagram arrived. Datagrams
    /// that do not come from the kernel, and bytes that are no netlink message, are not
    /// passed on: the [`Receipt`] says why, for the caller to report.
    ///
    /// Datagrams are received several at a time ([`Endpoint::receive_many`]) and passed on
    /// one per call; a receive that found fewer than it had room for is followed by one
    /// [`Receipt::Empty`] without a system call, for the caller to wait (poll) again.
    pub fn receive(
        &mut self,
        mut f: impl FnMut(&[u8], &mut Replier<'_>, Instant),
    ) -> Result<Receipt> {
        if self.pending.is_empty() {
            if std::mem::take(&mut self.drained) {
                return Ok(Receipt::Empty);
            }
            match self
                .sock
                .receive_many(&mut self.rx, BUF_SIZE, &mut self.got)
            {
                Ok(n) => {
                    self.pending = 0..n;
                    self.drained = n < RECEIVE_BATCH;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Receipt::Empty),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Receipt::Handled),
                Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                    // The socket overflowed; the kernel resends what we missed after its
                    // timeout.
                    tracing::warn!(
                        "netlink receive buffer overflowed: requests were lost and will be resent"
                    );
                    return Ok(Receipt::Handled);
                }
                Err(e) => return Err(e).context("receiving from the kernel"),
            }
        }
        let Some(i) = self.pending.next() else {
            return Ok(Receipt::Empty);
        };
        let (n, port) = self.got[i];
        // Requests come from the kernel (port 0); a local process could otherwise unicast
        // forged ones (a DTR, say) to this socket.
        if port != 0 {
            return Ok(Receipt::Dropped(format!(
                "a datagram of {n} bytes from process port {port}: requests must come from \
                 the kernel"
            )));
        }
        let datagram = &self.rx[i * BUF_SIZE..][..n.min(BUF_SIZE)];
        let received = Instant::now();
        let mut replier = Replier::with_pid(&self.sock, &mut self.tx, self.pid);
        Ok(
            match for_each_message(datagram, |msg| f(msg, &mut replier, received)) {
                Ok(()) => Receipt::Handled,
                Err(e) => Receipt::Dropped(format!("(the rest of) a datagram of {n} bytes: {e}")),
            },
        )
    }
}

/// What one [`KernelLink::receive`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// Nothing was waiting.
    Empty,
    /// A datagram was read and its messages passed on (or a receive was interrupted).
    Handled,
    /// A datagram, or its rest, was not passed on; what it was and why, for a warning.
    Dropped(String),
}

/// Why (the rest of) a datagram is no netlink message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Nothing was received.
    #[error("empty datagram")]
    Empty,
    /// Fewer bytes than a netlink header are left.
    #[error("{0} bytes where a 16-byte netlink header should be")]
    ShortHeader(usize),
    /// A header's length is below its own size or past the datagram's end.
    #[error("malformed netlink message of length {0}")]
    BadLength(usize),
}

/// Calls `f` with the payload of every netlink message in a datagram. Anything that is no
/// whole netlink message (an empty or short datagram, a bad length, bytes left after the
/// last message) is an error, after `f` has seen the messages before it.
pub fn for_each_message(datagram: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), DatagramError> {
    if datagram.is_empty() {
        return Err(DatagramError::Empty);
    }
    let mut off = 0;
    while off < datagram.len() {
        let rest = datagram.len() - off;
        if rest < NLMSG_HDR {
            return Err(DatagramError::ShortHeader(rest));
        }
        let len = u32::from_ne_bytes(datagram[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDR || len > rest {
            return Err(DatagramError::BadLength(len));
        }
        f(&datagram[off + NLMSG_HDR..off + len]);
        off += len.next_multiple_of(4).min(rest);
    }
    Ok(())
}

impl<E: AsFd> AsFd for KernelLink<E> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Where finished netlink messages go: the kernel, or a test's capture.
pub trait Transmit {
    /// Sends one netlink message.
    fn transmit(&self, datagram: &[u8]) -> io::Result<()>;
}

/// Keeps every message instead of sending it: for tests that judge what would be sent.
#[derive(Default)]
pub struct Capture(pub std::cell::RefCell<Vec<Vec<u8>>>);

impl Transmit for Capture {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().push(datagram.to_vec());
        Ok(())
    }
}

impl Transmit for Socket {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        self.send_to(datagram, &SocketAddr::new(0, 0), 0).map(drop)
    }
}

/// An in-memory [`Endpoint`] for tests and measurements: datagrams queued with
/// [`Loopback::push`] are received in order, and what is sent goes to `out`.
#[derive(Default)]
pub struct Loopback<T = Capture> {
    queue: std::cell::RefCell<std::collections::VecDeque<(Vec<u8>, u32)>>,
    /// Where sent messages go.
    pub out: T,
}

impl<T> Loopback<T> {
    /// Nothing queued; messages sent go to `out`.
    pub fn new(out: T) -> Self {
        Self {
            queue: Default::default(),
            out,
        }
    }

    /// Queues a datagram from the kernel.
    pub fn push(&self, datagram: Vec<u8>) {
        self.push_from(0, datagram);
    }

    /// Queues a datagram from netlink port `port`.
    pub fn push_from(&self, port: u32, datagram: Vec<u8>) {
        self.queue.borrow_mut().push_back((datagram, port));
    }

    /// Datagrams not received yet.
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }
}

impl<T: Transmit> Transmit for Loopback<T> {
    fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
        self.out.transmit(datagram)
    }
}

impl<T: Transmit> Endpoint for Loopback<T> {
    fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        let (datagram, port) = self
            .queue
            .borrow_mut()
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok((n, port))
    }
}

/// One netlink message (as the kernel sends it) holding the connector message `msg`.
pub fn datagram(msg: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(NLMSG_HDR + msg.len());
    d.extend_from_slice(&((NLMSG_HDR + msg.len()) as u32).to_ne_bytes());
    d.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    d.extend_from_slice(&[0; 10]);
    d.extend_from_slice(msg);
    d
}

/// Sends replies to the kernel from one reused buffer.
///
/// A message is built in [`Replier::message`] (everything after the netlink header), may be
/// altered there, and leaves with [`Replier::send`].
pub struct Replier<'a> {
    out: &'a dyn Transmit,
    tx: &'a mut Vec<u8>,
    /// The netlink header's sender port: this process's id.
    pid: u32,
}

impl<'a> Replier<'a> {
    /// Replies through `out`, building messages in `tx` (at least 64 KiB are kept).
    pub fn new(out: &'a dyn Transmit, tx: &'a mut Vec<u8>) -> Self {
        Self::with_pid(out, tx, std::process::id())
    }

    /// [`Replier::new`] for a caller that knows its process id already (`getpid` is a
    /// system call, which the receive loop makes once, not per reply).
    pub fn with_pid(out: &'a dyn Transmit, tx: &'a mut Vec<u8>, pid: u32) -> Self {
        if tx.len() < BUF_SIZE {
            tx.resize(BUF_SIZE, 0);
        }
        Self { out, tx, pid }
    }

    /// Replies to a request: its header with `error` and the payload `data`.
    pub fn reply(&mut self, request: &Header, error: i32, data: &[u8]) -> Result<()> {
        let n = self.encode(request, error, data)?;
        self.send(n)
    }

    /// Builds a reply in the message buffer; returns its length.
    pub fn encode(&mut self, request: &Header, error: i32, data: &[u8]) -> Result<usize> {
        let mut header = *request;
        header.error = error;
        header.data_size = u32::try_from(data.len()).context("reply payload too large")?;
        encode_message(self.message(), &header, data).context("encoding a reply")
    }

    /// Builds a bare ACK (a `cn_msg` with no header) in the message buffer; returns its length.
    pub fn encode_ack(&mut self, seq: u32, ack: u32) -> usize {
        CnMsg::to_log(seq, ack, 0)
            .encode(self.message())
            .expect("the buffer holds a cn_msg");
        CN_MSG_SIZE
    }

    /// Builds this process's announcement, offering `features`, in the message buffer;
    /// returns its length.
    pub fn encode_announce(&mut self, features: u32) -> usize {
        Announce {
            version: ANNOUNCE_VERSION,
            pid: self.pid,
            features,
        }
        .encode(self.message())
        .expect("the buffer holds an announcement")
    }

    /// Tells the kernel to forget regions of its in-sync map (`uapi/in_sync_map.rs`). The
    /// kernel acts on it inside the `sendmsg`, so once this returns `Ok` it no longer
    /// answers IN_SYNC for them itself: a reply sent after it cannot be overtaken by it.
    pub fn withdraw(&mut self, withdrawal: &Withdrawal) -> Result<()> {
        let n = withdrawal
            .encode(self.message())
            .expect("the buffer holds a withdrawal");
        self.send(n).with_context(|| {
            format!(
                "withdrawing regions {}+{} of log luid={} from the kernel's in-sync map",
                withdrawal.first, withdrawal.count, withdrawal.luid
            )
        })
    }

    /// The message buffer: what follows the netlink header.
    pub fn message(&mut self) -> &mut [u8] {
        &mut self.tx[NLMSG_HDR..]
    }

    /// Sends the first `len` bytes of the message buffer in one netlink message.
    pub fn send(&mut self, len: usize) -> Result<()> {
        if NLMSG_HDR + len > self.tx.len() {
            bail!("message of {len} bytes too large");
        }
        // The netlink seq echoes the cn_msg seq when there is one.
        let seq = self
            .tx
            .get(NLMSG_HDR + 8..NLMSG_HDR + 12)
            .filter(|_| len >= 12)
            .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
        let total = (NLMSG_HDR + len) as u32;
        self.tx[0..4].copy_from_slice(&total.to_ne_bytes());
        self.tx[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        self.tx[6..8].copy_from_slice(&0u16.to_ne_bytes());
        self.tx[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.tx[12..16].copy_from_slice(&self.pid.to_ne_bytes());
        self.out
            .transmit(&self.tx[..NLMSG_HDR + len])
            .context("sending a reply to the kernel (replies need CAP_SYS_ADMIN)")?;
        Ok(())
    }
}

/// Two bound netlink connector sockets, for tests that send from one to the other; `None`
/// where this host has none.
#[doc(hidden)]
pub fn connector_socket_pair() -> Option<(Socket, Socket)> {
    let open = || {
        let mut s = Socket::new(NETLINK_CONNECTOR).ok()?;
        s.bind(&SocketAddr::new(0, 0)).ok()?;
        Some(s)
    };
    Some((open()?, open()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_of_a_datagram_is_seen() {
        // Two messages, the first padded to 4 bytes: payloads "abc" and "defgh".
        let mut d = Vec::new();
        for p in [&b"abc"[..], b"defgh"] {
            let len = (NLMSG_HDR + p.len()) as u32;
            d.extend_from_slice(&len.to_ne_bytes());
            d.extend_from_slice(&[0; 12]);
            d.extend_from_slice(p);
            d.resize(d.len().next_multiple_of(4), 0);
        }
        let mut seen = Vec::new();
        for_each_message(&d, |m| seen.push(m.to_vec())).unwrap();
        assert_eq!(seen, [b"abc".to_vec(), b"defgh".to_vec()]);
        // A length past the end is an error, not a short read.
        d[0] = 200;
        assert!(for_each_message(&d, |_| {}).is_err());
    }

    /// Nothing in a datagram is dropped without an error: a datagram too short for a
    /// netlink header, an empty one, and bytes left after the last message are reported.
    #[test]
    fn short_datagrams_and_trailing_bytes_are_errors() {
        assert!(for_each_message(&[0u8; 8], |_| {}).is_err());
        assert!(for_each_message(&[], |_| {}).is_err());
        let mut d = Vec::new();
        d.extend_from_slice(&(NLMSG_HDR as u32 + 4).to_ne_bytes());
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(b"abcd");
        d.extend_from_slice(&[1, 2, 3]);
        let mut seen = 0;
        assert!(for_each_message(&d, |_| seen += 1).is_err());
        assert_eq!(seen, 1);
    }

    #[test]
    fn replies_carry_netlink_and_connector_headers() {
        let capture = Capture::default();
        let mut tx = Vec::new();
        let mut r = Replier::new(&capture, &mut tx);
        let h = Header::request(b"U", 3, dm_ulog_uapi::RequestType::GetSyncCount, 77, 0).unwrap();
        r.reply(&h, -5, &[1, 2]).unwrap();
        let n = r.encode_ack(78, 9);
        r.send(n).unwrap();
        let sent = capture.0.into_inner();
        let full = &sent[0];
        assert_eq!(full.len(), NLMSG_HDR + CN_MSG_SIZE + 160 + 2);
        assert_eq!(&full[0..4], &(full.len() as u32).to_ne_bytes());
        assert_eq!(&full[4..6], &NLMSG_DONE.to_ne_bytes());
        assert_eq!(&full[8..12], &77u32.to_ne_bytes());
        let reply = dm_ulog_uapi::Reply::parse(&full[NLMSG_HDR..]).unwrap();
        let dm_ulog_uapi::Reply::Full { header, data } = reply else {
            panic!("not a full reply: {reply:?}");
        };
        assert_eq!(
            (header.seq, header.error, header.luid, data),
            (77, -5, 3, &[1u8, 2][..])
        );
        assert_eq!(
            dm_ulog_uapi::Reply::parse(&sent[1][NLMSG_HDR..]),
            Ok(dm_ulog_uapi::Reply::Ack { seq: 78, ack: 9 })
        );
    }

    fn request(seq: u32) -> Vec<u8> {
        let h = Header::request(b"U", 3, dm_ulog_uapi::RequestType::GetSyncCount, seq, 0).unwrap();
        let mut msg = vec![0; 512];
        let n = encode_message(&mut msg, &h, &[]).unwrap();
        datagram(&msg[..n])
    }

    /// Replies carry the process id the link asked for once, and the link passes on only
    /// what the kernel sent.
    #[test]
    fn link_replies_with_its_pid_and_drops_other_senders() {
        let mut link = KernelLink::new(Loopback::<Capture>::default());
        link.endpoint().push(request(5));
        link.endpoint().push_from(4242, request(6));
        let mut seen = Vec::new();
        let receipt = link
            .receive(|msg, tx, _| {
                let r = dm_ulog_uapi::Request::parse(msg).unwrap();
                seen.push(r.header.seq);
                tx.reply(&r.header, 0, &[]).unwrap();
            })
            .unwrap();
        assert_eq!(receipt, Receipt::Handled);
        let receipt = link.receive(|_, _, _| panic!("passed on")).unwrap();
        assert!(
            matches!(&receipt, Receipt::Dropped(what) if what.contains("process port 4242")),
            "{receipt:?}"
        );
        assert_eq!(link.receive(|_, _, _| {}).unwrap(), Receipt::Empty);
        assert_eq!(seen, [5]);
        let sent = link.endpoint().out.0.borrow();
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0][12..16], &std::process::id().to_ne_bytes());
    }

    /// Counts the receives a link makes.
    struct Counted(Loopback, usize);

    impl Transmit for Counted {
        fn transmit(&self, datagram: &[u8]) -> io::Result<()> {
            self.0.transmit(datagram)
        }
    }

    impl Endpoint for Counted {
        fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
            self.0.receive(buf)
        }

        fn receive_many(
            &mut self,
            bufs: &mut [u8],
            slot: usize,
            got: &mut [(usize, u32)],
        ) -> io::Result<usize> {
            self.1 += 1;
            self.0.receive_many(bufs, slot, got)
        }
    }

    /// One receive takes up to [`RECEIVE_BATCH`] datagrams, passed on one per call; after a
    /// receive that found fewer, the link says it is empty without asking the socket again.
    #[test]
    fn datagrams_are_received_in_batches() {
        let mut link = KernelLink::new(Counted(Loopback::default(), 0));
        let receipts = |link: &mut KernelLink<Counted>, n| {
            let mut seqs = Vec::new();
            for _ in 0..n {
                let receipt = link
                    .receive(|msg, _, _| {
                        seqs.push(dm_ulog_uapi::Request::parse(msg).unwrap().header.seq)
                    })
                    .unwrap();
                assert_eq!(receipt, Receipt::Handled);
            }
            seqs
        };
        for seq in 0..3 {
            link.endpoint().0.push(request(seq));
        }
        assert_eq!(receipts(&mut link, 3), [0, 1, 2]);
        assert_eq!(link.endpoint().1, 1);
        assert_eq!(link.receive(|_, _, _| {}).unwrap(), Receipt::Empty);
        assert_eq!(link.endpoint().1, 1, "a short receive drained the socket");
        assert_eq!(link.receive(|_, _, _| {}).unwrap(), Receipt::Empty);
        assert_eq!(link.endpoint().1, 2);

        let n = RECEIVE_BATCH as u32 + 4;
        for seq in 0..n {
            link.endpoint().0.push(request(seq));
        }
        assert_eq!(receipts(&mut link, n), (0..n).collect::<Vec<_>>());
        assert_eq!(link.endpoint().1, 4);
        assert_eq!(link.receive(|_, _, _| {}).unwrap(), Receipt::Empty);
        assert_eq!(link.endpoint().1, 4);
    }

    /// `recvmmsg` on a real netlink socket: three datagrams unicast by another socket (a
    /// process, so each is dropped) are taken by one call, each with its length and port.
    #[test]
    fn netlink_socket_takes_several_datagrams_per_call() {
        let Some((a, b)) = connector_socket_pair() else {
            eprintln!("no NETLINK_CONNECTOR sockets here: not checked");
            return;
        };
        let mut addr = SocketAddr::new(0, 0);
        a.get_address(&mut addr).unwrap();
        b.get_address(&mut SocketAddr::new(0, 0)).unwrap();
        let mut from = SocketAddr::new(0, 0);
        b.get_address(&mut from).unwrap();
        let sizes = [20usize, 100, 3000];
        for size in sizes {
            match b.send_to(&vec![7u8; size], &addr, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    eprintln!("unicast between netlink sockets needs CAP_NET_ADMIN: not checked");
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut link = KernelLink::new(NetlinkSocket::new(a));
        let mut rx = vec![0u8; RECEIVE_BATCH * BUF_SIZE];
        let mut got = [(0, 0); RECEIVE_BATCH];
        let n = link.sock.receive_many(&mut rx, BUF_SIZE, &mut got).unwrap();
        assert_eq!(n, 3);
        let port = from.port_number();
        assert_eq!(got[..3], [(20, port), (100, port), (3000, port)]);
        assert_eq!(&rx[BUF_SIZE..BUF_SIZE + 100], &[7u8; 100][..]);
        let e = link
            .sock
            .receive_many(&mut rx, BUF_SIZE, &mut got)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // Through the link: each datagram dropped, by its sender.
        for size in sizes {
            b.send_to(&vec![7u8; size], &addr, 0).unwrap();
        }
        for size in sizes {
            let receipt = link.receive(|_, _, _| panic!("passed on")).unwrap();
            let Receipt::Dropped(what) = receipt else {
                panic!("{receipt:?}");
            };
            assert!(
                what.starts_with(&format!(
                    "a datagram of {size} bytes from process port {port}:"
                )),
                "{what}"
            );
        }
        assert_eq!(link.receive(|_, _, _| {}).unwrap(), Receipt::Empty);
    }

    /// With CAP_NET_ADMIN the buffer is set past `net.core.rmem_max`; without it (dropped in
    /// a thread of its own: capabilities are per thread) SO_RCVBUF sets what it may.
    #[test]
    fn receive_buffer_is_forced_where_allowed() {
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let want = rmem_max * 2;
        let (sock, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        if caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_NET_ADMIN,
        )
        .unwrap()
        {
            let size = enlarge_receive_buffer(&sock, want).unwrap();
            assert!(size.forced, "{size:?}");
            assert!(size.got >= want, "{size:?}");
        }
        std::thread::spawn(move || {
            // Effective only: the thread ends with it.
            let _ = caps::drop(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_NET_ADMIN,
            );
            let size = enlarge_receive_buffer(&sock, want).unwrap();
            assert_eq!((size.asked, size.forced), (want, false));
            // The kernel doubles what it sets.
            assert_eq!(size.got, rmem_max * 2, "{size:?}");
            assert!(size.to_string().contains("SO_RCVBUF of"), "{size}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn announcement_goes_to_its_own_connector_id() {
        let capture = Capture::default();
        let mut tx = Vec::new();
        let mut r = Replier::new(&capture, &mut tx);
        let n = r.encode_announce(dm_ulog_uapi::FEATURE_IN_SYNC_MAP);
        r.send(n).unwrap();
        let n = r.encode_announce(0);
        r.send(n).unwrap();
        let sent = capture.0.into_inner();
        let msg = &sent[0][NLMSG_HDR..];
        let cn = CnMsg::decode(msg).unwrap();
        assert_eq!((cn.idx, cn.val, cn.seq, cn.len), (7, 2, 0, 16));
        // Not a reply to any request: the log's parser refuses it.
        assert!(dm_ulog_uapi::Reply::parse(msg).is_err());
        assert_eq!(
            Announce::parse(msg),
            Ok(Announce {
                version: ANNOUNCE_VERSION,
                pid: std::process::id(),
                features: dm_ulog_uapi::FEATURE_IN_SYNC_MAP,
            })
        );
        assert_eq!(
            Announce::parse(&sent[1][NLMSG_HDR..]).map(|a| a.features),
            Ok(0)
        );
    }

    #[test]
    fn withdrawal_goes_to_the_announcement_id() {
        let capture = Capture::default();
        let mut tx = Vec::new();
        let w = Withdrawal {
            luid: 42,
            first: 7,
            count: 1,
        };
        Replier::new(&capture, &mut tx).withdraw(&w).unwrap();
        let sent = capture.0.into_inner();
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0][0..4], &(sent[0].len() as u32).to_ne_bytes());
        let msg = &sent[0][NLMSG_HDR..];
        assert_eq!(Withdrawal::parse(msg), Ok(w));
        // Neither a reply nor an announcement.
        assert!(dm_ulog_uapi::Reply::parse(msg).is_err());
        assert!(Announce::parse(msg).is_err());
    }
}
