{
  description = "nix-serve-sd: a socket-activated, drop-in replacement for nix-serve";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        nix-serve-sd = pkgs.callPackage ./nixos/package.nix { };
        default = nix-serve-sd;
      });

      overlays.default = final: _prev: {
        nix-serve-sd = final.callPackage ./nixos/package.nix { };
      };

      # Extends nixpkgs' own services.nix-serve; builds the package with the
      # system's nixpkgs (or takes pkgs.nix-serve-sd when the overlay is on).
      nixosModules.default = ./nixos/module.nix;
    };
}
