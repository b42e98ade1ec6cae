# Just enough of NixOS's option declarations for the upstream nix-serve module
# and ours to evaluate with nixpkgs' lib alone (no nixpkgs, no network): the
# `systemd`, `networking`, `nix`, `users` and `assertions` options they touch,
# with NixOS's merge rules where the test depends on them.
{ lib, ... }:

let
  inherit (lib) mkOption types;

  # A unit-file value as NixOS merges it: lists from several definitions are
  # concatenated, anything else must agree (two different Restart= values are
  # an error, so an override that is missing shows up as a failed evaluation).
  unitOption = lib.mkOptionType {
    name = "systemd option (test stub)";
    check = v: builtins.isBool v || builtins.isInt v || builtins.isString v || builtins.isList v;
    merge =
      loc: defs:
      if lib.any (d: builtins.isList d.value) defs then
        lib.concatMap (d: lib.toList d.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  units = types.listOf types.str;
  unitCommon = {
    description = mkOption {
      type = types.str;
      default = "";
    };
    wantedBy = mkOption {
      type = units;
      default = [ ];
    };
    requiredBy = mkOption {
      type = units;
      default = [ ];
    };
    wants = mkOption {
      type = units;
      default = [ ];
    };
    requires = mkOption {
      type = units;
      default = [ ];
    };
    after = mkOption {
      type = units;
      default = [ ];
    };
    before = mkOption {
      type = units;
      default = [ ];
    };
    unitConfig = mkOption {
      type = types.attrsOf unitOption;
      default = { };
    };
  };

  service = types.submodule {
    options = unitCommon // {
      environment = mkOption {
        type = types.attrsOf (types.nullOr types.str);
        default = { };
      };
      path = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };

  socket = types.submodule {
    options = unitCommon // {
      listenStreams = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      listenDatagrams = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      socketConfig = mkOption {
        type = types.attrsOf unitOption;
        default = { };
      };
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    systemd.services = mkOption {
      type = types.attrsOf service;
      default = { };
    };
    systemd.sockets = mkOption {
      type = types.attrsOf socket;
      default = { };
    };

    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };

    nix.package = mkOption {
      type = types.attrs;
      # What the upstream module reads: `.version` and `.out`.
      default = rec {
        version = "2.8.0";
        outPath = "/nix/store/00000000000000000000000000000000-nix-2.8.0";
        out = outPath;
      };
    };
    nix.settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };

    users.users = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
  };
}
