#!/usr/bin/env python3
"""Profile the pgha proxy under pgbench select-only (default `-M prepared
-c 8`): where its CPU per transaction goes.

Three views, each over its own pgbench run against the dev cluster's rw
listener (release build, real speed except under strace):
- `perf record -e cpu-clock` (a software event: this VM has no hardware
  counters) on the proxy process: self time by symbol and by shared object
  (kernel vs pgha vs libc), and a caller view with DWARF unwinding;
- `strace -c` on all proxy threads: system calls per transaction;
- /proc utime and stime before/after: user vs kernel CPU per transaction.

Writes text reports to bench/results/proxy-profile-<date>/ and a summary
JSON there. Hazards: perf needs root (or perf_event_paranoid <= 1); perf's
DWARF call graphs are large, so that run is short and sampled at 500 Hz.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import pgbench  # noqa: E402
import procstat  # noqa: E402
from pgcluster import DevCluster  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import prepare_cluster, USER, DB, log  # noqa: E402


def pgbench_bg(port, password, args, seconds):
    argv = [pgbench.PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-n", "-S",
            "-M", args.mode, "-c", str(args.clients), "-j", str(min(args.clients, 2)),
            "-T", str(seconds), DB]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PGPASSWORD=password))


def transactions(proc):
    out, _ = proc.communicate()
    for line in out.splitlines():
        if line.startswith("number of transactions actually processed"):
            return int(line.split(":")[1])
    raise RuntimeError(f"pgbench failed: {out}")


def perf_run(pid, port, password, args, outdir, name, extra, seconds):
    data = os.path.join(outdir, f"{name}.data")
    bench = pgbench_bg(port, password, args, seconds + 2)
    time.sleep(1)
    subprocess.run(["perf", "record", "-e", "cpu-clock", "-p", str(pid), "-o", data, *extra,
                    "--", "sleep", str(seconds)], capture_output=True, check=True)
    n = transactions(bench)
    return data, n


def perf_reports(data, outdir, name):
    def report(suffix, *opts):
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", *opts],
                             capture_output=True, text=True)
        path = os.path.join(outdir, f"{name}-{suffix}.txt")
        with open(path, "w") as f:
            f.write(out.stdout)
        return path
    return [report("by-dso", "--sort", "dso"),
            report("by-symbol", "--sort", "dso,sym", "--percent-limit", "0.3")]


def strace_run(pid, port, password, args, outdir, seconds):
    tids = os.listdir(f"/proc/{pid}/task")
    bench = pgbench_bg(port, password, args, seconds + 2)
    time.sleep(1)
    argv = ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-o",
            os.path.join(outdir, "strace-c.txt")]
    for t in tids:
        argv += ["-p", t]
    subprocess.run(argv, capture_output=True)
    n = transactions(bench)
    return n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pgha-bin", default=os.path.join(ROOT, "target", "release", "pgha"))
    p.add_argument("--mode", default="prepared")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=int, default=10)
    a = p.parse_args()
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
    outdir = os.path.join(ROOT, "bench", "results", f"proxy-profile-{stamp}")
    os.makedirs(outdir, exist_ok=True)
    summary = {"started": stamp, "mode": a.mode, "clients": a.clients,
               "machine": procstat.machine()}
    cluster = DevCluster(a.pgha_bin)
    try:
        log(f"pgha up in {cluster.dir}")
        cluster.up()
        password, _ = prepare_cluster(cluster, 1)
        _, rw, _, _ = cluster.proxy()
        pid = cluster.proxy_pid()
        pgbench.run(rw, USER, password, DB, "select-only", a.clients, a.mode, 2)  # warm up
        r = pgbench.run(rw, USER, password, DB, "select-only", a.clients, a.mode, a.seconds,
                        [pid])
        summary["plain_run"] = r
        log(f"plain: {r.get('tps')} tps, proxy {r.get('proxy_cpu_us_per_tx')} us/tx "
            f"(user {r.get('proxy_user_us_per_tx')}, sys {r.get('proxy_sys_us_per_tx')})")
        data, n = perf_run(pid, rw, password, a, outdir, "perf-flat", ["-F", "2000"], a.seconds)
        summary["perf_flat_transactions"] = n
        summary["perf_flat_reports"] = [os.path.relpath(x, ROOT)
                                        for x in perf_reports(data, outdir, "perf-flat")]
        os.remove(data)
        data, n = perf_run(pid, rw, password, a, outdir, "perf-graph",
                           ["-F", "500", "--call-graph", "dwarf,8192"], 4)
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--children",
                              "--percent-limit", "2", "--sort", "sym", "-g", "none"],
                             capture_output=True, text=True)
        with open(os.path.join(outdir, "perf-graph-children.txt"), "w") as f:
            f.write(out.stdout)
        os.remove(data)
        n = strace_run(pid, rw, password, a, outdir, a.seconds)
        summary["strace_transactions"] = n
        log(f"strace: {n} transactions")
    finally:
        cluster.down()
        with open(os.path.join(outdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        log(f"wrote {outdir}")


if __name__ == "__main__":
    main()
