#!/usr/bin/env bash
# Backups and restores (issue 16), side by side on the same data in one run:
#   - `pgha backup` (from the standby; pg_basebackup + pg_verifybackup + tar
#     + zstd + SHA-256 into the archive) against plain `pg_basebackup -Fp`,
#     `pg_basebackup -Ft --compress=client-zstd` and pgBackRest (Debian's
#     `pgbackrest`, full backup, zst, process-max 2) on the filesystem;
#   - `pgha restore --latest` (unpack + verify + start + recovery until
#     promoted) against `pgbackrest restore` (files only) and `cp -a` of the
#     plain copy;
#   - WAL push latency of one 16 MB segment, filesystem and S3 (moto on
#     loopback, when $PGHA_TEST_DRIVERS/moto is installed), and whether the
#     archive keeps up under pgbench writes (the .ready backlog);
#   - the recovery point of `restore --latest`: acknowledged commits missing.
# Data: pgbench scale $SCALE (default 50, ~750 MB) on a two-member dev
# cluster. Everything runs in a fresh directory on free loopback ports and
# is stopped by PID (`pgha down`, moto's PID) at the end.
#
#   bench/backup/run.sh [PGHA_BIN] [SCALE] [ROUNDS] > bench/results/backup-DATE.json
set -euo pipefail
bin=$(realpath "${1:-target/release/pgha}")
scale=${2:-50}
rounds=${3:-2}
bindir=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/pgha-bench-backup.XXXXXX)
chmod 755 "$work"
chown postgres: "$work"
moto_pid=""
cleanup() {
  "$bin" down --dir "$work/c" >/dev/null 2>&1 || true
  for d in "$work"/restore-*; do
    [ -f "$d/postmaster.pid" ] && kill -9 "$(head -1 "$d/postmaster.pid")" 2>/dev/null || true
  done
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench/backup: $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
as_pg() { runuser -u postgres -- "$@"; }

p1=$(free_port); p2=$(free_port); etcd=$(free_port)
while ! python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',$((etcd + 1))))" 2>/dev/null; do etcd=$(free_port); done
cat >"$work/input.toml" <<EOF
[dcs]
endpoints = ["http://127.0.0.1:$etcd"]
username = "pgha"
password_file = "secrets/etcd.password"
[[members]]
name = "node1"
port = $p1
api_port = $(free_port)
[[members]]
name = "node2"
port = $p2
api_port = $(free_port)
EOF
log "cluster in $work/c"
"$bin" up --dir "$work/c" --config "$work/input.toml" >/dev/null 2>&1
export PGPASSWORD
PGPASSWORD=$(cat "$work/c/secrets/admin.password")
psql_p() { psql -X -q -At -h 127.0.0.1 -p "$p1" -U postgres -d postgres "$@"; }
log "pgbench -i -s $scale"
pgbench -i -q -s "$scale" -h 127.0.0.1 -p "$p1" -U postgres postgres >/dev/null 2>&1
psql_p -c "CHECKPOINT" >/dev/null
db_bytes=$(psql_p -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
head=$(psql_p -c "SELECT pg_current_wal_lsn()")
until [ "$(psql -X -At -h 127.0.0.1 -p "$p2" -U postgres -d postgres -c "SELECT pg_last_wal_replay_lsn() >= '$head'")" = t ]; do sleep 0.5; done

# pgBackRest: repository on the filesystem, backups from the primary's
# data directory (it reads the files itself and logs in over the socket).
mkdir -p "$work/pgbr/repo" "$work/pgbr/log" "$work/pgbr/lock"
cat >"$work/pgbr/pgbackrest.conf" <<EOF
[global]
repo1-path=$work/pgbr/repo
repo1-retention-full=99
log-path=$work/pgbr/log
lock-path=$work/pgbr/lock
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-check=n
log-level-console=warn

[bench]
pg1-path=$work/c/node1/data
pg1-port=$p1
pg1-socket-path=$work/c/node1
pg1-user=postgres
EOF
chown -R postgres: "$work/pgbr"
pgbr() { as_pg env PGPASSWORD="$PGPASSWORD" pgbackrest --config="$work/pgbr/pgbackrest.conf" --stanza=bench "$@"; }
pgbr stanza-create >/dev/null

dir_bytes() { du -sb "$1" | cut -f1; }
rows=()
for r in $(seq "$rounds"); do
  log "round $r: backups"
  t=$(date +%s%N); "$bin" backup --dir "$work/c" >/dev/null; pgha_ms=$(ms_since "$t")
  pgha_stored=$(du -sb "$work"/c/archive/backups/2* | tail -1 | cut -f1)
  rm -rf "$work/plain" "$work/tar"
  t=$(date +%s%N)
  as_pg env -u PGPASSWORD PGPASSFILE="$work/c/secrets/pgpass" "$bindir/pg_basebackup" -h 127.0.0.1 -p "$p2" -U replicator -D "$work/plain" -Fp -X stream -c fast --no-password
  plain_ms=$(ms_since "$t"); plain_bytes=$(dir_bytes "$work/plain")
  t=$(date +%s%N)
  as_pg env -u PGPASSWORD PGPASSFILE="$work/c/secrets/pgpass" "$bindir/pg_basebackup" -h 127.0.0.1 -p "$p2" -U replicator -D "$work/tar" -Ft -X stream -c fast --compress=client-zstd --no-password
  tar_ms=$(ms_since "$t"); tar_bytes=$(dir_bytes "$work/tar")
  t=$(date +%s%N); pgbr backup --type=full >/dev/null; pgbr_ms=$(ms_since "$t")
  pgbr_bytes=$(dir_bytes "$work/pgbr/repo/backup/bench/$(ls "$work/pgbr/repo/backup/bench" | grep -E 'F$' | tail -1)")

  log "round $r: restores"
  psql_p -c "SELECT pg_switch_wal()" >/dev/null; sleep 2
  rp=$(free_port)
  t=$(date +%s%N)
  "$bin" restore --dir "$work/c" --to "$work/restore-pgha-$r" --port "$rp" --latest >"$work/restore-$r.out"
  pgha_restore_ms=$(ms_since "$t")
  as_pg "$bindir/pg_ctl" -D "$work/restore-pgha-$r" stop -m fast >/dev/null
  rm -rf "$work/restore-pgha-$r"
  mkdir -p "$work/restore-pgbr-$r"; chown postgres: "$work/restore-pgbr-$r"; chmod 700 "$work/restore-pgbr-$r"
  t=$(date +%s%N); pgbr restore --pg1-path="$work/restore-pgbr-$r" >/dev/null; pgbr_restore_ms=$(ms_since "$t")
  rm -rf "$work/restore-pgbr-$r"
  t=$(date +%s%N); cp -a "$work/plain" "$work/restore-cp-$r"; sync; cp_ms=$(ms_since "$t")
  rm -rf "$work/restore-cp-$r"
  load=$(cut -d' ' -f1 /proc/loadavg)
  rows+=("{\"round\":$r,\"pgha_backup_ms\":$pgha_ms,\"pgha_stored_bytes\":$pgha_stored,\"pg_basebackup_plain_ms\":$plain_ms,\"pg_basebackup_plain_bytes\":$plain_bytes,\"pg_basebackup_tar_zstd_ms\":$tar_ms,\"pg_basebackup_tar_zstd_bytes\":$tar_bytes,\"pgbackrest_backup_ms\":$pgbr_ms,\"pgbackrest_bytes\":$pgbr_bytes,\"pgha_restore_latest_ms\":$pgha_restore_ms,\"pgbackrest_restore_files_ms\":$pgbr_restore_ms,\"cp_plain_ms\":$cp_ms,\"loadavg\":$load}")
done

# WAL push latency: one real 16 MB segment pushed N times under new names.
seg=$(ls "$work/c/archive" | grep -E '^[0-9A-F]{24}$' | tail -1)
mkdir -p "$work/push/pg_wal/archive_status" "$work/push/archive"
"$bin" wal-fetch --archive "$work/c/archive" "$seg" "$work/push/seg" >/dev/null
push_ms() { # LOCATION EXTRA... -> mean ms over 10 pushes
  local s e i
  s=$(date +%s%N)
  for i in $(seq 10); do
    name=$(printf 'F000000100000000%08X' "$i")
    cp "$work/push/seg" "$work/push/pg_wal/$name"
    (cd "$work/push" && "$bin" wal-push --archive "$@" "pg_wal/$name" >/dev/null 2>&1)
  done
  e=$(date +%s%N)
  echo $(( (e - s) / 10 / 1000000 ))
}
fs_push_ms=$(push_ms "$work/push/archive")
s3_push_ms=null
s3_push4_ms=null
moto="${PGHA_TEST_DRIVERS:-/opt/pgha-test-drivers}/moto/bin/moto_server"
if [ -x "$moto" ]; then
  mp=$(free_port)
  "$moto" -H 127.0.0.1 -p "$mp" >/dev/null 2>&1 &
  moto_pid=$!
  until python3 -c "import socket; socket.create_connection(('127.0.0.1',$mp))" 2>/dev/null; do sleep 0.2; done
  python3 - "$mp" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1])); c.request("PUT", "/pgha-bench"); c.getresponse().read()
PY
  printf 'endpoint = http://127.0.0.1:%s\naccess_key_id = bench\nsecret_access_key = bench\n' "$mp" >"$work/push/s3.conf"
  s3_push_ms=$(push_ms s3://pgha-bench/a --s3-config "$work/push/s3.conf" --parallel 1)
  # Four ready files at once: mean per file with --parallel 4.
  find "$work/push/pg_wal" -maxdepth 1 -type f -delete
  for i in $(seq 4); do n=$(printf 'E000000100000000%08X' "$i"); cp "$work/push/seg" "$work/push/pg_wal/$n"; touch "$work/push/pg_wal/archive_status/$n.ready"; done
  s=$(date +%s%N)
  (cd "$work/push" && "$bin" wal-push --archive s3://pgha-bench/b --s3-config s3.conf --parallel 4 pg_wal/E00000010000000000000001 >/dev/null 2>&1)
  s3_push4_ms=$(( ($(date +%s%N) - s) / 4 / 1000000 ))
fi

# Under writes: pgbench for 30 s; the largest .ready backlog and WAL rate.
log "pgbench writes, archive backlog"
lsn0=$(psql_p -c "SELECT pg_current_wal_lsn()")
pgbench -n -T 30 -c 4 -j 2 -h 127.0.0.1 -p "$p1" -U postgres postgres >"$work/pgbench.out" 2>&1 &
pb=$!
max_ready=0
while kill -0 "$pb" 2>/dev/null; do
  n=$(ls "$work/c/node1/data/pg_wal/archive_status" 2>/dev/null | grep -c '\.ready$' || true)
  [ "$n" -gt "$max_ready" ] && max_ready=$n
  sleep 0.5
done
wait "$pb" || true
wal_mb=$(psql_p -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / 1048576)")
tps=$(grep -E '^tps' "$work/pgbench.out" | head -1 | awk '{print $3}')

# Recovery point: acknowledged inserts, then restore --latest.
log "recovery point of restore --latest"
psql_p -c "CREATE TABLE ack (id bigint PRIMARY KEY)" >/dev/null
echo "INSERT INTO ack SELECT coalesce(max(id), 0) + 1 FROM ack;" >"$work/ack.sql"
pgbench -n -T 10 -c 1 -f "$work/ack.sql" -h 127.0.0.1 -p "$p1" -U postgres postgres >/dev/null 2>&1
acked=$(psql_p -c "SELECT count(*) FROM ack")
seg=$(psql_p -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
psql_p -c "SELECT pg_switch_wal()" >/dev/null
until [ -f "$work/c/archive/$seg" ]; do sleep 0.2; done
rp=$(free_port)
"$bin" restore --dir "$work/c" --to "$work/restore-rpo" --port "$rp" --latest >/dev/null
restored=$(psql -X -At -h 127.0.0.1 -p "$rp" -U postgres -d postgres -c "SELECT count(*) FROM ack")
as_pg "$bindir/pg_ctl" -D "$work/restore-rpo" stop -m fast >/dev/null

printf '{"what":"backup/restore of pgbench scale %s (%s bytes of databases), pgha vs pg_basebackup vs pgBackRest; WAL push latency; restore --latest recovery point","date":"%s","nproc":%s,"pgbackrest":"%s","rounds":[%s],"wal_push_16mb_ms":{"fs":%s,"s3_moto":%s,"s3_moto_parallel4_per_file":%s},"under_pgbench_30s_c4":{"tps":%s,"wal_mb":%s,"max_ready_backlog":%s},"recovery_point":{"acknowledged":%s,"restored":%s,"missing":%s}}\n' \
  "$scale" "$db_bytes" "$(date -u +%FT%TZ)" "$(nproc)" "$(pgbackrest version | awk '{print $2}')" "$(IFS=,; echo "${rows[*]}")" \
  "$fs_push_ms" "$s3_push_ms" "$s3_push4_ms" "${tps:-null}" "${wal_mb:-null}" "$max_ready" "$acked" "$restored" "$((acked - restored))"
