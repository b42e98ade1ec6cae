//! Store URI parsing, with the environment injected.

use super::*;

fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn local(store: &str, real: &str, db: &str) -> LocalLocation {
    LocalLocation {
        store_dir: StoreDir::new(store).unwrap(),
        real_store: real.into(),
        db: db.into(),
    }
}

fn daemon(socket: &str, store: &str) -> Target {
    Target::Daemon {
        socket: socket.into(),
        store_dir: StoreDir::new(store).unwrap(),
    }
}

const SYS_DB: &str = "/nix/var/nix/db/db.sqlite";
const SYS_SOCK: &str = "/nix/var/nix/daemon-socket/socket";

#[test]
fn parses_uris_as_nix_does() {
    type Env = &'static [(&'static str, &'static str)];
    let none: Env = &[];
    let custom: Env = &[
        ("NIX_STORE_DIR", "/gnu/store"),
        ("NIX_STATE_DIR", "/var/st"),
        ("NIX_DAEMON_SOCKET_PATH", "/run/d.sock"),
    ];
    let cases: Vec<(&str, Env, Target)> = vec![
        (
            "auto",
            none,
            Target::Auto {
                local: local("/nix/store", "/nix/store", SYS_DB),
                socket: SYS_SOCK.into(),
            },
        ),
        (
            "",
            none,
            Target::Auto {
                local: local("/nix/store", "/nix/store", SYS_DB),
                socket: SYS_SOCK.into(),
            },
        ),
        ("daemon", none, daemon(SYS_SOCK, "/nix/store")),
        ("unix://", none, daemon(SYS_SOCK, "/nix/store")),
        (
            "unix:///tmp/s.sock",
            none,
            daemon("/tmp/s.sock", "/nix/store"),
        ),
        (
            "local",
            none,
            Target::Local(local("/nix/store", "/nix/store", SYS_DB)),
        ),
        (
            "local?root=/tmp/ch",
            none,
            Target::Local(local(
                "/nix/store",
                "/tmp/ch/nix/store",
                "/tmp/ch/nix/var/nix/db/db.sqlite",
            )),
        ),
        (
            "/tmp/ch/",
            none,
            Target::Local(local(
                "/nix/store",
                "/tmp/ch/nix/store",
                "/tmp/ch/nix/var/nix/db/db.sqlite",
            )),
        ),
        (
            "local?root=/tmp/a%20b",
            none,
            Target::Local(local(
                "/nix/store",
                "/tmp/a b/nix/store",
                "/tmp/a b/nix/var/nix/db/db.sqlite",
            )),
        ),
        (
            "local?state=/s&real=/r&store=/x/store",
            none,
            Target::Local(local("/x/store", "/r", "/s/db/db.sqlite")),
        ),
        // The environment moves every default...
        (
            "auto",
            custom,
            Target::Auto {
                local: local("/gnu/store", "/gnu/store", "/var/st/db/db.sqlite"),
                socket: "/run/d.sock".into(),
            },
        ),
        ("daemon", custom, daemon("/run/d.sock", "/gnu/store")),
        (
            "local",
            custom,
            Target::Local(local("/gnu/store", "/gnu/store", "/var/st/db/db.sqlite")),
        ),
        // ...but a chroot store keeps its state and files under its root.
        (
            "local?root=/c",
            custom,
            Target::Local(local(
                "/gnu/store",
                "/c/nix/store",
                "/c/nix/var/nix/db/db.sqlite",
            )),
        ),
        (
            "daemon",
            &[("NIX_STATE_DIR", "/var/st")],
            daemon("/var/st/daemon-socket/socket", "/nix/store"),
        ),
        (
            "daemon",
            &[("NIX_STORE", "/legacy/store")],
            daemon(SYS_SOCK, "/legacy/store"),
        ),
        (
            "daemon",
            &[
                ("NIX_STORE_DIR", "/new/store"),
                ("NIX_STORE", "/legacy/store"),
            ],
            daemon(SYS_SOCK, "/new/store"),
        ),
        // Empty variables count as unset.
        (
            "daemon",
            &[("NIX_STORE_DIR", ""), ("NIX_DAEMON_SOCKET_PATH", "")],
            daemon(SYS_SOCK, "/nix/store"),
        ),
    ];
    for (uri, env, want) in cases {
        assert_eq!(parse(uri, &env_of(env)), Ok(want), "{uri:?} with {env:?}");
    }
}

#[test]
fn rejects_what_it_cannot_serve() {
    let env = env_of(&[]);
    let unsupported = |uri: &str| UriError::Unsupported(uri.into());
    let cases: Vec<(&str, UriError)> = vec![
        ("ssh://host", unsupported("ssh://host")),
        (
            "https://cache.example",
            unsupported("https://cache.example"),
        ),
        ("file:///tmp/cache", unsupported("file:///tmp/cache")),
        ("relative/store", unsupported("relative/store")),
        ("Local", unsupported("Local")),
        (
            "unix://rel.sock",
            UriError::NotAbsolute {
                uri: "unix://rel.sock".into(),
                what: "the socket",
                value: "rel.sock".into(),
            },
        ),
        (
            "local?root=rel",
            UriError::NotAbsolute {
                uri: "local?root=rel".into(),
                what: "the root",
                value: "rel".into(),
            },
        ),
        (
            "local?bogus=1",
            UriError::Parameter {
                uri: "local?bogus=1".into(),
                name: "bogus".into(),
                allowed: "'root', 'state', 'store' and 'real'",
            },
        ),
        (
            "daemon?root=/x",
            UriError::Parameter {
                uri: "daemon?root=/x".into(),
                name: "root".into(),
                allowed: "only 'store'",
            },
        ),
        (
            "/tmp/ch?root=/other",
            UriError::Parameter {
                uri: "/tmp/ch?root=/other".into(),
                name: "root".into(),
                allowed: "'state', 'store' and 'real'",
            },
        ),
        (
            "local?root=/a&root=/b",
            UriError::Repeated {
                uri: "local?root=/a&root=/b".into(),
                name: "root".into(),
            },
        ),
        (
            "local?root=/a%2",
            UriError::Encoding("local?root=/a%2".into()),
        ),
        (
            "local?root=/a%zz",
            UriError::Encoding("local?root=/a%zz".into()),
        ),
        (
            "local?store=relative",
            UriError::StoreDir(StorePathError::BadStoreDir("relative".into())),
        ),
    ];
    for (uri, want) in cases {
        assert_eq!(parse(uri, &env), Err(want), "{uri:?}");
    }
    let msg = parse("ssh://host", &env).unwrap_err().to_string();
    assert!(
        msg.contains("'ssh://host'") && msg.contains("'auto'"),
        "{msg}"
    );
}

#[test]
fn log_dirs_as_nix_has_them() {
    let none = env_of(&[]);
    let custom = env_of(&[("NIX_LOG_DIR", "/var/log/n"), ("NIX_STATE_DIR", "/var/st")]);
    // (uri, with NIX_LOG_DIR set, expected)
    let table = [
        ("auto", false, "/nix/var/log/nix"),
        ("daemon", false, "/nix/var/log/nix"),
        ("daemon", true, "/var/log/n"),
        ("local", true, "/var/log/n"),
        ("local?root=/tmp/ch/", true, "/tmp/ch/nix/var/log/nix"),
        ("/tmp/ch", false, "/tmp/ch/nix/var/log/nix"),
        ("unix:///tmp/s.sock", true, "/var/log/n"),
    ];
    for (uri, set, want) in table {
        let env: &dyn Fn(&str) -> Option<String> = if set { &custom } else { &none };
        assert_eq!(log_dir(uri, env), PathBuf::from(want), "{uri}");
    }
}
