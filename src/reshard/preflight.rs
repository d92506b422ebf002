//! Pre-flight (DESIGN §3.1): before a move starts, its target must be reachable and hold every
//! sharded table with the same columns, in the same order, as the source, and a primary key
//! (backfill copies in key order, verification drills down by key). The sequences each table's
//! columns draw from are noted: cutover advances them on the target.

use std::time::Duration;

use serde::Serialize;

use super::{pairs, Move};
use crate::backend::control::{self, describe, ControlConn};
use crate::config::{Config, CrossShard};

const TIMEOUT: Duration = Duration::from_secs(5);
const APPLICATION_NAME: &str = "shardgate-reshard";

/// What pre-flight found: the problems (empty: the move may start) and each table's shape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub problems: Vec<String>,
    pub tables: Vec<TableReport>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One sharded table on one source shard.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub shard: String,
    /// `name type`, in column order.
    pub columns: Vec<String>,
    pub primary_key: Vec<String>,
    /// Sequences owned by its columns, with their last value on the source.
    pub sequences: Vec<(String, Option<i64>)>,
    /// The tables its foreign keys reference (backfill copies those first).
    pub references: Vec<String>,
}

/// Runs the checks for `moves` of `database`.
pub async fn preflight(config: &Config, database: &str, moves: &[Move]) -> Report {
    let mut report = Report::default();
    let Some(db) = config.databases.get(database) else {
        report.problems.push(format!("no database \"{database}\""));
        return report;
    };
    let tables: Vec<&String> = db.tables.keys().collect();
    for (from, to) in pairs(moves) {
        let url = |shard: &str| db.shards.get(shard).map(|s| s.primary.clone());
        let (Some(s_url), Some(t_url)) = (url(&from), url(&to)) else {
            report
                .problems
                .push(format!("shard \"{from}\" or \"{to}\" is not configured"));
            continue;
        };
        let source = connect(&from, &s_url, &mut report).await;
        let target = connect(&to, &t_url, &mut report).await;
        let (Some(source), Some(target)) = (source, target) else {
            continue;
        };
        let fans_out = db.routing.cross_shard_reads == CrossShard::Allow
            || db.routing.cross_shard_writes == CrossShard::Allow;
        for (shard, conn) in [(&from, &source), (&to, &target)] {
            if fans_out {
                check_role(shard, conn, &mut report).await;
            }
            for table in &tables {
                check_owner(shard, conn, table, &mut report).await;
                check_row_security(shard, conn, table, &mut report).await;
            }
        }
        for table in &tables {
            compare(table, (&from, &source), (&to, &target), &mut report).await;
        }
        source.close().await;
        target.close().await;
    }
    report
}

async fn connect(shard: &str, url: &str, report: &mut Report) -> Option<ControlConn> {
    match control::connect(url, TIMEOUT, APPLICATION_NAME).await {
        Ok(c) => Some(c),
        Err(e) => {
            report
                .problems
                .push(format!("shard \"{shard}\" is unreachable: {e}"));
            None
        }
    }
}

/// The copies a move makes are hidden from statements sent to every shard by row security
/// (`reshard::capture`), which a superuser or a role with BYPASSRLS never sees.
async fn check_role(shard: &str, conn: &ControlConn, report: &mut Report) {
    let sql = "SELECT current_user::text, rolsuper OR rolbypassrls FROM pg_catalog.pg_roles \
               WHERE rolname = current_user";
    match conn.client.query_one(sql, &[]).await {
        Ok(row) if row.get::<_, bool>(1) => report.problems.push(format!(
            "shard \"{shard}\" is reached as role \"{}\", which bypasses row-level security \
             (superuser or BYPASSRLS): during a move, statements sent to every shard would see \
             the target's copies of the moved rows too; connect as a role without it (the tables' \
             owner will do), or set routing.cross_shard_reads and cross_shard_writes to reject",
            row.get::<_, String>(0)
        )),
        Ok(_) => {}
        Err(e) => report.problems.push(format!(
            "shard \"{shard}\": cannot read its role: {}",
            describe(&e)
        )),
    }
}

/// A move installs a trigger and row security on each table, which only its owner may do.
async fn check_owner(shard: &str, conn: &ControlConn, table: &str, report: &mut Report) {
    let sql = "SELECT pg_catalog.pg_get_userbyid(relowner)::text, current_user::text, \
                 pg_catalog.pg_has_role(relowner, 'USAGE') \
               FROM pg_catalog.pg_class WHERE oid = to_regclass($1)";
    match conn.client.query_opt(sql, &[&table]).await {
        Ok(Some(row)) if !row.get::<_, bool>(2) => report.problems.push(format!(
            "table \"{table}\" on \"{shard}\" is owned by \"{}\", and shardgate connects as \"{}\": \
             a move installs a trigger and row security on it, which needs its owner \
             (ALTER TABLE {table} OWNER TO {})",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(1)
        )),
        Ok(_) => {}
        Err(e) => report
            .problems
            .push(format!("table \"{table}\" on \"{shard}\": {}", describe(&e))),
    }
}

/// A table that uses row security already: shardgate would take it over, and give it up.
async fn check_row_security(shard: &str, conn: &ControlConn, table: &str, report: &mut Report) {
    let sql = "SELECT c.relrowsecurity OR EXISTS (SELECT FROM pg_catalog.pg_policy p \
                 WHERE p.polrelid = c.oid AND p.polname NOT LIKE 'shardgate\\_%') \
               FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1) \
                 AND NOT EXISTS (SELECT FROM pg_catalog.pg_policy p \
                   WHERE p.polrelid = c.oid AND p.polname LIKE 'shardgate\\_%')";
    match conn.client.query_opt(sql, &[&table]).await {
        Ok(Some(row)) if row.get::<_, bool>(0) => report.problems.push(format!(
            "table \"{table}\" on \"{shard}\" uses row-level security already; shardgate hides \
             a move's copies with it and cannot share it: move this table another way"
        )),
        Ok(_) => {}
        Err(e) => report.problems.push(format!(
            "table \"{table}\" on \"{shard}\": {}",
            describe(&e)
        )),
    }
}

/// One table on the source and the target.
async fn compare(
    table: &str,
    (from, source): (&str, &ControlConn),
    (to, target): (&str, &ControlConn),
    report: &mut Report,
) {
    let on_source = match shape(source, table).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            report
                .problems
                .push(format!("table \"{table}\" does not exist on \"{from}\""));
            return;
        }
        Err(e) => {
            report
                .problems
                .push(format!("table \"{table}\" on \"{from}\": {e}"));
            return;
        }
    };
    match shape(target, table).await {
        Ok(Some(t)) => {
            if t.columns != on_source.columns {
                report.problems.push(format!(
                    "table \"{table}\" has other columns on \"{to}\" ({}) than on \"{from}\" ({}): \
                     create it on \"{to}\" with the same columns in the same order",
                    t.columns.join(", "),
                    on_source.columns.join(", ")
                ));
            }
            if t.primary_key.is_empty() {
                report
                    .problems
                    .push(format!("table \"{table}\" has no primary key on \"{to}\""));
            }
        }
        Ok(None) => report.problems.push(format!(
            "table \"{table}\" does not exist on \"{to}\": create it there (same columns, same \
             order, same primary key) before the move"
        )),
        Err(e) => report
            .problems
            .push(format!("table \"{table}\" on \"{to}\": {e}")),
    }
    if on_source.primary_key.is_empty() {
        report.problems.push(format!(
            "table \"{table}\" has no primary key on \"{from}\": backfill and verification need one"
        ));
    }
    report.tables.push(TableReport {
        table: table.to_string(),
        shard: from.to_string(),
        ..on_source
    });
}

const COLUMNS: &str = "SELECT a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod) \
     FROM pg_catalog.pg_attribute a \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
     ORDER BY a.attnum";
const PRIMARY_KEY: &str = "SELECT a.attname::text \
     FROM pg_catalog.pg_index i \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
     WHERE i.indrelid = to_regclass($1) AND i.indisprimary \
     ORDER BY array_position(i.indkey::int2[], a.attnum)";
const SEQUENCES: &str = "SELECT s.oid::regclass::text, q.last_value \
     FROM pg_catalog.pg_depend d \
     JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
     JOIN pg_catalog.pg_sequences q \
       ON q.schemaname = s.relnamespace::regnamespace::text AND q.sequencename = s.relname \
     WHERE d.refobjid = to_regclass($1) AND d.deptype IN ('a', 'i') \
     ORDER BY 1";

const REFERENCES: &str = "SELECT DISTINCT confrelid::regclass::text FROM pg_catalog.pg_constraint \
     WHERE contype = 'f' AND conrelid = to_regclass($1) AND confrelid <> conrelid ORDER BY 1";

/// A table's columns, primary key and sequences on one shard; `None` if it does not exist.
async fn shape(conn: &ControlConn, table: &str) -> Result<Option<TableReport>, String> {
    let c = &conn.client;
    let texts = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    let columns = texts(
        c.query(COLUMNS, &[&table])
            .await
            .map_err(|e| describe(&e))?,
    );
    if columns.is_empty() {
        return Ok(None);
    }
    let primary_key = texts(
        c.query(PRIMARY_KEY, &[&table])
            .await
            .map_err(|e| describe(&e))?,
    );
    let sequences = c
        .query(SEQUENCES, &[&table])
        .await
        .map_err(|e| describe(&e))?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, Option<i64>>(1)))
        .collect();
    let references = texts(
        c.query(REFERENCES, &[&table])
            .await
            .map_err(|e| describe(&e))?,
    );
    Ok(Some(TableReport {
        table: table.to_string(),
        shard: String::new(),
        columns,
        primary_key,
        sequences,
        references,
    }))
}
