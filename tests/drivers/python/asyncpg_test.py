"""asyncpg through shardgate (run by tests/integration/drivers.rs).

Usage: python3 asyncpg_test.py URL [PHASE...]

A pool of 8 connections over the proxy's pool of 2: asyncpg's named statements (its statement
cache), explicit `prepare()`, its type introspection, `copy_records_to_table`, `executemany`, and
the unnamed statement it keeps across a Flush. Every check compares exact values; any mismatch
raises and the program exits non-zero. The lines printed are exact and asserted by the Rust test.
With PHASE arguments only those phases run (names as in PHASES below).
"""

import asyncio
import sys

import asyncpg

URL = sys.argv[1]
CONNS = 8
RUNS = 50


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def backend_pids():
    return [set() for _ in range(CONNS)]


async def setup(pool):
    async with pool.acquire() as c:
        await c.execute(
            """
            drop table if exists ap_items, ap_copy;
            drop type if exists ap_mood, ap_pair;
            create type ap_mood as enum ('sad', 'ok', 'happy');
            create type ap_pair as (a int, b text);
            create table ap_items (id int primary key, mood ap_mood not null, tags text[] not null,
                                   pair ap_pair not null);
            create table ap_copy (id int primary key, conn int not null, name text not null,
                                  mood ap_mood not null);
            """
        )


async def cached_statements(pool, pids):
    """fetch/fetchval on all 8 connections at once; each query is a named, cached statement."""

    async def worker(i):
        async with pool.acquire() as c:
            for n in range(RUNS):
                check("fetchval", await c.fetchval("select $1::int * 100 + $2::int", n, i), n * 100 + i)
                rows = await c.fetch(
                    "select g, g * $1::int as x, pg_backend_pid() as pid from generate_series(1, $2::int) g",
                    i,
                    n % 5 + 1,
                )
                check("fetch", [(r["g"], r["x"]) for r in rows], [(g, g * i) for g in range(1, n % 5 + 2)])
                pids[i].add(rows[0]["pid"])
                row = await c.fetchrow("select $1::text || '!' as t, $2::numeric * 2 as d", f"c{i}", n)
                check("fetchrow", tuple(row), (f"c{i}!", n * 2))
            # Both statements stayed cached: asyncpg prepared them once, under its own names.
            check("statement cache size", len(c._con._stmt_cache) >= 3, True)

    await asyncio.gather(*(worker(i) for i in range(CONNS)))


async def explicit_prepare(pool, pids):
    """conn.prepare(): one statement reused across many transactions and outside them."""

    async def worker(i):
        async with pool.acquire() as c:
            stmt = await c.prepare("select $1::int * 3 + $2::int as v, pg_backend_pid() as pid")
            check("parameters", [t.name for t in stmt.get_parameters()], ["int4", "int4"])
            check("attributes", [a.name for a in stmt.get_attributes()], ["v", "pid"])
            for n in range(20):
                async with c.transaction():
                    row = await stmt.fetchrow(n, i)
                    check("prepared in transaction", row["v"], n * 3 + i)
                    check("same backend in a transaction", await c.fetchval("select pg_backend_pid()"), row["pid"])
                pids[i].add(row["pid"])
                check("prepared outside transaction", await stmt.fetchval(n, 0), n * 3)
            # A rolled-back transaction and an error inside one.
            try:
                async with c.transaction():
                    await c.execute("insert into ap_items values ($1, 'ok', '{}', row(0, ''))", 9000 + i)
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            check("rolled back", await c.fetchval("select count(*) from ap_items where id = $1", 9000 + i), 0)
            tr = c.transaction()
            await tr.start()
            try:
                await stmt.fetchval(1 << 30, 1 << 30)
                raise AssertionError("integer overflow did not fail")
            except asyncpg.exceptions.NumericValueOutOfRangeError as e:
                check("overflow sqlstate", e.sqlstate, "22003")
            try:
                await c.fetchval("select 1")
                raise AssertionError("statement in a failed transaction did not fail")
            except asyncpg.exceptions.InFailedSQLTransactionError as e:
                check("failed transaction sqlstate", e.sqlstate, "25P02")
            await tr.rollback()
            check("after rollback", await stmt.fetchval(2, 1), 7)

    await asyncio.gather(*(worker(i) for i in range(CONNS)))


async def introspection(pool, pids):
    """Custom enum, composite and array types: asyncpg looks their OIDs up with its own query."""

    async def worker(i):
        async with pool.acquire() as c:
            rows = []
            for n in range(10):
                await c.execute(
                    "insert into ap_items values ($1, $2, $3, $4)",
                    i * 100 + n,
                    ["sad", "ok", "happy"][n % 3],
                    [f"t{n}", f"c{i}"],
                    (n, f"p{i}"),
                )
            rows = await c.fetch("select id, mood, tags, pair from ap_items where id / 100 = $1 order by id", i)
            check("count", len(rows), 10)
            for n, r in enumerate(rows):
                check(
                    "row",
                    (r["id"], r["mood"], r["tags"], tuple(r["pair"]), r["pair"]["b"]),
                    (i * 100 + n, ["sad", "ok", "happy"][n % 3], [f"t{n}", f"c{i}"], (n, f"p{i}"), f"p{i}"),
                )
            # A parameter of an array of a custom type, and a composite in a WHERE.
            got = await c.fetchval(
                "select count(*) from ap_items where mood = any($1::ap_mood[]) and (pair).b = $2",
                ["sad", "happy"],
                f"p{i}",
            )
            check("enum array parameter", got, 7)
            got = await c.fetchval("select $1::ap_pair", (i, "x"))
            check("composite parameter", tuple(got), (i, "x"))
            pids[i].add(await c.fetchval("select pg_backend_pid()"))

    await asyncio.gather(*(worker(i) for i in range(CONNS)))


async def unnamed_across_flush(url, pids):
    """Statements asyncpg does not cache use the unnamed statement: Parse(""), Describe and a Flush,
    then (when the statement has types the connection has not seen yet) asyncpg's introspection
    query, which ends with a Sync, and only then Bind("")/Execute/Sync. The statement cache skips
    queries longer than max_cacheable_statement_size (15 KiB); every connection here is new, so
    its first sight of ap_mood/ap_pair needs introspection."""
    pad = "/* " + "x" * 16 * 1024 + " */"

    async def worker(i):
        c = await asyncpg.connect(url)
        try:
            for n in range(5):
                # New connection or not, asyncpg caches codecs per connection: reload to look again.
                c._drop_local_statement_cache()
                c._protocol.get_settings().clear_type_cache()
                rows = await c.fetch(
                    "select $1::ap_mood[] as moods, $2::ap_pair as pair, pg_backend_pid() as pid " + pad,
                    ["ok", "sad"],
                    (n, f"u{i}"),
                )
                check("unnamed fetch", (rows[0]["moods"], tuple(rows[0]["pair"])), (["ok", "sad"], (n, f"u{i}")))
                pids[i].add(rows[0]["pid"])
                # Long, with no custom types: Parse("")/Describe/Flush, then Bind("")/Execute/Sync.
                got = await c.fetchval("select $1::int + $2::int " + pad, n, i)
                check("unnamed fetchval", got, n + i)
        finally:
            await c.close()

    await asyncio.gather(*(worker(i) for i in range(CONNS)))


async def no_statement_cache(url, pids):
    """statement_cache_size=0, what asyncpg advises for transaction poolers: unnamed statements,
    re-parsed at every Bind."""

    async def worker(i):
        c = await asyncpg.connect(url, statement_cache_size=0)
        try:
            for n in range(20):
                row = await c.fetchrow(
                    "select $1::ap_mood as m, $2::int * 2 as v, pg_backend_pid() as pid", "happy", n
                )
                check("uncached", (row["m"], row["v"]), ("happy", n * 2))
                pids[i].add(row["pid"])
            stmt = await c.prepare("select $1::int + 1")
            for n in range(5):
                check("uncached prepare", await stmt.fetchval(n), n + 1)
        finally:
            await c.close()

    await asyncio.gather(*(worker(i) for i in range(CONNS)))


async def copy_and_executemany(pool, pids):
    """copy_records_to_table (a named LIMIT 1 statement to learn the columns, then COPY FROM STDIN
    BINARY) and executemany (many Bind/Execute before one Sync)."""

    async def worker(i):
        async with pool.acquire() as c:
            records = [(i * 1000 + n, i, f"n{n}", ["sad", "ok", "happy"][n % 3]) for n in range(100)]
            res = await c.copy_records_to_table("ap_copy", records=records[:50])
            check("copy result", res, "COPY 50")
            await c.executemany("insert into ap_copy values ($1, $2, $3, $4)", records[50:])
            got = await c.fetch("select id, conn, name, mood::text from ap_copy where conn = $1 order by id", i)
            check("copied rows", [tuple(r) for r in got], records)
            # executemany failing half-way inside a transaction: nothing of it stays.
            try:
                async with c.transaction():
                    await c.executemany(
                        "insert into ap_copy values ($1, $2, 'dup', 'ok')", [(i * 1000 + 500, i), (i * 1000, i)]
                    )
                raise AssertionError("duplicate key did not fail")
            except asyncpg.exceptions.UniqueViolationError as e:
                check("unique violation", (e.sqlstate, e.constraint_name), ("23505", "ap_copy_pkey"))
            check("after failed executemany", await c.fetchval("select count(*) from ap_copy where conn = $1", i), 100)
            pids[i].add(await c.fetchval("select pg_backend_pid()"))

    await asyncio.gather(*(worker(i) for i in range(CONNS)))
    async with pool.acquire() as c:
        check("copy total", await c.fetchval("select count(*) from ap_copy"), CONNS * 100)


PHASES = {
    "cached": (cached_statements, f"cached statements: {CONNS} connections x {RUNS} runs ok"),
    "prepare": (explicit_prepare, f"explicit prepare: {CONNS} connections x 20 transactions ok, 22003 then 25P02"),
    "introspection": (introspection, f"introspection: enum, composite and arrays ok on {CONNS} connections"),
    "copy": (copy_and_executemany, f"copy_records_to_table and executemany: {CONNS * 100} rows"),
    "nocache": (no_statement_cache, f"statement_cache_size=0: {CONNS} connections ok"),
    "unnamed": (unnamed_across_flush, f"unnamed statement across a Flush: {CONNS} connections ok"),
}


async def main():
    print(f"asyncpg {asyncpg.__version__}")
    only = sys.argv[2:]
    pool = await asyncpg.create_pool(URL, min_size=CONNS, max_size=CONNS)
    try:
        await setup(pool)
        pids = backend_pids()
        for name, (fn, line) in PHASES.items():
            if only and name not in only:
                continue
            if name in ("unnamed", "nocache"):
                await fn(URL, pids)
            else:
                await fn(pool, pids)
            print(line, flush=True)
        print(f"moved: {max(len(p) for p in pids) > 1}")
    finally:
        await pool.close()
    print("OK")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 150))
