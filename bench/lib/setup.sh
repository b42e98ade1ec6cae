#!/usr/bin/env bash
# bench/lib/setup.sh STATE KEY: the benchmark's store paths and the static cache
# nginx serves, made once and reused (idempotent; each step checks before it works).
#
# Writes into STATE:
#   paths.tsv     role<TAB>store path: corpus-0000..corpus-0999, empty, nar-10M, nar-1G
#   absent.txt    1,000 random nix32 hashes no store path has
#   cache/        `nix copy --to file://…?compression=none` of all of them, signed
#                 with KEY like our server signs (so both serve narinfos of one size)
set -euo pipefail
STATE=$1 KEY=$2
log() { echo "bench setup: $*" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}'; }
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
  rm -rf "$STATE/cache"
  start=$(date +%s%N)
  cut -f2 "$STATE/paths.tsv" | xargs nix --extra-experimental-features nix-command \
    copy --to "file://$STATE/cache?compression=none&secret-key=$KEY" 2>"$STATE/copy.log" ||
    { tail -20 "$STATE/copy.log" >&2; log "nix copy failed (log: $STATE/copy.log)"; exit 1; }
  log "static cache written in $(elapsed "$start") s"
  echo "$stamp" >"$STATE/cache.stamp"
fi
