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
            colocated: classes.count == 1,
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
        return match &f.writes_sharded {
            Some((table, column, verb)) if classes.pinned_table(table).is_none() => {
                if routing.cross_shard_writes == CrossShard::Allow && classes.count == 1 && *verb != "INSERT" {
                    Plan::Broadcast(Broadcast::CrossShardWrite)
                } else {
                    Plan::Reject(RouteError::WriteWithoutKey {
                        verb,
                        table: table.clone(),
                        column: column.clone(),
                    })
                }
            }
            Some((table, ..)) => Plan::Reject(RouteError::NotColocated {
                a: table.clone(),
                b: unpinned,
            }),
            None => Plan::Reject(RouteError::Unsupported {
                what: format!("a locking or data-modifying statement on sharded table \"{unpinned}\" must filter on its sharding key \"{}\"", key_of(&unpinned)),
                hint: format!("Add \"{} = …\" to the WHERE clause.", key_of(&unpinned)),
            }),
        };
    }
    if classes.count > 1 {
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
    })
}

/// References grouped by key equality (union-find), with each group's keys.
struct Classes {
    count: usize,
    /// Tables of groups without keys (and references the walk did not understand).
    unpinned: Vec<Arc<str>>,
    /// The union of the pinned groups' keys.
    keys: Vec<KeySource>,
    pinned: Vec<Arc<str>>,
}

impl Classes {
    fn of(f: &Findings) -> Classes {
        let n = f.refs.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        for &(a, b) in &f.joins {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra] = rb;
        }
        let mut pins: Vec<Option<Vec<KeySource>>> = vec![None; n];
        for (i, r) in f.refs.iter().enumerate() {
            let slot = &mut pins[root(&mut parent, i)];
            if let Some(keys) = &r.pin {
                if slot.as_ref().is_none_or(|old| keys.len() < old.len()) {
                    *slot = Some(keys.clone());
                }
            }
        }
        // Outer joins: the preserved side's keys bound the nullable side's, until nothing changes.
        let mut changed = true;
        while changed {
            changed = false;
            for &(from, to) in &f.flows {
                let (rf, rt) = (root(&mut parent, from), root(&mut parent, to));
                if pins[rt].is_none() && pins[rf].is_some() {
                    pins[rt] = pins[rf].clone();
                    changed = true;
                }
            }
        }
        let mut c = Classes {
            count: f.unaccounted.len(),
            unpinned: f.unaccounted.clone(),
            keys: Vec::new(),
            pinned: Vec::new(),
        };
        for i in 0..n {
            if root(&mut parent, i) != i {
                continue;
            }
            c.count += 1;
            match &pins[i] {
                Some(keys) => {
                    c.keys.extend(keys.iter().cloned());
                    c.pinned.push(f.refs[i].table.clone());
                }
                None => c.unpinned.push(f.refs[i].table.clone()),
            }
        }
        // A group's members are pinned with it.
        for i in 0..n {
            if pins[root(&mut parent, i)].is_some() {
                c.pinned.push(f.refs[i].table.clone());
            }
        }
        c
    }

    fn pinned_table(&self, table: &Arc<str>) -> Option<&Arc<str>> {
        self.pinned.iter().find(|t| *t == table)
    }
}
