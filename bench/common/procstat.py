"""Process and machine measurements from /proc: CPU time of a process and
its descendants (utime+stime, all threads), resident memory, system-wide
busy time, load average, and a description of the machine.

Hazards: /proc/<pid>/stat's comm field may hold spaces and parentheses, so
fields are read after the last ')'. CPU times are in clock ticks
(SC_CLK_TCK, usually 100/s): a 10 ms resolution, fine for runs of seconds.
"""

import os
import platform
import subprocess

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def children_of(pid):
    """Descendant PIDs of `pid` (pgpool forks one process per child slot)."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parents[int(name)] = int(_stat_fields(name)[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def cpu_split(pids):
    """(utime, stime) of these processes (all their threads), in seconds."""
    user = system = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
            user += int(f[11])  # utime (field 14)
            system += int(f[12])  # stime (field 15)
        except (OSError, ValueError, IndexError):
            pass
    return user / TICK, system / TICK


def cpu_seconds(pids):
    """utime+stime of these processes (all their threads), in seconds."""
    return sum(cpu_split(pids))


def rss_kib(pids):
    """Sum of VmRSS of these processes, KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def system_cpu():
    """(busy, total) jiffies from /proc/stat's cpu line."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return total - idle, total


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])

    def version(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return None

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1048576, 1),
        "kernel": platform.release(),
        "os": _os_release(),
        "postgres": version(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "pgbouncer": version(["pgbouncer", "--version"]),
        "pgpool": version(["pgpool", "--version"]),
        "loadavg_at_start": loadavg(),
    }


def _os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def stop(proc, sig, timeout):
    """Sends `sig` to the child `proc` (a subprocess.Popen we started) and
    waits up to `timeout` seconds, then SIGKILLs it."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
