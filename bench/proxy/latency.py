"""Where a proxy's added latency goes, per statement and per wake-up: the
latency view of bench/proxy/profile.py.

- Per statement: `pgbench -r` (average latency of each statement of the
  script) against direct, pgha, the null forwarders (`pgha-testkit forward`,
  threads and epoll) and PgBouncer, interleaved over rounds; each target's
  added latency per statement is its figure minus direct's in the same
  round. The forwarders copy bytes and do nothing else, so what they add is
  the cost of two loopback hops and a wake-up of the forwarding thread; what
  pgha adds beyond them is its own.
- Wake-ups: `perf sched record` (system-wide) during one run per target,
  then `perf sched latency`: the average delay from a task's wake-up to it
  running, for the proxy's threads, the PostgreSQL processes and pgbench.
  On a VM an idle vCPU first has to be scheduled by the host, which shows
  up here.

Hazards: perf sched needs root (tracepoints); system-wide scheduler traces
of a busy run are tens of MB, so those runs are short and the trace is
deleted after the report. PgBouncer 1.18 cannot run `-M prepared` in
transaction pooling (it is skipped in that mode).
"""

import os
import re
import subprocess
import time

import pgbench
from poolers import Forwarder, PgBouncer

_STATEMENT = re.compile(r"^\s+(-?[\d.]+)\s+(?:\d+\s+)?(\S.*)$")


def pgbench_argv(port, user, db, script, clients, mode, seconds, extra=()):
    argv = [pgbench.PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", user, "-n",
            "-M", mode, "-c", str(clients), "-j", str(min(clients, 2)),
            "-T", str(seconds), *extra]
    if script == "select-only":
        argv.append("-S")
    return argv + [db]


def per_statement(port, user, password, db, script, clients, mode, seconds):
    """pgbench -r: ({statement: avg ms}, tps) or (None, error text)."""
    argv = pgbench_argv(port, user, db, script, clients, mode, seconds, ["-r"])
    p = subprocess.run(argv, capture_output=True, text=True,
                       env=dict(os.environ, PGPASSWORD=password))
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout)
    if p.returncode != 0 or not tps:
        return None, (p.stderr.strip().splitlines() or ["no output"])[0][:200]
    stmts, inside = {}, False
    for line in p.stdout.splitlines():
        if line.startswith("statement latencies"):
            inside = True
            continue
        m = _STATEMENT.match(line) if inside else None
        if m and not m.group(2).startswith("\\"):  # \set lines are client-side
            stmts[m.group(2).strip()] = float(m.group(1))
    return stmts, float(tps.group(1))


def sched_run(port, user, password, db, args, proxy_pid, outdir, label, seconds=4):
    """perf sched latency during a pgbench run: average wake-up delay (ms)
    per group of tasks (the proxy's threads, postgres, pgbench)."""
    data = os.path.join(outdir, f"sched-{label}.data")
    bench = subprocess.Popen(
        pgbench_argv(port, user, db, args.script, args.clients, args.mode, seconds + 2),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PGPASSWORD=password))
    time.sleep(1)
    tids = set(os.listdir(f"/proc/{proxy_pid}/task")) if proxy_pid else set()
    subprocess.run(["perf", "sched", "record", "-o", data, "--", "sleep", str(seconds)],
                   capture_output=True)
    bench.wait()
    # -p: one row per thread; by default threads with the same name (the
    # forwarder's per-connection threads) are merged into one `comm:(N)` row.
    rep = subprocess.run(["perf", "sched", "latency", "-p", "-i", data], capture_output=True,
                         text=True)
    if os.path.exists(data):
        os.remove(data)
    with open(os.path.join(outdir, f"sched-latency-{label}.txt"), "w") as f:
        f.write(rep.stdout)
    groups = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"^\s*(\S.*?):(\S+)\s*\|\s*([\d.]+) ms\s*\|\s*(\d+)\s*\|\s*avg:\s*([\d.]+) ms",
                     line)
        if not m:
            continue
        comm, tid, switches, avg = m.group(1), m.group(2), int(m.group(4)), float(m.group(5))
        if tid in tids:
            key = "proxy"
        elif comm.startswith("postgres"):
            key = "postgres"
        elif comm.startswith("pgbench"):
            key = "pgbench"
        else:
            continue
        g = groups.setdefault(key, [0, 0.0])
        g[0] += switches
        g[1] += avg * switches
    return {k: {"switches": n, "avg_delay_us": round(1000 * s / n, 1) if n else None}
            for k, (n, s) in groups.items()}


def latency_run(cluster, primary, rw, pgha_pid, user, password, verifier, db, args, outdir,
                log):
    """Per-statement latency and wake-up delays of direct, pgha, the null
    forwarders and PgBouncer; writes statements.md and sched-*.txt."""
    daemons, targets = [], {"direct": (primary, None), "pgha": (rw, pgha_pid)}
    try:
        # A missing comparison is logged and left out, not fatal: the
        # profile of pgha itself is still worth having.
        for mode in ("threads", "epoll"):
            if not os.access(args.testkit_bin, os.X_OK):
                log(f"latency: no {args.testkit_bin} (cargo build --release -p pgha-testkit): "
                    "no null forwarder")
                break
            try:
                f = Forwarder(args.testkit_bin, primary, mode).start()
            except (RuntimeError, OSError) as e:
                log(f"latency: forward-{mode} did not start: {e}")
                continue
            daemons.append(f)
            targets[f"forward-{mode}"] = (f.port, f.pid)
        if args.mode != "prepared":
            try:
                b = PgBouncer(primary, db, user, verifier).start()
                daemons.append(b)
                targets["pgbouncer"] = (b.port, b.pid)
            except (RuntimeError, OSError) as e:
                log(f"latency: PgBouncer did not start: {e}")
        rounds = []
        for rnd in range(args.latency_rounds):
            names = list(targets)
            names = names[rnd % len(names):] + names[:rnd % len(names)]
            res = {}
            for name in names:
                port, _ = targets[name]
                res[name] = per_statement(port, user, password, db, args.script, args.clients,
                                          args.mode, args.seconds)
                log(f"latency round {rnd} {name}: {res[name][1]}")
            rounds.append(res)
        sched = {}
        for name, (port, pid) in targets.items():
            sched[name] = sched_run(port, user, password, db, args, pid, outdir, name)
            log(f"sched {name}: {sched[name]}")
    finally:
        for d in daemons:
            d.stop()
    summary = summarize(rounds, list(targets))
    summary["sched"] = sched
    with open(os.path.join(outdir, "statements.md"), "w") as f:
        f.write(render(summary, args))
    return summary


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def summarize(rounds, names):
    """Median over rounds of each statement's latency and of the added
    latency (target minus direct in the same round), µs."""
    stmts = []
    for r in rounds:
        for s in (r.get("direct") or ({},))[0] or {}:
            if s not in stmts:
                stmts.append(s)
    out = {"statements": stmts, "targets": {}}
    for name in names:
        per, added, tps = {}, {}, []
        for s in stmts:
            vals, adds = [], []
            for r in rounds:
                got, d = r.get(name, (None, None)), r.get("direct", (None, None))
                if got[0] and s in got[0]:
                    vals.append(got[0][s] * 1000)
                    if d[0] and s in d[0]:
                        adds.append((got[0][s] - d[0][s]) * 1000)
            per[s], added[s] = _median(vals), _median(adds)
        for r in rounds:
            got = r.get(name, (None, None))
            if got[0] is not None:
                tps.append(got[1])
        errors = [r[name][1] for r in rounds if name in r and r[name][0] is None]
        total = [v for v in added.values() if v is not None]
        out["targets"][name] = {"us": per, "added_us": added, "tps": _median(tps),
                                "added_us_per_tx": round(sum(total), 1) if total else None,
                                "errors": errors}
    return out


def render(summary, args):
    names = list(summary["targets"])
    lines = [f"# Per-statement latency, pgbench {args.script} -M {args.mode} -c {args.clients}, "
             f"{args.latency_rounds} rounds x {args.seconds} s (median; µs)", "",
             "Each cell: average latency of the statement (pgbench -r), and in brackets "
             "what the target adds to direct in the same round.", "",
             "| statement | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for s in summary["statements"]:
        row = [f"`{s[:60]}`"]
        for n in names:
            t = summary["targets"][n]
            v, a = t["us"].get(s), t["added_us"].get(s)
            row.append("–" if v is None else
                       (f"{v:.0f}" if n == "direct" else f"{v:.0f} (+{a:.0f})" if a is not None
                        else f"{v:.0f}"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| **added per transaction** | " + " | ".join(
        "–" if summary["targets"][n]["added_us_per_tx"] is None or n == "direct"
        else f"{summary['targets'][n]['added_us_per_tx']:.0f}" for n in names) + " |")
    lines.append("| TPS | " + " | ".join(
        "–" if summary["targets"][n]["tps"] is None else f"{summary['targets'][n]['tps']:.0f}"
        for n in names) + " |")
    lines += ["", "Wake-up delay (perf sched latency: wake-up to running, average over "
              "all switches of the group, µs; one run per target):", "",
              "| target | proxy threads | postgres | pgbench |", "|---|---|---|---|"]
    for n, g in summary.get("sched", {}).items():
        cells = []
        for k in ("proxy", "postgres", "pgbench"):
            v = g.get(k)
            cells.append("–" if not v or v["avg_delay_us"] is None else
                         f"{v['avg_delay_us']:.0f} ({v['switches']:,} switches)")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    for n in names:
        if summary["targets"][n]["errors"]:
            lines.append(f"\n{n} failed: {summary['targets'][n]['errors'][0]}")
    return "\n".join(lines) + "\n"
