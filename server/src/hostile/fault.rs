// SPDX-License-Identifier: GPL-2.0
//! Scripted faults: `--fault <type>:<action>[*<count>]`, applied in order to the first
//! requests they match.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use dm_ulog_uapi::RequestType;

/// What a fault does instead of the correct reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No reply at all: the kernel resends after its timeout.
    Drop,
    /// A reply with header error `-N` and no payload.
    Errno(i32),
    /// A bare ACK: `cn_msg.len` 0 and `cn_msg.ack` N, no header.
    Ack(u32),
    /// A successful reply of N zero bytes.
    Size(usize),
    /// A successful reply holding one host-endian `u64`.
    U64(u64),
    /// A successful CTR-style reply: the string and a NUL.
    Device(String),
    /// The string without a NUL.
    DeviceRaw(String),
    /// A reply to a seq nobody waits for, then the correct one.
    Stray,
    /// The correct reply twice.
    Dup,
    /// The correct reply after a pause.
    Delay(Duration),
    /// The correct reply, but sent by a child without CAP_SYS_ADMIN (so the kernel drops it).
    Unpriv,
    /// The correct reply with a `data_size` field that lies.
    DataSize(u32),
    /// The correct reply, then the server dies at once (abort), as a crash between two
    /// requests would leave it: what it answered but did not make durable is gone.
    Exit,
    /// A reply with the request's seq but another log's luid (and eight bytes of 3s), then
    /// the correct one: the kernel must take only the second.
    Misaddressed,
    /// As `misaddressed`, but the reply names another request type.
    Mistyped,
    /// The correct reply with luid 0, as cmirrord sends once a request went through its
    /// cluster: the kernel must take it.
    Anonymous,
    /// As `misaddressed`, but the first reply names the request and comes from a connected
    /// socket opened without CAP_SYS_ADMIN (the sender still has it): netlink's check is on
    /// both.
    UnprivSocket,
    /// A withdrawal of the request's whole log (`uapi/in_sync_map.rs`), then the correct
    /// reply: what a cluster's server sends when another node takes a region out of sync
    /// while the kernel waits for this answer.
    Withdraw,
    /// A success reply, and the request not applied at all: a server that ignores it (a
    /// planted bug for the crash checker: `mark_region:ignore`).
    Ignore,
    /// A success reply first, the request applied (and a disk log written and flushed) only
    /// after a pause: a server that answers before its state is durable (a planted bug for
    /// the crash checker: `flush:early=200`).
    Early(Duration),
}

impl Action {
    /// Whether the request changes the server's state: not when the kernel hears nothing or
    /// an error, so that its resend (or its failure) finds the state as it was.
    pub fn applies_request(&self) -> bool {
        match self {
            Self::Drop | Self::Unpriv | Self::Errno(_) | Self::Ignore => false,
            Self::Exit
            | Self::Misaddressed
            | Self::Mistyped
            | Self::Anonymous
            | Self::UnprivSocket => true,
            Self::Ack(n) => *n == 0,
            _ => true,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Drop => write!(f, "drop"),
            Self::Errno(n) => write!(f, "errno={n}"),
            Self::Ack(n) => write!(f, "ack={n}"),
            Self::Size(n) => write!(f, "size={n}"),
            Self::U64(v) => write!(f, "u64={v}"),
            Self::Device(s) => write!(f, "device={s}"),
            Self::DeviceRaw(s) => write!(f, "device-raw={s}"),
            Self::Stray => write!(f, "stray"),
            Self::Dup => write!(f, "dup"),
            Self::Delay(d) => write!(f, "delay={}", d.as_millis()),
            Self::Unpriv => write!(f, "unpriv"),
            Self::DataSize(n) => write!(f, "data-size={n}"),
            Self::Exit => write!(f, "exit"),
            Self::Misaddressed => write!(f, "misaddressed"),
            Self::Mistyped => write!(f, "mistyped"),
            Self::Anonymous => write!(f, "anonymous"),
            Self::UnprivSocket => write!(f, "unpriv-socket"),
            Self::Withdraw => write!(f, "withdraw"),
            Self::Ignore => write!(f, "ignore"),
            Self::Early(d) => write!(f, "early={}", d.as_millis()),
        }
    }
}

fn number<T: FromStr>(what: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{what} needs a number, not {v:?}"))
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s.split_once('=').unwrap_or((s, ""));
        let needs_value = |a: Action| {
            if value.is_empty() && !s.contains('=') {
                Ok(a)
            } else {
                Err(format!("{name} takes no value"))
            }
        };
        match name {
            "drop" => needs_value(Self::Drop),
            "stray" => needs_value(Self::Stray),
            "dup" => needs_value(Self::Dup),
            "unpriv" => needs_value(Self::Unpriv),
            "exit" => needs_value(Self::Exit),
            "misaddressed" => needs_value(Self::Misaddressed),
            "mistyped" => needs_value(Self::Mistyped),
            "anonymous" => needs_value(Self::Anonymous),
            "unpriv-socket" => needs_value(Self::UnprivSocket),
            "withdraw" => needs_value(Self::Withdraw),
            "ignore" => needs_value(Self::Ignore),
            "early" => Ok(Self::Early(Duration::from_millis(number(name, value)?))),
            "errno" => Ok(Self::Errno(number(name, value)?)),
            "ack" => Ok(Self::Ack(number(name, value)?)),
            "size" => Ok(Self::Size(number(name, value)?)),
            "u64" => Ok(Self::U64(match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16)
                    .map_err(|_| format!("u64 needs a number, not {value:?}"))?,
                None => number(name, value)?,
            })),
            "device" => Ok(Self::Device(value.to_string())),
            "device-raw" => Ok(Self::DeviceRaw(value.to_string())),
            "delay" => Ok(Self::Delay(Duration::from_millis(number(name, value)?))),
            "data-size" => Ok(Self::DataSize(number(name, value)?)),
            other => Err(format!(
                "unknown fault action {other:?}: expected drop, errno=N, ack=N, size=N, u64=V, \
                 device=S, device-raw=S, stray, dup, delay=MS, unpriv, data-size=N, exit, misaddressed, \
                 mistyped, anonymous, unpriv-socket, withdraw, ignore or early=MS"
            )),
        }
    }
}

/// One `--fault` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    /// The request type it matches; `None` for `any`.
    pub target: Option<RequestType>,
    /// What it does.
    pub action: Action,
    /// How many requests it applies to; `None` for unlimited (`*0`).
    pub count: Option<u64>,
}

impl FromStr for FaultSpec {
    type Err = String;

    /// `<type>:<action>[*<count>]`, type as in the record format but lower case, or `any`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (target, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("fault {s:?} is not <type>:<action>[*<count>]"))?;
        let target = match target {
            "any" => None,
            t => Some(
                RequestType::ALL
                    .into_iter()
                    .find(|k| k.name().eq_ignore_ascii_case(t))
                    .ok_or_else(|| {
                        format!("unknown request type {t:?} (e.g. flush, get_region_size, any)")
                    })?,
            ),
        };
        let (action, count) = match rest.rsplit_once('*') {
            Some((a, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u64 = number("the count", n)?;
                (a, (n != 0).then_some(n))
            }
            _ => (rest, Some(1)),
        };
        Ok(Self {
            target,
            action: action.parse()?,
            count,
        })
    }
}

/// The faults still to inject.
#[derive(Debug, Default)]
pub struct Script {
    faults: Vec<FaultSpec>,
}

impl Script {
    /// The faults in command-line order.
    pub fn new(faults: Vec<FaultSpec>) -> Self {
        Self { faults }
    }

    /// The action for a request of type `kind`: the first fault that matches and has uses
    /// left (one use is taken).
    pub fn next(&mut self, kind: Option<RequestType>) -> Option<Action> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.count != Some(0) && (f.target.is_none() || f.target == kind))?;
        if let Some(n) = &mut f.count {
            *n -= 1;
        }
        Some(f.action.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let f: FaultSpec = "get_region_size:size=16".parse().unwrap();
        assert_eq!(f.target, Some(RequestType::GetRegionSize));
        assert_eq!(f.action, Action::Size(16));
        assert_eq!(f.count, Some(1));
        let f: FaultSpec = "FLUSH:drop*3".parse().unwrap();
        assert_eq!(
            (f.target, f.action, f.count),
            (Some(RequestType::Flush), Action::Drop, Some(3))
        );
        let f: FaultSpec = "any:delay=250*0".parse().unwrap();
        assert_eq!(f.target, None);
        assert_eq!(f.action, Action::Delay(Duration::from_millis(250)));
        assert_eq!(f.count, None);
        let f: FaultSpec = "ctr:device=253:2".parse().unwrap();
        assert_eq!(f.action, Action::Device("253:2".into()));
        let f: FaultSpec = "ctr:device-raw=a*b".parse().unwrap();
        assert_eq!(f.action, Action::DeviceRaw("a*b".into()));
        assert_eq!(f.count, Some(1));
        let f: FaultSpec = "get_region_size:u64=0x3".parse().unwrap();
        assert_eq!(f.action, Action::U64(3));
        for (spec, action) in [
            ("x:errno=5", Action::Errno(5)),
            ("x:ack=0", Action::Ack(0)),
            ("x:stray", Action::Stray),
            ("x:dup", Action::Dup),
            ("x:unpriv", Action::Unpriv),
            ("x:data-size=4294967295", Action::DataSize(u32::MAX)),
            ("x:exit", Action::Exit),
            ("x:misaddressed", Action::Misaddressed),
            ("x:mistyped", Action::Mistyped),
            ("x:anonymous", Action::Anonymous),
            ("x:unpriv-socket", Action::UnprivSocket),
        ] {
            let a: Action = spec[2..].parse().unwrap();
            assert_eq!(a, action);
            assert_eq!(a.to_string(), &spec[2..]);
        }
        for bad in [
            "flush",
            "bogus:drop",
            "flush:explode",
            "flush:errno=x",
            "flush:drop=1",
            "flush:size=-1",
            "flush:drop*x",
        ] {
            assert!(bad.parse::<FaultSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn faults_apply_in_order_to_the_first_matching_requests() {
        let mut s = Script::new(vec![
            "flush:drop".parse().unwrap(),
            "flush:errno=5*2".parse().unwrap(),
            "any:dup".parse().unwrap(),
        ]);
        let flush = Some(RequestType::Flush);
        assert_eq!(s.next(Some(RequestType::MarkRegion)), Some(Action::Dup));
        assert_eq!(s.next(flush), Some(Action::Drop));
        assert_eq!(s.next(flush), Some(Action::Errno(5)));
        assert_eq!(s.next(flush), Some(Action::Errno(5)));
        assert_eq!(s.next(flush), None);
        assert_eq!(s.next(None), None);
        let mut s = Script::new(vec!["any:stray*0".parse().unwrap()]);
        for _ in 0..1000 {
            assert_eq!(s.next(None), Some(Action::Stray));
        }
    }

    #[test]
    fn only_replies_the_kernel_takes_for_success_change_state() {
        assert!(!Action::Drop.applies_request());
        assert!(!Action::Unpriv.applies_request());
        assert!(!Action::Errno(5).applies_request());
        assert!(!Action::Ack(5).applies_request());
        assert!(Action::Ack(0).applies_request());
        assert!(Action::Size(16).applies_request());
        assert!(Action::Stray.applies_request());
        // The planted bugs: one never applies, one applies after its reply.
        assert!(!Action::Ignore.applies_request());
        assert!(Action::Early(Duration::from_millis(1)).applies_request());
    }

    #[test]
    fn planted_bug_actions_parse_and_print() {
        for (text, action) in [
            ("ignore", Action::Ignore),
            ("early=300", Action::Early(Duration::from_millis(300))),
        ] {
            let parsed: Action = text.parse().unwrap();
            assert_eq!(parsed, action);
            assert_eq!(parsed.to_string(), text);
        }
        assert!("ignore=1".parse::<Action>().is_err());
        assert!("early".parse::<Action>().is_err());
    }
}
