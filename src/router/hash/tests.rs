//! Known answers from a real server, and the identities the port relies on.
//!
//! Every hard-coded number below was printed by PostgreSQL 15.18 (Debian 15.18-0+deb12u1,
//! x86_64-pc-linux-gnu), database created with `initdb -E UTF8 --locale=C`:
//!
//! - column hashes (before `hash_combine64`) with the partition seed 0x7A5B22367996DCFD =
//!   8816678312871386365, e.g.
//!   `SELECT to_hex(hashint8extended(v, 8816678312871386365)) FROM unnest(array[...]::int8[]) v`,
//!   and likewise `hashint4extended`, `hashint2extended`, `hashtextextended`, `uuid_hash_extended`;
//! - remainders, from `CREATE TABLE hk8 (k bigint) PARTITION BY HASH (k)` (and text/uuid twins) and
//!   `SELECT r FROM generate_series(0, M - 1) r WHERE satisfies_hash_partition('hk8'::regclass, M, r, v)`.

use proptest::prelude::*;

use super::*;

/// The seed as PostgreSQL's SQL functions take it (a signed bigint literal).
const SEED: u64 = 8_816_678_312_871_386_365;

/// `hashint8extended(v, SEED)`.
const INT8_COLHASH: &[(i64, u64)] = &[
    (0, 0xc2e34bda39f0f0cd),
    (1, 0x52d621058124e6d5),
    (-1, 0xba5fc748095606c2),
    (42, 0x663218bcfb84b17f),
    (-42, 0x5c6f545b0b7cb85f),
    (2147483647, 0xac09237e4899f89c),
    (-2147483648, 0x44893a0f1e949193),
    (2147483648, 0x44893a0f1e949193),
    (-2147483649, 0xac09237e4899f89c),
    (4294967295, 0xba5fc748095606c2),
    (4294967296, 0x52d621058124e6d5),
    (-4294967296, 0xc2e34bda39f0f0cd),
    (1234567890123, 0x3ac2d831d1eac5ec),
    (-1234567890123, 0x4e50ba0490cbbefe),
    (i64::MAX, 0x44893a0f1e949193),
    (i64::MIN, 0xac09237e4899f89c),
];

/// `hashtextextended(left('abcdefghijklmnopqrstuvwxyz0123456789ABCD', n), SEED)` for n = 0..=40:
/// every tail length 0..=11 after zero, one, two and three full 12-byte chunks.
const TEXT_PREFIX: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";
const TEXT_PREFIX_COLHASH: [u64; 41] = [
    0xb0e33d0b543fbfc3,
    0xa2f240f8823ba67b,
    0x0845730e49baf33d,
    0x325c02d16f43e1c2,
    0x37eb4043f6fdb06e,
    0x42bdebaa1b2c17d9,
    0xf6dc296ce47a2776,
    0xeaf53e7fbf379bae,
    0x94619c573ca212b2,
    0x92e90b933de8cba0,
    0x8cba26807c1916a1,
    0xe39999edea562278,
    0x92b003d370554786,
    0xa1d42895caa786b3,
    0xb7b2713c0dbc9ab3,
    0x33f5ba500ae30b98,
    0xd6e06f0d1d6bcb47,
    0xc4768bb0fc014eb9,
    0xc8d1b82f5e85d036,
    0x58fa7c4493410593,
    0xcc3b5ca11578b6eb,
    0x82f7e8d4da722f1e,
    0x1909c7095acd0c70,
    0x9a59a44ce94b5481,
    0xffd910c13dcae36e,
    0x13317813436137bf,
    0x9c7a73cc5c301158,
    0xce2707edad569492,
    0xaf8d9de3bfc027d5,
    0xa49af1cd4398fe47,
    0x574488b4a6eeec28,
    0xaeee69d8d3e8f5e5,
    0xbcdf1e672daffd00,
    0xfdb0ee875545e346,
    0xaee1eb2961683a2d,
    0x47bf29095307b4ae,
    0x99929c72e4283997,
    0x7c2c4a70835ea199,
    0x0e676be10de0fdd0,
    0x4100abe87d4386a8,
    0xd802f90d747458d1,
];

/// `hashtextextended(s, SEED)` for multi-byte UTF-8.
const TEXT_COLHASH: &[(&str, u64)] = &[
    ("é", 0x3cc15889cb0c9ecc),
    ("日本語", 0x9047acd944d603db),
    ("Grüße, Jürgen", 0xd1ab57bce61ba290),
    ("shard 🦀 key", 0x2924a1a27363b2d8),
    ("ключ-42", 0x74f61d3c23651a07),
];

/// `uuid_hash_extended(u, SEED)`, bytes in the order the canonical text spells them.
const UUID_COLHASH: &[([u8; 16], u64)] = &[
    ([0x00; 16], 0xb6b5d3c4aa5d92c2),
    (
        [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ],
        0x05e42c7f7f75bced,
    ),
    ([0xff; 16], 0xfdeeb1999c98549e),
    (
        [
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00,
        ],
        0xee9f87f344f2caa2,
    ),
    (
        [
            0x01, 0x90, 0xc2, 0xa4, 0x7b, 0x3e, 0x7c, 0x1d, 0x9f, 0x00, 0x5b, 0x2e, 0x8d, 0x4c,
            0x1a, 0x99,
        ],
        0x66bb5acfaec04af5,
    ),
];

const UUID_A0: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];

#[test]
fn seed_and_combine_constants_match_the_sql_spelling() {
    assert_eq!(HASH_PARTITION_SEED, SEED);
    // hash_combine64(0, x) = x + 0x49a0f4dd15e5a8e3 = x + 5305509591434766563.
    assert_eq!(combine_first(0), 5_305_509_591_434_766_563);
    assert_eq!(combine_first(u64::MAX), COMBINE64 - 1);
}

#[test]
fn int8_column_hashes_match_postgres() {
    for &(v, colhash) in INT8_COLHASH {
        let got = hash_bytes_uint32_extended(fold_int8(v), SEED);
        assert_eq!(got, colhash, "hashint8extended({v})");
        assert_eq!(
            hash_int(v),
            colhash.wrapping_add(COMBINE64),
            "hash_int({v})"
        );
    }
}

/// `hashint4extended(-1)`, `hashint4extended(2147483647)`, `hashint2extended(-1::int2)` and
/// `hashint2extended(32767::int2)` equal `hashint8extended` of the same value.
#[test]
fn int4_and_int2_hash_like_int8() {
    let int4_minus_one = 0xba5fc748095606c2;
    let int4_max = 0xac09237e4899f89c;
    let int2_max = 0xa6ac42e1ee4bb5eb;
    assert_eq!(hash_int(-1), combine_first(int4_minus_one));
    assert_eq!(hash_int(i32::MAX.into()), combine_first(int4_max));
    assert_eq!(hash_int(i16::MAX.into()), combine_first(int2_max));
    // The fold leaves int4 values alone: what hashint4extended hashes is `v as uint32`.
    for v in [0, 1, -1, i32::MIN, i32::MAX] {
        assert_eq!(fold_int8(v.into()), v as u32);
    }
}

#[test]
fn text_column_hashes_cover_every_lookup3_tail() {
    for (n, &colhash) in TEXT_PREFIX_COLHASH.iter().enumerate() {
        let s = &TEXT_PREFIX.as_bytes()[..n];
        assert_eq!(hash_bytes_extended(s, SEED), colhash, "length {n}");
        assert_eq!(hash_text(s), combine_first(colhash), "length {n}");
    }
}

#[test]
fn multibyte_text_hashes_its_utf8_bytes() {
    for &(s, colhash) in TEXT_COLHASH {
        assert_eq!(hash_text(s.as_bytes()), combine_first(colhash), "{s}");
    }
}

#[test]
fn uuid_column_hashes_match_postgres() {
    for (u, colhash) in UUID_COLHASH {
        assert_eq!(hash_uuid(u), combine_first(*colhash), "{u:02x?}");
    }
}

/// `hashint8extended(42, 0)`, `hashtextextended(.., 0)`, `uuid_hash_extended(.., 0)`: a zero seed
/// skips the seed's mix.
#[test]
fn zero_seed_skips_the_seed_mix() {
    assert_eq!(
        hash_bytes_uint32_extended(42, 0),
        0x6f2a09a559fcfec8,
        "hashint8extended(42, 0)"
    );
    assert_eq!(hash_bytes_extended(b"hello", 0), 0x2fdf4f9b90859829);
    assert_eq!(hash_bytes_extended(b"", 0), 0x9fb1b765a7ea466d);
    assert_eq!(
        hash_bytes_extended(b"abcdefghijklmnopqrstuvwxyz", 0),
        0xa43a28a40a00e7bb
    );
    assert_eq!(hash_bytes_extended(&UUID_A0, 0), 0x68ae4fe544d2cf05);
}

/// End to end: the remainder `satisfies_hash_partition` accepts, for M = 1024 and M = 7.
#[test]
fn buckets_match_satisfies_hash_partition() {
    let ints: &[(i64, u32, u32)] = &[
        (0, 432, 4),
        (1, 952, 5),
        (-1, 933, 0),
        (42, 610, 0),
        (i64::MAX, 630, 3),
        (i64::MIN, 383, 0),
    ];
    for &(v, r1024, r7) in ints {
        assert_eq!(bucket_of(hash_int(v), 1024), r1024, "{v} % 1024");
        assert_eq!(bucket_of(hash_int(v), 7), r7, "{v} % 7");
    }
    let texts: &[(&str, u32, u32)] = &[("", 166, 1), ("hello", 916, 3), ("日本語", 190, 6)];
    for &(s, r1024, r7) in texts {
        assert_eq!(
            bucket_of(hash_text(s.as_bytes()), 1024),
            r1024,
            "{s:?} % 1024"
        );
        assert_eq!(bucket_of(hash_text(s.as_bytes()), 7), r7, "{s:?} % 7");
    }
    assert_eq!(bucket_of(hash_uuid(&UUID_A0), 1024), 464);
    assert_eq!(bucket_of(hash_uuid(&UUID_A0), 7), 6);
}

#[test]
fn bucket_of_is_an_unsigned_remainder() {
    assert_eq!(bucket_of(u64::MAX, 1), 0);
    assert_eq!(bucket_of(u64::MAX, 1024), 1023);
    assert_eq!(
        bucket_of(u64::MAX, u32::MAX),
        (u64::MAX % u64::from(u32::MAX)) as u32
    );
    assert_eq!(bucket_of(1 << 63, 7), ((1u64 << 63) % 7) as u32);
}

proptest! {
    /// hashfn.c documents `hash_bytes_uint32(k)` as `hash_bytes(&k, 4)`; on a little-endian server
    /// that is the word's little-endian bytes. Holds for the extended variants and any seed.
    #[test]
    fn uint32_hash_is_the_hash_of_its_le_bytes(k: u32, seed: u64) {
        prop_assert_eq!(hash_bytes_uint32_extended(k, seed), hash_bytes_extended(&k.to_le_bytes(), seed));
    }

    /// Changing any one byte changes the hash: no byte of a chunk or of the tail is dropped (the
    /// length alone cannot tell, as it stays the same).
    #[test]
    fn every_byte_counts(bytes in proptest::collection::vec(any::<u8>(), 1..40), at: prop::sample::Index, flip in 1u8..) {
        let mut changed = bytes.clone();
        changed[at.index(bytes.len())] ^= flip;
        prop_assert_ne!(hash_text(&bytes), hash_text(&changed));
    }
}
