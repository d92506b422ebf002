"""psycopg 3 through shardgate (run by tests/integration/drivers.rs).

Usage: python3 psycopg_test.py URL

Several connections in threads, more than the proxy's pool, so every statement psycopg prepares
(automatically after `prepare_threshold` runs, or in pipeline mode, or in executemany) has to follow
its connection from backend to backend. Every check compares exact values; any mismatch raises and
the program exits non-zero. The lines printed are exact and asserted by the Rust test.
"""

import sys
import threading
import traceback

import psycopg
from psycopg import errors, pq

URL = sys.argv[1]
CONNS = 6
AUTO_RUNS = 20
PIPELINE_RUNS = 50
# The auto-prepare runs of all connections start together: on a fast machine a thread could
# otherwise finish its runs before the next one connects and keep one backend throughout.
RUNS_TOGETHER = threading.Barrier(CONNS)


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def in_threads(n, fn):
    """Runs fn(i) for i in range(n) in n threads; re-raises the first failure."""
    results = [None] * n
    failures = []

    def run(i):
        try:
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append((i, e, traceback.format_exc()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        i, e, tb = failures[0]
        sys.stderr.write(f"thread {i} failed:\n{tb}")
        raise e
    return results


def connect(**kw):
    return psycopg.connect(URL, connect_timeout=10, **kw)


def setup():
    with connect(autocommit=True) as conn:
        conn.execute("drop table if exists pg_items, pg_pipe")
        conn.execute("create table pg_items (id int primary key, conn int not null, name text not null)")
        conn.execute("create table pg_pipe (conn int not null, n int not null, primary key (conn, n))")


def autoprepare(i):
    """The default prepare_threshold (5): runs 6.. onwards use a named server-side statement."""
    pids = set()
    with connect(autocommit=True) as conn:
        check("prepare_threshold", conn.prepare_threshold, 5)
        for n in range(AUTO_RUNS):
            RUNS_TOGETHER.wait(timeout=30)
            row = conn.execute(
                "select %s::int * 10 + %s::int, %s::text || '-' || %s::text, pg_backend_pid()",
                (n, i, f"c{i}", n),
            ).fetchone()
            check("autoprepare row", row[:2], (n * 10 + i, f"c{i}-{n}"))
            pids.add(row[2])
        # psycopg keeps one prepared statement for the query (the key is the query and its types).
        prepared = len(conn._prepared._names)
        check("prepared statements", prepared, 1)
        # Explicitly prepared, and a prepared statement with a bytea/array/jsonb round trip.
        for n in range(10):
            row = conn.execute(
                "select %s::bytea, %s::int[], %s::jsonb ->> 'k', pg_backend_pid()",
                (bytes([n, i, 0, 255]), [n, i, None], psycopg.types.json.Jsonb({"k": f"v{n}"})),
                prepare=True,
            ).fetchone()
            check("explicit prepare row", row[:3], (bytes([n, i, 0, 255]), [n, i, None], f"v{n}"))
            pids.add(row[3])
        # psycopg evicts with DEALLOCATE when it has more than prepared_max statements.
        conn.prepared_max = 2
        for n in range(6):
            row = conn.execute(f"select {n} + %s::int", (i,), prepare=True).fetchone()
            check("evicted prepare row", row, (n + i,))
        for n in range(6):
            row = conn.execute(f"select {n} + %s::int", (i,), prepare=True).fetchone()
            check("re-prepared row", row, (n + i,))
        check("prepared after eviction", len(conn._prepared._names), 2)
    return pids


def pipeline(i):
    """Pipeline mode: many statements in flight, with and without an explicit transaction."""
    pids = set()
    with connect(autocommit=True) as conn:
        with conn.pipeline() as p:
            curs = []
            for n in range(PIPELINE_RUNS):
                curs.append(conn.execute("insert into pg_pipe values (%s, %s) returning n * 2", (i, n)))
                if n % 10 == 9:
                    p.sync()
            got = [c.fetchone()[0] for c in curs]
        check("pipeline inserts", got, [n * 2 for n in range(PIPELINE_RUNS)])
        with conn.pipeline():
            curs = [conn.execute("select %s::int + 1, pg_backend_pid()", (n,)) for n in range(PIPELINE_RUNS)]
            rows = [c.fetchone() for c in curs]
        check("pipeline selects", [r[0] for r in rows], [n + 1 for n in range(PIPELINE_RUNS)])
        pids.update(r[1] for r in rows)
    with connect() as conn:  # not autocommit: psycopg puts BEGIN in the pipeline
        for _ in range(5):
            with conn.pipeline():
                a = conn.execute("select count(*) from pg_pipe where conn = %s", (i,))
                b = conn.execute("select pg_backend_pid()")
                c = conn.execute("select pg_backend_pid()")
                count, pid1, pid2 = a.fetchone()[0], b.fetchone()[0], c.fetchone()[0]
            check("pipeline count in transaction", count, PIPELINE_RUNS)
            check("one backend for the transaction", pid1, pid2)
            check("transaction status", conn.info.transaction_status, pq.TransactionStatus.INTRANS)
            conn.commit()
            pids.add(pid1)
        # An error inside a pipeline aborts the rest of the batch up to its Sync.
        try:
            with conn.pipeline():
                conn.execute("select 1")
                conn.execute("select 1 / %s::int", (0,))
                conn.execute("select 2")
            raise AssertionError("division by zero in a pipeline did not fail")
        except errors.DivisionByZero as e:
            check("pipeline error sqlstate", e.sqlstate, "22012")
        conn.rollback()
        check("after pipeline error", conn.execute("select %s::int", (7,)).fetchone(), (7,))
        conn.commit()
    return pids


def executemany(i):
    with connect() as conn:
        with conn.cursor() as cur:
            rows = [(i * 1000 + n, i, f"name-{i}-{n}") for n in range(200 // CONNS + (1 if i < 200 % CONNS else 0))]
            cur.executemany("insert into pg_items (id, conn, name) values (%s, %s, %s)", rows)
            check("executemany rowcount", cur.rowcount, len(rows))
        conn.commit()
        # executemany with returning: results for every row.
        with conn.cursor() as cur:
            cur.executemany(
                "select name from pg_items where id = %s", [(i * 1000 + n,) for n in range(3)], returning=True
            )
            names = []
            while True:
                names.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
            check("executemany returning", names, [f"name-{i}-{n}" for n in range(3)])
        conn.commit()
        return len(rows)


def rollback(i):
    with connect() as conn:
        before = conn.execute("select count(*) from pg_items").fetchone()[0]
        conn.commit()
        conn.execute("insert into pg_items values (%s, %s, 'gone')", (100000 + i, i))
        conn.execute("update pg_items set name = 'changed' where conn = %s", (i,))
        check("inside", conn.execute("select count(*) from pg_items where name = 'changed'").fetchone()[0] > 0, True)
        conn.rollback()
        after = conn.execute("select count(*), count(*) filter (where name = 'changed') from pg_items").fetchone()
        conn.commit()
        check("count after rollback", after, (before, 0))
        # The transaction() block: an exception rolls back.
        try:
            with conn.transaction():
                conn.execute("insert into pg_items values (%s, %s, 'gone')", (200000 + i, i))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        check("after transaction block", conn.execute("select count(*) from pg_items where id = %s", (200000 + i,)).fetchone(), (0,))
        conn.commit()
        return after[0]


def failed_transaction(i):
    with connect() as conn:
        conn.execute("select 1")
        try:
            conn.execute("select 1 / %s::int", (0,))
            raise AssertionError("division by zero did not fail")
        except errors.DivisionByZero as e:
            first = e.sqlstate
        check("status after error", conn.info.transaction_status, pq.TransactionStatus.INERROR)
        try:
            conn.execute("select 2")
            raise AssertionError("statement in a failed transaction did not fail")
        except errors.InFailedSqlTransaction as e:
            second = e.sqlstate
        conn.rollback()
        check("status after rollback", conn.info.transaction_status, pq.TransactionStatus.IDLE)
        check("after rollback", conn.execute("select %s::int", (i,)).fetchone(), (i,))
        conn.commit()
        # A unique violation with the constraint name the server reports.
        try:
            conn.execute("insert into pg_items values (%s, 0, 'dup')", (i * 1000,))
            raise AssertionError("duplicate key did not fail")
        except errors.UniqueViolation as e:
            check("unique violation", (e.sqlstate, e.diag.constraint_name), ("23505", "pg_items_pkey"))
        conn.rollback()
        return (first, second)


def main():
    print(f"psycopg {psycopg.__version__} libpq {pq.version()}")
    setup()
    pids = [set() for _ in range(CONNS)]

    for i, p in enumerate(in_threads(CONNS, autoprepare)):
        pids[i] |= p
    print(f"autoprepare: {CONNS} connections x {AUTO_RUNS} runs ok, 1 prepared statement each")

    for i, p in enumerate(in_threads(CONNS, pipeline)):
        pids[i] |= p
    print(f"pipeline: {CONNS} connections x {PIPELINE_RUNS} statements ok")

    inserted = sum(in_threads(CONNS, executemany))
    check("rows inserted", inserted, 200)
    with connect(autocommit=True) as conn:
        check("count", conn.execute("select count(*), count(distinct conn) from pg_items").fetchone(), (200, CONNS))
    print("executemany: 200 rows")

    counts = in_threads(CONNS, rollback)
    check("counts after rollback", set(counts), {200})
    print("rollback: 200 rows after rollback")

    states = in_threads(CONNS, failed_transaction)
    check("failed transaction sqlstates", set(states), {("22012", "25P02")})
    print("failed transaction: 22012 then 25P02, rollback ok")

    moved = max(len(p) for p in pids)
    print(f"moved: {moved > 1}")
    print("OK")


if __name__ == "__main__":
    main()
