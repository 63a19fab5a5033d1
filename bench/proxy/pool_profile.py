#!/usr/bin/env python3
"""CPU per transaction of pgha's transaction-mode path (issue 17), in the
two measures that survive a loaded machine:

- callgrind: user-space instructions per transaction of a pgha proxy in
  transaction mode on its `primary` listener (pool_size 50), under
  pgbench `-c 8 -S -M simple`; counts are repeatable whatever else runs,
  and the self cost per function shows where they go;
- /proc: utime+stime per transaction of pgha (transaction mode, primary
  listener) and PgBouncer (transaction mode, same pool size), natively,
  interleaved over `--rounds` rounds, with the load average of each run.

  cargo build --release -p pgha-cli && python3 bench/proxy/pool_profile.py
  python3 bench/proxy/pool_profile.py --pgha-bin /tmp/pgha-before --only callgrind

Writes bench/results/pool-profile-<date>[-label].json (and the callgrind
self-cost report next to it, .txt). Hazards: a dev cluster, PgBouncer and
pgha proxies on free loopback ports, all stopped by PID in a `finally`.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import pgbench  # noqa: E402
import procstat  # noqa: E402
from callgrind import self_costs  # noqa: E402
from pgcluster import DevCluster  # noqa: E402
from poolers import PgBouncer, PghaPooled  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import DB, USER, git_describe, log, prepare_cluster  # noqa: E402

# Logins to PostgreSQL the proxy makes itself (its monitor's tokio-postgres
# connections derive the SCRAM salted password: 4096 SHA-256 rounds), which
# land in the measured window now and then and are not per transaction.
LOGIN_FUNCTIONS = ("sha2::", "postgres_protocol::authentication::", "hmac::", "pbkdf2::")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pgha-bin", default=os.path.join(ROOT, "target", "release", "pgha"))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--script", default="select-only")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pool-size", type=int, default=50)
    p.add_argument("--only", choices=["callgrind", "cpu"])
    p.add_argument("--label", default="")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.out is None:
        stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
        label = f"-{a.label}" if a.label else ""
        a.out = os.path.join(ROOT, "bench", "results", f"pool-profile-{stamp}{label}.json")
    return a


def callgrind(cluster, password, args):
    """pgha in transaction mode under valgrind: instructions per transaction."""
    pooled = PghaPooled(cluster.bin, cluster.dir, pool_size=args.pool_size, listener="primary")
    out = os.path.join(tempfile.mkdtemp(prefix="pgha-pool-callgrind-"), "callgrind.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             cluster.bin, "proxy", "--config", pooled.config],
                            stdout=subprocess.DEVNULL, stderr=open(out + ".log", "w"),
                            env=dict(os.environ, RUST_LOG="warn"))
    try:
        deadline = time.time() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", pooled.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the proxy under valgrind did not start listening")
                time.sleep(1)
        # Warm up until the proxy serves (under valgrind on a loaded machine
        # its monitor may take a while to reach the nodes).
        deadline = time.time() + 180
        while "error" in pgbench.run(pooled.port, USER, password, DB, args.script,
                                     args.clients, "simple", 3):
            if time.time() > deadline:
                raise RuntimeError("the proxy under valgrind does not serve pgbench")
            time.sleep(2)
        zeroed = subprocess.run(["callgrind_control", "-z", str(proc.pid)],
                                capture_output=True).returncode == 0
        r = pgbench.run(pooled.port, USER, password, DB, args.script, args.clients, "simple",
                        args.seconds)
        dumped = subprocess.run(["callgrind_control", "-d", str(proc.pid)],
                                capture_output=True).returncode == 0
    finally:
        procstat.stop(proc, signal.SIGINT, 60)
    dump = out + ".1" if zeroed and dumped and os.path.exists(out + ".1") else out
    n = r.get("transactions") or 0
    costs = self_costs(dump)
    total = sum(v for _, v in costs)
    report = os.path.splitext(args.out)[0] + "-callgrind.txt"
    with open(report, "w") as f:
        f.write(f"# self instructions (Ir) per function; {n} transactions, "
                f"pgbench -c {args.clients} {args.script} -M simple, pgha transaction mode\n")
        for name, v in costs[:70]:
            f.write(f"{v:>14,} {100 * v / max(total, 1):5.1f}% {v / max(n, 1):>9,.0f}/tx  {name}\n")
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    shutil.rmtree(pooled.dir, ignore_errors=True)
    logins = sum(v for name, v in costs if name.startswith(LOGIN_FUNCTIONS))
    return {"transactions": n, "pgbench_error": r.get("error"),
            "zeroed_after_warmup": zeroed and dumped,
            "instructions_per_tx": round(total / n) if n else None,
            "instructions_per_tx_without_logins": round((total - logins) / n) if n else None,
            "report": os.path.relpath(report, ROOT)}


def cpu(cluster, password, verifier, args):
    """Native utime+stime per transaction, pgha-tx (primary) vs PgBouncer."""
    primary = cluster.primary_port()
    daemons = []
    try:
        t = PghaPooled(cluster.bin, cluster.dir, pool_size=args.pool_size,
                       listener="primary").start()
        daemons.append(t)
        b = PgBouncer(primary, DB, USER, verifier, pool_size=args.pool_size).start()
        daemons.append(b)
        targets = {"pgha-tx-primary": t, "pgbouncer": b}
        runs = []
        for rnd in range(args.rounds):
            names = list(targets)
            for name in names[rnd % 2:] + names[:rnd % 2]:
                d = targets[name]
                r = pgbench.run(d.port, USER, password, DB, args.script, args.clients,
                                "simple", args.seconds, d.pids())
                r.update({"round": rnd, "target": name})
                runs.append(r)
                log(f"{name}: {r.get('tps', r.get('error'))} tps, "
                    f"{r.get('proxy_cpu_us_per_tx')} us/tx, load {r['loadavg']}")
        return runs
    finally:
        for d in daemons:
            d.stop()


def main():
    args = parse_args()
    result = {"benchmark": "pool-profile", "started": datetime.datetime.utcnow().isoformat() + "Z",
              "settings": vars(args).copy(), "git": git_describe(),
              "machine": procstat.machine()}
    cluster = DevCluster(args.pgha_bin, parameters={"max_connections": 400})
    try:
        cluster.up()
        password, verifier = prepare_cluster(cluster, 1)
        if args.only in (None, "cpu"):
            result["cpu"] = cpu(cluster, password, verifier, args)
        if args.only in (None, "callgrind"):
            result["callgrind"] = callgrind(cluster, password, args)
            log(f"callgrind: {result['callgrind']}")
    finally:
        cluster.down()
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
