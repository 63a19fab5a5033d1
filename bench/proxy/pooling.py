#!/usr/bin/env python3
"""Transaction pooling benchmark (issue 17): pgha in transaction mode on its
`primary` listener vs PgBouncer in transaction mode in front of the primary
(same pool size), and direct where max_connections allows it.

Part 1, many clients: N logged-in clients (default 10,000), every one of
them working: each runs `BEGIN; SELECT ...; UPDATE ...; COMMIT` (four
round trips, the backend held in between) every `--interval` seconds on
average (uniform 0.5x-1.5x, so the clients do not beat in step), through a
pool of `--pool-size` backends. One asyncio process drives them all
(bench/common/pgwire.py). Measured per target over `--measure` seconds
after `--warmup`: client errors (failed logins, failed statements, dropped
connections), pooler RSS per client, transaction latency (BEGIN sent to
COMMIT's ReadyForQuery, as the client saw it) and the pooler's CPU per
transaction (utime+stime of its process over the window / transactions
completed in it).

Part 2, pgbench: `-c 100/500/1000` select-only and TPC-B (`-M simple`:
PgBouncer 1.18 cannot carry protocol-level prepared statements) through
both poolers and direct: TPS, p99, pooler CPU per transaction.

Targets run interleaved (the order rotates every round); the load average
is recorded with every result (the machine is shared). Writes one JSON
file; `--render` prints the markdown tables of a result file.

  ulimit -n 20000; cargo build --release -p pgha-cli && \
    python3 bench/proxy/pooling.py --rounds 2
  python3 bench/proxy/pooling.py --render bench/results/pooling-....json

Hazards: starts a whole dev cluster plus PgBouncer and a second pgha proxy
on free loopback ports, all stopped by PID in a `finally`. 10,000 clients
need RLIMIT_NOFILE above 10,000 for this process and the poolers (raised to
the hard limit here; the poolers inherit it) and as many ephemeral ports.
"""

import argparse
import asyncio
import datetime
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import pgbench  # noqa: E402
import pgwire  # noqa: E402
import procstat  # noqa: E402
from pgcluster import DevCluster  # noqa: E402
from poolers import PgBouncer, PghaPooled  # noqa: E402
from stats import percentile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import DB, USER, git_describe, log, prepare_cluster  # noqa: E402

MAX_CONNECTIONS = 1200


def parse_args():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pgha-bin", default=os.path.join(root, "target", "release", "pgha"))
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--interval", type=float, default=10.0,
                   help="mean seconds between one client's transactions")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--measure", type=int, default=60)
    p.add_argument("--pool-size", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--targets", default="pgha-tx-primary,pgbouncer")
    p.add_argument("--pgbench-clients", default="100,500,1000", help="'' to skip part 2")
    p.add_argument("--pgbench-targets", default="pgha-tx-primary,pgbouncer,direct")
    p.add_argument("--pgbench-scripts", default="select-only,tpcb")
    p.add_argument("--pgbench-rounds", type=int, default=1)
    p.add_argument("--duration", type=int, default=10, help="seconds per pgbench run")
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--out", default=None)
    p.add_argument("--render", metavar="RESULT.json", help="print the tables of a result")
    a = p.parse_args()
    if a.out is None:
        stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
        a.out = os.path.join(root, "bench", "results", f"pooling-{stamp}.json")
    return a


def start_targets(cluster, wanted, verifier, pool_size, max_clients):
    targets, daemons = {}, []
    primary = cluster.primary_port()
    if "direct" in wanted:
        targets["direct"] = {"port": primary, "pids": lambda: []}
    if "pgha-tx-primary" in wanted:
        t = PghaPooled(cluster.bin, cluster.dir, pool_size=pool_size, listener="primary",
                       extra=f"max_client_connections = {max_clients}").start()
        daemons.append(t)
        targets["pgha-tx-primary"] = {"port": t.port, "pids": t.pids}
    if "pgha-tx" in wanted:
        t = PghaPooled(cluster.bin, cluster.dir, pool_size=pool_size,
                       extra=f"max_client_connections = {max_clients}").start()
        daemons.append(t)
        targets["pgha-tx"] = {"port": t.port, "pids": t.pids}
    if "pgbouncer" in wanted:
        # query_wait_timeout as pgha's pool_wait_timeout (30 s; PgBouncer's
        # default is 120 s): a client that waits that long fails in both.
        b = PgBouncer(primary, DB, USER, verifier, pool_size=pool_size,
                      max_clients=max_clients, query_wait_timeout=30).start()
        daemons.append(b)
        targets["pgbouncer"] = {"port": b.port, "pids": b.pids}
    return targets, daemons


class Work:
    """Counters of one many-clients run, shared by the client tasks."""

    def __init__(self):
        self.measuring = False
        self.stop = False
        # Set with `stop`: ends the clients' sleeps between transactions.
        self.stopped = asyncio.Event()
        self.done = 0
        self.latencies_us = []
        self.errors = []


async def client_loop(conn, work, interval, accounts):
    reader, writer = conn
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(work.stopped.wait(), random.uniform(0, interval))
    except asyncio.TimeoutError:
        pass
    while not work.stop:
        aid = random.randint(1, accounts)
        t0 = loop.time()
        measuring = work.measuring
        try:
            for sql in ("BEGIN",
                        f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}",
                        f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = {aid}",
                        "COMMIT"):
                await pgwire.query(reader, writer, sql)
        except (pgwire.QueryError, pgwire.LoginError, OSError,
                asyncio.IncompleteReadError) as e:
            work.errors.append(str(e) or type(e).__name__)
            return
        if measuring and work.measuring:
            work.done += 1
            work.latencies_us.append(int((loop.time() - t0) * 1e6))
        try:
            await asyncio.wait_for(work.stopped.wait(), interval * random.uniform(0.5, 1.5))
        except asyncio.TimeoutError:
            pass


async def many_clients(name, target, args, password, scale):
    pids = target["pids"]()
    rss_base = procstat.rss_kib(pids)
    t0 = time.time()
    connect = lambda: pgwire.login("127.0.0.1", target["port"], USER, password, DB)  # noqa: E731
    conns, login_errors = await pgwire.open_many(args.clients, connect, concurrency=128)
    login_s = time.time() - t0
    log(f"{name}: {len(conns)} clients logged in in {login_s:.0f} s, "
        f"{len(login_errors)} failed {login_errors[:1]}")
    work = Work()
    tasks = [asyncio.create_task(client_loop(c, work, args.interval, scale * 100000))
             for c in conns]
    await asyncio.sleep(args.warmup)
    cpu0, load0 = procstat.cpu_split(pids), procstat.loadavg()
    work.measuring = True
    m0 = time.time()
    await asyncio.sleep(args.measure)
    work.measuring = False
    window = time.time() - m0
    cpu1 = procstat.cpu_split(pids)
    rss = procstat.rss_kib(pids)
    work.stop = True
    work.stopped.set()
    # Every client finishes its transaction in flight (bounded by the
    # poolers' wait timeouts), then all leave.
    _, pending = await asyncio.wait(tasks, timeout=60)
    for t in pending:
        t.cancel()
    pgwire.close_all(conns)
    await asyncio.sleep(2)
    lat = sorted(work.latencies_us)
    n = work.done
    res = {
        "target": name, "clients": args.clients, "logged_in": len(conns),
        "login_errors": len(login_errors), "first_login_error": login_errors[:1],
        "login_s": round(login_s, 1), "errors": len(work.errors),
        "first_errors": work.errors[:3], "stuck_at_end": len(pending),
        "window_s": round(window, 1), "transactions": n,
        "tx_per_s": round(n / window, 1),
        "rss_base_kib": rss_base, "rss_kib": rss,
        "kib_per_client": round((rss - rss_base) / max(1, len(conns)), 2),
        "loadavg": [load0, procstat.loadavg()],
    }
    if n:
        res.update({
            "p50_ms": percentile(lat, 50) / 1000, "p99_ms": percentile(lat, 99) / 1000,
            "max_ms": lat[-1] / 1000,
            "cpu_us_per_tx": round((sum(cpu1) - sum(cpu0)) * 1e6 / n, 1) if pids else None,
            "user_us_per_tx": round((cpu1[0] - cpu0[0]) * 1e6 / n, 1) if pids else None,
            "sys_us_per_tx": round((cpu1[1] - cpu0[1]) * 1e6 / n, 1) if pids else None,
        })
    return res


def run_pgbench(args, targets, password):
    runs = []
    clients = [int(c) for c in args.pgbench_clients.split(",") if c]
    names = [n for n in args.pgbench_targets.split(",") if n in targets]
    for rnd in range(args.pgbench_rounds):
        for script in args.pgbench_scripts.split(","):
            for c in clients:
                k = (rnd + c) % len(names)
                for name in names[k:] + names[:k]:
                    if name == "direct" and c + 20 > MAX_CONNECTIONS:
                        continue
                    t = targets[name]
                    r = pgbench.run(t["port"], USER, password, DB, script, c, "simple",
                                    args.duration, t["pids"]())
                    r.update({"round": rnd, "script": script, "clients": c, "target": name})
                    runs.append(r)
                    shown = (f"{r['tps']:.0f} tps p99 {r['p99_ms']:.1f} ms "
                             f"cpu {r['proxy_cpu_us_per_tx'] or 0:.0f} us/tx"
                             if "tps" in r else r["error"])
                    log(f"pgbench {script} -c {c} {name}: {shown} load {r['loadavg']}")
    return runs


def main():
    args = parse_args()
    if args.render:
        render(args.render)
        return
    limit = pgwire.raise_nofile(1 << 20)
    if limit < args.clients + 200:
        sys.exit(f"RLIMIT_NOFILE is {limit}: {args.clients} clients need "
                 f"{args.clients + 200} (raise the hard limit: ulimit -Hn)")
    result = {"benchmark": "pooling", "started": datetime.datetime.utcnow().isoformat() + "Z",
              "machine": procstat.machine(), "settings": vars(args).copy(),
              "git": git_describe(), "nofile": limit}
    cluster = DevCluster(args.pgha_bin, parameters={"max_connections": MAX_CONNECTIONS})
    daemons = []
    try:
        log(f"pgha up in {cluster.dir}")
        cluster.up()
        password, verifier = prepare_cluster(cluster, args.scale)
        wanted = set(args.targets.split(",")) | set(args.pgbench_targets.split(","))
        targets, daemons = start_targets(cluster, wanted, verifier, args.pool_size,
                                         args.clients + 1000)
        for name, t in targets.items():
            r = pgbench.run(t["port"], USER, password, DB, "select-only", 1, "simple", 1)
            log(f"smoke {name}: {r.get('tps', r.get('error'))}")
        many = []
        names = [n for n in args.targets.split(",") if n in targets]
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                r = asyncio.run(many_clients(name, targets[name], args, password, args.scale))
                r["round"] = rnd
                many.append(r)
                log(f"many {name}: {json.dumps(r)}")
                result["many_clients"] = many
        result["many_clients"] = many
        result["pgbench"] = run_pgbench(args, targets, password)
    finally:
        for d in daemons:
            d.stop()
        cluster.down()
        result["finished"] = datetime.datetime.utcnow().isoformat() + "Z"
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {args.out}")


def render(path):
    with open(path) as f:
        r = json.load(f)
    print(f"`{os.path.basename(path)}`, git {r.get('git')}, "
          f"{r['settings']['clients']} clients, one transaction each every "
          f"{r['settings']['interval']} s on average, pool_size {r['settings']['pool_size']}\n")
    print("| round | target | logged in | errors | tx/s | p50 ms | p99 ms | max ms | "
          "KiB per client | CPU µs/tx (user+sys) | load avg (start, end of window) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in r.get("many_clients", []):
        # (`stuck_at_end` of runs before 2026-12-07 14:20 counts clients still
        # asleep between transactions when the run ended, not failures.)
        errs = m["login_errors"] + m["errors"]
        print(f"| {m['round']} | {m['target']} | {m['logged_in']} of {m['clients']} "
              f"({m['login_s']} s) | {errs} | {m['tx_per_s']} | {m.get('p50_ms', 0):.1f} | "
              f"{m.get('p99_ms', 0):.1f} | {m.get('max_ms', 0):.0f} | {m['kib_per_client']} | "
              f"{m.get('cpu_us_per_tx')} ({m.get('user_us_per_tx')}+{m.get('sys_us_per_tx')}) | "
              f"{m['loadavg'][0][0]}, {m['loadavg'][1][0]} |")
    runs = r.get("pgbench", [])
    if runs:
        print("\n| script | -c | target | TPS | p99 ms | pooler CPU µs/tx | load avg |")
        print("|---|---|---|---|---|---|---|")
        for x in sorted(runs, key=lambda x: (x["script"], x["clients"], x["target"])):
            if "tps" not in x:
                print(f"| {x['script']} | {x['clients']} | {x['target']} | error: "
                      f"{x['error'][:80]} | | | {x['loadavg'][0]} |")
                continue
            cpu = x.get("proxy_cpu_us_per_tx")
            print(f"| {x['script']} | {x['clients']} | {x['target']} | {x['tps']:.0f} | "
                  f"{x['p99_ms']:.1f} | {'' if cpu is None else f'{cpu:.0f}'} | "
                  f"{x['loadavg'][0]} |")


if __name__ == "__main__":
    main()
