#!/usr/bin/env python3
"""Profile the pgha proxy under pgbench select-only or the TPC-B-like
default script (`--script tpcb`; default `-M prepared -c 8`): where its CPU
per transaction goes, and where its added latency goes.

Three views, each over its own pgbench run against the dev cluster's rw
listener (release build, real speed except under strace):
- `perf record -e cpu-clock` (a software event: this VM has no hardware
  counters) on the proxy process: self time by symbol and by shared object
  (kernel vs pgha vs libc), and a caller view with DWARF unwinding;
- `strace -c` on all proxy threads: system calls per transaction;
- /proc utime and stime before/after: user vs kernel CPU per transaction;
- callgrind on a second proxy: user-space instructions per transaction;
- latency (bench/proxy/latency.py): per-statement latency (pgbench -r) of
  direct, pgha, the null forwarders and PgBouncer, and wake-up delays
  (perf sched latency) per target.

Per-statement figures divide by the statements of a transaction: 1 for
select-only, 7 for TPC-B (BEGIN, 3 UPDATE, SELECT, INSERT, END).

Writes text reports to bench/results/proxy-profile-<date>/ and a summary
JSON there. Hazards: perf needs root (or perf_event_paranoid <= 1); perf's
DWARF call graphs are large, so that run is short and sampled at 500 Hz.
"""

import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import pgbench  # noqa: E402
import procstat  # noqa: E402
from callgrind import self_costs  # noqa: E402
from pgcluster import DevCluster  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import prepare_cluster, USER, DB, log  # noqa: E402
import latency  # noqa: E402

STATEMENTS = {"select-only": 1, "tpcb": 7}


def pgbench_bg(port, password, args, seconds):
    argv = latency.pgbench_argv(port, USER, DB, args.script, args.clients, args.mode, seconds)
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


# The outermost function of a session's future, in the order the proxy has
# had them: since sessions run on session threads the future is the closure
# spawned by `Workers::spawn`, with `session::serve`'s own future inlined
# into it (only `serve::{{closure}}::{{closure}}` is left); without session
# threads it is `serve::{{closure}}`. They nest, so the largest inclusive
# cost among those present is the whole session.
SESSION_FUNCTIONS = (
    "pgha_proxy::server::Workers::spawn::{{closure}}",
    "pgha_proxy::session::serve::{{closure}}",
    "pgha_proxy::session::serve::{{closure}}::{{closure}}",
)


def session_cost(incl):
    """(function name, inclusive instructions) of the session future; (None, 0)
    when no known name is in the profile (renamed: update SESSION_FUNCTIONS)."""
    found = [(incl[f], f) for f in SESSION_FUNCTIONS if f in incl]
    if not found:
        return None, 0
    cost, name = max(found)
    return name, cost


def callgrind_run(cluster, password, args, outdir):
    """A second proxy (same proxy.toml, its own rw port) under callgrind:
    instructions per transaction in user space, independent of machine load."""
    from pgcluster import free_port
    import re
    import signal
    import socket
    port = free_port()
    with open(os.path.join(cluster.dir, "proxy.toml")) as f:
        text = f.read()
    text = re.sub(r'^listen_rw = .*$', f'listen_rw = "127.0.0.1:{port}"', text, flags=re.M)
    text = re.sub(r'^listen_(ro|primary) = .*$', r'listen_\1 = ""', text, flags=re.M)
    conf = os.path.join(cluster.dir, "proxy-callgrind.toml")
    with open(conf, "w") as f:
        f.write(text)
    out = os.path.join(outdir, "callgrind.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             cluster.bin, "proxy", "--config", conf],
                            stdout=subprocess.DEVNULL, stderr=open(out + ".log", "w"),
                            env=dict(os.environ, RUST_LOG="warn"))
    try:
        deadline = time.time() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the proxy under valgrind did not start listening")
                time.sleep(1)
        pgbench.run(port, USER, password, DB, args.script, args.clients, args.mode, 3)
        zeroed = subprocess.run(["callgrind_control", "-z", str(proc.pid)],
                                capture_output=True).returncode == 0
        r = pgbench.run(port, USER, password, DB, args.script, args.clients, args.mode,
                        args.seconds)
        dumped = subprocess.run(["callgrind_control", "-d", str(proc.pid)],
                                capture_output=True).returncode == 0
    finally:
        procstat.stop(proc, signal.SIGINT, 60)
    files = sorted(glob.glob(out + "*"), key=os.path.getmtime)
    dump = out + ".1" if zeroed and dumped and os.path.exists(out + ".1") else out
    res = {"transactions": r.get("transactions"), "tps_under_valgrind": r.get("tps"),
           "pgbench_error": r.get("error"),
           "zeroed_after_warmup": zeroed and dumped, "dump": os.path.relpath(dump, ROOT),
           "files": [os.path.relpath(f, ROOT) for f in files]}
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", dump],
                         capture_output=True, text=True)
    with open(os.path.join(outdir, "callgrind-inclusive.txt"), "w") as f:
        f.write(ann.stdout)
    n = r.get("transactions") or 0
    incl = {}
    for line in ann.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(.*) \[", line)
        if m:
            incl.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    session_fn, serve = session_cost(incl)
    login = incl.get("pgha_proxy::session::startup::start::{{closure}}", 0)
    res["session_function"] = session_fn
    # 0 when the login was inlined into the session future: then the
    # session figure includes the logins of this run (one per connection).
    res["login_subtracted"] = login > 0
    if n:
        # The per-transaction path: sessions minus their logins (which
        # happen once per connection and, under valgrind, include reconnects).
        res["session_instructions_per_tx"] = round((serve - login) / n)
        res["session_instructions_per_statement"] = round(
            (serve - login) / n / STATEMENTS[args.script])
        res["all_instructions_per_tx"] = round(sum(v for _, v in self_costs(dump)) / n)
    costs = self_costs(dump)
    total = sum(v for _, v in costs) or 1
    with open(os.path.join(outdir, "callgrind-self.txt"), "w") as f:
        f.write(f"# self instructions (Ir) per function; {n} transactions\n")
        for name, v in costs[:80]:
            f.write(f"{v:>14,} {100 * v / total:5.1f}% {v / max(n, 1):>9,.0f}/tx  {name}\n")
    return res  # the raw callgrind.out* files are git-ignored (bench/.gitignore)


def unique_dir(path):
    """Create `path`, or `path-2`, `path-3`...: two profiles started in the
    same minute (several engineers share this checkout) must not mix files."""
    for i in range(1, 100):
        candidate = path if i == 1 else f"{path}-{i}"
        try:
            os.makedirs(candidate)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"no free directory name for {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pgha-bin", default=os.path.join(ROOT, "target", "release", "pgha"))
    p.add_argument("--testkit-bin",
                   default=os.path.join(ROOT, "target", "release", "pgha-testkit"),
                   help="pgha-testkit binary (the null forwarder of the latency view)")
    p.add_argument("--script", choices=sorted(STATEMENTS), default="select-only")
    p.add_argument("--mode", default="prepared")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--latency-rounds", type=int, default=3)
    p.add_argument("--only", choices=["perf", "callgrind", "latency"],
                   help="run one view only")
    a = p.parse_args()
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M")
    outdir = unique_dir(os.path.join(ROOT, "bench", "results", f"proxy-profile-{stamp}"))
    summary = {"started": stamp, "script": a.script, "mode": a.mode, "clients": a.clients,
               "machine": procstat.machine()}
    cluster = DevCluster(a.pgha_bin)
    try:
        log(f"pgha up in {cluster.dir}")
        cluster.up()
        password, verifier = prepare_cluster(cluster, 1)
        _, rw, _, _ = cluster.proxy()
        pid = cluster.proxy_pid()
        pgbench.run(rw, USER, password, DB, a.script, a.clients, a.mode, 2)  # warm up
        r = pgbench.run(rw, USER, password, DB, a.script, a.clients, a.mode, a.seconds,
                        [pid])
        if r.get("proxy_cpu_us_per_tx"):
            r["proxy_cpu_us_per_statement"] = r["proxy_cpu_us_per_tx"] / STATEMENTS[a.script]
        summary["plain_run"] = r
        log(f"plain: {r.get('tps')} tps, proxy {r.get('proxy_cpu_us_per_tx')} us/tx "
            f"(user {r.get('proxy_user_us_per_tx')}, sys {r.get('proxy_sys_us_per_tx')})")
        if a.only in (None, "latency"):
            summary["latency"] = latency.latency_run(
                cluster, cluster.primary_port(), rw, pid, USER, password, verifier, DB, a,
                outdir, log)
        if a.only == "latency":
            return
        if a.only != "perf":
            summary["callgrind"] = callgrind_run(cluster, password, a, outdir)
            log(f"callgrind: {summary['callgrind']}")
        if a.only == "callgrind":
            return
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
