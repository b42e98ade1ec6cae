//! nix-serve-sd: a socket-activated, drop-in replacement for nix-serve.
//!
//! Layers, each depending only on those above it (README "Architecture"):
//! - [`nix`]: the pure Nix formats (nix32, store paths, narinfo, signing, NAR);
//!   no network, no threads.
//! - [`store`]: the synchronous store layer (nix-daemon client, local SQLite).
#![deny(unsafe_code)]

pub mod nix;
pub mod store;
