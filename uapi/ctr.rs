// SPDX-License-Identifier: GPL-2.0

//! The CTR request's payload: `"<target sectors> <log type> <type args...>"`.
//!
//! The kernel builds it from the table's log arguments that follow the UUID and the feature
//! words (those stay in the kernel), with single spaces between the words; the server parses
//! it. The first CTR of a log sends the string without a NUL; when the kernel re-creates the
//! log on a restarted server it sends the same string NUL-terminated, as upstream does.

use core::fmt;

/// Why a CTR string could not be built or parsed.
///
/// Only building can fail in the kernel, which never parses the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrError {
    /// The string does not fit the request.
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The string is not UTF-8 (the kernel passes the table's words on unchanged).
    #[cfg(not(MODULE))]
    NotUtf8,
    /// The first word is not a number of sectors.
    #[cfg(not(MODULE))]
    NoTargetLength,
    /// Nothing follows the target length.
    #[cfg(not(MODULE))]
    NoLogType,
}

impl fmt::Display for CtrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLong { len, max } => write!(
                f,
                "log arguments too long for the server ({len} bytes, at most {max})"
            ),
            #[cfg(not(MODULE))]
            Self::NotUtf8 => f.write_str("CTR string is not UTF-8"),
            #[cfg(not(MODULE))]
            Self::NoTargetLength => f.write_str("CTR string does not start with the target length"),
            #[cfg(not(MODULE))]
            Self::NoLogType => f.write_str("no log type in CTR string"),
        }
    }
}

impl core::error::Error for CtrError {}

/// Writes the CTR payload `"<target sectors> <arg> <arg>..."` (no NUL) into `out`.
///
/// Returns its length; the string may fill `out` (upstream accepts a string of the whole
/// payload size at creation, then fails to re-send it NUL-terminated when it reconnects).
pub fn ctr_string<S: AsRef<[u8]>>(
    target_sectors: u64,
    server_args: &[S],
    out: &mut [u8],
) -> Result<usize, CtrError> {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut v = target_sectors;
    loop {
        start -= 1;
        // CAST: a remainder below 10.
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let first = &digits[start..];
    let len = server_args
        .iter()
        .fold(first.len(), |n, a| n + 1 + a.as_ref().len());
    if len > out.len() {
        return Err(CtrError::TooLong {
            len,
            max: out.len(),
        });
    }
    out[..first.len()].copy_from_slice(first);
    let mut at = first.len();
    for a in server_args {
        let a = a.as_ref();
        out[at] = b' ';
        out[at + 1..at + 1 + a.len()].copy_from_slice(a);
        at += 1 + a.len();
    }
    Ok(at)
}

/// The server's arguments in a CTR string: everything after the target length.
pub fn ctr_server_args(ctr: &[u8]) -> &[u8] {
    ctr.iter()
        .position(|&b| b == b' ')
        .map_or(&[][..], |i| &ctr[i + 1..])
}

/// A CTR payload as a server receives it.
// The kernel only builds the string.
#[cfg(not(MODULE))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctr<'a> {
    /// Length of the mirror in sectors.
    pub target_sectors: u64,
    /// The log type and its arguments, as the kernel sent them (without the NUL).
    pub args: &'a str,
}

#[cfg(not(MODULE))]
impl<'a> Ctr<'a> {
    /// Parses a CTR payload, with or without its terminating NUL.
    pub fn parse(payload: &'a [u8]) -> Result<Self, CtrError> {
        let text = core::str::from_utf8(payload)
            .map_err(|_| CtrError::NotUtf8)?
            .trim_end_matches('\0');
        let text = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let (first, args) = text
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((text, ""));
        let target_sectors = first.parse().map_err(|_| CtrError::NoTargetLength)?;
        let args = args.trim_matches(|c: char| c.is_ascii_whitespace());
        if args.is_empty() {
            return Err(CtrError::NoLogType);
        }
        Ok(Self {
            target_sectors,
            args,
        })
    }

    /// The log type: the first word of [`Ctr::args`].
    pub fn log_type(&self) -> &'a str {
        self.words().next().unwrap_or("")
    }

    /// The words of [`Ctr::args`]: the log type, then its arguments.
    pub fn words(&self) -> core::str::SplitAsciiWhitespace<'a> {
        self.args.split_ascii_whitespace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctr_string_format_and_limit() {
        let mut buf = [0u8; 332];
        let n = ctr_string(2097152, &["clustered-disk", "253:2", "1024"], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"2097152 clustered-disk 253:2 1024");
        // The longest string fills the buffer.
        let arg = [b'a'; 330];
        let arg = core::str::from_utf8(&arg).unwrap();
        assert_eq!(ctr_string(1, &[arg], &mut buf), Ok(332));
        let arg = [b'a'; 331];
        let arg = core::str::from_utf8(&arg).unwrap();
        assert_eq!(
            ctr_string(1, &[arg], &mut buf),
            Err(CtrError::TooLong { len: 333, max: 332 })
        );
        let n = ctr_string(u64::MAX, &["core", "8"], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"18446744073709551615 core 8");
        let n = ctr_string(0, &["core", "8"], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"0 core 8");
    }

    #[test]
    fn what_the_kernel_builds_the_server_reads() {
        let mut buf = [0u8; 64];
        let n = ctr_string(16384, &["disk", "253:2", "1024", "nosync"], &mut buf).unwrap();
        assert_eq!(ctr_server_args(&buf[..n]), b"disk 253:2 1024 nosync");
        let expected = Ctr {
            target_sectors: 16384,
            args: "disk 253:2 1024 nosync",
        };
        assert_eq!(Ctr::parse(&buf[..n]), Ok(expected));
        // The re-creation after a reconnect sends the NUL too.
        buf[n] = 0;
        let ctr = Ctr::parse(&buf[..n + 1]).unwrap();
        assert_eq!(ctr, expected);
        assert_eq!(ctr.log_type(), "disk");
        let words: [&str; 4] = {
            let mut w = ctr.words();
            core::array::from_fn(|_| w.next().unwrap())
        };
        assert_eq!(words, ["disk", "253:2", "1024", "nosync"]);
    }

    #[test]
    fn malformed_ctr_strings_are_refused() {
        assert_eq!(Ctr::parse(b"x core 8"), Err(CtrError::NoTargetLength));
        assert_eq!(Ctr::parse(b""), Err(CtrError::NoTargetLength));
        assert_eq!(Ctr::parse(b"-1 core 8"), Err(CtrError::NoTargetLength));
        assert_eq!(Ctr::parse(b"16"), Err(CtrError::NoLogType));
        assert_eq!(Ctr::parse(b"16 \0"), Err(CtrError::NoLogType));
        assert_eq!(Ctr::parse(b"\xff"), Err(CtrError::NotUtf8));
    }
}
