//! The per-shard messages of a multi-row INSERT split by the router: each shard gets only its
//! rows, and only the bind parameters those rows use, renumbered.

use bytes::{BufMut, BytesMut};

use super::{encode_request, Request};
use crate::protocol::frontend::BindParams;
use crate::router::InsertSplit;

/// One body per shard in `shards` (the shards the rows go to, in order).
pub(super) fn bodies(
    split: &InsertSplit,
    rows: &[usize],
    shards: &[usize],
    request: &Request,
) -> Vec<BytesMut> {
    shards
        .iter()
        .map(|&shard| {
            let mine: Vec<usize> = (0..split.rows()).filter(|&r| rows[r] == shard).collect();
            let (sql, used) = split.text_for(&mine);
            let mut out = BytesMut::new();
            match request {
                Request::Simple(_) => encode_request(&Request::Simple(sql), None, None, &mut out),
                Request::Extended {
                    param_types,
                    params,
                    results,
                    ..
                } => {
                    let subset = Request::Extended {
                        sql,
                        param_types: types_subset(param_types, &used).freeze(),
                        params: params_subset(params, &used).freeze(),
                        results: results.clone(),
                    };
                    encode_request(&subset, None, None, &mut out);
                }
            }
            out
        })
        .collect()
}

/// A Parse's parameter types (count, then OIDs) for the `used` parameters; unknown ones are 0.
fn types_subset(raw: &[u8], used: &[usize]) -> BytesMut {
    let oid = |i: usize| {
        raw.get(2 + 4 * i..6 + 4 * i)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut out = BytesMut::new();
    out.put_i16(used.len() as i16);
    for &i in used {
        out.put_u32(oid(i));
    }
    out
}

/// A Bind's parameter formats and values for the `used` parameters.
fn params_subset(raw: &[u8], used: &[usize]) -> BytesMut {
    let mut out = BytesMut::new();
    let Ok(p) = BindParams::decode(raw) else {
        out.extend_from_slice(raw); // malformed: the server reports it
        return out;
    };
    out.put_i16(used.len() as i16);
    for &i in used {
        out.put_i16(i16::from(p.is_binary(i)));
    }
    out.put_i16(used.len() as i16);
    for &i in used {
        match p.values.get(i).copied().flatten() {
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
    out
}
