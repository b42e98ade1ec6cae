//! Why the server could not start, as the exit status it leaves: the status
//! tells systemd whether starting it again can help (README "Command line and
//! environment", `systemd/nix-serve.service`'s `RestartPreventExitStatus=`).
//!
//! The numbers are BSD's `sysexits.h`, which systemd names in `systemctl
//! status` (`status=78/CONFIG`, `status=75/TEMPFAIL`). 0 (idle exit, SIGTERM)
//! and 2 (a command line clap rejects) are not start errors.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The configuration cannot work as given, however often it is retried:
    /// a key that is missing, unreadable or malformed, a flag value, a store
    /// URI that does not parse, a log or pid file that cannot be written.
    Config(String),
    /// The store cannot be reached now (the nix-daemon is down or restarting,
    /// the database is busy): a later start may succeed.
    Store(String),
    /// Anything else (an address in use, no signal handler).
    Other(String),
}

impl StartError {
    /// `EX_CONFIG`: a restart cannot help.
    pub const CONFIG: u8 = 78;
    /// `EX_TEMPFAIL`: try again later.
    pub const STORE: u8 = 75;
    pub const OTHER: u8 = 1;

    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) => Self::CONFIG,
            StartError::Store(_) => Self::STORE,
            StartError::Other(_) => Self::OTHER,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(m) | StartError::Store(m) | StartError::Other(m) => f.write_str(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StartError;

    /// The unit's `RestartPreventExitStatus=` lists the configuration status
    /// and not the store's: they must stay apart, and apart from 0 and 2.
    #[test]
    fn each_kind_has_its_own_status() {
        let codes = [
            StartError::Config(String::new()).exit_code(),
            StartError::Store(String::new()).exit_code(),
            StartError::Other(String::new()).exit_code(),
        ];
        assert_eq!(codes, [78, 75, 1]);
    }
}
