//! A serde `Deserializer` over the located tree of `tree.rs`, so that every type error, unknown key
//! and missing key names its YAML path and line/column.

use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

use super::tree::{child_path, index_path, Node, Value};
use super::ConfigIssue;

/// A typing error; the path and location are filled in by the innermost node that saw it.
#[derive(Debug)]
pub(crate) struct DeError {
    problem: String,
    /// Set by `missing_field`: the issue is about this child of the node, not the node itself.
    missing: Option<&'static str>,
    located: Option<(String, u64, u64)>,
}

impl DeError {
    fn at(mut self, path: &str, node: &Node) -> Self {
        if self.located.is_none() {
            let path = match self.missing {
                Some(field) => child_path(path, field),
                None => path.to_string(),
            };
            self.located = Some((path, node.line, node.column));
        }
        self
    }

    pub fn into_issue(self) -> ConfigIssue {
        match self.located {
            Some((path, line, column)) => ConfigIssue::new(&path, self.problem).at(line, column),
            None => ConfigIssue::new("(document)", self.problem),
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            problem: msg.to_string(),
            missing: None,
            located: None,
        }
    }
    fn missing_field(field: &'static str) -> Self {
        DeError {
            problem: "required key is missing".into(),
            missing: Some(field),
            located: None,
        }
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let problem = format!(
            "unknown key `{field}` (expected one of: {})",
            expected.join(", ")
        );
        DeError {
            problem,
            missing: None,
            located: None,
        }
    }
}

/// Deserializes one node; `path` is its YAML path.
pub(crate) struct NodeDe<'a> {
    pub node: &'a Node,
    pub path: String,
}

impl<'a> NodeDe<'a> {
    fn any<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.node;
        let result = match &node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                path: &self.path,
                value: None,
            }),
        };
        result.map_err(|e: DeError| e.at(&self.path, node))
    }

    /// Integers also come from strings (`size: ${POOL_SIZE}`) and from the written form of a scalar
    /// YAML typed otherwise (`0123` is a float to YAML 1.2 but means 123 here).
    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let text = match (&self.node.value, &self.node.source) {
            (Value::Str(s), _) => Some(s.trim()),
            (Value::Float(_), Some(src)) => Some(src.as_str()),
            _ => None,
        };
        if let Some(text) = text {
            let result = if let Ok(i) = text.parse::<i64>() {
                visitor.visit_i64(i)
            } else if let Ok(u) = text.parse::<u64>() {
                visitor.visit_u64(u)
            } else {
                Err(de::Error::invalid_type(de::Unexpected::Str(text), &visitor))
            };
            return result.map_err(|e: DeError| e.at(&self.path, self.node));
        }
        self.any(visitor)
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.integer(visitor)
        }
    )*};
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.any(visitor)
    }

    integers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
              deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) if matches!(s.trim(), "true" | "false") => {
                let b = s.trim() == "true";
                visitor
                    .visit_bool(b)
                    .map_err(|e: DeError| e.at(&self.path, self.node))
            }
            _ => self.any(visitor),
        }
    }

    /// Strings are taken as written: `password: 0123` is the text `0123`.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.source {
            Some(src) => visitor
                .visit_str(src)
                .map_err(|e: DeError| e.at(&self.path, self.node)),
            None => self.any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let (path, node) = (self.path.clone(), self.node);
        let result = match node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        };
        result.map_err(|e: DeError| e.at(&path, node))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (path, node) = (self.path.clone(), self.node);
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: DeError| e.at(&path, node))
    }

    /// Enums in the config are all unit variants written as a plain string (`mode: session`).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => {
                let variant: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor
                    .visit_enum(variant)
                    .map_err(|e: DeError| e.at(&self.path, self.node))
            }
            _ => self.any(visitor),
        }
    }

    forward_to_deserialize_any! {
        f32 f64 char bytes byte_buf unit unit_struct seq tuple tuple_struct map struct ignored_any
        i128 u128
    }
}

struct Seq<'a, I> {
    items: I,
    path: &'a str,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> SeqAccess<'de> for Seq<'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => seed
                .deserialize(NodeDe {
                    node,
                    path: index_path(self.path, i),
                })
                .map(Some),
            None => Ok(None),
        }
    }
}

struct Map<'a, I> {
    entries: I,
    path: &'a str,
    /// The value of the key just handed out, with that key's path.
    value: Option<(&'a Node, String)>,
}

impl<'de, 'a, I: Iterator<Item = &'a (Node, Node)>> MapAccess<'de> for Map<'a, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let path = child_path(self.path, &key.key_text());
        self.value = Some((value, path.clone()));
        seed.deserialize(NodeDe { node: key, path }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some((node, path)) => seed.deserialize(NodeDe { node, path }),
            None => Err(de::Error::custom(
                "internal: map value requested before its key",
            )),
        }
    }
}
