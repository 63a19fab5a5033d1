#!/usr/bin/env python3
"""The write client of the HA benchmarks.

Appends unique ids to bench_ha(run, id), one autocommit INSERT (one
transaction) each, through a front end (pgha's proxy rw port or HAProxy in
front of Patroni). Records the send and acknowledgement time of every
acknowledged id and every error; on SIGTERM/SIGINT it stops and writes one
JSON document to --out. Times are time.monotonic() (CLOCK_MONOTONIC, the same
clock in every process of this machine) plus one wall-clock anchor.

Hazards: a commit that hangs (a synchronous standby gone, a hung primary) is
ended by a client-side watchdog that shuts the socket down after --timeout
seconds; the outcome of such a write is unknown and it is NOT counted as
acknowledged. No statement_timeout is used on purpose: cancelling a commit
that waits for synchronous replication makes PostgreSQL report it committed
(with a WARNING), which would count an unreplicated write as acknowledged.
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

import psycopg

STOP = False


def on_signal(_signo, _frame):
    global STOP
    STOP = True


def connect(dsn, timeout):
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout)),
                           prepare_threshold=None)
    return conn


def abort_socket(fd):
    """Shut a connection's socket down from the watchdog thread."""
    try:
        s = socket.socket(fileno=os.dup(fd))
        try:
            s.shutdown(socket.SHUT_RDWR)
        finally:
            s.close()
    except OSError:
        pass


def run(args):
    acks = []       # [id, t_sent, t_ack]
    errors = []     # [t_sent, t_err, id or None, message]
    conn = None
    next_id = 0
    pace = args.pace_ms / 1000.0
    started = time.monotonic()
    wall = time.time()
    while not STOP:
        if args.max_seconds and time.monotonic() - started > args.max_seconds:
            break
        if conn is None:
            t0 = time.monotonic()
            try:
                conn = connect(args.dsn, args.timeout)
            except Exception as e:  # noqa: BLE001 - every failure is data here
                errors.append([t0, time.monotonic(), None, "connect: " + str(e).strip()[:160]])
                if args.progress:
                    sys.stdout.write(f"E {errors[-1][1]:.6f}\n")
                    sys.stdout.flush()
                conn = None
                time.sleep(args.retry_ms / 1000.0)
                continue
        next_id += 1
        t0 = time.monotonic()
        timer = threading.Timer(args.timeout, abort_socket, (conn.pgconn.socket,))
        timer.daemon = True
        timer.start()
        try:
            conn.execute("INSERT INTO bench_ha (run, id) VALUES (%s, %s)", (args.run, next_id))
            t1 = time.monotonic()
            acks.append([next_id, t0, t1])
            if args.progress:
                sys.stdout.write(f"A {next_id} {t0:.6f} {t1:.6f}\n")
                sys.stdout.flush()
        except Exception as e:  # noqa: BLE001
            errors.append([t0, time.monotonic(), next_id, str(e).strip().splitlines()[0][:160]
                           if str(e).strip() else type(e).__name__])
            if args.progress:
                sys.stdout.write(f"E {errors[-1][1]:.6f}\n")
                sys.stdout.flush()
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            conn = None
            time.sleep(args.retry_ms / 1000.0)
            continue
        finally:
            timer.cancel()
        if pace:
            time.sleep(pace)
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    doc = {"run": args.run, "started_mono": started, "started_wall": wall,
           "ended_mono": time.monotonic(), "acks": acks, "errors": errors,
           "last_id": next_id}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, args.out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--run", required=True, help="run tag stored with every id")
    p.add_argument("--out", required=True)
    p.add_argument("--pace-ms", type=float, default=10.0, help="pause after each acknowledged write")
    p.add_argument("--retry-ms", type=float, default=20.0, help="pause after an error")
    p.add_argument("--timeout", type=float, default=5.0, help="client-side bound on one write")
    p.add_argument("--progress", action="store_true", help="print 'A id t_sent t_ack' per acknowledged write, 'E t' per error")
    p.add_argument("--max-seconds", type=float, default=600.0, help="stop by itself after this long")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
