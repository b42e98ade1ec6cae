# Evaluates the upstream services.nix-serve module together with ours and the
# option stubs, for one user configuration, and returns what tests/nixos_module.rs
# checks: the generated socket and service, and the failed assertions.
#
#   nix-instantiate --eval --strict --json tests/nixos/eval.nix \
#     --argstr lib /path/to/nixpkgs/lib --argstr upstream /path/to/nix-serve.nix \
#     --arg userConfig '{ services.nix-serve.enable = true; }'
{
  lib,
  upstream,
  userConfig,
}:

let
  nixpkgsLib = import lib;

  # Stand-ins for packages: what the modules read of them, nothing buildable.
  fakePackage = pname: version: {
    type = "derivation";
    inherit pname version;
    name = "${pname}-${version}";
    outPath = "/nix/store/00000000000000000000000000000000-${pname}-${version}";
    meta.mainProgram = "nix-serve";
  };
  pkgs = {
    nix-serve = fakePackage "nix-serve" "0.2";
    nix-serve-sd = fakePackage "nix-serve-sd" "0.1.0";
    bzip2.bin = fakePackage "bzip2" "1.0.8";
  };

  evaluated = nixpkgsLib.evalModules {
    modules = [
      ./stubs.nix
      upstream
      ../../nixos/module.nix
      userConfig
      { _module.args.pkgs = pkgs; }
    ];
  };
  inherit (evaluated) config;

  service = config.systemd.services.nix-serve or null;
  socket = config.systemd.sockets.nix-serve or null;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  firewall = config.networking.firewall.allowedTCPPorts;
  socketActivation = config.services.nix-serve.socketActivation;
  service =
    if service == null then
      null
    else
      {
        inherit (service)
          wantedBy
          requires
          wants
          after
          environment
          script
          unitConfig
          serviceConfig
          ;
      };
  socket =
    if socket == null then
      null
    else
      {
        inherit (socket) wantedBy listenStreams socketConfig;
      };
}
