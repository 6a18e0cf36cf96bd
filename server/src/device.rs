// SPDX-License-Identifier: GPL-2.0
//! The device a disk log lives on: found from the table's `<dev>` argument and opened for
//! durable, uncached I/O.
//!
//! The kernel claims the device exclusively (`dm_get_device`) once the CTR reply names it, so
//! the server opens it without `O_EXCL`. Block devices are opened with `O_DIRECT`: the
//! kernel's own disk log writes with bios that bypass the page cache, and a cached read at
//! RESUME could miss them. Writes are followed by `fdatasync`, which also flushes the device's
//! volatile cache, so a FLUSH is answered only once the bitmap is durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::bitset::{try_filled_vec, AllocError};
use nix::fcntl::OFlag;
use nix::sys::stat::{major, makedev, minor};

/// Logical block size assumed for regular files (the smallest any block device has).
pub const DEFAULT_BLOCK_SIZE: usize = 512;
/// Buffers for `O_DIRECT` are aligned to this, the largest logical block size accepted.
pub const DIRECT_ALIGN: usize = 4096;

nix::ioctl_read_bad!(
    /// `BLKSSZGET`: a block device's logical block size.
    blksszget,
    nix::libc::BLKSSZGET,
    nix::libc::c_int
);

/// A block device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl DevNum {
    /// Parses `major:minor`; anything else is taken for a path.
    pub fn parse(spec: &str) -> Option<Self> {
        let (ma, mi) = spec.split_once(':')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ma) || !digits(mi) {
            return None;
        }
        Some(Self {
            major: ma.parse().ok()?,
            minor: mi.parse().ok()?,
        })
    }

    fn from_rdev(rdev: u64) -> Self {
        Self {
            major: major(rdev) as u32,
            minor: minor(rdev) as u32,
        }
    }

    fn rdev(self) -> u64 {
        makedev(u64::from(self.major), u64::from(self.minor))
    }
}

/// An open log device (or, for tests and file-backed logs, a regular file).
#[derive(Debug)]
pub struct LogDevice {
    file: File,
    /// The node that was opened, for messages.
    path: PathBuf,
    /// The block device's number; `None` for a regular file.
    dev: Option<DevNum>,
    block_size: usize,
    size: u64,
    direct: bool,
}

impl LogDevice {
    /// Opens what a table names, read-write: a path (symlinks followed) or `major:minor`.
    pub fn open(spec: &str) -> Result<Self> {
        Self::open_with(spec, true)
    }

    /// Opens a device only to look at it.
    pub fn open_read_only(spec: &str) -> Result<Self> {
        Self::open_with(spec, false)
    }

    fn open_with(spec: &str, write: bool) -> Result<Self> {
        let path = match DevNum::parse(spec) {
            Some(dev) => node_for(dev)?,
            None => fs::canonicalize(spec).with_context(|| {
                format!("log device {spec}: not found (give a block device path or major:minor)")
            })?,
        };
        let meta = fs::metadata(&path)
            .with_context(|| format!("log device {}: cannot stat", path.display()))?;
        let ft = meta.file_type();
        let block = ft.is_block_device();
        if !block && !ft.is_file() {
            bail!(
                "log device {}: neither a block device nor a regular file",
                path.display()
            );
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(write);
        if block {
            opts.custom_flags(OFlag::O_DIRECT.bits());
        }
        let file = opts.open(&path).with_context(|| {
            format!(
                "log device {}: cannot open it{} (run as root; is it read-only?)",
                path.display(),
                if write { " read-write" } else { "" }
            )
        })?;
        if block {
            let dev = DevNum::from_rdev(meta.rdev());
            let block_size = logical_block_size(&file)
                .with_context(|| format!("log device {}: BLKSSZGET failed", path.display()))?;
            Self::new(file, path, Some(dev), block_size, true)
        } else {
            Self::new(file, path, None, DEFAULT_BLOCK_SIZE, false)
        }
    }

    /// A log stored in a regular file with the given logical block size (for tests).
    pub fn from_file(file: File, path: impl Into<PathBuf>, block_size: usize) -> Result<Self> {
        Self::new(file, path.into(), None, block_size, false)
    }

    fn new(
        mut file: File,
        path: PathBuf,
        dev: Option<DevNum>,
        block_size: usize,
        direct: bool,
    ) -> Result<Self> {
        if !block_size.is_power_of_two() || !(512..=DIRECT_ALIGN).contains(&block_size) {
            bail!(
                "log device {}: unusable logical block size {block_size}",
                path.display()
            );
        }
        let size = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("log device {}: cannot find its size", path.display()))?;
        Ok(Self {
            file,
            path,
            dev,
            block_size,
            size,
            direct,
        })
    }

    /// The block device's number, which the CTR reply names; `None` for a regular file.
    pub fn dev(&self) -> Option<DevNum> {
        self.dev
    }

    /// The node or file that was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What status lines call the device: `major:minor` as dm does, else the file's path.
    /// Formatted where it is written (a STATUS_INFO reply costs no allocation).
    pub fn name(&self) -> impl std::fmt::Display + '_ {
        DeviceName(self)
    }

    /// Bytes the device holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The unit of I/O: every transfer is a multiple of it.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// A zeroed buffer of `len` bytes fit for this device's I/O; an error when memory is short.
    pub fn buffer(&self, len: usize) -> Result<IoBuf, AllocError> {
        IoBuf::try_new(len)
    }

    /// Reads `buf` from `offset`; both must be block-aligned.
    pub fn read_at(&self, buf: &mut IoBuf, offset: u64) -> io::Result<()> {
        self.check_aligned(buf.len(), offset)?;
        self.file.read_exact_at(buf.as_mut(), offset)
    }

    /// Writes `buf` at `offset`; [`LogDevice::sync`] makes it durable.
    pub fn write_at(&self, buf: &IoBuf, offset: u64) -> io::Result<()> {
        self.check_aligned(buf.len(), offset)?;
        self.file.write_all_at(buf.as_ref(), offset)
    }

    /// Waits until everything written is on stable storage (the device's cache flushed too).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn check_aligned(&self, len: usize, offset: u64) -> io::Result<()> {
        let bs = self.block_size as u64;
        if self.direct && ((len as u64) % bs != 0 || offset % bs != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("I/O of {len} bytes at {offset} is not aligned to {bs}"),
            ));
        }
        Ok(())
    }
}

/// The device node for `major:minor`: udev's `/dev/block` link, else the kernel's name for it.
fn node_for(dev: DevNum) -> Result<PathBuf> {
    let is_it = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.file_type().is_block_device() && m.rdev() == dev.rdev())
            .unwrap_or(false)
    };
    let link = PathBuf::from(format!("/dev/block/{dev}"));
    if is_it(&link) {
        return Ok(fs::canonicalize(&link).unwrap_or(link));
    }
    let uevent = format!("/sys/dev/block/{dev}/uevent");
    let text = fs::read_to_string(&uevent)
        .with_context(|| format!("log device {dev}: no such block device ({uevent})"))?;
    if let Some(name) = text.lines().find_map(|l| l.strip_prefix("DEVNAME=")) {
        let node = Path::new("/dev").join(name);
        if is_it(&node) {
            return Ok(node);
        }
    }
    bail!("log device {dev}: no node for it in /dev (mount devtmpfs or pass the device's path)")
}

fn logical_block_size(file: &File) -> Result<usize> {
    let mut size: nix::libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a live c_int.
    unsafe { blksszget(file.as_raw_fd(), &mut size) }?;
    Ok(usize::try_from(size)?)
}

/// A byte buffer aligned for `O_DIRECT`, allocated once per log.
pub struct IoBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl IoBuf {
    /// Bytes of memory a buffer of `len` bytes takes.
    pub fn bytes_for(len: usize) -> u64 {
        (len as u64).saturating_add(DIRECT_ALIGN as u64)
    }

    /// `len` zero bytes starting on a [`DIRECT_ALIGN`] boundary, reserved fallibly: a disk
    /// log's bitmap can be large (512 MiB for 2^32 regions).
    pub fn try_new(len: usize) -> Result<Self, AllocError> {
        let total = len.checked_add(DIRECT_ALIGN).ok_or(AllocError {
            bytes: Self::bytes_for(len),
        })?;
        let storage = try_filled_vec(total, 0u8)?;
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        assert!(start < DIRECT_ALIGN, "byte pointers can always be aligned");
        Ok(Self {
            storage,
            start,
            len,
        })
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for IoBuf {
    fn as_ref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl AsMut<[u8]> for IoBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoBuf({} bytes)", self.len)
    }
}

/// [`LogDevice::name`].
struct DeviceName<'a>(&'a LogDevice);

impl std::fmt::Display for DeviceName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.dev {
            Some(d) => write!(f, "{d}"),
            None => write!(f, "{}", self.0.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_and_paths_are_told_apart() {
        assert_eq!(
            DevNum::parse("253:2"),
            Some(DevNum {
                major: 253,
                minor: 2
            })
        );
        assert_eq!(DevNum::parse("253:2").unwrap().to_string(), "253:2");
        for path in [
            "/dev/ram2",
            "/dev/disk/by-path/pci-0000:00:1f.2",
            "253:",
            ":2",
            "1:2:3",
            "-1:2",
            "99999999999:1",
        ] {
            assert_eq!(DevNum::parse(path), None, "{path}");
        }
    }

    #[test]
    fn io_buffers_are_aligned_and_zeroed() {
        for len in [512, 1536, 4096] {
            let b = IoBuf::try_new(len).unwrap();
            assert_eq!(b.as_ref().as_ptr() as usize % DIRECT_ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.as_ref().iter().all(|&x| x == 0));
        }
        assert!(IoBuf::try_new(usize::MAX).is_err());
        assert!(IoBuf::try_new(isize::MAX as usize).is_err());
    }

    #[test]
    fn regular_files_open_with_their_size_and_no_device_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let f = File::create(&path).unwrap();
        f.set_len(8192).unwrap();
        // Through a symlink, as /dev/mapper names are.
        let link = dir
            .path()
            .join("a-rather-long-symlink-name-for-the-log-device");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let d = LogDevice::open(link.to_str().unwrap()).unwrap();
        assert_eq!(d.size(), 8192);
        assert_eq!(d.dev(), None);
        assert_eq!(d.block_size(), DEFAULT_BLOCK_SIZE);
        assert_eq!(d.path(), fs::canonicalize(&path).unwrap());
        let mut buf = d.buffer(1024).unwrap();
        buf.as_mut()[0] = 7;
        d.write_at(&buf, 512).unwrap();
        d.sync().unwrap();
        let mut back = d.buffer(1024).unwrap();
        d.read_at(&mut back, 512).unwrap();
        assert_eq!(back.as_ref()[0], 7);
        assert!(LogDevice::open(dir.path().join("missing").to_str().unwrap()).is_err());
        assert!(LogDevice::open(dir.path().to_str().unwrap()).is_err());
    }

    #[test]
    fn block_devices_are_found_by_number() {
        // No block device has this number (the largest major and minor there are).
        let err = LogDevice::open("4095:1048575").map(|_| ()).unwrap_err();
        assert!(format!("{err:#}").contains("4095:1048575"), "{err:#}");
    }
}
