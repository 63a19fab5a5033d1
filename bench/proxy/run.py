#!/usr/bin/env python3
"""Proxy benchmark: pgbench through pgha's rw listener vs direct to the
primary vs PgBouncer (transaction pooling, in front of the primary) vs
pgpool-II (load balancing over the three members) vs a null TCP forwarder in
front of the primary (`pgha-testkit forward`, threads and epoll modes: the
floor of any proxy here), interleaved per round; then proxy memory with many
idle client connections. Writes one JSON file.

Usually started by bench/proxy/run.sh, which builds pgha and pgha-testkit
first. The run behind the forwarder section of docs/BENCHMARKS.md, one line
(release builds of pgha and pgha-testkit first):

  cargo build --release -p pgha-cli -p pgha-testkit && python3 bench/proxy/run.py --targets pgha,direct,pgbouncer,forward-threads,forward-epoll --scripts select-only,tpcb --clients 1,8 --rounds 3 --memory-conns ''

then `python3 bench/proxy/render.py RESULT.json --stdout` (without --stdout
it rewrites the doc's proxy section).
Hazards: starts a whole dev cluster (etcd, three PostgreSQL, agents, the
proxy) plus PgBouncer and pgpool on free loopback ports; everything is
stopped by PID in a `finally`, also on Ctrl-C.
"""

import argparse
import asyncio
import datetime
import json
import os
import secrets
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import pgbench  # noqa: E402
import pgwire  # noqa: E402
import procstat  # noqa: E402
from pgcluster import DevCluster  # noqa: E402
from poolers import Forwarder, PgBouncer, Pgpool, PghaPooled  # noqa: E402

USER, DB = "bench", "bench"
MAX_CONNECTIONS = 1200
# Server connections per pool of the transaction poolers (PgBouncer's
# default_pool_size, pgha's pool_size).
POOL_SIZE = 40


def parse_args():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pgha-bin", default=os.path.join(root, "target", "release", "pgha"))
    p.add_argument("--duration", type=int, help="seconds per pgbench run (default 5)")
    p.add_argument("--rounds", type=int, help="default 3")
    p.add_argument("--clients", help="default 1,8,32")
    p.add_argument("--modes", default="simple,extended,prepared")
    p.add_argument("--scripts", default="select-only,tpcb")
    p.add_argument("--testkit-bin",
                   default=os.path.join(root, "target", "release", "pgha-testkit"),
                   help="pgha-testkit binary (its `forward` subcommand is the null forwarder)")
    p.add_argument("--targets",
                   default="pgha,direct,pgbouncer,pgpool,forward-threads,forward-epoll")
    p.add_argument("--scale", type=int, help="pgbench -i scale factor (default 10)")
    p.add_argument("--memory-conns",
                   help="idle client connection counts for the memory test "
                        "(default 1000,10000; '' to skip)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 2 s, -c 1 and 8, scale 1, 200 idle connections")
    p.add_argument("--out", default=None)
    p.add_argument("--keep", action="store_true", help="keep the cluster dir")
    a = p.parse_args()
    defaults = {"duration": 5, "rounds": 3, "clients": "1,8,32", "scale": 10,
                "memory_conns": "1000,10000"}
    if a.quick:
        defaults = {"duration": 2, "rounds": 1, "clients": "1,8", "scale": 1,
                    "memory_conns": "200"}
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.out is None:
        stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
        name = f"proxy-{stamp}{'-quick' if a.quick else ''}.json"
        a.out = os.path.join(root, "bench", "results", name)
    return a


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_cluster(cluster, scale):
    password = secrets.token_hex(16)
    primary = cluster.primary_port()
    cluster.psql(primary, f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'")
    cluster.psql(primary, f"CREATE DATABASE {DB} OWNER {USER}")
    log(f"pgbench -i -s {scale}")
    env = dict(os.environ, PGPASSWORD=password)
    subprocess.run([pgbench.PGBENCH, "-i", "-q", "-s", str(scale), "-h", "127.0.0.1",
                    "-p", str(primary), "-U", USER, DB],
                   check=True, capture_output=True, env=env)
    verifier = cluster.psql(primary, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{USER}'")
    for port in cluster.member_ports().values():
        cluster.wait_sql(port, "SELECT count(*) FROM pgbench_branches", str(scale),
                         db=DB, user=USER, password=password)
    return password, verifier


def start_targets(cluster, wanted, password, verifier, testkit_bin=None):
    """name -> {port, pids(): [...], daemon}; failures are recorded, not fatal."""
    targets, failed = {}, {}
    host, rw, _, _ = cluster.proxy()
    primary = cluster.primary_port()
    if "pgha" in wanted:
        pid = cluster.proxy_pid()
        targets["pgha"] = {"port": rw, "pids": lambda pid=pid: [pid]}
    if "direct" in wanted:
        targets["direct"] = {"port": primary, "pids": lambda: []}
    daemons = []
    if "pgha-tx" in wanted:
        try:
            t = PghaPooled(cluster.bin, cluster.dir, pool_size=POOL_SIZE).start()
            daemons.append(t)
            targets["pgha-tx"] = {"port": t.port, "pids": t.pids, "daemon": t}
        except (RuntimeError, OSError) as e:
            failed["pgha-tx"] = str(e)
    if "pgha-tx-primary" in wanted:
        # Transaction mode on the primary listener: everything on the
        # primary, like PgBouncer in front of it (no read barrier).
        try:
            t = PghaPooled(cluster.bin, cluster.dir, pool_size=POOL_SIZE,
                           listener="primary").start()
            daemons.append(t)
            targets["pgha-tx-primary"] = {"port": t.port, "pids": t.pids, "daemon": t}
        except (RuntimeError, OSError) as e:
            failed["pgha-tx-primary"] = str(e)
    if "pgbouncer" in wanted:
        try:
            b = PgBouncer(primary, DB, USER, verifier, pool_size=POOL_SIZE).start()
            daemons.append(b)
            targets["pgbouncer"] = {"port": b.port, "pids": b.pids, "daemon": b}
        except (RuntimeError, OSError) as e:
            failed["pgbouncer"] = str(e)
    if "pgpool" in wanted:
        try:
            ports = [primary] + [p for p in cluster.member_ports().values() if p != primary]
            pp = Pgpool(ports, USER, password, cluster.superuser, cluster.admin_password).start()
            daemons.append(pp)
            targets["pgpool"] = {"port": pp.port, "pids": pp.pids, "daemon": pp}
        except (RuntimeError, OSError) as e:
            failed["pgpool"] = str(e)
    for mode in ("threads", "epoll"):
        name = f"forward-{mode}"
        if name not in wanted:
            continue
        try:
            if not testkit_bin or not os.access(testkit_bin, os.X_OK):
                raise RuntimeError(f"{testkit_bin} not found: cargo build --release "
                                   "-p pgha-testkit")
            f = Forwarder(testkit_bin, primary, mode).start()
            daemons.append(f)
            targets[name] = {"port": f.port, "pids": f.pids, "daemon": f}
        except (RuntimeError, OSError) as e:
            failed[name] = str(e)
    return targets, failed, daemons


def smoke(targets, password, failed):
    """A 1 s select-only run per target; a target that cannot run is dropped."""
    for name in list(targets):
        deadline = time.time() + 30
        while True:
            r = pgbench.run(targets[name]["port"], USER, password, DB, "select-only", 1,
                            "simple", 1)
            if "error" not in r or time.time() > deadline:
                break
            time.sleep(1)
        if "error" in r:
            failed[name] = r["error"]
            del targets[name]
            log(f"{name}: unusable: {r['error']}")


def idle_cpu(targets, seconds=3):
    """CPU each proxy burns with no clients (polling, health checks), ms/s."""
    before = {n: procstat.cpu_seconds(t["pids"]()) for n, t in targets.items()}
    time.sleep(seconds)
    return {n: round((procstat.cpu_seconds(t["pids"]()) - before[n]) * 1000 / seconds, 2)
            for n, t in targets.items() if n != "direct"}


def throughput(args, targets, password):
    runs = []
    names = list(targets)
    configs = [(s, c, m) for s in args.scripts.split(",") if s
               for c in map(int, args.clients.split(",")) for m in args.modes.split(",")]
    total = len(configs) * len(names) * args.rounds
    done = 0
    for rnd in range(args.rounds):
        for script, clients, mode in configs:
            # Rotate the order each round so no target always runs first.
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                t = targets[name]
                r = pgbench.run(t["port"], USER, password, DB, script, clients, mode,
                                args.duration, t["pids"]())
                r.update({"round": rnd, "script": script, "clients": clients,
                          "mode": mode, "target": name})
                runs.append(r)
                done += 1
                shown = f"{r['tps']:.0f} tps" if "tps" in r else r["error"]
                log(f"[{done}/{total}] {script} -c {clients} -M {mode} {name}: {shown}")
    return runs


def server_backends(cluster):
    """Client backends of the bench role on all members (pg_stat_activity)."""
    total = 0
    for port in cluster.member_ports().values():
        total += int(cluster.psql(port, "SELECT count(*) FROM pg_stat_activity WHERE "
                                        f"usename = '{USER}' AND backend_type = 'client backend'"))
    return total


async def _hold(target_name, port, pids, n, how, password, cluster):
    if how == "login":
        connect = lambda: pgwire.login("127.0.0.1", port, USER, password, DB)  # noqa: E731
    else:
        connect = lambda: pgwire.open_tcp("127.0.0.1", port)  # noqa: E731
    base = procstat.rss_kib(pids)
    t0 = time.time()
    conns, errors = await pgwire.open_many(n, connect)
    opened = time.time() - t0
    await asyncio.sleep(2)
    alive = sum(1 for r, _ in conns if not r.at_eof())
    rss = procstat.rss_kib(pids)
    backends = server_backends(cluster)
    pgwire.close_all(conns)
    await asyncio.sleep(2)
    res = {"target": target_name, "how": how, "requested": n, "open": len(conns),
           "alive_after_2s": alive, "errors": len(errors),
           "first_error": errors[0] if errors else None, "open_seconds": round(opened, 1),
           "rss_base_kib": base, "rss_kib": rss, "rss_after_close_kib": procstat.rss_kib(pids),
           "server_backends": backends}
    if conns:
        res["kib_per_conn"] = round((rss - base) / len(conns), 2)
        res["mib_per_1000"] = round((rss - base) / len(conns) * 1000 / 1024, 2)
    return res


def memory(args, targets, password, cluster):
    """Idle connections: logged-in sessions, and bare TCP connections that
    never send a startup packet. pgha answers a login like a recent one from
    its login cache and opens the backend at the first statement, so idle
    logged-in clients hold no PostgreSQL backend (`server_backends` counts
    the bench role's backends on all members while they are held)."""
    out = []
    limit = pgwire.raise_nofile(25000)
    counts = [int(x) for x in args.memory_conns.split(",") if x]
    for name in ("pgha", "pgbouncer"):
        if name not in targets:
            continue
        t = targets[name]
        for n in counts:
            for how in ("login", "tcp"):
                if n + 100 > limit:
                    out.append({"target": name, "how": how, "requested": n,
                                "skipped": f"RLIMIT_NOFILE {limit}"})
                    continue
                r = asyncio.run(_hold(name, t["port"], t["pids"](), n, how, password, cluster))
                log(f"memory {name} {how} {n}: {r.get('mib_per_1000')} MiB/1000, "
                    f"{r.get('kib_per_conn')} KiB each, open {r['open']}, "
                    f"server backends {r['server_backends']}, "
                    f"errors {r['errors']} {r['first_error'] or ''}")
                out.append(r)
    return out


def git_describe():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "crates"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" (crates/ has uncommitted changes)" if dirty else "")
    except OSError:
        return None


def main():
    args = parse_args()
    if not os.access(args.pgha_bin, os.X_OK):
        sys.exit(f"{args.pgha_bin} not found: build it (cargo build --release -p pgha-cli)")
    result = {"benchmark": "proxy", "started": datetime.datetime.utcnow().isoformat() + "Z",
              "machine": procstat.machine(), "settings": vars(args).copy(),
              "git": git_describe()}
    cluster = DevCluster(args.pgha_bin, parameters={"max_connections": MAX_CONNECTIONS},
                         keep=args.keep)
    daemons = []
    try:
        log(f"pgha up in {cluster.dir}")
        cluster.up()
        password, verifier = prepare_cluster(cluster, args.scale)
        targets, failed, daemons = start_targets(cluster, args.targets.split(","), password,
                                                 verifier, args.testkit_bin)
        smoke(targets, password, failed)
        result["unavailable"] = failed
        result["idle_cpu_ms_per_s"] = idle_cpu(targets)
        result["runs"] = throughput(args, targets, password)
        result["memory"] = memory(args, targets, password, cluster)
        result["machine"]["loadavg_at_end"] = procstat.loadavg()
    finally:
        for d in daemons:
            d.stop()
        cluster.down()
        result["finished"] = datetime.datetime.utcnow().isoformat() + "Z"
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
