//! Routing decisions in words, for `shardgate route` and `shardgate check-queries`.

use super::lex::word_key;
use super::plan::{KeySource, Plan, RouteError, Target};
use super::{Params, Router};
use crate::metrics::{Kind, Rejection, ShadowVerdict, Spread};

/// How a statement would be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    SingleShard(String),
    MultiShard(String),
    Rejected(String),
}

impl Decision {
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::SingleShard(_) => "single-shard",
            Decision::MultiShard(_) => "multi-shard",
            Decision::Rejected(_) => "rejected",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::SingleShard(why) | Decision::MultiShard(why) | Decision::Rejected(why) => {
                write!(f, "{}: {why}", self.kind())
            }
        }
    }
}

/// How `sql` would be routed with no bind parameters known (a `$n` key is reported as such).
pub fn decide(router: &Router, sql: &str) -> Decision {
    decide_with(router, sql, None)
}

/// How `sql` would be routed with these bind parameters (none known: as [`decide`]), outside a
/// transaction.
pub fn decide_with(router: &Router, sql: &str, params: Option<&Params>) -> Decision {
    let plan = router.plan_listed(sql);
    if let (Plan::Keyed(k), None) = (&*plan, params) {
        let from_params = k
            .keys
            .iter()
            .any(|s| matches!(s, KeySource::Param(_) | KeySource::ParamArray(_)));
        if from_params {
            let arrays = k.keys.iter().any(|s| matches!(s, KeySource::ParamArray(_)));
            let how = if k.keys.len() == 1 && !arrays {
                "one shard, chosen by the key in a bind parameter"
            } else {
                "the shards owning the keys in its bind parameters (one if they agree)"
            };
            return Decision::SingleShard(format!("{how} (table \"{}\")", k.table));
        }
    }
    match router.resolve(&plan, params, None) {
        Ok(Target::Shard(s)) => {
            Decision::SingleShard(format!("shard \"{}\"", router.shard_name(s)))
        }
        Ok(Target::Any) => Decision::SingleShard(match &*plan {
            Plan::Reference => "any one shard (reference tables only)".into(),
            _ => {
                "any shard: the transaction's, else the default, else the first (no sharded table)"
                    .into()
            }
        }),
        Ok(Target::Shards(shards)) => {
            let names: Vec<String> = shards
                .iter()
                .map(|&s| format!("\"{}\"", router.shard_name(s)))
                .collect();
            Decision::MultiShard(format!("shards {}", names.join(", ")))
        }
        Err(e) => Decision::Rejected(format!("{e} (hint: {})", e.hint())),
    }
}

/// The statements of a file: separated by `-- @@` lines when it has them (the corpus format),
/// else by top-level semicolons.
pub fn statements_of(text: &str) -> Vec<String> {
    if text.lines().any(|l| l.starts_with("-- @@")) {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if line.starts_with("-- @@") {
                push_nonempty(&mut out, &mut current);
            } else {
                current.push_str(line);
                current.push('\n');
            }
        }
        push_nonempty(&mut out, &mut current);
        return out;
    }
    super::lex::statements(text).map(str::to_string).collect()
}

fn push_nonempty(out: &mut Vec<String>, current: &mut String) {
    let s = current.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    current.clear();
}

/// In shadow mode: what a statement would have needed, when that is more than one shard or a
/// refusal (`None`: it would have gone to one shard).
pub fn shadow(plan: &Plan) -> Option<Decision> {
    match plan {
        Plan::Scatter(s) => Some(Decision::MultiShard(format!(
            "reads sharded table \"{}\" without its sharding key \"{}\", so it would run on every shard",
            s.table, s.key_column
        ))),
        Plan::Broadcast(_) => Some(Decision::MultiShard("would run on every shard".into())),
        Plan::CopyIn(c) => Some(Decision::MultiShard(format!(
            "COPY into sharded table \"{}\" would split its rows over every shard by \"{}\"",
            c.table, c.key_column
        ))),
        Plan::Reject(e) => Some(Decision::Rejected(format!("{e} (hint: {})", e.hint()))),
        Plan::Unparsed {
            what,
            sharded: Some(table),
        } => Some(Decision::Rejected(format!(
            "{what}: it names sharded table \"{table}\" and would be refused outside a transaction pinned to a shard"
        ))),
        Plan::Keyed(k) if k.merge.as_deref().is_some_and(|m| m.is_err()) => Some(
            Decision::Rejected(format!("keys of \"{}\" may span shards, and its rows could not be merged", k.table)),
        ),
        Plan::Multi(plans) => plans.iter().find_map(shadow),
        _ => None,
    }
}

/// The same as [`shadow`], as a metrics label: no text built, so it can run per statement.
pub fn shadow_verdict(plan: &Plan) -> Option<ShadowVerdict> {
    use super::plan::Broadcast;
    Some(match plan {
        Plan::Scatter(_) => ShadowVerdict::MultiShard(Spread::Scatter),
        Plan::Broadcast(Broadcast::Ddl) => ShadowVerdict::MultiShard(Spread::Ddl),
        Plan::Broadcast(Broadcast::ReferenceWrite) => {
            ShadowVerdict::MultiShard(Spread::ReferenceWrite)
        }
        Plan::Broadcast(Broadcast::CrossShardWrite) => {
            ShadowVerdict::MultiShard(Spread::CrossShardWrite)
        }
        Plan::CopyIn(_) => ShadowVerdict::MultiShard(Spread::CopyIn),
        Plan::Reject(e) => ShadowVerdict::Rejected(e.rejection()),
        Plan::Unparsed {
            sharded: Some(_), ..
        } => ShadowVerdict::Rejected(Rejection::UnparsedSharded),
        Plan::Keyed(k) if k.merge.as_deref().is_some_and(|m| m.is_err()) => {
            ShadowVerdict::Rejected(Rejection::MultiShardUnsupported)
        }
        Plan::Multi(plans) => return plans.iter().find_map(shadow_verdict),
        _ => return None,
    })
}

impl RouteError {
    /// The refusal's reason as a metrics label.
    pub fn rejection(&self) -> Rejection {
        match self {
            RouteError::WriteWithoutKey { .. } => Rejection::WriteWithoutKey,
            RouteError::KeyUpdate { .. } => Rejection::KeyUpdate,
            RouteError::InsertKey { .. } => Rejection::InsertKey,
            RouteError::Unsupported { .. } => Rejection::Unsupported,
            RouteError::NotColocated { .. } => Rejection::NotColocated,
            RouteError::ReadWithoutKey { .. } => Rejection::ReadWithoutKey,
            RouteError::Unparsed { .. } => Rejection::Unparsed,
            RouteError::UnparsedSharded { .. } => Rejection::UnparsedSharded,
            RouteError::NoHome { .. } => Rejection::NoHome,
            RouteError::BadKey(..) => Rejection::BadKey,
            RouteError::BadHint(_) => Rejection::BadHint,
        }
    }
}

/// What a statement does, from its first keyword (after comments), without allocating.
pub fn kind_of(sql: &str) -> Kind {
    kind_of_word(super::lex::first_word(sql))
}

/// [`kind_of`] a statement whose [`first_word`](super::lex::first_word) is `word`.
pub fn kind_of_word(word: &str) -> Kind {
    kind_of_key(word_key(word.as_bytes()))
}

/// [`kind_of_word`] from the word's [`word_key`].
pub fn kind_of_key(key: u128) -> Kind {
    const SELECT: [u128; 4] = [
        word_key(b"select"),
        word_key(b"with"),
        word_key(b"values"),
        word_key(b"table"),
    ];
    const DDL: [u128; 7] = [
        word_key(b"create"),
        word_key(b"alter"),
        word_key(b"drop"),
        word_key(b"truncate"),
        word_key(b"comment"),
        word_key(b"grant"),
        word_key(b"revoke"),
    ];
    const INSERT: u128 = word_key(b"insert");
    const UPDATE: u128 = word_key(b"update");
    const DELETE: u128 = word_key(b"delete");
    match key {
        INSERT => Kind::Insert,
        UPDATE => Kind::Update,
        DELETE => Kind::Delete,
        _ if SELECT.contains(&key) => Kind::Select,
        _ if DDL.contains(&key) => Kind::Ddl,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_first_keyword_after_comments() {
        assert_eq!(kind_of("  /* shardgate: key=1 */ SELECT 1"), Kind::Select);
        assert_eq!(kind_of("-- c\ninsert into t values (1)"), Kind::Insert);
        assert_eq!(
            kind_of("WITH x AS (SELECT 1) SELECT * FROM x"),
            Kind::Select
        );
        assert_eq!(kind_of("Update t set a = 1"), Kind::Update);
        assert_eq!(kind_of("DELETE FROM t"), Kind::Delete);
        assert_eq!(kind_of("create table t (id int)"), Kind::Ddl);
        assert_eq!(kind_of("BEGIN"), Kind::Other);
        assert_eq!(kind_of(""), Kind::Other);
        assert_eq!(kind_of("selection"), Kind::Other);
    }

    #[test]
    fn every_keyword_is_read_in_any_case_and_nothing_longer_or_shorter_matches() {
        let kinds = [
            ("select", Kind::Select),
            ("with", Kind::Select),
            ("values", Kind::Select),
            ("table", Kind::Select),
            ("insert", Kind::Insert),
            ("update", Kind::Update),
            ("delete", Kind::Delete),
            ("create", Kind::Ddl),
            ("alter", Kind::Ddl),
            ("drop", Kind::Ddl),
            ("truncate", Kind::Ddl),
            ("comment", Kind::Ddl),
            ("grant", Kind::Ddl),
            ("revoke", Kind::Ddl),
        ];
        for (word, kind) in kinds {
            assert_eq!(kind_of_word(word), kind, "{word}");
            assert_eq!(kind_of_word(&word.to_uppercase()), kind, "{word}");
            assert_eq!(kind_of_word(&format!("{word}s")), Kind::Other, "{word}s");
            assert_eq!(
                kind_of_word(&word[1..]),
                Kind::Other,
                "{word} less a letter"
            );
        }
        assert_eq!(kind_of_word("truncated"), Kind::Other);
        assert_eq!(kind_of_word("sélect"), Kind::Other);
    }
}
