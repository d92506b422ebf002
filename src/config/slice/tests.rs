use super::*;
use crate::config::Config;

fn db(sharding: &str, default_shard: &str) -> DatabaseConfig {
    let yaml = format!(
        "listen: 127.0.0.1:6432\n\
         users: [{{ name: u, password: p }}]\n\
         databases:\n  app:\n    shards:\n\
         \x20     s0: {{ primary: \"postgres://u:p@127.0.0.1:5432/app\" }}\n\
         \x20     s1: {{ primary: \"postgres://u:p@127.0.0.1:5433/app\" }}\n\
         \x20     s2: {{ primary: \"postgres://u:p@127.0.0.1:5434/app\" }}\n\
         {default_shard}\
         \x20   sharding: {sharding}\n\
         \x20   tables: {{ users: id }}\n"
    );
    let config = Config::parse_with_env(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    config.databases["app"].clone()
}

fn range_db(map: &str, key_type: &str) -> DatabaseConfig {
    db(
        &format!("{{ key_type: {key_type}, function: range, map: [{map}] }}"),
        "",
    )
}

fn range(from: Option<i64>, to: Option<i64>) -> Slice {
    Slice::Range {
        from: from.map(Scalar::Int),
        to: to.map(Scalar::Int),
    }
}

/// A map's entries as `[from, to) shard`, `values shard`, `buckets shard`.
fn shown(entries: &[MapEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| {
            let what = match (&e.buckets, &e.values) {
                (Some(b), _) => b.clone(),
                (_, Some(v)) => Slice::Values(v.clone()).label(),
                _ => Slice::Range {
                    from: e.from.clone(),
                    to: e.to.clone(),
                }
                .label(),
            };
            format!("{what} {}", e.shard)
        })
        .collect()
}

/// `slice` moved to `owner` in `db`, and the result still a valid map.
fn moved(db: &DatabaseConfig, slice: &Slice, owner: &str) -> Vec<String> {
    let sharding = db.sharding.as_ref().unwrap();
    let entries = slice.map_with(sharding, owner).unwrap();
    let mut after = sharding.clone();
    after.map = entries.clone();
    let mut issues = crate::config::validate::Issues(Vec::new());
    crate::config::shardmap::check(&after, db, "databases.app.sharding", &mut issues);
    let problems: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
    assert!(problems.is_empty(), "{problems:?}");
    shown(&entries)
}

#[test]
fn a_range_is_split_out_of_its_entry_and_joined_again_when_it_comes_back() {
    let d = range_db(
        "{ from: null, to: 1000, shard: s0 }, { from: 1000, to: null, shard: s1 }",
        "bigint",
    );
    let s = d.sharding.as_ref().unwrap();
    let middle = range(Some(100), Some(200));
    assert_eq!(middle.owner(&d).unwrap(), "s0");
    assert_eq!(
        moved(&d, &middle, "s2"),
        [
            "[unbounded, 100) s0",
            "[100, 200) s2",
            "[200, 1000) s0",
            "[1000, unbounded) s1"
        ]
    );
    // Back to its owner: the map as it was.
    assert_eq!(
        moved(&d, &middle, "s0"),
        ["[unbounded, 1000) s0", "[1000, unbounded) s1"]
    );
    // The whole tail to the neighbour: one entry.
    assert_eq!(
        moved(&d, &range(Some(1000), None), "s0"),
        ["[unbounded, unbounded) s0"]
    );
    assert_eq!(
        moved(&d, &range(None, Some(10)), "s1"),
        [
            "[unbounded, 10) s1",
            "[10, 1000) s0",
            "[1000, unbounded) s1"
        ]
    );
    assert_eq!(range(Some(1000), Some(5000)).owner(&d).unwrap(), "s1");
    assert_eq!(range(None, Some(5)).owner(&d).unwrap(), "s0");
    assert!(middle.check(s).is_ok());
}

#[test]
fn a_range_owned_by_two_shards_or_by_none_is_refused_with_the_reason() {
    let d = range_db(
        "{ from: 0, to: 100, shard: s0 }, { from: 100, to: 200, shard: s1 }, { from: 300, to: 400, shard: s0 }",
        "bigint",
    );
    let s = d.sharding.as_ref().unwrap();
    assert_eq!(
        range(Some(50), Some(150)).owner(&d).unwrap_err(),
        "owned by \"s0\" ([0, 100)) and \"s1\" ([100, 200)); move one shard's keys per move"
    );
    for gap in [
        range(Some(150), Some(350)),
        range(None, Some(50)),
        range(Some(350), None),
        range(Some(200), Some(300)),
    ] {
        assert_eq!(
            gap.owner(&d).unwrap_err(),
            "part of it is in no range of the map: no shard owns those keys",
            "{gap:?}"
        );
    }
    assert_eq!(
        range(Some(5), Some(5)).check(s).unwrap_err(),
        "`from` (5) must be less than `to` (5)"
    );
    let text = Slice::Range {
        from: Some(Scalar::Text("a".into())),
        to: None,
    };
    assert_eq!(
        text.check(s).unwrap_err(),
        "expected a number for an integer key, got \"a\""
    );
    assert!(Slice::Values(vec![Scalar::Int(1)])
        .check(s)
        .unwrap_err()
        .starts_with("the map is a range map: move a range of keys"));
    assert!(range(Some(0), Some(10)).overlaps(&range(Some(9), None), s));
    assert!(!range(Some(0), Some(10)).overlaps(&range(Some(10), None), s));
    assert!(range(None, None).overlaps(&range(Some(10), Some(11)), s));
}

#[test]
fn text_ranges_compare_in_byte_order() {
    let d = range_db(
        "{ from: null, to: \"m\", shard: s0 }, { from: \"m\", to: null, shard: s1 }",
        "text",
    );
    let text = |from: &str, to: &str| Slice::Range {
        from: Some(Scalar::Text(from.into())),
        to: Some(Scalar::Text(to.into())),
    };
    // "Z" < "a" in bytes: [Z, a) is below "m".
    assert_eq!(text("Z", "a").owner(&d).unwrap(), "s0");
    assert!(text("a", "Z").check(d.sharding.as_ref().unwrap()).is_err());
    assert_eq!(
        moved(&d, &text("k", "p"), "s2"),
        [
            "[unbounded, \"k\") s0",
            "[\"k\", \"p\") s2",
            "[\"p\", unbounded) s1"
        ]
    );
}

#[test]
fn values_leave_their_list_for_the_new_owner_and_default_shard_values_can_move() {
    let map = "{ key_type: bigint, function: list, map: [{ values: [1, 2], shard: s0 }, { values: [3], shard: s1 }] }";
    let d = db(map, "    default_shard: s0\n");
    let s = d.sharding.as_ref().unwrap();
    let values = |v: &[i64]| Slice::Values(v.iter().copied().map(Scalar::Int).collect());
    assert_eq!(values(&[1, 2]).owner(&d).unwrap(), "s0");
    assert_eq!(values(&[7]).owner(&d).unwrap(), "s0", "the default shard's");
    assert_eq!(
        values(&[1, 3]).owner(&d).unwrap_err(),
        "owned by \"s0\" (1) and \"s1\" (3); move one shard's keys per move"
    );
    assert_eq!(moved(&d, &values(&[1]), "s1"), ["2 s0", "3, 1 s1"]);
    assert_eq!(moved(&d, &values(&[1, 2]), "s2"), ["3 s1", "1, 2 s2"]);
    assert_eq!(moved(&d, &values(&[7]), "s1"), ["1, 2 s0", "3, 7 s1"]);
    assert_eq!(values(&[1, 1]).check(s).unwrap_err(), "1 is given twice");
    assert!(values(&[1, 2]).overlaps(&values(&[2, 9]), s));
    assert!(!values(&[1, 2]).overlaps(&values(&[3]), s));
    let no_default = db(map, "");
    assert_eq!(
        values(&[7]).owner(&no_default).unwrap_err(),
        "value 7 is in no list and the database has no default_shard: no shard owns it"
    );
}

#[test]
fn buckets_move_as_runs_of_the_hash_map() {
    let d = db(
        "{ key_type: bigint, function: hash, buckets: 8, map: [{ buckets: 0-3, shard: s0 }, { buckets: 4-7, shard: s1 }] }",
        "",
    );
    let slice = Slice::Buckets { first: 2, last: 5 };
    assert_eq!(
        slice.owner(&d).unwrap_err(),
        "owned by \"s0\" (bucket 2) and \"s1\" (bucket 4); move one shard's keys per move"
    );
    let slice = Slice::Buckets { first: 2, last: 3 };
    assert_eq!(moved(&d, &slice, "s2"), ["0-1 s0", "2-3 s2", "4-7 s1"]);
    assert_eq!(moved(&d, &slice, "s1"), ["0-1 s0", "2-7 s1"]);
    assert_eq!(slice.describe(), "buckets 2-3");
    assert_eq!(Slice::Buckets { first: 7, last: 7 }.label(), "7");
}

#[test]
fn slices_round_trip_through_json_as_the_epochs_store_them() {
    for slice in [
        Slice::Buckets { first: 0, last: 9 },
        range(None, Some(10)),
        Slice::Values(vec![Scalar::Text("eu".into()), Scalar::Int(3)]),
    ] {
        let json = serde_json::to_value(&slice).unwrap();
        assert_eq!(serde_json::from_value::<Slice>(json).unwrap(), slice);
    }
    assert_eq!(
        serde_json::to_string(&range(Some(1), None)).unwrap(),
        r#"{"range":{"from":1,"to":null}}"#
    );
}
