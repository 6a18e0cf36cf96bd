// SPDX-License-Identifier: GPL-2.0
//! dm-log.c's `disk` log format, and a log kept in it.
//!
//! The format, byte for byte as the kernel's own disk log writes it (drivers/md/dm-log.c):
//! a 16-byte header at offset 0 (`le32 magic "MiRr"`, `le32 version 2`, `le64 nr_regions`),
//! the clean bitmap at byte 1024 (`LOG_OFFSET` of 2 sectors) as little-endian bits sized in
//! whole `unsigned long`s, and every transfer (header and bitmap together) as long as the
//! buffer rounded up to the device's logical block size. Bytes between the header and the
//! bitmap, and after it, are read and written back untouched, as the kernel does.

use std::fmt;
use std::io;

use anyhow::{bail, Context, Result};
use tracing::warn;

use crate::device::{IoBuf, LogDevice, DIRECT_ALIGN};
use crate::regions::Regions;
use crate::table::SyncMode;

/// `MIRROR_MAGIC`: "MiRr".
pub const MAGIC: u32 = 0x4D69_5272;
/// `MIRROR_DISK_VERSION`.
pub const VERSION: u32 = 2;
/// Where the bitmap starts: `LOG_OFFSET` (2) sectors of 512 bytes.
pub const BITS_OFFSET: usize = 2 * 512;
/// Bytes of the header that carry fields.
pub const HEADER_SIZE: usize = 16;
/// The bitmap is allocated in whole `unsigned long`s of the kernel (the server's own width).
const BITS_PER_LONG: u64 = usize::BITS as u64;

/// The on-disk header (`struct log_header_disk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskHeader {
    /// `MAGIC` if this is a log.
    pub magic: u32,
    /// `VERSION`, or 1 from old little-endian kernels.
    pub version: u32,
    /// Regions the bitmap was written for.
    pub nr_regions: u64,
}

impl DiskHeader {
    /// The header of a log that is being (re)initialised.
    pub const FRESH: Self = Self {
        magic: MAGIC,
        version: VERSION,
        nr_regions: 0,
    };

    /// Reads the header from the first 16 bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Self {
        let le32 = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
        Self {
            magic: le32(0),
            version: le32(4),
            nr_regions: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
        }
    }

    /// Writes the header into the first 16 bytes of `buf`.
    pub fn encode(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&self.magic.to_le_bytes());
        buf[4..8].copy_from_slice(&self.version.to_le_bytes());
        buf[8..16].copy_from_slice(&self.nr_regions.to_le_bytes());
    }
}

/// Bytes of bitmap for `regions` regions: rounded up to whole longs, as dm-log.c allocates.
pub fn bitset_size(regions: u64) -> usize {
    usize::try_from(regions.div_ceil(BITS_PER_LONG) * (BITS_PER_LONG / 8))
        .expect("regions are limited to 2^32")
}

/// Bytes of one transfer: header area and bitmap, rounded up to the logical block size.
pub fn buffer_size(regions: u64, block_size: usize) -> usize {
    (BITS_OFFSET + bitset_size(regions)).next_multiple_of(block_size)
}

/// Bytes of memory a disk log of `regions` regions takes at most (its I/O buffer, for the
/// largest logical block size), known before the device is opened.
pub fn memory_for(regions: u64) -> u64 {
    IoBuf::bytes_for(buffer_size(regions, DIRECT_ALIGN))
}

/// Bit `i` of a little-endian bitmap (`test_bit_le`).
pub fn test_bit(bits: &[u8], i: u64) -> bool {
    bits[(i / 8) as usize] & (1 << (i % 8)) != 0
}

/// Sets or clears bit `i` of a little-endian bitmap; returns whether it changed.
pub fn put_bit(bits: &mut [u8], i: u64, value: bool) -> bool {
    let (byte, mask) = ((i / 8) as usize, 1u8 << (i % 8));
    let old = bits[byte] & mask != 0;
    if value {
        bits[byte] |= mask;
    } else {
        bits[byte] &= !mask;
    }
    old != value
}

/// What went wrong with the device, as dm-log.c's status reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// `A`: alive.
    #[default]
    Alive,
    /// `D`: a read or write failed.
    Dead,
    /// `F`: flushing the device's cache failed.
    FlushFailed,
}

impl Health {
    /// The status letter.
    pub fn letter(self) -> char {
        match self {
            Self::Alive => 'A',
            Self::Dead => 'D',
            Self::FlushFailed => 'F',
        }
    }
}

/// A log kept on a device in the disk format.
#[derive(Debug)]
pub struct DiskLog {
    device: LogDevice,
    regions: u64,
    sync: SyncMode,
    /// Header and bitmap as they should be on the device.
    buf: IoBuf,
    /// Until the first resume the buffer holds nothing worth writing.
    loaded: bool,
    /// The buffer holds bits the device does not have yet.
    unwritten: bool,
    health: Health,
}

impl DiskLog {
    /// A log of `regions` regions on `device`, which must hold one whole buffer. The buffer
    /// is reserved fallibly: an [`AllocError`](crate::bitset::AllocError) in the error's
    /// chain means memory was short.
    pub fn new(device: LogDevice, regions: u64, sync: SyncMode) -> Result<Self> {
        let size = buffer_size(regions, device.block_size());
        if size as u64 > device.size() {
            bail!(
                "log device {} too small: need {size} bytes for {regions} regions, it has {}",
                device.path().display(),
                device.size()
            );
        }
        let buf = device.buffer(size).with_context(|| {
            format!(
                "log device {}: no memory for the bitmap of {regions} regions",
                device.path().display()
            )
        })?;
        Ok(Self {
            device,
            regions,
            sync,
            buf,
            loaded: false,
            unwritten: false,
            health: Health::Alive,
        })
    }

    /// The device.
    pub fn device(&self) -> &LogDevice {
        &self.device
    }

    /// What the status line reports about the device.
    pub fn health(&self) -> Health {
        self.health
    }

    fn bits(&self) -> &[u8] {
        &self.buf.as_ref()[BITS_OFFSET..BITS_OFFSET + bitset_size(self.regions)]
    }

    fn bits_mut(&mut self) -> &mut [u8] {
        let len = bitset_size(self.regions);
        &mut self.buf.as_mut()[BITS_OFFSET..BITS_OFFSET + len]
    }

    /// Reads the log at resume as `disk_resume` does into `state` (in sync exactly where the
    /// bitmap says clean) and writes the updated header back; the error is the write's.
    /// `state` must be of this log's region count.
    pub fn resume(&mut self, state: &mut Regions) -> io::Result<()> {
        let header = self.read_header();
        self.prepare(header);
        debug_assert_eq!(state.count(), self.regions);
        state.load_clean_bits(self.bits());
        self.loaded = true;
        self.unwritten = true;
        self.write()
    }

    /// For a clustered log that no node holds: the clean bits of the log on the device, read
    /// as [`DiskLog::resume`] reads them, without writing; `None` for a new log (no log
    /// there, a table with `sync` or `nosync`, or a device that cannot be read).
    pub fn read_clean_bits(&mut self) -> Option<Vec<u8>> {
        let header = self.read_header();
        let fresh = header.nr_regions == 0;
        self.prepare(header);
        (!fresh && self.health == Health::Alive).then(|| self.bits().to_vec())
    }

    /// Writes a clustered log's whole bitmap, `clean` (little-endian, one bit per region, as
    /// `Replica::clean_bits` makes it), with its header, and makes it durable.
    pub fn store(&mut self, clean: &[u8]) -> io::Result<()> {
        let mut header = DiskHeader::FRESH;
        header.nr_regions = self.regions;
        header.encode(self.buf.as_mut());
        let bits = self.bits_mut();
        let n = bits.len().min(clean.len());
        bits[..n].copy_from_slice(&clean[..n]);
        bits[n..].fill(0);
        for i in self.regions..self.regions.next_multiple_of(BITS_PER_LONG) {
            put_bit(self.bits_mut(), i, false);
        }
        self.loaded = true;
        self.unwritten = true;
        self.write()
    }

    /// The header on the device, as dm-log.c takes it: a new log's when there is none or the
    /// table says `sync` or `nosync`, and no regions at all when it cannot be used.
    fn read_header(&mut self) -> DiskHeader {
        let name = self.device.path().display().to_string();
        match self.device.read_at(&mut self.buf, 0) {
            Ok(()) => {
                let mut h = DiskHeader::decode(self.buf.as_ref());
                // New log required? Any sync argument, or no log there yet.
                if self.sync != SyncMode::Default || h.magic != MAGIC {
                    h = DiskHeader::FRESH;
                }
                if cfg!(target_endian = "little") && h.version == 1 {
                    h.version = VERSION;
                }
                if h.version != VERSION {
                    warn!(
                        "log device {name}: incompatible disk log version {}: every region \
                         will be resynchronised at every resume; zero its first sector to \
                         start a new log",
                        h.version
                    );
                    self.health = Health::Dead;
                    // dm-log.c treats this as a failed read and writes the version back as is.
                    h.nr_regions = 0;
                }
                h
            }
            Err(e) => {
                warn!("log device {name}: cannot read the log ({e}): every region is out of sync");
                self.health = Health::Dead;
                DiskHeader::FRESH
            }
        }
    }

    /// Completes the bitmap read with `header` as dm-log.c does (regions it does not cover
    /// take the table's state, bits past the end are cleared) and sets the header to write.
    fn prepare(&mut self, mut header: DiskHeader) {
        let fill = self.sync == SyncMode::NoSync;
        let regions = self.regions;
        let bits = self.bits_mut();
        // Regions the bitmap does not cover yet (a new or grown log).
        for i in header.nr_regions.min(regions)..regions {
            put_bit(bits, i, fill);
        }
        // Bits past the end (a shrunk log) up to the end of the last long.
        for i in regions..regions.next_multiple_of(BITS_PER_LONG) {
            put_bit(bits, i, false);
        }
        header.nr_regions = regions;
        header.encode(self.buf.as_mut());
    }

    /// Records whether a region is clean (in sync, no write outstanding) for the next flush.
    pub fn set_clean(&mut self, region: u64, clean: bool) {
        if self.loaded && region < self.regions && put_bit(self.bits_mut(), region, clean) {
            self.unwritten = true;
        }
    }

    /// Makes the bitmap durable if it changed; returns whether it wrote.
    pub fn flush(&mut self) -> io::Result<bool> {
        if !self.loaded || !self.unwritten {
            return Ok(false);
        }
        self.write().map(|()| true)
    }

    fn write(&mut self) -> io::Result<()> {
        if let Err(e) = self.device.write_at(&self.buf, 0) {
            self.health = Health::Dead;
            return Err(e);
        }
        if let Err(e) = self.device.sync() {
            self.health = Health::FlushFailed;
            return Err(e);
        }
        self.unwritten = false;
        Ok(())
    }
}

/// What `dm-ulogd disk-show` prints about a log device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The header as found.
    pub header: DiskHeader,
    /// Set bits among the regions counted.
    pub clean: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "magic={} version={} nr_regions={} clean={}",
            if self.header.magic == MAGIC {
                "ok"
            } else {
                "bad"
            },
            self.header.version,
            self.header.nr_regions,
            self.clean
        )
    }
}

/// Reads a log device's header and counts the clean bits of its first `regions` regions
/// (the header's `nr_regions` if not given, limited to what the device holds).
pub fn summarize(device: &LogDevice, regions: Option<u64>) -> Result<Summary> {
    let bs = device.block_size();
    let name = device.path().display();
    let mut first = device.buffer(bs)?;
    device
        .read_at(&mut first, 0)
        .with_context(|| format!("reading the log header from {name}"))?;
    let header = DiskHeader::decode(first.as_ref());
    let room = device.size().saturating_sub(BITS_OFFSET as u64) * 8;
    let count = regions.unwrap_or(header.nr_regions);
    if regions.is_some() && count > room {
        bail!("{name} holds the bits of {room} regions, not {count}");
    }
    let count = count.min(room);
    let len = (BITS_OFFSET + count.div_ceil(8) as usize).next_multiple_of(bs);
    let mut buf = device
        .buffer(len)
        .with_context(|| format!("no memory to read {len} bytes of {name}"))?;
    device
        .read_at(&mut buf, 0)
        .with_context(|| format!("reading the log bitmap from {name}"))?;
    let bits = &buf.as_ref()[BITS_OFFSET..];
    let clean = (0..count).filter(|&i| test_bit(bits, i)).count() as u64;
    Ok(Summary { header, clean })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;

    fn log_file(len: u64) -> (tempfile::NamedTempFile, File) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(len).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        (tmp, f)
    }

    fn device(f: &File, block_size: usize) -> LogDevice {
        LogDevice::from_file(f.try_clone().unwrap(), "test-log", block_size).unwrap()
    }

    /// The regions a resume loads, and its write's outcome.
    struct Resumed {
        regions: Regions,
        write: io::Result<()>,
    }

    fn resume(log: &mut DiskLog) -> Resumed {
        let mut regions = Regions::try_new(log.regions, false).unwrap();
        let write = log.resume(&mut regions);
        Resumed { regions, write }
    }

    #[test]
    fn sizes_follow_dm_log_c() {
        assert_eq!(bitset_size(1), 8);
        assert_eq!(bitset_size(64), 8);
        assert_eq!(bitset_size(65), 16);
        assert_eq!(buffer_size(70, 512), 1536);
        assert_eq!(buffer_size(70, 4096), 4096);
        assert_eq!(buffer_size(4096 * 8 + 1, 512), 1024 + 4096 + 512);
    }

    #[test]
    fn bits_are_little_endian() {
        let mut b = [0u8; 8];
        assert!(put_bit(&mut b, 0, true));
        assert!(!put_bit(&mut b, 0, true));
        put_bit(&mut b, 9, true);
        put_bit(&mut b, 63, true);
        assert_eq!(b, [0x01, 0x02, 0, 0, 0, 0, 0, 0x80]);
        assert!(test_bit(&b, 9) && !test_bit(&b, 8));
        assert!(put_bit(&mut b, 9, false));
        assert_eq!(b[1], 0);
    }

    /// Write, read back, compare bytes: header layout and bitmap against hand-computed bytes.
    #[test]
    fn format_round_trip_matches_hand_computed_bytes() {
        let (_tmp, f) = log_file(8192);
        // Garbage between header and bitmap must survive, as the kernel reads and rewrites it.
        f.write_all_at(&[0xAB; 4], 100).unwrap();
        let mut log = DiskLog::new(device(&f, 512), 70, SyncMode::NoSync).unwrap();
        let r = resume(&mut log);
        r.write.unwrap();
        assert_eq!(r.regions.sync_count(), 70);
        for region in 0..70 {
            log.set_clean(region, [0, 1, 9, 69].contains(&region));
        }
        assert!(log.flush().unwrap());
        assert!(!log.flush().unwrap(), "nothing changed, nothing written");
        let mut disk = vec![0u8; 8192];
        f.read_exact_at(&mut disk, 0).unwrap();
        assert_eq!(
            &disk[..16],
            &[
                0x72, 0x52, 0x69, 0x4d, // magic, little-endian
                0x02, 0, 0, 0, // version 2
                70, 0, 0, 0, 0, 0, 0, 0, // nr_regions
            ]
        );
        assert_eq!(&disk[100..104], &[0xAB; 4]);
        assert!(disk[16..100].iter().all(|&b| b == 0));
        assert_eq!(
            &disk[1024..1040],
            &[0x03, 0x02, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0]
        );
        // Nothing written past the 1536-byte buffer.
        f.write_all_at(&[0xCD], 1536).unwrap();
        // Read back: a default-sync log trusts the bitmap.
        let mut log = DiskLog::new(device(&f, 512), 70, SyncMode::Default).unwrap();
        let r = resume(&mut log);
        r.write.unwrap();
        let in_sync: Vec<u64> = (0..70).filter(|&i| r.regions.in_sync(i).unwrap()).collect();
        assert_eq!(in_sync, [0, 1, 9, 69]);
        let mut again = vec![0u8; 8192];
        f.read_exact_at(&mut again, 0).unwrap();
        assert_eq!(&again[..1536], &disk[..1536]);
        assert_eq!(again[1536], 0xCD);
        assert_eq!(
            summarize(&device(&f, 512), None).unwrap().to_string(),
            "magic=ok version=2 nr_regions=70 clean=4"
        );
        assert_eq!(summarize(&device(&f, 512), Some(9)).unwrap().clean, 2);
    }

    #[test]
    fn new_log_is_out_of_sync_unless_nosync() {
        let (_tmp, f) = log_file(4096);
        let mut log = DiskLog::new(device(&f, 4096), 10, SyncMode::Default).unwrap();
        let r = resume(&mut log);
        r.write.unwrap();
        assert_eq!(r.regions.sync_count(), 0);
        let s = summarize(&device(&f, 4096), None).unwrap();
        assert_eq!(s.to_string(), "magic=ok version=2 nr_regions=10 clean=0");
        // `sync` ignores a valid bitmap; `nosync` sets every bit.
        let mut log = DiskLog::new(device(&f, 4096), 10, SyncMode::NoSync).unwrap();
        assert_eq!(resume(&mut log).regions.sync_count(), 10);
        let mut log = DiskLog::new(device(&f, 4096), 10, SyncMode::Force).unwrap();
        assert_eq!(resume(&mut log).regions.sync_count(), 0);
    }

    #[test]
    fn grown_and_shrunk_logs_keep_the_common_bits() {
        let (_tmp, f) = log_file(4096);
        let mut log = DiskLog::new(device(&f, 512), 100, SyncMode::NoSync).unwrap();
        resume(&mut log).write.unwrap();
        // Shrunk to 66: bits 66..128 are cleared, 0..66 kept.
        let mut log = DiskLog::new(device(&f, 512), 66, SyncMode::Default).unwrap();
        assert_eq!(resume(&mut log).regions.sync_count(), 66);
        let mut bits = [0u8; 16];
        f.read_exact_at(&mut bits, 1024).unwrap();
        assert_eq!(
            bits,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03, 0, 0, 0, 0, 0, 0, 0]
        );
        // Grown to 80: the 14 new regions are out of sync.
        let mut log = DiskLog::new(device(&f, 512), 80, SyncMode::Default).unwrap();
        let r = resume(&mut log);
        assert_eq!(r.regions.sync_count(), 66);
        assert!(!r.regions.in_sync(66).unwrap());
    }

    #[test]
    fn bad_version_resyncs_and_is_written_back_as_found() {
        let (_tmp, f) = log_file(4096);
        let mut h = [0u8; 16];
        DiskHeader {
            magic: MAGIC,
            version: 7,
            nr_regions: 8,
        }
        .encode(&mut h);
        f.write_all_at(&h, 0).unwrap();
        f.write_all_at(&[0xff], 1024).unwrap();
        let mut log = DiskLog::new(device(&f, 512), 8, SyncMode::Default).unwrap();
        let r = resume(&mut log);
        r.write.unwrap();
        assert_eq!(r.regions.sync_count(), 0);
        assert_eq!(log.health(), Health::Dead);
        let s = summarize(&device(&f, 512), None).unwrap();
        assert_eq!(s.to_string(), "magic=ok version=7 nr_regions=8 clean=0");
        // Version 1 from an old little-endian kernel is read as 2.
        DiskHeader {
            magic: MAGIC,
            version: 1,
            nr_regions: 8,
        }
        .encode(&mut h);
        f.write_all_at(&h, 0).unwrap();
        f.write_all_at(&[0x0f], 1024).unwrap();
        let mut log = DiskLog::new(device(&f, 512), 8, SyncMode::Default).unwrap();
        let r = resume(&mut log);
        if cfg!(target_endian = "little") {
            assert_eq!(r.regions.sync_count(), 4);
            assert_eq!(summarize(&device(&f, 512), None).unwrap().header.version, 2);
        }
    }

    #[test]
    fn too_small_devices_are_refused() {
        let (_tmp, f) = log_file(1024 + 512 - 1);
        let err = DiskLog::new(device(&f, 512), 8, SyncMode::Default).unwrap_err();
        assert!(
            err.to_string().contains("too small: need 1536 bytes"),
            "{err}"
        );
    }

    #[test]
    fn nothing_is_written_before_the_first_resume() {
        let (_tmp, f) = log_file(4096);
        let mut log = DiskLog::new(device(&f, 512), 8, SyncMode::NoSync).unwrap();
        log.set_clean(3, false);
        assert!(!log.flush().unwrap());
        let mut disk = [0u8; 2048];
        f.read_exact_at(&mut disk, 0).unwrap();
        assert!(disk.iter().all(|&b| b == 0));
    }
}
