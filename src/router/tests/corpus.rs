//! Every statement of the SQL corpus (tests/corpus, see its README) planned and resolved: no
//! panic, statements the parser rejects take the fail-closed path, nothing that touches a
//! sharded table is sent "anywhere", and a handful of entries have exactly the plan expected.

use std::collections::BTreeMap;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::support::*;
use crate::router::lex::statements;
use crate::router::{Plan, RouteError, Router, Target};

/// The tables the corpus uses. Sharded: the user-keyed tables of the application shape
/// (`users` by `id`; `orders`, `events`, `sessions`, `order_items` by `user_id`), an
/// account-keyed ledger (`accounts` by `id`, `transfers` by `account_id`), and pgbench's
/// accounts and history by `aid`. Reference tables (copied to every shard): `countries`,
/// `plans`, pgbench's branches and tellers. Everything else (Django's and SQLAlchemy's tables,
/// `docs`, `posts`, `jobs`, `queue`, `smoke`, Prisma's quoted `"User"`, …) lives on the default
/// shard.
const CORPUS_CONFIG: &str = r#"
    shards:
      s0: { primary: "postgres://u:p@127.0.0.1:1/app" }
      s1: { primary: "postgres://u:p@127.0.0.1:2/app" }
      s2: { primary: "postgres://u:p@127.0.0.1:3/app" }
    sharding:
      key_type: bigint
      function: hash
      buckets: 1024
      map:
        - { buckets: 0-340, shard: s0 }
        - { buckets: 341-681, shard: s1 }
        - { buckets: 682-1023, shard: s2 }
    tables:
      users: id
      orders: user_id
      order_items: user_id
      events: user_id
      sessions: user_id
      accounts: id
      transfers: account_id
      pgbench_accounts: aid
      pgbench_history: aid
    reference_tables: [countries, plans, pgbench_branches, pgbench_tellers]
    default_shard: s0
"#;

struct Entry {
    file: &'static str,
    name: String,
    sql: String,
}

/// Splits a corpus file at its `-- @@ NAME: summary` lines (NAME is the whole line when it has
/// no `: `).
fn entries(file: &'static str, text: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("-- @@ ") {
            let name = header.split_once(": ").map_or(header, |(n, _)| n);
            out.push(Entry {
                file,
                name: name.to_string(),
                sql: String::new(),
            });
        } else if let Some(e) = out.last_mut() {
            e.sql.push_str(line);
            e.sql.push('\n');
        }
    }
    for e in &mut out {
        e.sql = e.sql.trim().to_string();
    }
    out
}

fn corpus() -> Vec<Entry> {
    let mut all = entries(
        "observed",
        include_str!("../../../tests/corpus/observed.sql"),
    );
    all.extend(entries(
        "handwritten",
        include_str!("../../../tests/corpus/handwritten.sql"),
    ));
    all
}

/// A plausible Bind for a corpus statement: text "1" for every `$n` it uses, `{1}` where the
/// statement compares with `= ANY($n)`.
fn params_for(sql: &str) -> Vec<P> {
    let squeezed: String = sql.split_whitespace().collect();
    let squeezed = squeezed.to_ascii_uppercase();
    let mut params = Vec::new();
    for n in 1.. {
        let mentioned = sql
            .match_indices(&format!("${n}"))
            .any(|(at, m)| !sql[at + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
        if !mentioned {
            break;
        }
        let array = [format!("ANY(${n})"), format!("ANY(${n}::")]
            .iter()
            .any(|a| squeezed.contains(a.as_str()));
        params.push(t(if array { "{1}" } else { "1" }));
    }
    params
}

fn resolve(r: &Router, sql: &str) -> Result<Target, RouteError> {
    let params = params_for(sql);
    if params.is_empty() {
        simple(r, sql)
    } else {
        ext(r, sql, &params)
    }
}

fn rejected_by_parser(stmt: &str) -> bool {
    Parser::parse_sql(&PostgreSqlDialect {}, stmt).is_err()
}

/// The plans of a query's statements (one, or each of a `Multi`).
fn plans(p: &Plan) -> Vec<&Plan> {
    match p {
        Plan::Multi(all) => all.iter().collect(),
        one => vec![one],
    }
}

/// Checks the statements of an entry the parser rejects: keywords or fail-closed, never a guess.
/// The one exception reads a statement with FOR NO KEY UPDATE as with FOR UPDATE. Returns how
/// many there are.
fn parser_rejects_fail_closed(r: &Router, e: &Entry) -> usize {
    let mut rejects = 0;
    for stmt in statements(&e.sql) {
        if !rejected_by_parser(stmt) {
            continue;
        }
        rejects += 1;
        let p = plan(r, stmt);
        let relaxed = stmt.to_ascii_uppercase().contains("FOR NO KEY UPDATE");
        let fail_closed = matches!(
            p,
            Plan::Unparsed { .. } | Plan::Begin | Plan::End | Plan::Anywhere
        );
        assert!(
            fail_closed || relaxed,
            "{}: {stmt:?} rejected by the parser, planned {p:?}",
            e.name
        );
        if matches!(p, Plan::Anywhere) {
            let first = crate::router::lex::strip_comments_start(stmt)
                .split_whitespace()
                .next()
                .unwrap_or("");
            let keywords = [
                "set",
                "show",
                "reset",
                "discard",
                "savepoint",
                "release",
                "listen",
                "unlisten",
                "notify",
                "deallocate",
                "rollback",
            ];
            assert!(
                keywords.iter().any(|k| first.eq_ignore_ascii_case(k)),
                "{}: {stmt:?} sent anywhere",
                e.name
            );
        }
    }
    rejects
}

#[test]
fn every_corpus_statement_is_classified_and_fails_closed() {
    let r = router(CORPUS_CONFIG);
    let all = corpus();
    assert_eq!(all.iter().filter(|e| e.file == "observed").count(), 177);
    assert_eq!(all.iter().filter(|e| e.file == "handwritten").count(), 155);
    let mut summary: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut parser_rejects: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &all {
        let p = plan(&r, &e.sql);
        let target = resolve(&r, &e.sql);
        *summary.entry((kind(&p), e.file)).or_default() += 1;
        if let Ok(target) = &target {
            if matches!(p, Plan::Keyed(_) | Plan::Scatter(_)) {
                assert_ne!(
                    *target,
                    Target::Any,
                    "{}: a sharded statement sent anywhere",
                    e.name
                );
            }
        }
        for one in plans(&p) {
            if matches!(
                one,
                Plan::Unparsed {
                    sharded: Some(_),
                    ..
                }
            ) {
                assert!(
                    target.is_err(),
                    "{}: outside a transaction it has nowhere to go",
                    e.name
                );
            }
        }
        let rejects = parser_rejects_fail_closed(&r, e);
        if rejects > 0 {
            *parser_rejects.entry(e.file).or_default() += 1;
        }
    }
    // The README's count of what sqlparser 0.63 rejects (it is pinned exactly in Cargo.toml).
    assert_eq!(parser_rejects.get("observed"), Some(&6));
    assert_eq!(parser_rejects.get("handwritten"), Some(&13));

    println!(
        "{:<10} {:>8} {:>11} {:>6}",
        "plan", "observed", "handwritten", "total"
    );
    let kinds: std::collections::BTreeSet<&str> = summary.keys().map(|k| k.0).collect();
    for k in kinds {
        let o = summary.get(&(k, "observed")).copied().unwrap_or(0);
        let h = summary.get(&(k, "handwritten")).copied().unwrap_or(0);
        println!("{k:<10} {o:>8} {h:>11} {:>6}", o + h);
    }
}

#[test]
fn corpus_entries_with_known_plans() {
    let r = router(CORPUS_CONFIG);
    let all = corpus();
    let find = |name: &str| {
        let e = all
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no entry {name}"));
        (plan(&r, &e.sql), resolve(&r, &e.sql))
    };
    let one1 = one(owner(1));
    for (name, expected_kind, target) in [
        ("point select $1", "Keyed", Some(one1.clone())),
        ("select = ANY($1)", "Keyed", None),
        ("multi-row values", "Keyed", Some(one1.clone())),
        ("for no key update of t nowait", "Reject", None),
        ("select for update", "Keyed", Some(one1.clone())),
        (
            "insert on conflict do update returning",
            "Keyed",
            Some(one1.clone()),
        ),
        ("UPDATE ... FROM ... RETURNING", "Reject", None),
        ("lateral", "Scatter", Some(all3())),
        ("EXISTS / NOT EXISTS / ANY subquery", "Reject", None),
        ("CTE + join", "Reject", None),
        ("insert select unnest arrays", "Reject", None),
        ("DELETE ... USING", "Reject", None),
        ("MERGE (PG15)", "Reject", None),
        ("TABLE / VALUES", "Unparsed", None),
        ("VACUUM ANALYZE", "Unparsed", None),
        ("DO block", "Unparsed", Some(one(0))),
        ("COPY FROM STDIN csv", "CopyIn", Some(all3())),
        ("COPY query TO STDOUT binary", "Scatter", Some(all3())),
        ("asyncpg reset (multi-stmt)", "Multi", Some(Ok(Target::Any))),
        ("CREATE TABLE", "Broadcast", Some(all3())),
        ("obs165", "Keyed", Some(one1.clone())),
        ("obs166", "Keyed", Some(one1.clone())),
        ("obs167", "Broadcast", Some(all3())),
        ("obs172", "Keyed", Some(one(owner(37357)))),
        ("obs174", "Scatter", Some(all3())),
        ("obs152", "Unparsed", None),
        ("obs153", "Unparsed", Some(one(0))),
        ("obs155", "Unparsed", None),
        ("obs176", "Multi", Some(one(0))),
        ("obs19", "Anywhere", Some(Ok(Target::Any))),
    ] {
        let (p, resolved) = find(name);
        assert_eq!(kind(&p), expected_kind, "{name}: {p:?}");
        if let Some(target) = target {
            assert_eq!(resolved, target, "{name}");
        }
    }
    // Why the rejected ones are rejected.
    assert!(matches!(
        find("insert select unnest arrays").0,
        Plan::Reject(RouteError::InsertKey { .. })
    ));
    assert!(matches!(
        find("DELETE ... USING").0,
        Plan::Reject(RouteError::WriteWithoutKey { .. })
    ));
    assert!(matches!(
        find("CTE + join").0,
        Plan::Reject(RouteError::NotColocated { .. })
    ));
    assert!(matches!(
        find("TABLE / VALUES").1,
        Err(RouteError::UnparsedSharded { .. })
    ));
    assert!(matches!(
        find("obs155").1,
        Err(RouteError::UnparsedSharded { .. })
    ));
    assert!(matches!(
        find("obs152").1,
        Err(RouteError::UnparsedSharded { .. })
    ));
    assert!(matches!(find("select = ANY($1)").1, Ok(Target::Shard(_))));
}

/// A statement routed by its shape (integer literals as parameters, one cached plan for every
/// value) goes exactly where its own text would.
#[test]
fn shapes_route_exactly_like_their_text() {
    let r = router(CORPUS_CONFIG);
    let mut shaped = 0;
    let generated = (0..3000).flat_map(|k| {
        [
            format!("SELECT abalance FROM pgbench_accounts WHERE aid = {k}"),
            format!("UPDATE orders SET total = 5 WHERE user_id = {k} AND id = 7"),
            format!("INSERT INTO users (id, name) VALUES ({k}, 'u{k}'), ({k}, 'v')"),
            format!(
                "/* shardgate: key=9 */ SELECT * FROM users WHERE id IN ({k}, {})",
                k + 1
            ),
        ]
    });
    for sql in corpus().into_iter().map(|e| e.sql).chain(generated) {
        let Some((planned, params)) = r.plan_shape(&sql) else {
            continue;
        };
        shaped += 1;
        let by_shape = r.resolve(&planned.plan, Some(&params), None);
        let by_text = r.resolve(&r.plan(&sql), None, None);
        assert_eq!(by_shape, by_text, "{sql}");
    }
    assert!(
        shaped > 9000,
        "only {shaped} statements were routed by shape"
    );
}

#[test]
fn shapes_replace_only_standalone_integer_literals() {
    use crate::router::lex::integer_literals;
    let shape = |sql: &str| integer_literals(sql).map(|(s, _)| s);
    assert_eq!(
        shape("SELECT a FROM t1 WHERE id = 42 AND x IN (1, 2) LIMIT 10"),
        Some("SELECT a FROM t1 WHERE id = $1 AND x IN ($2, $3) LIMIT $4".into())
    );
    // Hints, strings, quoted names, decimals, exponents and signs stay as they are.
    assert_eq!(
        shape("/* shardgate: key=9 */ SELECT '7', \"c 8\", 1.5, 2e3, .5 FROM t WHERE id = -3 -- 4"),
        Some(
            "/* shardgate: key=9 */ SELECT '7', \"c 8\", 1.5, 2e3, .5 FROM t WHERE id = -$1 -- 4"
                .into()
        )
    );
    assert_eq!(shape("SELECT 'a' FROM t"), None);
    assert_eq!(shape("SELECT $1 + 2"), None);
    assert_eq!(shape("SELECT $$5$$ + 2"), None);
    let (_, ranges) = integer_literals("SELECT 12 + 345").unwrap();
    assert_eq!(ranges, vec![7..9, 12..15]);
}
