//! The route table: raw request target → typed [`Route`], or a 4xx.
//!
//! An allow-list of shapes; nothing here ever becomes a filesystem path.
//! narinfo is matched first: it is most of the traffic (`docs/protocols.md`
//! §4, §10). Hashes are validated here, before any store query.

use crate::nix::hash::Sha256;
use crate::nix::nix32;
use crate::nix::store_path::{HashPart, StorePath, HASH_PART_LEN};

use crate::server::app::Method;

/// Characters of a sha256 in nix32, as in NAR URLs.
const NAR_HASH_LEN: usize = nix32::encoded_len(32);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/<hash>.narinfo`
    NarInfo(HashPart),
    /// `/nar/<hash>-<narhash>.nar` (nix-serve), `/nar/<hash>.nar` (legacy),
    /// `/nar/<narhash>.nar?hash=<hash>` (harmonia).
    Nar {
        hash: HashPart,
        nar_hash: Option<Sha256>,
    },
    /// `/nar/<hash>-<narhash>.nar.zst` (and the other `Nar` shapes with
    /// `.zst`): the NAR compressed with zstd while it streams.
    NarZstd {
        hash: HashPart,
        nar_hash: Option<Sha256>,
    },
    /// `/nix-cache-info`
    CacheInfo,
    /// `/<hash>.ls`: the NAR listing.
    Listing(HashPart),
    /// `/log/<…>`: a build log.
    Log(LogName),
    /// `/metrics` (served only with `--metrics-route`).
    Metrics,
}

/// What `/log/<…>` names. Nix's client asks for a derivation's base name
/// (`docs/protocols.md` §9); nix-serve also takes an output's (it runs `nix
/// log` on it, which follows the deriver), harmonia a bare hash part.
/// Neither takes a full store path, so neither do we.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogName {
    /// `<hash>-<name>`: a derivation, or an output whose deriver has the log.
    Path(StorePath),
    /// `<hash>`: the valid path with that hash part, then as `Path`.
    Hash(HashPart),
}

/// Why a request matches no route. `reason` goes into the body: short, and
/// never an echo of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// 405 with `Allow: GET, HEAD`.
    Method,
    /// 404 `File not found.` as nix-serve answers.
    NotFound,
    /// 400 with a short reason.
    BadRequest(&'static str),
}

/// Parses `method` and the raw (undecoded) request target.
pub fn parse(method: &Method, target: &str) -> Result<Route, RouteError> {
    if !matches!(method, Method::Get | Method::Head) {
        return Err(RouteError::Method);
    }
    // Absolute form (`GET http://host/x`), which RFC 9112 §3.2.2 says a
    // server must accept; proxies send it. The scheme is case-insensitive
    // (RFC 3986 §3.1): `HTTP://host/x` is the same target.
    let target = match strip_scheme(target) {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = path.strip_prefix('/').ok_or(RouteError::NotFound)?;

    if let Some(stem) = path.strip_suffix(".narinfo") {
        if stem.contains('/') {
            return Err(RouteError::NotFound);
        }
        return parse_hash_part(stem).map(Route::NarInfo);
    }
    if let Some(name) = path.strip_prefix("log/") {
        return parse_log(name).map(Route::Log);
    }
    if path == "nix-cache-info" {
        return Ok(Route::CacheInfo);
    }
    if path == "metrics" {
        return Ok(Route::Metrics);
    }
    if let Some(name) = path.strip_prefix("nar/") {
        let (name, zstd) = match name.strip_suffix(".nar.zst") {
            Some(n) => (n, true),
            None => (
                name.strip_suffix(".nar").ok_or(RouteError::NotFound)?,
                false,
            ),
        };
        if name.contains('/') {
            return Err(RouteError::NotFound);
        }
        let (hash, nar_hash) = parse_nar(name, query)?;
        return Ok(if zstd {
            Route::NarZstd { hash, nar_hash }
        } else {
            Route::Nar { hash, nar_hash }
        });
    }
    if let Some(stem) = path.strip_suffix(".ls") {
        if stem.contains('/') {
            return Err(RouteError::NotFound);
        }
        return parse_hash_part(stem).map(Route::Listing);
    }
    Err(RouteError::NotFound)
}

/// The name is never decoded: `%2f`, `..` or a `/` are not in a store path
/// name's alphabet, so they fail validation and reach no file.
fn parse_log(name: &str) -> Result<LogName, RouteError> {
    if name.contains('/') {
        return Err(RouteError::NotFound);
    }
    if name.len() == HASH_PART_LEN {
        return parse_hash_part(name).map(LogName::Hash);
    }
    StorePath::from_base_name(name)
        .map(LogName::Path)
        .map_err(|_| RouteError::BadRequest("Invalid store path.\n"))
}

/// What follows `http://` or `https://`, in any case, or `None`.
fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    })
}

/// The store path's hash part and, if the URL has it, the NAR hash.
fn parse_nar(name: &str, query: Option<&str>) -> Result<(HashPart, Option<Sha256>), RouteError> {
    match name.len() {
        HASH_PART_LEN => Ok((parse_hash_part(name)?, None)),
        NAR_HASH_LEN => {
            let nar_hash = parse_nar_hash(name)?;
            let hash = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|kv| kv.strip_prefix("hash="))
                .ok_or(RouteError::BadRequest("Missing hash query parameter.\n"))?;
            Ok((parse_hash_part(hash)?, Some(nar_hash)))
        }
        n if n == HASH_PART_LEN + 1 + NAR_HASH_LEN && name.as_bytes()[HASH_PART_LEN] == b'-' => {
            let (hash, nar_hash) = name.split_at(HASH_PART_LEN);
            Ok((
                parse_hash_part(hash)?,
                Some(parse_nar_hash(&nar_hash[1..])?),
            ))
        }
        _ => Err(RouteError::BadRequest("Invalid NAR name.\n")),
    }
}

fn parse_hash_part(s: &str) -> Result<HashPart, RouteError> {
    HashPart::parse(s).map_err(|_| RouteError::BadRequest("Invalid store path hash.\n"))
}

fn parse_nar_hash(s: &str) -> Result<Sha256, RouteError> {
    // Only nix32 here: the NAR URLs we (and nix-serve, harmonia) emit use it.
    if s.len() != NAR_HASH_LEN {
        return Err(RouteError::BadRequest("Invalid NAR hash.\n"));
    }
    Sha256::parse_bare(s).map_err(|_| RouteError::BadRequest("Invalid NAR hash.\n"))
}

/// The route a raw target names, for metrics labels: cheap, and never
/// more than these few values, whatever a client sends (a label per target
/// would let clients grow the metrics without bound). Validates nothing.
pub fn label(target: &str) -> &'static str {
    let path = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.ends_with(".narinfo") {
        "narinfo"
    } else if path.starts_with("/nar/") {
        "nar"
    } else if path == "/nix-cache-info" {
        "nix-cache-info"
    } else if path.ends_with(".ls") {
        "ls"
    } else if path.starts_with("/log/") {
        "log"
    } else if path == "/metrics" {
        "metrics"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "wmm9hngfwxsjqpiy50lligndn8n83f6w";
    const N: &str = "1snz5sd22qrv3f5ldsnclydnqi3wqwi7ig3yrdx9cj44n6qb04jl";

    fn get(t: &str) -> Result<Route, RouteError> {
        parse(&Method::Get, t)
    }

    #[test]
    fn routes() {
        let hash = HashPart::parse(H).unwrap();
        let nar_hash = Sha256::parse_bare(N).unwrap();
        assert_eq!(get(&format!("/{H}.narinfo")), Ok(Route::NarInfo(hash)));
        assert_eq!(
            parse(&Method::Head, &format!("/{H}.narinfo?x=1")),
            Ok(Route::NarInfo(hash))
        );
        assert_eq!(get("/nix-cache-info"), Ok(Route::CacheInfo));
        assert_eq!(get("/metrics"), Ok(Route::Metrics));
        assert_eq!(get("/metrics?x"), Ok(Route::Metrics));
        assert_eq!(get("/metrics/x"), Err(RouteError::NotFound));
        assert_eq!(
            get("http://cache.example/nix-cache-info"),
            Ok(Route::CacheInfo)
        );
        assert_eq!(get("http://cache.example"), Err(RouteError::NotFound));
        assert_eq!(
            get("HTTP://cache.example/nix-cache-info"),
            Ok(Route::CacheInfo)
        );
        assert_eq!(get("hTtPs://c/nix-cache-info"), Ok(Route::CacheInfo));
        assert_eq!(
            get(&format!("/nar/{H}-{N}.nar")),
            Ok(Route::Nar {
                hash,
                nar_hash: Some(nar_hash)
            })
        );
        assert_eq!(
            get(&format!("/nar/{H}.nar")),
            Ok(Route::Nar {
                hash,
                nar_hash: None
            })
        );
        assert_eq!(get(&format!("/{H}.ls")), Ok(Route::Listing(hash)));
        assert_eq!(
            get(&format!("/nar/{H}-{N}.nar.zst")),
            Ok(Route::NarZstd {
                hash,
                nar_hash: Some(nar_hash)
            })
        );
        let drv = StorePath::from_base_name(&format!("{H}-hello.drv")).unwrap();
        assert_eq!(
            get(&format!("/log/{H}-hello.drv")),
            Ok(Route::Log(LogName::Path(drv)))
        );
        assert_eq!(
            get(&format!("/log/{H}")),
            Ok(Route::Log(LogName::Hash(hash)))
        );
        assert_eq!(
            get(&format!("/nar/{N}.nar?hash={H}")),
            Ok(Route::Nar {
                hash,
                nar_hash: Some(nar_hash)
            })
        );
    }

    #[test]
    fn refusals() {
        let bad = RouteError::BadRequest;
        let table: Vec<(String, RouteError)> = vec![
            ("/".into(), RouteError::NotFound),
            ("".into(), RouteError::NotFound),
            ("/index.html".into(), RouteError::NotFound),
            ("/nix-cache-info/".into(), RouteError::NotFound),
            ("/../etc/passwd".into(), RouteError::NotFound),
            ("/nar/../../etc/passwd.nar".into(), RouteError::NotFound),
            (format!("/x/{H}.narinfo"), RouteError::NotFound),
            (format!("/nar/{H}.nar.xz"), RouteError::NotFound),
            (format!("/nar/x/{H}.nar.zst"), RouteError::NotFound),
            ("/log/abc".into(), bad("Invalid store path.\n")),
            (format!("/log/nix/store/{H}-x.drv"), RouteError::NotFound),
            (format!("/log/{H}-x.drv/"), RouteError::NotFound),
            (
                format!("/log/{H}-..%2f..%2fetc"),
                bad("Invalid store path.\n"),
            ),
            (format!("/log/{H}-.."), bad("Invalid store path.\n")),
            (format!("/log/..%2f{H}"), bad("Invalid store path.\n")),
            (format!("/x/{H}.ls"), RouteError::NotFound),
            ("/abc.ls".into(), bad("Invalid store path hash.\n")),
            ("/foo.narinfo".into(), bad("Invalid store path hash.\n")),
            (
                format!("/{}.narinfo", H.to_uppercase()),
                bad("Invalid store path hash.\n"),
            ),
            (
                format!("/%2e%2e{}.narinfo", &H[6..]),
                bad("Invalid store path hash.\n"),
            ),
            (
                format!("/{}e.narinfo", &H[1..]),
                bad("Invalid store path hash.\n"),
            ),
            ("/nar/abc.nar".into(), bad("Invalid NAR name.\n")),
            (format!("/nar/{H}_{N}.nar"), bad("Invalid NAR name.\n")),
            (
                format!("/nar/{N}.nar"),
                bad("Missing hash query parameter.\n"),
            ),
            (
                format!("/nar/{H}-{}u.nar", &N[1..]),
                bad("Invalid NAR hash.\n"),
            ),
        ];
        for (target, want) in table {
            assert_eq!(get(&target), Err(want), "{target}");
        }
        for m in ["POST", "PUT", "DELETE", "OPTIONS"] {
            assert_eq!(
                parse(&Method::Other(m.into()), "/nix-cache-info"),
                Err(RouteError::Method)
            );
        }
    }

    #[test]
    fn labels() {
        let table = [
            (format!("/{H}.narinfo"), "narinfo"),
            (format!("http://c.example/{H}.narinfo?x"), "narinfo"),
            ("/nar/abc.nar".into(), "nar"),
            (format!("/nar/{N}.nar?hash={H}"), "nar"),
            ("/nix-cache-info".into(), "nix-cache-info"),
            (format!("/{H}.ls"), "ls"),
            (format!("/log/{H}-hello.drv"), "log"),
            ("/metrics".into(), "metrics"),
            ("/metrics?name[]=x".into(), "metrics"),
            ("/metrics/x".into(), "other"),
            ("/".into(), "other"),
            ("-".into(), "other"),
            ("http://c.example".into(), "other"),
        ];
        for (target, want) in table {
            assert_eq!(label(&target), want, "{target}");
        }
    }
}
