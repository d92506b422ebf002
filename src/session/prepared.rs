//! Named prepared statements that survive moving between backends.
//!
//! A client's statement names are its own; on the servers every distinct (SQL, parameter types)
//! is prepared under one shardgate name, `__sg_<id>`, where `id` comes from a registry shared by all
//! sessions. Ids are handed out, never hashed, so two different statements can never share a server
//! name. Each server connection remembers which ids it has prepared ([`crate::backend::ServerSession`]);
//! a statement missing there is prepared just before the message that needs it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Server-side names start with this; a client name with this prefix is refused so it can never
/// be mistaken for one of ours.
pub const SERVER_PREFIX: &str = "__sg_";

#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    pub sql: String,
    /// Raw parameter-type block of the client's Parse (count + OIDs).
    pub param_types: Vec<u8>,
    pub server_name: String,
    /// Set when executing this statement changes session state (e.g. a prepared `SET`).
    pub command: Option<super::sql::SessionCommand>,
}

/// Interns statements across all sessions of the process.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    by_text: HashMap<(String, Vec<u8>), Arc<Statement>>,
    next_id: u64,
}

impl Registry {
    pub fn intern(&self, sql: &str, param_types: &[u8]) -> Arc<Statement> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (sql.to_owned(), param_types.to_vec());
        if let Some(stmt) = inner.by_text.get(&key) {
            return stmt.clone();
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let command = super::sql::statements(sql)
            .first()
            .and_then(|s| super::sql::classify(s));
        let stmt = Arc::new(Statement {
            id,
            sql: key.0.clone(),
            param_types: key.1.clone(),
            server_name: format!("{SERVER_PREFIX}{id}"),
            command,
        });
        inner.by_text.insert(key, stmt.clone());
        stmt
    }
}

/// One client's statement names.
#[derive(Default)]
pub struct ClientStatements {
    by_name: HashMap<String, Arc<Statement>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_share_an_id_and_different_ones_never_do() {
        let r = Registry::default();
        let a = r.intern("select $1", &[0, 1, 0, 0, 0, 23]);
        let b = r.intern("select $1", &[0, 1, 0, 0, 0, 23]);
        let c = r.intern("select $1", &[0, 1, 0, 0, 0, 20]);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.server_name, format!("__sg_{}", a.id));
    }

    #[test]
    fn a_failed_parse_removes_only_its_own_registration() {
        let r = Registry::default();
        let mut c = ClientStatements::default();
        let a = r.intern("select 1", &[0, 0]);
        let b = r.intern("select 2", &[0, 0]);
        c.insert("s", b.clone());
        c.remove_if("s", a.id);
        assert!(c.get("s").is_some());
        c.remove_if("s", b.id);
        assert!(c.get("s").is_none());
    }
}
