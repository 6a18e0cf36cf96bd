//! dm-ulog-crashcheck: checks that a power cut cannot leave a mirror region whose legs differ
//! marked clean in its disk log (see `dm_ulogd::crashcheck`).
//!
//! `replay`: every state of a dm-log-writes record of the mirror (two legs and the log on
//! slices of the recorded device). `devices`: the devices as a real cut left them. Both print
//! `unmarked differing regions: N` and exit 1 when N is not 0. `write` and `survived`: writes
//! whose acknowledgements outlive a cut, and the check that the mirror kept them (see
//! `dm_ulogd::cutwrites`).

use std::io::Write;
use std::ops::Range;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dm_ulogd::crashcheck::{check_devices, parse_record, replay, Layout};
use dm_ulogd::cutwrites::{self, BLOCK};
use dm_ulogd::device::LogDevice;

/// Check a mirror's disk log against power cuts.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay a dm-log-writes record and check every crash point.
    Replay {
        /// The dm-log-writes record (its log device, or a copy of it).
        #[arg(long)]
        record: String,
        /// The first leg on the recorded device: START:LENGTH in 512-byte sectors.
        #[arg(long, value_parser = sectors)]
        leg0: Range<u64>,
        /// The second leg: START:LENGTH in sectors.
        #[arg(long, value_parser = sectors)]
        leg1: Range<u64>,
        /// The disk log's device: START:LENGTH in sectors.
        #[arg(long, value_parser = sectors)]
        log: Range<u64>,
        /// The mirror's region size in sectors.
        #[arg(long)]
        region: u64,
    },
    /// Check the legs and the log device as they are now (the mirror not active).
    Devices {
        /// The first leg's device.
        #[arg(long)]
        leg0: String,
        /// The second leg's device.
        #[arg(long)]
        leg1: String,
        /// The log device.
        #[arg(long)]
        log: String,
        /// The mirror's region size in sectors.
        #[arg(long)]
        region: u64,
    },
    /// Write 4 KiB blocks one at a time, each made durable, and append `ack <mirror> <n>` to
    /// ACKS after each; runs until killed (or COUNT writes).
    Write {
        #[command(flatten)]
        writer: Writer,
        /// Stop after this many writes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Check that the device holds every write of `write` that ACKS acknowledges.
    Survived {
        #[command(flatten)]
        writer: Writer,
    },
}

/// One writer's device, number and acknowledgements.
#[derive(clap::Args, Debug)]
struct Writer {
    /// The device: the mirror (written, or after the cut and its resync, read).
    #[arg(long)]
    device: String,
    /// The writer's number, written into every block.
    #[arg(long)]
    mirror: u32,
    /// The acknowledgements: where they go (a serial port the host keeps), or the kept ones.
    #[arg(long)]
    acks: String,
}

/// Writes until killed, or `count` writes; acknowledges each durable one on `acks`.
fn write_blocks(device: &str, mirror: u32, acks: &str, count: Option<u64>) -> Result<()> {
    let dev = LogDevice::open(device)?;
    let blocks = dev.size() / BLOCK as u64;
    let mut buf = dev.buffer(BLOCK).context("no memory for a block")?;
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .open(acks)
        .with_context(|| format!("opening {acks}"))?;
    for n in 1..=count.unwrap_or(u64::MAX) {
        buf.as_mut().copy_from_slice(&cutwrites::content(mirror, n));
        let at = cutwrites::block_of(n, blocks) * BLOCK as u64;
        dev.write_at(&buf, at)
            .and_then(|()| dev.sync())
            .with_context(|| format!("write {n} to {device}"))?;
        // One write() per line: a tty keeps each write whole among several writers.
        out.write_all(format!("ack {mirror} {n}\n").as_bytes())?;
    }
    Ok(())
}

/// `START:LENGTH` in sectors, as a byte range.
fn sectors(s: &str) -> Result<Range<u64>, String> {
    let (start, len) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not START:LENGTH (sectors)"))?;
    let n = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{v:?} is not a number of sectors"))
    };
    let (start, len) = (n(start)? * 512, n(len)? * 512);
    Ok(start..start + len)
}

fn read(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {path}"))
}

fn main() -> Result<()> {
    let unmarked = match Args::parse().command {
        Command::Replay {
            record,
            leg0,
            leg1,
            log,
            region,
        } => {
            let record = read(&record)?;
            let entries = parse_record(&record)?;
            let layout = Layout {
                leg0,
                leg1,
                log,
                region: region * 512,
            };
            let report = replay(&record, &entries, &layout)?;
            println!("{report}");
            report.unmarked
        }
        Command::Devices {
            leg0,
            leg1,
            log,
            region,
        } => {
            let (unmarked, differing) =
                check_devices(&read(&leg0)?, &read(&leg1)?, &read(&log)?, region * 512)?;
            println!("differing regions: {differing} unmarked: {unmarked:?}");
            println!("unmarked differing regions: {}", unmarked.len());
            unmarked.len() as u64
        }
        Command::Write { writer, count } => {
            write_blocks(&writer.device, writer.mirror, &writer.acks, count)?;
            0
        }
        Command::Survived {
            writer:
                Writer {
                    device,
                    mirror,
                    acks,
                },
        } => {
            let acked = cutwrites::last_ack(&std::fs::read_to_string(&acks)?, mirror);
            let s = cutwrites::check(&read(&device)?, mirror, acked);
            println!("writes acknowledged: {acked}; {s}");
            s.lost.len() as u64
        }
    };
    std::process::exit(i32::from(unmarked > 0))
}
