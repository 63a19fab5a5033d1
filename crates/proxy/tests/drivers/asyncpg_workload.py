"""asyncpg workload through the proxy's rw port (crates/proxy/tests/drivers.rs).

asyncpg prepares every statement as a named server-side statement and
describes it first; read-only transactions are BEGIN ... READ ONLY.
Prints key=value lines. Usage: asyncpg_workload.py <host> <port> <user> <password>
"""
import asyncio
import sys

import asyncpg

SELECT = "SELECT count(*), coalesce(sum(v), 0), current_setting('pgha_test.port')::int FROM apg_items WHERE id > $1"


def out(key, value):
    print(f"{key}={value}", flush=True)


async def read_only(conn, label):
    stmt = await conn.prepare(SELECT)
    for _ in range(4):
        async with conn.transaction(readonly=True):
            for _ in range(2):
                count, total, port = await stmt.fetchrow(0)
        out(f"{label}_port", port)
        out(f"{label}_count", count)
        out(f"{label}_sum", total)


async def main():
    host, port, user, password = sys.argv[1:5]
    database = sys.argv[5] if len(sys.argv) > 5 else "postgres"
    conn = await asyncpg.connect(
        host=host, port=int(port), user=user, password=password, database=database, ssl=False
    )
    await read_only(conn, "ro")
    async with conn.transaction():
        ins = await conn.prepare("INSERT INTO apg_items (id, v) VALUES ($1, $2)")
        for i in range(1, 8):
            await ins.fetch(i, i * 10)
        await conn.executemany(
            "INSERT INTO apg_items (id, v) VALUES ($1, $2)", [(i, i * 10) for i in range(8, 11)]
        )
        out("rw_port", await conn.fetchval(
            "UPDATE apg_items SET v = v + 1 WHERE id = 1 RETURNING current_setting('pgha_test.port')::int"))
    await read_only(conn, "ryw")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO apg_items (id, v) VALUES (1000, 1)")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    out("rolled_back_count", await conn.fetchval("SELECT count(*) FROM apg_items WHERE id = 1000"))
    total = 0
    for i in range(1, 11):
        total += await conn.fetchval("SELECT v FROM apg_items WHERE id = $1", i)
    out("autocommit_sum", total)
    # BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE
    async with conn.transaction(isolation="serializable", readonly=True, deferrable=True):
        count, total, port = await conn.fetchrow(SELECT, 0)
    out("ser_port", port)
    out("ser_count", count)
    out("ser_sum", total)
    await conn.close()
    out("done", "ok")


asyncio.run(main())
