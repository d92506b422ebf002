//! Placement: the shard a key goes to is the one the map gives it, for hash maps of any shape
//! (property tests), range maps and list maps.

use proptest::prelude::*;

use super::support::*;
use crate::router::hash::{bucket_of, hash_int, hash_text};
use crate::router::{KeyProblem, Plan, RouteError, Target};

const RANGE: &str = r#"
    shards:
      s0: { primary: "postgres://u:p@127.0.0.1:1/app" }
      s1: { primary: "postgres://u:p@127.0.0.1:2/app" }
      s2: { primary: "postgres://u:p@127.0.0.1:3/app" }
    sharding:
      key_type: bigint
      function: range
      map:
        - { from: null, to: 0, shard: s2 }
        - { from: 0, to: 1000, shard: s0 }
        - { from: 1000, to: 5000, shard: s1 }
    tables: { users: id, orders: user_id }
    default_shard: s0
"#;

const LIST: &str = r#"
    shards:
      s0: { primary: "postgres://u:p@127.0.0.1:1/app" }
      s1: { primary: "postgres://u:p@127.0.0.1:2/app" }
      s2: { primary: "postgres://u:p@127.0.0.1:3/app" }
    sharding:
      key_type: text
      function: list
      map:
        - { values: [eu, uk], shard: s1 }
        - { values: [us], shard: s2 }
    tables: { tenants: region, orders: region }
    default_shard: s0
"#;

#[test]
fn range_maps_route_by_range_and_refuse_keys_no_range_covers() {
    let r = router(RANGE);
    for (k, shard) in [
        (-1, 2),
        (i64::MIN, 2),
        (0, 0),
        (999, 0),
        (1000, 1),
        (4999, 1),
    ] {
        assert_eq!(
            simple(&r, &format!("SELECT * FROM users WHERE id = {k}")),
            one(shard),
            "{k}"
        );
        assert_eq!(
            ext(&r, "INSERT INTO orders (user_id) VALUES ($1)", &[P::B8(k)]),
            one(shard),
            "{k}"
        );
    }
    let err = simple(&r, "SELECT * FROM users WHERE id = 5000").unwrap_err();
    assert_eq!(
        err,
        RouteError::BadKey(
            KeyProblem::Unowned,
            "no shard owns key 5000 of \"users\"".into()
        )
    );
    assert_eq!(
        simple(&r, "SELECT * FROM users WHERE id IN (5, 1005)"),
        Ok(Target::Shards(vec![0, 1]))
    );
    assert_eq!(simple(&r, "SELECT * FROM users"), all3());
}

#[test]
fn list_maps_route_listed_values_and_send_the_rest_to_the_default_shard() {
    let r = router(LIST);
    for (k, shard) in [("eu", 1), ("uk", 1), ("us", 2), ("br", 0), ("EU", 0)] {
        assert_eq!(
            simple(&r, &format!("SELECT * FROM tenants WHERE region = '{k}'")),
            one(shard),
            "{k}"
        );
        assert_eq!(
            ext(&r, "SELECT * FROM orders WHERE region = $1", &[t(k)]),
            one(shard),
            "{k}"
        );
    }
    assert_eq!(
        simple(
            &r,
            "SELECT * FROM tenants t JOIN orders o USING (region) WHERE t.region IN ('eu', 'us')"
        ),
        Ok(Target::Shards(vec![1, 2]))
    );
    let no_default = router(&LIST.replace("    default_shard: s0\n", ""));
    let err = simple(&no_default, "SELECT * FROM tenants WHERE region = 'br'").unwrap_err();
    assert_eq!(err.to_string(), "no shard owns key br of \"tenants\"");
    assert_eq!(
        simple(&no_default, "SELECT * FROM tenants"),
        Ok(Target::Shards(vec![1, 2]))
    );
}

#[test]
fn a_database_with_one_shard_is_not_routed() {
    let r = router("    shards:\n      s0: { primary: \"postgres://u:p@127.0.0.1:1/app\" }\n");
    assert!(!r.is_sharded());
    assert_eq!(plan(&r, "DELETE FROM users"), Plan::Anywhere);
    assert_eq!(simple(&r, "TABLE users"), Ok(Target::Any));
}

/// A hash map: `ranges` are (first bucket, shard) in ascending order, each running to the next.
fn hash_map_yaml(buckets: u32, ranges: &[(u32, usize)], shards: usize, key_type: &str) -> String {
    let mut yaml = String::from("    shards:\n");
    for s in 0..shards {
        yaml += &format!(
            "      s{s}: {{ primary: \"postgres://u:p@127.0.0.1:{}/app\" }}\n",
            s + 1
        );
    }
    yaml += &format!("    sharding:\n      key_type: {key_type}\n      function: hash\n      buckets: {buckets}\n      map:\n");
    for (i, &(start, shard)) in ranges.iter().enumerate() {
        let end = ranges.get(i + 1).map_or(buckets, |r| r.0) - 1;
        yaml += &format!("        - {{ buckets: \"{start}-{end}\", shard: s{shard} }}\n");
    }
    yaml + "    tables: { users: id }\n"
}

fn owner_in(ranges: &[(u32, usize)], bucket: u32) -> usize {
    ranges
        .iter()
        .rev()
        .find(|r| r.0 <= bucket)
        .expect("bucket 0 is covered")
        .1
}

/// 2–5 shards, 1–4096 buckets, cut into contiguous ranges each given to a random shard.
fn hash_maps() -> impl Strategy<Value = (u32, usize, Vec<(u32, usize)>)> {
    (2usize..=5, 1u32..=4096).prop_flat_map(|(shards, buckets)| {
        let cuts = proptest::collection::btree_set(
            1..buckets.max(2),
            0..(2 * shards).min(buckets as usize),
        );
        (
            Just(buckets),
            Just(shards),
            cuts,
            proptest::collection::vec(0..shards, 2 * shards + 1),
        )
            .prop_map(|(buckets, shards, cuts, owners)| {
                let starts = std::iter::once(0).chain(cuts.into_iter().filter(|&c| c < buckets));
                let ranges = starts.zip(owners).collect();
                (buckets, shards, ranges)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_integer_key_goes_to_the_shard_owning_its_bucket(
        (buckets, shards, ranges) in hash_maps(),
        keys in proptest::collection::vec(any::<i64>(), 1..24),
    ) {
        let r = router(&hash_map_yaml(buckets, &ranges, shards, "bigint"));
        let by_param = r.plan("SELECT * FROM users WHERE id = $1");
        for k in keys {
            let expected = Ok(Target::Shard(owner_in(&ranges, bucket_of(hash_int(k), buckets))));
            for p in [t(k), P::B8(k)] {
                let bytes = bind_bytes(&[p]);
                let params = crate::router::Params::decode(&bytes).unwrap();
                prop_assert_eq!(r.resolve(&by_param, Some(&params), None), expected.clone());
            }
            if let Ok(small) = i32::try_from(k) {
                prop_assert_eq!(ext(&r, "SELECT * FROM users WHERE id = $1", &[P::B4(small)]), expected.clone());
            }
            prop_assert_eq!(simple(&r, &format!("SELECT * FROM users WHERE id = {k}")), expected.clone());
            prop_assert_eq!(simple(&r, &format!("SELECT * FROM users WHERE id = '{k}'::bigint")), expected.clone());
            prop_assert_eq!(simple(&r, &format!("INSERT INTO users (id) VALUES ({k})")), expected);
        }
    }

    #[test]
    fn every_text_key_goes_to_the_shard_owning_its_bucket(
        (buckets, shards, ranges) in hash_maps(),
        keys in proptest::collection::vec("[^\u{0}]{0,12}", 1..12),
    ) {
        let r = router(&hash_map_yaml(buckets, &ranges, shards, "text"));
        for k in keys {
            let expected = Ok(Target::Shard(owner_in(&ranges, bucket_of(hash_text(k.as_bytes()), buckets))));
            prop_assert_eq!(ext(&r, "SELECT * FROM users WHERE id = $1", &[t(&k)]), expected.clone());
            let quoted = k.replace('\'', "''");
            prop_assert_eq!(simple(&r, &format!("SELECT * FROM users WHERE id = '{quoted}'")), expected.clone());
            let array = format!("{{\"{}\"}}", k.replace('\\', "\\\\").replace('"', "\\\""));
            prop_assert_eq!(ext(&r, "SELECT * FROM users WHERE id = ANY($1)", &[t(array)]), expected);
        }
    }
}
