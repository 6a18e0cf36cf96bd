// SPDX-License-Identifier: GPL-2.0
//! Joins a log's corosync group through dm-ulogd's [`CpgGroup`] and writes every event it
//! delivers, one line each, so that a test can compare what the nodes saw:
//!
//! ```text
//! view <id> members=1,2,3 joined=3 left= quorate=1
//! msg <from> <text>
//! ```
//!
//! With `--send N` it multicasts `N` messages `<node>:<i>` once a view of `--members K`
//! members has arrived (flow control is waited out). It runs until SIGTERM or SIGINT, or
//! `--seconds` have passed. `tests/cluster/run.sh` uses it to check the binding on three
//! corosync nodes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use dm_ulogd::cluster::corosync::CpgGroup;
use dm_ulogd::cluster::group::{Group, GroupError, GroupEvent};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

#[derive(Parser)]
struct Args {
    /// The log UUID: the group is dm-ulogd's for this log.
    uuid: String,
    /// Where the events go.
    out: std::path::PathBuf,
    /// Messages to multicast.
    #[arg(long, default_value_t = 0)]
    send: u32,
    /// Members a view must have before sending.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Stop after this long.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
}

fn join(list: &[u32]) -> String {
    list.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn main() -> Result<()> {
    let args = Args::parse();
    dm_ulogd::cli::init_logging("info");
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut out = BufWriter::new(File::create(&args.out).context("creating the output")?);
    let mut group = CpgGroup::connect(&args.uuid)?;
    group.join()?;
    let me = group.local_node();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut sent = 0;
    let mut may_send = false;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && !group.is_closed() {
        while let Some(event) = group.next_event() {
            match event {
                GroupEvent::View(v) => {
                    writeln!(
                        out,
                        "view {} members={} joined={} left={} quorate={}",
                        v.id.0,
                        join(&v.members),
                        join(&v.joined),
                        join(&v.left),
                        u8::from(v.quorate)
                    )?;
                    may_send |= v.members.len() >= args.members;
                }
                GroupEvent::Message { from, payload } => {
                    writeln!(out, "msg {from} {}", String::from_utf8_lossy(&payload))?;
                }
            }
        }
        out.flush()?;
        while may_send && sent < args.send {
            match group.multicast(format!("{me}:{sent}").as_bytes()) {
                Ok(()) => sent += 1,
                Err(GroupError::TryAgain) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let mut polled = group.fds()?.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
        let wait = if sent < args.send && may_send {
            10u16
        } else {
            100
        };
        match poll(&mut polled, PollTimeout::from(wait)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.flush()?;
    if group.is_closed() {
        anyhow::bail!("corosync closed the connection");
    }
    group.leave()?;
    Ok(())
}
