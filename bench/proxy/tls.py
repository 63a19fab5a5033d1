#!/usr/bin/env python3
"""What TLS costs through the pgha proxy: pgbench (select-only and TPC-B)
with client TLS on and off (pgbench's PGSSLMODE=require / disable against
the same proxy, `tls = "allow"`) and backend TLS on and off (two proxies of
one dev cluster: the dev proxy with `backend_tls = "verify-full"` as `pgha
up` writes it, and a second one with `backend_tls = "disable"`), plus direct
to the primary with and without TLS; all targets interleaved per round, the
order rotated each round. Writes one JSON file and prints a Markdown table.

  cargo build --release -p pgha-cli && python3 bench/proxy/tls.py

Hazards: starts a dev cluster with `[tls]` (etcd, three PostgreSQL, agents,
the proxy) and a second proxy on free loopback ports; everything is stopped
by PID in a `finally`. pgbench opens its connections once per run, so the
cost of the TLS handshake of a new connection is not in these numbers;
`--connect` measures it (pgbench -C: a new connection per transaction):

  python3 bench/proxy/tls.py --connect --scripts select-only --clients 1
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
sys.path.insert(0, HERE)

import pgbench  # noqa: E402
import procstat  # noqa: E402
from pgcluster import DevCluster, free_port  # noqa: E402
from poolers import _wait_port  # noqa: E402
from run import prepare_cluster, USER, DB, git_describe  # noqa: E402


class ProxyVariant:
    """A second `pgha proxy` of the dev cluster: its generated proxy.toml
    with its own rw listener and `overrides` (top-level keys) replaced."""

    def __init__(self, pgha_bin, cluster_dir, overrides):
        self.dir = tempfile.mkdtemp(prefix="pgha-bench-tls-")
        self.port = free_port()
        with open(os.path.join(cluster_dir, "proxy.toml")) as f:
            base = f.read()
        drop = {"listen_rw", "listen_ro", "listen_primary", *overrides}
        head, _, rest = base.partition("\n[topology]")
        kept = [ln for ln in head.splitlines()
                if not any(re.match(rf"\s*{k}\s*=", ln) for k in drop)]
        new = [f'listen_rw = "127.0.0.1:{self.port}"', 'listen_ro = ""', 'listen_primary = ""']
        new += [f"{k} = {json.dumps(v)}" for k, v in overrides.items()]
        self.config = os.path.join(self.dir, "proxy.toml")
        with open(self.config, "w") as f:
            f.write("\n".join(new + kept) + "\n\n[topology]" + rest + "\n")
        self.argv = [pgha_bin, "proxy", "--config", self.config]

    def start(self):
        log = os.path.join(self.dir, "proxy.log")
        out = open(log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, self.proc, log)
        return self

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args():
    root = os.path.abspath(os.path.join(HERE, "..", ".."))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pgha-bin", default=os.path.join(root, "target", "release", "pgha"))
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", default="1,8")
    p.add_argument("--scripts", default="select-only,tpcb")
    p.add_argument("--mode", default="simple")
    p.add_argument("--connect", action="store_true",
                   help="a new connection per transaction (pgbench -C): the handshake's cost")
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.out is None:
        stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
        kind = "-connect" if a.connect else ""
        a.out = os.path.join(root, "bench", "results", f"proxy-tls{kind}-{stamp}.json")
    return a


def targets_of(cluster, plain_backend):
    """name -> (port, PGSSLMODE, pids)."""
    _, rw, _, _ = cluster.proxy()
    dev_pid = cluster.proxy_pid()
    primary = cluster.primary_port()
    plain_pid = plain_backend.proc.pid
    return {
        "proxy client-plain backend-plain": (plain_backend.port, "disable", [plain_pid]),
        "proxy client-TLS backend-plain": (plain_backend.port, "require", [plain_pid]),
        "proxy client-plain backend-TLS": (rw, "disable", [dev_pid]),
        "proxy client-TLS backend-TLS": (rw, "require", [dev_pid]),
        "direct plain": (primary, "disable", []),
        "direct TLS": (primary, "require", []),
    }


def throughput(args, targets, password):
    runs = []
    names = list(targets)
    configs = [(s, c) for s in args.scripts.split(",") for c in map(int, args.clients.split(","))]
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for script, clients in configs:
            for name in order:
                port, sslmode, pids = targets[name]
                r = pgbench.run(port, USER, password, DB, script, clients, args.mode,
                                args.duration, pids, env={"PGSSLMODE": sslmode},
                                connect_each=args.connect)
                r.update({"round": rnd, "script": script, "clients": clients, "target": name})
                runs.append(r)
                shown = f"{r['tps']:.0f} tps" if "tps" in r else r["error"]
                log(f"round {rnd} {script} -c {clients} {name}: {shown}")
    return runs


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def table(runs):
    """Medians over the rounds, one row per script, clients and target."""
    groups = {}
    for r in runs:
        if "tps" in r:
            groups.setdefault((r["script"], r["clients"], r["target"]), []).append(r)
    lines = ["| script | clients | target | tps | avg ms | p99 ms | proxy CPU µs/tx | load avg |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for (script, clients, target), rs in groups.items():
        cpu = [r["proxy_cpu_us_per_tx"] for r in rs if r.get("proxy_cpu_us_per_tx") is not None]
        shown_cpu = f"{median(cpu):.1f}" if cpu else "–"
        lines.append(
            f"| {script} | {clients} | {target} | {median([r['tps'] for r in rs]):.0f} | "
            f"{median([r['avg_ms'] for r in rs]):.3f} | {median([r['p99_ms'] for r in rs]):.2f} | "
            f"{shown_cpu} | {median([r['loadavg'][0] for r in rs]):.1f} |")
    return "\n".join(lines)


def main():
    args = parse_args()
    if not os.access(args.pgha_bin, os.X_OK):
        sys.exit(f"{args.pgha_bin} not found: cargo build --release -p pgha-cli")
    result = {"benchmark": "proxy-tls", "started": datetime.datetime.utcnow().isoformat() + "Z",
              "machine": procstat.machine(), "settings": vars(args).copy(), "git": git_describe()}
    cluster = DevCluster(args.pgha_bin, parameters={"max_connections": 300},
                         extra="[tls]\nenabled = true")
    plain = None
    try:
        log(f"pgha up in {cluster.dir}")
        cluster.up()
        password, _ = prepare_cluster(cluster, args.scale)
        plain = ProxyVariant(args.pgha_bin, cluster.dir, {"backend_tls": "disable"}).start()
        targets = targets_of(cluster, plain)
        # A first short run per target: every path works before measuring.
        for name, (port, sslmode, _) in targets.items():
            r = pgbench.run(port, USER, password, DB, "select-only", 1, args.mode, 1,
                            env={"PGSSLMODE": sslmode})
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']}")
        result["runs"] = throughput(args, targets, password)
        result["machine"]["loadavg_at_end"] = procstat.loadavg()
    finally:
        if plain:
            plain.stop()
        cluster.down()
        result["finished"] = datetime.datetime.utcnow().isoformat() + "Z"
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {args.out}")
    print(table(result.get("runs", [])))


if __name__ == "__main__":
    main()
