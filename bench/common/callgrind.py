"""Self (exclusive) instruction counts per function from a callgrind output
file. callgrind_annotate 3.19's exclusive view attributes everything to
`clone` for this binary (no debug info, compressed names), so the file is
read directly: a cost line counts toward the current `fn=` unless it follows
a `calls=` line (then it is the callee's inclusive cost).
Hazard: only the `Ir` event (the first cost column) is read."""

import re

_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


def self_costs(path):
    names, costs = {}, {}
    fn, after_calls = None, False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                m = _NAME.match(line[3:])
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    fn = names.get(m.group(1), m.group(1))
                else:
                    fn = line[3:]
                continue
            if line.startswith(("cfn=", "cfi=", "cfl=", "cob=")):
                if line.startswith("cfn="):
                    m = _NAME.match(line[4:])
                    if m and m.group(2):
                        names[m.group(1)] = m.group(2)
                continue
            if line.startswith("calls="):
                after_calls = True
                continue
            if line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                if after_calls:
                    after_calls = False
                    continue
                if len(parts) >= 2 and fn is not None:
                    costs[fn] = costs.get(fn, 0) + int(parts[1])
    return sorted(costs.items(), key=lambda kv: -kv[1])
