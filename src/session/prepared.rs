//! Named prepared statements that survive moving between backends.
//!
//! A client's statement names are its own; on the servers every distinct (SQL, parameter types)
//! is prepared under one shardgate name, `__sg_<id>`, where `id` comes from a registry shared by all
//! sessions. Ids are handed out, never hashed, so two different statements can never share a server
//! name. Each server connection remembers which ids it has prepared ([`crate::backend::ServerSession`]);
//! a statement missing there is prepared just before the message that needs it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;

use super::replies::{Pending, Replies};
use super::{Held, SessionError};
use crate::protocol::frontend::{self as fmsg, Parse};
use crate::protocol::ProtocolError;

/// Server-side names start with this; a client name with this prefix is refused so it can never
/// be mistaken for one of ours.
pub const SERVER_PREFIX: &str = "__sg_";

#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    pub sql: String,
    /// Raw parameter-type block of the client's Parse (count + OIDs).
    pub param_types: Vec<u8>,
    /// How the client's `search_path` was applied when this statement was parsed.
    pub search_path: String,
    pub server_name: String,
    /// Set when executing this statement changes session state (e.g. a prepared `SET`).
    pub command: Option<super::sql::SessionCommand>,
    /// Its kind for the metrics, found once rather than on every execution.
    pub kind: crate::metrics::Kind,
    /// Postgres has accepted this statement at least once. A later Parse of it is answered without
    /// a backend and prepared lazily where it is needed: that saves a round trip, and keeps
    /// clients that prepare with a blocking call (pgbench -M prepared) from waiting for a
    /// connection that another client of their own thread holds.
    validated: AtomicBool,
}

impl Statement {
    pub fn mark_valid(&self) {
        self.validated.store(true, Ordering::Relaxed);
    }

    pub fn is_valid(&self) -> bool {
        self.validated.load(Ordering::Relaxed)
    }
}

/// Interns statements across all sessions of the process.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

/// Interned statements by text. What makes two prepared statements the same on a server is the
/// text, the parameter types and the `search_path` they were parsed under (a statement binds its
/// tables at parse time); the few variants of one text are told apart by a scan. Keyed by text alone
/// so a lookup borrows the client's `&str` and allocates nothing.
#[derive(Default)]
struct RegistryInner {
    by_text: HashMap<String, Vec<Arc<Statement>>>,
    next_id: u64,
}

impl Registry {
    /// `search_path` is how the client's setting is applied (empty for the server default).
    pub fn intern(&self, sql: &str, param_types: &[u8], search_path: &str) -> Arc<Statement> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let same =
            |s: &&Arc<Statement>| s.param_types == param_types && s.search_path == search_path;
        if let Some(stmt) = inner.by_text.get(sql).and_then(|v| v.iter().find(same)) {
            return stmt.clone();
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let (command, kind) = super::sql::recognize(sql);
        let stmt = Arc::new(Statement {
            id,
            sql: sql.to_owned(),
            param_types: param_types.to_vec(),
            search_path: search_path.to_owned(),
            server_name: format!("{SERVER_PREFIX}{id}"),
            command,
            kind,
            validated: AtomicBool::new(false),
        });
        inner
            .by_text
            .entry(sql.to_owned())
            .or_default()
            .push(stmt.clone());
        stmt
    }
}

/// Hashes statement ids for the sets of them each server connection keeps. Ids are handed out
/// in sequence by the registry, never chosen by a client, so a multiplication spreads them well
/// enough, at a fraction of SipHash's cost on every Bind.
pub type IdHasher = BuildHasherDefault<IdHash>;

#[derive(Default)]
pub struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed with it; other input still hashes, just not as fast.
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses as tags, differ too.
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One client's statement names. Looked up on every Bind: foldhash, not SipHash (which took
/// ~500 of a prepared-mode query's 14,000 instructions). Flooding the map with colliding names
/// would only slow the client's own session.
#[derive(Default)]
pub struct ClientStatements {
    by_name: foldhash::HashMap<String, Arc<Statement>>,
}

impl ClientStatements {
    pub fn get(&self, name: &str) -> Option<&Arc<Statement>> {
        self.by_name.get(name)
    }

    pub fn insert(&mut self, name: &str, stmt: Arc<Statement>) {
        self.by_name.insert(name.to_owned(), stmt);
    }

    /// Removes `name` if it still refers to statement `id` (a failed Parse undoes only itself).
    pub fn remove_if(&mut self, name: &str, id: u64) {
        if self.by_name.get(name).is_some_and(|s| s.id == id) {
            self.by_name.remove(name);
        }
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.by_name.remove(name).is_some()
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }
}

/// What the session needs of an unnamed statement's SQL: the session command it runs, if any,
/// and its kind for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct UnnamedParse {
    pub command: Option<super::sql::SessionCommand>,
    pub kind: crate::metrics::Kind,
}

/// The client's last unnamed Parse and what its SQL was found to be. Drivers that do not name
/// their statements send the same Parse before every execution (pgbench `-M extended`, JDBC's
/// first runs, asyncpg's unnamed queries); decoding, splitting and classifying its text again
/// each time was about a tenth of such a query's instructions. Same bytes, same answer: the
/// frame includes the (empty) name, the SQL and the parameter types.
#[derive(Default)]
pub(super) struct ParseMemo {
    last: Option<(Box<[u8]>, UnnamedParse)>,
}

impl ParseMemo {
    /// What an earlier Parse identical to `frame` was found to be.
    pub fn recall(&self, frame: &[u8]) -> Option<UnnamedParse> {
        match &self.last {
            Some((kept, unnamed)) if **kept == *frame => Some(unnamed.clone()),
            _ => None,
        }
    }

    /// Remembers an unnamed Parse. A copy, not the frame itself: a frame shares the client's
    /// read buffer, which would stay allocated for as long as the memo held it.
    pub fn keep(&mut self, frame: &[u8], unnamed: &UnnamedParse) {
        self.last = Some((frame.into(), unnamed.clone()));
    }
}

/// The client's statement `name` under its server-side name, prepared on the held backend
/// first if it is not there yet. `None` for the unnamed statement and for names the client never
/// prepared.
///
/// Borrowed, not cloned: every session that prepared the same text shares the statement's
/// reference count, on every worker, and a clone per Bind passed its cache line between the
/// cores. A function of the session's parts, so that the borrow is of `statements` alone and the
/// caller may write `bout` while holding it.
pub(super) fn server_statement<'s>(
    statements: &'s ClientStatements,
    backend: &mut Option<Held>,
    parts: (&mut BytesMut, &mut Replies),
    name: &str,
) -> Result<Option<&'s Arc<Statement>>, SessionError> {
    if name.starts_with(SERVER_PREFIX) {
        return Err(ProtocolError::Unexpected {
            tag: fmsg::BIND,
            context: "naming a statement with shardgate's reserved prefix __sg_",
        }
        .into());
    }
    let Some(stmt) = statements.get(name).filter(|_| !name.is_empty()) else {
        return Ok(None);
    };
    let conn = &mut backend.as_mut().expect("a backend is held").conn;
    queue_parse(conn, parts, stmt, || Pending::InjectedParse {
        stmt: stmt.clone(),
    });
    Ok(Some(stmt))
}

/// Queues a Parse of `stmt` under its server name on `conn`, answered as `pending`, unless
/// the backend has it already. Returns whether it queued one.
pub(super) fn queue_parse(
    conn: &mut crate::backend::Connection,
    (bout, replies): (&mut BytesMut, &mut Replies),
    stmt: &Statement,
    pending: impl FnOnce() -> Pending,
) -> bool {
    if !conn.session.prepared.insert(stmt.id) {
        return false;
    }
    Parse {
        name: &stmt.server_name,
        sql: &stmt.sql,
        param_types: &stmt.param_types,
    }
    .encode(bout);
    replies.push(pending());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_is_recalled_only_when_every_byte_matches() {
        let frame = |sql: &str, types: &[u8]| {
            let mut out = bytes::BytesMut::new();
            crate::protocol::frontend::Parse {
                name: "",
                sql,
                param_types: types,
            }
            .encode(&mut out);
            out
        };
        let set = UnnamedParse {
            command: super::super::sql::statements("SET x = 1")
                .next()
                .and_then(super::super::sql::classify),
            kind: crate::metrics::Kind::Other,
        };
        assert!(set.command.is_some());
        let mut memo = ParseMemo::default();
        let kept = frame("SET x = 1", &[0, 0]);
        assert_eq!(memo.recall(&kept), None, "nothing is kept at first");
        memo.keep(&kept, &set);
        assert_eq!(memo.recall(&frame("SET x = 1", &[0, 0])), Some(set.clone()));
        assert_eq!(memo.recall(&frame("SET x = 2", &[0, 0])), None);
        assert_eq!(memo.recall(&frame("SET x = 1", &[0, 1, 0, 0, 0, 23])), None);
        assert_eq!(
            memo.recall(&kept[..kept.len() - 1]),
            None,
            "a prefix is not the frame"
        );
    }

    #[test]
    fn same_text_and_types_share_an_id_and_different_ones_never_do() {
        let r = Registry::default();
        let a = r.intern("select $1", &[0, 1, 0, 0, 0, 23], "");
        let b = r.intern("select $1", &[0, 1, 0, 0, 0, 23], "");
        let c = r.intern("select $1", &[0, 1, 0, 0, 0, 20], "");
        let d = r.intern("select $1", &[0, 1, 0, 0, 0, 23], "SET search_path = other");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(
            a.id, d.id,
            "a statement parsed under another search_path is another statement"
        );
        assert_eq!(a.server_name, format!("__sg_{}", a.id));
    }

    #[test]
    fn a_failed_parse_removes_only_its_own_registration() {
        let r = Registry::default();
        let mut c = ClientStatements::default();
        let a = r.intern("select 1", &[0, 0], "");
        let b = r.intern("select 2", &[0, 0], "");
        c.insert("s", b.clone());
        c.remove_if("s", a.id);
        assert!(c.get("s").is_some());
        c.remove_if("s", b.id);
        assert!(c.get("s").is_none());
    }
}
