//! STUB until the values branch lands: the interface of typed values for merging.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub oid: u32,
    pub binary: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub extra_float_digits: i32,
    pub iso_dates: bool,
}

impl Default for Style {
    fn default() -> Self {
        Style {
            extra_float_digits: 1,
            iso_dates: true,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ValueError {
    #[error("cannot merge values of type {oid}: {what}")]
    Unsupported { oid: u32, what: String },
}

pub fn comparable(oid: u32) -> bool {
    matches!(oid, 20 | 21 | 23 | 25 | 1043)
}

pub fn compare(col: Column, _: &Style, a: &[u8], b: &[u8]) -> Result<Ordering, ValueError> {
    match (col.oid, col.binary) {
        (20 | 21 | 23, false) => {
            let p = |v: &[u8]| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
            };
            Ok(p(a).cmp(&p(b)))
        }
        _ => Ok(a.cmp(b)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
}

pub struct Acc {
    kind: AggKind,
    col: Column,
    sum: Option<i64>,
    best: Option<Vec<u8>>,
}

impl Acc {
    pub fn new(kind: AggKind, col: Column) -> Result<Acc, ValueError> {
        Ok(Acc {
            kind,
            col,
            sum: None,
            best: None,
        })
    }

    pub fn add(&mut self, style: &Style, partial: Option<&[u8]>) -> Result<(), ValueError> {
        let Some(v) = partial else { return Ok(()) };
        match self.kind {
            AggKind::Count | AggKind::Sum => {
                let n = if self.col.binary {
                    i64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
                } else {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                };
                self.sum = Some(self.sum.unwrap_or(0) + n);
            }
            AggKind::Min | AggKind::Max => {
                let better = match &self.best {
                    None => true,
                    Some(b) => {
                        let o = compare(self.col, style, v, b)?;
                        (self.kind == AggKind::Min) == (o == Ordering::Less) && o != Ordering::Equal
                    }
                };
                if better {
                    self.best = Some(v.to_vec());
                }
            }
        }
        Ok(())
    }

    pub fn finish(&self, _: &Style) -> Result<Option<Vec<u8>>, ValueError> {
        Ok(match self.kind {
            AggKind::Count | AggKind::Sum => self.sum.map(|n| {
                if self.col.binary {
                    n.to_be_bytes().to_vec()
                } else {
                    n.to_string().into_bytes()
                }
            }),
            _ => self.best.clone(),
        })
    }
}

pub struct AvgAcc;

impl AvgAcc {
    pub fn new(sum: Column, _count: Column, _out_binary: bool) -> Result<AvgAcc, ValueError> {
        Err(ValueError::Unsupported {
            oid: sum.oid,
            what: "avg (stub)".into(),
        })
    }
    pub fn add(&mut self, _: &Style, _: Option<&[u8]>, _: Option<&[u8]>) -> Result<(), ValueError> {
        Ok(())
    }
    pub fn result_oid(&self) -> u32 {
        1700
    }
    pub fn finish(&self, _: &Style) -> Result<Option<Vec<u8>>, ValueError> {
        Ok(None)
    }
}
