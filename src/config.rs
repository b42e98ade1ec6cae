//! The command line and environment, resolved once into a read-only [`Config`].
//!
//! Drop-in rule: every flag that nix-serve (Starman, Plack::Runner) and
//! nix-serve-ng accept is accepted, so existing `services.nix-serve.extraParams`
//! never break start-up. Flags that map to something here do it; the others are
//! listed in [`Config::ignored`] and `main` logs one warning line for each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use thiserror::Error;

use crate::nix::compression::Compression;
use crate::store::upstream::{self, CacheUrl};

mod values;

use values::bracket_v6;
pub use values::{parse_duration, parse_listen, parse_size};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--listen {0:?}: TLS is not supported here; put a TLS proxy in front (see README)")]
    Tls(String),
    #[error("{flag}: TLS is not supported here; put a TLS proxy in front (see README)")]
    TlsFlag { flag: &'static str },
    #[error("--listen {spec:?}: {reason}")]
    Listen { spec: String, reason: String },
    #[error("{flag} {value:?}: {reason}")]
    Duration {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("--compression {value:?}: {reason}")]
    Compression { value: String, reason: &'static str },
    #[error("--workers must be between 1 and {max}, not {value}")]
    Workers { value: usize, max: usize },
    #[error("--event-loops must be between 1 and {max}, not {value}")]
    Loops { value: usize, max: usize },
    #[error("--upstream: {0}")]
    Upstream(String),
    #[error("--upstream-max-downloads must be between 1 and {max}, not {value}")]
    Downloads { value: usize, max: usize },
    #[error("--upstream-max-import {value:?}: {reason}")]
    Size { value: String, reason: &'static str },
}

/// Upper bound on `--workers`: each worker is a thread with a store connection.
pub const MAX_WORKERS: usize = 256;
/// Upper bound on `--event-loops`; also the default's. Each loop is woken
/// by every new connection (they share the listening sockets), so past a
/// few loops more cost wake-ups and buy nothing: NAR bytes are moved by
/// the body threads, not the loops.
pub const MAX_LOOPS: usize = 8;
/// Upper bound on `--upstream-max-downloads`: each download is two or
/// three threads and a connection upstream.
pub const MAX_DOWNLOADS: usize = 256;

#[derive(Parser, Debug, Default)]
// A flag given twice: the last one wins, as in nix-serve's Perl option parser
// (Getopt::Long), so a unit's own --idle-timeout plus one in extraParams, or
// --priority twice, still starts. Repeatable flags keep every value.
#[command(
    name = "nix-serve",
    version,
    args_override_self = true,
    about = "Serve the Nix store as an HTTP binary cache (drop-in for nix-serve, socket-activatable)"
)]
pub struct Cli {
    /// HOST:PORT, :PORT (all IPv4 and IPv6 addresses), [V6ADDR]:PORT, or a
    /// Unix socket path. Repeatable. Ignored when systemd passes sockets.
    #[arg(short = 'l', long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Address to bind (with --port); default all addresses.
    #[arg(short = 'o', long)]
    pub host: Option<String>,
    /// Port to bind; default 5000.
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Unix socket path to bind. Repeatable.
    #[arg(short = 'S', long = "socket", value_name = "PATH")]
    pub socket: Vec<PathBuf>,

    /// Store workers, each with its own store connection and a thread started
    /// when first needed (default 2 × the CPUs we may run on, at most 32).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Event loops that own the client connections (default one per CPU we
    /// may run on, at most 8).
    #[arg(long = "event-loops", value_name = "N")]
    pub event_loops: Option<usize>,
    /// Listen queue length.
    #[arg(long, default_value_t = 1024)]
    pub backlog: i32,
    /// Seconds a client may take to send one request's headers.
    #[arg(long = "read-timeout", value_name = "S")]
    pub read_timeout: Option<String>,
    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long = "keepalive-timeout", value_name = "S")]
    pub keepalive_timeout: Option<String>,
    /// Seconds a reply may make no progress; also the window over which a
    /// reader must average 1 KiB/s.
    #[arg(long, value_name = "S")]
    pub timeout: Option<String>,
    /// Close the connection after every response.
    #[arg(long = "disable-keepalive")]
    pub disable_keepalive: bool,
    /// Write one line per request to FILE.
    #[arg(long = "access-log", value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// Write diagnostics to FILE instead of stderr or syslog.
    #[arg(long = "error-log", value_name = "FILE")]
    pub error_log: Option<PathBuf>,
    /// Write the process id to FILE (removed at exit).
    #[arg(long, value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Priority advertised in /nix-cache-info (lower is tried first).
    #[arg(long, default_value_t = 30)]
    pub priority: u32,
    /// The store to serve: auto, daemon, unix://PATH, local, local?root=DIR, a path.
    /// Default: $NIX_REMOTE, else auto.
    #[arg(long, value_name = "URI")]
    pub store: Option<String>,
    /// A Nix secret key file to sign narinfos with. Repeatable. $NIX_SECRET_KEY_FILE adds one.
    #[arg(long = "sign-key-file", value_name = "PATH")]
    pub sign_key_file: Vec<PathBuf>,
    /// NARs as served: none (nix-serve's bytes), or zstd[:LEVEL] (1-19,
    /// default 1), compressed while they stream. Default: none.
    #[arg(long, value_name = "none|zstd[:LEVEL]")]
    pub compression: Option<String>,
    /// Exit after this long with no connection (60, 60s, 5min, 1h; 0 = never).
    /// Default: 60s when socket-activated, never otherwise.
    #[arg(long = "idle-timeout", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Keep the metrics in this file (Prometheus text format), rewritten
    /// every --metrics-interval and at exit; counts resume from it at start.
    #[arg(long = "metrics-file", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// How often --metrics-file is rewritten while running (default 15s).
    #[arg(long = "metrics-interval", value_name = "DURATION")]
    pub metrics_interval: Option<String>,
    /// Serve the metrics at GET /metrics (a scrape is a connection: it keeps
    /// the server from its idle exit).
    #[arg(long = "metrics-route")]
    pub metrics_route: bool,
    /// Serve only the closure of this store path, or of the store path this
    /// symlink leads to (followed again when it changes). Repeatable.
    #[arg(long = "serve-closure-of", value_name = "PATH")]
    pub serve_closure_of: Vec<PathBuf>,
    /// Ask for HTTP Basic credentials, checked against this htpasswd file
    /// of bcrypt entries (`htpasswd -B`); /nix-cache-info stays public.
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// A binary cache (http:// or https://) to fetch the paths this store
    /// lacks from, once, adding them to the store through the nix-daemon.
    /// Repeatable, tried in order.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstream: Vec<String>,
    /// Upstream downloads at once; a new one past it is a 503 (default 16).
    #[arg(long = "upstream-max-downloads", value_name = "N")]
    pub upstream_max_downloads: Option<usize>,
    /// The largest NAR from upstream that is added to the store; larger
    /// ones are served only (bytes, or K, M, G, T; default 8G; 0: none is).
    #[arg(long = "upstream-max-import", value_name = "SIZE")]
    pub upstream_max_import: Option<String>,
    /// Where upstream downloads keep their NAR, in files without a name
    /// (default: $TMPDIR, else /var/tmp).
    #[arg(long = "upstream-temp-dir", value_name = "DIR")]
    pub upstream_temp_dir: Option<PathBuf>,

    // Accepted for compatibility, no effect here (one warning each).
    #[arg(long = "max-requests", value_name = "N", hide = true)]
    pub max_requests: Option<String>,
    #[arg(long = "max-keepalive-reqs", value_name = "N", hide = true)]
    pub max_keepalive_reqs: Option<String>,
    #[arg(long = "preload-app", hide = true)]
    pub preload_app: bool,
    #[arg(long, hide = true)]
    pub user: Option<String>,
    #[arg(long, hide = true)]
    pub group: Option<String>,
    #[arg(short = 'D', long, hide = true)]
    pub daemonize: bool,
    #[arg(long = "disable-proctitle", hide = true)]
    pub disable_proctitle: bool,
    #[arg(short = 'E', long = "env", hide = true)]
    pub env: Option<String>,
    #[arg(long, hide = true)]
    pub quiet: bool,
    #[arg(long, hide = true)]
    pub verbose: bool,
    #[arg(long = "log-format", hide = true)]
    pub log_format: Option<String>,
    #[arg(short = 's', long = "server", hide = true)]
    pub server: Option<String>,

    // TLS: refused with a clear error (no TLS stack here).
    #[arg(long = "enable-ssl", hide = true)]
    pub enable_ssl: bool,
    #[arg(long = "ssl-cert", hide = true)]
    pub ssl_cert: Option<String>,
    #[arg(long = "ssl-key", hide = true)]
    pub ssl_key: Option<String>,
}

/// Where to listen when systemd passed no sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenSpec {
    /// Specific addresses (a host name may resolve to several).
    Tcp(Vec<SocketAddr>),
    /// `:PORT`: every IPv6 and IPv4 address.
    AllAddresses(u16),
    Unix(PathBuf),
}

/// Everything the program needs, validated once at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Vec<ListenSpec>,
    pub workers: usize,
    pub loops: usize,
    pub backlog: i32,
    pub read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
    pub keepalive: bool,
    pub access_log: Option<PathBuf>,
    pub error_log: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub priority: u32,
    pub compression: Compression,
    pub store_uri: String,
    pub key_files: Vec<PathBuf>,
    /// `None`: never exit for idleness.
    pub idle_timeout: Option<Duration>,
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: Duration,
    pub metrics_route: bool,
    /// `--serve-closure-of`: empty serves the whole store.
    pub closure_roots: Vec<PathBuf>,
    /// `--htpasswd`: `None` serves everyone.
    pub htpasswd: Option<PathBuf>,
    /// `--upstream` and its settings: `None` without upstreams.
    pub upstream: Option<UpstreamConfig>,
    /// Flags accepted for compatibility that do nothing here.
    pub ignored: Vec<&'static str>,
}

/// Pull-through from upstream caches, as the command line and the
/// environment say.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Tried in this order.
    pub caches: Vec<CacheUrl>,
    pub max_downloads: usize,
    /// Zero: nothing is imported.
    pub max_import: u64,
    pub temp_dir: PathBuf,
    /// The CA bundle Nix would use (`NIX_SSL_CERT_FILE`, `SSL_CERT_FILE`,
    /// the system's), for https upstreams.
    pub ca_bundle: Option<PathBuf>,
}

/// Where downloads go without `--upstream-temp-dir` or `TMPDIR`: on disk
/// (a `/tmp` may be RAM), and private to the service under systemd's
/// `PrivateTmp=`.
pub const DEFAULT_UPSTREAM_TEMP_DIR: &str = "/var/tmp";

/// Defaults, chosen so that a slow client cannot hold a worker for long.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_ACTIVATED_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_PORT: u16 = 5000;
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);

impl Config {
    /// Resolves the parsed command line with the environment (`NIX_REMOTE`,
    /// `NIX_SECRET_KEY_FILE`) and whether systemd passed sockets: TLS
    /// refused, then listeners, threads, timeouts, keys, compression, the
    /// store, upstreams, each checked where it is resolved.
    pub fn resolve(
        cli: Cli,
        env: &dyn Fn(&str) -> Option<String>,
        socket_activated: bool,
        cores: usize,
    ) -> Result<Config, ConfigError> {
        refuse_tls(&cli)?;
        let listen = listeners(&cli)?;
        let (workers, loops) = threads(&cli, cores)?;
        let t = Timeouts::resolve(&cli, socket_activated)?;
        let compression = compression(&cli)?;
        Ok(Config {
            listen,
            workers,
            loops,
            backlog: cli.backlog.clamp(1, 65535),
            read_timeout: t.read,
            keepalive_timeout: t.keepalive,
            write_timeout: t.write,
            keepalive: !cli.disable_keepalive && !t.keepalive.is_zero(),
            access_log: cli.access_log.clone(),
            error_log: cli.error_log.clone(),
            pid_file: cli.pid.clone(),
            priority: cli.priority,
            compression,
            store_uri: store_uri(&cli, env),
            key_files: key_files(&cli, env),
            idle_timeout: t.idle,
            metrics_file: cli.metrics_file.clone(),
            metrics_interval: t.metrics_interval,
            metrics_route: cli.metrics_route,
            closure_roots: cli.serve_closure_of.clone(),
            htpasswd: cli.htpasswd.clone(),
            upstream: upstream_config(&cli, env)?,
            ignored: ignored_flags(&cli),
        })
    }
}

fn refuse_tls(cli: &Cli) -> Result<(), ConfigError> {
    let flag = if cli.enable_ssl {
        "--enable-ssl"
    } else if cli.ssl_cert.is_some() {
        "--ssl-cert"
    } else if cli.ssl_key.is_some() {
        "--ssl-key"
    } else {
        return Ok(());
    };
    Err(ConfigError::TlsFlag { flag })
}

/// `--listen` and `--socket`, else `--host` and `--port`, else every
/// address on port 5000.
fn listeners(cli: &Cli) -> Result<Vec<ListenSpec>, ConfigError> {
    let mut listen = Vec::new();
    for spec in &cli.listen {
        listen.push(parse_listen(spec)?);
    }
    listen.extend(cli.socket.iter().cloned().map(ListenSpec::Unix));
    if listen.is_empty() {
        let port = cli.port.unwrap_or(DEFAULT_PORT);
        listen.push(match cli.host.as_deref() {
            None => ListenSpec::AllAddresses(port),
            Some(host) => parse_listen(&format!("{}:{port}", bracket_v6(host)))?,
        });
    }
    Ok(listen)
}

/// `--workers` and `--event-loops`, by default from the CPUs we may run on.
fn threads(cli: &Cli, cores: usize) -> Result<(usize, usize), ConfigError> {
    let workers = match cli.workers {
        None => (2 * cores).clamp(2, 32),
        Some(n) if (1..=MAX_WORKERS).contains(&n) => n,
        Some(n) => {
            return Err(ConfigError::Workers {
                value: n,
                max: MAX_WORKERS,
            })
        }
    };
    let loops = match cli.event_loops {
        None => cores.clamp(1, MAX_LOOPS),
        Some(n) if (1..=MAX_LOOPS).contains(&n) => n,
        Some(n) => {
            return Err(ConfigError::Loops {
                value: n,
                max: MAX_LOOPS,
            })
        }
    };
    Ok((workers, loops))
}

/// The durations of the command line, with their floors.
struct Timeouts {
    read: Duration,
    keepalive: Duration,
    write: Duration,
    /// `None`: never exit for idleness.
    idle: Option<Duration>,
    metrics_interval: Duration,
}

impl Timeouts {
    fn resolve(cli: &Cli, socket_activated: bool) -> Result<Timeouts, ConfigError> {
        let secs = |flag, v: &Option<String>, default| match v {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|reason| ConfigError::Duration {
                flag,
                value: v.clone(),
                reason,
            }),
        };
        let read = secs("--read-timeout", &cli.read_timeout, DEFAULT_READ_TIMEOUT)?;
        let keepalive = secs(
            "--keepalive-timeout",
            &cli.keepalive_timeout,
            DEFAULT_KEEPALIVE_TIMEOUT,
        )?;
        let write = secs("--timeout", &cli.timeout, DEFAULT_WRITE_TIMEOUT)?;
        let idle_default = if socket_activated {
            DEFAULT_ACTIVATED_IDLE
        } else {
            Duration::ZERO
        };
        let idle = secs("--idle-timeout", &cli.idle_timeout, idle_default)?;
        let metrics_interval = secs(
            "--metrics-interval",
            &cli.metrics_interval,
            DEFAULT_METRICS_INTERVAL,
        )?;
        Ok(Timeouts {
            // A zero timeout would close every connection at once.
            read: read.max(Duration::from_millis(100)),
            keepalive,
            write: write.max(Duration::from_millis(100)),
            idle: (!idle.is_zero()).then_some(idle),
            // The main thread looks every 100 ms: no use asking for less.
            metrics_interval: metrics_interval.max(Duration::from_millis(100)),
        })
    }
}

fn compression(cli: &Cli) -> Result<Compression, ConfigError> {
    match cli.compression.as_deref() {
        None => Ok(Compression::None),
        Some(v) => Compression::parse(v).map_err(|reason| ConfigError::Compression {
            value: v.to_owned(),
            reason,
        }),
    }
}

/// `--store`, else `NIX_REMOTE`, else `auto`.
fn store_uri(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> String {
    (cli.store.clone())
        .or_else(|| env("NIX_REMOTE").filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "auto".to_owned())
}

/// `--sign-key-file`, and `NIX_SECRET_KEY_FILE` unless it names one of them.
fn key_files(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut key_files = cli.sign_key_file.clone();
    if let Some(f) = env("NIX_SECRET_KEY_FILE").filter(|f| !f.is_empty()) {
        let f = PathBuf::from(f);
        if !key_files.contains(&f) {
            key_files.push(f);
        }
    }
    key_files
}

fn upstream_config(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<UpstreamConfig>, ConfigError> {
    if cli.upstream.is_empty() {
        return Ok(None);
    }
    let caches = (cli.upstream.iter())
        .map(|u| CacheUrl::parse(u).map_err(|e| ConfigError::Upstream(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let max_downloads = match cli.upstream_max_downloads {
        None => upstream::DEFAULT_MAX_DOWNLOADS,
        Some(n) if (1..=MAX_DOWNLOADS).contains(&n) => n,
        Some(n) => {
            return Err(ConfigError::Downloads {
                value: n,
                max: MAX_DOWNLOADS,
            })
        }
    };
    let max_import = match &cli.upstream_max_import {
        None => upstream::DEFAULT_MAX_IMPORT,
        Some(v) => parse_size(v).map_err(|reason| ConfigError::Size {
            value: v.clone(),
            reason,
        })?,
    };
    let temp_dir = (cli.upstream_temp_dir.clone())
        .or_else(|| env("TMPDIR").filter(|d| !d.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_UPSTREAM_TEMP_DIR));
    Ok(Some(UpstreamConfig {
        caches,
        max_downloads,
        max_import,
        temp_dir,
        ca_bundle: upstream::client::ca_bundle(env),
    }))
}

fn ignored_flags(cli: &Cli) -> Vec<&'static str> {
    let present = [
        (cli.max_requests.is_some(), "--max-requests"),
        (cli.max_keepalive_reqs.is_some(), "--max-keepalive-reqs"),
        (cli.preload_app, "--preload-app"),
        (
            cli.user.is_some(),
            "--user (use systemd User= or DynamicUser=)",
        ),
        (cli.group.is_some(), "--group (use systemd Group=)"),
        (cli.daemonize, "--daemonize (let systemd supervise instead)"),
        (cli.disable_proctitle, "--disable-proctitle"),
        (cli.env.is_some(), "-E/--env"),
        (cli.quiet, "--quiet"),
        (cli.verbose, "--verbose"),
        (cli.log_format.is_some(), "--log-format"),
        (cli.server.is_some(), "-s/--server"),
    ];
    present
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
}

#[cfg(test)]
mod tests;
