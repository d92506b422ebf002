//! Reads on several shards: each shard's rows fetched (with its collation) and merged into one
//! result (`crate::merge`).

use crate::net::ClientStream;
use bytes::BytesMut;

use super::{encode_request, Failure, Outcome, Reply, Request, ShardConn};
use crate::merge::rows::{self, ShardRows, Window};
use crate::merge::value::Style;
use crate::protocol::frontend::BindParams;
use crate::protocol::{PgError, SqlState};
use crate::router::merge::{Bound, MergeSpec};
use crate::session::Session;

impl<S: ClientStream> Session<S> {
    pub(super) async fn fan_read(
        &mut self,
        conns: &mut [ShardConn],
        spec: &MergeSpec,
        request: &Request,
        params: Option<&BindParams<'_>>,
    ) -> Result<Outcome, Failure> {
        let window = window(spec, params)?;
        let mut body = BytesMut::new();
        encode_request(request, spec.shard_sql.as_deref(), Some(spec), &mut body);
        let replies = self.exchange_all(conns, &body).await?;
        let mut notices = Vec::new();
        let mut shards = Vec::with_capacity(replies.len());
        // Shards of one database share its collation; shards that differ count as not C.
        let collation = replies
            .iter()
            .map(|r| r.probe.clone().unwrap_or_default())
            .reduce(|a, b| if a == b { a } else { String::new() })
            .unwrap_or_default();
        for r in replies {
            notices.extend(r.notices);
            shards.push(ShardRows {
                fields: r.fields.unwrap_or_default(),
                rows: r.rows,
            });
        }
        let style = self.merge_style();
        let merged = rows::merge(spec, &style, window, &collation, shards).map_err(|e| {
            PgError::error(
                SqlState::FeatureNotSupported,
                format!("shardgate cannot merge the rows of several shards: {e}"),
            )
            .with_hint(match e {
                rows::MergeError::Collation(..) => "Sort or group in the application, create the shard databases with LC_COLLATE \"C\", or filter on the sharding key so the query runs on one shard.",
                _ => "Filter on the sharding key so the query runs on one shard.",
            })
        })?;
        Ok(Outcome {
            tag: format!("SELECT {}", merged.rows.len()),
            fields: Some(merged.fields),
            rows: merged.rows,
            notices,
        })
    }

    /// Sends `body` to every shard, after a query for their collation, and collects the
    /// replies; the first error any shard reports fails the statement.
    async fn exchange_all(
        &self,
        conns: &mut [ShardConn],
        body: &[u8],
    ) -> Result<Vec<Reply>, Failure> {
        let mut replies = Vec::new();
        let bodies = vec![BytesMut::from(body); conns.len()];
        let probe = Some("SHOW lc_collate");
        for r in self.exchange_probed(conns, &bodies, false, probe).await {
            let r = r?;
            if let Some((frame, _)) = &r.error {
                return Err(Failure::Shard(frame.clone()));
            }
            replies.push(r);
        }
        Ok(replies)
    }

    fn merge_style(&self) -> Style {
        let settings = self.settings.effective();
        let get = |name: &str| {
            settings
                .get(name)
                .and_then(|sql| sql.split('\'').nth(1))
                .map(str::to_ascii_lowercase)
        };
        Style {
            extra_float_digits: get("extra_float_digits")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(1),
            iso_dates: get("datestyle").is_none_or(|v| v.contains("iso")),
        }
    }
}

/// LIMIT/OFFSET with their parameters read, refused as Postgres would when negative.
fn window(spec: &MergeSpec, params: Option<&BindParams>) -> Result<Window, PgError> {
    let read = |b: Option<Bound>, state: SqlState, what: &str| -> Result<Option<u64>, PgError> {
        let n = match b {
            None => return Ok(None),
            Some(Bound::Value(n)) => return Ok(Some(n)),
            Some(Bound::Param(i)) => param_int(params, i)?,
        };
        match n {
            None => Ok(None),
            Some(n) if n < 0 => Err(PgError::error(
                state,
                format!("{what} must not be negative"),
            )),
            Some(n) => Ok(Some(n as u64)),
        }
    };
    Ok(Window {
        limit: read(spec.limit, SqlState::InvalidRowCountInLimit, "LIMIT")?,
        offset: read(spec.offset, SqlState::InvalidRowCountInOffset, "OFFSET")?.unwrap_or(0),
    })
}

/// An integer bind parameter, text or binary (int2/int4/int8).
fn param_int(params: Option<&BindParams>, i: usize) -> Result<Option<i64>, PgError> {
    let bad = || {
        PgError::error(
            SqlState::InvalidParameterValue,
            format!("parameter ${} of LIMIT/OFFSET is not an integer", i + 1),
        )
    };
    let Some(p) = params else { return Err(bad()) };
    let Some(value) = p.values.get(i).ok_or_else(bad)? else {
        return Ok(None);
    };
    if p.is_binary(i) {
        return match value.len() {
            8 => Ok(Some(i64::from_be_bytes(
                value[..8].try_into().expect("8 bytes"),
            ))),
            4 => Ok(Some(
                i32::from_be_bytes(value[..4].try_into().expect("4 bytes")).into(),
            )),
            2 => Ok(Some(
                i16::from_be_bytes(value[..2].try_into().expect("2 bytes")).into(),
            )),
            _ => Err(bad()),
        };
    }
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    text.trim().parse().map(Some).map_err(|_| bad())
}
