#!/usr/bin/env bash
# Profile the pgha proxy under pgbench select-only (or the TPC-B-like default
# script with --script tpcb) -M prepared -c 8: perf (cpu-clock sampling),
# strace -c (syscalls per transaction), user/sys CPU per transaction,
# callgrind, and per-statement latency and wake-up delays against direct,
# the null forwarder and PgBouncer. Reports go to
# bench/results/proxy-profile-<date>/.
#   bench/proxy/profile.sh [--script tpcb] [--mode extended] [--clients 1] [--seconds 10]
#       [--only perf|callgrind|latency]
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in perf strace valgrind; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool missing: run bench/install-comparisons" >&2; exit 1; }
done
if [ -z "${PGHA_BIN:-}" ]; then
  cargo build --release -p pgha-cli -p pgha-testkit
  PGHA_BIN=$PWD/target/release/pgha
fi
TESTKIT_BIN=${TESTKIT_BIN:-$PWD/target/release/pgha-testkit}
exec python3 bench/proxy/profile.py --pgha-bin "$PGHA_BIN" --testkit-bin "$TESTKIT_BIN" "$@"
