#!/usr/bin/env python3
"""Bar chart of an HA result file: seconds per scenario and variant (median,
whiskers min-max), for docs/BENCHMARKS.md.

    python3 bench/ha/chart.py bench/results/ha-<date>-everything.json docs/benchmarks/ha-recovery.svg
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import svgchart  # noqa: E402

# (scenario, the record's figure, group label)
GROUPS = [
    ("node", "longest_gap_s", "node crash: write gap"),
    ("pg", "longest_gap_s", "PostgreSQL crash: write gap"),
    ("switch", "longest_gap_s", "switchover: write gap"),
    ("stop", "longest_gap_s", "SIGSTOP of the agent: write gap"),
    ("bootstrap", "seconds", "bootstrap until healthy"),
]


LABELS = {"patroni3": "Patroni 3.0.2 (Debian)", "patroni4": "Patroni 4.1.5 (PyPI)"}


def variant_base(v):
    """patroni3-fast and patroni3 (bootstrap) are one series."""
    return v.split("-")[0]


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src) as f:
        records = json.load(f)["records"]
    names = []
    for r in records:
        b = variant_base(r["variant"])
        if b not in names:
            names.append(b)
    series = []
    for name in names:
        vals = []
        for sc, key, _ in GROUPS:
            xs = [r[key] for r in records
                  if r["scenario"] == sc and variant_base(r["variant"]) == name
                  and r.get(key) is not None and "error" not in r]
            vals.append((statistics.median(xs), min(xs), max(xs)) if xs else None)
        series.append((LABELS.get(name, name), vals))
    svg = svgchart.grouped_bars(
        "pgha vs Patroni (its fastest settings): seconds, median, whiskers min-max; lower is better",
        [g[2] for g in GROUPS], series, "seconds")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write(svg)
    print(out)


if __name__ == "__main__":
    main()
