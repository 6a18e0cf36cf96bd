//! The server's end of the connector: a netlink socket in group `CN_IDX_DM`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dm_ulog_uapi::{
    encode_message, Announce, CnMsg, Header, ANNOUNCE_VERSION, CN_IDX_DM, CN_MSG_SIZE,
};
use netlink_sys::{protocols::NETLINK_CONNECTOR, Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;

use crate::cli::Fatal;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDR: usize = 16;
/// `NLMSG_DONE`: the type the connector uses for its messages.
const NLMSG_DONE: u16 = 3;
/// Buffers: one connector message is at most 16 KiB plus headers; a datagram may hold several.
const BUF_SIZE: usize = 64 * 1024;

/// The netlink socket the kernel's requests arrive on and replies leave from.
pub struct KernelLink {
    sock: Socket,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl KernelLink {
    /// Joins the device-mapper connector group. Needs `CAP_NET_ADMIN`.
    pub fn open() -> Result<Self> {
        // Neither failure goes away with a restart: exit statuses that stop systemd's retries.
        let mut sock = Socket::new(NETLINK_CONNECTOR).map_err(|e| {
            Fatal::config(format!(
                "cannot open a NETLINK_CONNECTOR socket: {e} (is CONFIG_CONNECTOR enabled? \
                 under systemd, RestrictAddressFamilies= must allow AF_NETLINK)"
            ))
        })?;
        sock.bind(&SocketAddr::new(0, 0))
            .context("cannot bind the netlink socket")?;
        sock.add_membership(CN_IDX_DM).map_err(|e| {
            Fatal::permission(format!(
                "cannot join connector group 7 (device-mapper): {e}; this needs CAP_NET_ADMIN, \
                 run as root"
            ))
        })?;
        Ok(Self {
            sock,
            rx: vec![0; BUF_SIZE],
            tx: vec![0; BUF_SIZE],
        })
    }

    /// Tells the kernel a server is here (see `uapi/announce.rs`); kernels without the
    /// extension drop the message.
    pub fn announce(&mut self) -> Result<()> {
        let mut replier = Replier::new(&self.sock, &mut self.tx);
        let n = replier.encode_announce();
        replier
            .send(n)
            .context("announcing the server to the kernel")
    }

    /// Reads one datagram without blocking and calls `f` with each connector message in it
    /// (the bytes after its netlink header) and the time the datagram arrived. Datagrams
    /// that do not come from the kernel, and bytes that are no netlink message, are not
    /// passed on: the [`Receipt`] says why, for the caller to report.
    pub fn receive(
        &mut self,
        mut f: impl FnMut(&[u8], &mut Replier<'_>, Instant),
    ) -> Result<Receipt> {
        let n = match self
            .sock
            .recv_from(&mut &mut self.rx[..], MsgFlags::MSG_DONTWAIT.bits())
        {
            // Requests come from the kernel (port 0); a local process could otherwise
            // unicast forged ones (a DTR, say) to this socket.
            Ok((n, from)) if from.port_number() == 0 => n,
            Ok((n, from)) => {
                return Ok(Receipt::Dropped(format!(
                    "a datagram of {n} bytes from process port {}: requests must come from \
                     the kernel",
                    from.port_number()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Receipt::Empty),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Receipt::Handled),
            Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                // The socket overflowed; the kernel resends what we missed after its timeout.
                tracing::warn!(
                    "netlink receive buffer overflowed: requests were lost and will be resent"
                );
                return Ok(Receipt::Handled);
            }
            Err(e) => return Err(e).context("receiving from the kernel"),
        };
        let received = Instant::now();
        let mut replier = Replier::new(&self.sock, &mut self.tx);
        Ok(
            match for_each_message(&self.rx[..n], |msg| f(msg, &mut replier, received)) {
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

impl AsFd for KernelLink {
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

/// Sends replies to the kernel from one reused buffer.
///
/// A message is built in [`Replier::message`] (everything after the netlink header), may be
/// altered there, and leaves with [`Replier::send`].
pub struct Replier<'a> {
    out: &'a dyn Transmit,
    tx: &'a mut Vec<u8>,
}

impl<'a> Replier<'a> {
    /// Replies through `out`, building messages in `tx` (at least 64 KiB are kept).
    pub fn new(out: &'a dyn Transmit, tx: &'a mut Vec<u8>) -> Self {
        if tx.len() < BUF_SIZE {
            tx.resize(BUF_SIZE, 0);
        }
        Self { out, tx }
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

    /// Builds this process's announcement in the message buffer; returns its length.
    pub fn encode_announce(&mut self) -> usize {
        Announce {
            version: ANNOUNCE_VERSION,
            pid: std::process::id(),
        }
        .encode(self.message())
        .expect("the buffer holds an announcement")
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
        self.tx[12..16].copy_from_slice(&std::process::id().to_ne_bytes());
        self.out
            .transmit(&self.tx[..NLMSG_HDR + len])
            .context("sending a reply to the kernel (replies need CAP_SYS_ADMIN)")?;
        Ok(())
    }
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

    #[test]
    fn announcement_goes_to_its_own_connector_id() {
        let capture = Capture::default();
        let mut tx = Vec::new();
        let mut r = Replier::new(&capture, &mut tx);
        let n = r.encode_announce();
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
                pid: std::process::id()
            })
        );
    }
}
