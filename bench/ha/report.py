#!/usr/bin/env python3
"""Markdown tables from one or more result files of bench/ha/run.sh:

    python3 bench/ha/report.py bench/results/ha-<date>-*.json

One table per scenario: per variant the median (min-max) of each number,
runs, errors, lost acknowledged writes, and pgha's ratio to it. Standard
library only.
"""

import json
import sys

NAMES = {"node": "Node crash (manager + PostgreSQL SIGKILLed on the primary): seconds from the kill until writes resumed (the acknowledgement that ends the longest write gap)",
         "pg": "PostgreSQL-only crash (postmaster SIGKILLed, manager alive): seconds from the kill until writes resumed (the acknowledgement that ends the longest write gap)",
         "switch": "Planned switchover under writes",
         "stop": "SIGSTOP of the primary's manager (SIGCONT once another member is primary)",
         "bootstrap": "Bootstrap of a new three-node synchronous cluster until healthy",
         "etcd": "etcd killed for 20 s under writes, then restarted (failsafe mode on and off)",
         "etcd_standby": "etcd killed for 20 s under writes with one standby's manager SIGSTOPped for the outage (failsafe mode on and off)",
         "freeze": "The primary's PostgreSQL frozen (SIGSTOP of the postmaster and its children), thawed after --freeze s: seconds until writes resumed"}
RTO = [("resumed_after_s", "RTO s"), ("longest_gap_s", "longest write gap s")]
COLUMNS = {"node": RTO,
           "pg": RTO,
           "switch": [("longest_gap_s", "longest write gap s"), ("failed_tx", "failed tx"),
                      ("command_s", "command s")],
           "stop": [("promoted_after_s", "promoted after s"), ("longest_gap_s", "longest write gap s"),
                    ("failed_tx", "failed tx")],
           "bootstrap": [("seconds", "until healthy s")],
           "etcd": [("longest_gap_s", "longest write gap s"), ("failed_tx", "failed tx")],
           "etcd_standby": [("longest_gap_s", "longest write gap s"), ("failed_tx", "failed tx")],
           "freeze": RTO + [("failed_tx", "failed tx")]}


def cell(s):
    if not s:
        return "-"
    return f"{s['median']:g} ({s['min']:g}-{s['max']:g})"


def table(sc, variants):
    cols = COLUMNS[sc]
    lost = sc != "bootstrap"
    head = ["variant", *[c[1] + " median (min-max)" for c in cols], "runs", "errors",
            *(["lost acked writes"] if lost else []), "pgha / this (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = variants.get("pgha", {})
    key = cols[0][0]
    for name, e in variants.items():
        ratio = "-"
        if name != "pgha" and key in base and key in e and e[key]["median"]:
            ratio = f"{base[key]['median'] / e[key]['median']:.2f}x"
        row = [name, *[cell(e.get(c[0])) for c in cols], str(e["runs"]), str(e["errors"]),
               *([str(e["lost_total"])] if lost else []), ratio]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def loads(records):
    vals = [x for r in records for x in (r.get("loadavg_before", [None])[0], r.get("loadavg_after", [None])[0])
            if x is not None]
    if not vals:
        return "-"
    vals.sort()
    return f"{vals[len(vals) // 2]:.1f} median, {vals[0]:.1f}-{vals[-1]:.1f}"


def main(paths):
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        m = doc["meta"]
        print(f"### `{m['command']}` ({path.split('/')[-1]})\n")
        print(f"{m['started']} to {m['finished']}; {m['machine']['cpus']} CPUs ({m['machine']['cpu_model']}); "
              f"1-minute load average during the run: {loads(doc['records'])}; pgha {m['versions']['pgha_profile']} "
              f"build of {m['versions']['pgha_commit'][:10]}; {m['versions']['patroni3']}, {m['versions']['patroni4']}.\n")
        for sc, variants in doc["summary"].items():
            print(f"**{NAMES.get(sc, sc)}**\n")
            print(table(sc, variants))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
