use super::*;
use std::net::Ipv6Addr;

fn resolve(args: &[&str], env: &[(&str, &str)], activated: bool) -> Result<Config, ConfigError> {
    let mut argv = vec!["nix-serve"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("clap accepts");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Config::resolve(cli, &lookup, activated, 2)
}

#[test]
fn a_repeated_flag_takes_the_last_value_and_lists_keep_all() {
    let c = resolve(
        &[
            "--priority",
            "40",
            "--priority",
            "50",
            "--idle-timeout",
            "5s",
            "--idle-timeout",
            "0",
            "-l",
            "127.0.0.1:1",
            "-l",
            "127.0.0.1:2",
        ],
        &[],
        true,
    )
    .unwrap();
    assert_eq!(c.priority, 50);
    assert_eq!(c.idle_timeout, None);
    let c = resolve(
        &["-l", "127.0.0.1:1", "--listen", "127.0.0.1:2"],
        &[],
        false,
    )
    .unwrap();
    assert_eq!(c.listen.len(), 2, "{:?}", c.listen);
}

#[test]
fn defaults_self_bound() {
    let c = resolve(&[], &[], false).unwrap();
    assert_eq!(c.listen, vec![ListenSpec::AllAddresses(5000)]);
    assert_eq!(c.priority, 30);
    assert_eq!(c.store_uri, "auto");
    assert_eq!(c.idle_timeout, None);
    assert_eq!(c.workers, 4);
    assert!(c.key_files.is_empty());
    assert!(c.ignored.is_empty());
}

#[test]
fn defaults_socket_activated() {
    let c = resolve(&[], &[], true).unwrap();
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
    let c = resolve(&["--idle-timeout", "0"], &[], true).unwrap();
    assert_eq!(c.idle_timeout, None);
    let c = resolve(&["--idle-timeout", "5min"], &[], false).unwrap();
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
}

#[test]
fn serve_closure_of_is_repeatable_and_off_by_default() {
    assert!(resolve(&[], &[], true).unwrap().closure_roots.is_empty());
    let c = resolve(
        &[
            "--serve-closure-of",
            "/run/current-system",
            "--serve-closure-of",
            "result",
        ],
        &[],
        false,
    )
    .unwrap();
    assert_eq!(
        c.closure_roots,
        [
            PathBuf::from("/run/current-system"),
            PathBuf::from("result")
        ]
    );
}

#[test]
fn htpasswd_is_off_by_default_and_the_last_one_wins() {
    assert_eq!(resolve(&[], &[], true).unwrap().htpasswd, None);
    let c = resolve(
        &["--htpasswd", "/etc/a", "--htpasswd", "/etc/nix/htpasswd"],
        &[],
        false,
    )
    .unwrap();
    assert_eq!(c.htpasswd, Some(PathBuf::from("/etc/nix/htpasswd")));
}

#[test]
fn metrics_flags() {
    let c = resolve(&[], &[], true).unwrap();
    assert_eq!(c.metrics_file, None);
    assert_eq!(c.metrics_interval, DEFAULT_METRICS_INTERVAL);
    assert!(!c.metrics_route);
    let c = resolve(
        &[
            "--metrics-file",
            "/var/lib/nix-serve/metrics.prom",
            "--metrics-interval",
            "1min",
            "--metrics-route",
        ],
        &[],
        true,
    )
    .unwrap();
    assert_eq!(
        c.metrics_file.as_deref(),
        Some(std::path::Path::new("/var/lib/nix-serve/metrics.prom"))
    );
    assert_eq!(c.metrics_interval, Duration::from_secs(60));
    assert!(c.metrics_route);
    let c = resolve(&["--metrics-interval", "0"], &[], true).unwrap();
    assert_eq!(c.metrics_interval, Duration::from_millis(100));
    assert!(resolve(&["--metrics-interval", "soon"], &[], true).is_err());
}

#[test]
fn drop_in_command_line() {
    let c = resolve(
        &[
            "--listen",
            "127.0.0.1:8080",
            "--workers",
            "4",
            "--preload-app",
            "--access-log",
            "/dev/stderr",
            "--priority",
            "40",
            "--max-requests",
            "1000",
            "-E",
            "deployment",
            "--user",
            "nix-serve",
            "--backlog",
            "64",
            "--keepalive-timeout",
            "2",
        ],
        &[],
        false,
    )
    .unwrap();
    assert_eq!(c.workers, 4);
    assert_eq!(c.priority, 40);
    assert_eq!(c.backlog, 64);
    assert_eq!(c.keepalive_timeout, Duration::from_secs(2));
    assert_eq!(c.access_log, Some("/dev/stderr".into()));
    assert_eq!(c.ignored.len(), 4, "{:?}", c.ignored);
}

#[test]
fn host_port_and_sockets() {
    let c = resolve(&["--host", "::1", "--port", "7000"], &[], false).unwrap();
    assert_eq!(
        c.listen,
        vec![ListenSpec::Tcp(vec![SocketAddr::from((
            Ipv6Addr::LOCALHOST,
            7000
        ))])]
    );
    let c = resolve(&["--host", "*", "--port", "7000"], &[], false).unwrap();
    assert_eq!(c.listen, vec![ListenSpec::AllAddresses(7000)]);
    let c = resolve(&["--host", "*6"], &[], false).unwrap();
    assert_eq!(c.listen, vec![ListenSpec::AllAddresses(5000)]);
    let c = resolve(&["-S", "/tmp/a.sock", "-l", ":1"], &[], false).unwrap();
    assert_eq!(
        c.listen,
        vec![
            ListenSpec::AllAddresses(1),
            ListenSpec::Unix("/tmp/a.sock".into())
        ]
    );
}

#[test]
fn environment() {
    let c = resolve(
        &["--sign-key-file", "/k1"],
        &[("NIX_SECRET_KEY_FILE", "/k2"), ("NIX_REMOTE", "daemon")],
        false,
    )
    .unwrap();
    assert_eq!(
        c.key_files,
        vec![PathBuf::from("/k1"), PathBuf::from("/k2")]
    );
    assert_eq!(c.store_uri, "daemon");
    let c = resolve(&["--store", "local"], &[("NIX_REMOTE", "daemon")], false).unwrap();
    assert_eq!(c.store_uri, "local");
}

#[test]
fn tls_is_refused() {
    assert_eq!(
        resolve(&["--enable-ssl"], &[], false).unwrap_err(),
        ConfigError::TlsFlag {
            flag: "--enable-ssl"
        }
    );
    assert!(resolve(&["--ssl-key", "k"], &[], false).is_err());
    assert!(resolve(&["--workers", "0"], &[], false).is_err());
}

#[test]
fn upstream_flags_and_their_defaults() {
    assert!(resolve(&[], &[], true).unwrap().upstream.is_none());
    let c = resolve(
        &[
            "--upstream",
            "https://cache.nixos.org/",
            "--upstream",
            "http://10.0.0.2:5000",
        ],
        &[("TMPDIR", "/scratch"), ("NIX_SSL_CERT_FILE", "/etc/ca.pem")],
        true,
    )
    .unwrap();
    let u = c.upstream.unwrap();
    let urls: Vec<&str> = u.caches.iter().map(CacheUrl::as_str).collect();
    assert_eq!(urls, ["https://cache.nixos.org", "http://10.0.0.2:5000"]);
    assert_eq!(u.max_downloads, 16);
    assert_eq!(u.max_import, 8 << 30);
    assert_eq!(u.temp_dir, PathBuf::from("/scratch"));
    assert_eq!(u.ca_bundle, Some(PathBuf::from("/etc/ca.pem")));
    let u = resolve(
        &[
            "--upstream",
            "http://a",
            "--upstream-max-downloads",
            "2",
            "--upstream-max-import",
            "0",
            "--upstream-temp-dir",
            "/var/cache/nix-serve",
        ],
        &[("TMPDIR", "/scratch")],
        false,
    )
    .unwrap()
    .upstream
    .unwrap();
    assert_eq!((u.max_downloads, u.max_import), (2, 0));
    assert_eq!(u.temp_dir, PathBuf::from("/var/cache/nix-serve"));
    let u = resolve(&["--upstream", "http://a"], &[], false).unwrap();
    assert_eq!(u.upstream.unwrap().temp_dir, PathBuf::from("/var/tmp"));
    let e = resolve(&["--upstream", "s3://bucket"], &[], false).unwrap_err();
    assert!(e.to_string().starts_with("--upstream: "), "{e}");
    for bad in [
        &["--upstream", "http://a", "--upstream-max-downloads", "0"][..],
        &["--upstream", "http://a", "--upstream-max-import", "lots"],
    ] {
        assert!(resolve(bad, &[], false).is_err(), "{bad:?}");
    }
}

#[test]
fn compression_flag() {
    assert_eq!(
        resolve(&[], &[], false).unwrap().compression,
        Compression::None
    );
    let c = resolve(&["--compression", "zstd:5"], &[], false).unwrap();
    assert_eq!(c.compression, Compression::Zstd { level: 5 });
    let e = resolve(&["--compression", "xz"], &[], false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--compression \"xz\": expected none, zstd or zstd:LEVEL"
    );
}
