//! COPY FROM STDIN into sharded tables: where the key is in each row, the format options as
//! PostgreSQL reads them, and the refusals (no column list, no key, binary, files).

use super::support::*;
use crate::router::{CopyFormat, CopyIn, CopyKeyError, CsvNull, Dialect, Plan, RouteError};

fn copy_in(sql: &str) -> CopyIn {
    match plan(&hash(), sql) {
        Plan::CopyIn(c) => (*c).clone(),
        other => panic!("expected a COPY split for {sql:?}, got {other:?}"),
    }
}

fn text(delimiter: u8, null: &str, header: bool) -> CopyFormat {
    CopyFormat {
        dialect: Dialect::Text,
        delimiter,
        null: null.as_bytes().to_vec(),
        header,
    }
}

fn csv(quote: u8, escape: u8, key_null: CsvNull, header: bool) -> CopyFormat {
    CopyFormat {
        dialect: Dialect::Csv {
            quote,
            escape,
            key_null,
        },
        delimiter: b',',
        null: Vec::new(),
        header,
    }
}

#[test]
fn the_key_field_comes_from_the_column_list() {
    let c = copy_in("COPY users (name, ID) FROM STDIN");
    assert_eq!(
        c,
        CopyIn {
            table: "users".into(),
            key_column: "id".into(),
            key_field: 1,
            format: text(b'\t', "\\N", false),
        }
    );
    assert_eq!(
        copy_in("copy orders (user_id, total) from stdin").key_field,
        0
    );
    assert_eq!(copy_in("COPY public.users (id) FROM STDIN").key_field, 0);
    // Every shard that owns keys takes part; each row goes to one of them.
    assert_eq!(simple(&hash(), "COPY users (id, name) FROM STDIN"), all3());
}

#[test]
fn format_options_as_postgres_reads_them() {
    let c = |sql: &str| copy_in(sql).format;
    assert_eq!(
        c("COPY users (id, name) FROM STDIN WITH (FORMAT csv, HEADER true)"),
        csv(b'"', b'"', CsvNull::Unquoted, true)
    );
    // Options apply whatever their order; ESCAPE defaults to QUOTE.
    assert_eq!(
        c("COPY users (id, name) FROM STDIN (DELIMITER ';', NULL 'nil', FORMAT csv, QUOTE '''')"),
        CopyFormat {
            delimiter: b';',
            null: b"nil".to_vec(),
            ..csv(b'\'', b'\'', CsvNull::Unquoted, false)
        }
    );
    assert_eq!(
        c("COPY users (id, name) FROM STDIN (FORMAT csv, ESCAPE '\\', FORCE_NOT_NULL (id))"),
        csv(b'"', b'\\', CsvNull::Never, false)
    );
    assert_eq!(
        c("COPY users (id, name) FROM STDIN (FORMAT csv, FORCE_NULL (name, id))"),
        csv(b'"', b'"', CsvNull::QuotedToo, false)
    );
    // FORCE_NOT_NULL on another column does not change how the key is read.
    assert_eq!(
        c("COPY users (id, name) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (name))"),
        csv(b'"', b'"', CsvNull::Unquoted, false)
    );
    assert_eq!(
        c("COPY users (id, name) FROM STDIN (FORMAT text, DELIMITER '|', NULL '', HEADER)"),
        text(b'|', "", true)
    );
    // The pre-9.0 syntax psql users still write.
    assert_eq!(
        c("COPY users (id, name) FROM STDIN (DELIMITER E'\\t', NULL E'\\\\N')"),
        text(b'\t', "\\N", false)
    );
    assert_eq!(
        c("COPY users (id, name) FROM STDIN WITH CSV HEADER"),
        csv(b'"', b'"', CsvNull::Unquoted, true)
    );
    assert_eq!(
        c("COPY users (id, name) FROM STDIN WITH DELIMITER ',' NULL 'x'"),
        text(b',', "x", false)
    );
    assert_eq!(
        c("COPY users (id, name) FROM STDIN WITH CSV QUOTE '|' FORCE NOT NULL id"),
        csv(b'|', b'|', CsvNull::Never, false)
    );
}

#[test]
fn refusals_say_how_to_fix_the_copy() {
    let r = hash();
    let err = rejected(&r, "COPY users FROM STDIN");
    assert_eq!(err.to_string(), "COPY into sharded table \"users\" must list its columns, so shardgate can find the sharding key \"id\" in each row");
    assert_eq!(err.hint(), "Write COPY users (col, …) FROM STDIN with the columns in the order of the data, \"id\" among them.");
    let err = rejected(&r, "COPY users (name) FROM STDIN");
    assert_eq!(
        err.to_string(),
        "COPY into sharded table \"users\" must give its sharding key \"id\""
    );
    for sql in [
        "COPY users (id, name) FROM STDIN WITH (FORMAT binary)",
        "COPY users (id, name) FROM STDIN WITH BINARY",
    ] {
        let err = rejected(&r, sql);
        assert_eq!(
            err.to_string(),
            "COPY FROM STDIN in binary format into a sharded table is not supported",
            "{sql}"
        );
        assert!(err.hint().starts_with("Use FORMAT text or csv"), "{sql}");
    }
    // A file or program would be read by every shard: every row everywhere.
    for sql in [
        "COPY users (id, name) FROM '/tmp/users.csv' WITH (FORMAT csv)",
        "COPY users (id, name) FROM PROGRAM 'cat /tmp/users.csv'",
    ] {
        let err = rejected(&r, sql);
        assert_eq!(
            err.to_string(),
            "COPY FROM a file or program into sharded table \"users\" is not supported",
            "{sql}"
        );
    }
    // The parser takes no multi-byte delimiter: refused outside a pinned transaction.
    assert_eq!(
        kind(&plan(
            &r,
            "COPY users (id, name) FROM STDIN (DELIMITER 'é')"
        )),
        "Unparsed"
    );
    assert!(matches!(
        rejected(&r, "COPY users (id, name) FROM STDIN (ENCODING 'LATIN1')"),
        RouteError::Unsupported { .. }
    ));
    assert_eq!(
        kind(&plan(
            &r,
            "COPY users (id, name) FROM STDIN (ENCODING 'UTF8')"
        )),
        "CopyIn"
    );
}

#[test]
fn row_keys_pick_their_owner() {
    let r = hash();
    for shard in 0..3 {
        let k = key_on(shard);
        assert_eq!(r.copy_key_shard(&k.to_string()), Ok(shard));
        assert_eq!(
            r.copy_key_shard(&format!(" {k} ")),
            Ok(shard),
            "int8in trims"
        );
    }
    assert!(matches!(
        r.copy_key_shard("abc"),
        Err(CopyKeyError::Invalid(_))
    ));
    assert!(matches!(
        r.copy_key_shard("99999999999999999999"),
        Err(CopyKeyError::Invalid(_))
    ));
}
