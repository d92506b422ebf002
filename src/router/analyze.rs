//! Finds every sharded table a DML statement touches and what pins each one's key.
//!
//! A sqlparser visitor sees every table reference anywhere in the statement (subqueries, CTEs,
//! joins). References in the places we understand (FROM lists, join trees, UPDATE/DELETE/INSERT/
//! MERGE targets) are registered with the query block they belong to; the conditions of a block
//! pin the keys of *its own* references (`key = v`, `IN`, `= ANY`, `OR` of those) and join keys
//! together. A key equality with a reference of an enclosing block (a correlated subquery, a
//! LATERAL subquery) is directed, like an outer join's: the outer row's key bounds the inner
//! rows, never the other way round, since the subquery may sit under an OR, a NOT or in the
//! select list. Any sharded reference the visitor saw but we did not register counts as
//! unpinned: fail closed.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, ObjectName, Query, Select, Statement,
    TableAlias, TableFactor, TableWithJoins, Visit, Visitor,
};

use super::catalog::{ident, Catalog, TableKind};
use super::literal::key_source;
use super::plan::{KeySource, RouteError};

mod writes;

/// One registered reference to a sharded table.
pub(super) struct TableRef {
    pub table: Arc<str>,
    pub key: Arc<str>,
    /// The name the query uses for it: its alias, else its table name.
    visible: String,
    /// Whether its alias renames columns (`users u(a, id)`): then no column name is known to be
    /// its key (`u.id` may be another column).
    renamed: bool,
    /// The query block whose FROM (or target) it is in.
    block: usize,
    /// The keys pinned on it directly.
    pub pin: Option<Vec<KeySource>>,
}

impl TableRef {
    /// Whether `column` (as the query spells it for this reference) is the sharding key.
    fn is_key(&self, column: &str) -> bool {
        !self.renamed && *self.key == *column
    }
}

/// A query block (SELECT, UPDATE, DELETE, INSERT, MERGE): the names its FROM makes visible.
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
    /// Key equalities between references of one block (inner joins, WHERE).
    pub joins: Vec<(usize, usize)>,
    /// `.0`'s keys bound `.1`'s rows (outer joins: preserved side → nullable side; correlated
    /// subqueries: outer reference → inner reference). Both live on one shard, row by row.
    pub flows: Vec<(usize, usize)>,
    /// Sharded tables referenced in places the walk does not understand.
    pub unaccounted: Vec<Arc<str>>,
    pub reference_tables: Vec<String>,
    /// Tables that are neither sharded nor reference tables.
    pub other_tables: Vec<String>,
    /// INSERT/UPDATE/DELETE/MERGE anywhere, SELECT INTO, or a locking clause.
    pub write: bool,
    /// The sharded reference written (an index into `refs`) and the verb.
    pub writes_sharded: Option<(usize, &'static str)>,
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
        registered: HashSet::new(),
        factor_names: HashSet::new(),
        f: Findings::default(),
    };
    let _ = statement.visit(&mut w);
    w.f
}

/// The CTE names one query defines, and how many of them are in scope right now.
struct CteScope {
    names: Vec<String>,
    recursive: bool,
    /// How many CTE bodies the visitor has entered.
    started: usize,
    /// The CTE whose body is being visited: only the ones before it are visible there (all of
    /// them with RECURSIVE, which lifts the order). `None` in the query's own body, where all
    /// are visible.
    current: Option<usize>,
}

impl CteScope {
    fn visible(&self) -> &[String] {
        match self.current {
            Some(i) if !self.recursive => &self.names[..i],
            _ => &self.names,
        }
    }
}

pub(super) struct Walker<'c> {
    catalog: &'c Catalog,
    /// CTE scopes, one per open query, innermost last.
    ctes: Vec<CteScope>,
    blocks: Vec<Block>,
    /// Open blocks, innermost last; `None` for statements that open no block.
    stack: Vec<Option<usize>>,
    /// Addresses of the table factors and INSERT target names registered: their sighting by the
    /// visitor is accounted for.
    registered: HashSet<usize>,
    /// Addresses of table factors' names, which the visitor also reports as relations.
    factor_names: HashSet<usize>,
    f: Findings,
}

fn addr<T>(node: &T) -> usize {
    std::ptr::from_ref(node) as usize
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        // The first queries visited under a query with CTEs are the CTE bodies, in order.
        if let Some(parent) = self.ctes.last_mut() {
            if parent.started < parent.names.len() {
                parent.current = Some(parent.started);
                parent.started += 1;
            }
        }
        let names = q.with.iter().flat_map(|w| &w.cte_tables);
        self.ctes.push(CteScope {
            names: names.map(|c| ident(&c.alias.name)).collect(),
            recursive: q.with.as_ref().is_some_and(|w| w.recursive),
            started: 0,
            current: None,
        });
        if !q.locks.is_empty() {
            self.f.write = true;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.ctes.pop();
        if let Some(parent) = self.ctes.last_mut() {
            parent.current = None;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if s.into.is_some() {
            // SELECT INTO creates a table: it is not a read to merge.
            self.f.write = true;
        }
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
            Statement::Merge(m) => self.merge(m),
            _ => self.stack.push(None),
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
        self.stack.pop();
        ControlFlow::Continue(())
    }

    /// Every table in a FROM, join, target or anywhere else a table factor can appear.
    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args, .. } = factor {
            self.factor_names.insert(addr(name));
            if args.is_none() && !self.registered.contains(&addr(factor)) {
                let (name, _) = table_name(factor).expect("a table");
                if !self.is_cte(&name) {
                    self.sighted(&name);
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Table names outside table factors (an INSERT target): never CTE names.
    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        let a = addr(name);
        if !self.factor_names.contains(&a) && !self.registered.contains(&a) {
            self.sighted(name);
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

    /// The innermost open block.
    fn current(&self) -> Option<usize> {
        self.stack.iter().rev().flatten().next().copied()
    }

    /// A table reference the walk did not register: a sharded one is unpinned.
    fn sighted(&mut self, name: &ObjectName) {
        if let TableKind::Sharded { table, .. } = self.catalog.kind(name) {
            self.f.unaccounted.push(table);
        }
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let [part] = name.0.as_slice() else {
            return false;
        };
        let Some(id) = part.as_ident().map(ident) else {
            return false;
        };
        self.ctes.iter().any(|scope| scope.visible().contains(&id))
    }

    /// Registers a FROM item and its joins, applying join conditions; returns its sharded refs.
    fn register_join_tree(&mut self, block: usize, twj: &TableWithJoins) -> Vec<usize> {
        let mut left = self.register_factor(block, &twj.relation, false);
        for join in &twj.joins {
            let right = self.register_factor(block, &join.relation, false);
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

    /// Registers one FROM item. A `target` (of UPDATE, DELETE, MERGE) is always a real table,
    /// never a CTE of the same name.
    fn register_factor(&mut self, block: usize, factor: &TableFactor, target: bool) -> Vec<usize> {
        match factor {
            TableFactor::Table { args, .. } => {
                let (name, alias) = table_name(factor).expect("a table");
                let visible = alias
                    .map(|a| ident(&a.name))
                    .unwrap_or_else(|| last_name(&name));
                if args.is_some() {
                    // A function in FROM, not a table.
                    self.blocks[block].others.push(visible);
                    return Vec::new();
                }
                if !target && self.is_cte(&name) {
                    self.blocks[block].others.push(visible);
                    return Vec::new();
                }
                self.registered.insert(addr(factor));
                let renamed = alias.is_some_and(|a| !a.columns.is_empty());
                self.register_table(block, &name, visible, renamed)
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

    /// Registers a real table (not a CTE) in `block`; returns the sharded reference.
    fn register_table(
        &mut self,
        block: usize,
        name: &ObjectName,
        visible: String,
        renamed: bool,
    ) -> Option<usize> {
        match self.catalog.kind(name) {
            TableKind::Sharded { table, key } => {
                self.f.refs.push(TableRef {
                    table,
                    key,
                    visible,
                    renamed,
                    block,
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
                side.iter().copied().find(|&r| refs[r].is_key(&col))
            };
            if let (Some(a), Some(b)) = (find(left, &self.f.refs), find(right, &self.f.refs)) {
                self.relate(a, b, nullable);
            }
        }
    }

    /// Applies the conjuncts of a WHERE or ON condition of the innermost block. In an outer
    /// join's ON, `nullable` is the null-extended side: only its rows are constrained there.
    fn facts(&mut self, e: &Expr, nullable: Option<&[usize]>) {
        let Some(block) = self.current() else { return };
        for c in conjuncts(e) {
            if let Some((a, b)) = self.key_equality(c) {
                self.relate(a, b, nullable);
            } else if let Some((r, keys)) = self.pin(c) {
                // A condition bounds the rows of its own block's references only: an outer
                // reference's rows are not filtered by a subquery's WHERE.
                let own = self.f.refs[r].block == block;
                if own && nullable.is_none_or(|n| n.contains(&r)) {
                    let slot = &mut self.f.refs[r].pin;
                    // Both conditions hold: either set bounds the rows; keep the smaller.
                    if slot.as_ref().is_none_or(|old| keys.len() < old.len()) {
                        *slot = Some(keys);
                    }
                }
            }
        }
    }

    /// Records `a.key = b.key` found in a condition of the innermost block.
    fn relate(&mut self, a: usize, b: usize, nullable: Option<&[usize]>) {
        let Some(block) = self.current() else { return };
        let constrained = |r: usize| nullable.is_none_or(|n| n.contains(&r));
        match (self.f.refs[a].block == block, self.f.refs[b].block == block) {
            (true, true) => match nullable {
                None => self.f.joins.push((a, b)),
                Some(n) => match (n.contains(&a), n.contains(&b)) {
                    (false, true) => self.f.flows.push((a, b)),
                    (true, false) => self.f.flows.push((b, a)),
                    _ => {}
                },
            },
            // Correlated: the outer row's key bounds the inner rows the subquery reads.
            (true, false) if constrained(a) => self.f.flows.push((b, a)),
            (false, true) if constrained(b) => self.f.flows.push((a, b)),
            // Two outer references compared inside a subquery: it may be under OR or NOT.
            _ => {}
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
        match e {
            Expr::Nested(inner) => self.key_ref(inner),
            Expr::Identifier(col) => {
                let block = &self.blocks[self.current()?];
                let col = ident(col);
                let mut hits = block.refs.iter().filter(|&&r| self.f.refs[r].is_key(&col));
                let hit = hits.next()?;
                hits.next().is_none().then_some(*hit)
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let col = ident(&parts[parts.len() - 1]);
                let qualifier = ident(&parts[parts.len() - 2]);
                for &b in self.stack.iter().rev().flatten() {
                    let block = &self.blocks[b];
                    if let Some(&r) = block
                        .refs
                        .iter()
                        .find(|&&r| self.f.refs[r].visible == qualifier)
                    {
                        return self.f.refs[r].is_key(&col).then_some(r);
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

    fn problem(&mut self, e: RouteError) {
        self.f.problem.get_or_insert(e);
    }
}

/// A table factor's table name and alias. sqlparser reads `FROM ONLY users` as a table named
/// `ONLY` with the alias `users`; an unquoted ONLY is a reserved word in Postgres, never a table
/// name, so it is the table `users` without descendants.
fn table_name(factor: &TableFactor) -> Option<(ObjectName, Option<&TableAlias>)> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return None;
    };
    let only = match name.0.as_slice() {
        [part] => part
            .as_ident()
            .is_some_and(|i| i.quote_style.is_none() && i.value.eq_ignore_ascii_case("only")),
        _ => false,
    };
    match alias {
        Some(a) if only && a.columns.is_empty() => {
            Some((ObjectName::from(vec![a.name.clone()]), None))
        }
        _ => Some((name.clone(), alias.as_ref())),
    }
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

pub(super) fn last_name(name: &ObjectName) -> String {
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
