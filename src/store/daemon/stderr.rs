//! The stderr / log message loop that precedes every reply (`docs/protocols.md`
//! §7.5). Pure: reads from any `Read`, so it is tested on byte strings.

use std::io::Read;

use thiserror::Error;

use super::version::ProtocolVersion;
use crate::store::wire::{self, Bound, WireError};

pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
pub const STDERR_READ: u64 = 0x6461_7461;
pub const STDERR_WRITE: u64 = 0x6461_7416;
pub const STDERR_LAST: u64 = 0x616c_7473;
pub const STDERR_ERROR: u64 = 0x6378_7470;
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Log lines and error messages: Nix prints them on a terminal, so anything
/// near this size is not a message but a peer out of step with us.
const MESSAGE: Bound = Bound::new("log message", 64 * 1024);
/// Our read-only ops log next to nothing; a daemon that keeps talking past
/// this many messages for one request is stuck in a loop.
const MAX_MESSAGES: usize = 100_000;
/// Activity results carry a handful of fields (Nix: at most 4).
const MAX_FIELDS: usize = 1_000;
/// Error traces: one per nested evaluation frame; a few in practice.
const MAX_TRACES: usize = 1_000;

#[derive(Debug, Error)]
pub enum StderrError {
    /// STDERR_ERROR: the daemon's message, escapes stripped, traces appended.
    #[error("{0}")]
    Daemon(String),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("unexpected message code {0:#x} in the log stream")]
    UnexpectedCode(u64),
    #[error("daemon asked for data (STDERR_READ/WRITE) during a read-only op")]
    DataRequest,
    #[error("error message of type {0:?}, expected \"Error\"")]
    ErrorType(String),
    #[error("error message with a source position, which Nix never sends")]
    ErrorPosition,
    #[error("activity field of unknown type {0}")]
    FieldType(u64),
    #[error("more than {MAX_MESSAGES} log messages for one request")]
    TooManyMessages,
}

/// Reads messages until STDERR_LAST (Ok: the reply payload follows) or
/// STDERR_ERROR (its message; no payload follows). Log output is discarded:
/// nothing we ask for has log output worth keeping.
pub fn drain(r: &mut impl Read, version: ProtocolVersion) -> Result<(), StderrError> {
    let activities = version >= ProtocolVersion::ACTIVITIES;
    for _ in 0..MAX_MESSAGES {
        match wire::read_u64(r)? {
            STDERR_LAST => return Ok(()),
            STDERR_ERROR => return Err(read_error(r, version)?),
            STDERR_NEXT => {
                wire::read_bytes(r, MESSAGE)?;
            }
            STDERR_START_ACTIVITY if activities => {
                let _id = wire::read_u64(r)?;
                let _level = wire::read_u64(r)?;
                let _type = wire::read_u64(r)?;
                wire::read_bytes(r, MESSAGE)?;
                skip_fields(r)?;
                let _parent = wire::read_u64(r)?;
            }
            STDERR_STOP_ACTIVITY if activities => {
                let _id = wire::read_u64(r)?;
            }
            STDERR_RESULT if activities => {
                let _id = wire::read_u64(r)?;
                let _type = wire::read_u64(r)?;
                skip_fields(r)?;
            }
            STDERR_READ | STDERR_WRITE => return Err(StderrError::DataRequest),
            code => return Err(StderrError::UnexpectedCode(code)),
        }
    }
    Err(StderrError::TooManyMessages)
}

/// `u64 count`, then per field `u64 type` and a u64 (0) or a string (1).
fn skip_fields(r: &mut impl Read) -> Result<(), StderrError> {
    let count = wire::read_u64(r)?;
    if count > MAX_FIELDS as u64 {
        return Err(WireError::TooMany {
            what: "activity fields",
            count,
            max: MAX_FIELDS,
        }
        .into());
    }
    for _ in 0..count {
        match wire::read_u64(r)? {
            0 => {
                wire::read_u64(r)?;
            }
            1 => {
                wire::read_bytes(r, MESSAGE)?;
            }
            t => return Err(StderrError::FieldType(t)),
        }
    }
    Ok(())
}

/// The payload of STDERR_ERROR, as a `Daemon` error (or a framing error).
fn read_error(r: &mut impl Read, version: ProtocolVersion) -> Result<StderrError, StderrError> {
    if version < ProtocolVersion::STRUCTURED_ERRORS {
        let message = wire::read_bytes(r, MESSAGE)?;
        let _exit_status = wire::read_u64(r)?;
        return Ok(StderrError::Daemon(clean(&message)));
    }
    let kind = wire::read_string(r, MESSAGE)?;
    if kind != "Error" {
        return Err(StderrError::ErrorType(kind));
    }
    let _level = wire::read_u64(r)?;
    let _name = wire::read_bytes(r, MESSAGE)?;
    let mut text = clean(&wire::read_bytes(r, MESSAGE)?);
    if wire::read_u64(r)? != 0 {
        return Err(StderrError::ErrorPosition);
    }
    let traces = wire::read_u64(r)?;
    if traces > MAX_TRACES as u64 {
        return Err(WireError::TooMany {
            what: "error traces",
            count: traces,
            max: MAX_TRACES,
        }
        .into());
    }
    for _ in 0..traces {
        if wire::read_u64(r)? != 0 {
            return Err(StderrError::ErrorPosition);
        }
        let hint = clean(&wire::read_bytes(r, MESSAGE)?);
        text.push_str("; ");
        text.push_str(&hint);
    }
    Ok(StderrError::Daemon(text))
}

/// A daemon message fit for one log line: ANSI escapes removed (Nix colours
/// store paths, docs/protocols.md §7.5), invalid UTF-8 replaced, surrounding whitespace trimmed.
pub fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, then one final byte @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC (hyperlinks): up to BEL or ESC '\'.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // Any other escape is ESC plus one character.
            _ => {}
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wire::test_bytes::{s, u};

    const V1_34: ProtocolVersion = ProtocolVersion::new(1, 34);
    const V1_25: ProtocolVersion = ProtocolVersion::new(1, 25);

    fn structured_error(message: &str, traces: &[&str]) -> Vec<u8> {
        let mut out = [
            u(STDERR_ERROR),
            s("Error"),
            u(0),
            s("Error"),
            s(message),
            u(0),
        ]
        .concat();
        out.extend(u(traces.len() as u64));
        for t in traces {
            out.extend(u(0));
            out.extend(s(t));
        }
        out
    }

    #[test]
    fn clean_strips_escapes() {
        let cases = [
            ("plain", "plain"),
            (
                "path '\x1b[35;1m/nix/store/x\x1b[0m' is not valid\n",
                "path '/nix/store/x' is not valid",
            ),
            ("\x1b[1merror:\x1b[0m boom", "error: boom"),
            ("a\x1b]8;;http://x\x07link\x1b]8;;\x1b\\b", "alinkb"),
            ("x\x1b(By", "xBy"), // ESC ( is a two-character escape; 'B' stays
            ("dangling \x1b[", "dangling"),
            ("  \n", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(clean(raw.as_bytes()), want, "{raw:?}");
        }
        assert_eq!(clean(b"bad \xff byte"), "bad \u{fffd} byte");
    }

    #[test]
    fn drains_log_messages_until_last() {
        let stream = [
            u(STDERR_NEXT),
            s("building\n"),
            u(STDERR_START_ACTIVITY),
            u(7),
            u(3),
            u(105),
            s("copying"),
            u(2),
            u(0),
            u(42),
            u(1),
            s("field"),
            u(0),
            u(STDERR_RESULT),
            u(7),
            u(101),
            u(0),
            u(STDERR_STOP_ACTIVITY),
            u(7),
            u(STDERR_LAST),
            u(0xAAAA), // the reply payload: must be left unread
        ]
        .concat();
        let mut r = &stream[..];
        drain(&mut r, V1_34).unwrap();
        assert_eq!(r, &u(0xAAAA)[..]);
    }

    #[test]
    fn structured_error_with_traces() {
        let stream = structured_error(
            "\x1b[31;1merror:\x1b[0m bad path",
            &["while \x1b[1mx\x1b[0m"],
        );
        match drain(&mut &stream[..], V1_34) {
            Err(StderrError::Daemon(m)) => assert_eq!(m, "error: bad path; while x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn old_style_error() {
        let stream = [u(STDERR_ERROR), s("it broke"), u(1)].concat();
        match drain(&mut &stream[..], V1_25) {
            Err(StderrError::Daemon(m)) => assert_eq!(m, "it broke"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn anomalies_are_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unknown code", u(0x1234)),
            ("read request", [u(STDERR_READ), u(100)].concat()),
            ("write request", [u(STDERR_WRITE), s("x")].concat()),
            ("eof", u(STDERR_NEXT)),
            ("huge log line", [u(STDERR_NEXT), u(1 << 40)].concat()),
            (
                "bad field type",
                [u(STDERR_RESULT), u(1), u(2), u(1), u(9)].concat(),
            ),
            (
                "too many fields",
                [u(STDERR_RESULT), u(1), u(2), u(u64::MAX)].concat(),
            ),
            (
                "error type",
                [
                    u(STDERR_ERROR),
                    s("Warning"),
                    u(0),
                    s(""),
                    s("m"),
                    u(0),
                    u(0),
                ]
                .concat(),
            ),
            (
                "error position",
                [u(STDERR_ERROR), s("Error"), u(0), s(""), s("m"), u(1)].concat(),
            ),
        ];
        for (name, stream) in cases {
            match drain(&mut &stream[..], V1_34) {
                Ok(()) | Err(StderrError::Daemon(_)) => panic!("{name}: accepted"),
                Err(_) => {}
            }
        }
        // Activities do not exist before 1.20: the code is unexpected there.
        let stream = [u(STDERR_STOP_ACTIVITY), u(1), u(STDERR_LAST)].concat();
        assert!(matches!(
            drain(&mut &stream[..], ProtocolVersion::new(1, 19)),
            Err(StderrError::UnexpectedCode(STDERR_STOP_ACTIVITY))
        ));
    }

    #[test]
    fn endless_log_is_cut_off() {
        let one = [u(STDERR_NEXT), s("x")].concat();
        let stream = one.repeat(MAX_MESSAGES + 1);
        assert!(matches!(
            drain(&mut &stream[..], V1_34),
            Err(StderrError::TooManyMessages)
        ));
    }
}
