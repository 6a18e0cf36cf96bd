// SPDX-License-Identifier: GPL-2.0
//! dm-ulog-crashcheck: checks that a power cut cannot leave a mirror region whose legs differ
//! marked clean in its disk log (see `dm_ulogd::crashcheck`).
//!
//! `replay`: every state of a dm-log-writes record of the mirror (two legs and the log on
//! slices of the recorded device); with `--trace`, each flush belongs to the slice it was sent
//! to and every device has a volatile cache of its own (`dm_ulogd::volatile_replay`), and
//! `--floor` fails a run that exercised the invariant too rarely to prove anything.
//! `devices`: the devices as a real cut left them. Both print
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
use dm_ulogd::volatile_replay::{self, flush_devices_from_trace};

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
        /// The block layer's completion events of the run (ftrace's `block_bio_complete`, text
        /// format): which slice each flush went to. Without it, a flush covers every slice.
        #[arg(long, requires = "slices")]
        trace: Option<String>,
        /// The slices' devices as the trace names them: LEG0,LEG1,LOG, each `major:minor`.
        #[arg(long, value_parser = slice_devices)]
        slices: Option<[String; 3]>,
        /// With `--trace`: fail unless the legs may differ, with a valid log, in at least this
        /// many (crash point, region) pairs.
        #[arg(long, default_value_t = 0)]
        floor: u64,
        /// With `--trace`: fail unless regions went clean, dirty and clean again on the log
        /// device at least this many times (a log that never cleans proves nothing either).
        #[arg(long, default_value_t = 0)]
        min_cycles: u64,
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

/// `A:B,C:D,E:F` (major:minor of the two legs and the log) as ftrace prints devices.
fn slice_devices(s: &str) -> Result<[String; 3], String> {
    let devices: Vec<String> = s.split(',').map(|d| d.trim().replace(':', ",")).collect();
    devices
        .try_into()
        .map_err(|_| format!("{s:?} is not LEG0,LEG1,LOG (three major:minor)"))
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
            trace,
            slices,
            floor,
            min_cycles,
        } => {
            let record = read(&record)?;
            let entries = parse_record(&record)?;
            let layout = Layout {
                leg0,
                leg1,
                log,
                region: region * 512,
            };
            match (trace, slices) {
                (Some(trace), Some(slices)) => {
                    let trace = std::fs::read_to_string(&trace)
                        .with_context(|| format!("reading {trace}"))?;
                    let [a, b, c] = &slices;
                    let flushes = flush_devices_from_trace(&trace, [a, b, c])?;
                    let report = volatile_replay::replay(&record, &entries, &layout, &flushes)?;
                    println!("{report}");
                    // A violation found stands; without one, a run below the floors proved
                    // nothing.
                    let vacuous = report.exercised < floor || report.cycles < min_cycles;
                    if report.unmarked == 0 && vacuous {
                        println!(
                            "exercised {} times (floor {floor}), {} clean-dirty-clean cycles \
                             (floor {min_cycles}): this run proved nothing",
                            report.exercised, report.cycles
                        );
                        std::process::exit(2);
                    }
                    report.unmarked
                }
                _ => {
                    let report = replay(&record, &entries, &layout)?;
                    println!("{report}");
                    report.unmarked
                }
            }
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
