//! The server's end of the connector: a netlink socket in group `CN_IDX_DM`.

use anyhow::{bail, Context, Result};
use dm_ulog_uapi::{
    encode_message, Header, Request, WireError, CN_IDX_DM, CN_MSG_SIZE, HEADER_SIZE,
};
use netlink_sys::{protocols::NETLINK_CONNECTOR, Socket, SocketAddr};

/// Size of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `NLMSG_DONE`: the type the connector uses for its messages.
const NLMSG_DONE: u16 = 3;
/// Receive buffer: one connector message is at most 16 KiB plus headers.
const RECV_BUF: usize = 64 * 1024;

/// The netlink socket the kernel's requests arrive on and replies leave from.
pub struct KernelLink {
    sock: Socket,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl KernelLink {
    /// Joins the device-mapper connector group. Needs `CAP_NET_ADMIN`.
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_CONNECTOR)
            .context("cannot open a NETLINK_CONNECTOR socket (is CONFIG_CONNECTOR enabled?)")?;
        sock.bind(&SocketAddr::new(0, 0))
            .context("cannot bind the netlink socket")?;
        sock.add_membership(CN_IDX_DM).context(
            "cannot join connector group 7 (device-mapper): this needs CAP_NET_ADMIN; run as root",
        )?;
        Ok(Self {
            sock,
            buf: vec![0; RECV_BUF],
            out: vec![0; RECV_BUF],
        })
    }

    /// Waits for the next datagram and calls `f` for each connector message in it.
    pub fn receive(
        &mut self,
        mut f: impl FnMut(Result<Request<'_>, WireError>, &mut Replier<'_>),
    ) -> Result<()> {
        let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
            Ok(n) => n,
            // The kernel resends what we missed after its timeout.
            Err(e) if e.raw_os_error() == Some(libc_enobufs()) => return Ok(()),
            Err(e) => return Err(e).context("receiving from the kernel"),
        };
        let mut off = 0;
        while off + NLMSG_HDR <= n {
            let len =
                u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4 bytes")) as usize;
            if len < NLMSG_HDR || off + len > n {
                bail!("malformed netlink message of length {len}");
            }
            let msg = &self.buf[off + NLMSG_HDR..off + len];
            let mut replier = Replier {
                sock: &self.sock,
                out: &mut self.out,
            };
            f(Request::parse(msg), &mut replier);
            off += (len + 3) & !3;
        }
        Ok(())
    }
}

fn libc_enobufs() -> i32 {
    105
}

/// Sends replies to the kernel.
pub struct Replier<'a> {
    sock: &'a Socket,
    out: &'a mut Vec<u8>,
}

impl Replier<'_> {
    /// Replies to a request: its header with `error` and the payload `data`.
    pub fn reply(&mut self, request: &Header, error: i32, data: &[u8]) -> Result<()> {
        let mut header = *request;
        header.error = error;
        header.data_size = data.len() as u32;
        let total = NLMSG_HDR + CN_MSG_SIZE + HEADER_SIZE + data.len();
        if total > self.out.len() {
            bail!("reply of {} bytes too large", data.len());
        }
        let n = encode_message(&mut self.out[NLMSG_HDR..], &header, data)
            .context("encoding a reply")?;
        let len = (NLMSG_HDR + n) as u32;
        self.out[0..4].copy_from_slice(&len.to_ne_bytes());
        self.out[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        self.out[6..8].copy_from_slice(&0u16.to_ne_bytes());
        self.out[8..12].copy_from_slice(&header.seq.to_ne_bytes());
        self.out[12..16].copy_from_slice(&std::process::id().to_ne_bytes());
        self.sock
            .send_to(&self.out[..NLMSG_HDR + n], &SocketAddr::new(0, 0), 0)
            .context("sending a reply to the kernel (replies need CAP_SYS_ADMIN)")?;
        Ok(())
    }
}
