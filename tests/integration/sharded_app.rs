//! A small sharded application run through shardgate by real drivers — tokio-postgres here,
//! psycopg 3 (`tests/drivers/python/psycopg_sharded.py`) and JDBC
//! (`tests/drivers/java/ShardedApp.java`) — all with server-side prepared statements. Users,
//! orders and order_items are sharded by user id on three shards; `plans` is a reference table.
//!
//! Each driver does the same thing on its own key range ([`Model`]): loads users with their orders
//! and items in one transaction per user, reads them back by key (pipelined where the driver can),
//! updates and deletes by key, joins the three tables for one user, reads and joins the reference
//! table, runs cross-shard aggregates, and has an UPDATE without the key refused with 0A000 (in
//! and out of a transaction, the connection usable afterwards). It prints one exact line per step;
//! the Rust test compares them with what [`Model`] says, then reads every shard directly and
//! requires each user's rows on the shard that owns the user's id, and nowhere else.

use tokio_postgres::Client;

use crate::harness::{connect, db_error, PASSWORD, USER};
use crate::programs::{compile_java, drivers_dir, python, require_python_module, Program};
use crate::shards::{Shards, ShardsOptions};

const SCHEMA: &str = "\
    CREATE TABLE plans (code text PRIMARY KEY, name text NOT NULL, price_cents int NOT NULL);\n\
    CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, plan text NOT NULL);\n\
    CREATE TABLE orders (user_id bigint NOT NULL, id bigint NOT NULL, status text NOT NULL, PRIMARY KEY (user_id, id));\n\
    CREATE TABLE order_items (user_id bigint NOT NULL, order_id bigint NOT NULL, line int NOT NULL, \
        sku text NOT NULL, qty int NOT NULL, price_cents int NOT NULL, PRIMARY KEY (user_id, order_id, line));";

/// Written through shardgate, which sends reference-table writes to every shard.
const PLANS: &str =
    "INSERT INTO plans VALUES ('free', 'Free', 0), ('pro', 'Pro', 900), ('team', 'Team', 2900)";

/// Users per driver; the last one is deleted again.
const USERS: i64 = 9;

/// Three shards, the schema on each, the plans written through the proxy.
async fn shop() -> Shards {
    let shop = Shards::start(
        ShardsOptions::new(3)
            .schema(SCHEMA)
            .table("users", "id")
            .table("orders", "user_id")
            .table("order_items", "user_id")
            .reference_table("plans")
            // The drivers open a few connections each; they may wait for a backend a while.
            .checkout_timeout_ms(30_000),
    )
    .await;
    let c = shop.connect().await;
    assert_eq!(c.execute(PLANS, &[]).await.unwrap(), 3);
    shop
}

/// What the application writes for user `i` (1..=USERS) of a driver whose ids start after `base`,
/// and what every step must print. Every driver implements the same formulas.
struct Model {
    base: i64,
}

struct Item {
    order: i64,
    line: i32,
    sku: String,
    qty: i32,
    price: i32,
}

impl Model {
    fn id(&self, i: i64) -> i64 {
        self.base + i
    }

    fn plan(i: i64) -> &'static str {
        ["free", "pro", "team"][(i % 3) as usize]
    }

    fn order(&self, i: i64, k: i64) -> i64 {
        self.id(i) * 10 + k
    }

    /// The items as inserted: two orders of two lines each.
    fn items(&self, i: i64) -> Vec<Item> {
        let mut items = Vec::new();
        for k in 1..=2 {
            for line in 1..=2 {
                items.push(Item {
                    order: self.order(i, k),
                    line,
                    sku: format!("sku-{k}-{line}"),
                    qty: i as i32 + line,
                    price: 100 * k as i32 + line,
                });
            }
        }
        items
    }

    /// The items left after the application ran: even users lost line 2 of their second order.
    fn items_after(&self, i: i64) -> Vec<Item> {
        let mut items = self.items(i);
        if i % 2 == 0 {
            items.retain(|it| !(it.order == self.order(i, 2) && it.line == 2));
        }
        items
    }

    /// The users left after the application ran.
    fn survivors(&self) -> impl Iterator<Item = i64> {
        1..USERS
    }

    /// The lines every driver prints, in order.
    fn lines(&self) -> Vec<String> {
        let id = |i| self.id(i);
        let items: Vec<Item> = self.survivors().flat_map(|i| self.items_after(i)).collect();
        let sum: i64 = items
            .iter()
            .map(|it| i64::from(it.qty) * i64::from(it.price))
            .sum();
        let per_plan = |p| self.survivors().filter(|&i| Model::plan(i) == p).count();
        let mut buyers: Vec<(i64, i64)> = self
            .survivors()
            .map(|i| {
                let qty = self.items_after(i).iter().map(|it| i64::from(it.qty)).sum();
                (id(i), qty)
            })
            .collect();
        buyers.sort_by_key(|&(u, q)| (-q, u));
        let top: Vec<String> = buyers[..3]
            .iter()
            .map(|(u, q)| format!("{u}={q}"))
            .collect();
        let join: Vec<String> = self
            .items_after(2)
            .iter()
            .map(|it| {
                let status = if it.order == self.order(2, 1) {
                    "paid"
                } else {
                    "new"
                };
                format!("{}/{status}/{}/{}/{}", it.order, it.line, it.sku, it.qty)
            })
            .collect();
        vec![
            format!("loaded: {USERS} users, {} orders, {} items", USERS * 2, USERS * 4),
            format!("read back: {USERS} users by key"),
            format!(
                "changed: {USERS} orders paid, {} items deleted, user {} deleted with 4 items and 2 orders",
                (1..=USERS).filter(|i| i % 2 == 0).count(),
                id(USERS)
            ),
            format!("join {}: {}", id(2), join.join(", ")),
            "plans: free=0 pro=900 team=2900".into(),
            format!("plan of {}: Pro 900", id(1)),
            format!("items: count={} sum={sum}", items.len()),
            format!(
                "users per plan: free={} pro={} team={}",
                per_plan("free"),
                per_plan("pro"),
                per_plan("team")
            ),
            format!("last users: {},{},{}", id(8), id(7), id(6)),
            format!("top buyers: {}", top.join(",")),
            "refused: 0A000, connection usable".into(),
            "refused in a transaction: 0A000 then 25P02, rolled back".into(),
            "OK".into(),
        ]
    }

    /// The rows of each table as `psql` prints them for one shard, in key order.
    fn rows_on(&self, shop: &Shards, shard: usize) -> [String; 3] {
        let (mut users, mut orders, mut items) = (Vec::new(), Vec::new(), Vec::new());
        for i in self
            .survivors()
            .filter(|&i| shop.owner(self.id(i)) == shard)
        {
            let u = self.id(i);
            users.push(format!("{u}|user {u}|{}", Model::plan(i)));
            orders.push(format!("{u}|{}|paid", self.order(i, 1)));
            orders.push(format!("{u}|{}|new", self.order(i, 2)));
            for it in self.items_after(i) {
                items.push(format!(
                    "{u}|{}|{}|{}|{}|{}",
                    it.order, it.line, it.sku, it.qty, it.price
                ));
            }
        }
        [users.join("\n"), orders.join("\n"), items.join("\n")]
    }
}

/// Every user's rows are on the shard that owns the user's id and nowhere else, exactly as the
/// application left them; the plans are on every shard.
fn assert_placement(shop: &Shards, model: &Model) {
    let owners: std::collections::BTreeSet<usize> =
        (1..=USERS).map(|i| shop.owner(model.id(i))).collect();
    assert_eq!(owners.len(), 3, "the key range must cover all three shards");
    for s in 0..3 {
        let got = [
            shop.direct(s, "SELECT id, name, plan FROM users ORDER BY id"),
            shop.direct(s, "SELECT user_id, id, status FROM orders ORDER BY user_id, id"),
            shop.direct(
                s,
                "SELECT user_id, order_id, line, sku, qty, price_cents FROM order_items ORDER BY 1, 2, 3",
            ),
        ];
        assert_eq!(got, model.rows_on(shop, s), "shard s{s}");
        assert_eq!(
            shop.direct(
                s,
                "SELECT string_agg(code || '=' || price_cents, ' ' ORDER BY code) FROM plans"
            ),
            "free=0 pro=900 team=2900",
            "plans on shard s{s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_app_tokio_postgres() {
    let shop = shop().await;
    let model = Model { base: 1000 };
    let c = shop.connect().await;
    let lines = tokio_app::run(&c, &model).await;
    assert_eq!(lines, model.lines());
    assert_placement(&shop, &model);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_app_psycopg3() {
    require_python_module("psycopg", "psycopg[binary]==3.3.9");
    let shop = shop().await;
    let model = Model { base: 2000 };
    let plain = plain_twin(&shop).await;
    let script = drivers_dir().join("python/psycopg_sharded.py");
    let script = script.to_str().unwrap();
    let base = model.base.to_string();
    let arg = |url: &str| vec![script.to_owned(), url.to_owned(), base.clone()];
    let mut direct = arg(&plain);
    direct.push("plain".into());
    Program {
        name: "psycopg-sharded",
        program: &python(),
        cwd: drivers_dir(),
        dir: shop.dir().to_owned(),
        through_proxy: arg(&shop.url()),
        direct,
    }
    .run(&refs(&psycopg_lines(&model)))
    .await;
    assert_placement(&shop, &model);
}

/// psycopg also drives libpq's own pipeline mode, after the read back.
fn psycopg_lines(model: &Model) -> Vec<String> {
    let mut lines = model.lines();
    lines.insert(
        2,
        format!("libpq pipeline: {USERS} batches on three shards in order"),
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_app_jdbc() {
    let shop = shop().await;
    let model = Model { base: 3000 };
    let plain = plain_twin(&shop).await;
    let cp = compile_java(
        drivers_dir().join("java/ShardedApp.java"),
        shop.dir().join("jdbc-classes"),
    )
    .await;
    let base = model.base.to_string();
    let args = |port: u16, db: &str| -> Vec<String> {
        let url = format!("jdbc:postgresql://127.0.0.1:{port}/{db}");
        [&cp, "ShardedApp", &url, USER, PASSWORD, &base]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let mut through_proxy = vec!["-cp".to_owned()];
    through_proxy.extend(args(shop.port(), shop.database()));
    let mut direct = vec!["-cp".to_owned()];
    let plain_db = plain.rsplit('/').next().unwrap().to_owned();
    direct.extend(args(shop.server_port(), &plain_db));
    direct.push("plain".into());
    Program {
        name: "jdbc-sharded",
        program: "java",
        cwd: drivers_dir(),
        dir: shop.dir().to_owned(),
        through_proxy,
        direct,
    }
    .run(&refs(&model.lines()))
    .await;
    assert_placement(&shop, &model);
}

/// An unsharded database with the same schema and plans, for telling a shardgate bug from a
/// broken driver when a program fails.
async fn plain_twin(shop: &Shards) -> String {
    let url = shop.plain_database("plain");
    connect(&url).await.batch_execute(PLANS).await.unwrap();
    url
}

fn refs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

/// The application, written with tokio-postgres: every statement prepared (the extended
/// protocol with named statements), pipelined where the reads are independent.
mod tokio_app {
    use futures_util::future::try_join_all;

    use super::*;

    pub async fn run(c: &Client, m: &Model) -> Vec<String> {
        let mut out = Vec::new();
        out.push(load(c, m).await);
        out.push(read_back(c, m).await);
        out.push(change(c, m).await);
        out.push(join(c, m).await);
        out.extend(reference(c, m).await);
        out.extend(aggregates(c).await);
        out.extend(refused(c, m).await);
        out.push("OK".into());
        out
    }

    /// One transaction per user: the user, two orders and four items (multi-row inserts).
    async fn load(c: &Client, m: &Model) -> String {
        let user = c
            .prepare("INSERT INTO users (id, name, plan) VALUES ($1, $2, $3)")
            .await
            .unwrap();
        let orders = c
            .prepare(
                "INSERT INTO orders (user_id, id, status) VALUES ($1, $2, 'new'), ($1, $3, 'new')",
            )
            .await
            .unwrap();
        let items = c.prepare(&items_insert()).await.unwrap();
        for i in 1..=USERS {
            let u = m.id(i);
            c.batch_execute("BEGIN").await.unwrap();
            let n = c
                .execute(&user, &[&u, &format!("user {u}"), &Model::plan(i)])
                .await
                .unwrap();
            assert_eq!(n, 1);
            let n = c
                .execute(&orders, &[&u, &m.order(i, 1), &m.order(i, 2)])
                .await
                .unwrap();
            assert_eq!(n, 2);
            let its = m.items(i);
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&u];
            for it in &its {
                params.extend([
                    &it.order as &(dyn tokio_postgres::types::ToSql + Sync),
                    &it.line,
                    &it.sku,
                    &it.qty,
                    &it.price,
                ]);
            }
            assert_eq!(c.execute(&items, &params).await.unwrap(), 4);
            c.batch_execute("COMMIT").await.unwrap();
        }
        format!(
            "loaded: {USERS} users, {} orders, {} items",
            USERS * 2,
            USERS * 4
        )
    }

    /// `INSERT INTO order_items … VALUES ($1, $2, …), ($1, $7, …), …`: four rows of one user.
    pub fn items_insert() -> String {
        let rows: Vec<String> = (0..4)
            .map(|r| {
                let p: Vec<String> = (0..5).map(|c| format!("${}", 2 + r * 5 + c)).collect();
                format!("($1, {})", p.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO order_items (user_id, order_id, line, sku, qty, price_cents) VALUES {}",
            rows.join(", ")
        )
    }

    /// Every user by key, pipelined: the reads of users on different shards are in flight at once.
    async fn read_back(c: &Client, m: &Model) -> String {
        let by_key = c
            .prepare("SELECT name, plan, (SELECT count(*) FROM orders WHERE user_id = $1) FROM users WHERE id = $1")
            .await
            .unwrap();
        let ids: Vec<i64> = (1..=USERS).map(|i| m.id(i)).collect();
        let by_key = &by_key;
        let reads = ids
            .iter()
            .map(|u| async move { c.query_one(by_key, &[u]).await });
        let rows = try_join_all(reads).await.unwrap();
        for (i, row) in (1..=USERS).zip(rows) {
            let got: (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            assert_eq!(got, (format!("user {}", m.id(i)), Model::plan(i).into(), 2));
        }
        format!("read back: {USERS} users by key")
    }

    /// Updates and deletes by key; the last user goes entirely, in one transaction.
    async fn change(c: &Client, m: &Model) -> String {
        let pay = c
            .prepare("UPDATE orders SET status = 'paid' WHERE user_id = $1 AND id = $2")
            .await
            .unwrap();
        let drop_line = c
            .prepare("DELETE FROM order_items WHERE user_id = $1 AND order_id = $2 AND line = 2")
            .await
            .unwrap();
        let mut deleted = 0;
        for i in 1..=USERS {
            assert_eq!(
                c.execute(&pay, &[&m.id(i), &m.order(i, 1)]).await.unwrap(),
                1
            );
            if i % 2 == 0 {
                deleted += c
                    .execute(&drop_line, &[&m.id(i), &m.order(i, 2)])
                    .await
                    .unwrap();
            }
        }
        let gone = m.id(USERS);
        c.batch_execute("BEGIN").await.unwrap();
        let mut counts = Vec::new();
        for table in [
            "order_items WHERE user_id",
            "orders WHERE user_id",
            "users WHERE id",
        ] {
            let sql = format!("DELETE FROM {table} = $1");
            counts.push(c.execute(&sql, &[&gone]).await.unwrap());
        }
        c.batch_execute("COMMIT").await.unwrap();
        assert_eq!(counts, [4, 2, 1]);
        format!("changed: {USERS} orders paid, {deleted} items deleted, user {gone} deleted with 4 items and 2 orders")
    }

    /// users ⋈ orders ⋈ order_items for one user.
    async fn join(c: &Client, m: &Model) -> String {
        let u = m.id(2);
        let rows = c
            .query(
                "SELECT o.id, o.status, it.line, it.sku, it.qty FROM users u \
                 JOIN orders o ON o.user_id = u.id \
                 JOIN order_items it ON it.user_id = o.user_id AND it.order_id = o.id \
                 WHERE u.id = $1 ORDER BY o.id, it.line",
                &[&u],
            )
            .await
            .unwrap();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                let (o, s, l, sku, q): (i64, String, i32, String, i32) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                format!("{o}/{s}/{l}/{sku}/{q}")
            })
            .collect();
        format!("join {u}: {}", rows.join(", "))
    }

    /// The reference table alone and joined with a user.
    async fn reference(c: &Client, m: &Model) -> Vec<String> {
        let rows = c
            .query(
                "SELECT code, price_cents FROM plans WHERE price_cents >= $1 ORDER BY code",
                &[&0i32],
            )
            .await
            .unwrap();
        let plans: Vec<String> = rows
            .iter()
            .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, i32>(1)))
            .collect();
        let u = m.id(1);
        let row = c
            .query_one(
                "SELECT p.name, p.price_cents FROM users u JOIN plans p ON p.code = u.plan WHERE u.id = $1",
                &[&u],
            )
            .await
            .unwrap();
        let (name, price): (String, i32) = (row.get(0), row.get(1));
        vec![
            format!("plans: {}", plans.join(" ")),
            format!("plan of {u}: {name} {price}"),
        ]
    }

    /// Reads over every shard, merged by shardgate.
    async fn aggregates(c: &Client) -> Vec<String> {
        let row = c
            .query_one(
                "SELECT count(*), sum(qty * price_cents) FROM order_items WHERE qty > $1",
                &[&0i32],
            )
            .await
            .unwrap();
        let (n, sum): (i64, i64) = (row.get(0), row.get(1));
        let per_plan = c
            .query(
                "SELECT plan, count(*) FROM users GROUP BY plan ORDER BY plan",
                &[],
            )
            .await
            .unwrap();
        let per_plan: Vec<String> = per_plan
            .iter()
            .map(|r| format!("{}={}", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        let last = c
            .query("SELECT id FROM users ORDER BY id DESC LIMIT $1", &[&3i64])
            .await
            .unwrap();
        let last: Vec<String> = last
            .iter()
            .map(|r| r.get::<_, i64>(0).to_string())
            .collect();
        let top = c
            .query(
                "SELECT user_id, sum(qty) FROM order_items GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 3",
                &[],
            )
            .await
            .unwrap();
        let top: Vec<String> = top
            .iter()
            .map(|r| format!("{}={}", r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .collect();
        vec![
            format!("items: count={n} sum={sum}"),
            format!("users per plan: {}", per_plan.join(" ")),
            format!("last users: {}", last.join(",")),
            format!("top buyers: {}", top.join(",")),
        ]
    }

    /// An UPDATE without the key is refused with 0A000; the connection goes on, and inside a
    /// transaction the refusal aborts it as any error would.
    async fn refused(c: &Client, m: &Model) -> Vec<String> {
        let no_key = "UPDATE orders SET status = 'void' WHERE status = $1";
        let err = c.execute(no_key, &[&"new"]).await.unwrap_err();
        assert_eq!(db_error(&err).0, "0A000", "{err:?}");
        let status: String = c
            .query_one(
                "SELECT status FROM orders WHERE user_id = $1 AND id = $2",
                &[&m.id(1), &m.order(1, 2)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "new");
        let u = m.id(1);
        c.batch_execute("BEGIN").await.unwrap();
        let set_plan = "UPDATE users SET plan = 'team' WHERE id = $1";
        assert_eq!(c.execute(set_plan, &[&u]).await.unwrap(), 1);
        let err = c.execute(no_key, &[&"paid"]).await.unwrap_err();
        let first = db_error(&err).0;
        let err = c.execute(set_plan, &[&u]).await.unwrap_err();
        let then = db_error(&err).0;
        c.batch_execute("ROLLBACK").await.unwrap();
        let plan: String = c
            .query_one("SELECT plan FROM users WHERE id = $1", &[&u])
            .await
            .unwrap()
            .get(0);
        assert_eq!(plan, "pro", "the refused transaction was rolled back");
        vec![
            "refused: 0A000, connection usable".into(),
            format!("refused in a transaction: {first} then {then}, rolled back"),
        ]
    }
}
