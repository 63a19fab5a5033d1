"""Medians with min and max per (scenario, variant) from the records of a
run, and the ratio of pgha to each Patroni variant. Hazard: records with an
error are counted and left out of the statistics, never silently dropped.
"""

import statistics

METRICS = ("first_ack_after_s", "resumed_after_s", "longest_gap_s", "failed_tx", "lost", "seconds", "command_s",
           "promoted_after_s")


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3), "n": len(v)}


def summarise(records):
    groups = {}
    for r in records:
        groups.setdefault((r["scenario"], r["variant"]), []).append(r)
    out = {}
    for (sc, variant), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        entry = {"runs": len(rs), "errors": len(rs) - len(ok),
                 "lost_total": sum(r.get("lost", 0) for r in rs),
                 "failed_tx_total": sum(r.get("failed_tx", 0) for r in rs)}
        for m in METRICS:
            s = stats([r.get(m) for r in ok])
            if s:
                entry[m] = s
        out.setdefault(sc, {})[variant] = entry
    for sc, variants in out.items():
        base = variants.get("pgha", {})
        for name, entry in variants.items():
            if name == "pgha":
                continue
            for m in ("resumed_after_s", "first_ack_after_s", "longest_gap_s", "seconds"):
                if m in base and m in entry and entry[m]["median"]:
                    entry.setdefault("pgha_ratio", {})[m] = round(base[m]["median"] / entry[m]["median"], 3)
    return out
