"""psycopg 3 workload through the proxy's rw port (crates/proxy/tests/drivers.rs).

Read-only transactions (conn.read_only, sent as BEGIN READ ONLY), a statement
executed more than five times (psycopg then prepares it server-side), a
read-write transaction, a rolled-back one, reads of its own writes, and a
pipeline. Prints key=value lines. Usage: psycopg_workload.py <conninfo>
"""
import sys

import psycopg

SELECT = "SELECT count(*), coalesce(sum(v), 0), current_setting('pgha_test.port')::int FROM py_items WHERE id > %s"


def out(key, value):
    print(f"{key}={value}", flush=True)


def read_only(conn, label):
    conn.read_only = True
    for _ in range(4):
        with conn.transaction():
            for _ in range(2):
                count, total, port = conn.execute(SELECT, (0,)).fetchone()
        out(f"{label}_port", port)
        out(f"{label}_count", count)
        out(f"{label}_sum", total)
    conn.read_only = False


def main():
    with psycopg.connect(sys.argv[1], autocommit=True, prepare_threshold=5) as conn:
        read_only(conn, "ro")
        with conn.transaction():
            for i in range(1, 8):
                conn.execute("INSERT INTO py_items (id, v) VALUES (%s, %s)", (i, i * 10))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO py_items (id, v) VALUES (%s, %s)",
                    [(i, i * 10) for i in range(8, 11)],
                )
            port = conn.execute(
                "UPDATE py_items SET v = v + 1 WHERE id = 1 RETURNING current_setting('pgha_test.port')::int"
            ).fetchone()[0]
            out("rw_port", port)
        read_only(conn, "ryw")
        try:
            with conn.transaction():
                conn.execute("INSERT INTO py_items (id, v) VALUES (1000, 1)")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        out("rolled_back_count", conn.execute("SELECT count(*) FROM py_items WHERE id = 1000").fetchone()[0])
        total = 0
        for i in range(1, 11):
            total += conn.execute("SELECT v FROM py_items WHERE id = %s", (i,)).fetchone()[0]
        out("autocommit_sum", total)
        with conn.pipeline():
            curs = [conn.execute("SELECT v FROM py_items WHERE id = %s", (i,)) for i in range(1, 11)]
        out("pipeline_sum", sum(c.fetchone()[0] for c in curs))
        # BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        conn.read_only = True
        conn.deferrable = True
        with conn.transaction():
            count, total, port = conn.execute(SELECT, (0,)).fetchone()
        out("ser_port", port)
        out("ser_count", count)
        out("ser_sum", total)
    out("done", "ok")


main()
