//! `nix-serve`: take systemd's sockets first, resolve the command line into a
//! [`Config`], load keys, open the store, serve, and exit 0 when idle or told
//! to stop (`docs/architecture.md` §3).
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use nix_serve_sd::auth::Auth;
use nix_serve_sd::cache::{heavy, Cache, ReplySettings};
use nix_serve_sd::config::{Cli, Config, ListenSpec, UpstreamConfig};
use nix_serve_sd::exit::StartError;
use nix_serve_sd::log;
use nix_serve_sd::metrics::{Metrics, MetricsFile};
use nix_serve_sd::nix::signing::SecretKey;
use nix_serve_sd::server::life::{self, Exit, Supervision};
use nix_serve_sd::server::{self, Limits, Listener, Server, Settings};
use nix_serve_sd::store::closure::{self, Refresher, Roots};
use nix_serve_sd::store::upstream::{self, download, Budget, ImportTarget, Upstream};
use nix_serve_sd::store::{opener, uri, CountingOpener, OpenStore, Opener};
use nix_serve_sd::systemd::{self, Notifier};

/// How long SIGTERM waits for requests in flight before exiting anyway
/// (systemd's own TimeoutStopSec default is 90 s).
const DRAIN_BOUND: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    // First, before any thread exists: listenfd reads and clears LISTEN_FDS.
    let inherited = match systemd::take_inherited() {
        Ok(l) => l,
        Err(e) => return fail(StartError::Other(e)),
    };
    let activated = !inherited.is_empty();
    let cli = Cli::parse();
    // The CPUs this process may run on, in one system call: not
    // `available_parallelism`, which reads three cgroup files at every start
    // (bench/README.md, "Cold start"). The default only bounds the pool,
    // whose threads start as load needs them.
    let cores = rustix::thread::sched_getaffinity(None).map_or(1, |set| set.count() as usize);
    let config = match Config::resolve(cli, &env, activated, cores) {
        Ok(c) => c,
        Err(e) => return fail(StartError::Config(e.to_string())),
    };
    if let Err(e) = log::init(
        log::under_systemd(&env, activated),
        config.error_log.as_deref(),
        config.access_log.as_deref(),
    ) {
        return fail(match e {
            log::InitError::Open { .. } => StartError::Config(e.to_string()),
            log::InitError::Thread(_) => StartError::Other(e.to_string()),
        });
    }
    let status = match run(&config, inherited) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    };
    // The exit summary and whatever came before it reach the log before
    // the process (and with it the log thread) is gone.
    log::flush();
    status
}

/// The environment, as every part that reads it is handed it.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// One line saying why, and the status that tells systemd whether to retry
/// (`log::fatal` waits for the log to take it).
fn fail(e: StartError) -> ExitCode {
    log::fatal(&e.to_string());
    ExitCode::from(e.exit_code())
}

/// The life cycle (`docs/architecture.md` §3): keys, listeners, store,
/// application, server, ready; supervise until idle or told to stop; drain;
/// the exit summary.
fn run(config: &Config, inherited: Vec<Listener>) -> Result<(), StartError> {
    for flag in &config.ignored {
        log::warn(&format!(
            "{flag}: accepted for compatibility, has no effect here"
        ));
    }
    let keys = load_keys(config)?;
    let auth = load_htpasswd(config)?;
    let (listeners, unix_paths) = listen(config, inherited)?;
    let opener = open_store(config)?;
    let (mut metrics_file, metrics) = resume_metrics(config);
    let app = application(config, keys, auth, &opener, &metrics)?;
    let term = on_signals()?;
    if let Some(p) = &config.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| StartError::Config(format!("cannot write --pid {}: {e}", p.display())))?;
    }
    let mut server = start_server(config, listeners, app.cache.clone(), &metrics)?;
    let notifier = Notifier::from_env(&env);
    ready(config, &opener, &server, &app, &notifier);
    if let Some(f) = &mut metrics_file {
        f.write(&metrics);
    }

    let describe = format!("store {}", opener.describe());
    let mut chores = Chores {
        metrics_file: &mut metrics_file,
        metrics: &metrics,
        closure: app.closure,
    };
    let exit = life::supervise(
        &mut server,
        Supervision {
            idle_timeout: config.idle_timeout,
            stop: &term,
            manager: &notifier,
            describe: &describe,
            chores: &mut |now| chores.tick(now),
            busy: &|| app.upstream.as_ref().is_some_and(Upstream::busy),
        },
    );

    drain(&exit, server, app.upstream.as_ref(), &notifier);
    for p in unix_paths.iter().chain(&config.pid_file) {
        let _ = std::fs::remove_file(p);
    }
    exit_summary(&exit, metrics_file.as_mut(), &metrics);
    Ok(())
}

/// Keys once, before anything is served: a bad key never yields a server
/// that signs nothing.
fn load_keys(config: &Config) -> Result<Vec<SecretKey>, StartError> {
    (config.key_files.iter())
        .map(|p| {
            SecretKey::from_file(p).map_err(|e| StartError::Config(format!("signing key: {e}")))
        })
        .collect()
}

/// The user file too: an entry we cannot check never yields a server that
/// lets in everyone, or no one.
fn load_htpasswd(config: &Config) -> Result<Option<Arc<Auth>>, StartError> {
    let Some(path) = &config.htpasswd else {
        return Ok(None);
    };
    let auth = Auth::load(path, max_verifications(config.workers))
        .map_err(|e| StartError::Config(e.to_string()))?;
    Ok(Some(Arc::new(auth)))
}

/// The sockets systemd passed, or those `--listen` binds (and the Unix
/// socket paths to remove at exit).
fn listen(
    config: &Config,
    inherited: Vec<Listener>,
) -> Result<(Vec<Listener>, Vec<PathBuf>), StartError> {
    if !inherited.is_empty() {
        log::info(&format!(
            "listening on the {} socket(s) passed by systemd (--listen, --port and --socket are not used)",
            inherited.len()
        ));
        return Ok((inherited, Vec::new()));
    }
    let mut unix_paths: Vec<PathBuf> = Vec::new();
    let mut all = Vec::new();
    for spec in &config.listen {
        all.extend(
            server::bind(spec, config.backlog).map_err(|e| StartError::Other(e.to_string()))?,
        );
        if let ListenSpec::Unix(p) = spec {
            unix_paths.push(p.clone());
        }
    }
    Ok((all, unix_paths))
}

/// The store after the listeners: binding is the cheaper check, and both
/// fail before READY. Resolving checks once that the store answers; each
/// worker then opens its own connection on its first request.
fn open_store(config: &Config) -> Result<Opener, StartError> {
    // The store's errors name the store: no prefix needed. A URI that does
    // not parse is the configuration's fault; one that names a store not
    // reachable now is worth another start.
    uri::parse(&config.store_uri, &env).map_err(|e| StartError::Config(e.to_string()))?;
    Opener::resolve(&config.store_uri, &env).map_err(|e| StartError::Store(log::chain(&e)))
}

/// The metrics, counting from where the last process left off
/// (`--metrics-file`), and this start counted.
fn resume_metrics(config: &Config) -> (Option<MetricsFile>, Arc<Metrics>) {
    let file = (config.metrics_file.clone()).map(|p| MetricsFile::new(p, config.metrics_interval));
    let metrics = Arc::new(
        file.as_ref()
            .map_or_else(Metrics::default, MetricsFile::resume),
    );
    metrics.activation();
    (file, metrics)
}

/// The application and what the main thread keeps of it.
struct App {
    cache: Arc<Cache>,
    auth: Option<Arc<Auth>>,
    /// `--serve-closure-of`: asked at every tick to look at the roots.
    closure: Option<Refresher>,
    /// `--upstream`: its work under way holds off the idle exit and the drain.
    upstream: Option<Upstream>,
}

/// The cache application over the store `opener` resolved, with the first
/// closure already computed: the server never serves unfiltered.
fn application(
    config: &Config,
    keys: Vec<SecretKey>,
    auth: Option<Arc<Auth>>,
    opener: &Opener,
    metrics: &Arc<Metrics>,
) -> Result<App, StartError> {
    let open: Arc<dyn OpenStore> = Arc::new(CountingOpener {
        inner: Arc::new(opener.clone()),
        metrics: metrics.clone(),
    });
    // One budget for the memory of computed bodies and of upstream
    // downloads (README "Limits").
    let heavy = heavy::Heavy::new(heavy::BUDGET);
    let settings = Arc::new(ReplySettings {
        keys,
        priority: config.priority,
        compression: config.compression,
        heavy: heavy.clone(),
    });
    let (allowed, closure) = if config.closure_roots.is_empty() {
        (None, None)
    } else {
        let source = closure::Source::of(opener).map_err(|e| StartError::Store(e.to_string()))?;
        let roots = Roots::new(config.closure_roots.clone(), source);
        let (allowed, refresher) =
            Refresher::start(roots).map_err(|e| StartError::Store(e.to_string()))?;
        (Some(allowed), Some(refresher))
    };
    let upstream = match &config.upstream {
        None => None,
        Some(u) => Some(pull_through(u, opener, metrics, &heavy)?),
    };
    let cache = Cache::new(settings, open, opener.change_signal(), metrics.clone())
        .with_metrics_route(config.metrics_route)
        .with_closure(allowed)
        .with_auth(auth.clone())
        .with_upstream(upstream.clone());
    Ok(App {
        cache: Arc::new(cache),
        auth,
        closure,
        upstream,
    })
}

/// Before the threads start, so a SIGTERM from now on drains cleanly: the
/// flag SIGTERM and SIGINT set. SIGHUP (logrotate; Starman's graceful
/// restart) reopens the log files.
fn on_signals() -> Result<Arc<AtomicBool>, StartError> {
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone())
            .map_err(|e| StartError::Other(format!("signal handler: {e}")))?;
    }
    log::reopen_on_sighup().map_err(|e| StartError::Other(format!("signal handler: {e}")))?;
    Ok(term)
}

fn start_server(
    config: &Config,
    listeners: Vec<Listener>,
    app: Arc<Cache>,
    metrics: &Arc<Metrics>,
) -> Result<Server, StartError> {
    let settings = Settings {
        limits: Limits {
            read_timeout: config.read_timeout,
            keepalive_timeout: config.keepalive_timeout,
            write_timeout: config.write_timeout,
            keepalive: config.keepalive,
        },
        loops: config.loops,
        workers: config.workers,
        access_log: log::access_enabled(),
        max_connections: None,
    };
    Server::start(listeners, app, settings, metrics.clone())
        .map_err(|e| StartError::Other(format!("cannot start: {e}")))
}

/// What is served, how, to the log and to systemd with `READY=1`.
fn ready(config: &Config, opener: &Opener, server: &Server, app: &App, notifier: &Notifier) {
    let mut what = format!(
        "Serving store {} on {} with {} event loop(s), up to {} workers, {} signing key(s)",
        opener.describe(),
        server.describe(),
        config.loops,
        config.workers,
        config.key_files.len()
    );
    if let Some(a) = &app.auth {
        what.push_str(&format!("; Basic authentication: {}", a.describe()));
    }
    if let Some(up) = &app.upstream {
        what.push_str(&format!("; {}", up.describe()));
    }
    log::info(&what);
    notifier.ready(&what);
}

/// Says why it stops, then lets the requests already received, and the
/// upstream downloads and imports under way, finish within [`DRAIN_BOUND`]
/// of the moment the signal (or idleness) was seen.
fn drain(exit: &Exit, server: Server, upstream: Option<&Upstream>, notifier: &Notifier) {
    let deadline = Instant::now() + DRAIN_BOUND;
    let why = match exit {
        Exit::Idle(d) => format!("No connection for {}s, exiting", d.as_secs()),
        Exit::Signal => "Stopping: finishing requests in flight".to_owned(),
    };
    log::exiting();
    log::info(&why);
    notifier.stopping(&why);
    if !server.drain(deadline) {
        log::warn("requests still in flight after the drain bound; exiting anyway");
    }
    // Within the same bound: an import cut off by the exit is the daemon's
    // to roll back (its transaction registers a path whole or not at all).
    if let Some(up) = upstream.filter(|up| up.busy()) {
        log::info("waiting for upstream downloads and imports in flight");
        if !up.wait_idle(deadline) {
            log::warn(
                "upstream downloads or imports still under way after the drain bound; \
                 exiting anyway (the nix-daemon registers nothing of an import cut off)",
            );
        }
    }
}

/// The last counts: to `--metrics-file`, and one line to the log.
fn exit_summary(exit: &Exit, metrics_file: Option<&mut MetricsFile>, metrics: &Metrics) {
    if matches!(exit, Exit::Idle(_)) {
        metrics.idle_exit();
    }
    if let Some(f) = metrics_file {
        f.write(metrics);
    }
    let run = metrics.run_summary();
    log::info(&format!(
        "Exiting after {:.1}s: {} requests answered, {} bytes sent",
        run.alive.as_secs_f64(),
        run.requests,
        run.bytes
    ));
}

/// How many bcrypt verifications may run at once: half the workers (whose
/// default is twice the CPUs: one a CPU), at least one, at most four. The
/// other workers stay free for requests whose credentials are known.
fn max_verifications(workers: usize) -> usize {
    (workers / 2).clamp(1, 4)
}

/// `--upstream`: pull-through counting into `metrics`, with imports through
/// the nix-daemon of the store served (none when it cannot be found).
fn pull_through(
    u: &UpstreamConfig,
    opener: &Opener,
    metrics: &Arc<Metrics>,
    heavy: &Arc<heavy::Heavy>,
) -> Result<Upstream, StartError> {
    download::check_temp_dir(&u.temp_dir).map_err(|e| {
        StartError::Config(format!(
            "--upstream-temp-dir {}: downloads cannot keep their NAR there: {e}",
            u.temp_dir.display()
        ))
    })?;
    let import = if u.max_import == 0 {
        None
    } else {
        match opener.import_socket(&env) {
            Ok(socket) => Some(ImportTarget {
                socket,
                store_dir: opener.store_dir().clone(),
                timeout: opener::DEFAULT_DAEMON_TIMEOUT,
            }),
            Err(why) => {
                log::warn(&format!(
                    "paths fetched upstream are served but not added to the store: {why}"
                ));
                None
            }
        }
    };
    metrics.upstream_on();
    let config = upstream::Config {
        caches: u.caches.clone(),
        store_dir: opener.store_dir().clone(),
        ca_bundle: u.ca_bundle.clone(),
        max_downloads: u.max_downloads,
        max_import: u.max_import,
        temp_dir: u.temp_dir.clone(),
        import,
        budget: Some(Budget::new({
            let heavy = heavy.clone();
            move |bytes| heavy.take(bytes).map(|p| Box::new(p) as Box<dyn Send>)
        })),
    };
    Upstream::new(config, metrics.clone()).map_err(|e| StartError::Config(e.to_string()))
}

/// What the main thread does at each tick besides supervising the server.
struct Chores<'a> {
    metrics_file: &'a mut Option<MetricsFile>,
    metrics: &'a Metrics,
    /// `--serve-closure-of`: asks twice a second whether a root or the
    /// store changed; the recompute runs on its own thread.
    closure: Option<Refresher>,
}

impl Chores<'_> {
    fn tick(&mut self, now: Instant) {
        log::reopen_if_hup();
        if let Some(f) = self.metrics_file {
            f.tick(self.metrics, now);
        }
        if let Some(w) = &mut self.closure {
            w.tick(now);
        }
    }
}
