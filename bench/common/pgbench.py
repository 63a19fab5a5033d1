"""One pgbench run with per-transaction logs: TPS, transactions, average
and p99 latency computed from the logs (not pgbench's own summary, which has
no percentiles), plus the CPU the listed proxy processes, the client and the
whole machine spent meanwhile.

Hazards: pgbench exits 2 when a client aborted (e.g. "prepared statement
does not exist" behind a transaction pooler); the run is then recorded with
`error` set and its numbers are not used. The logs of a busy run are a few
MB; they live in a temp dir removed after parsing.
"""

import glob
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time

import procstat
from stats import percentile

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def _latencies_us(log_dir):
    out = []
    for path in glob.glob(os.path.join(log_dir, "tx.*")):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    out.append(int(parts[2]))
    out.sort()
    return out


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(port, user, password, db, script, clients, mode, duration, proxy_pids=(), env=None,
        connect_each=False):
    """Run pgbench once; returns a dict of measurements. `env`: extra
    environment (e.g. PGSSLMODE); `connect_each`: a new connection per
    transaction (pgbench -C)."""
    log_dir = tempfile.mkdtemp(prefix="pgha-bench-log-")
    argv = [PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", user, "-n",
            "-M", mode, "-c", str(clients), "-j", str(min(clients, 2)),
            "-T", str(duration), "--log", f"--log-prefix={log_dir}/tx"]
    if script == "select-only":
        argv.append("-S")
    if connect_each:
        argv.append("-C")
    argv.append(db)
    env = dict(os.environ, PGPASSWORD=password, **(env or {}))
    pids = list(proxy_pids)
    cpu0, client0, sys0 = procstat.cpu_split(pids), _children_cpu(), procstat.system_cpu()
    t0 = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    cpu1, client1, sys1 = procstat.cpu_split(pids), _children_cpu(), procstat.system_cpu()
    lat = _latencies_us(log_dir)
    shutil.rmtree(log_dir, ignore_errors=True)
    res = {"wall_s": round(wall, 2), "loadavg": procstat.loadavg()}
    # -C reports "including reconnection times" instead.
    m = re.search(r"tps = ([0-9.]+) \((without initial connection time|including reconnection times)\)",
                  proc.stdout)
    tx = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
    if proc.returncode != 0 or not m or not tx or not lat:
        lines = proc.stderr.strip().splitlines()
        # The first client error says why; the last line is only "Run was aborted".
        why = [ln for ln in lines if "error" in ln.lower() or "abort" in ln.lower()]
        if not m or not tx:
            why.append("no pgbench summary: " + " | ".join(proc.stdout.strip().splitlines()[-3:]))
        elif not lat:
            why.append(f"no transaction logged ({tx.group(1)} processed)")
        res["error"] = f"exit {proc.returncode}: {(why or lines or ['no output'])[0][:300]}"
        return res
    n = int(tx.group(1))
    busy = (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])
    res.update({
        "tps": float(m.group(1)),
        "transactions": n,
        "avg_ms": sum(lat) / len(lat) / 1000,
        "p99_ms": percentile(lat, 99) / 1000,
        "proxy_cpu_us_per_tx": (sum(cpu1) - sum(cpu0)) * 1e6 / n if pids else None,
        "proxy_user_us_per_tx": (cpu1[0] - cpu0[0]) * 1e6 / n if pids else None,
        "proxy_sys_us_per_tx": (cpu1[1] - cpu0[1]) * 1e6 / n if pids else None,
        "client_cpu_us_per_tx": (client1 - client0) * 1e6 / n,
        "machine_busy": round(busy, 3),
    })
    return res
