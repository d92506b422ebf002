"""A small sharded application with psycopg 3 through shardgate (run by
tests/integration/sharded_app.rs, which also defines the data and the exact lines printed).

Usage: python3 psycopg_sharded.py URL BASE [plain]

With `plain` the URL is an unsharded database (the test's diagnostic rerun): nothing is refused
there, so the refusal steps are skipped.

Users BASE+1 .. BASE+9 with their orders and order_items, sharded by user id; `plans` is a
reference table. Every statement with parameters is a server-side prepared statement
(prepare_threshold=0). Loading and reading back use pipeline mode, so batches for users on
different shards are in flight together. Any mismatch raises and the program exits non-zero.
"""

import sys

import psycopg
from psycopg import errors

URL = sys.argv[1]
BASE = int(sys.argv[2])
PLAIN = sys.argv[3:] == ["plain"]
USERS = 9
PLANS = ["free", "pro", "team"]


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def uid(i):
    return BASE + i


def order(i, k):
    return uid(i) * 10 + k


def items(i):
    """(order, line, sku, qty, price_cents) of user i: two orders of two lines."""
    return [
        (order(i, k), line, f"sku-{k}-{line}", i + line, 100 * k + line)
        for k in (1, 2)
        for line in (1, 2)
    ]


INSERT_USER = "INSERT INTO users (id, name, plan) VALUES (%s, %s, %s)"
INSERT_ORDERS = "INSERT INTO orders (user_id, id, status) VALUES (%(u)s, %(o1)s, 'new'), (%(u)s, %(o2)s, 'new')"
INSERT_ITEMS = (
    "INSERT INTO order_items (user_id, order_id, line, sku, qty, price_cents) VALUES "
    + ", ".join("(%s, %s, %s, %s, %s, %s)" for _ in range(4))
)


def load(conn):
    """One transaction per user, pipelined: BEGIN, three inserts, COMMIT for each user."""
    with conn.pipeline():
        for i in range(1, USERS + 1):
            u = uid(i)
            with conn.transaction():
                conn.execute(INSERT_USER, (u, f"user {u}", PLANS[i % 3]), prepare=True)
                conn.execute(INSERT_ORDERS, {"u": u, "o1": order(i, 1), "o2": order(i, 2)}, prepare=True)
                params = [v for it in items(i) for v in (u, *it)]
                cur = conn.execute(INSERT_ITEMS, params, prepare=True)
    check("items rowcount", cur.rowcount, 4)
    print(f"loaded: {USERS} users, {USERS * 2} orders, {USERS * 4} items")


def read_back(conn):
    """Every user by key in one pipeline, a Sync after each: batches on different shards."""
    sql = "SELECT name, plan, (SELECT count(*) FROM orders WHERE user_id = %(u)s) FROM users WHERE id = %(u)s"
    cursors = []
    with conn.pipeline() as p:
        for i in range(1, USERS + 1):
            cursors.append(conn.cursor().execute(sql, {"u": uid(i)}, prepare=True))
            p.sync()
    for i, cur in zip(range(1, USERS + 1), cursors):
        check(f"user {uid(i)}", cur.fetchall(), [(f"user {uid(i)}", PLANS[i % 3], 2)])
    print(f"read back: {USERS} users by key")


def libpq_pipeline():
    """psycopg's pipeline sync() waits for its results, so for batches really in flight together
    this drives libpq's pipeline mode through psycopg.pq: a named statement, then one
    Sync-terminated batch per user, all sent before any reply is read."""
    from psycopg.pq import ExecStatus

    with psycopg.connect(URL, autocommit=True, connect_timeout=10) as conn:
        pg = conn.pgconn
        pg.enter_pipeline_mode()
        pg.send_prepare(b"by_key", b"SELECT name FROM users WHERE id = $1")
        pg.pipeline_sync()
        for i in range(1, USERS + 1):
            pg.send_query_prepared(b"by_key", [str(uid(i)).encode()])
            pg.pipeline_sync()
        pg.flush()
        check("prepare", pg.get_result().status, ExecStatus.COMMAND_OK)
        check("end of prepare", pg.get_result(), None)
        check("sync", pg.get_result().status, ExecStatus.PIPELINE_SYNC)
        for i in range(1, USERS + 1):
            res = pg.get_result()
            check(f"user {uid(i)} status", (res.status, res.error_message), (ExecStatus.TUPLES_OK, b""))
            check(f"user {uid(i)}", res.get_value(0, 0), f"user {uid(i)}".encode())
            check("end of query", pg.get_result(), None)
            check("sync", pg.get_result().status, ExecStatus.PIPELINE_SYNC)
        pg.exit_pipeline_mode()
    print(f"libpq pipeline: {USERS} batches on three shards in order")


def change(conn):
    deleted = 0
    for i in range(1, USERS + 1):
        cur = conn.execute(
            "UPDATE orders SET status = 'paid' WHERE user_id = %s AND id = %s", (uid(i), order(i, 1)), prepare=True
        )
        check("paid", cur.rowcount, 1)
        if i % 2 == 0:
            cur = conn.execute(
                "DELETE FROM order_items WHERE user_id = %s AND order_id = %s AND line = 2",
                (uid(i), order(i, 2)),
                prepare=True,
            )
            deleted += cur.rowcount
    gone = uid(USERS)
    counts = []
    with conn.transaction():
        for table in ("order_items WHERE user_id", "orders WHERE user_id", "users WHERE id"):
            counts.append(conn.execute(f"DELETE FROM {table} = %s", (gone,), prepare=True).rowcount)
    check("deleted", counts, [4, 2, 1])
    print(
        f"changed: {USERS} orders paid, {deleted} items deleted, user {gone} deleted with 4 items and 2 orders"
    )


def join(conn):
    u = uid(2)
    rows = conn.execute(
        "SELECT o.id, o.status, it.line, it.sku, it.qty FROM users u "
        "JOIN orders o ON o.user_id = u.id "
        "JOIN order_items it ON it.user_id = o.user_id AND it.order_id = o.id "
        "WHERE u.id = %s ORDER BY o.id, it.line",
        (u,),
        prepare=True,
    ).fetchall()
    print(f"join {u}: " + ", ".join("/".join(str(v) for v in r) for r in rows))


def reference(conn):
    rows = conn.execute(
        "SELECT code, price_cents FROM plans WHERE price_cents >= %s ORDER BY code", (0,), prepare=True
    ).fetchall()
    print("plans: " + " ".join(f"{c}={p}" for c, p in rows))
    u = uid(1)
    name, price = conn.execute(
        "SELECT p.name, p.price_cents FROM users u JOIN plans p ON p.code = u.plan WHERE u.id = %s",
        (u,),
        prepare=True,
    ).fetchone()
    print(f"plan of {u}: {name} {price}")


def aggregates(conn):
    n, total = conn.execute(
        "SELECT count(*), sum(qty * price_cents) FROM order_items WHERE qty > %s", (0,), prepare=True
    ).fetchone()
    print(f"items: count={n} sum={total}")
    rows = conn.execute("SELECT plan, count(*) FROM users GROUP BY plan ORDER BY plan", prepare=True).fetchall()
    print("users per plan: " + " ".join(f"{p}={c}" for p, c in rows))
    rows = conn.execute("SELECT id FROM users ORDER BY id DESC LIMIT %s", (3,), prepare=True).fetchall()
    print("last users: " + ",".join(str(r[0]) for r in rows))
    rows = conn.execute(
        "SELECT user_id, sum(qty) FROM order_items GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 3", prepare=True
    ).fetchall()
    print("top buyers: " + ",".join(f"{u}={q}" for u, q in rows))


def refused(conn):
    if PLAIN:
        print("refused: skipped on a plain database")
        return
    no_key = "UPDATE orders SET status = 'void' WHERE status = %s"
    try:
        conn.execute(no_key, ("new",), prepare=True)
        raise AssertionError("an UPDATE without the key was accepted")
    except errors.FeatureNotSupported as e:
        check("sqlstate", e.sqlstate, "0A000")
    status = conn.execute(
        "SELECT status FROM orders WHERE user_id = %s AND id = %s", (uid(1), order(1, 2)), prepare=True
    ).fetchone()[0]
    check("after the refusal", status, "new")
    print("refused: 0A000, connection usable")
    u = uid(1)
    set_plan = "UPDATE users SET plan = 'team' WHERE id = %s"
    codes = []
    conn.autocommit = False
    check("update", conn.execute(set_plan, (u,), prepare=True).rowcount, 1)
    for sql, params in ((no_key, ("paid",)), (set_plan, (u,))):
        try:
            conn.execute(sql, params, prepare=True)
        except psycopg.Error as e:
            codes.append(e.sqlstate)
    conn.rollback()
    conn.autocommit = True
    plan = conn.execute("SELECT plan FROM users WHERE id = %s", (u,), prepare=True).fetchone()[0]
    check("plan after rollback", plan, "pro")
    print(f"refused in a transaction: {codes[0]} then {codes[1]}, rolled back")


def main():
    with psycopg.connect(URL, autocommit=True, prepare_threshold=0, connect_timeout=10) as conn:
        load(conn)
        read_back(conn)
        libpq_pipeline()
        change(conn)
        join(conn)
        reference(conn)
        aggregates(conn)
        # Before refused(): psycopg forgets its prepared statements at a ROLLBACK.
        check("prepared statements", len(conn._prepared._names) > 10, True)
        refused(conn)
    print("OK")


main()
