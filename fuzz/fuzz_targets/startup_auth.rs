//! The pre-authentication surface: startup-phase packets, then a SCRAM-SHA-256 exchange and an MD5
//! password check, all fed from one input.
//!
//! Input layout: `flags: u8, startup_len: u16 (LE), startup[startup_len], rest`, where `rest` is
//! split at 0xFF bytes (never valid UTF-8, so never part of a valid SCRAM message) into
//! `client-first, client-final, extra`.
//!
//! flags bit 0: answer the server-first-message with a correct client-final-message (computed here
//!              from the known password), so the success path runs and must succeed.
//! flags bit 1: use `extra` (lossy UTF-8) as the SASL mechanism name instead of SCRAM-SHA-256.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use shardgate::protocol::startup::{self, MAX_STARTUP_LEN};
use shardgate::server::auth::{md5_check, ScramServer, ScramVerifier};

const PASSWORD: &str = "pencil";
const SALT: &[u8] = b"shardgate-fuzz-salt";
/// Low so the one-off key derivations (server verifier and client side, both cached) are cheap.
const ITERATIONS: u32 = 16;
const SERVER_NONCE: &str = "fuzzServerNonce0123456789";

fn verifier() -> ScramVerifier {
    static V: OnceLock<ScramVerifier> = OnceLock::new();
    V.get_or_init(|| ScramVerifier::from_password(PASSWORD, SALT, ITERATIONS))
        .clone()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SaltedPassword = Hi(password, salt, i), computed independently of shardgate.
fn salted_password() -> [u8; 32] {
    static S: OnceLock<[u8; 32]> = OnceLock::new();
    *S.get_or_init(|| {
        let mut u = hmac(PASSWORD.as_bytes(), &[SALT, &1u32.to_be_bytes()].concat());
        let mut out = u;
        for _ in 1..ITERATIONS {
            u = hmac(PASSWORD.as_bytes(), &u);
            out.iter_mut().zip(u).for_each(|(o, b)| *o ^= b);
        }
        out
    })
}

fn fuzz_startup(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        let declared = (before >= 4).then(|| i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        match startup::decode(&mut buf) {
            Ok(Some(_packet)) => {
                // A decoded packet is consumed exactly, or the next one would be misframed
                // (and a decoder that consumes nothing would loop forever).
                let consumed = before - buf.len();
                let declared = declared.unwrap() as usize;
                assert!((8..=MAX_STARTUP_LEN).contains(&declared));
                assert_eq!(
                    consumed, declared,
                    "startup packet consumed {consumed} of {declared} bytes"
                );
            }
            Ok(None) => {
                assert_eq!(
                    buf.len(),
                    before,
                    "an incomplete packet must not be consumed"
                );
                break;
            }
            Err(_) => break,
        }
    }
}

fn fuzz_scram(flags: u8, first: &[u8], last: &[u8], extra: &[u8]) {
    let extra = String::from_utf8_lossy(extra);
    let mechanism = if flags & 2 != 0 {
        &*extra
    } else {
        "SCRAM-SHA-256"
    };
    let mut server = ScramServer::new(verifier(), SERVER_NONCE.to_owned());
    let server_first = match server.client_first(mechanism, first) {
        Ok(sf) => sf,
        Err(_) => {
            // A failed step ends the exchange.
            assert!(server.client_final(last).is_err());
            return;
        }
    };
    // Accepted: the client-first-message is `n,,` or `y,,` then the bare message.
    let first = std::str::from_utf8(first).expect("accepted a non-UTF-8 client-first-message");
    assert!(first.starts_with("n,,") || first.starts_with("y,,"));
    let server_first = String::from_utf8(server_first).expect("server-first is not UTF-8");
    let nonce = server_first
        .strip_prefix("r=")
        .and_then(|s| s.split(',').next())
        .expect("server-first-message does not start with r=");
    assert!(nonce.ends_with(SERVER_NONCE) && nonce.len() > SERVER_NONCE.len());
    assert!(nonce
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b','));

    if flags & 1 == 0 {
        let _ = server.client_final(last);
    } else {
        // RFC 5802 §3, client side.
        let without_proof = format!("c={},r={nonce}", B64.encode(&first[..3]));
        let auth_message = format!("{},{server_first},{without_proof}", &first[3..]);
        let salted = salted_password();
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let mut proof = hmac(&stored_key, auth_message.as_bytes());
        proof.iter_mut().zip(client_key).for_each(|(p, k)| *p ^= k);
        let msg = format!("{without_proof},p={}", B64.encode(proof));
        let server_final = server
            .client_final(msg.as_bytes())
            .unwrap_or_else(|e| panic!("correct client-final {msg:?} refused: {e}"));
        let signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        assert_eq!(
            server_final,
            format!("v={}", B64.encode(signature)).into_bytes()
        );
    }
    // Whatever happened, the exchange is over.
    assert!(server.client_final(last).is_err());
    assert!(server
        .client_first("SCRAM-SHA-256", first.as_bytes())
        .is_err());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let (startup_len, data) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
        _ => return,
    };
    let (startup_bytes, rest) = data.split_at(startup_len.min(data.len()));
    fuzz_startup(startup_bytes);

    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let first = parts.next().unwrap_or_default();
    let last = parts.next().unwrap_or_default();
    let extra = parts.next().unwrap_or_default();
    fuzz_scram(flags, first, last, extra);

    let response = String::from_utf8_lossy(last);
    let user = String::from_utf8_lossy(extra);
    let salt = [flags, 1, 2, 3];
    let _ = md5_check("app", PASSWORD, salt, &response);
    let _ = md5_check(
        &user,
        &response,
        salt,
        "md50123456789abcdef0123456789abcdef",
    );
});
