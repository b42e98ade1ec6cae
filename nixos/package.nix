# nix-serve-sd as a Nix package: `pkgs.callPackage ./nixos/package.nix { }`.
# The overlay in flake.nix exposes it as `pkgs.nix-serve-sd`; the NixOS module
# recognises it by its pname.
{
  lib,
  rustPlatform,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  root = ../.;
in
rustPlatform.buildRustPackage {
  pname = "nix-serve-sd";
  inherit (cargoToml.package) version;

  # The repository minus VCS and editor files, and minus a local `target/`
  # (gigabytes that would only make every build copy them into the store).
  src = lib.cleanSourceWith {
    src = lib.cleanSource root;
    filter = path: type: !(type == "directory" && path == toString (root + "/target"));
  };

  # Every dependency pinned by the lock file: no vendor hash to keep in sync.
  cargoLock.lockFile = ../Cargo.lock;

  # `cargo test` in the build sandbox runs the pure unit tests; the tests that
  # need a real Nix store, nix-daemon or systemd tools are #[ignore]d there.

  meta = {
    description = cargoToml.package.description;
    license = lib.licenses.mit;
    mainProgram = "nix-serve";
    # Linux only: systemd socket activation, sd_notify and /proc.
    platforms = lib.platforms.linux;
  };
}
