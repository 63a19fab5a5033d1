#!/usr/bin/env python3
"""A/B of pgha proxy builds (or settings) on one dev cluster: CPU per
transaction, TPS and latency of pgbench select-only through each, interleaved.

    bench/proxy/ab.py --variant before=/tmp/pgha-old --variant after=target/release/pgha \\
        --variant after-1thread=target/release/pgha:session_threads=1 \\
        --clients 1,8 --modes simple,prepared --rounds 3 --seconds 5

The cluster (etcd, three members, its own proxy) is started with the first
variant's binary; every variant then runs as an extra proxy process on the
cluster's proxy.toml with its own rw port (ro/primary listeners off), extra
`key=value` settings added at the top. Runs rotate the variant order each
round. Writes bench/results/proxy-ab-<date>.json and prints a table.
Hazards: all processes are stopped by PID in a `finally`.
"""

import argparse
import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pgbench  # noqa: E402
import procstat  # noqa: E402
from pgcluster import DevCluster, free_port  # noqa: E402
from run import prepare_cluster, USER, DB, log  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def start_proxy(cluster, name, binary, extra):
    port = free_port()
    with open(os.path.join(cluster.dir, "proxy.toml")) as f:
        text = f.read()
    text = re.sub(r'^listen_rw = .*$', f'listen_rw = "127.0.0.1:{port}"', text, flags=re.M)
    text = re.sub(r'^listen_(ro|primary) = .*$', r'listen_\1 = ""', text, flags=re.M)
    text = "".join(f"{k} = {v}\n" for k, v in extra) + text
    conf = os.path.join(cluster.dir, f"proxy-ab-{name}.toml")
    with open(conf, "w") as f:
        f.write(text)
    logf = open(os.path.join(cluster.dir, f"proxy-ab-{name}.log"), "w")
    proc = subprocess.Popen([binary, "proxy", "--config", conf], stdout=logf, stderr=logf,
                            env=dict(os.environ, RUST_LOG="warn"))
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"proxy {name} did not start (see {logf.name})")
            time.sleep(0.2)


def parse_variant(spec):
    name, _, rest = spec.partition("=")
    binary, *settings = rest.split(":")
    extra = [tuple(s.split("=", 1)) for s in settings]
    return name, os.path.abspath(binary), extra


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", action="append", required=True,
                   help="name=BINARY[:key=value...]")
    p.add_argument("--clients", default="1,8")
    p.add_argument("--modes", default="simple,prepared")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--out", help="result JSON (default bench/results/proxy-ab-<date>.json)")
    a = p.parse_args()
    variants = [parse_variant(v) for v in a.variant]
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
    out = a.out or os.path.join(ROOT, "bench", "results", f"proxy-ab-{stamp}.json")
    result = {"started": stamp, "machine": procstat.machine(), "settings": vars(a).copy(),
              "runs": []}
    cluster = DevCluster(variants[0][1])
    procs = {}
    try:
        log(f"pgha up in {cluster.dir}")
        cluster.up()
        password, _ = prepare_cluster(cluster, 1)
        for name, binary, extra in variants:
            procs[name] = start_proxy(cluster, name, binary, extra)
        for name, (proc, port) in procs.items():
            pgbench.run(port, USER, password, DB, "select-only", 2, "simple", 2)  # warm up
        names = list(procs)
        for rnd in range(a.rounds):
            for clients in map(int, a.clients.split(",")):
                for mode in a.modes.split(","):
                    order = names[rnd % len(names):] + names[:rnd % len(names)]
                    for name in order:
                        proc, port = procs[name]
                        r = pgbench.run(port, USER, password, DB, "select-only", clients, mode,
                                        a.seconds, [proc.pid])
                        r.update({"round": rnd, "clients": clients, "mode": mode,
                                  "variant": name})
                        result["runs"].append(r)
                        log(f"{name} -c {clients} -M {mode}: {r.get('tps', r.get('error'))} tps, "
                            f"{r.get('proxy_cpu_us_per_tx') or 0:.1f} us/tx "
                            f"(user {r.get('proxy_user_us_per_tx') or 0:.1f}), "
                            f"avg {r.get('avg_ms') or 0:.3f} ms, load {r['loadavg']}")
    finally:
        for proc, _ in procs.values():
            procstat.stop(proc, signal.SIGTERM, 10)
        cluster.down()
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {out}")
    print("| variant | -c | -M | TPS | proxy µs/tx (user/sys) | avg ms | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(r["variant"], r["clients"], r["mode"]) for r in result["runs"]},
                  key=lambda k: (k[1], k[2], names.index(k[0])))
    for v, c, m in keys:
        rs = [r for r in result["runs"] if (r["variant"], r["clients"], r["mode"]) == (v, c, m)
              and "tps" in r]
        if not rs:
            print(f"| {v} | {c} | {m} | fail | | | |")
            continue
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print(f"| {v} | {c} | {m} | {med('tps'):,.0f} | {med('proxy_cpu_us_per_tx'):.1f} "
              f"({med('proxy_user_us_per_tx'):.1f}/{med('proxy_sys_us_per_tx'):.1f}) | "
              f"{med('avg_ms'):.3f} | {statistics.median(r['loadavg'][0] for r in rs):.2f} |")


if __name__ == "__main__":
    main()
