//! Bearer-token auth for every route but `/health`, `/ready` and `/metrics` (DESIGN §2.6).
//!
//! The token is read from the snapshot on each request, so a reload that changes
//! `admin.token` takes effect for the next request. With no token configured the protected
//! routes refuse everyone: an admin API that can reload the config and reveal the topology must
//! not be open because a line was forgotten.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::json::ApiError;
use hyper::StatusCode;

/// Checks `Authorization: Bearer <token>` against the configured token: 401 without a bearer
/// credential, 403 with a wrong one or when no token is configured.
pub fn check(headers: &HeaderMap, configured: Option<&str>) -> Result<(), ApiError> {
    // Checked first: with no token, no header can help, and the detail says what to do.
    let Some(expected) = configured.filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no admin token is configured, so the /v1 routes are closed: set admin.token in the config (e.g. token: ${SHARDGATE_ADMIN_TOKEN}) and reload",
        ));
    };
    let Some(header) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "this route needs the header `Authorization: Bearer <admin.token>`",
        ));
    };
    let given = header
        .to_str()
        .ok()
        .and_then(bearer)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "the Authorization header must be `Bearer <admin.token>` (the Bearer scheme, one space, the token)",
            )
        })?;
    if same(given, expected) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the bearer token does not match admin.token",
        ))
    }
}

/// The token of a `Bearer` credential; the scheme name is case-insensitive (RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Constant time in the contents and, by comparing digests, in the length too.
fn same(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    fn status(value: Option<&str>, configured: Option<&str>) -> u16 {
        match check(&headers(value), configured) {
            Ok(()) => 200,
            Err(e) => e.status.as_u16(),
        }
    }

    #[test]
    fn missing_malformed_wrong_and_right_tokens() {
        let t = Some("s3cret");
        assert_eq!(status(None, t), 401);
        assert_eq!(status(Some("Basic czNjcmV0"), t), 401);
        assert_eq!(status(Some("Bearer "), t), 401);
        assert_eq!(status(Some("Bearer s3cre"), t), 403);
        assert_eq!(status(Some("Bearer s3cret2"), t), 403);
        assert_eq!(status(Some("Bearer s3cret"), t), 200);
        assert_eq!(status(Some("bearer s3cret"), t), 200);
    }

    #[test]
    fn without_a_configured_token_everyone_is_refused() {
        assert_eq!(status(Some("Bearer anything"), None), 403);
        assert_eq!(status(Some("Bearer anything"), Some("")), 403);
        assert_eq!(status(None, None), 403);
        let e = check(&headers(Some("Bearer x")), None).unwrap_err();
        assert!(
            e.detail.contains("set admin.token in the config"),
            "{}",
            e.detail
        );
    }
}
