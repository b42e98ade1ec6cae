//! Worker-protocol framing: u64, strings, lists (`nix-protocols.md` §7.2).
