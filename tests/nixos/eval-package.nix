# Evaluates nixos/package.nix and flake.nix with nixpkgs' lib and stand-ins
# for the parts of nixpkgs they call (rustPlatform, callPackage), and returns
# what tests/nixos_module.rs checks. Nothing is built.
{ lib }:

let
  nixpkgsLib = import lib;

  # buildRustPackage's arguments are what we check; return them as they are.
  package = import ../../nixos/package.nix {
    lib = nixpkgsLib;
    rustPlatform.buildRustPackage = args: args;
  };

  flake = import ../../flake.nix;
  # callPackage records which file it was given instead of building it.
  fakePkgs = {
    callPackage = file: _args: { calledFile = toString file; };
  };
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = {
      lib = nixpkgsLib;
      legacyPackages = nixpkgsLib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: fakePkgs);
    };
  };
  overlaid = outputs.overlays.default fakePkgs { };
in
{
  package = {
    inherit (package) pname version;
    cargoLock = toString package.cargoLock.lockFile;
    mainProgram = package.meta.mainProgram;
    description = package.meta.description;
    src = "${package.src}";
  };
  flake = {
    nixpkgsUrl = flake.inputs.nixpkgs.url;
    packages = nixpkgsLib.mapAttrs (_: p: p.default.calledFile) outputs.packages;
    overlay = overlaid.nix-serve-sd.calledFile;
    nixosModule = toString outputs.nixosModules.default;
  };
}
