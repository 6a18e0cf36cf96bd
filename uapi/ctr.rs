// SPDX-License-Identifier: GPL-2.0

//! The log's table arguments and the strings built from them.
//!
//! A table line reads `userspace <argc> <uuid> [integrated_flush] <type> <type args...>`. The
//! module hands the server `"<target sectors> <type> <type args...>"` in the CTR request, and
//! rebuilds the TABLE status from the same arguments.

use core::fmt::{self, Write};

use super::message::MAX_UUID_LEN;

/// Fewest arguments a userspace log takes: uuid, log type, one type argument.
pub const MIN_ARGS: usize = 3;
/// The optional feature word right after the UUID (matched without regard to case).
pub const INTEGRATED_FLUSH: &str = "integrated_flush";

/// Why a table's log arguments were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// Fewer than [`MIN_ARGS`] arguments.
    TooFew(usize),
    /// The UUID is longer than 128 bytes.
    UuidTooLong(usize),
    /// `integrated_flush` but no log type after it.
    MissingLogType,
    /// The CTR string does not fit the request.
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooFew(n) => write!(
                f,
                "too few arguments to userspace dirty log ({n}, need at least {MIN_ARGS})"
            ),
            Self::UuidTooLong(n) => write!(
                f,
                "UUID argument too long ({n} bytes, at most {MAX_UUID_LEN})"
            ),
            Self::MissingLogType => write!(f, "no log type after integrated_flush"),
            Self::TooLong { len, max } => {
                write!(
                    f,
                    "log arguments too long for the server ({len} bytes, at most {max})"
                )
            }
        }
    }
}

impl core::error::Error for ArgsError {}

/// The parsed log arguments of a table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogArgs<'a, A> {
    /// The log's UUID.
    pub uuid: &'a [u8],
    /// Whether marks travel inside FLUSH requests (protocol v3).
    pub integrated_flush: bool,
    /// The log type and its arguments, as the server gets them.
    pub server_args: A,
    /// The number of arguments in the table, UUID and feature word included.
    pub table_argc: usize,
}

/// Splits a table's log arguments into UUID, feature word and the server's part.
pub fn parse_args<'a, S: AsRef<[u8]>>(args: &'a [S]) -> Result<LogArgs<'a, &'a [S]>, ArgsError> {
    if args.len() < MIN_ARGS {
        return Err(ArgsError::TooFew(args.len()));
    }
    let uuid = args[0].as_ref();
    if uuid.len() > MAX_UUID_LEN {
        return Err(ArgsError::UuidTooLong(uuid.len()));
    }
    let rest = &args[1..];
    let integrated_flush = rest[0]
        .as_ref()
        .eq_ignore_ascii_case(INTEGRATED_FLUSH.as_bytes());
    let server_args = if integrated_flush { &rest[1..] } else { rest };
    if server_args.is_empty() {
        return Err(ArgsError::MissingLogType);
    }
    Ok(LogArgs {
        uuid,
        integrated_flush,
        server_args,
        table_argc: args.len(),
    })
}

/// A `fmt::Write` into a byte buffer that fails instead of truncating.
pub struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> ByteWriter<'a> {
    /// A writer that fills `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends raw bytes.
    pub fn push(&mut self, bytes: &[u8]) -> fmt::Result {
        let end = self.len.checked_add(bytes.len()).ok_or(fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

impl Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes())
    }
}

/// Writes the CTR payload `"<target sectors> <arg> <arg>..."` (no NUL) into `out`.
///
/// Returns its length; the string may fill `out` (upstream accepts a string of the whole
/// payload size at creation, then fails to re-send it NUL-terminated when it reconnects).
pub fn ctr_string<S: AsRef<[u8]>>(
    target_sectors: u64,
    server_args: &[S],
    out: &mut [u8],
) -> Result<usize, ArgsError> {
    let max = out.len();
    let mut needed = 20;
    for a in server_args {
        needed += 1 + a.as_ref().len();
    }
    let mut w = ByteWriter::new(&mut out[..max]);
    let res = (|| {
        write!(w, "{target_sectors}")?;
        for a in server_args {
            w.push(b" ")?;
            w.push(a.as_ref())?;
        }
        Ok::<(), fmt::Error>(())
    })();
    match res {
        Ok(()) => Ok(w.len()),
        Err(_) => Err(ArgsError::TooLong { len: needed, max }),
    }
}

/// Writes the TABLE status of a userspace log, exactly as upstream formats it:
/// `"userspace <argc> <uuid> [integrated_flush ]<server args> "`.
///
/// `server_args` is the CTR string without its leading target length.
pub fn table_status(
    table_argc: usize,
    uuid: &[u8],
    integrated_flush: bool,
    server_args: &[u8],
    out: &mut ByteWriter<'_>,
) -> fmt::Result {
    write!(out, "userspace {table_argc} ")?;
    out.push(uuid)?;
    out.push(b" ")?;
    if integrated_flush {
        out.push(b"integrated_flush ")?;
    }
    out.push(server_args)?;
    out.push(b" ")
}

/// The server's arguments in a CTR string: everything after the target length.
pub fn ctr_server_args(ctr: &[u8]) -> &[u8] {
    ctr.iter()
        .position(|&b| b == b' ')
        .map_or(&[][..], |i| &ctr[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_split_like_upstream() {
        let a = parse_args(&["U1", "clustered-disk", "253:2", "1024"]).unwrap();
        assert_eq!(a.uuid, b"U1");
        assert!(!a.integrated_flush);
        assert_eq!(a.server_args, &["clustered-disk", "253:2", "1024"]);
        assert_eq!(a.table_argc, 4);
        let a = parse_args(&["U1", "Integrated_Flush", "core", "1024"]).unwrap();
        assert!(a.integrated_flush);
        assert_eq!(a.server_args, &["core", "1024"]);
        assert_eq!(parse_args(&["U1", "core"]), Err(ArgsError::TooFew(2)));
        assert_eq!(
            parse_args(&["U1", "integrated_flush", "x"])
                .unwrap()
                .server_args,
            &["x"]
        );
        let long = [b'x'; 129];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(
            parse_args(&[long, "core", "8"]),
            Err(ArgsError::UuidTooLong(129))
        );
        assert!(parse_args(&[&long[1..], "core", "8"]).is_ok());
    }

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
        assert!(matches!(
            ctr_string(1, &[arg], &mut buf),
            Err(ArgsError::TooLong { .. })
        ));
        let n = ctr_string(u64::MAX, &["core", "8"], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"18446744073709551615 core 8");
    }

    #[test]
    fn table_status_matches_upstream() {
        let mut buf = [0u8; 128];
        let args = ["UUID-1", "integrated_flush", "clustered-core", "1024"];
        let a = parse_args(&args).unwrap();
        let mut ctr = [0u8; 64];
        let n = ctr_string(4096, a.server_args, &mut ctr).unwrap();
        let server_args = ctr_server_args(&ctr[..n]);
        assert_eq!(server_args, b"clustered-core 1024");
        let mut w = ByteWriter::new(&mut buf);
        table_status(
            a.table_argc,
            a.uuid,
            a.integrated_flush,
            server_args,
            &mut w,
        )
        .unwrap();
        let n = w.len();
        assert_eq!(
            &buf[..n],
            b"userspace 4 UUID-1 integrated_flush clustered-core 1024 "
        );
        let mut small = [0u8; 10];
        assert!(table_status(
            4,
            a.uuid,
            true,
            server_args,
            &mut ByteWriter::new(&mut small)
        )
        .is_err());
    }
}
