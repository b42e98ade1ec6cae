//! nix-daemon worker-protocol client (`nix-protocols.md` §7).
