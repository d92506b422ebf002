//! TEMPORARY stub until the real implementation lands from the router-hash branch.
use crate::config::KeyType;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Int(i64),
    Text(String),
    Uuid([u8; 16]),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid key {0}")]
    Invalid(String),
}

impl KeyValue {
    pub fn hash(&self) -> u64 {
        match self {
            KeyValue::Int(i) => super::hash::hash_int(*i),
            KeyValue::Text(t) => super::hash::hash_text(t.as_bytes()),
            KeyValue::Uuid(u) => super::hash::hash_uuid(u),
        }
    }
    pub fn from_text(key_type: KeyType, s: &str) -> Result<KeyValue, KeyError> {
        match key_type {
            KeyType::Bigint | KeyType::Integer => s
                .trim()
                .parse()
                .map(KeyValue::Int)
                .map_err(|_| KeyError::Invalid(s.into())),
            KeyType::Text => Ok(KeyValue::Text(s.into())),
            KeyType::Uuid => Err(KeyError::Invalid(s.into())),
        }
    }
    pub fn from_binary(key_type: KeyType, b: &[u8]) -> Result<KeyValue, KeyError> {
        match (key_type, b.len()) {
            (KeyType::Bigint | KeyType::Integer, 8) => {
                Ok(KeyValue::Int(i64::from_be_bytes(b.try_into().unwrap())))
            }
            (KeyType::Bigint | KeyType::Integer, 4) => Ok(KeyValue::Int(
                i32::from_be_bytes(b.try_into().unwrap()) as i64,
            )),
            (KeyType::Text, _) => String::from_utf8(b.to_vec())
                .map(KeyValue::Text)
                .map_err(|_| KeyError::Invalid("utf8".into())),
            _ => Err(KeyError::Invalid("binary".into())),
        }
    }
}

impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Int(i) => write!(f, "{i}"),
            KeyValue::Text(t) => write!(f, "{t}"),
            KeyValue::Uuid(u) => write!(f, "{u:?}"),
        }
    }
}
