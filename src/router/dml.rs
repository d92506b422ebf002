//! Turns what the walk found into a plan: which keys pin the statement, or why it goes to every
//! shard, or why it is refused.

use std::sync::Arc;

use super::analyze::Findings;
use super::plan::{Broadcast, KeySource, Keyed, Plan, RouteError, Scatter};
use crate::config::{CrossShard, RoutingConfig};

pub(super) fn plan(f: Findings, routing: &RoutingConfig) -> Plan {
    if let Some(problem) = f.problem {
        return Plan::Reject(problem);
    }
    if f.refs.is_empty() && f.unaccounted.is_empty() {
        return unsharded(&f);
    }
    let first = f
        .refs
        .first()
        .map(|r| r.table.clone())
        .or_else(|| f.unaccounted.first().cloned())
        .expect("some sharded table");
    if let Some(other) = f.other_tables.first() {
        return Plan::Reject(RouteError::Unsupported {
            what: format!("the statement uses sharded table \"{first}\" together with table \"{other}\", which is neither sharded nor a reference table and exists only on the default shard"),
            hint: format!("List \"{other}\" under reference_tables if every shard has a copy, or under tables with its sharding key."),
        });
    }
    if f.writes_reference {
        return Plan::Reject(RouteError::Unsupported {
            what: format!(
                "the statement writes a reference table and also uses sharded table \"{first}\""
            ),
            hint: "Write reference tables in statements of their own.".into(),
        });
    }
    let classes = Classes::of(&f);
    match classes.unpinned.first() {
        None => Plan::Keyed(Keyed {
            table: first,
            keys: classes.keys,
            write: f.write,
            rows: f.insert_rows,
            colocated: classes.groups == 1,
            merge: None,
            split: None,
        }),
        Some(unpinned) => without_key(&f, &classes, unpinned.clone(), routing),
    }
}

/// No sharded table: reference tables, tables of the default shard, or none.
fn unsharded(f: &Findings) -> Plan {
    if f.writes_reference {
        if let Some(other) = f.other_tables.first() {
            return Plan::Reject(RouteError::Unsupported {
                what: format!("the statement writes a reference table and also uses table \"{other}\", which exists only on the default shard"),
                hint: format!("List \"{other}\" under reference_tables, or split the statement."),
            });
        }
        return Plan::Broadcast(Broadcast::ReferenceWrite);
    }
    if let Some(table) = f.other_tables.first() {
        Plan::Home {
            table: table.clone(),
        }
    } else if !f.reference_tables.is_empty() {
        Plan::Reference
    } else {
        Plan::Anywhere
    }
}

/// Some sharded reference has no key: every shard for a read, refused (or all shards when
/// allowed) for a write.
fn without_key(
    f: &Findings,
    classes: &Classes,
    unpinned: Arc<str>,
    routing: &RoutingConfig,
) -> Plan {
    let key_of = |t: &Arc<str>| {
        f.refs
            .iter()
            .find(|r| r.table == *t)
            .map_or_else(|| Arc::from("?"), |r| r.key.clone())
    };
    if f.write {
        return match f.writes_sharded {
            Some((r, verb)) if !classes.is_pinned(r) => {
                let (table, column) = (f.refs[r].table.clone(), f.refs[r].key.clone());
                if routing.cross_shard_writes == CrossShard::Allow && classes.groups == 1 && verb != "INSERT" {
                    Plan::Broadcast(Broadcast::CrossShardWrite)
                } else {
                    Plan::Reject(RouteError::WriteWithoutKey { verb, table, column })
                }
            }
            Some((r, _)) => Plan::Reject(RouteError::NotColocated {
                a: f.refs[r].table.clone(),
                b: unpinned,
            }),
            None => Plan::Reject(RouteError::Unsupported {
                what: format!("a locking or data-modifying statement on sharded table \"{unpinned}\" must filter on its sharding key \"{}\"", key_of(&unpinned)),
                hint: format!("Add \"{} = …\" to the WHERE clause.", key_of(&unpinned)),
            }),
        };
    }
    if classes.groups > 1 {
        let other = f
            .refs
            .iter()
            .map(|r| r.table.clone())
            .chain(f.unaccounted.iter().cloned())
            .find(|t| *t != unpinned)
            .unwrap_or_else(|| unpinned.clone());
        return Plan::Reject(RouteError::NotColocated {
            a: other,
            b: unpinned,
        });
    }
    let column = key_of(&unpinned);
    if routing.cross_shard_reads == CrossShard::Reject {
        return Plan::Reject(RouteError::ReadWithoutKey {
            table: unpinned,
            column,
        });
    }
    Plan::Scatter(Scatter {
        table: unpinned,
        key_column: column,
        merge: None,
    })
}

/// References grouped twice. Key *classes*: references whose keys are equal in every row (inner
/// joins and WHERE equalities of one block, union-find); each class's keys are the smallest
/// set pinned on a member, or flow from a class that bounds it (outer joins, correlated
/// subqueries). Co-location *groups*: classes joined on their keys in any of those ways, so that
/// each row of the result comes from one shard.
struct Classes {
    /// Co-location groups, counting each reference the walk did not understand as its own.
    groups: usize,
    /// Tables of classes without keys (and references the walk did not understand).
    unpinned: Vec<Arc<str>>,
    /// The union of the classes' keys.
    keys: Vec<KeySource>,
    /// Whether each reference's class has keys.
    pinned: Vec<bool>,
}

fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

impl Classes {
    fn of(f: &Findings) -> Classes {
        let n = f.refs.len();
        let mut class: Vec<usize> = (0..n).collect();
        for &(a, b) in &f.joins {
            let (ra, rb) = (root(&mut class, a), root(&mut class, b));
            class[ra] = rb;
        }
        let mut pins: Vec<Option<Vec<KeySource>>> = vec![None; n];
        for (i, r) in f.refs.iter().enumerate() {
            let slot = &mut pins[root(&mut class, i)];
            if let Some(keys) = &r.pin {
                if slot.as_ref().is_none_or(|old| keys.len() < old.len()) {
                    *slot = Some(keys.clone());
                }
            }
        }
        // The bounding side's keys bound the bounded side's, until nothing changes.
        let mut changed = true;
        while changed {
            changed = false;
            for &(from, to) in &f.flows {
                let (rf, rt) = (root(&mut class, from), root(&mut class, to));
                if pins[rt].is_none() && pins[rf].is_some() {
                    pins[rt] = pins[rf].clone();
                    changed = true;
                }
            }
        }
        let mut group = class.clone();
        for &(a, b) in &f.flows {
            let (ra, rb) = (root(&mut group, a), root(&mut group, b));
            group[ra] = rb;
        }
        let mut c = Classes {
            groups: f.unaccounted.len(),
            unpinned: f.unaccounted.clone(),
            keys: Vec::new(),
            pinned: Vec::with_capacity(n),
        };
        for i in 0..n {
            if root(&mut group, i) == i {
                c.groups += 1;
            }
            let rc = root(&mut class, i);
            c.pinned.push(pins[rc].is_some());
            if rc != i {
                continue;
            }
            match &pins[i] {
                Some(keys) => c.keys.extend(keys.iter().cloned()),
                None => c.unpinned.push(f.refs[i].table.clone()),
            }
        }
        c
    }

    fn is_pinned(&self, r: usize) -> bool {
        self.pinned[r]
    }
}
