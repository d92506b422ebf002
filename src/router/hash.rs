//! PostgreSQL's hash partitioning, bit for bit (DESIGN.md §2.3).
//!
//! A key's bucket is the partition PostgreSQL 15 would choose for it in a table
//! `PARTITION BY HASH (key)` with `MODULUS buckets`. `compute_partition_hash_value` in
//! src/backend/partitioning/partbounds.c computes, for a one-column key,
//!
//! ```text
//! rowHash = hash_combine64(0, type_extended_hash(key, HASH_PARTITION_SEED))
//! partition = rowHash % modulus
//! ```
//!
//! and `hash_combine64(0, x)` is `x + 0x49a0f4dd15e5a8e3` (its shifts of `a` vanish when `a` is 0).
//! The type's extended hash functions all end in Bob Jenkins' lookup3 as ported in
//! src/common/hashfn.c, which is what this file re-implements:
//!
//! - bigint / integer / smallint: `hashint8extended` folds the value to 32 bits so that equal values
//!   of every integer width hash alike, then `hash_bytes_uint32_extended`.
//! - text with a deterministic collation (every database default collation is one):
//!   `hashtextextended` is `hash_bytes_extended` over the stored bytes.
//! - uuid: `uuid_hash_extended` is `hash_bytes_extended` over the 16 bytes.
//!
//! Byte order: hashfn.c has four code paths (aligned or not, little- or big-endian). On the
//! little-endian machines PostgreSQL runs on in practice (x86_64, aarch64) its aligned path reads
//! whole native words, which are the same little-endian numbers its unaligned path assembles byte by
//! byte, so both paths give one result, and that is the one computed here. A big-endian server
//! (s390x, big-endian POWER) hashes text and uuid keys differently; shardgate does not match it.
//!
//! Everything here is pure and allocation-free: it runs once per routed key.

/// `HASH_PARTITION_SEED` (src/include/catalog/partition.h): the seed every partition hash uses.
const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// The constant `hash_combine64` (src/include/common/hashfn.h) adds; called "64bit random data".
const COMBINE64: u64 = 0x49a0_f4dd_15e5_a8e3;

/// The partition hash of an integer key of any width (bigint, integer, smallint).
pub fn hash_int(v: i64) -> u64 {
    combine_first(hash_bytes_uint32_extended(
        fold_int8(v),
        HASH_PARTITION_SEED,
    ))
}

/// The partition hash of a text key, given the bytes as the server stores them (UTF-8 in a UTF8
/// database).
pub fn hash_text(bytes: &[u8]) -> u64 {
    combine_first(hash_bytes_extended(bytes, HASH_PARTITION_SEED))
}

/// The partition hash of a uuid key (its 16 bytes in network order, as uuid_in stores them).
pub fn hash_uuid(u: &[u8; 16]) -> u64 {
    combine_first(hash_bytes_extended(u, HASH_PARTITION_SEED))
}

/// The bucket (hash partition remainder) of `hash` among `buckets`: PostgreSQL's
/// `rowHash % modulus`, on unsigned 64-bit values.
///
/// # Panics
/// If `buckets` is 0; config validation rejects that, so a routed key never sees it.
pub fn bucket_of(hash: u64, buckets: u32) -> u32 {
    // The remainder is below `buckets`, so it fits in a u32.
    (hash % u64::from(buckets)) as u32
}

/// The SQL expression of the bucket of `column` (a column name or any expression of the key's
/// type) among `buckets`, computed by the server with its own extended hash functions: what lets
/// backfill and verification select one bucket range's rows in SQL (DESIGN §2.3). Equal to
/// [`bucket_of`] of this module's hashes for every key (tested against real servers).
pub fn bucket_sql(column: &str, key_type: crate::config::KeyType, buckets: u32) -> String {
    use crate::config::KeyType;
    let seed = HASH_PARTITION_SEED as i64;
    let hash = match key_type {
        // hashint8extended folds like hashint4extended, so integer keys of every width agree.
        KeyType::Bigint | KeyType::Integer => {
            format!("pg_catalog.hashint8extended(({column})::bigint, {seed})")
        }
        KeyType::Text => format!("pg_catalog.hashtextextended(({column})::text, {seed})"),
        KeyType::Uuid => format!("pg_catalog.uuid_hash_extended(({column})::uuid, {seed})"),
    };
    if buckets > i32::MAX as u32 {
        // The signed bigint as an unsigned 64-bit number, plus hash_combine64's constant,
        // modulo 2^64, then the remainder: numeric arithmetic, exact (and slow).
        let two64 = "18446744073709551616";
        return format!(
            "(((({hash})::numeric + {two64} + {COMBINE64}) % {two64}) % {buckets})::bigint"
        );
    }
    // The same in bigint arithmetic, about six times faster than numeric (it runs for every row
    // that backfill, verification and the capture trigger look at): the unsigned 64-bit sum
    // `hash + COMBINE64` as two 32-bit halves with the carry, then
    // `(hi * 2^32 + lo) % B = ((hi % B) * (2^32 % B) + lo) % B`, which stays below 2^63 for
    // B < 2^31. (PostgreSQL's `&` and `>>` bind looser than `+`: hence every parenthesis.)
    let (mask, c_lo, c_hi) = (u32::MAX, COMBINE64 & 0xFFFF_FFFF, COMBINE64 >> 32);
    let lo_sum = format!("((({hash}) & {mask}) + {c_lo})");
    let hi = format!("((((({hash}) >> 32) & {mask}) + {c_hi} + ({lo_sum} >> 32)) & {mask})");
    let lo = format!("({lo_sum} & {mask})");
    let two32 = 1u64 << 32;
    format!(
        "((({hi} % {buckets}) * {} + {lo}) % {buckets})::int",
        two32 % u64::from(buckets)
    )
}

/// `bucket_sql(column, …)` within `first..=last`, the expression evaluated once.
pub fn bucket_range_sql(
    column: &str,
    key_type: crate::config::KeyType,
    buckets: u32,
    (first, last): (u32, u32),
) -> String {
    let bucket = bucket_sql(column, key_type, buckets);
    format!("{bucket} <@ int4range({first}, {last}, '[]')")
}

/// `hash_combine64(0, colhash)`: the row hash of a key with one column.
fn combine_first(colhash: u64) -> u64 {
    colhash.wrapping_add(COMBINE64)
}

/// `hashint8extended`'s fold of a 64-bit value into 32 bits (src/backend/access/hash/hashfunc.c).
///
/// XOR-ing the high half (or its complement for negatives) into the low half leaves every value
/// that fits an int4 unchanged as `v as u32`, which is what `hashint4extended` and
/// `hashint2extended` hash; that is why all integer widths land in the same partition. The price:
/// only 2^32 distinct hashes, e.g. 2^31 and -2^31 collide.
fn fold_int8(v: i64) -> u32 {
    let lo = v as u32;
    let hi = (v >> 32) as u32;
    lo ^ if v >= 0 { hi } else { !hi }
}

/// lookup3's three-word state. All arithmetic is on uint32 in C, so it wraps.
struct Lookup3 {
    a: u32,
    b: u32,
    c: u32,
}

impl Lookup3 {
    /// `a = b = c = 0x9e3779b9 + len + 3923095`, then the seed folded in as if it were a 12-byte
    /// chunk of data (its high half in `a`, its low half in `b`, four zero bytes in `c`). A zero
    /// seed means "no seed" and skips that mix, as in C.
    fn new(len: u32, seed: u64) -> Lookup3 {
        let init = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
        let mut s = Lookup3 {
            a: init,
            b: init,
            c: init,
        };
        if seed != 0 {
            s.a = s.a.wrapping_add((seed >> 32) as u32);
            s.b = s.b.wrapping_add(seed as u32);
            s.mix();
        }
        s
    }

    /// Adds three words of key (or of padding) to the state.
    fn add(&mut self, a: u32, b: u32, c: u32) {
        self.a = self.a.wrapping_add(a);
        self.b = self.b.wrapping_add(b);
        self.c = self.c.wrapping_add(c);
    }

    /// `mix(a,b,c)` from hashfn.c: mixes three words reversibly between 12-byte chunks.
    fn mix(&mut self) {
        let Lookup3 { a, b, c } = self;
        *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }

    /// `final(a,b,c)` from hashfn.c, then the 64-bit result the `_extended` variants report:
    /// `((uint64) b << 32) | c`.
    fn finish(mut self) -> u64 {
        let Lookup3 { a, b, c } = &mut self;
        *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
        *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
        *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
        *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
        *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
        *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
        *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
        (u64::from(*b) << 32) | u64::from(*c)
    }
}

/// `hash_bytes_extended(k, len, seed)` from src/common/hashfn.c, little-endian.
///
/// Full 12-byte chunks are read as three little-endian words and mixed. The last 0 to 11 bytes are
/// added without a mix: bytes 0-3 to `a` and 4-7 to `b` as little-endian words, bytes 8-10 to `c`
/// shifted up one byte ("the lowest byte of c is reserved for the length"). C spells the tail as a
/// fall-through `switch (len)` over single bytes, or whole words `ka[0]`, `ka[1]` when aligned; since
/// missing bytes contribute zero, zero-padding the tail to 12 bytes and reading three words is the
/// same sum for every length 0..=11, on both paths.
fn hash_bytes_extended(k: &[u8], seed: u64) -> u64 {
    // C takes `int keylen` and stores it in a uint32; a datum is at most 1 GB, so this is exact.
    let mut s = Lookup3::new(k.len() as u32, seed);
    let mut chunks = k.chunks_exact(12);
    for chunk in &mut chunks {
        s.add(le32(chunk, 0), le32(chunk, 4), le32(chunk, 8));
        s.mix();
    }
    let mut tail = [0u8; 12];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    // tail[11] is always 0 (at most 11 bytes remain), so the shift loses nothing.
    s.add(le32(&tail, 0), le32(&tail, 4), le32(&tail, 8) << 8);
    s.finish()
}

/// `hash_bytes_uint32_extended(k, seed)` from src/common/hashfn.c: the hash of one 32-bit word,
/// equal to `hash_bytes_extended` over its four native (little-endian) bytes.
fn hash_bytes_uint32_extended(k: u32, seed: u64) -> u64 {
    let mut s = Lookup3::new(4, seed);
    s.add(k, 0, 0);
    s.finish()
}

/// The little-endian word at `bytes[at..at + 4]`.
fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests;
