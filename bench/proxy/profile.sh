#!/usr/bin/env bash
# Profile the pgha proxy under pgbench select-only -M prepared -c 8:
# perf (cpu-clock sampling), strace -c (syscalls per transaction) and
# user/sys CPU per transaction. Reports go to bench/results/proxy-profile-<date>/.
#   bench/proxy/profile.sh [--mode extended] [--clients 1] [--seconds 10]
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in perf strace; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool missing: run bench/install-comparisons" >&2; exit 1; }
done
if [ -z "${PGHA_BIN:-}" ]; then
  cargo build --release -p pgha-cli
  PGHA_BIN=$PWD/target/release/pgha
fi
exec python3 bench/proxy/profile.py --pgha-bin "$PGHA_BIN" "$@"
