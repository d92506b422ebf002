//! What the router knows about a database's tables: which are sharded (and by which column),
//! which are reference tables, and the key type.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlparser::ast::{Ident, ObjectName};

use crate::config::{DatabaseConfig, KeyType};
use crate::topology::columns::{Columns, TableColumns};

pub(crate) enum TableKind {
    Sharded {
        table: Arc<str>,
        key: Arc<str>,
    },
    Reference(String),
    /// Neither: it lives on the default shard.
    Other(String),
    /// `pg_catalog`, `information_schema`: present on every server.
    System,
}

pub(crate) struct Catalog {
    /// Table name (as configured) → (name, key column).
    sharded: HashMap<String, (Arc<str>, Arc<str>)>,
    reference: HashSet<String>,
    pub key_type: KeyType,
    /// The sharded tables' columns, as read from the shards.
    columns: Arc<Columns>,
}

impl Catalog {
    pub fn new(db: &DatabaseConfig, columns: Arc<Columns>) -> Catalog {
        Catalog {
            sharded: db
                .tables
                .iter()
                .map(|(t, k)| (t.clone(), (Arc::from(t.as_str()), Arc::from(k.as_str()))))
                .collect(),
            reference: db.reference_tables.iter().cloned().collect(),
            key_type: db.sharding.as_ref().map_or(KeyType::Bigint, |s| s.key_type),
            columns,
        }
    }

    /// The columns of sharded table `table` (as configured) in order, or why they are not known.
    pub fn columns(&self, table: &str) -> Result<&[Arc<str>], &str> {
        match self.columns.get(table) {
            Some(TableColumns::Known(columns)) => Ok(columns),
            Some(TableColumns::Unknown(why)) => Err(why),
            None => Err("they are read from the shards when shardgate starts, and were not"),
        }
    }

    /// Classifies a table name as written in SQL. Unqualified and `public.` names match a
    /// configured `name`; other schemas match only a configured `schema.name`.
    pub fn kind(&self, name: &ObjectName) -> TableKind {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.as_ident().map(ident).unwrap_or_default())
            .collect();
        let (schema, table) = match parts.as_slice() {
            [.., schema, table] => (Some(schema.as_str()), table.as_str()),
            [table] => (None, table.as_str()),
            [] => return TableKind::System,
        };
        let configured = match schema {
            None | Some("public") => table.to_string(),
            Some(s) => format!("{s}.{table}"),
        };
        if let Some((t, k)) = self.sharded.get(&configured) {
            return TableKind::Sharded {
                table: t.clone(),
                key: k.clone(),
            };
        }
        if self.reference.contains(&configured) {
            return TableKind::Reference(configured);
        }
        // After the configured names: a table the operator named `pg_…` is theirs.
        if matches!(schema, Some("pg_catalog" | "information_schema"))
            || (schema.is_none() && table.starts_with("pg_"))
        {
            return TableKind::System;
        }
        TableKind::Other(configured)
    }

    /// A sharded table whose name appears as a word anywhere in `sql` (strings and comments
    /// included, any case): for statements the router cannot read, a sign that the default shard
    /// is not where their rows are.
    pub fn mentioned(&self, sql: &str) -> Option<Arc<str>> {
        let words: HashSet<String> = sql
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut tables: Vec<&(Arc<str>, Arc<str>)> = self.sharded.values().collect();
        tables.sort();
        tables
            .into_iter()
            .find(|(t, _)| words.contains(&t.rsplit('.').next().unwrap_or(t).to_lowercase()))
            .map(|(t, _)| t.clone())
    }
}

/// An identifier as Postgres stores it: unquoted names fold to lower case, ASCII letters only
/// (`downcase_identifier` in a UTF8 database: `ÜSERS` is `Üsers`).
pub(crate) fn ident(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    }
}
