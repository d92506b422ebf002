//! Finds every sharded table a DML statement touches and what pins each one's key.
//!
//! A sqlparser visitor sees every table reference anywhere in the statement (subqueries, CTEs,
//! joins). References in the places we understand (FROM lists, join trees, UPDATE/DELETE/INSERT
//! targets) are registered with the conditions of their query block; the conditions pin keys
//! (`key = v`, `IN`, `= ANY`, `OR` of those) and join keys together. Any sharded reference the
//! visitor saw but we did not register counts as unpinned: fail closed.

use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Delete, Expr, FromTable, Insert, JoinConstraint,
    JoinOperator, ObjectName, OnConflictAction, OnInsert, Query, Select, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind, Visit, Visitor,
};

use super::catalog::{ident, Catalog, TableKind};
use super::literal::key_source;
use super::plan::{KeySource, RouteError};

/// One registered reference to a sharded table.
pub(super) struct TableRef {
    pub table: Arc<str>,
    pub key: Arc<str>,
    /// The name the query uses for it: its alias, else its table name.
    visible: String,
    /// The keys pinned on it directly.
    pub pin: Option<Vec<KeySource>>,
}

/// A query block (SELECT, UPDATE, DELETE, INSERT): the names its FROM makes visible.
#[derive(Default)]
struct Block {
    /// Sharded references, by index into `Findings::refs`.
    refs: Vec<usize>,
    /// Visible names of everything else in its FROM (other tables, subqueries, functions).
    others: Vec<String>,
}

/// What the walk found; `super::dml` turns it into a plan.
#[derive(Default)]
pub(super) struct Findings {
    pub refs: Vec<TableRef>,
    /// Key equalities between references (inner joins, WHERE).
    pub joins: Vec<(usize, usize)>,
    /// `.0`'s keys constrain `.1` (outer joins: preserved side → nullable side).
    pub flows: Vec<(usize, usize)>,
    /// Sharded tables referenced in places the walk does not understand.
    pub unaccounted: Vec<Arc<str>>,
    pub reference_tables: Vec<String>,
    /// Tables that are neither sharded nor reference tables.
    pub other_tables: Vec<String>,
    /// INSERT/UPDATE/DELETE/MERGE anywhere, or a locking clause.
    pub write: bool,
    /// The sharded table written, its key column and the verb.
    pub writes_sharded: Option<(Arc<str>, Arc<str>, &'static str)>,
    pub writes_reference: bool,
    /// An INSERT of several rows.
    pub insert_rows: bool,
    pub problem: Option<RouteError>,
}

pub(super) fn walk(statement: &Statement, catalog: &Catalog) -> Findings {
    let mut w = Walker {
        catalog,
        ctes: Vec::new(),
        blocks: Vec::new(),
        stack: Vec::new(),
        seen: Vec::new(),
        f: Findings::default(),
    };
    let _ = statement.visit(&mut w);
    w.finish()
}

struct Walker<'c> {
    catalog: &'c Catalog,
    /// CTE names in scope, one entry per query.
    ctes: Vec<Vec<String>>,
    blocks: Vec<Block>,
    /// Open blocks, innermost last; `None` for statements that open no block.
    stack: Vec<Option<usize>>,
    /// Every sharded table reference the visitor saw.
    seen: Vec<Arc<str>>,
    f: Findings,
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let names = q.with.iter().flat_map(|w| &w.cte_tables);
        self.ctes
            .push(names.map(|c| ident(&c.alias.name)).collect());
        if !q.locks.is_empty() {
            self.f.write = true;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.ctes.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        let block = self.open_block();
        for item in &s.from {
            self.register_join_tree(block, item);
        }
        if let Some(e) = &s.selection {
            self.facts(e, None);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, _: &Select) -> ControlFlow<()> {
        self.stack.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        match s {
            Statement::Insert(i) => self.insert(i),
            Statement::Update(u) => self.update(u),
            Statement::Delete(d) => self.delete(d),
            Statement::Merge(_) => {
                self.f.write = true;
                self.stack.push(None);
            }
            _ => self.stack.push(None),
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
        self.stack.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        if let (false, TableKind::Sharded { table, .. }) =
            (self.is_cte(name), self.catalog.kind(name))
        {
            self.seen.push(table);
        }
        ControlFlow::Continue(())
    }
}

impl Walker<'_> {
    fn open_block(&mut self) -> usize {
        self.blocks.push(Block::default());
        let id = self.blocks.len() - 1;
        self.stack.push(Some(id));
        id
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let [part] = name.0.as_slice() else {
            return false;
        };
        let Some(id) = part.as_ident().map(ident) else {
            return false;
        };
        self.ctes.iter().any(|scope| scope.contains(&id))
    }

    /// Registers a FROM item and its joins, applying join conditions; returns its sharded refs.
    fn register_join_tree(&mut self, block: usize, twj: &TableWithJoins) -> Vec<usize> {
        let mut left = self.register_factor(block, &twj.relation);
        for join in &twj.joins {
            let right = self.register_factor(block, &join.relation);
            use JoinOperator as J;
            let (constraint, nullable) = match &join.join_operator {
                J::Join(c) | J::Inner(c) | J::CrossJoin(c) => (Some(c), None),
                J::Left(c) | J::LeftOuter(c) => (Some(c), Some(right.clone())),
                J::Right(c) | J::RightOuter(c) => (Some(c), Some(left.clone())),
                // FULL joins (and dialect oddities) constrain neither side.
                _ => (None, None),
            };
            match constraint {
                Some(JoinConstraint::On(e)) => self.facts(e, nullable.as_deref()),
                Some(JoinConstraint::Using(cols)) => {
                    self.using(&left, &right, cols, nullable.as_deref())
                }
                _ => {}
            }
            left.extend(right);
        }
        left
    }

    fn register_factor(&mut self, block: usize, factor: &TableFactor) -> Vec<usize> {
        match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let visible = alias
                    .as_ref()
                    .map(|a| ident(&a.name))
                    .unwrap_or_else(|| last_name(name));
                if args.is_some() {
                    // A function in FROM, not a table.
                    self.blocks[block].others.push(visible);
                    return Vec::new();
                }
                self.register_table(block, name, visible)
                    .into_iter()
                    .collect()
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if let Some(a) = alias {
                    self.blocks[block].others.push(ident(&a.name));
                }
                self.register_join_tree(block, table_with_joins)
            }
            other => {
                if let Some(a) = factor_alias(other) {
                    self.blocks[block].others.push(a);
                }
                Vec::new()
            }
        }
    }

    fn register_table(
        &mut self,
        block: usize,
        name: &ObjectName,
        visible: String,
    ) -> Option<usize> {
        if self.is_cte(name) {
            self.blocks[block].others.push(visible);
            return None;
        }
        match self.catalog.kind(name) {
            TableKind::Sharded { table, key } => {
                self.f.refs.push(TableRef {
                    table,
                    key,
                    visible,
                    pin: None,
                });
                let id = self.f.refs.len() - 1;
                self.blocks[block].refs.push(id);
                return Some(id);
            }
            TableKind::Reference(t) => self.f.reference_tables.push(t),
            TableKind::Other(t) => self.f.other_tables.push(t),
            TableKind::System => {}
        }
        self.blocks[block].others.push(visible);
        None
    }

    /// `JOIN … USING (col)`: equal keys when `col` is the key of a table on each side.
    fn using(
        &mut self,
        left: &[usize],
        right: &[usize],
        cols: &[ObjectName],
        nullable: Option<&[usize]>,
    ) {
        for col in cols {
            let col = last_name(col);
            let find = |side: &[usize], refs: &[TableRef]| {
                side.iter().copied().find(|&r| *refs[r].key == *col)
            };
            if let (Some(a), Some(b)) = (find(left, &self.f.refs), find(right, &self.f.refs)) {
                self.relate(a, b, nullable);
            }
        }
    }

    /// Applies the conjuncts of a WHERE or ON condition. In an outer join's ON, `nullable` is the
    /// null-extended side: only its rows are constrained there.
    fn facts(&mut self, e: &Expr, nullable: Option<&[usize]>) {
        for c in conjuncts(e) {
            if let Some((a, b)) = self.key_equality(c) {
                self.relate(a, b, nullable);
            } else if let Some((r, keys)) = self.pin(c) {
                if nullable.is_none_or(|n| n.contains(&r)) {
                    let slot = &mut self.f.refs[r].pin;
                    // Both conditions hold: either set bounds the rows; keep the smaller.
                    if slot.as_ref().is_none_or(|old| keys.len() < old.len()) {
                        *slot = Some(keys);
                    }
                }
            }
        }
    }

    fn relate(&mut self, a: usize, b: usize, nullable: Option<&[usize]>) {
        match nullable {
            None => self.f.joins.push((a, b)),
            Some(n) => match (n.contains(&a), n.contains(&b)) {
                (false, true) => self.f.flows.push((a, b)),
                (true, false) => self.f.flows.push((b, a)),
                _ => {}
            },
        }
    }

    /// `a.key = b.key` between two sharded references.
    fn key_equality(&self, e: &Expr) -> Option<(usize, usize)> {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = e
        else {
            return None;
        };
        let (a, b) = (self.key_ref(left)?, self.key_ref(right)?);
        (a != b).then_some((a, b))
    }

    /// A condition that bounds one reference's keys to a known set.
    fn pin(&self, e: &Expr) -> Option<(usize, Vec<KeySource>)> {
        let key = |e: &Expr| key_source(e, self.catalog.key_type);
        match e {
            Expr::Nested(inner) => self.pin(inner),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::Eq => {
                    if let Some(r) = self.key_ref(left) {
                        Some((r, vec![key(right)?]))
                    } else {
                        Some((self.key_ref(right)?, vec![key(left)?]))
                    }
                }
                BinaryOperator::Or => {
                    let (a, mut ka) = self.pin(left)?;
                    let (b, kb) = self.pin(right)?;
                    (a == b).then(|| {
                        ka.extend(kb);
                        (a, ka)
                    })
                }
                BinaryOperator::And => self.pin(left).or_else(|| self.pin(right)),
                _ => None,
            },
            Expr::InList {
                expr,
                list,
                negated: false,
            } => {
                let r = self.key_ref(expr)?;
                Some((r, list.iter().map(key).collect::<Option<Vec<_>>>()?))
            }
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => Some((
                self.key_ref(left)?,
                super::literal::any_keys(right, self.catalog.key_type)?,
            )),
            _ => None,
        }
    }

    /// The sharded reference whose key column `e` names, resolved as Postgres would: a
    /// qualified name from the innermost block outwards, an unqualified one only in the
    /// innermost block (an inner table we know nothing about could have a column of that name).
    fn key_ref(&self, e: &Expr) -> Option<usize> {
        let open = self.stack.iter().rev().flatten();
        match e {
            Expr::Nested(inner) => self.key_ref(inner),
            Expr::Identifier(col) => {
                let block = &self.blocks[*self.stack.iter().rev().flatten().next()?];
                let col = ident(col);
                let mut hits = block.refs.iter().filter(|&&r| *self.f.refs[r].key == *col);
                let hit = hits.next()?;
                hits.next().is_none().then_some(*hit)
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let col = ident(&parts[parts.len() - 1]);
                let qualifier = ident(&parts[parts.len() - 2]);
                for &b in open {
                    let block = &self.blocks[b];
                    if let Some(&r) = block
                        .refs
                        .iter()
                        .find(|&&r| self.f.refs[r].visible == qualifier)
                    {
                        return (*self.f.refs[r].key == *col).then_some(r);
                    }
                    if block.others.contains(&qualifier) {
                        return None;
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn insert(&mut self, i: &Insert) {
        self.f.write = true;
        let block = self.open_block();
        let TableObject::TableName(name) = &i.table else {
            return;
        };
        let visible = i
            .table_alias
            .as_ref()
            .map(|a| ident(&a.alias))
            .unwrap_or_else(|| last_name(name));
        let Some(r) = self.register_table(block, name, visible) else {
            self.f.writes_reference |= matches!(self.catalog.kind(name), TableKind::Reference(_));
            return;
        };
        let (table, key) = (self.f.refs[r].table.clone(), self.f.refs[r].key.clone());
        self.f.writes_sharded = Some((table.clone(), key.clone(), "INSERT"));
        if let Some(OnInsert::OnConflict(c)) = &i.on {
            if let OnConflictAction::DoUpdate(u) = &c.action {
                self.check_assignments(&u.assignments, &table, &key);
            }
        }
        match insert_keys(i, &key, self.catalog) {
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

    fn update(&mut self, u: &Update) {
        self.f.write = true;
        let block = self.open_block();
        let targets = self.register_join_tree(block, &u.table);
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

    fn delete(&mut self, d: &Delete) {
        self.f.write = true;
        let block = self.open_block();
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
        let mut targets = Vec::new();
        for (i, item) in from.iter().enumerate() {
            let refs = self.register_join_tree(block, item);
            if i == 0 {
                self.written(&refs, &item.relation, "DELETE");
                targets = refs;
            }
        }
        let _ = targets;
        for item in d.using.iter().flatten() {
            self.register_join_tree(block, item);
        }
        if let Some(e) = &d.selection {
            self.facts(e, None);
        }
    }

    /// Records what an UPDATE or DELETE writes.
    fn written(&mut self, sharded: &[usize], factor: &TableFactor, verb: &'static str) {
        if let Some(&r) = sharded.first() {
            let (table, key) = (self.f.refs[r].table.clone(), self.f.refs[r].key.clone());
            self.f.writes_sharded = Some((table, key, verb));
        } else if let TableFactor::Table { name, .. } = factor {
            self.f.writes_reference |= matches!(self.catalog.kind(name), TableKind::Reference(_));
        }
    }

    fn check_assignments(
        &mut self,
        assignments: &[sqlparser::ast::Assignment],
        table: &Arc<str>,
        key: &Arc<str>,
    ) {
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

    fn problem(&mut self, e: RouteError) {
        self.f.problem.get_or_insert(e);
    }

    fn finish(mut self) -> Findings {
        // Each registered reference accounts for one sighting; what is left was not understood.
        for r in &self.f.refs {
            if let Some(i) = self.seen.iter().position(|t| *t == r.table) {
                self.seen.swap_remove(i);
            }
        }
        self.f.unaccounted = self.seen;
        self.f
    }
}

/// The keys of each row of an INSERT … VALUES, or why there are none.
fn insert_keys(i: &Insert, key: &str, catalog: &Catalog) -> Result<Vec<KeySource>, &'static str> {
    let Some(index) = i.columns.iter().position(|c| last_name(c) == key) else {
        return Err(if i.columns.is_empty() {
            "in an explicit column list (shardgate does not know the table's column order)"
        } else {
            "a value: the column list does not include it"
        });
    };
    let rows = match i.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(v)) => &v.rows,
        _ => return Err("in a VALUES list: INSERT … SELECT and DEFAULT VALUES cannot be routed"),
    };
    rows.iter()
        .map(|row| {
            row.content
                .get(index)
                .and_then(|e| key_source(e, catalog.key_type))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("as a literal or a bind parameter in every row")
}

/// The top-level AND-ed conditions of `e`.
fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

fn last_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(ident)
        .unwrap_or_default()
}

fn factor_alias(f: &TableFactor) -> Option<String> {
    match f {
        TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. } => alias.as_ref().map(|a| ident(&a.name)),
        _ => None,
    }
}
