//! nix-serve-sd: a socket-activated, drop-in replacement for nix-serve.
//!
//! Layers (`docs/architecture.md` §1, README "Architecture"):
//! - [`nix`]: the pure Nix formats (nix32, store paths, narinfo, signing, NAR);
//!   no network, no threads.
//! - [`store`]: the synchronous store layer (nix-daemon client, local SQLite,
//!   `--serve-closure-of`, pull-through from upstream caches).
//! - [`server`]: the HTTP engine (listeners, event loops, HTTP/1, worker and
//!   body threads, the drain and the idle exit); it knows no store.
//! - [`cache`]: the application the engine serves: the route table, one
//!   handler per endpoint, the one table from errors to statuses.
//! - [`auth`]: `--htpasswd`, HTTP Basic authentication (htpasswd, bcrypt).
//! - [`systemd`]: inherited sockets and sd-notify; [`config`], [`log`];
//!   [`exit`]: why start-up failed, as an exit status.
//! - [`metrics`]: counters and histograms, their text format and
//!   `--metrics-file`; the store, engine and application record into it.
//! - [`bounded`]: the one kind of map kept between requests.
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
