// SPDX-License-Identifier: GPL-2.0
//! `--record FILE`: one line per request received, written before the request is handled.
//!
//! ```text
//! seq=<seq> luid=<luid> |<TYPE> L<k> v<version> e<error> n<data_size> uuid=<uuid> pad=<ok|nonzero> <hex|->
//! ```
//!
//! Everything after `|` is comparable across kernels (`cut -d'|' -f2-`): `L<k>` numbers the
//! distinct luids in order of first appearance, since luids are kernel pointers or counters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use dm_ulog_uapi::{Request, RequestType, CN_MSG_SIZE, HEADER_PADDING};

/// Whether every padding byte of the header ([`HEADER_PADDING`]) of the raw message
/// (`cn_msg` first) is zero.
pub fn padding_is_zero(msg: &[u8]) -> bool {
    let pad = CN_MSG_SIZE + HEADER_PADDING.start..CN_MSG_SIZE + HEADER_PADDING.end;
    msg.get(pad).is_some_and(|p| p.iter().all(|&b| b == 0))
}

/// A raw request type shown by its record name: upstream's without `DM_ULOG_`, or
/// `TYPE<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeName(pub u32);

impl std::fmt::Display for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match RequestType::try_from(self.0) {
            Ok(k) => f.write_str(k.name()),
            Err(_) => write!(f, "TYPE{}", self.0),
        }
    }
}

/// Appends the request type's record name ([`TypeName`]) to `out`.
pub fn type_name(request_type: u32, out: &mut String) {
    let _ = write!(out, "{}", TypeName(request_type));
}

/// Appends request lines to a file.
pub struct Recorder {
    file: File,
    luids: HashMap<u64, usize>,
    line: String,
}

impl Recorder {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                crate::cli::Fatal::config(format!(
                    "cannot open the record file {}: {e}",
                    path.display()
                ))
            })?;
        Ok(Self {
            file,
            luids: HashMap::new(),
            line: String::with_capacity(1024),
        })
    }

    /// Formats the line for a request; `msg` is the raw message it was parsed from.
    pub fn format(&mut self, msg: &[u8], req: &Request<'_>) -> &str {
        let h = &req.header;
        let next = self.luids.len() + 1;
        let k = *self.luids.entry(h.luid).or_insert(next);
        let line = &mut self.line;
        line.clear();
        let _ = write!(line, "seq={} luid={} |", h.seq, h.luid);
        type_name(h.request_type, line);
        let _ = write!(
            line,
            " L{k} v{} e{} n{} uuid={} pad={} ",
            h.version,
            h.error,
            h.data_size,
            h.uuid(),
            if padding_is_zero(msg) {
                "ok"
            } else {
                "nonzero"
            },
        );
        if req.data.is_empty() {
            line.push('-');
        }
        for b in req.data {
            let _ = write!(line, "{b:02x}");
        }
        line.push('\n');
        &self.line
    }

    /// Writes the line for a request straight to the file (one `write`, no buffering).
    pub fn record(&mut self, msg: &[u8], req: &Request<'_>) -> std::io::Result<()> {
        self.format(msg, req);
        self.file.write_all(self.line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dm_ulog_uapi::{encode_message, Header, HEADER_SIZE};

    fn message(kind: u32, luid: u64, seq: u32, data: &[u8]) -> Vec<u8> {
        let mut h = Header::request(b"LOG-A", luid, RequestType::Ctr, seq, data.len()).unwrap();
        h.request_type = kind;
        let mut buf = vec![0u8; 512];
        let n = encode_message(&mut buf, &h, data).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn padding_is_the_bytes_no_field_covers() {
        // A header with every field non-zero and a full-length UUID: the only zero bytes left
        // are the UUID's NUL and the padding.
        let uuid = [b'u'; 128];
        let mut h = Header::request(&uuid, u64::MAX, RequestType::Flush, u32::MAX, 0).unwrap();
        h.version = u32::MAX;
        h.error = -1;
        h.data_size = u32::MAX;
        h.request_type = u32::MAX;
        let mut buf = [0xffu8; HEADER_SIZE];
        h.encode(&mut buf).unwrap();
        let zero: Vec<usize> = (0..HEADER_SIZE).filter(|&i| buf[i] == 0).collect();
        let expected: Vec<usize> = std::iter::once(8 + 128).chain(HEADER_PADDING).collect();
        assert_eq!(zero, expected);
    }

    #[test]
    fn lines_have_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        let mut rec = Recorder::open(&path).unwrap();
        let m1 = message(1, 0xffff_8880_0000_1000, 7, b"8 core 2");
        rec.record(&m1, &Request::parse(&m1).unwrap()).unwrap();
        let m2 = message(9, 5, 8, &3u64.to_le_bytes());
        rec.record(&m2, &Request::parse(&m2).unwrap()).unwrap();
        let mut m3 = message(0x1000 | 99, 0xffff_8880_0000_1000, 9, b"");
        m3[CN_MSG_SIZE + 138] = 1;
        rec.record(&m3, &Request::parse(&m3).unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "seq=7 luid=18446612682070036480 |CTR L1 v3 e0 n8 uuid=LOG-A pad=ok 3820636f72652032\n\
             seq=8 luid=5 |FLUSH L2 v3 e0 n8 uuid=LOG-A pad=ok 0300000000000000\n\
             seq=9 luid=18446612682070036480 |TYPE4195 L1 v3 e0 n0 uuid=LOG-A pad=nonzero -\n"
        );
        // Appends, and each line is in the file as soon as it is recorded.
        let mut rec = Recorder::open(&path).unwrap();
        rec.record(&m2, &Request::parse(&m2).unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
    }
}
