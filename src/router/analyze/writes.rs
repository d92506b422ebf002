//! The targets of INSERT, UPDATE, DELETE and MERGE: what a statement writes, the keys an INSERT
//! gives, and assignments that would move a row to another shard.

use std::sync::Arc;

use sqlparser::ast::{
    Assignment, AssignmentTarget, Delete, FromTable, Insert, Merge, OnConflictAction, OnInsert,
    SetExpr, TableFactor, TableObject, Update, UpdateTableFromKind,
};

use super::{addr, ident, last_name, table_name, Walker};
use crate::router::catalog::{Catalog, TableKind};
use crate::router::literal::key_source;
use crate::router::plan::{KeySource, RouteError};

impl Walker<'_> {
    pub(super) fn insert(&mut self, i: &Insert) {
        self.f.write = true;
        let block = self.open_block();
        let TableObject::TableName(name) = &i.table else {
            return;
        };
        // The target of an INSERT is a table, never a CTE of the same name.
        self.registered.insert(addr(name));
        let visible = i
            .table_alias
            .as_ref()
            .map(|a| ident(&a.alias))
            .unwrap_or_else(|| last_name(name));
        let Some(r) = self.register_table(block, name, visible, false) else {
            self.f.writes_reference |= matches!(self.catalog.kind(name), TableKind::Reference(_));
            return;
        };
        let (table, key) = (self.f.refs[r].table.clone(), self.f.refs[r].key.clone());
        self.f.writes_sharded = Some((r, "INSERT"));
        if let Some(OnInsert::OnConflict(c)) = &i.on {
            if let OnConflictAction::DoUpdate(u) = &c.action {
                self.check_assignments(&u.assignments, &table, &key);
            }
        }
        match insert_keys(i, (&table, &key), self.catalog) {
            Ok(keys) => {
                self.f.insert_rows = keys.len() > 1;
                self.f.refs[r].pin = Some(keys);
            }
            Err(why) => self.problem(RouteError::InsertKey {
                table,
                column: key,
                why,
            }),
        }
    }

    pub(super) fn update(&mut self, u: &Update) {
        self.f.write = true;
        let block = self.open_block();
        let targets = self.register_factor(block, &u.table.relation, true);
        // `UPDATE t1 JOIN t2 …` is MySQL; Postgres joins in FROM.
        for join in &u.table.joins {
            self.register_factor(block, &join.relation, false);
        }
        if let Some(UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from)) =
            &u.from
        {
            for item in from {
                self.register_join_tree(block, item);
            }
        }
        self.written(&targets, &u.table.relation, "UPDATE");
        if let Some(&r) = targets.first() {
            let (table, key) = (self.f.refs[r].table.clone(), self.f.refs[r].key.clone());
            self.check_assignments(&u.assignments, &table, &key);
        }
        if let Some(e) = &u.selection {
            self.facts(e, None);
        }
    }

    pub(super) fn delete(&mut self, d: &Delete) {
        self.f.write = true;
        let block = self.open_block();
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
        for (i, item) in from.iter().enumerate() {
            // The first is the target (Postgres deletes from one table); joins are MySQL.
            let refs = self.register_factor(block, &item.relation, i == 0);
            if i == 0 {
                self.written(&refs, &item.relation, "DELETE");
            }
            for join in &item.joins {
                self.register_factor(block, &join.relation, false);
            }
        }
        for item in d.using.iter().flatten() {
            self.register_join_tree(block, item);
        }
        if let Some(e) = &d.selection {
            self.facts(e, None);
        }
    }

    /// MERGE can insert rows with any key, so it is refused on sharded tables; on the others it
    /// is routed like the writes it contains.
    pub(super) fn merge(&mut self, m: &Merge) {
        self.f.write = true;
        let block = self.open_block();
        let targets = self.register_factor(block, &m.table, true);
        self.register_factor(block, &m.source, false);
        self.written(&targets, &m.table, "MERGE");
        if let Some(&r) = targets.first() {
            let table = self.f.refs[r].table.clone();
            self.problem(RouteError::Unsupported {
                what: format!("MERGE into sharded table \"{table}\" is not supported"),
                hint: "Use INSERT … ON CONFLICT, UPDATE or DELETE with the sharding key.".into(),
            });
        }
    }

    /// Records what an UPDATE, DELETE or MERGE writes.
    fn written(&mut self, sharded: &[usize], factor: &TableFactor, verb: &'static str) {
        if let Some(&r) = sharded.first() {
            self.f.writes_sharded = Some((r, verb));
        } else if let Some((name, _)) = table_name(factor) {
            self.f.writes_reference |= matches!(self.catalog.kind(&name), TableKind::Reference(_));
        }
    }

    fn check_assignments(&mut self, assignments: &[Assignment], table: &Arc<str>, key: &Arc<str>) {
        let touches_key = assignments.iter().any(|a| match &a.target {
            AssignmentTarget::ColumnName(n) => last_name(n) == **key,
            AssignmentTarget::Tuple(names) => names.iter().any(|n| last_name(n) == **key),
        });
        if touches_key {
            self.problem(RouteError::KeyUpdate {
                table: table.clone(),
                column: key.clone(),
            });
        }
    }
}

/// The keys of each row of an INSERT … VALUES, or why there are none.
fn insert_keys(
    i: &Insert,
    (table, key): (&str, &str),
    catalog: &Catalog,
) -> Result<Vec<KeySource>, String> {
    let rows = match i.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(v)) => &v.rows,
        _ => {
            return Err(
                "in a VALUES list: INSERT … SELECT and DEFAULT VALUES cannot be routed".into(),
            )
        }
    };
    let Some(index) = i.columns.iter().position(|c| last_name(c) == key) else {
        if !i.columns.is_empty() {
            return Err("a value: the column list does not include it".into());
        }
        let given = rows.first().map_or(0, |r| r.content.len());
        return Err(without_column_list(table, key, given, catalog));
    };
    rows.iter()
        .map(|row| {
            row.content
                .get(index)
                .and_then(|e| key_source(e, catalog.key_type))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "as a literal or a bind parameter in every row".into())
}

/// Why an INSERT without a column list does not give the key (when it does, the router lists
/// the columns and plans that text instead).
fn without_column_list(table: &str, key: &str, given: usize, catalog: &Catalog) -> String {
    match catalog.columns(table) {
        Err(why) => format!(
            "in an explicit column list: shardgate does not know the table's column order ({why})"
        ),
        Ok(columns) => match columns.iter().position(|c| **c == *key) {
            Some(at) => format!(
                "a value: the rows give only the first {given} of its columns, and \"{key}\" is column {}",
                at + 1
            ),
            None => format!(
                "in an explicit column list: the shards' table has no column \"{key}\""
            ),
        },
    }
}
