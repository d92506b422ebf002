//! Merging rows in memory: what each grouping does, sorting with NULLs, windows, hidden columns,
//! and the refusal to order text under a collation shardgate cannot reproduce.

use bytes::{BufMut, Bytes, BytesMut};

use super::{merge, MergeError, ShardRows, Window};
use crate::merge::value::Style;
use crate::protocol::backend::Field;
use crate::router::merge::{Aggregate, Grouping, MergeSpec, Output, SortColumn, SortKey};

fn field(name: &str, oid: u32) -> Field {
    Field {
        name: name.into(),
        table: 0,
        column: 0,
        type_oid: oid,
        type_len: -1,
        type_mod: -1,
        format: 0,
    }
}

/// A DataRow body of text values.
fn row(values: &[Option<&str>]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v.as_bytes());
            }
            None => b.put_i32(-1),
        }
    }
    b.freeze()
}

fn spec(grouping: Grouping, outputs: Option<Vec<Output>>, order: Vec<SortKey>) -> MergeSpec {
    MergeSpec {
        shard_sql: None,
        outputs,
        hidden: 0,
        grouping,
        order,
        limit: None,
        offset: None,
    }
}

fn texts(merged: &super::Merged) -> Vec<Vec<Option<String>>> {
    merged
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect()
        })
        .collect()
}

fn shard(fields: &[Field], rows: &[&[Option<&str>]]) -> ShardRows {
    ShardRows {
        fields: fields.to_vec(),
        rows: rows.iter().map(|r| row(r)).collect(),
    }
}

#[test]
fn rows_are_sorted_across_shards_with_nulls_and_cut_to_the_window() {
    let f = [field("id", 20), field("name", 25)];
    let by_id_desc = SortKey {
        column: SortColumn::Index(0),
        desc: true,
        nulls_first: true,
    };
    let mut s = spec(Grouping::Rows, None, vec![by_id_desc]);
    s.hidden = 1;
    let merged = merge(
        &s,
        &Style::default(),
        Window {
            limit: Some(3),
            offset: 1,
        },
        "C",
        vec![
            shard(&f, &[&[Some("10"), Some("a")], &[Some("2"), Some("b")]]),
            shard(&f, &[&[None, Some("c")], &[Some("9"), Some("d")]]),
        ],
    )
    .unwrap();
    // NULL first (DESC), then 10, 9, 2; OFFSET 1 LIMIT 3; the hidden last column dropped.
    assert_eq!(
        texts(&merged),
        vec![
            vec![Some("10".into())],
            vec![Some("9".into())],
            vec![Some("2".into())]
        ]
    );
    assert_eq!(merged.fields, vec![field("id", 20)]);
}

#[test]
fn groups_spanning_shards_are_merged_into_one_row_each() {
    let f = [field("plan", 25), field("count", 20), field("max", 20)];
    let s = spec(
        Grouping::Groups(vec![0]),
        Some(vec![
            Output::Plain,
            Output::Agg(Aggregate::Count),
            Output::Agg(Aggregate::Max),
        ]),
        vec![],
    );
    let merged = merge(
        &s,
        &Style::default(),
        Window::default(),
        "C",
        vec![
            shard(
                &f,
                &[
                    &[Some("pro"), Some("2"), Some("7")],
                    &[Some("free"), Some("1"), Some("3")],
                ],
            ),
            shard(&f, &[&[Some("pro"), Some("5"), Some("4")]]),
        ],
    )
    .unwrap();
    let mut got = texts(&merged);
    got.sort();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got,
        vec![
            vec![s("free"), s("1"), s("3")],
            vec![s("pro"), s("7"), s("7")]
        ]
    );
}

#[test]
fn text_is_not_ordered_under_a_collation_other_than_c() {
    let f = [field("name", 25)];
    let by_name = SortKey {
        column: SortColumn::Index(0),
        desc: false,
        nulls_first: false,
    };
    let s = spec(Grouping::Rows, Some(vec![Output::Plain]), vec![by_name]);
    let err = merge(
        &s,
        &Style::default(),
        Window::default(),
        "en_US.UTF-8",
        vec![shard(&f, &[&[Some("b")]])],
    )
    .unwrap_err();
    assert!(matches!(err, MergeError::Collation(..)));
    assert_eq!(err.to_string(), "column \"name\" is text, and the shards' collation (en_US.UTF-8) orders text in ways shardgate does not reproduce");
    // Unordered rows need no comparison: fine under any collation.
    let s = spec(Grouping::Rows, Some(vec![Output::Plain]), vec![]);
    assert!(merge(
        &s,
        &Style::default(),
        Window::default(),
        "en_US.UTF-8",
        vec![shard(&f, &[&[Some("b")]])]
    )
    .is_ok());
}
