#!/usr/bin/env bash
# The proxy benchmark, one command: build pgha and pgha-testkit (release),
# run pgbench through pgha's rw listener, direct, PgBouncer, pgpool-II and the
# null forwarder (`pgha-testkit forward`, threads and epoll: the floor of any
# proxy here) in interleaved rounds, measure idle-connection memory, write
# bench/results/proxy-<date>.json and re-render the proxy section of
# docs/BENCHMARKS.md from it.
#
#   bench/proxy/run.sh            # full run (~25 min on 2 cores)
#   bench/proxy/run.sh --quick    # smoke test (~3 min; result not rendered)
#   bench/proxy/run.sh --duration 10 --rounds 5 --clients 1,8
#   # the forwarder-floor run (targets, TPC-B; no memory test):
#   bench/proxy/run.sh --targets pgha,direct,pgbouncer,forward-threads,forward-epoll --scripts select-only,tpcb --clients 1,8 --rounds 3 --memory-conns ''
#   bench/proxy/render.py [RESULT.json]   # re-render the doc tables only
#
# Needs: bench/install-comparisons (pgbouncer, pgpool2), PostgreSQL 15, etcd.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in pgbouncer pgpool /usr/lib/postgresql/15/bin/pgbench; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool missing: run bench/install-comparisons" >&2; exit 1; }
done

if [ -z "${PGHA_BIN:-}" ]; then
  cargo build --release -p pgha-cli -p pgha-testkit
  PGHA_BIN=$PWD/target/release/pgha
  TESTKIT_BIN=${TESTKIT_BIN:-$PWD/target/release/pgha-testkit}
fi
TESTKIT_BIN=${TESTKIT_BIN:-$PWD/target/release/pgha-testkit}
# Run private copies: other work may rebuild target/release while this runs.
bin_copy=$(mktemp /tmp/pgha-bench-bin.XXXXXX)
testkit_copy=$(mktemp /tmp/pgha-bench-testkit.XXXXXX)
trap 'rm -f "$bin_copy" "$testkit_copy"' EXIT
cp "$PGHA_BIN" "$bin_copy"
chmod 755 "$bin_copy"
PGHA_BIN=$bin_copy
if [ -x "$TESTKIT_BIN" ]; then
  cp "$TESTKIT_BIN" "$testkit_copy"
  chmod 755 "$testkit_copy"
fi

# Many idle connections need many file descriptors (client and proxy).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

quick=0 suffix=""
for a in "$@"; do
  if [ "$a" = "--quick" ]; then quick=1 suffix=-quick; fi
done
out=bench/results/proxy-$(date -u +%Y-%m-%d-%H%M)$suffix.json
python3 bench/proxy/run.py --pgha-bin "$PGHA_BIN" --testkit-bin "$testkit_copy" --out "$out" "$@"
if [ $quick = 1 ]; then
  python3 bench/proxy/render.py "$out" --stdout
else
  python3 bench/proxy/render.py "$out"
fi
