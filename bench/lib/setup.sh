#!/usr/bin/env bash
# bench/lib/setup.sh STATE KEY: the benchmark's store paths and the static cache
# nginx serves, made once and reused (idempotent; each step checks before it works).
#
# Writes into STATE:
#   paths.tsv     role<TAB>store path: corpus-0000..corpus-0999, empty, nar-10M, nar-1G
#   absent.txt    1,000 random nix32 hashes no store path has
#   cache/        `nix copy --to file://…?compression=none` of all of them, signed
#                 with KEY like our server signs (so both serve narinfos of one size)
#   first.txt     32,000 more store paths (also in cache/), for narinfo asked the first
#                 time; first-root, a GC root that refers to all of them
#   chroot/       a store of its own (chroot/nix/store, chroot/nix/var) with paths.tsv's
#                 paths, for the cold-disk scenario
set -euo pipefail
STATE=$1 KEY=$2
log() { echo "bench setup: $*" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}'; }
# copy_to STORE-URI LOG: `nix copy` of the store paths on stdin, its output in LOG.
copy_to() {
  xargs nix --extra-experimental-features nix-command copy --to "$1" 2>"$2" ||
    { tail -20 "$2" >&2; log "nix copy failed (log: $2)"; exit 1; }
}
mkdir -p "$STATE"

# ------------------------------------------------------------------ store paths
valid() { [ -s "$STATE/paths.tsv" ] && [ "$(wc -l <"$STATE/paths.tsv")" = 1003 ] &&
  cut -f2 "$STATE/paths.tsv" | xargs nix-store --check-validity 2>/dev/null; }
if valid; then
  log "store paths already in place ($STATE/paths.tsv)"
else
  S="$STATE/src"; rm -rf "$S"; mkdir -p "$S/corpus"
  out="$STATE/paths.tsv.new"; : >"$out"
  # 1,000 small files in ONE nix-store call: one process per path takes ~20 s.
  python3 - "$S/corpus" <<'PY'
import sys
for i in range(1000):
    with open(f"{sys.argv[1]}/bench-corpus-{i:04d}", "w") as f:
        f.write(f"nix-serve-sd bench corpus file {i}\n" * (1 + i % 7))
PY
  i=0
  (cd "$S/corpus" && nix-store --add bench-corpus-*) | while read -r p; do
    printf 'corpus-%04d\t%s\n' "$i" "$p"; i=$((i + 1))
  done >>"$out"
  : >"$S/bench-empty"
  printf 'empty\t%s\n' "$(nix-store --add "$S/bench-empty")" >>"$out"
  # Deterministic random content: the same store paths on every machine, and
  # nothing a server could compress away.
  mkbig() { python3 - "$1" "$2" <<'PY'
import random, sys
rng = random.Random(20261125)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(rng.randbytes(1 << 20))
PY
  }
  mkbig "$S/bench-10M" 10
  printf 'nar-10M\t%s\n' "$(nix-store --add "$S/bench-10M")" >>"$out"
  big=$(awk -F'\t' '$1 == "nar-1G" {print $2}' "$STATE/paths.tsv" 2>/dev/null || true)
  if [ -n "$big" ] && nix-store --check-validity "$big" 2>/dev/null; then
    log "1 GiB path already valid: $big"
  else
    log "making the 1 GiB path (once; it is kept in the store across runs)"
    start=$(date +%s%N)
    mkbig "$S/bench-1G" 1024
    big=$(nix-store --add "$S/bench-1G")
    log "1 GiB path added in $(elapsed "$start") s: $big"
  fi
  printf 'nar-1G\t%s\n' "$big" >>"$out"
  [ "$(wc -l <"$out")" = 1003 ] || { log "expected 1003 paths, got $(wc -l <"$out")"; exit 1; }
  mv "$out" "$STATE/paths.tsv"
  rm -rf "$S"   # the store holds the content now; keep disk use to one copy
  rm -f "$STATE/cache.stamp"
fi
# Roots, so a garbage collection elsewhere does not take the corpus away mid-run.
if [ "$(find "$STATE/roots" -maxdepth 1 -type l 2>/dev/null | wc -l)" != 1003 ]; then
  rm -rf "$STATE/roots"; mkdir -p "$STATE/roots"
  cut -f2 "$STATE/paths.tsv" | xargs nix-store --realise --add-root "$STATE/roots/r" --indirect >/dev/null
fi

# ------------------------------------------------------------------ absent hashes
if [ ! -s "$STATE/absent.txt" ]; then
  python3 - >"$STATE/absent.txt" <<'PY'
import random
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"   # nix32: 32 chars x 5 bits = 160 bits, all valid
rng = random.Random(7)
for _ in range(1000):
    print("".join(rng.choice(alphabet) for _ in range(32)))
PY
fi

# ------------------------------------------------------------------ static cache
stamp="$(sha256sum "$STATE/paths.tsv" "$KEY" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STATE/cache.stamp" 2>/dev/null)" = "$stamp" ] && [ -s "$STATE/cache/nix-cache-info" ]; then
  log "static cache already in place ($STATE/cache)"
else
  log "writing the static cache with nix copy (compression=none)"
  rm -rf "$STATE/cache" "$STATE/cache-first.stamp"
  start=$(date +%s%N)
  cut -f2 "$STATE/paths.tsv" | copy_to "file://$STATE/cache?compression=none&secret-key=$KEY" "$STATE/copy.log"
  log "static cache written in $(elapsed "$start") s"
  echo "$stamp" >"$STATE/cache.stamp"
fi

# ------------------------------------------------------------------ first-ask corpus
# 32,000 more small paths for "narinfo asked the first time": enough that no
# reply repeats in a run. Added in ONE nix-store call (a few seconds), held by
# one GC root: a text file that refers to all of them (builtins.toFile takes
# plain store paths as references through builtins.storePath), instead of
# 32,000 indirect roots in /nix/var/nix/gcroots/auto.
FIRST_N=32000
first_ok() { [ -s "$STATE/first.txt" ] && [ "$(wc -l <"$STATE/first.txt")" = "$FIRST_N" ] &&
  [ -L "$STATE/first-root" ] && nix-store --check-validity "$(readlink "$STATE/first-root")" 2>/dev/null &&
  [ "$(nix-store -q --references "$STATE/first-root" | wc -l)" = "$FIRST_N" ]; }
if first_ok; then
  log "first-ask corpus already in place ($STATE/first.txt)"
else
  S="$STATE/src-first"; rm -rf "$S"; mkdir -p "$S"
  start=$(date +%s%N)
  python3 - "$S" "$FIRST_N" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(f"{d}/bench-first-{i:05d}", "w") as f:
        f.write(f"nix-serve-sd bench first-ask file {i}\n")
PY
  (cd "$S" && nix-store --add bench-first-*) >"$STATE/first.txt.new"
  [ "$(wc -l <"$STATE/first.txt.new")" = "$FIRST_N" ] ||
    { log "expected $FIRST_N first-ask paths, got $(wc -l <"$STATE/first.txt.new")"; exit 1; }
  cat >"$S/root.nix" <<NIX
builtins.toFile "bench-first-root" (builtins.concatStringsSep "\n"
  (map builtins.storePath (builtins.filter (l: builtins.isString l && l != "")
    (builtins.split "\n" (builtins.readFile $STATE/first.txt.new)))))
NIX
  root=$(nix-instantiate --eval --read-write-mode "$S/root.nix" | tr -d '"')
  nix-store --realise --add-root "$STATE/first-root" --indirect "$root" >/dev/null
  mv "$STATE/first.txt.new" "$STATE/first.txt"
  rm -rf "$S"
  first_ok || { log "the first-ask root does not refer to $FIRST_N paths"; exit 1; }
  log "first-ask corpus of $FIRST_N paths made in $(elapsed "$start") s"
fi
# nginx's side: the same paths added to its file:// cache (made again with it).
stamp_first="$(sha256sum "$STATE/first.txt" "$KEY" | sha256sum | cut -d' ' -f1)"
last_first="$STATE/cache/$(tail -1 "$STATE/first.txt" | cut -c12-43).narinfo"
if [ "$(cat "$STATE/cache-first.stamp" 2>/dev/null)" = "$stamp_first" ] && [ -s "$last_first" ]; then
  log "first-ask corpus already in the static cache"
else
  log "adding the first-ask corpus to the static cache (once; about 15 s)"
  start=$(date +%s%N)
  copy_to "file://$STATE/cache?compression=none&secret-key=$KEY" "$STATE/copy-first.log" <"$STATE/first.txt"
  log "first-ask corpus cached in $(elapsed "$start") s"
  echo "$stamp_first" >"$STATE/cache-first.stamp"
fi

# ------------------------------------------------------------------ chroot store
# For the cold-disk scenario: a store of its own, chroot/nix/store with its
# database in chroot/nix/var, holding the 1 GiB, 10 MiB and empty paths and the
# 1,000-path corpus; the driver mirrors chroot/nix/store through a slow FUSE
# mount (bench/lib/slowfs.py). Nix writes its files canonical (mtime 1,
# read-only modes), as in the machine's store.
stamp_chroot="$(sha256sum "$STATE/paths.tsv" | cut -d' ' -f1)"
if [ "$(cat "$STATE/chroot.stamp" 2>/dev/null)" = "$stamp_chroot" ] &&
   cut -f2 "$STATE/paths.tsv" | xargs nix-store --store "local?root=$STATE/chroot" --check-validity 2>/dev/null; then
  log "chroot store already in place ($STATE/chroot)"
else
  log "copying the paths to the chroot store $STATE/chroot (once; about 1 GiB)"
  rm -rf "$STATE/chroot"
  start=$(date +%s%N)
  cut -f2 "$STATE/paths.tsv" | copy_to "local?root=$STATE/chroot" "$STATE/copy-chroot.log"
  log "chroot store written in $(elapsed "$start") s"
  echo "$stamp_chroot" >"$STATE/chroot.stamp"
fi
