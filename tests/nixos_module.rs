//! The NixOS module, the package expression and the flake, evaluated for real
//! by Nix with nixpkgs' `lib`: `lib.evalModules` over nixpkgs' own
//! `services.nix-serve` module, ours and option stubs (tests/nixos/), then the
//! generated socket and service are checked here from
//! `nix-instantiate --eval --strict --json`.
//!
//! Inputs, first found wins:
//! - nixpkgs' lib: `$NIX_SERVE_SD_NIXPKGS_LIB`, `<repo>/../shared/nixpkgs-lib`,
//!   `<nixpkgs/lib>` on `NIX_PATH`;
//! - the upstream module: `$NIX_SERVE_SD_NIXOS_UPSTREAM`,
//!   `<repo>/../shared/nixos-upstream/nix-serve.nix`,
//!   `<nixpkgs/nixos/modules/services/networking/nix-serve.nix>`.
//!
//! Without them the tests fail, unless `NIX_SERVE_SD_ALLOW_SKIP=1` says that
//! skipping is intended; they then print SKIPPED and why.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[path = "support/markdown.rs"]
mod markdown;
#[path = "nixos/support.rs"]
mod support;

use support::{inputs, json, nix_instantiate, repo, Inputs};

/// The store path eval.nix gives its stand-in nix-serve-sd package.
const FAKE_SD: &str = "/nix/store/00000000000000000000000000000000-nix-serve-sd-0.1.0";
const FAKE_UPSTREAM: &str = "/nix/store/00000000000000000000000000000000-nix-serve-0.2";

/// Evaluates the modules with `user_config` (a Nix module expression).
fn eval_module(inputs: &Inputs, user_config: &str) -> Value {
    let out = nix_instantiate(&[
        "--eval",
        "--strict",
        "--json",
        "tests/nixos/eval.nix",
        "--argstr",
        "lib",
        inputs.lib.to_str().expect("utf-8 path"),
        "--argstr",
        "upstream",
        inputs.upstream.to_str().expect("utf-8 path"),
        "--arg",
        "userConfig",
        user_config,
    ])
    .unwrap_or_else(|e| panic!("evaluating the module with {user_config} failed:\n{e}"));
    json(&out)
}

fn service_config<'a>(eval: &'a Value, key: &str) -> &'a Value {
    &eval["service"]["serviceConfig"][key]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect()
}

fn assert_no_failed_assertions(eval: &Value) {
    assert_eq!(eval["failedAssertions"], Value::Array(vec![]), "{eval:#}");
}

/// What a socket-activated nix-serve-sd service has in every configuration.
fn assert_socket_activated(eval: &Value) {
    assert_eq!(eval["socketActivation"], true);
    assert_eq!(strings(&eval["socket"]["wantedBy"]), ["sockets.target"]);
    assert_eq!(eval["socket"]["socketConfig"]["Accept"], false);
    let service = &eval["service"];
    assert!(strings(&service["wantedBy"]).is_empty(), "{service:#}");
    assert!(strings(&service["requires"]).contains(&"nix-serve.socket"));
    assert!(strings(&service["after"]).contains(&"nix-serve.socket"));
    assert_eq!(
        service["script"], "",
        "upstream's shell script must be gone"
    );
    assert_eq!(service_config(eval, "Type"), "notify");
    assert_eq!(service_config(eval, "Restart"), "on-failure");
    assert_eq!(service_config(eval, "PrivateNetwork"), true);
    assert_eq!(
        strings(service_config(eval, "RestrictAddressFamilies")),
        ["AF_UNIX"]
    );
    assert_eq!(service_config(eval, "DynamicUser"), true);
}

fn show(eval: &Value) {
    let line = format!(
        "ListenStream={:?} ExecStart={}",
        strings(&eval["socket"]["listenStreams"]),
        service_config(eval, "ExecStart")
    );
    println!("{line}");
    eprintln!("{line}");
}

/// Where the module keeps the metrics: its StateDirectory= (README
/// "Operating it").
const METRICS: &str = "--metrics-file /var/lib/nix-serve/metrics.prom";

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn default_configuration_listens_on_ipv4_and_ipv6_through_a_socket() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(&inputs, "{ services.nix-serve.enable = true; }");
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_socket_activated(&eval);
    assert_eq!(strings(&eval["socket"]["listenStreams"]), ["5000"]);
    assert_eq!(eval["socket"]["socketConfig"]["BindIPv6Only"], "both");
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!("{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS}").as_str()
    );
    // No key configured: no credential and no variable pointing at one.
    assert_eq!(service_config(&eval, "LoadCredential"), "");
    assert_eq!(
        eval["service"]["environment"].get("NIX_SECRET_KEY_FILE"),
        None
    );
    assert!(strings(&eval["firewall"]).is_empty());
    assert_eq!(service_config(&eval, "StateDirectory"), "nix-serve");
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn key_port_bind_address_and_extra_params_are_honoured() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = {
              enable = true;
              secretKeyFile = "/etc/nix/cache.key";
              port = 8080;
              bindAddress = "192.0.2.7";
              extraParams = "--workers 4 --priority 40";
              openFirewall = true;
            }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_socket_activated(&eval);
    assert_eq!(
        strings(&eval["socket"]["listenStreams"]),
        ["192.0.2.7:8080"]
    );
    assert_eq!(eval["socket"]["socketConfig"].get("BindIPv6Only"), None);
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!("{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS} --workers 4 --priority 40")
            .as_str()
    );
    // Upstream's credential, read through the variable nix-serve reads.
    assert_eq!(
        service_config(&eval, "LoadCredential"),
        "NIX_SECRET_KEY_FILE:/etc/nix/cache.key"
    );
    assert_eq!(
        eval["service"]["environment"]["NIX_SECRET_KEY_FILE"],
        "%d/NIX_SECRET_KEY_FILE"
    );
    assert_eq!(eval["firewall"], serde_json::json!([8080]));
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn ipv6_bind_address_priority_and_idle_timeout() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = { enable = true; bindAddress = "::1"; priority = 50; idleTimeout = 0; }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_socket_activated(&eval);
    assert_eq!(strings(&eval["socket"]["listenStreams"]), ["[::1]:5000"]);
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!("{FAKE_SD}/bin/nix-serve --idle-timeout 0s {METRICS} --priority 50").as_str()
    );
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn without_socket_activation_the_server_binds_every_address_itself() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = { enable = true; socketActivation = false; extraParams = "--access-log /var/log/%h"; }; }"#,
    );
    assert_no_failed_assertions(&eval);
    assert_eq!(eval["socket"], Value::Null);
    assert_eq!(strings(&eval["service"]["wantedBy"]), ["multi-user.target"]);
    assert_eq!(service_config(&eval, "Type"), "notify");
    assert_eq!(*service_config(&eval, "PrivateNetwork"), Value::Null);
    assert_eq!(
        service_config(&eval, "Restart"),
        "always",
        "upstream's value stays"
    );
    assert_eq!(
        strings(service_config(&eval, "RestrictAddressFamilies")),
        ["AF_UNIX", "AF_INET", "AF_INET6"]
    );
    // ":PORT" is every IPv4 and IPv6 address; "%" stays literal as in a shell.
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!("{FAKE_SD}/bin/nix-serve --listen :5000 {METRICS} --access-log /var/log/%%h")
            .as_str()
    );
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn another_package_keeps_the_upstream_service_unchanged() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        "{ pkgs, ... }: { services.nix-serve = { enable = true; package = pkgs.nix-serve; }; }",
    );
    assert_no_failed_assertions(&eval);
    assert_eq!(eval["socketActivation"], false);
    assert_eq!(eval["socket"], Value::Null);
    assert_eq!(strings(&eval["service"]["wantedBy"]), ["multi-user.target"]);
    assert_eq!(*service_config(&eval, "ExecStart"), Value::Null);
    assert_eq!(*service_config(&eval, "Type"), Value::Null);
    assert_eq!(service_config(&eval, "Restart"), "always");
    let script = eval["service"]["script"].as_str().expect("script");
    assert!(
        script.contains(&format!(
            "exec {FAKE_UPSTREAM}/bin/nix-serve --listen 0.0.0.0:5000"
        )),
        "{script}"
    );
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn socket_activation_is_refused_for_a_server_without_it() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        "{ pkgs, ... }: { services.nix-serve = { enable = true; package = pkgs.nix-serve; socketActivation = true; }; }",
    );
    let failed = strings(&eval["failedAssertions"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("socketActivation"), "{}", failed[0]);
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn a_host_name_cannot_be_a_socket_address() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = { enable = true; bindAddress = "cache.example.org"; }; }"#,
    );
    let failed = strings(&eval["failedAssertions"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("cache.example.org"), "{}", failed[0]);
}

/// Upstream sets NIX_REMOTE=daemon, which would always take the slower
/// daemon path; the module's `store` (default auto) replaces it, and the
/// failure policy is the shipped unit's.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn store_defaults_to_auto_and_failures_are_not_retried_for_ever() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(&inputs, "{ services.nix-serve.enable = true; }");
    assert_no_failed_assertions(&eval);
    assert_eq!(eval["service"]["environment"]["NIX_REMOTE"], "auto");
    assert_eq!(service_config(&eval, "RestartSec"), "1s");
    assert_eq!(
        service_config(&eval, "RestartPreventExitStatus"),
        "2 78 203 216 243"
    );
    assert_eq!(eval["service"]["unitConfig"]["StartLimitBurst"], 10);
    assert_eq!(
        eval["service"]["unitConfig"]["StartLimitIntervalSec"],
        "30s"
    );

    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = { enable = true; store = "daemon"; }; }"#,
    );
    assert_eq!(eval["service"]["environment"]["NIX_REMOTE"], "daemon");
}

/// Every key of `signKeyPaths` is a credential of its own and a
/// `--sign-key-file` under %d; upstream's `secretKeyFile` stays one of them.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn sign_key_paths_are_credentials() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = {
              enable = true;
              secretKeyFile = "/etc/nix/cache.key";
              signKeyPaths = [ "/run/keys/a.key" "/run/keys/b.key" ];
            }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_eq!(
        strings(service_config(&eval, "LoadCredential")),
        [
            "NIX_SECRET_KEY_FILE:/etc/nix/cache.key",
            "nix-serve-sign-key-0:/run/keys/a.key",
            "nix-serve-sign-key-1:/run/keys/b.key"
        ]
    );
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!(
            "{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS} \
             --sign-key-file %d/nix-serve-sign-key-0 --sign-key-file %d/nix-serve-sign-key-1"
        )
        .as_str()
    );
    assert_eq!(
        eval["service"]["environment"]["NIX_SECRET_KEY_FILE"],
        "%d/NIX_SECRET_KEY_FILE"
    );
}

/// `htpasswdFile` (issue 23) is a credential of its own, read by the
/// server under %d, next to upstream's key and `signKeyPaths`; with
/// `serveClosureOf` both flags are there. Another server would ignore the
/// file and serve everyone: the module refuses that.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn htpasswd_file_is_a_credential() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = {
              enable = true;
              htpasswdFile = "/var/lib/secrets/nix-serve.htpasswd";
            }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_socket_activated(&eval);
    assert_eq!(
        strings(service_config(&eval, "LoadCredential")),
        ["nix-serve-htpasswd:/var/lib/secrets/nix-serve.htpasswd"]
    );
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!(
            "{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS} --htpasswd %d/nix-serve-htpasswd"
        )
        .as_str()
    );

    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = {
              enable = true;
              secretKeyFile = "/etc/nix/cache.key";
              signKeyPaths = [ "/run/keys/a.key" ];
              serveClosureOf = [ "/run/current-system" ];
              htpasswdFile = "/run/keys/htpasswd";
            }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_eq!(
        strings(service_config(&eval, "LoadCredential")),
        [
            "NIX_SECRET_KEY_FILE:/etc/nix/cache.key",
            "nix-serve-sign-key-0:/run/keys/a.key",
            "nix-serve-htpasswd:/run/keys/htpasswd"
        ]
    );
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!(
            "{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS} \
             --serve-closure-of /run/current-system --sign-key-file %d/nix-serve-sign-key-0 \
             --htpasswd %d/nix-serve-htpasswd"
        )
        .as_str()
    );

    let eval = eval_module(
        &inputs,
        r#"{ pkgs, ... }: { services.nix-serve = {
              enable = true;
              package = pkgs.nix-serve;
              socketActivation = false;
              htpasswdFile = "/run/keys/htpasswd";
            }; }"#,
    );
    let failed = strings(&eval["failedAssertions"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("htpasswdFile"), "{}", failed[0]);
}

/// `serveClosureOf` becomes one `--serve-closure-of` a root; `allowedIPs`
/// the socket's IP filter (issue 12 parts 2 and 3), or the service's when
/// it binds its own sockets. Neither by default.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn serve_closure_of_and_allowed_ips() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = {
              enable = true;
              serveClosureOf = [ "/run/current-system" "/nix/var/nix/gcroots/cache" ];
              allowedIPs = [ "192.0.2.0/24" "2001:db8::/32" ];
            }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_socket_activated(&eval);
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!(
            "{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS} \
             --serve-closure-of /run/current-system --serve-closure-of /nix/var/nix/gcroots/cache"
        )
        .as_str()
    );
    let socket = &eval["socket"]["socketConfig"];
    assert_eq!(
        strings(&socket["IPAddressAllow"]),
        ["192.0.2.0/24", "2001:db8::/32"]
    );
    assert_eq!(socket["IPAddressDeny"], "any");
    // The service keeps its own deny-all: it has no network but the socket.
    assert_eq!(service_config(&eval, "IPAddressDeny"), "any");
    assert_eq!(*service_config(&eval, "IPAddressAllow"), Value::Null);

    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = { enable = true; socketActivation = false; allowedIPs = [ "localhost" ]; }; }"#,
    );
    assert_no_failed_assertions(&eval);
    assert_eq!(
        strings(service_config(&eval, "IPAddressAllow")),
        ["localhost"]
    );
    assert_eq!(service_config(&eval, "IPAddressDeny"), "any");

    let eval = eval_module(&inputs, "{ services.nix-serve.enable = true; }");
    assert_eq!(eval["socket"]["socketConfig"].get("IPAddressAllow"), None);
    assert_eq!(eval["socket"]["socketConfig"].get("IPAddressDeny"), None);
}

/// `listen` takes Unix socket paths next to addresses: the socket's
/// ListenStream= lines, or the server's own --listen flags.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn listen_takes_unix_socket_paths_and_addresses() {
    let Some(inputs) = inputs() else { return };
    let listen = r#"[ "/run/nix-serve/http.sock" "[::1]:5000" "8080" ]"#;
    let eval = eval_module(
        &inputs,
        &format!("{{ services.nix-serve = {{ enable = true; listen = {listen}; }}; }}"),
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_socket_activated(&eval);
    assert_eq!(
        strings(&eval["socket"]["listenStreams"]),
        ["/run/nix-serve/http.sock", "[::1]:5000", "8080"]
    );
    assert_eq!(eval["socket"]["socketConfig"]["BindIPv6Only"], "both");

    let eval = eval_module(
        &inputs,
        &format!(
            "{{ services.nix-serve = {{ enable = true; socketActivation = false; listen = {listen}; }}; }}"
        ),
    );
    assert_no_failed_assertions(&eval);
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!(
            "{FAKE_SD}/bin/nix-serve --listen /run/nix-serve/http.sock --listen [::1]:5000 --listen :8080 {METRICS}"
        )
        .as_str()
    );

    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = { enable = true; listen = [ "cache.example.org:80" ]; }; }"#,
    );
    let failed = strings(&eval["failedAssertions"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("cache.example.org:80"), "{}", failed[0]);
}

/// Our overrides of upstream's values sit at priority 90, so a user's
/// mkForce still wins.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn user_mk_force_beats_the_module() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ lib, ... }: {
             services.nix-serve.enable = true;
             systemd.services.nix-serve.serviceConfig.Restart = lib.mkForce "always";
             systemd.services.nix-serve.wantedBy = lib.mkForce [ "multi-user.target" ];
           }"#,
    );
    assert_eq!(service_config(&eval, "Restart"), "always");
    assert_eq!(strings(&eval["service"]["wantedBy"]), ["multi-user.target"]);
}

/// The module's sandbox is the shipped unit's: every [Service] setting of
/// systemd/nix-serve.service has the same value in the module, except those
/// that differ on purpose.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn module_sandbox_matches_the_systemd_unit() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(&inputs, "{ services.nix-serve.enable = true; }");
    // ExecStart and Environment are the module's own; nix-users exists only on
    // Debian; RestartSec is upstream's.
    let differ = [
        "ExecStart",
        "Environment",
        "SupplementaryGroups",
        "RestartSec",
    ];
    let unit = fs::read_to_string(repo().join("systemd/nix-serve.service")).expect("read unit");
    let settings = service_section(&unit);
    assert!(
        settings.len() > 30,
        "parsed only {} settings",
        settings.len()
    );
    let mut keys: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
    keys.dedup();
    for key in keys.into_iter().filter(|k| !differ.contains(k)) {
        let in_unit: Vec<&str> = settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        let in_module = unit_values(service_config(&eval, key));
        assert_eq!(in_module, in_unit, "{key}= differs between module and unit");
    }
}

/// `key=value` lines of the [Service] section, in order.
fn service_section(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').expect("key=value");
            settings.push((k.to_string(), v.to_string()));
        }
    }
    settings
}

/// A NixOS serviceConfig value as the unit-file lines it becomes.
fn unit_values(v: &Value) -> Vec<&str> {
    match v {
        Value::Bool(true) => vec!["yes"],
        Value::Bool(false) => vec!["no"],
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().flat_map(unit_values).collect(),
        other => panic!("unexpected serviceConfig value {other}"),
    }
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn package_and_flake_evaluate() {
    let Some(inputs) = inputs() else { return };
    let out = nix_instantiate(&[
        "--eval",
        "--strict",
        "--json",
        "tests/nixos/eval-package.nix",
        "--argstr",
        "lib",
        inputs.lib.to_str().expect("utf-8 path"),
    ])
    .unwrap_or_else(|e| panic!("evaluating package.nix and flake.nix failed:\n{e}"));
    let eval = json(&out);
    let package = &eval["package"];
    assert_eq!(
        package["pname"], "nix-serve-sd",
        "the module recognises the package by it"
    );
    assert_eq!(package["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(package["mainProgram"], "nix-serve");
    assert_eq!(package["description"], env!("CARGO_PKG_DESCRIPTION"));
    let lock = repo().join("Cargo.lock");
    assert_eq!(package["cargoLock"], lock.to_str().expect("utf-8 path"));
    let src = package["src"].as_str().expect("src");
    assert!(
        src.starts_with("/nix/store/") && src.ends_with("-source"),
        "{src}"
    );

    let flake = &eval["flake"];
    let package_nix = repo().join("nixos/package.nix");
    let package_nix = package_nix.to_str().expect("utf-8 path");
    assert_eq!(flake["packages"]["x86_64-linux"], package_nix);
    assert_eq!(flake["packages"]["aarch64-linux"], package_nix);
    assert_eq!(flake["overlay"], package_nix);
    let module = repo().join("nixos/module.nix");
    assert_eq!(flake["nixosModule"], module.to_str().expect("utf-8 path"));
}

/// Every .nix file in the repository, and every `nix` block in the docs.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn every_nix_expression_parses() {
    let mut files = Vec::new();
    collect_nix_files(repo(), &mut files);
    assert!(files.len() >= 6, "found only {files:?}");

    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nixos-doc-blocks");
    fs::create_dir_all(&scratch).expect("create scratch dir");
    let doc = fs::read_to_string(repo().join("docs/install.md")).expect("read docs/install.md");
    let blocks = markdown::fenced_blocks(&doc, "nix");
    assert!(
        blocks.len() >= 3,
        "docs/install.md shows {} nix blocks",
        blocks.len()
    );
    for (i, block) in blocks.iter().enumerate() {
        let file = scratch.join(format!("install-md-{i}.nix"));
        fs::write(&file, block).expect("write doc block");
        files.push(file);
    }

    for file in &files {
        let path = file.to_str().expect("utf-8 path");
        if let Err(e) = nix_instantiate(&["--parse", path]) {
            panic!("{path} does not parse:\n{e}");
        }
    }
}

fn collect_nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() && name != ".git" && name != "target" {
            collect_nix_files(&path, out);
        } else if name.ends_with(".nix") {
            out.push(path);
        }
    }
}

#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn compression_option_becomes_the_flag() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = { enable = true; compression = "zstd:3"; }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!("{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS} --compression zstd:3")
            .as_str()
    );
}

/// `upstreams` becomes one `--upstream` each, and gives the
/// socket-activated service the network it needs to reach them: no
/// `PrivateNetwork=`, no deny-all IP list, IPv4 and IPv6 sockets. Without
/// it, the service has none. With `allowedIPs`, only socket activation
/// (the socket filters clients; a service's own list would block the
/// upstreams too).
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn upstreams_become_flags_and_a_network() {
    let Some(inputs) = inputs() else { return };
    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = {
              enable = true;
              upstreams = [ "https://cache.nixos.org" "http://10.0.0.2:5000/cache" ];
              allowedIPs = [ "192.0.2.0/24" ];
            }; }"#,
    );
    show(&eval);
    assert_no_failed_assertions(&eval);
    assert_eq!(
        service_config(&eval, "ExecStart"),
        format!(
            "{FAKE_SD}/bin/nix-serve --idle-timeout 60s {METRICS} \
             --upstream https://cache.nixos.org --upstream http://10.0.0.2:5000/cache"
        )
        .as_str()
    );
    assert_eq!(service_config(&eval, "PrivateNetwork"), false);
    assert_eq!(*service_config(&eval, "IPAddressDeny"), Value::Null);
    assert_eq!(
        strings(service_config(&eval, "RestrictAddressFamilies")),
        ["AF_UNIX", "AF_INET", "AF_INET6"]
    );
    assert_eq!(
        strings(&eval["socket"]["socketConfig"]["IPAddressAllow"]),
        ["192.0.2.0/24"]
    );

    let eval = eval_module(
        &inputs,
        r#"{ services.nix-serve = {
              enable = true;
              socketActivation = false;
              upstreams = [ "https://cache.nixos.org" ];
              allowedIPs = [ "localhost" ];
            }; }"#,
    );
    let failed = strings(&eval["failedAssertions"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("allowedIPs"), "{}", failed[0]);

    let eval = eval_module(
        &inputs,
        r#"{ pkgs, ... }: { services.nix-serve = {
              enable = true; package = pkgs.nix-serve; socketActivation = false;
              upstreams = [ "https://cache.nixos.org" ];
            }; }"#,
    );
    let failed = strings(&eval["failedAssertions"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("upstreams"), "{}", failed[0]);
}

/// README's "Serve my store and cache.nixos.org to my LAN" block, as
/// written, evaluated with the module.
#[test]
#[ignore = "needs real Nix: run scripts/test"]
fn the_readme_pull_through_block_evaluates() {
    let Some(inputs) = inputs() else { return };
    let readme = fs::read_to_string(repo().join("README.md")).expect("read README.md");
    let blocks: Vec<String> = markdown::fenced_blocks(&readme, "nix")
        .into_iter()
        .filter(|b| b.contains("upstreams"))
        .collect();
    assert_eq!(
        blocks.len(),
        1,
        "README.md has one nix block with upstreams"
    );
    let eval = eval_module(&inputs, &blocks[0]);
    assert_no_failed_assertions(&eval);
    assert_eq!(eval["socketActivation"], true);
    let exec = service_config(&eval, "ExecStart").as_str().unwrap();
    assert!(
        exec.ends_with(" --upstream https://cache.nixos.org"),
        "{exec}"
    );
    assert_eq!(service_config(&eval, "PrivateNetwork"), false);
}
