//! Which statements a replica may answer (DESIGN §2.4, issue 5): a read that changes nothing
//! and locks nothing. Anything else — and anything the parser cannot read — is for the primary.
//!
//! A replica answers a read as the primary would, only later; a statement that writes would fail
//! there (25006), and one that takes a lock or reads session or server state (advisory locks,
//! `currval`, `pg_is_in_recovery()`) would succeed with the wrong meaning. So the rule is
//! narrow on purpose: `SELECT` and `VALUES` queries (and a simple query of only those) with
//! no `FOR UPDATE/SHARE`, no `SELECT INTO`, no data-modifying CTE, and no call to a function on
//! [`NOT_ON_REPLICAS`].

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectNamePart, Query, Select, SetExpr, Statement, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Functions that write, lock, or answer about the server they run on (lower case, without
/// schema). A function of the application's that writes cannot be known from its name: such a
/// SELECT needs `SET shardgate.target_role = 'primary'` (README, "Read replicas").
const NOT_ON_REPLICAS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "txid_current",
    "pg_current_xact_id",
    "pg_is_in_recovery",
    "pg_notify",
    "set_config",
    "pg_export_snapshot",
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_switch_wal",
    "pg_promote",
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "dblink_exec",
];

/// Prefixes of function families on the list as a whole (every advisory lock, every WAL and
/// replication-slot control function, every statistics reset).
const NOT_ON_REPLICAS_PREFIXES: &[&str] = &[
    "pg_advisory",
    "pg_try_advisory",
    "pg_current_wal",
    "pg_create_",
    "pg_drop_replication",
    "pg_replication_origin",
    "pg_stat_reset",
];

/// Whether every statement of `sql` is a read a replica may answer.
pub fn is_replica_safe(sql: &str) -> bool {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => !statements.is_empty() && statements.iter().all(statement_is_safe),
        Err(_) => false,
    }
}

fn statement_is_safe(s: &Statement) -> bool {
    matches!(s, Statement::Query(_)) && s.visit(&mut Unsafe).is_continue()
}

/// Breaks at the first thing a replica must not run.
struct Unsafe;

impl Visitor for Unsafe {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let modifies = matches!(
            *q.body,
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        );
        if modifies || !q.locks.is_empty() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if s.into.is_some() {
            return ControlFlow::Break(()); // SELECT INTO creates a table
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        match s {
            Statement::Query(_) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        let Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        let name = match f.name.0.last() {
            Some(ObjectNamePart::Identifier(i)) => i.value.to_ascii_lowercase(),
            _ => return ControlFlow::Break(()),
        };
        let listed = NOT_ON_REPLICAS.contains(&name.as_str())
            || NOT_ON_REPLICAS_PREFIXES.iter().any(|p| name.starts_with(p));
        if listed {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_replica_safe;

    #[test]
    fn plain_reads_are_safe() {
        for sql in [
            "SELECT 1",
            "SELECT * FROM users WHERE id = $1",
            "select lower(name), count(*) from users group by 1 order by 2 desc limit 5",
            "SELECT a.id FROM users a JOIN orders o ON o.user_id = a.id WHERE a.id IN (1, 2)",
            "WITH recent AS (SELECT * FROM orders WHERE ts > now() - interval '1 day') \
             SELECT count(*) FROM recent",
            "SELECT 1 UNION ALL SELECT 2",
            "VALUES (1), (2)",
            "SELECT (SELECT max(id) FROM users), now()",
            "SELECT 1; SELECT 2",
            "SELECT pg_sleep(0)",
        ] {
            assert!(is_replica_safe(sql), "{sql}");
        }
    }

    #[test]
    fn writes_locks_and_server_state_go_to_the_primary() {
        for sql in [
            "INSERT INTO users VALUES (1)",
            "UPDATE users SET n = n + 1 WHERE id = 1",
            "DELETE FROM users WHERE id = 1",
            "SELECT * FROM users WHERE id = 1 FOR UPDATE",
            "SELECT * FROM users WHERE id = 1 FOR SHARE SKIP LOCKED",
            "SELECT * FROM users FOR NO KEY UPDATE",
            "SELECT * INTO copy FROM users",
            "WITH moved AS (DELETE FROM users WHERE id = 1 RETURNING *) SELECT * FROM moved",
            "WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x",
            "SELECT nextval('users_id_seq')",
            "SELECT NEXTVAL('s')",
            "SELECT public.setval('s', 10)",
            "SELECT currval('s')",
            "SELECT pg_advisory_lock(42)",
            "SELECT pg_try_advisory_xact_lock(1, 2)",
            "SELECT pg_advisory_unlock_all()",
            "SELECT txid_current()",
            "SELECT pg_is_in_recovery()",
            "SELECT pg_current_wal_lsn()",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT pg_notify('ch', 'x')",
            "SELECT id FROM users WHERE id = (SELECT nextval('s'))",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "SET search_path = x",
            "SHOW search_path",
            "BEGIN",
            "COPY users TO STDOUT",
            "EXPLAIN ANALYZE DELETE FROM users",
            "SELECT inet_server_port() FROM ROWS FROM (generate_series(1, 1)) AS g",
            "not sql at all",
            "",
        ] {
            assert!(!is_replica_safe(sql), "{sql}");
        }
    }
}
