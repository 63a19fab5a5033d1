#!/usr/bin/env python3
"""Added round-trip time of the null forwarder alone, without PostgreSQL:
a client sends 64 bytes and waits for them to come back from an echo
server, directly and through `pgha-testkit forward` (threads and epoll),
interleaved over rounds. Medians of thousands of round trips are far less
sensitive to a busy machine than pgbench's averages, so this is the
cleanest floor for the "added latency <= 25 us" target: whatever a proxy
does on top, it also pays this.

  python3 bench/proxy/pingpong.py [--testkit-bin target/release/pgha-testkit]
      [--rounds 5] [--trips 3000]

Hazards: the client and the echo server are Python (each round trip costs
them the same with or without a forwarder, so the difference is the
forwarder's); the echo server runs in its own process so the GIL does not
couple it to the client. Everything started is stopped by PID.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def echo_server():
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def round_trips(port, trips, size=64):
    """Round-trip times in µs over one connection."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out, msg = [], b"x" * size
    for _ in range(trips):
        t = time.perf_counter_ns()
        s.sendall(msg)
        n = 0
        while n < size:
            n += len(s.recv(4096))
        out.append((time.perf_counter_ns() - t) / 1000)
    s.close()
    return out


def main():
    if sys.argv[1:] == ["--echo-server"]:
        print(echo_server(), flush=True)
        time.sleep(24 * 3600)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--testkit-bin", default=os.path.join(ROOT, "target", "release", "pgha-testkit"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--trips", type=int, default=3000)
    a = p.parse_args()
    procs = []
    try:
        srv = subprocess.Popen([sys.executable, __file__, "--echo-server"],
                               stdout=subprocess.PIPE, text=True)
        procs.append(srv)
        targets = {"direct": int(srv.stdout.readline())}
        for mode in ("threads", "epoll"):
            f = subprocess.Popen([a.testkit_bin, "forward", "--mode", mode, "--runtimes", "2",
                                  "--upstream", f"127.0.0.1:{targets['direct']}"],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(f)
            targets[f"forward-{mode}"] = int(f.stdout.readline().rsplit(":", 1)[1])
        stats = {k: [] for k in targets}
        for _ in range(a.rounds):
            for name, port in targets.items():
                lat = sorted(round_trips(port, a.trips))
                stats[name].append((statistics.median(lat), statistics.mean(lat),
                                    lat[int(len(lat) * 0.9)]))
        print(f"load average {os.getloadavg()}; {a.rounds} rounds x {a.trips} round trips; "
              "µs, median over rounds")
        base = statistics.median(m for m, _, _ in stats["direct"])
        for name, rows in stats.items():
            med = statistics.median(m for m, _, _ in rows)
            mean = statistics.median(x for _, x, _ in rows)
            print(f"{name:16} median {med:7.1f}  mean {mean:7.1f}"
                  f"  p90 {statistics.median(x for _, _, x in rows):7.1f}  added (median) "
                  f"{med - base:+6.1f}  per-round medians {[round(m, 1) for m, _, _ in rows]}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
