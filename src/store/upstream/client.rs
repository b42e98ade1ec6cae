//! The HTTP(S) client for upstream caches: their URLs, the time-outs, the CA
//! bundle, and what an answer means to a Nix client.
//!
//! One `ureq` agent, shared by every thread (it pools connections). TLS is
//! rustls, trusting the certificates of the CA bundle Nix itself would use
//! (`ca_bundle`): an upstream a Nix client on this machine can reach, we can.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

/// At most this long to set up a connection (TCP, then TLS; the name
/// look-up counts against each request's whole bound): a LAN client waits
/// on it, and a reachable cache answers in well under a second.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A narinfo request from first byte sent to last byte read. Our client's
/// own client gives up on us after a while too (Nix's `connect-timeout` is
/// off by default, curl's stall limit 300 s): ours must come first, with a
/// 5xx it retries.
pub const NARINFO_TIMEOUT: Duration = Duration::from_secs(15);
/// A NAR body may take as long as its size needs, but never this long
/// without a byte: a stalled upstream fails every client waiting on it.
pub const NAR_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest rate a NAR download may average, which bounds its total
/// time: `NAR_TIME_BASE` plus its NarSize at this rate.
pub const NAR_MIN_RATE: u64 = 256 * 1024;
pub const NAR_TIME_BASE: Duration = Duration::from_secs(60);
/// A narinfo is a few hundred bytes; a path with ten thousand references
/// makes one of about 600 KiB.
pub const MAX_NARINFO: u64 = 4 << 20;
/// Where Nix looks when neither variable names a bundle (Nix 2.8's
/// `Settings::Settings` in `globals.cc`).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/nix/var/nix/profiles/default/etc/ssl/certs/ca-bundle.crt",
];

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("upstream cache URL {0:?}: only http:// and https:// URLs are supported")]
    Scheme(String),
    #[error("upstream cache URL {0:?} has no host")]
    NoHost(String),
    #[error("upstream cache URL {0:?}: a query or fragment cannot be combined with file names")]
    Query(String),
    #[error("CA bundle {path}: {why}")]
    CaBundle { path: PathBuf, why: String },
    #[error(
        "an https:// upstream needs a CA bundle: set NIX_SSL_CERT_FILE or SSL_CERT_FILE, \
         or install one at {}",
        CA_BUNDLES[0]
    )]
    NoCaBundle,
}

/// A cache's base URL, `http://` or `https://`, without a trailing `/`.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheUrl(String);

impl CacheUrl {
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let base = s.trim_end_matches('/');
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| ClientError::Scheme(s.to_owned()))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ClientError::NoHost(s.to_owned()));
        }
        if rest.contains(['?', '#']) {
            return Err(ClientError::Query(s.to_owned()));
        }
        Ok(CacheUrl(base.to_owned()))
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<base>/<name>`: a file of this cache.
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.0)
    }

    /// Where a narinfo's `URL:` points, as Nix 2.8 resolves it
    /// (`BinaryCacheStore::getFile`): an absolute `http(s)://` URL as is,
    /// anything else relative to the cache. `None` for what we cannot
    /// fetch (`file://`, `s3://`).
    pub fn resolve(&self, url: &str) -> Option<String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Some(url.to_owned())
        } else if url.contains("://") {
            None
        } else {
            Some(self.file(url.trim_start_matches('/')))
        }
    }
}

impl fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheUrl({})", self.0)
    }
}

/// The CA bundle Nix would use: `NIX_SSL_CERT_FILE`, else `SSL_CERT_FILE`,
/// else the first of [`CA_BUNDLES`] that exists (`env` reads a variable).
pub fn ca_bundle(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"]
        .iter()
        .find_map(|v| env(v).filter(|s| !s.is_empty()))
        .map(PathBuf::from)
        .or_else(|| {
            CA_BUNDLES
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .map(Path::to_path_buf)
        })
}

/// How an upstream answered, in a Nix client's terms (Nix 2.8
/// `filetransfer.cc`: 404 and 410 are NotFound, 401, 403 and 407 Forbidden,
/// and a cache that forbids a narinfo does not have it).
pub enum Answer {
    /// 200: the body follows.
    Found(ureq::Body),
    /// The cache does not have it.
    Absent,
}

/// Why an upstream gave no answer: a status that says nothing of the path,
/// or no reply at all. Our client must then not be told "absent".
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: ureq::Error,
    },
}

/// The shared client.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    /// A client that trusts the certificates in `ca_bundle` for https
    /// (needed only when some upstream is https).
    pub fn new(ca_bundle: Option<&Path>) -> Result<Self, ClientError> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(concat!("nix-serve-sd/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_bundle {
            let roots = read_bundle(path)?;
            config = config.tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::Specific(Arc::new(roots)))
                    .build(),
            );
        }
        Ok(Client {
            agent: config.build().into(),
        })
    }

    /// GET `url` with at most `total` for the whole exchange and, for the
    /// body, at most `stall` between two reads.
    pub fn get(&self, url: &str, total: Duration, stall: Duration) -> Result<Answer, FetchError> {
        let reply = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(total))
            .timeout_per_read(Some(stall))
            .build()
            .call()
            .map_err(|source| FetchError::Transport {
                url: url.to_owned(),
                source,
            })?;
        match reply.status().as_u16() {
            200 => Ok(Answer::Found(reply.into_body())),
            401 | 403 | 404 | 407 | 410 => Ok(Answer::Absent),
            status => Err(FetchError::Status {
                url: url.to_owned(),
                status,
            }),
        }
    }

    /// A small body (a narinfo), whole, at most `max` bytes.
    pub fn get_small(&self, url: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        match self.get(url, NARINFO_TIMEOUT, NARINFO_TIMEOUT)? {
            Answer::Absent => Ok(None),
            Answer::Found(body) => {
                let mut out = Vec::new();
                body.into_with_config()
                    .limit(max)
                    .reader()
                    .read_to_end(&mut out)
                    .map_err(|e| FetchError::Transport {
                        url: url.to_owned(),
                        source: ureq::Error::Io(e),
                    })?;
                Ok(Some(out))
            }
        }
    }
}

/// The certificates of a PEM bundle; one that holds none is an error (a
/// typo'd path would otherwise fail every https request later).
fn read_bundle(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, ClientError> {
    let fail = |why: String| ClientError::CaBundle {
        path: path.to_owned(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let mut roots = Vec::new();
    for item in parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| fail(e.to_string()))? {
            roots.push(c);
        }
    }
    if roots.is_empty() {
        return Err(fail("no certificate in it".into()));
    }
    Ok(roots)
}

/// The time a NAR of `nar_size` bytes may take at most (see
/// [`NAR_MIN_RATE`]).
pub fn nar_time_limit(nar_size: u64) -> Duration {
    NAR_TIME_BASE + Duration::from_secs(nar_size / NAR_MIN_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_urls() {
        let u = CacheUrl::parse("https://cache.nixos.org/").unwrap();
        assert_eq!(u.as_str(), "https://cache.nixos.org");
        assert!(u.is_https());
        assert_eq!(u.file("abc.narinfo"), "https://cache.nixos.org/abc.narinfo");
        let sub = CacheUrl::parse("http://10.0.0.1:8080/cache").unwrap();
        assert!(!sub.is_https());
        assert_eq!(
            sub.resolve("nar/x.nar.xz").as_deref(),
            Some("http://10.0.0.1:8080/cache/nar/x.nar.xz")
        );
        assert_eq!(
            sub.resolve("https://cdn.example/nar/x.nar").as_deref(),
            Some("https://cdn.example/nar/x.nar")
        );
        assert_eq!(sub.resolve("s3://bucket/nar/x.nar"), None);
        for bad in [
            "cache.nixos.org",
            "file:///tmp/cache",
            "s3://bucket",
            "https://",
            "http:///x",
            "https://host/?priority=10",
        ] {
            assert!(CacheUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_bundle_as_nix_finds_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            ca_bundle(&env(&[
                ("NIX_SSL_CERT_FILE", "/a"),
                ("SSL_CERT_FILE", "/b")
            ])),
            Some(PathBuf::from("/a"))
        );
        assert_eq!(
            ca_bundle(&env(&[("NIX_SSL_CERT_FILE", ""), ("SSL_CERT_FILE", "/b")])),
            Some(PathBuf::from("/b"))
        );
        let fallback = ca_bundle(&env(&[]));
        assert_eq!(
            fallback,
            CA_BUNDLES.iter().map(PathBuf::from).find(|p| p.exists())
        );
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("nss-ca-{}", std::process::id()));
        std::fs::write(&dir, b"not a certificate\n").unwrap();
        let e = Client::new(Some(&dir)).err().expect("refused");
        std::fs::remove_file(&dir).unwrap();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }

    #[test]
    fn nar_time_grows_with_size() {
        assert_eq!(nar_time_limit(0), NAR_TIME_BASE);
        assert_eq!(
            nar_time_limit(1 << 30),
            NAR_TIME_BASE + Duration::from_secs(4096)
        );
    }
}
