//! The worker-protocol version, `major << 8 | minor` on the wire
//! (`docs/protocols.md` §7.2, §7.3), and the minors that gate fields.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("nix-daemon sent protocol version {0:#x}, which is not a version number")]
    Malformed(u64),
    #[error(
        "nix-daemon speaks protocol {0}, we need {oldest}..={client} (Nix 2.8 or newer, or Lix)",
        oldest = ProtocolVersion::OLDEST,
        client = ProtocolVersion::CLIENT
    )]
    Unsupported(ProtocolVersion),
}

/// A worker-protocol version. Ordered as (major, minor), so feature gates read
/// `version >= ProtocolVersion::TRUST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    major: u8,
    minor: u8,
}

impl ProtocolVersion {
    pub const fn new(major: u8, minor: u8) -> Self {
        ProtocolVersion { major, minor }
    }

    /// What we propose: current Nix's version (docs/protocols.md §7.3 recommendation).
    pub const CLIENT: Self = Self::new(1, 38);
    /// The oldest daemon we talk to: Nix 2.8 (Debian's `nix-bin`). Older
    /// daemons would need code paths nobody here can test.
    pub const OLDEST: Self = Self::new(1, 34);

    /// ValidPathInfo carries `ultimate`, `sigs` and `ca` (docs/protocols.md §7.7).
    pub const PATH_INFO_SIGS: Self = Self::new(1, 16);
    /// QueryPathInfo replies start with a "valid" flag instead of failing.
    pub const PATH_INFO_VALID_FLAG: Self = Self::new(1, 17);
    /// START/STOP_ACTIVITY and RESULT messages in the stderr loop (docs/protocols.md §7.5).
    pub const ACTIVITIES: Self = Self::new(1, 20);
    /// STDERR_ERROR carries a structured error, not `str msg, u64 status`.
    pub const STRUCTURED_ERRORS: Self = Self::new(1, 26);
    /// The handshake sends the client's obsolete reserveSpace flag.
    pub const RESERVE_SPACE: Self = Self::new(1, 11);
    /// The handshake sends the client's obsolete CPU-affinity flag.
    pub const CPU_AFFINITY: Self = Self::new(1, 14);
    /// The daemon sends its Nix version string after the handshake.
    pub const NIX_VERSION: Self = Self::new(1, 33);
    /// The daemon then sends whether it trusts us.
    pub const TRUST: Self = Self::new(1, 35);
    /// Both sides exchange feature sets in the handshake.
    pub const FEATURES: Self = Self::new(1, 38);

    #[cfg(any(test, feature = "testing"))]
    pub fn major(self) -> u8 {
        self.major
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn minor(self) -> u8 {
        self.minor
    }

    pub fn to_wire(self) -> u64 {
        u64::from(self.major) << 8 | u64::from(self.minor)
    }

    /// Nix masks the number with 0xff00/0x00ff; bits above mean we are out of
    /// step with the peer, so they are an error rather than ignored.
    pub fn from_wire(v: u64) -> Result<Self, VersionError> {
        if v > 0xffff {
            return Err(VersionError::Malformed(v));
        }
        Ok(Self::new((v >> 8) as u8, (v & 0xff) as u8))
    }

    /// The version both sides then speak: the lower of the two (docs/protocols.md §7.2), which
    /// must be one we support. A daemon newer than us speaks our version.
    pub fn negotiate(daemon: Self) -> Result<Self, VersionError> {
        let v = daemon.min(Self::CLIENT);
        if daemon.major != Self::CLIENT.major || v < Self::OLDEST {
            return Err(VersionError::Unsupported(daemon));
        }
        Ok(v)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(ProtocolVersion::CLIENT.to_wire(), 0x126);
        assert_eq!(ProtocolVersion::OLDEST.to_wire(), 0x122);
        assert_eq!(
            ProtocolVersion::from_wire(0x122),
            Ok(ProtocolVersion::new(1, 34))
        );
        assert_eq!(
            ProtocolVersion::from_wire(0x1_0122),
            Err(VersionError::Malformed(0x1_0122))
        );
        assert_eq!(ProtocolVersion::new(1, 35).to_string(), "1.35");
    }

    #[test]
    fn negotiation() {
        let v = ProtocolVersion::new;
        let cases = [
            (v(1, 34), Ok(v(1, 34))), // Nix 2.8 .. 2.14
            (v(1, 35), Ok(v(1, 35))), // Lix, Nix 2.15 .. 2.19
            (v(1, 37), Ok(v(1, 37))),
            (v(1, 38), Ok(v(1, 38))), // current Nix
            (v(1, 39), Ok(v(1, 38))), // a newer daemon speaks ours
            (v(1, 33), Err(VersionError::Unsupported(v(1, 33)))),
            (v(1, 10), Err(VersionError::Unsupported(v(1, 10)))),
            (v(2, 0), Err(VersionError::Unsupported(v(2, 0)))),
            (v(0, 38), Err(VersionError::Unsupported(v(0, 38)))),
        ];
        for (daemon, expected) in cases {
            assert_eq!(ProtocolVersion::negotiate(daemon), expected, "{daemon}");
        }
    }

    #[test]
    fn gates_order_by_minor_then_major() {
        assert!(ProtocolVersion::new(1, 35) >= ProtocolVersion::TRUST);
        assert!(ProtocolVersion::new(1, 34) < ProtocolVersion::TRUST);
        assert!(ProtocolVersion::new(2, 0) > ProtocolVersion::new(1, 255));
    }

    #[test]
    fn unsupported_error_names_the_range() {
        let e = ProtocolVersion::negotiate(ProtocolVersion::new(1, 21)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nix-daemon speaks protocol 1.21, we need 1.34..=1.38 (Nix 2.8 or newer, or Lix)"
        );
    }
}
