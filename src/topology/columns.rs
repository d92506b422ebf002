//! The column order of each sharded table, read from the shards. An INSERT without a column list
//! gives its values by position; to find the key among them the router must know the table's
//! columns, and it lists them in the text the shards get, so the value it routes by is the one
//! stored in the key column by name even if the table changed since they were read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::backend::control;
use crate::config::DatabaseConfig;

/// What shardgate knows about one sharded table's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableColumns {
    /// Every shard has these columns, in this order.
    Known(Arc<[Arc<str>]>),
    /// Why the order is not known: a shard did not answer, lacks the table, or disagrees.
    Unknown(Arc<str>),
}

/// Per sharded table (as configured) of one database.
pub type Columns = HashMap<String, TableColumns>;

/// One table's columns on one shard; `None` when the table does not exist there.
type ShardColumns = HashMap<String, Option<Vec<String>>>;

/// Columns in attribute order, dropped ones skipped, for each configured table name
/// (resolved like an unqualified name in the backend's `search_path`).
const QUERY: &str = "SELECT t.name, array_agg(a.attname::text ORDER BY a.attnum) \
     FILTER (WHERE a.attname IS NOT NULL) \
     FROM unnest($1::text[]) AS t(name) \
     LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped \
     GROUP BY t.name";

/// Reads the columns of `db`'s sharded tables from every shard primary, in parallel.
pub async fn read(db: &DatabaseConfig, connect_timeout: Duration) -> Columns {
    let tables: Vec<String> = db.tables.keys().cloned().collect();
    if tables.is_empty() {
        return Columns::new();
    }
    let answers = join_all(
        db.shards
            .values()
            .map(|shard| read_shard(&shard.primary, &tables, connect_timeout)),
    )
    .await;
    let shards: Vec<(&str, Result<ShardColumns, String>)> =
        db.shards.keys().map(String::as_str).zip(answers).collect();
    tables
        .iter()
        .map(|t| (t.clone(), agree(t, &shards)))
        .collect()
}

async fn read_shard(
    url: &str,
    tables: &[String],
    connect_timeout: Duration,
) -> Result<ShardColumns, String> {
    let conn = control::connect(url, connect_timeout, "shardgate-columns").await?;
    let rows = conn.client.query(QUERY, &[&tables]).await;
    conn.close().await;
    let rows = rows.map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                row.get::<_, Option<Vec<String>>>(1),
            )
        })
        .collect())
}

/// The columns of `table` if every shard answered with the same list.
fn agree(table: &str, shards: &[(&str, Result<ShardColumns, String>)]) -> TableColumns {
    let unknown = |why: String| TableColumns::Unknown(why.into());
    let mut first: Option<(&str, &Vec<String>)> = None;
    for (shard, answer) in shards {
        let columns = match answer {
            Err(e) => return unknown(format!("shard \"{shard}\" could not be asked ({e})")),
            Ok(found) => match found.get(table) {
                Some(Some(columns)) => columns,
                _ => return unknown(format!("shard \"{shard}\" has no table \"{table}\"")),
            },
        };
        match first {
            None => first = Some((shard, columns)),
            Some((other, theirs)) if theirs != columns => {
                return unknown(format!(
                    "shards \"{other}\" and \"{shard}\" list different columns ({}) and ({})",
                    theirs.join(", "),
                    columns.join(", ")
                ))
            }
            Some(_) => {}
        }
    }
    match first {
        Some((_, columns)) => {
            TableColumns::Known(columns.iter().map(|c| c.as_str().into()).collect())
        }
        None => unknown("the database has no shards".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(table: &str, columns: Option<&[&str]>) -> Result<ShardColumns, String> {
        let columns = columns.map(|c| c.iter().map(|s| s.to_string()).collect());
        Ok([(table.to_string(), columns)].into_iter().collect())
    }

    #[test]
    fn the_order_is_known_only_when_every_shard_has_the_same_columns() {
        let same = [
            ("s0", shard("users", Some(&["id", "name"]))),
            ("s1", shard("users", Some(&["id", "name"]))),
        ];
        assert_eq!(
            agree("users", &same),
            TableColumns::Known(vec!["id".into(), "name".into()].into())
        );
        let differ = [
            ("s0", shard("users", Some(&["id", "name"]))),
            ("s1", shard("users", Some(&["name", "id"]))),
        ];
        assert_eq!(
            agree("users", &differ),
            TableColumns::Unknown(
                "shards \"s0\" and \"s1\" list different columns (id, name) and (name, id)".into()
            )
        );
        let missing = [
            ("s0", shard("users", Some(&["id"]))),
            ("s1", shard("users", None)),
        ];
        assert_eq!(
            agree("users", &missing),
            TableColumns::Unknown("shard \"s1\" has no table \"users\"".into())
        );
        let down = [
            ("s0", shard("users", Some(&["id"]))),
            ("s1", Err("connection refused".into())),
        ];
        assert_eq!(
            agree("users", &down),
            TableColumns::Unknown("shard \"s1\" could not be asked (connection refused)".into())
        );
    }
}
