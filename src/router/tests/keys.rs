//! Where the key comes from: literals, casts, bind parameters (text and binary), IN, = ANY, OR.

use super::support::*;
use crate::router::{KeyProblem, KeySource, KeyValue, Keyed, Plan, RouteError, Target};

#[test]
fn a_point_select_with_a_literal_goes_to_the_owner_of_the_key() {
    let r = hash();
    for shard in 0..3 {
        let k = key_on(shard);
        assert_eq!(
            simple(&r, &format!("SELECT * FROM users WHERE id = {k}")),
            one(shard)
        );
        assert_eq!(
            simple(&r, &format!("SELECT * FROM users WHERE {k} = id")),
            one(shard)
        );
    }
    assert_eq!(
        plan(&r, "SELECT * FROM users WHERE id = 42"),
        Plan::Keyed(Keyed {
            table: "users".into(),
            keys: vec![KeySource::Value(KeyValue::Int(42))],
            write: false,
            rows: false,
            colocated: true,
            merge: None,
            split: None,
        })
    );
}

#[test]
fn literal_spellings_are_read_as_postgres_reads_them() {
    let r = hash();
    for k in [42i64, -1, -42, i64::MIN, i64::MAX, 0] {
        let expected = one(owner(k));
        for sql in [
            format!("SELECT * FROM users WHERE id = {k}"),
            format!("SELECT * FROM users WHERE id = '{k}'"),
            format!("SELECT * FROM users WHERE id = ' {k} '"),
            format!("SELECT * FROM users WHERE id = {k}::bigint"),
            format!("SELECT * FROM users WHERE id = ({k})::bigint"),
            format!("SELECT * FROM users WHERE id = '{k}'::int8"),
            format!("SELECT * FROM users WHERE id = CAST('{k}' AS bigint)"),
            format!("SELECT * FROM users WHERE (id) = ({k})"),
            format!("SELECT * FROM users WHERE id = $${k}$$"),
        ] {
            if k == i64::MIN && sql.ends_with(&format!("= {k}::bigint")) {
                // `-9223372036854775808::bigint` is `-(9223372036854775808::bigint)`: out of
                // range in Postgres, so not a key here either.
                assert_eq!(simple(&r, &sql), all3(), "{sql}");
                continue;
            }
            assert_eq!(simple(&r, &sql), expected, "{sql}");
        }
    }
    // Negative numbers are a unary minus on a literal.
    assert_eq!(
        simple(&r, "SELECT * FROM users WHERE id = -7"),
        one(owner(-7))
    );
    assert_eq!(
        simple(&r, "SELECT * FROM users WHERE id = - 7"),
        one(owner(-7))
    );
}

#[test]
fn values_that_are_not_plainly_the_key_leave_the_statement_unpinned() {
    let r = hash();
    for sql in [
        "SELECT * FROM users WHERE id = 5.0",
        "SELECT * FROM users WHERE id = 1e3",
        "SELECT * FROM users WHERE id = 5 + 0",
        "SELECT * FROM users WHERE id = '5'::numeric",
        "SELECT * FROM users WHERE id = +5",
        "SELECT * FROM users WHERE id = 'abc'",
        "SELECT * FROM users WHERE id = bigint '5'",
        "SELECT * FROM users WHERE id <> 5",
        "SELECT * FROM users WHERE id > 5",
        "SELECT * FROM users WHERE id BETWEEN 5 AND 5",
        "SELECT * FROM users WHERE NOT id = 5",
        "SELECT * FROM users WHERE id = 5 OR name = 'x'",
        "SELECT * FROM users WHERE id NOT IN (1, 2)",
        "SELECT * FROM users WHERE id = ALL('{5}')",
        "SELECT * FROM users WHERE id IS NULL",
        "SELECT * FROM users WHERE id = other_id",
        "SELECT * FROM users WHERE \"ID\" = 5",
        "SELECT * FROM users GROUP BY id HAVING id = 5",
    ] {
        assert!(
            matches!(plan(&r, sql), Plan::Scatter(_)),
            "{sql}: {:?}",
            plan(&r, sql)
        );
        assert_eq!(simple(&r, sql), all3(), "{sql}");
    }
}

#[test]
fn bind_parameters_in_text_and_binary_format() {
    let r = hash();
    let sql = "SELECT * FROM users WHERE id = $1";
    for k in [1i64, 42, -3, 1 << 40, i64::MIN] {
        let expected = one(owner(k));
        assert_eq!(ext(&r, sql, &[t(k)]), expected);
        assert_eq!(ext(&r, sql, &[P::B8(k)]), expected);
        assert_eq!(
            ext(&r, "SELECT * FROM users WHERE id = $1::bigint", &[t(k)]),
            expected
        );
        assert_eq!(
            ext(
                &r,
                "SELECT * FROM users WHERE id = CAST($1 AS int8)",
                &[P::B8(k)]
            ),
            expected
        );
        assert_eq!(
            ext(
                &r,
                "SELECT * FROM users WHERE name = $1 AND id = $2",
                &[t("x"), t(k)]
            ),
            expected
        );
    }
    // int4 and int8 hash alike: a client may send either width.
    assert_eq!(ext(&r, sql, &[P::B4(77)]), one(owner(77)));
    // The statement is planned once for all parameter values.
    assert_eq!(
        plan(&r, sql),
        Plan::Keyed(Keyed {
            table: "users".into(),
            keys: vec![KeySource::Param(0)],
            write: false,
            rows: false,
            colocated: true,
            merge: None,
            split: None,
        })
    );
}

#[test]
fn bad_parameters_are_client_errors_that_name_the_parameter() {
    let r = hash();
    let sql = "SELECT * FROM users WHERE id = $2";
    let err = ext(&r, sql, &[t(1)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the statement uses parameter $2 but the Bind has 1"
    );
    let err = ext(&r, sql, &[t(1)]).unwrap_err();
    assert!(
        matches!(err, RouteError::BadKey(KeyProblem::Protocol, _)),
        "{err:?}"
    );
    let err = ext(&r, sql, &[t(1), t("x1")]).unwrap_err();
    assert!(
        matches!(err, RouteError::BadKey(KeyProblem::Syntax, _)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("parameter $2: invalid input for"),
        "{err}"
    );
    let err = ext(&r, sql, &[t(1), t("9223372036854775808")]).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn in_lists_any_arrays_and_ors_go_to_every_owner() {
    let r = hash();
    let (a, b, c) = (key_on(0), key_on(1), key_on(2));
    let ab = Ok(owners(&[a, b]));
    assert_eq!(
        simple(&r, &format!("SELECT * FROM users WHERE id IN ({a}, {b})")),
        ab
    );
    assert_eq!(
        simple(&r, &format!("SELECT * FROM users WHERE id IN ({a}, {a})")),
        one(0)
    );
    assert_eq!(
        simple(
            &r,
            &format!("SELECT * FROM users WHERE id = {a} OR id = {b}")
        ),
        ab
    );
    assert_eq!(
        simple(
            &r,
            &format!("SELECT * FROM users WHERE (id = {a} AND x) OR (y AND id = {b})")
        ),
        ab
    );
    assert_eq!(
        simple(
            &r,
            &format!("SELECT * FROM users WHERE id = ANY(ARRAY[{a}, {b}])")
        ),
        ab
    );
    assert_eq!(
        ext(
            &r,
            "SELECT * FROM users WHERE id IN ($1, $2, $3)",
            &[t(a), t(b), t(c)]
        ),
        all3()
    );
    let any = "SELECT * FROM users WHERE id = ANY($1)";
    assert_eq!(ext(&r, any, &[t(format!("{{{a},{b}}}"))]), ab);
    assert_eq!(ext(&r, any, &[t(format!("{{ \"{a}\" , {b} }}"))]), ab);
    assert_eq!(
        ext(&r, any, &[P::BArr(vec![Some(a), Some(b), Some(c)])]),
        all3()
    );
    assert_eq!(
        ext(
            &r,
            "SELECT * FROM users WHERE id = ANY($1::bigint[])",
            &[P::BArr(vec![Some(c)])]
        ),
        one(2)
    );
    assert_eq!(
        ext(
            &r,
            "SELECT * FROM users WHERE id = SOME($1)",
            &[t(format!("{{{c}}}"))]
        ),
        one(2)
    );
    // Arrays from the corpus: `{1,2,3}` in text.
    assert_eq!(ext(&r, any, &[t("{1,2,3}")]), Ok(owners(&[1, 2, 3])));
    // Both conditions hold: the smaller set of keys bounds the rows.
    assert_eq!(
        simple(
            &r,
            &format!("SELECT * FROM users WHERE id IN ({a}, {b}, {c}) AND id = {b}")
        ),
        one(1)
    );
}

#[test]
fn and_with_other_predicates_keeps_the_key() {
    let r = hash();
    let k = key_on(1);
    for sql in [
        format!("SELECT * FROM users WHERE status = 'active' AND id = {k}"),
        format!("SELECT * FROM users WHERE (status = 'active' AND (id = {k} AND x > 1))"),
        format!("SELECT * FROM users WHERE id = {k} AND (a OR b) ORDER BY name LIMIT 3"),
        format!("SELECT count(*) FROM users WHERE id = {k} GROUP BY status"),
        format!("SELECT DISTINCT ON (name) * FROM users WHERE id = {k}"),
        format!("SELECT *, row_number() OVER (ORDER BY name) FROM users WHERE id = {k}"),
    ] {
        assert_eq!(simple(&r, &sql), one(1), "{sql}");
    }
}

#[test]
fn qualified_names_aliases_and_schemas() {
    let r = hash();
    let k = key_on(2);
    for sql in [
        format!("SELECT * FROM users WHERE users.id = {k}"),
        format!("SELECT * FROM users u WHERE u.id = {k}"),
        format!("SELECT * FROM users AS u WHERE u.id = {k}"),
        format!("SELECT * FROM public.users WHERE id = {k}"),
        format!("SELECT * FROM public.users WHERE public.users.id = {k}"),
        format!("SELECT * FROM \"users\" WHERE \"id\" = {k}"),
        format!("SELECT * FROM USERS WHERE ID = {k}"),
        format!("SELECT * FROM app.public.users u WHERE u.id = {k}"),
    ] {
        assert_eq!(simple(&r, &sql), one(2), "{sql}");
    }
    // Another schema's `users`, or a quoted "Users", is another table: it lives on the default shard.
    assert_eq!(
        plan(&r, "SELECT * FROM other.users WHERE id = 1"),
        Plan::Home {
            table: "other.users".into()
        }
    );
    assert_eq!(
        plan(&r, "SELECT * FROM \"Users\""),
        Plan::Home {
            table: "Users".into()
        }
    );
    // The alias hides the table name: `users.id` no longer names it (Postgres rejects it too).
    assert!(matches!(
        plan(&r, &format!("SELECT * FROM users u WHERE users.id = {k}")),
        Plan::Scatter(_)
    ));
}

#[test]
fn null_keys_match_nothing_on_read_and_are_refused_on_write() {
    let r = hash();
    assert_eq!(
        simple(&r, "SELECT * FROM users WHERE id = NULL"),
        Ok(Target::Any)
    );
    assert_eq!(
        ext(&r, "SELECT * FROM users WHERE id = $1", &[P::Null]),
        Ok(Target::Any)
    );
    assert_eq!(
        ext(&r, "SELECT * FROM users WHERE id = ANY($1)", &[t("{NULL}")]),
        Ok(Target::Any)
    );
    assert_eq!(
        ext(&r, "SELECT * FROM users WHERE id = ANY($1)", &[P::Null]),
        Ok(Target::Any)
    );
    let k = key_on(1);
    assert_eq!(
        ext(
            &r,
            "SELECT * FROM users WHERE id = ANY($1)",
            &[t(format!("{{NULL,{k}}}"))]
        ),
        one(1)
    );
    let err = ext(&r, "INSERT INTO users (id) VALUES ($1)", &[P::Null]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the sharding key of \"users\" must not be NULL"
    );
    let err = simple(&r, "UPDATE users SET name = 'x' WHERE id = NULL").unwrap_err();
    assert!(
        matches!(err, RouteError::BadKey(KeyProblem::Null, _)),
        "{err:?}"
    );
}

#[test]
fn a_simple_query_with_placeholders_has_no_key_to_route_by() {
    // Postgres rejects `$1` without a Bind; the router does not invent a key for it.
    let r = hash();
    assert_eq!(
        simple(&r, "SELECT * FROM users WHERE id = $1"),
        Ok(Target::Any)
    );
}

#[test]
fn text_uuid_and_integer_key_types() {
    let text = hash_with("key_type: bigint", "key_type: text");
    let h = |s: &str| {
        crate::router::hash::bucket_of(crate::router::hash::hash_text(s.as_bytes()), 1024)
    };
    let shard_of = |s: &str| match h(s) {
        0..=340 => 0,
        341..=681 => 1,
        _ => 2,
    };
    for s in ["alice", "bob", "it's", "a\\b", "ünï"] {
        let quoted = s.replace('\'', "''");
        assert_eq!(
            simple(&text, &format!("SELECT * FROM users WHERE id = '{quoted}'")),
            one(shard_of(s)),
            "{s}"
        );
        assert_eq!(
            simple(
                &text,
                &format!("SELECT * FROM users WHERE id = '{quoted}'::text")
            ),
            one(shard_of(s))
        );
        assert_eq!(
            ext(&text, "SELECT * FROM users WHERE id = $1", &[t(s)]),
            one(shard_of(s))
        );
    }
    // E'' strings are unescaped as Postgres does.
    assert_eq!(
        simple(&text, "SELECT * FROM users WHERE id = E'a\\\\b'"),
        one(shard_of("a\\b"))
    );
    assert_eq!(
        simple(&text, "SELECT * FROM users WHERE id = E'\\x41'"),
        one(shard_of("A"))
    );
    // A number is not a text key (Postgres: operator does not exist), and a cast that can cut
    // the value short is not the key either.
    for sql in [
        "SELECT * FROM users WHERE id = 42",
        "SELECT * FROM users WHERE id = 'abcdef'::varchar(3)",
        "SELECT * FROM users WHERE id = 'abcdef'::char(3)",
    ] {
        assert!(matches!(plan(&text, sql), Plan::Scatter(_)), "{sql}");
    }

    let int = hash_with("key_type: bigint", "key_type: integer");
    assert_eq!(
        simple(&int, "SELECT * FROM users WHERE id = 7"),
        one(owner(7))
    );
    // Out of an integer's range: no row can match; not a key.
    assert!(matches!(
        plan(&int, "SELECT * FROM users WHERE id = 3000000000"),
        Plan::Scatter(_)
    ));
    let err = ext(
        &int,
        "SELECT * FROM users WHERE id = $1",
        &[P::B8(3_000_000_000)],
    )
    .unwrap_err();
    assert!(
        matches!(err, RouteError::BadKey(KeyProblem::Range, _)),
        "{err:?}"
    );

    let uuid = hash_with("key_type: bigint", "key_type: uuid");
    let u = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    let k = crate::router::KeyValue::from_text(crate::config::KeyType::Uuid, u).unwrap();
    let expected = match crate::router::hash::bucket_of(k.hash(), 1024) {
        0..=340 => 0,
        341..=681 => 1,
        _ => 2,
    };
    assert_eq!(
        simple(
            &uuid,
            &format!("SELECT * FROM users WHERE id = '{u}'::uuid")
        ),
        one(expected)
    );
    assert_eq!(
        simple(
            &uuid,
            &format!("SELECT * FROM users WHERE id = '{}'", u.to_uppercase())
        ),
        one(expected)
    );
}

/// `= ANY($1::varchar(3)[])` truncates each key: the router routed the untruncated value.
#[test]
fn any_takes_the_keys_only_through_casts_that_keep_them() {
    let text = hash_with("key_type: bigint", "key_type: text");
    for sql in [
        "SELECT * FROM users WHERE id = ANY($1::varchar(3)[])",
        "SELECT * FROM users WHERE id = ANY($1::char(3)[])",
        "SELECT * FROM users WHERE id = ANY($1::bigint[])",
        "SELECT * FROM users WHERE id = ANY(CAST($1 AS name[]))",
    ] {
        assert!(
            matches!(plan(&text, sql), Plan::Scatter(_)),
            "{sql}: {:?}",
            plan(&text, sql)
        );
    }
    assert!(matches!(
        plan(&text, "SELECT * FROM users WHERE id = ANY($1::text[])"),
        Plan::Keyed(_)
    ));
    let r = hash();
    assert!(matches!(
        plan(&r, "SELECT * FROM users WHERE id = ANY($1::numeric[])"),
        Plan::Scatter(_)
    ));
    for sql in [
        "SELECT * FROM users WHERE id = ANY($1::bigint[])",
        "SELECT * FROM users WHERE id = ANY($1::int[])",
        "SELECT * FROM users WHERE id = ANY(CAST($1 AS int8[]))",
    ] {
        assert_eq!(ext(&r, sql, &[t("{7}")]), one(owner(7)), "{sql}");
    }
}

#[test]
fn array_literals_are_keys() {
    let r = hash();
    let (a, b) = (key_on(0), key_on(2));
    assert_eq!(
        simple(
            &r,
            &format!("SELECT * FROM users WHERE id = ANY('{{{a},{b}}}')")
        ),
        Ok(owners(&[a, b]))
    );
    assert_eq!(
        simple(
            &r,
            &format!("SELECT * FROM users WHERE id = ANY('{{{b}}}'::bigint[])")
        ),
        one(2)
    );
    assert_eq!(
        simple(&r, "SELECT * FROM users WHERE id = ANY('{NULL}'::bigint[])"),
        Ok(Target::Any)
    );
    assert!(matches!(
        plan(&r, "SELECT * FROM users WHERE id = ANY('{1,x}')"),
        Plan::Scatter(_)
    ));
    assert!(matches!(
        plan(
            &r,
            "SELECT * FROM users WHERE id = ANY('{{1},{2}}'::bigint[])"
        ),
        Plan::Scatter(_)
    ));
}

/// In an unquoted array element a backslash escapes the next character: `{a\,b}` is the one key
/// "a,b", which the router read as the two keys "a\" and "b".
#[test]
fn text_array_parameters_are_read_as_array_in_reads_them() {
    let text = hash_with("key_type: bigint", "key_type: text");
    let owner_of = |s: &str| match crate::router::hash::bucket_of(
        crate::router::hash::hash_text(s.as_bytes()),
        1024,
    ) {
        0..=340 => 0,
        341..=681 => 1,
        _ => 2,
    };
    let sql = "SELECT * FROM users WHERE id = ANY($1)";
    // A key with a comma whose halves live elsewhere.
    let key = (0..)
        .map(|n| format!("k{n},x"))
        .find(|k| {
            let (a, b) = k.split_once(',').unwrap();
            owner_of(k) != owner_of(&format!("{a}\\")) && owner_of(k) != owner_of(b)
        })
        .unwrap();
    let escaped = key.replace(',', "\\,");
    assert_eq!(
        ext(&text, sql, &[t(format!("{{{escaped}}}"))]),
        one(owner_of(&key))
    );
    assert_eq!(
        ext(&text, sql, &[t(format!("{{\"{key}\"}}"))]),
        one(owner_of(&key))
    );
    // Whitespace around an unquoted element is dropped, inside it kept; an escaped NULL is text.
    assert_eq!(ext(&text, sql, &[t("{  a b  }")]), one(owner_of("a b")));
    assert_eq!(ext(&text, sql, &[t("{a\\ }")]), one(owner_of("a ")));
    assert_eq!(ext(&text, sql, &[t("{N\\ULL}")]), one(owner_of("NULL")));
    assert_eq!(ext(&text, sql, &[t("{\"NULL\"}")]), one(owner_of("NULL")));
    assert_eq!(ext(&text, sql, &[t("{NULL}")]), Ok(Target::Any));
    for bad in ["{a\"b\"}", "{{a}}", "{a}b", "[1:1]={a}", "a"] {
        let err = ext(&text, sql, &[t(bad)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter $1 is not a one-dimensional array",
            "{bad}"
        );
    }
}
