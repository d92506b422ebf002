use super::*;

fn config(extra_shard: bool) -> Config {
    let s2 = if extra_shard {
        "      s2: { primary: \"postgres://u:p@127.0.0.1:5434/app\" }\n"
    } else {
        ""
    };
    let yaml = format!(
        "listen: 127.0.0.1:6432\n\
         users: [{{ name: u, password: p }}]\n\
         databases:\n  app:\n    shards:\n\
         \x20     s0: {{ primary: \"postgres://u:p@127.0.0.1:5432/app\" }}\n\
         \x20     s1: {{ primary: \"postgres://u:p@127.0.0.1:5433/app\" }}\n{s2}\
         \x20   sharding:\n      key_type: bigint\n      function: hash\n      buckets: 1024\n\
         \x20     map: [{{ buckets: 0-511, shard: s0 }}, {{ buckets: 512-1023, shard: s1 }}]\n\
         \x20   tables: {{ users: id }}\n"
    );
    Config::parse_with_env(&yaml, &|_| None).expect("valid")
}

fn req(buckets: &str, to: &str) -> MoveRequest {
    MoveRequest {
        buckets: Some(buckets.into()),
        to: to.into(),
        ..MoveRequest::default()
    }
}

#[test]
fn a_move_takes_its_source_from_the_map_and_may_go_to_a_new_shard() {
    let moves = plan_moves(
        &config(true),
        "app",
        &[req("768-1023", "s2"), req("0-9", "s1")],
    );
    assert_eq!(
        moves.unwrap(),
        vec![
            Move {
                slice: Slice::Buckets {
                    first: 768,
                    last: 1023
                },
                from: "s1".into(),
                to: "s2".into()
            },
            Move {
                slice: Slice::Buckets { first: 0, last: 9 },
                from: "s0".into(),
                to: "s1".into()
            },
        ]
    );
}

#[test]
fn moves_that_cannot_be_done_say_why() {
    let c = config(false);
    let cases = [
        ("nope", vec![req("0-9", "s1")], "no database \"nope\" in the config"),
        ("app", vec![], "no moves: give at least one, e.g. {\"buckets\": \"a-b\", \"to\": \"shard\"}"),
        (
            "app",
            vec![req("0-9", "s9")],
            "buckets 0-9: no shard \"s9\" in the config (its shards: [\"s0\", \"s1\"]); add it to the config first",
        ),
        (
            "app",
            vec![req("500-600", "s1")],
            "buckets 500-600: owned by \"s0\" (bucket 500) and \"s1\" (bucket 512); move one shard's keys per move",
        ),
        ("app", vec![req("600-700", "s1")], "buckets 600-700: already on \"s1\""),
        (
            "app",
            vec![req("0-9", "s1"), req("5-20", "s1")],
            "buckets 5-20 overlap buckets 0-9",
        ),
    ];
    for (db, moves, want) in cases {
        assert_eq!(plan_moves(&c, db, &moves).unwrap_err(), want);
    }
    assert!(plan_moves(&c, "app", &[req("0-2000", "s1")]).is_err());
    let range = MoveRequest {
        range: Some(RangeRequest {
            from: None,
            to: Some(Scalar::Int(5)),
        }),
        to: "s1".into(),
        ..MoveRequest::default()
    };
    assert!(plan_moves(&c, "app", &[range])
        .unwrap_err()
        .starts_with("keys [unbounded, 5): the map is a hash map: move buckets"));
    let both = MoveRequest {
        values: Some(vec![Scalar::Int(1)]),
        ..req("0-9", "s1")
    };
    assert_eq!(
        plan_moves(&c, "app", &[both]).unwrap_err(),
        "a move to \"s1\" names more than one thing to move: give exactly one of \"buckets\" (hash maps), \"range\" (range maps) or \"values\" (list maps)"
    );
}

#[test]
fn phases_round_trip_and_say_what_they_allow() {
    for p in Phase::ALL {
        assert_eq!(Phase::parse(p.name()), Some(p));
    }
    assert!(Phase::Preflight.may_abort() && !Phase::Cutover.may_abort());
    assert!(Phase::Aborted.is_final() && !Phase::Backfill.is_final());
}

#[test]
fn range_and_list_maps_take_moves_of_their_own_kind() {
    let yaml = "listen: 127.0.0.1:6432\n\
        users: [{ name: u, password: p }]\n\
        databases:\n  app:\n    shards:\n\
        \x20     s0: { primary: \"postgres://u:p@127.0.0.1:5432/app\" }\n\
        \x20     s1: { primary: \"postgres://u:p@127.0.0.1:5433/app\" }\n\
        \x20   sharding: { key_type: bigint, function: range, map: [\
        { from: null, to: 100, shard: s0 }, { from: 100, to: null, shard: s1 }] }\n\
        \x20   tables: { users: id }\n";
    let c = Config::parse_with_env(yaml, &|_| None).expect("valid");
    let range = |from: i64, to: i64, shard: &str| MoveRequest {
        range: Some(RangeRequest {
            from: Some(Scalar::Int(from)),
            to: Some(Scalar::Int(to)),
        }),
        to: shard.into(),
        ..MoveRequest::default()
    };
    let moves = plan_moves(&c, "app", &[range(10, 20, "s1"), range(150, 160, "s0")]).unwrap();
    assert_eq!(
        moves
            .iter()
            .map(|m| (m.what(), m.from.as_str()))
            .collect::<Vec<_>>(),
        [
            ("keys [10, 20)".to_string(), "s0"),
            ("keys [150, 160)".to_string(), "s1")
        ]
    );
    let cases = [
        (
            vec![req("0-9", "s1")],
            "buckets 0-9: the map is a range map: move a range of keys ({\"range\": {\"from\": a, \"to\": b}, \"to\": …})",
        ),
        (
            vec![range(10, 20, "s1"), range(15, 30, "s1")],
            "keys [15, 30) overlap keys [10, 20)",
        ),
        (
            vec![range(90, 110, "s1")],
            "keys [90, 110): owned by \"s0\" ([unbounded, 100)) and \"s1\" ([100, unbounded)); move one shard's keys per move",
        ),
        (vec![range(150, 160, "s1")], "keys [150, 160): already on \"s1\""),
    ];
    for (moves, want) in cases {
        assert_eq!(plan_moves(&c, "app", &moves).unwrap_err(), want);
    }
}
