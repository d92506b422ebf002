//! `cargo bench --bench codec`: criterion micro-benchmarks of the per-message work on the relay's
//! hot path — finding a frame, decoding the Parse/Bind that prepared statements need, rewriting a
//! Bind's statement name, and looking a statement up in the shared registry.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use shardgate::protocol::frontend::{Bind, Parse};
use shardgate::protocol::peek_frame;
use shardgate::session::Registry;

/// pgbench -S's statement.
const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A Bind as pgbench -M prepared sends it: unnamed portal, statement P0_1, one text parameter.
fn bind_frame() -> BytesMut {
    // formats: 0 codes; params: 1 value "123456"; results: 0 codes.
    let mut rest = Vec::new();
    rest.extend_from_slice(&0i16.to_be_bytes());
    rest.extend_from_slice(&1i16.to_be_bytes());
    rest.extend_from_slice(&6i32.to_be_bytes());
    rest.extend_from_slice(b"123456");
    rest.extend_from_slice(&0i16.to_be_bytes());
    let mut out = BytesMut::new();
    Bind {
        portal: "",
        statement: "P0_1",
        rest: &rest,
    }
    .encode(&mut out);
    out
}

fn parse_frame() -> BytesMut {
    let mut out = BytesMut::new();
    Parse {
        name: "P0_1",
        sql: SQL,
        param_types: &0i16.to_be_bytes(),
    }
    .encode(&mut out);
    out
}

fn framing(c: &mut Criterion) {
    let bind = bind_frame();
    c.bench_function("peek_frame (Bind)", |b| {
        b.iter(|| peek_frame(black_box(&bind), MAX_MESSAGE).unwrap())
    });
    let parse = parse_frame();
    c.bench_function("Parse::decode", |b| {
        b.iter(|| {
            let h = peek_frame(black_box(&parse), MAX_MESSAGE).unwrap().unwrap();
            Parse::decode(h.body(&parse)).unwrap().sql.len()
        })
    });
}

fn bind_rewrite(c: &mut Criterion) {
    let bind = bind_frame();
    c.bench_function("Bind::decode", |b| {
        b.iter(|| {
            let h = peek_frame(black_box(&bind), MAX_MESSAGE).unwrap().unwrap();
            Bind::decode(h.body(&bind)).unwrap().rest.len()
        })
    });
    let mut out = BytesMut::with_capacity(256);
    c.bench_function("Bind decode + rename + encode", |b| {
        b.iter(|| {
            out.clear();
            let h = peek_frame(black_box(&bind), MAX_MESSAGE).unwrap().unwrap();
            let msg = Bind::decode(h.body(&bind)).unwrap();
            Bind {
                statement: "__sg_1",
                ..msg
            }
            .encode(&mut out);
            out.len()
        })
    });
}

fn registry(c: &mut Criterion) {
    let reg = Registry::default();
    let types = 0i16.to_be_bytes();
    reg.intern(SQL, &types, "");
    c.bench_function("Registry::intern (hit)", |b| {
        b.iter(|| reg.intern(black_box(SQL), black_box(&types), "").id)
    });
}

criterion_group!(benches, framing, bind_rewrite, registry);
criterion_main!(benches);
