#!/usr/bin/env bash
# Install what the HA benchmarks compare pgha with (Debian 12):
#  - Debian's patroni 3.0.2 (pulls python3-psycopg2, python3-etcd, ...),
#    etcd-server and haproxy, PostgreSQL 15;
#  - current Patroni 4.x from PyPI in a virtualenv (default /opt/pgha-bench/patroni4,
#    PATRONI4_VENV to change) with psycopg 3 (binary wheel); its etcd3 support
#    needs nothing beyond urllib3. The write client (bench/ha/writer.py) runs
#    with that virtualenv's python3 and psycopg too.
# Idempotent; run as root.
set -euo pipefail
venv=${PATRONI4_VENV:-/opt/pgha-bench/patroni4}
need=()
for pkg in patroni etcd-server haproxy postgresql-15 python3-venv util-linux; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
# Debian starts no etcd/patroni/haproxy service in a container without
# systemd; the benchmarks start their own on free loopback ports.
if [[ ! -x $venv/bin/patroni ]]; then
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "patroni[etcd3,psycopg3]>=4,<5" "psycopg[binary]>=3.1"
fi
chmod -R a+rX "$venv"   # Patroni runs as postgres
echo "Debian: $(/usr/bin/patroni --version)   PyPI: $("$venv/bin/patroni" --version)"
