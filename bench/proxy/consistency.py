#!/usr/bin/env python3
"""Read-consistency benchmark (issue 13): what the rw listener's guarantee
costs. A read-heavy mix (by default 90 % point reads, 10 % updates) where
each client reads on another connection than the one it writes on, so only
a guarantee across sessions keeps its reads fresh. Run through pgha's rw
listener with `read_consistency = linearizable` (the default), `session`
(read-your-writes within a session: the routing before issue 13) and `any`,
and directly against the primary, interleaved per round, at each client
count. Counted by the benchmark itself:

- throughput (operations per second) and p50 / p99 latency of reads and
  writes;
- the share of reads the standbys served (from each member's
  pg_stat_database transaction counts of the benchmark database);
- stale reads: a read that returned a value older than one an update had
  already acknowledged, to any client, before the read was sent (the
  clients share one process, so "acknowledged before" is exact). With
  `linearizable` it must be 0.

Run (release build of pgha first; asyncpg from the driver venv the tests use):

  cargo build --release -p pgha-cli
  /opt/pgha-test-drivers/venv/bin/python bench/proxy/consistency.py --clients 8,32 --duration 10 --rounds 2

Writes bench/results/consistency-<date>-<HHMM>.json and prints a Markdown
table for docs/BENCHMARKS.md.

Hazards: starts a dev cluster (etcd, three PostgreSQL, agents, the dev
proxy) and one extra `pgha proxy` per mode on free loopback ports; all of it
is stopped by PID in a `finally`.
"""

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import asyncpg  # noqa: E402
from pgcluster import DevCluster, free_port  # noqa: E402
from stats import percentile  # noqa: E402

DB = "bench"
KEYS = 1000
MODES = ["linearizable", "session", "any"]


def parse_args():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pgha-bin", default=os.path.join(root, "target", "release", "pgha"))
    p.add_argument("--clients", default="8,32")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--write-share", type=float, default=0.10)
    p.add_argument("--targets", default="direct," + ",".join("pgha-" + m for m in MODES))
    p.add_argument("--out", default=os.path.join(root, "bench", "results"))
    return p.parse_args()


class ModeProxy:
    """An extra `pgha proxy` following the dev cluster, with one read_consistency."""

    def __init__(self, cluster, mode):
        self.mode = mode
        self.port = free_port()
        text = open(os.path.join(cluster.dir, "proxy.toml")).read()
        text = re.sub(r'^listen_rw = .*$', f'listen_rw = "127.0.0.1:{self.port}"', text, flags=re.M)
        text = re.sub(r'^listen_ro = .*$', 'listen_ro = ""', text, flags=re.M)
        text = re.sub(r'^listen_primary = .*$', 'listen_primary = ""', text, flags=re.M)
        text = text.replace("[topology]", f'read_consistency = "{mode}"\n\n[topology]', 1)
        self.config = os.path.join(cluster.dir, f"proxy-{mode}.toml")
        with open(self.config, "w") as f:
            f.write(text)
        self.log = open(os.path.join(cluster.dir, f"proxy-{mode}.log"), "w")
        self.proc = subprocess.Popen([cluster.bin, "proxy", "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def connect(port, password, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            return await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                         password=password, database=DB)
        except (OSError, asyncpg.PostgresError):
            if time.time() > deadline:
                raise
            await asyncio.sleep(0.2)


def node_commits(cluster):
    out = {}
    for name, port in cluster.member_ports().items():
        out[name] = int(cluster.psql(
            port, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{DB}'"))
    return out


async def run_one(port, password, clients, duration, write_share, seed):
    acked = [0] * KEYS  # highest value any update has acknowledged, per key
    reads, writes, stale = [], [], []
    rng = random.Random(seed)
    conns = []
    for _ in range(clients):
        conns.append((await connect(port, password), await connect(port, password)))
    stop_at = time.perf_counter() + duration

    async def client(reader, writer, seed):
        r = random.Random(seed)
        read = await reader.prepare("SELECT v FROM kv WHERE k = $1")
        write = await writer.prepare("UPDATE kv SET v = v + 1 WHERE k = $1 RETURNING v")
        while time.perf_counter() < stop_at:
            k = r.randrange(KEYS)
            t0 = time.perf_counter()
            if r.random() < write_share:
                v = await write.fetchval(k)
                writes.append(time.perf_counter() - t0)
                acked[k] = max(acked[k], v)
            else:
                floor = acked[k]
                v = await read.fetchval(k)
                reads.append(time.perf_counter() - t0)
                if v < floor:
                    stale.append((k, floor, v))

    started = time.perf_counter()
    await asyncio.gather(*(client(rd, wr, rng.random()) for rd, wr in conns))
    elapsed = time.perf_counter() - started
    for rd, wr in conns:
        await rd.close()
        await wr.close()
    reads.sort()
    writes.sort()
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {
        "ops_per_s": round((len(reads) + len(writes)) / elapsed, 1),
        "reads": len(reads),
        "writes": len(writes),
        "read_p50_ms": ms(percentile(reads, 50)),
        "read_p99_ms": ms(percentile(reads, 99)),
        "write_p50_ms": ms(percentile(writes, 50)),
        "write_p99_ms": ms(percentile(writes, 99)),
        "stale_reads": len(stale),
        "stale_examples": stale[:5],
    }


def main():
    args = parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    targets = args.targets.split(",")
    cluster = DevCluster(args.pgha_bin, members=3)
    proxies = {}
    results = []
    try:
        cluster.up()
        primary = cluster.primary_port()
        cluster.psql(primary, f"CREATE DATABASE {DB}")
        cluster.psql(primary, "CREATE TABLE kv (k int PRIMARY KEY, v bigint NOT NULL); "
                     f"INSERT INTO kv SELECT g, 0 FROM generate_series(0, {KEYS - 1}) g", db=DB)
        for t in targets:
            if t.startswith("pgha-"):
                proxies[t] = ModeProxy(cluster, t[len("pgha-"):])
        for rnd in range(args.rounds):
            for c in clients:
                for t in targets:
                    port = primary if t == "direct" else proxies[t].port
                    before = node_commits(cluster)
                    r = asyncio.run(run_one(port, cluster.admin_password, c, args.duration,
                                            args.write_share, seed=rnd * 1000 + c))
                    after = node_commits(cluster)
                    standby_tx = sum(after[n] - before[n] for n in after if cluster.member_ports()[n] != primary)
                    # Reads are one transaction each; writes run on the primary.
                    r["standby_read_share"] = round(min(1.0, standby_tx / max(1, r["reads"])), 3)
                    r.update(target=t, clients=c, round=rnd)
                    results.append(r)
                    print(json.dumps(r), flush=True)
    finally:
        for p in proxies.values():
            p.stop()
        cluster.down()
    now = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"consistency-{now:%Y-%m-%d-%H%M}.json")
    with open(path, "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    print(f"wrote {path}\n")
    print(render(results))


def render(results):
    rows = ["| target | clients | ops/s | read p50 / p99 ms | write p50 / p99 ms | reads on standbys | stale reads |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["target"], r["clients"]) for r in results}, key=lambda k: (k[1], k[0]))
    for t, c in keys:
        rs = [r for r in results if r["target"] == t and r["clients"] == c]
        med = lambda f: sorted(r[f] for r in rs)[len(rs) // 2]  # noqa: E731
        rows.append(
            f"| {t} | {c} | {med('ops_per_s'):.0f} | {med('read_p50_ms')} / {med('read_p99_ms')} | "
            f"{med('write_p50_ms')} / {med('write_p99_ms')} | "
            f"{100 * med('standby_read_share'):.0f} % | {sum(r['stale_reads'] for r in rs)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
