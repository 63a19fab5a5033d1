#!/usr/bin/env bash
# HA benchmarks, pgha against Patroni, interleaved (see harness.py):
#   bench/ha/run.sh rto|node|pg|switchover|sigstop|etcd|etcd_standby|freeze|bootstrap|all|everything [--rounds N] [--keep]
# `etcd` = etcd killed for --outage seconds (20) under writes, failsafe mode on and off;
# `etcd_standby` = the same with one standby's manager SIGSTOPped for the outage;
# `freeze` = the primary's PostgreSQL SIGSTOPped for --freeze seconds (10).
# `all` = node crash, PostgreSQL crash, switchover and SIGSTOP on one set of
# clusters; `everything` = bootstrap, then all. Needs bench/ha/install.sh
# once. PGHA_BIN picks the pgha binary (default target/release/pgha, else
# target/debug/pgha; PGHA_COMMIT names its commit in the results when it
# was built from another tree); it is copied first so a rebuild mid-run changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${PATRONI4_VENV:-/opt/pgha-bench/patroni4}
if [[ ! -x $venv/bin/python3 ]]; then
    echo "run.sh: no virtualenv at $venv: run bench/ha/install.sh first" >&2
    exit 1
fi
for tool in /usr/bin/patroni /usr/bin/etcd /usr/sbin/haproxy /usr/lib/postgresql/15/bin/postgres; do
    [[ -x $tool ]] || { echo "run.sh: $tool missing: run bench/ha/install.sh (and scripts/install-deps)" >&2; exit 1; }
done
bin=${PGHA_BIN:-}
profile=${PGHA_PROFILE:-}
if [[ -z $bin ]]; then
    if [[ -x $repo/target/release/pgha ]]; then bin=$repo/target/release/pgha; profile=${profile:-release}
    elif [[ -x $repo/target/debug/pgha ]]; then bin=$repo/target/debug/pgha; profile=${profile:-debug}
    else echo "run.sh: no pgha binary: cargo build --release -p pgha-cli (or set PGHA_BIN)" >&2; exit 1; fi
fi
copy=$(mktemp -d /tmp/pgha-bench-bin.XXXXXX)
chmod 755 "$copy"
trap 'rm -rf "$copy"' EXIT
cp "$bin" "$copy/pgha"
export PGHA_BIN=$copy/pgha PGHA_PROFILE=${profile:-unknown}
"$venv/bin/python3" "$here/harness.py" "$@"
