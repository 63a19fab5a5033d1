"""Pull the log lines around one event out of the managers' logs, so a
record shows where the time went (detection, lease expiry, promotion, the
proxy noticing).

Understands pgha's tracing lines (`2026-11-25T21:42:05.306430Z  WARN ...`,
possibly with ANSI colours) and Patroni's (`2026-11-25 21:42:05,306 INFO: ...`,
local time = UTC on this machine). Hazard: reads whole log files; they are
small in a benchmark run.
"""

import datetime
import re

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PGHA_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(.*)$")
PATRONI_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (.*)$")


def parse(line):
    line = ANSI.sub("", line.rstrip("\n"))
    m = PGHA_TS.match(line)
    if m:
        t = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.timezone.utc)
        return t.timestamp(), m.group(2)
    m = PATRONI_TS.match(line)
    if m:
        t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
        return t.timestamp() + int(m.group(2)) / 1000.0, m.group(3)
    return None, line


def timeline(logs, wall_event, wall_ack, before=0.2, after=0.3, limit=40):
    """Lines from [event - before, ack + after] (or event + 10 s when no
    ack), as [seconds since the event, source, text], oldest first."""
    end = (wall_ack if wall_ack is not None else wall_event + 10.0) + after
    out = []
    for source, path in logs:
        try:
            with open(path, errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        for line in lines:
            t, text = parse(line)
            if t is not None and wall_event - before <= t <= end:
                out.append([round(t - wall_event, 3), source, text[:220]])
    out.sort(key=lambda x: x[0])
    if len(out) > limit:
        out = out[: limit // 2] + [[None, "...", f"{len(out) - limit} lines left out"]] + out[-limit // 2:]
    return out
