// SPDX-License-Identifier: GPL-2.0

//! The log's arguments in a table line, and the TABLE status rebuilt from them.
//!
//! A table line reads `userspace <argc> <uuid> [features...] <type> <type args...>`. The
//! features are `integrated_flush` (upstream's) and `max_server_wait=<seconds>` (this
//! project's, see [`MAX_SERVER_WAIT`]); they are the kernel's business and never reach the
//! server, which gets the log type and its arguments in the CTR string (`uapi/ctr.rs`).
//!
//! Nothing here needs the kernel: `cargo test` runs this file's tests on the host
//! (`tests/host`).

use core::fmt::{self, Write};

use crate::uapi::MAX_UUID_LEN;

/// Fewest arguments a userspace log takes: uuid, log type, one type argument.
pub(crate) const MIN_ARGS: usize = 3;
/// The optional feature word right after the UUID (matched without regard to case).
pub(crate) const INTEGRATED_FLUSH: &str = "integrated_flush";
/// The feature word that bounds how long the log waits for a missing or silent server:
/// `max_server_wait=<seconds>`, 0 meaning forever (upstream's behaviour). Past the bound, log
/// requests fail, so the mirror sees a log failure, and the table raises an event.
pub(crate) const MAX_SERVER_WAIT: &str = "max_server_wait=";

/// Why a table's log arguments were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArgsError {
    /// Fewer than [`MIN_ARGS`] arguments.
    TooFew(usize),
    /// The UUID is longer than 128 bytes.
    UuidTooLong(usize),
    /// Feature words but no log type after them.
    MissingLogType,
    /// `max_server_wait=` without a number of seconds.
    BadServerWait,
    /// A feature word given twice: the table would not read back as it was loaded.
    RepeatedFeature,
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
            Self::MissingLogType => write!(f, "no log type after the feature arguments"),
            Self::BadServerWait => write!(
                f,
                "max_server_wait= needs a whole number of seconds (0 waits forever)"
            ),
            Self::RepeatedFeature => write!(
                f,
                "a feature argument (integrated_flush, max_server_wait=) is given twice"
            ),
        }
    }
}

/// The feature words of a table line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Features {
    /// Whether marks travel inside FLUSH requests (protocol v3).
    pub(crate) integrated_flush: bool,
    /// `max_server_wait=<seconds>` as given (0: wait forever); `None` when absent.
    pub(crate) max_server_wait: Option<u32>,
}

impl Features {
    /// Reads one feature word; `Ok(false)` when `word` is not one.
    fn take(&mut self, word: &[u8]) -> Result<bool, ArgsError> {
        if word.eq_ignore_ascii_case(INTEGRATED_FLUSH.as_bytes()) {
            if self.integrated_flush {
                return Err(ArgsError::RepeatedFeature);
            }
            self.integrated_flush = true;
            return Ok(true);
        }
        let key = MAX_SERVER_WAIT.as_bytes();
        if word.len() < key.len() || !word[..key.len()].eq_ignore_ascii_case(key) {
            return Ok(false);
        }
        let seconds = core::str::from_utf8(&word[key.len()..])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(ArgsError::BadServerWait)?;
        if self.max_server_wait.replace(seconds).is_some() {
            return Err(ArgsError::RepeatedFeature);
        }
        Ok(true)
    }

    /// Writes the words back, each followed by a space, in one canonical order.
    fn write(&self, out: &mut ByteWriter<'_>) -> fmt::Result {
        if self.integrated_flush {
            out.push(INTEGRATED_FLUSH.as_bytes())?;
            out.push(b" ")?;
        }
        if let Some(s) = self.max_server_wait {
            write!(out, "{MAX_SERVER_WAIT}{s} ")?;
        }
        Ok(())
    }
}

/// The parsed log arguments of a table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogArgs<'a, A> {
    /// The log's UUID.
    pub(crate) uuid: &'a [u8],
    /// The feature words between the UUID and the log type.
    pub(crate) features: Features,
    /// The log type and its arguments, as the server gets them.
    pub(crate) server_args: A,
    /// The number of arguments in the table, UUID and feature word included.
    pub(crate) table_argc: usize,
}

/// Splits a table's log arguments into UUID, feature words and the server's part.
pub(crate) fn parse_args<'a, S: AsRef<[u8]>>(
    args: &'a [S],
) -> Result<LogArgs<'a, &'a [S]>, ArgsError> {
    if args.len() < MIN_ARGS {
        return Err(ArgsError::TooFew(args.len()));
    }
    let uuid = args[0].as_ref();
    if uuid.len() > MAX_UUID_LEN {
        return Err(ArgsError::UuidTooLong(uuid.len()));
    }
    let mut features = Features::default();
    let mut rest = &args[1..];
    while let Some((word, tail)) = rest.split_first() {
        if !features.take(word.as_ref())? {
            break;
        }
        rest = tail;
    }
    if rest.is_empty() {
        return Err(ArgsError::MissingLogType);
    }
    Ok(LogArgs {
        uuid,
        features,
        server_args: rest,
        table_argc: args.len(),
    })
}

/// A `fmt::Write` into a byte buffer that fails instead of truncating.
pub(crate) struct ByteWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> ByteWriter<'a> {
    /// A writer that fills `buf` from its start.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends raw bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> fmt::Result {
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

/// Writes the TABLE status of a userspace log, as upstream formats it:
/// `"userspace <argc> <uuid> [integrated_flush ][max_server_wait=N ]<server args> "`.
///
/// `server_args` is the CTR string without its leading target length.
pub(crate) fn table_status(
    table_argc: usize,
    uuid: &[u8],
    features: &Features,
    server_args: &[u8],
    out: &mut ByteWriter<'_>,
) -> fmt::Result {
    write!(out, "userspace {table_argc} ")?;
    out.push(uuid)?;
    out.push(b" ")?;
    features.write(out)?;
    out.push(server_args)?;
    out.push(b" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::ctr::{ctr_server_args, ctr_string};

    #[test]
    fn args_are_split_like_upstream() {
        let a = parse_args(&["U1", "clustered-disk", "253:2", "1024"]).unwrap();
        assert_eq!(a.uuid, b"U1");
        assert_eq!(a.features, Features::default());
        assert_eq!(a.server_args, &["clustered-disk", "253:2", "1024"]);
        assert_eq!(a.table_argc, 4);
        let a = parse_args(&["U1", "Integrated_Flush", "core", "1024"]).unwrap();
        assert!(a.features.integrated_flush);
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
    fn table_status_matches_upstream() {
        let mut buf = [0u8; 128];
        let args = ["UUID-1", "integrated_flush", "clustered-core", "1024"];
        let a = parse_args(&args).unwrap();
        let mut ctr = [0u8; 64];
        let n = ctr_string(4096, a.server_args, &mut ctr).unwrap();
        let server_args = ctr_server_args(&ctr[..n]);
        assert_eq!(server_args, b"clustered-core 1024");
        let mut w = ByteWriter::new(&mut buf);
        table_status(a.table_argc, a.uuid, &a.features, server_args, &mut w).unwrap();
        let n = w.len();
        assert_eq!(
            &buf[..n],
            b"userspace 4 UUID-1 integrated_flush clustered-core 1024 "
        );
        let mut small = [0u8; 10];
        assert!(table_status(
            4,
            a.uuid,
            &a.features,
            server_args,
            &mut ByteWriter::new(&mut small)
        )
        .is_err());
    }

    #[test]
    fn repeated_feature_words_are_refused() {
        for args in [
            &["U", "integrated_flush", "integrated_flush", "core", "8"][..],
            &[
                "U",
                "max_server_wait=1",
                "integrated_flush",
                "max_server_wait=2",
                "core",
                "8",
            ],
            &["U", "INTEGRATED_FLUSH", "integrated_flush", "core", "8"],
        ] {
            assert_eq!(
                parse_args(args),
                Err(ArgsError::RepeatedFeature),
                "{args:?}"
            );
        }
    }

    #[test]
    fn max_server_wait_is_a_feature_in_either_order() {
        let a = parse_args(&["U", "max_server_wait=30", "integrated_flush", "core", "8"]).unwrap();
        assert_eq!(
            a.features,
            Features {
                integrated_flush: true,
                max_server_wait: Some(30)
            }
        );
        assert_eq!(a.server_args, &["core", "8"]);
        let a = parse_args(&["U", "MAX_SERVER_WAIT=0", "core", "8"]).unwrap();
        assert_eq!(a.features.max_server_wait, Some(0));
        for bad in [
            "max_server_wait=",
            "max_server_wait=-1",
            "max_server_wait=1s",
            "max_server_wait=99999999999",
        ] {
            assert_eq!(
                parse_args(&["U", bad, "core", "8"]),
                Err(ArgsError::BadServerWait),
                "{bad}"
            );
        }
        assert_eq!(
            parse_args(&["U", "integrated_flush", "max_server_wait=5", "x"]).map(|a| a.server_args),
            Ok(&["x"][..])
        );
        assert_eq!(
            parse_args(&["U", "integrated_flush", "max_server_wait=5"]),
            Err(ArgsError::MissingLogType)
        );
        let mut buf = [0u8; 64];
        let mut w = ByteWriter::new(&mut buf);
        table_status(5, b"U", &a_features(), b"core 8", &mut w).unwrap();
        let n = w.len();
        assert_eq!(
            &buf[..n],
            b"userspace 5 U integrated_flush max_server_wait=7 core 8 "
        );
    }

    fn a_features() -> Features {
        Features {
            integrated_flush: true,
            max_server_wait: Some(7),
        }
    }
}
