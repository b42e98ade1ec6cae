//! Read-only direct access to a local store: SQLite and the store directory (`nix-protocols.md` §8).
