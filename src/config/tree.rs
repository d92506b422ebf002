//! The YAML document as a tree of located nodes, before it is given Rust types.
//!
//! Why a tree and not `serde_saphyr::from_str::<Config>` directly: serde-saphyr's errors carry a line
//! and column but not the YAML path, and `${VAR}` must be expanded on parsed string scalars (pasting
//! values into the YAML text would let a password like `p@ss: wo#rd"'` change the document's shape).
//! So the text is parsed once into [`Node`]s (each knowing its line and column), duplicate keys are
//! found and variables expanded with full paths, and only then is the typed `Config` built from the
//! tree by `de::NodeDe`, which also names the path of every type error.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

use super::ConfigIssue;

/// One YAML node with where it starts in the text (1-based line and column).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub value: Value,
    /// For booleans and numbers: the scalar as written (`0123`, `1e3`), so a string field such as a
    /// password that happens to look like a number arrives exactly as written.
    pub source: Option<String>,
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The text of a key (or any scalar), for paths and messages.
    pub fn key_text(&self) -> String {
        match (&self.value, &self.source) {
            (Value::Str(s), _) => s.clone(),
            (_, Some(src)) => src.clone(),
            (Value::Null, None) => "null".into(),
            _ => "?".into(),
        }
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Parses YAML text into a located tree. Duplicate keys are let through here (and reported with
/// their path by [`find_duplicate_keys`]); syntax errors come back with serde-saphyr's location.
pub(crate) fn parse_tree(text: &str) -> Result<Node, ConfigIssue> {
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(root) => Ok(to_node(root, text)),
        Err(e) => {
            let location = e.location();
            // The message repeats the location as a "line L column C: " prefix; keep just the words.
            let message = e.without_snippet().to_string();
            let problem = match message.split_once(": ") {
                Some((head, rest))
                    if head.starts_with("error: line") || head.starts_with("line") =>
                {
                    rest.to_string()
                }
                _ => message,
            };
            // ...and some messages end with " at line L, column C", which the issue shows anyway.
            let problem = match problem.rfind(" at line ") {
                Some(at) if location.is_some() => problem[..at].to_string(),
                _ => problem,
            };
            let mut problem = format!("invalid YAML: {problem}");
            let line = location.filter(|l| l.line() > 0).map(|l| l.line());
            let line_text = line.and_then(|l| text.lines().nth(usize::try_from(l).ok()? - 1));
            // A plain `${VAR}` inside `{ }` or `[ ]` ends at its `{`: YAML's rule, an easy trap.
            if line_text.is_some_and(|t| t.contains("${")) {
                problem.push_str(
                    " (inside `{ }` or `[ ]`, quote values that use a variable: \"${VAR}\")",
                );
            }
            let mut issue = ConfigIssue::new("(document)", problem);
            if let Some(loc) = location.filter(|l| l.line() > 0) {
                issue = issue.at(loc.line(), loc.column());
            }
            Err(issue)
        }
    }
}

/// Reports every key that appears twice in one mapping, at the second occurrence.
pub(crate) fn find_duplicate_keys(node: &Node, path: &str, issues: &mut Vec<ConfigIssue>) {
    match &node.value {
        Value::Map(entries) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                let name = key.key_text();
                let key_path = child_path(path, &name);
                if let Some((first, _)) = entries[..i].iter().find(|(k, _)| k.key_text() == name) {
                    let problem = format!("duplicate key (first defined at line {})", first.line);
                    issues.push(ConfigIssue::new(&key_path, problem).at(key.line, key.column));
                }
                find_duplicate_keys(value, &key_path, issues);
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                find_duplicate_keys(item, &index_path(path, i), issues);
            }
        }
        _ => {}
    }
}

/// Finds the node at a path made by [`child_path`] / [`index_path`], for the location of an issue
/// found after typing; when the path names something absent (a missing key), its deepest existing
/// ancestor. Best effort: a key that itself contains `.` or `[` stops the walk early.
pub(crate) fn locate<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = root;
    let mut found = None;
    for segment in path.split('.') {
        let (key, indexes) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            let Value::Map(entries) = &node.value else {
                return found;
            };
            let Some((_, value)) = entries.iter().rev().find(|(k, _)| k.key_text() == key) else {
                return found;
            };
            node = value;
            found = Some(node);
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Value::Seq(items) = &node.value else {
                return found;
            };
            let Some(item) = index.parse::<usize>().ok().and_then(|i| items.get(i)) else {
                return found;
            };
            node = item;
            found = Some(node);
        }
    }
    found
}

fn to_node(spanned: Spanned<Raw>, text: &str) -> Node {
    let loc = spanned.referenced;
    let span = spanned.defined.span();
    let source_text = || {
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        text.get(start..start.checked_add(len)?)
            .map(|s| s.trim().to_string())
    };
    let (value, source) = match spanned.value {
        Raw::Null => (Value::Null, None),
        Raw::Bool(b) => (Value::Bool(b), source_text()),
        Raw::Int(i) => (Value::Int(i), source_text()),
        Raw::UInt(u) => (Value::UInt(u), source_text()),
        Raw::Float(f) => (Value::Float(f), source_text()),
        Raw::Str(s) => (Value::Str(s), None),
        Raw::Seq(items) => (
            Value::Seq(items.into_iter().map(|n| to_node(n, text)).collect()),
            None,
        ),
        Raw::Map(entries) => {
            let entries = entries
                .into_iter()
                .map(|(k, v)| (to_node(k, text), to_node(v, text)));
            (Value::Map(entries.collect()), None)
        }
    };
    Node {
        value,
        source,
        line: loc.line(),
        column: loc.column(),
    }
}

/// What serde-saphyr hands us through `deserialize_any`, with a location on every node.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        Err(E::invalid_type(de::Unexpected::Bytes(v), &self))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}
