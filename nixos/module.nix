# nix-serve-sd for NixOS: extends the `services.nix-serve` module that nixpkgs
# ships (nixos/modules/services/networking/nix-serve.nix); it declares none of
# that module's options again. Import it next to it:
#
#   imports = [ nix-serve-sd.nixosModules.default ];   # or ./nixos/module.nix
#   services.nix-serve.enable = true;
#
# Importing it makes nix-serve-sd the default `package`. With that package:
#   - the server is started by a socket (`nix-serve.socket`, wanted by
#     sockets.target) and exits when idle; the service is no longer wanted by
#     multi-user.target;
#   - `bindAddress` "0.0.0.0" (upstream's default) means every IPv4 *and* IPv6
#     address;
#   - the service is Type=notify and sandboxed like systemd/nix-serve.service;
#   - it reads the store's database directly when it can (`store = "auto"`,
#     where upstream forces the daemon), and says which in `systemctl status`;
#   - `listen` adds Unix socket paths and more addresses, `signKeyPaths` more
#     keys (as credentials), `store` another store, `htpasswdFile` HTTP Basic
#     authentication (the file as a credential), `upstreams` pull-through
#     from other caches (the service then has a network of its own).
# With any other package (nix-serve, nix-serve-ng) nothing here applies and the
# upstream module behaves exactly as before.
#
# Where upstream defines a value we must change (its `script`, Restart=always,
# wantedBy multi-user.target) we override it at priority 90: that beats
# upstream's plain definitions (100) and still loses to a user's mkForce (50).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    all
    any
    concatStringsSep
    hasInfix
    hasPrefix
    imap0
    literalExpression
    mkDefault
    mkIf
    mkMerge
    mkOption
    mkOverride
    optional
    optionals
    types
    ;

  cfg = config.services.nix-serve;

  # Beats upstream's plain definitions, loses to the user's mkForce.
  mkOverUpstream = mkOverride 90;

  # The servers that understand systemd's sockets, READY=1 and the flags below.
  isSd = lib.getName cfg.package == "nix-serve-sd";

  # Upstream's default "0.0.0.0" meant "every address" when IPv6 was an
  # afterthought; to a socket unit a bare port means every IPv4 and IPv6
  # address (with BindIPv6Only=both), which is what such a configuration wants.
  wildcards = [
    "0.0.0.0"
    "::"
    "[::]"
    ""
  ];
  isWildcard = builtins.elem cfg.bindAddress wildcards;
  # An IPv6 literal needs brackets before ":port"; accept it with or without.
  isBareV6 = hasInfix ":" cfg.bindAddress && !(lib.hasPrefix "[" cfg.bindAddress);
  hostPort =
    if isBareV6 then
      "[${cfg.bindAddress}]:${toString cfg.port}"
    else
      "${cfg.bindAddress}:${toString cfg.port}";
  # The default of `listen`: bindAddress and port as a ListenStream= value.
  defaultListen = if isWildcard then toString cfg.port else hostPort;

  isPath = hasPrefix "/";
  isPort = s: builtins.match "[0-9]+" s != null;
  # systemd parses ListenStream= itself and resolves no host names: a port,
  # an absolute path, or an IP literal with a port.
  isSocketAddress =
    s:
    isPort s
    || isPath s
    || builtins.match "[0-9.]+:[0-9]+|\\[[0-9a-fA-F.:]*]:[0-9]+" s != null;
  # Bound by the server itself: ":PORT" is every IPv4 and IPv6 address.
  listenFlag = s: if isPort s then ":${s}" else s;

  # Each signing key becomes a credential: systemd reads the file as root
  # and hands the service a private copy under %d.
  keyCredentials = imap0 (i: path: {
    id = "nix-serve-sign-key-${toString i}";
    inherit path;
  }) cfg.signKeyPaths;

  # The htpasswd file, like the keys: read by systemd as root, a private
  # copy under %d for the service.
  htpasswdCredential = "nix-serve-htpasswd";
  hasHtpasswd = cfg.htpasswdFile != null;

  # Pull-through: the server opens connections of its own to the upstreams.
  hasUpstreams = cfg.upstreams != [ ];

  # extraParams went through a shell in upstream's `script`, where "%" is an
  # ordinary character; in ExecStart= systemd would read it as a specifier.
  extraParams = lib.replaceStrings [ "%" ] [ "%%" ] cfg.extraParams;

  # allowedIPs: the kernel (cgroup BPF) drops everyone else's packets on
  # the listening socket and every connection accepted from it.
  ipFilter = {
    IPAddressAllow = cfg.allowedIPs;
    IPAddressDeny = "any";
  };

  execStart = concatStringsSep " " (
    [ "${cfg.package}/bin/nix-serve" ]
    ++ (
      if cfg.socketActivation then
        [ "--idle-timeout ${toString cfg.idleTimeout}s" ]
      else
        map (s: "--listen ${listenFlag s}") cfg.listen
    )
    # The counts survive the idle exit in StateDirectory= (README "Operating it").
    ++ [ "--metrics-file /var/lib/nix-serve/metrics.prom" ]
    ++ optional (cfg.priority != null) "--priority ${toString cfg.priority}"
    ++ optional (cfg.compression != "none") "--compression ${cfg.compression}"
    ++ map (r: "--serve-closure-of ${r}") cfg.serveClosureOf
    ++ map (k: "--sign-key-file %d/${k.id}") keyCredentials
    ++ optional hasHtpasswd "--htpasswd %d/${htpasswdCredential}"
    ++ map (u: "--upstream ${u}") cfg.upstreams
    # Last, so that the flags a user already has keep their place and meaning.
    ++ optional (extraParams != "") extraParams
  );
in
{
  options.services.nix-serve = {
    socketActivation = mkOption {
      type = types.bool;
      default = isSd;
      defaultText = literalExpression ''lib.getName config.services.nix-serve.package == "nix-serve-sd"'';
      description = ''
        Start the server on the first connection to `nix-serve.socket` and let
        it exit after {option}`services.nix-serve.idleTimeout`. The socket,
        not the service, is then wanted at boot. The service has no network
        of its own: systemd hands it the listening socket. Needs a server that
        accepts systemd's sockets (nix-serve-sd).
      '';
    };

    idleTimeout = mkOption {
      type = types.ints.unsigned;
      default = 60;
      description = ''
        Seconds without any open connection after which the socket-activated
        server exits (status 0); the next client starts it again and waits
        only for its start-up. 0 keeps it running once started. Used only with
        {option}`services.nix-serve.socketActivation`.
      '';
    };

    listen = mkOption {
      type = types.nonEmptyListOf types.str;
      default = [ defaultListen ];
      defaultText = literalExpression ''
        [ "''${toString config.services.nix-serve.port}" ]  # bindAddress "0.0.0.0": every IPv4 and IPv6 address
        # otherwise [ "<bindAddress>:<port>" ]'';
      example = [
        "[::1]:5000"
        "/run/nix-serve/http.sock"
      ];
      description = ''
        Where the server listens: a port (every IPv4 and IPv6 address), an
        IP address with a port (`192.0.2.1:5000`, `[2001:db8::1]:5000`), or
        the absolute path of a Unix socket (for a proxy on the same
        machine). With {option}`services.nix-serve.socketActivation` these
        are the socket unit's `ListenStream=` lines, so host names are not
        accepted. The default is {option}`services.nix-serve.bindAddress`
        and {option}`services.nix-serve.port`.
      '';
    };

    signKeyPaths = mkOption {
      type = types.listOf types.path;
      default = [ ];
      example = [ "/var/lib/secrets/nix-serve-2.key" ];
      description = ''
        Nix secret key files to sign narinfo with, in addition to
        {option}`services.nix-serve.secretKeyFile`: every narinfo carries one
        signature per key (for rotating keys). Each is handed to the service as
        a credential (`LoadCredential=`), so the files can stay readable by
        root only.
      '';
    };

    store = mkOption {
      type = types.str;
      default = "auto";
      example = "daemon";
      description = ''
        The store to serve (the server's `--store`). `auto` reads the store's
        database directly when the service's user can, which is faster (on
        an idle machine it first opens a connection to the nix-daemon, whose
        worker holds the database open for the server's life), and asks the
        nix-daemon otherwise; the start-up log line and `systemctl status`
        (`STATUS=`) say which.
        `daemon` always asks the nix-daemon (upstream's `NIX_REMOTE=daemon`);
        `local` only reads the database; `unix:///path/to/socket` names
        another daemon socket.
      '';
    };

    serveClosureOf = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "/run/current-system"
        "/nix/var/nix/profiles/per-user/alice/profile"
      ];
      description = ''
        Serve only the store paths in the closure of these roots: store
        paths, or symlinks that lead to one (`/run/current-system`, a
        profile, a GC root). Every other path is answered exactly as an
        absent one. A root is followed again when it changes, so a
        `nixos-rebuild switch` needs no restart. Empty: the whole store.
        The roots must be readable by the service (it has `ProtectHome=`).
      '';
    };

    allowedIPs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "192.0.2.0/24"
        "2001:db8::/32"
        "localhost"
      ];
      description = ''
        Addresses and prefixes allowed to connect; everyone else is refused
        by the kernel before the server sees the connection, or is even
        started for it (`IPAddressAllow=` with `IPAddressDeny=any` on
        `nix-serve.socket`, or on the service when it binds its own
        sockets; systemd.resource-control(5): also `localhost`,
        `link-local`, `multicast`). Empty: everyone.
      '';
    };

    htpasswdFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/secrets/nix-serve.htpasswd";
      description = ''
        Ask clients for HTTP Basic credentials, checked against this file of
        bcrypt entries (`htpasswd -B -c FILE USER`; nginx's
        `auth_basic_user_file` reads the same file). It is handed to the
        service as a credential (`LoadCredential=`), so it can stay readable
        by root only; give it as a string, since a Nix path would be copied
        into the world-readable store. Read once at start-up: an entry of
        another kind stops the start. `/nix-cache-info` stays public. With
        {option}`services.nix-serve.serveClosureOf`, clients without
        credentials get that closure and users the whole store. Nix clients
        send credentials from a `netrc-file` (nix.conf). Basic credentials
        are clear text on the wire: put a TLS proxy in front unless the
        network is trusted (see the README).
      '';
    };

    upstreams = mkOption {
      type = types.listOf (types.strMatching "https?://[^ %]+");
      default = [ ];
      example = [ "https://cache.nixos.org" ];
      description = ''
        Binary caches to fetch the paths this store lacks from, tried in
        order: a client asking for such a path gets it from here (the
        upstream's narinfo and signatures, the NAR as it arrives), and the
        path is added to this machine's store through the nix-daemon, once,
        so the next client gets it from the store. The daemon adds only
        paths signed by a key in its own `nix.settings.trusted-public-keys`
        (cache.nixos.org's is there by default); other paths are served but
        not added. Downloads are kept in the service's private `/var/tmp`
        while they run. With upstreams the service needs a network of its
        own (no `PrivateNetwork=`, IPv4 and IPv6 sockets allowed), since it
        connects to them. See the README, "Serve my store and
        cache.nixos.org to my LAN".
      '';
    };

    priority = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      example = 40;
      description = ''
        The `Priority` this cache announces in `/nix-cache-info` (clients try
        caches with lower numbers first). `null` keeps the server's default,
        30, as nix-serve announces.
      '';
    };

    compression = mkOption {
      type = types.strMatching "none|zstd(:([1-9]|1[0-9]))?";
      default = "none";
      example = "zstd";
      description = ''
        How NARs are served: `none` (nix-serve's bytes), or `zstd` /
        `zstd:LEVEL` (1 to 19; `zstd` is level 1), compressed while they
        stream. Narinfos then point to `nar/….nar.zst`; the uncompressed
        URLs keep working.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      # Importing this module is asking for nix-serve-sd. The overlay's
      # package wins when present, so overrides of it apply here too.
      services.nix-serve.package = mkDefault (
        pkgs.nix-serve-sd or (pkgs.callPackage ./package.nix { })
      );

      assertions = [
        {
          assertion = cfg.socketActivation -> isSd;
          message =
            "services.nix-serve.socketActivation needs a server that accepts systemd's sockets; "
            + "${lib.getName cfg.package} does not. Use nix-serve-sd or set socketActivation = false.";
        }
        {
          # Any other server would ignore it and serve everyone.
          assertion = hasHtpasswd -> isSd;
          message =
            "services.nix-serve.htpasswdFile needs nix-serve-sd; "
            + "${lib.getName cfg.package} would serve the store without asking for credentials.";
        }
        {
          # Any other server would ignore the flag and fail to start.
          assertion = hasUpstreams -> isSd;
          message =
            "services.nix-serve.upstreams needs nix-serve-sd; "
            + "${lib.getName cfg.package} does not fetch from other caches.";
        }
        {
          # A service's IP access list covers the connections it makes too.
          assertion = hasUpstreams && cfg.allowedIPs != [ ] -> cfg.socketActivation;
          message =
            "services.nix-serve.allowedIPs without socketActivation filters the service's own "
            + "connections too, so the upstreams could not be reached; use socketActivation "
            + "(the socket unit then filters the clients).";
        }
        {
          assertion = cfg.socketActivation -> all isSocketAddress cfg.listen;
          message =
            "services.nix-serve.listen = [ ${concatStringsSep " " (map (s: "\"${s}\"") cfg.listen)} ]: "
            + "each must be a port, an IP address with a port, or a Unix socket path; "
            + "a socket unit (socketActivation) resolves no host names (is bindAddress "
            + "\"${cfg.bindAddress}\" an IP address?).";
        }
      ];
    }

    # nix-serve-sd, socket-activated or not.
    (mkIf isSd {
      systemd.services.nix-serve = {
        # Upstream starts the server from a shell script; ours needs no shell
        # (the key path comes from the environment below) and execs directly,
        # so the main PID is the server and its READY=1 is accepted.
        script = mkOverUpstream "";
        # Upstream's LoadCredential= (id NIX_SECRET_KEY_FILE) stays as it is;
        # only the variable the server reads is set without a shell.
        environment.NIX_SECRET_KEY_FILE = mkIf (
          cfg.secretKeyFile != null
        ) "%d/NIX_SECRET_KEY_FILE";
        # Upstream's NIX_REMOTE=daemon would always take the slower daemon
        # path; the server reads NIX_REMOTE as its default --store.
        environment.NIX_REMOTE = mkOverUpstream cfg.store;
        wants = [ "nix-daemon.socket" ];
        after = [ "nix-daemon.socket" ];

        # As systemd/nix-serve.service: a start that fails for good is not
        # restarted, and 10 starts in 30 s fail the socket too, so clients
        # are refused instead of waiting (README, exit statuses).
        unitConfig = {
          StartLimitIntervalSec = "30s";
          StartLimitBurst = 10;
        };

        serviceConfig = {
          ExecStart = execStart;
          Type = "notify";
          WatchdogSec = "30s";
          TimeoutStopSec = "30s";
          # As systemd/nix-serve.service: bounds that hold whatever clients
          # do (README "Limits").
          LimitNOFILE = "8192";
          MemoryMax = "512M";
          RestartSec = mkOverUpstream "1s";
          RestartPreventExitStatus = "2 78 203 216 243";
          # Upstream's credential for secretKeyFile, one per signKeyPaths,
          # and the htpasswd file.
          LoadCredential = mkIf (keyCredentials != [ ] || hasHtpasswd) (
            mkOverUpstream (
              optional (cfg.secretKeyFile != null) "NIX_SECRET_KEY_FILE:${cfg.secretKeyFile}"
              ++ map (k: "${k.id}:${k.path}") keyCredentials
              ++ optional hasHtpasswd "${htpasswdCredential}:${cfg.htpasswdFile}"
            )
          );

          # The same sandbox as systemd/nix-serve.service; the reasons are
          # written there. NixOS's daemon socket is world-connectable, so no
          # SupplementaryGroups= is needed here.
          NoNewPrivileges = true;
          RestrictSUIDSGID = true;
          RemoveIPC = true;
          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          DevicePolicy = "closed";
          PrivateMounts = true;
          PrivateIPC = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          UMask = "0077";
          KeyringMode = "private";
          StateDirectory = "nix-serve";
          RestrictNamespaces = true;
          RestrictRealtime = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [
            "@system-service"
            "~@privileged @resources"
          ];
          SystemCallErrorNumber = "EPERM";
          # Without socket activation the server binds its own sockets and
          # needs IP; with it, none (below).
          # Without socket activation the server's own sockets are filtered
          # (with it, the socket unit's; the service's PrivateNetwork= and
          # IPAddressDeny= below keep it off the network anyway).
          IPAddressAllow = mkIf (!cfg.socketActivation && cfg.allowedIPs != [ ]) cfg.allowedIPs;
          IPAddressDeny = mkIf (!cfg.socketActivation && cfg.allowedIPs != [ ]) "any";
          RestrictAddressFamilies = [
            "AF_UNIX"
          ]
          ++ optionals (!cfg.socketActivation || hasUpstreams) [
            "AF_INET"
            "AF_INET6"
          ];
        };
      };
    })

    (mkIf cfg.socketActivation {
      systemd.sockets.nix-serve = {
        description = "nix-serve binary cache server (socket)";
        wantedBy = [ "sockets.target" ];
        listenStreams = cfg.listen;
        socketConfig = {
          Accept = false;
          NoDelay = true;
        }
        // lib.optionalAttrs (any isPort cfg.listen) { BindIPv6Only = "both"; }
        // lib.optionalAttrs (cfg.allowedIPs != [ ]) ipFilter;
      };

      systemd.services.nix-serve = {
        # The socket is wanted at boot; the service only when a client comes.
        wantedBy = mkOverUpstream [ ];
        # Started without its socket it would listen in its empty network
        # namespace and serve nobody.
        requires = [ "nix-serve.socket" ];
        after = [ "nix-serve.socket" ];
        serviceConfig = {
          # The idle exit is status 0 and must not bring the process back:
          # the socket does that when the next client arrives.
          Restart = mkOverUpstream "on-failure";
          # The listening socket is handed in; the sockets the server opens
          # are AF_UNIX only (daemon, journal, sd_notify), unless it fetches
          # from upstreams. A service's IP access list does not reach
          # sockets passed in by activation (systemd.resource-control(5)).
          PrivateNetwork = !hasUpstreams;
          IPAddressDeny = mkIf (!hasUpstreams) "any";
        };
      };
    })
  ]);
}
