//! Parsing single flag values: `--listen` addresses as Starman reads them,
//! and durations as systemd unit files and Starman's second counts write them.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, ListenSpec};

pub(super) fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Parses one `--listen` value the way Starman reads it.
pub fn parse_listen(spec: &str) -> Result<ListenSpec, ConfigError> {
    let err = |reason: &str| ConfigError::Listen {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    if spec.contains('/') {
        return Ok(ListenSpec::Unix(PathBuf::from(spec)));
    }
    if spec.ends_with(":ssl") {
        return Err(ConfigError::Tls(spec.to_owned()));
    }
    let (host, port) = spec
        .rsplit_once(':')
        .ok_or_else(|| err("expected HOST:PORT, :PORT, [V6]:PORT or a socket path"))?;
    let port: u16 = port.parse().map_err(|_| err("invalid port"))?;
    // nix-serve-ng's --host takes warp's wildcards too: `*4`/`*6` prefer a
    // family but take both, `!4`/`!6` take only one.
    match host {
        "" | "*" | "*4" | "*6" => return Ok(ListenSpec::AllAddresses(port)),
        "!4" => {
            return Ok(ListenSpec::Tcp(vec![SocketAddr::from((
                Ipv4Addr::UNSPECIFIED,
                port,
            ))]))
        }
        "!6" => {
            return Ok(ListenSpec::Tcp(vec![SocketAddr::from((
                Ipv6Addr::UNSPECIFIED,
                port,
            ))]))
        }
        _ => {}
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = v6.parse().map_err(|_| err("invalid IPv6 address"))?;
        return Ok(ListenSpec::Tcp(vec![SocketAddr::from((ip, port))]));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ListenSpec::Tcp(vec![SocketAddr::from((ip, port))]));
    }
    if host.contains(':') {
        return Err(err("write IPv6 addresses as [ADDR]:PORT"));
    }
    // A host name: bind every address it resolves to, as Starman does.
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(&format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(err("host name resolves to no address"));
    }
    Ok(ListenSpec::Tcp(addrs))
}

/// `60`, `60s`, `500ms`, `5min`, `5m`, `1h`, `0`: what systemd unit files and
/// Starman's second counts both look like.
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() || digits.len() > 9 {
        return Err("expected a number of seconds, optionally with a unit (ms, s, min, h)");
    }
    let n: u64 = digits.parse().map_err(|_| "invalid number")?;
    let ms = match unit.trim() {
        "ms" | "msec" => 1,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000,
        _ => return Err("unknown unit (use ms, s, min or h)"),
    };
    Ok(Duration::from_millis(n * ms))
}

/// A size in bytes: `1024`, or with a binary suffix `K`, `M`, `G`, `T`
/// (`8G` is 8 GiB), as systemd unit files write sizes.
pub fn parse_size(text: &str) -> Result<u64, &'static str> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() || digits.len() > 15 {
        return Err("expected a number of bytes, optionally with K, M, G or T");
    }
    let n: u64 = digits.parse().map_err(|_| "invalid number")?;
    let shift = match unit.trim() {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err("unknown unit (use K, M, G or T)"),
    };
    n.checked_mul(1 << shift).ok_or("too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let table = [
            ("0", 0),
            ("1024", 1024),
            ("8G", 8 << 30),
            ("512M", 512 << 20),
            ("1t", 1 << 40),
            (" 4k ", 4096),
        ];
        for (text, bytes) in table {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "G", "-1", "1.5G", "8GiB", "1P", "9999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        let table = [
            ("60", 60_000),
            ("60s", 60_000),
            ("5min", 300_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("0", 0),
            ("250ms", 250),
        ];
        for (text, ms) in table {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "s", "-1", "1d", "1.5s", "99999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_specs() {
        let v4 = |s: &str| SocketAddr::from((s.parse::<Ipv4Addr>().unwrap(), 8080));
        assert_eq!(
            parse_listen("127.0.0.1:8080"),
            Ok(ListenSpec::Tcp(vec![v4("127.0.0.1")]))
        );
        assert_eq!(parse_listen(":8080"), Ok(ListenSpec::AllAddresses(8080)));
        assert_eq!(parse_listen("*:8080"), Ok(ListenSpec::AllAddresses(8080)));
        assert_eq!(parse_listen("*4:8080"), Ok(ListenSpec::AllAddresses(8080)));
        assert_eq!(
            parse_listen("!4:8080"),
            Ok(ListenSpec::Tcp(vec![v4("0.0.0.0")]))
        );
        assert_eq!(
            parse_listen("[::1]:8080"),
            Ok(ListenSpec::Tcp(vec![SocketAddr::from((
                Ipv6Addr::LOCALHOST,
                8080
            ))]))
        );
        assert_eq!(
            parse_listen("/run/nix-serve.sock"),
            Ok(ListenSpec::Unix("/run/nix-serve.sock".into()))
        );
        assert_eq!(
            parse_listen("0.0.0.0:443:ssl"),
            Err(ConfigError::Tls("0.0.0.0:443:ssl".into()))
        );
        for bad in ["8080", "host:", "1.2.3.4:99999", "::1:80", "[zz]:80"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }
}
