//! JSON replies (and the metrics text) and the one error shape of the admin API: `{"error": code, "detail": text}`.
//!
//! `error` is a stable snake_case code a script can match on; `detail` says what went wrong and
//! how to fix it, for the operator reading it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::Value;

pub type Reply = Response<Full<Bytes>>;

/// A JSON reply with `status`.
pub fn reply(status: StatusCode, body: Value) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn ok(body: Value) -> Reply {
    reply(StatusCode::OK, body)
}

/// Metrics in the Prometheus text exposition format, version 0.0.4 (the one non-JSON reply).
pub fn prometheus(text: String) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// A failed request. Built by the handlers, turned into a reply once at the top.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
    /// Extra fields merged into the body (e.g. the list of config issues). Boxed to keep the `Err` side of every handler's `Result` small.
    pub extra: Option<Box<serde_json::Map<String, Value>>>,
    header: Header,
}

/// The one header an error may need.
#[derive(Debug, Clone, Copy)]
enum Header {
    None,
    /// `Allow`, for a 405.
    Allow(&'static str),
    /// `WWW-Authenticate: Bearer`, for a 401.
    Bearer,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
            extra: None,
            header: Header::None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn not_found(error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error, detail)
    }

    /// 405 with the `Allow` header naming the one method the route takes.
    pub fn method_not_allowed(allowed: &'static str, detail: String) -> ApiError {
        let mut e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", detail);
        e.header = Header::Allow(allowed);
        e
    }

    /// 401 with `WWW-Authenticate: Bearer`, telling the client which scheme to use.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        e.header = Header::Bearer;
        e
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> ApiError {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.into(), value);
        self
    }

    pub fn into_reply(self) -> Reply {
        let mut body = self.extra.map(|b| *b).unwrap_or_default();
        body.insert("error".into(), self.error.into());
        body.insert("detail".into(), self.detail.into());
        let mut resp = reply(self.status, Value::Object(body));
        let headers = resp.headers_mut();
        match self.header {
            Header::None => {}
            Header::Allow(method) => {
                headers.insert(ALLOW, HeaderValue::from_static(method));
            }
            Header::Bearer => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"shardgate\""),
                );
            }
        }
        resp
    }
}

/// Parses a request body as `T`, or says where the JSON is wrong (serde's message names the
/// line and column, never echoes the body).
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the request body is not the expected JSON: {e}"))
    })
}
