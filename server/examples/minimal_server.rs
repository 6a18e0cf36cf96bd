// SPDX-License-Identifier: GPL-2.0
//! A minimal userspace log server, built from the `dm_ulogd` library's parts: the connector
//! link, the wire crate's request parser and the log state.
//!
//! It serves mirrors whose table names a `userspace` log of type `core` (or any other type
//! [`Logs`] keeps), e.g. with a server running:
//!
//! ```sh
//! dmsetup create m0 --table \
//!     "0 16384 mirror userspace 3 MY-UUID core 1024 2 /dev/ram0 0 /dev/ram1 0"
//! ```
//!
//! Unlike `dm-ulogd` it takes no lock against a second server, records nothing, keeps no
//! statistics and exits on the first SIGTERM even while it serves logs (their mirrors then
//! stall until a server re-creates the logs). Run it as root: joining the connector group
//! needs `CAP_NET_ADMIN`, and the kernel ignores replies without `CAP_SYS_ADMIN`.
//!
//! Usage: `minimal_server [--foreground] [--log FILTER]` (the flags `dm-ulogd` takes too, so
//! that test scripts start either the same way).

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use dm_ulog_uapi::Request;
use dm_ulogd::link::{KernelLink, Receipt, Replier};
use dm_ulogd::logs::Logs;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{info, warn};

fn main() -> Result<()> {
    let mut filter = String::from("info");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // The only mode there is.
            "-f" | "--foreground" => {}
            "--log" => filter = args.next().context("--log needs a filter, e.g. info")?,
            other => bail!("unknown argument {other:?}: usage: minimal_server [--log FILTER]"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();

    let mut link = KernelLink::open()?;
    // Requests that wait for a server are resent at once instead of after their timeout. No
    // features: the in-sync map would need the withdrawals `serve::Exchange::answer` sends.
    link.announce(0)?;
    let mut logs = Logs::default();
    let mut payload = Vec::new();
    info!("listening for device-mapper log requests");
    loop {
        wait_for_requests(&link)?;
        // Everything that has arrived, then back to waiting.
        loop {
            match link.receive(|msg, replier, _| serve(&mut logs, &mut payload, msg, replier))? {
                Receipt::Empty => break,
                Receipt::Handled => {}
                Receipt::Dropped(what) => warn!("dropped {what}"),
            }
        }
    }
}

/// Blocks until the kernel has sent something.
fn wait_for_requests(link: &KernelLink) -> Result<()> {
    let mut fds = [PollFd::new(link.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e).context("waiting for requests"),
    }
}

/// Answers one connector message: parse the request, apply it to the logs, reply with the
/// payload or the errno.
fn serve(logs: &mut Logs, payload: &mut Vec<u8>, msg: &[u8], replier: &mut Replier<'_>) {
    let request = match Request::parse(msg) {
        Ok(request) => request,
        Err(e) => {
            // Without a header there is nobody to answer; the kernel resends after its
            // timeout.
            warn!("dropping a malformed message: {e}");
            return;
        }
    };
    // `handle` logs its failures, with what the admin can do about them.
    let error = match logs.handle(&request.header, request.data, payload) {
        Ok(()) => 0,
        Err(e) => -(e.errno() as i32),
    };
    if let Err(e) = replier.reply(&request.header, error, payload) {
        warn!("{e:#}");
    }
}
