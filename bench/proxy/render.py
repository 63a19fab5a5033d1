#!/usr/bin/env python3
"""Render a proxy benchmark JSON (bench/results/proxy-*.json) as markdown
tables (median with min and max over rounds, ratios to direct and to each
alternative, the issue's targets) and SVG bar charts, and splice them into
docs/BENCHMARKS.md between the proxy-results markers.

Usage: render.py [RESULT.json] [--doc docs/BENCHMARKS.md] [--stdout]
Without RESULT the newest non-quick bench/results/proxy-*.json is used.
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import svgchart  # noqa: E402
from stats import summary  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BEGIN, END = "<!-- proxy-results:begin -->", "<!-- proxy-results:end -->"
TARGET_ORDER = ["pgha", "direct", "pgbouncer", "pgpool", "forward-threads", "forward-epoll"]
LABEL = {"pgha": "pgha rw", "direct": "direct", "pgbouncer": "PgBouncer", "pgpool": "pgpool-II",
         "forward-threads": "null forwarder (threads)", "forward-epoll": "null forwarder (epoll)"}
COLOR = {"pgha": "#1f77b4", "direct": "#7f7f7f", "pgbouncer": "#2ca02c", "pgpool": "#d62728",
         "forward-threads": "#9467bd", "forward-epoll": "#8c564b"}
# The null forwarders (`pgha-testkit forward`): two loopback hops and two
# copies, nothing else, i.e. the floor of any proxy on the machine.
FLOORS = ["forward-threads", "forward-epoll"]
SCRIPT_LABEL = {"select-only": "select-only (`-S`)", "tpcb": "TPC-B-like (default script)"}


def group(runs):
    """(script, clients, mode, target) -> {metric: summary}."""
    cells = {}
    for r in runs:
        key = (r["script"], r["clients"], r["mode"], r["target"])
        cells.setdefault(key, []).append(r)
    out = {}
    for key, rs in cells.items():
        ok = [r for r in rs if "error" not in r]
        out[key] = {m: summary([r.get(m) for r in ok])
                    for m in ("tps", "avg_ms", "p99_ms", "proxy_cpu_us_per_tx",
                              "proxy_user_us_per_tx", "proxy_sys_us_per_tx",
                              "client_cpu_us_per_tx", "machine_busy")}
        out[key]["errors"] = [r["error"] for r in rs if "error" in r]
    return out


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def cell(s, digits=0):
    if not s:
        return "fail"
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def ratio(a, b):
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def rfmt(x):
    return "–" if x is None else f"{x:.2f}×"


def configs(data, script):
    seen = []
    for r in data["runs"]:
        k = (r["clients"], r["mode"])
        if r["script"] == script and k not in seen:
            seen.append(k)
    return seen


def targets_of(data):
    present = {r["target"] for r in data["runs"]}
    return [t for t in TARGET_ORDER if t in present]


def tps_table(data, g, script):
    ts = targets_of(data)
    alts = [t for t in ts if t != "pgha"]
    head = ["`-c`", "`-M`"] + [f"{LABEL[t]} TPS" for t in ts]
    head += [f"pgha / {LABEL[t]}" for t in alts]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for clients, mode in configs(data, script):
        row = [str(clients), mode]
        direct = g.get((script, clients, mode, "direct"), {}).get("tps")
        for t in ts:
            s = g.get((script, clients, mode, t), {}).get("tps")
            text = cell(s)
            if t != "direct" and direct and s:
                text += f" **{rfmt(ratio(s, direct))}**"
            row.append(text)
        pgha = g.get((script, clients, mode, "pgha"), {}).get("tps")
        for t in alts:
            row.append(rfmt(ratio(pgha, g.get((script, clients, mode, t), {}).get("tps"))))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def added_us(g, script, clients, mode, target):
    """Median average latency minus direct's, µs (None if either is missing)."""
    a = g.get((script, clients, mode, target), {}).get("avg_ms")
    d = g.get((script, clients, mode, "direct"), {}).get("avg_ms")
    return (a["median"] - d["median"]) * 1000 if a and d else None


def latency_table(data, g, script):
    ts = targets_of(data)
    proxies = [t for t in ts if t != "direct"]
    head = ["`-c`", "`-M`"] + [f"{LABEL[t]} avg / p99 ms" for t in ts]
    head += [f"{LABEL[t]} added avg µs" for t in proxies]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for clients, mode in configs(data, script):
        row = [str(clients), mode]
        for t in ts:
            c = g.get((script, clients, mode, t), {})
            a, p = c.get("avg_ms"), c.get("p99_ms")
            row.append(f"{fmt(a and a['median'], 3)} / {fmt(p and p['median'], 3)}")
        for t in proxies:
            row.append(fmt(added_us(g, script, clients, mode, t)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cpu_table(data, g, script):
    ts = [t for t in targets_of(data) if t != "direct"]
    head = ["`-c`", "`-M`"] + [f"{LABEL[t]} µs/tx" for t in ts] + ["pgbench µs/tx (via pgha)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for clients, mode in configs(data, script):
        row = [str(clients), mode]
        for t in ts:
            c = g.get((script, clients, mode, t), {})
            text = cell(c.get("proxy_cpu_us_per_tx"), 1)
            u, k = c.get("proxy_user_us_per_tx"), c.get("proxy_sys_us_per_tx")
            if u and k:
                text += f" <br>user {u['median']:.1f} / sys {k['median']:.1f}"
            row.append(text)
        row.append(cell(g.get((script, clients, mode, "pgha"), {}).get("client_cpu_us_per_tx"), 1))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets_check(g, idle):
    """The issue's targets for pgha, with the same figure for each null
    forwarder and PgBouncer next to it: where even the forwarder misses a
    target, no proxy can meet it on this machine."""
    rows = []
    present = {k[3] for k in g}
    others = [t for t in FLOORS + ["pgbouncer"] if t in present]

    def get(script, c, m, t, metric):
        return g.get((script, c, m, t), {}).get(metric)

    def tps_ratio(script, c, m, t):
        return ratio(get(script, c, m, t, "tps"), get(script, c, m, "direct", "tps"))

    def cpu(c, m, t):
        s = get("select-only", c, m, t, "proxy_cpu_us_per_tx")
        return s and s["median"]

    def us(v):
        return "–" if v is None else f"{v:.1f} µs"

    for m in ("simple", "extended", "prepared"):
        r = tps_ratio("select-only", 8, m, "pgha")
        rows.append((f"select-only TPS ≥ 0.55× direct, `-c 8 -M {m}`", rfmt(r),
                     None if r is None else r >= 0.55,
                     [rfmt(tps_ratio("select-only", 8, m, t)) for t in others]))
    for m in ("simple", "extended", "prepared"):
        v = cpu(8, m, "pgha")
        tps = get("select-only", 8, m, "pgha", "tps")
        text = us(v or None)
        if v and tps and idle.get("pgha"):
            # The proxy's background polling, spread over this run's transactions.
            text += f" ({v - idle['pgha'] * 1000 / tps['median']:.1f} µs net of idle polling)"
        rows.append((f"proxy CPU ≤ 15 µs per select-only tx, `-c 8 -M {m}`",
                     text, None if not v else v <= 15, [us(cpu(8, m, t)) for t in others]))
    for m in ("simple", "extended", "prepared"):
        v = added_us(g, "select-only", 1, m, "pgha")
        rows.append((f"added latency ≤ 25 µs, select-only `-c 1 -M {m}`",
                     "–" if v is None else f"{v:.0f} µs", None if v is None else v <= 25,
                     [us(added_us(g, "select-only", 1, m, t)) for t in others]))
    for c in (1, 8, 32):
        for m in ("simple", "extended", "prepared"):
            r = tps_ratio("tpcb", c, m, "pgha")
            if r is not None:
                rows.append((f"TPC-B TPS ≥ 0.8× direct, `-c {c} -M {m}`", rfmt(r), r >= 0.8,
                             [rfmt(tps_ratio("tpcb", c, m, t)) for t in others]))
    head = ["target", "pgha (median)", "met?"] + [LABEL[t] for t in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, val, ok, floor in rows:
        if val == "–" and all(f == "–" for f in floor):
            continue  # a configuration this run did not measure
        cells = [name, val, "–" if ok is None else ("yes" if ok else "**no**")] + floor
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(data):
    mem = data.get("memory") or []
    if not mem:
        return "_not measured in this run_"
    lines = ["| proxy | connections | kind | opened | RSS before → with them (MiB) | MiB per 1,000 "
             "| PostgreSQL backends held | note |",
             "|---|---|---|---|---|---|---|---|"]
    for m in mem:
        kind = "logged in, idle" if m["how"] == "login" else "TCP only, no startup packet"
        if "skipped" in m:
            lines.append(f"| {LABEL[m['target']]} | {m['requested']:,} | {kind} | – | – | – | – "
                         f"| {m['skipped']} |")
            continue
        note = ""
        if m["errors"]:
            note = f"{m['errors']} failed: {m['first_error']}"
        if m.get("alive_after_2s") is not None and m["alive_after_2s"] < m["open"]:
            note += f" only {m['alive_after_2s']} still open after 2 s"
        lines.append(
            f"| {LABEL[m['target']]} | {m['requested']:,} | {kind} | {m['open']:,} | "
            f"{m['rss_base_kib'] / 1024:.1f} → {m['rss_kib'] / 1024:.1f} | "
            f"{fmt(m.get('mib_per_1000'), 2)} | {fmt(m.get('server_backends'), 0)} | "
            f"{note.strip()} |")
    return "\n".join(lines)


def machine_section(data, result_path):
    m = data["machine"]
    loads = [r["loadavg"][0] for r in data["runs"] if "loadavg" in r]
    busy = [r["machine_busy"] for r in data["runs"] if "machine_busy" in r]
    ls = summary(loads) or {"median": 0, "min": 0, "max": 0}
    noisy = ls["median"] > m["nproc"] * 0.5 + 3  # beyond our own ~3-4 busy processes
    s = data["settings"]
    rel = os.path.relpath(result_path, ROOT)
    out = [
        f"Run {data['started']} → {data.get('finished', '?')}, result file `{rel}`.",
        "",
        "| | |", "|---|---|",
        f"| CPU | {m['nproc']} × {m['cpu_model']} |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| OS | {m['os']}, kernel {m['kernel']} |",
        f"| software | {m['postgres']}; {m['pgbouncer']}; {m['pgpool']} |",
        f"| settings | {s['rounds']} rounds × {s['duration']} s per run, scale {s['scale']}, "
        f"clients {s['clients']}, modes {s['modes']} |",
        f"| load average (1 min) after each run | median {ls['median']:.1f}, "
        f"min {ls['min']:.1f}, max {ls['max']:.1f} |",
        f"| machine busy during runs | median {100 * (summary(busy) or {'median': 0})['median']:.0f}% |",
        f"| idle proxy CPU (ms per s, no clients) | "
        + ", ".join(f"{LABEL[k]} {v}" for k, v in data.get("idle_cpu_ms_per_s", {}).items())
        + " |",
    ]
    if data.get("unavailable"):
        out.append(f"| unavailable targets | {data['unavailable']} |")
    if noisy:
        out += ["", f"**Noisy:** the median 1-minute load average was {ls['median']:.1f} on "
                f"{m['nproc']} cores, so other work shared the CPUs with this run. "
                "Ratios measured in the same round are more trustworthy than absolute numbers."]
    return "\n".join(out)


def errors_section(g):
    errs = sorted({(k, e) for k, v in g.items() for e in v["errors"]})
    if not errs:
        return ""
    lines = ["", "Failed runs (pgbench exited non-zero; not in the medians):", ""]
    seen = set()
    for (script, c, m, t), e in errs:
        if (script, c, m, t) in seen:
            continue
        seen.add((script, c, m, t))
        lines.append(f"- {script} `-c {c} -M {m}` {LABEL[t]}: `{e[:160]}`")
    return "\n".join(lines)


def charts(data, g, chart_dir):
    os.makedirs(chart_dir, exist_ok=True)
    made = []
    for script in ("select-only", "tpcb"):
        cfgs = configs(data, script)
        if not cfgs:
            continue
        ts = targets_of(data)
        groups = [f"-c {c} {m}" for c, m in cfgs]
        series = []
        for t in ts:
            vals = []
            for c, m in cfgs:
                s = g.get((script, c, m, t), {}).get("tps")
                vals.append((s["median"], s["min"], s["max"]) if s else None)
            series.append((LABEL[t], vals))
        svg = svgchart.grouped_bars(f"pgbench {script}: TPS (median, whiskers min–max)",
                                    groups, series, "TPS", colors=[COLOR[t] for t in ts])
        path = os.path.join(chart_dir, f"proxy-tps-{script}.svg")
        with open(path, "w") as f:
            f.write(svg)
        made.append((script, path))
    cfgs = configs(data, "select-only")
    proxies = [t for t in targets_of(data) if t != "direct"]
    if cfgs and proxies:
        series = []
        for t in proxies:
            vals = []
            for c, m in cfgs:
                s = g.get(("select-only", c, m, t), {}).get("proxy_cpu_us_per_tx")
                vals.append((s["median"], s["min"], s["max"]) if s else None)
            series.append((LABEL[t], vals))
        svg = svgchart.grouped_bars(
            "Proxy CPU per select-only transaction (µs, median, whiskers min–max)",
            [f"-c {c} {m}" for c, m in cfgs], series, "µs per transaction",
            target=(15, "target 15 µs"), colors=[COLOR[t] for t in proxies],
            scale_to_medians=True)
        path = os.path.join(chart_dir, "proxy-cpu-select-only.svg")
        with open(path, "w") as f:
            f.write(svg)
        made.append(("cpu", path))
    return made


def render(data, result_path, doc_path, with_charts=True):
    g = group(data["runs"])
    parts = [BEGIN, "", "### Machine and run", "", machine_section(data, result_path), "",
             "### Targets", "",
             "pgha against the issue's targets; the null forwarders (`pgha-testkit forward`, "
             "bytes copied, nothing else) show the floor of any proxy on this machine, "
             "PgBouncer a production pooler.", "",
             targets_check(g, data.get("idle_cpu_ms_per_s", {})), ""]
    chart_files = {}
    if with_charts:
        chart_files = dict(charts(data, g, os.path.join(os.path.dirname(doc_path), "benchmarks")))
    for script in ("select-only", "tpcb"):
        if not configs(data, script):
            continue
        parts += [f"### {SCRIPT_LABEL[script]}", ""]
        if script in chart_files:
            rel = os.path.relpath(chart_files[script], os.path.dirname(doc_path))
            parts += [f"![{script} TPS]({rel})", ""]
        parts += ["TPS, median (min–max) over rounds; **bold**: ratio to direct.", "",
                  tps_table(data, g, script), "",
                  "Latency from pgbench's per-transaction logs (median over rounds of each "
                  "round's average and p99):", "", latency_table(data, g, script), "",
                  "CPU per transaction of each proxy's processes (utime+stime from "
                  "/proc, all threads and children), and of pgbench itself:", ""]
        if script == "select-only" and "cpu" in chart_files:
            rel = os.path.relpath(chart_files["cpu"], os.path.dirname(doc_path))
            parts += [f"![proxy CPU per select-only transaction]({rel})", ""]
        parts += [cpu_table(data, g, script), ""]
    parts += ["### Memory with idle client connections", "", memory_table(data), "",
              errors_section(g), "", END]
    return "\n".join(parts)


def newest_result():
    files = [f for f in glob.glob(os.path.join(ROOT, "bench", "results", "proxy-*.json"))
             if "quick" not in f]
    if not files:
        sys.exit("no bench/results/proxy-*.json: run bench/proxy/run.sh first")
    return max(files, key=os.path.getmtime)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("result", nargs="?")
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    p.add_argument("--stdout", action="store_true")
    a = p.parse_args()
    path = a.result or newest_result()
    with open(path) as f:
        data = json.load(f)
    text = render(data, path, a.doc, with_charts=not a.stdout)
    if a.stdout:
        print(text)
        return
    with open(a.doc) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"{a.doc} has no {BEGIN} ... {END} markers")
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(a.doc, "w") as f:
        f.write(head + text + tail)
    print(f"rendered {os.path.relpath(path, ROOT)} into {os.path.relpath(a.doc, ROOT)}")


if __name__ == "__main__":
    main()
