#!/usr/bin/env bash
# The proxy benchmark, one command: build pgha (release), run pgbench through
# pgha's rw listener, direct, PgBouncer and pgpool-II (interleaved rounds),
# measure idle-connection memory, write bench/results/proxy-<date>.json and
# re-render the proxy section of docs/BENCHMARKS.md from it.
#
#   bench/proxy/run.sh            # full run (~25 min on 2 cores)
#   bench/proxy/run.sh --quick    # smoke test (~3 min; result not rendered)
#   bench/proxy/run.sh --duration 10 --rounds 5 --clients 1,8
#   bench/proxy/render.py [RESULT.json]   # re-render the doc tables only
#
# Needs: bench/install-comparisons (pgbouncer, pgpool2), PostgreSQL 15, etcd.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in pgbouncer pgpool /usr/lib/postgresql/15/bin/pgbench; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool missing: run bench/install-comparisons" >&2; exit 1; }
done

if [ -z "${PGHA_BIN:-}" ]; then
  cargo build --release -p pgha-cli
  PGHA_BIN=$PWD/target/release/pgha
fi
# Run a private copy: other work may rebuild target/release while this runs.
bin_copy=$(mktemp /tmp/pgha-bench-bin.XXXXXX)
trap 'rm -f "$bin_copy"' EXIT
cp "$PGHA_BIN" "$bin_copy"
chmod 755 "$bin_copy"
PGHA_BIN=$bin_copy

# Many idle connections need many file descriptors (client and proxy).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

quick=0 suffix=""
for a in "$@"; do
  if [ "$a" = "--quick" ]; then quick=1 suffix=-quick; fi
done
out=bench/results/proxy-$(date -u +%Y-%m-%d-%H%M)$suffix.json
python3 bench/proxy/run.py --pgha-bin "$PGHA_BIN" --out "$out" "$@"
if [ $quick = 1 ]; then
  python3 bench/proxy/render.py "$out" --stdout
else
  python3 bench/proxy/render.py "$out"
fi
