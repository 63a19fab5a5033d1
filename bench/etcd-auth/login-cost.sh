#!/usr/bin/env bash
# What etcd authentication costs a CLI verb: every `pgha` invocation logs in
# once (etcd checks the password with bcrypt), agents and proxies once per
# connection. Runs `pgha edit-config` (one etcd read) N times against a
# fresh single-member etcd: anonymous, with authentication at etcd's default
# --bcrypt-cost 10, and at --bcrypt-cost 4 (what `pgha up` and the Docker
# etcd use). Prints a JSON document; mean milliseconds per invocation.
#
#   bench/etcd-auth/login-cost.sh [PGHA_BIN] [N] [ROUNDS] > bench/results/etcd-auth-DATE.json
set -euo pipefail
bin=${1:-target/debug/pgha}
bin=$(realpath "$bin")
n=${2:-20}
rounds=${3:-3}
port=${PGHA_BENCH_ETCD_PORT:-24790}
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
start_etcd() {
  rm -rf d secrets
  etcd --data-dir d --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((port + 1))" \
    --log-level warn "$@" >etcd.log 2>&1 &
  pid=$!
  until etcdctl --endpoints "http://127.0.0.1:$port" endpoint status >/dev/null 2>&1; do sleep 0.1; done
}
stop_etcd() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
printf 'name="a"\n[dcs]\nendpoints=["http://127.0.0.1:%s"]\n[[members]]\nname="node1"\nport=5999\n' "$port" >anon.toml
printf 'name="b"\n[dcs]\nendpoints=["http://127.0.0.1:%s"]\nusername="pgha"\npassword_file="secrets/etcd.password"\n[[members]]\nname="node1"\nport=5999\n' "$port" >auth.toml
mean_ms() {
  local s e
  s=$(date +%s%N)
  for _ in $(seq "$n"); do "$bin" edit-config --config "$1" >/dev/null 2>&1; done
  e=$(date +%s%N)
  echo $(( (e - s) / n / 1000000 ))
}
rows=()
for r in $(seq "$rounds"); do
  start_etcd; a=$(mean_ms anon.toml); stop_etcd
  start_etcd; "$bin" etcd-auth --config auth.toml >/dev/null 2>&1; b10=$(mean_ms auth.toml); stop_etcd
  start_etcd --bcrypt-cost=4; "$bin" etcd-auth --config auth.toml >/dev/null 2>&1; b4=$(mean_ms auth.toml); stop_etcd
  load=$(cut -d' ' -f1 /proc/loadavg)
  rows+=("{\"round\":$r,\"anonymous_ms\":$a,\"auth_bcrypt10_ms\":$b10,\"auth_bcrypt4_ms\":$b4,\"loadavg\":$load}")
done
printf '{"what":"pgha edit-config (one etcd read) per invocation, mean of %s","date":"%s","nproc":%s,"etcd":"%s","rounds":[%s]}\n' \
  "$n" "$(date -u +%FT%TZ)" "$(nproc)" "$(etcd --version | head -1 | awk '{print $3}')" "$(IFS=,; echo "${rows[*]}")"
