//! nix-serve-sd: a socket-activated, drop-in replacement for nix-serve.
//!
//! Layers, each depending only on those above it (README "Architecture"):
//! - [`nix`]: the pure Nix formats (nix32, store paths, narinfo, signing, NAR);
//!   no network, no threads.
//! - [`store`]: the synchronous store layer (nix-daemon client, local SQLite).
//! - [`http`]: route table, one handler per endpoint, responses, server loop.
//! - [`auth`]: `--htpasswd`, HTTP Basic authentication (htpasswd, bcrypt).
//! - [`systemd`]: inherited sockets and sd-notify; [`config`], [`log`];
//!   [`exit`]: why start-up failed, as an exit status.
//! - [`metrics`]: counters and histograms, their text format and
//!   `--metrics-file`; the store, server and HTTP layers record into it.
#![deny(unsafe_code)]

pub mod auth;
pub mod bounded;
pub mod cache;
pub mod config;
pub mod exit;
pub mod log;
pub mod metrics;
pub mod nix;
pub mod server;
pub mod store;
pub mod systemd;
