use super::*;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use proptest::prelude::*;
use rand::SeedableRng;
use std::sync::LazyLock;

// RFC 7677 §3: the SCRAM-SHA-256 example exchange, user "user", password "pencil".
const RFC_SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// Made by Postgres 15: `SET password_encryption = 'scram-sha-256'; CREATE ROLE pencil_user LOGIN
/// PASSWORD 'pencil'; SELECT rolpassword FROM pg_authid WHERE rolname = 'pencil_user';`
const PG15_PENCIL_VERIFIER: &str = "SCRAM-SHA-256$4096:CfEgK5QZnewzuXqdA5n2IQ==$\
     35agnw3nx6MasdaSAN2H6mcog0IMMqkPNxYa+k4zf9g=:lbindmq19M1jwos6lfqsqCHte8qN0FW3scdSW9eHYm4=";

/// Computed once: 4096 PBKDF2 rounds per proptest case would make the suite crawl in debug builds.
static RFC_VERIFIER: LazyLock<ScramVerifier> = LazyLock::new(|| {
    let salt = B64.decode(RFC_SALT_B64).unwrap();
    ScramVerifier::from_password("pencil", &salt, 4096)
});

fn rfc_verifier() -> ScramVerifier {
    RFC_VERIFIER.clone()
}

/// A server that has already answered the RFC client-first-message.
fn rfc_server_after_first() -> ScramServer {
    let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
    server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    server
}

fn protocol_error(first: &str, last: Option<&str>) -> AuthError {
    let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
    let first = server.client_first(SCRAM_SHA_256, first.as_bytes());
    match last {
        None => first.unwrap_err(),
        Some(last) => {
            first.unwrap();
            server.client_final(last.as_bytes()).unwrap_err()
        }
    }
}

#[test]
fn rfc7677_exchange_replays_exactly() {
    let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
    let server_first = server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(String::from_utf8(server_first).unwrap(), RFC_SERVER_FIRST);
    let server_final = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(server_final).unwrap(), RFC_SERVER_FINAL);
}

#[test]
fn rfc7677_wrong_proof_is_wrong_password() {
    // The RFC proof with its first byte changed ('d' -> 'e' flips bits of byte 0).
    let forged = RFC_CLIENT_FINAL.replace("p=dHzb", "p=eHzb");
    let err = rfc_server_after_first()
        .client_final(forged.as_bytes())
        .unwrap_err();
    assert_eq!(err, AuthError::WrongPassword);
    assert!(err.is_wrong_password());
    assert_eq!(err.to_string(), "password authentication failed");
}

#[test]
fn rfc7677_right_proof_for_another_password_is_wrong_password() {
    let salt = B64.decode(RFC_SALT_B64).unwrap();
    let other = ScramVerifier::from_password("pencil2", &salt, 4096);
    let mut server = ScramServer::new(other, RFC_SERVER_NONCE.into());
    server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    let err = server
        .client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap_err();
    assert_eq!(err, AuthError::WrongPassword);
}

/// Runs a whole exchange between our server and rust-postgres' client.
fn exchange_with_pg_client(
    verifier: ScramVerifier,
    password: &str,
    binding: ChannelBinding,
) -> Result<(), AuthError> {
    let nonce = random_nonce(&mut rand::rngs::StdRng::seed_from_u64(7));
    let mut server = ScramServer::new(verifier, nonce);
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let server_first = server.client_first(SCRAM_SHA_256, client.message())?;
    client
        .update(&server_first)
        .expect("client accepts server-first");
    let server_final = server.client_final(client.message())?;
    // The client checks our ServerSignature: proves the server side of the exchange is right too.
    client
        .finish(&server_final)
        .expect("client accepts server-final");
    Ok(())
}

#[test]
fn postgres_protocol_client_right_password_succeeds() {
    let verifier = ScramVerifier::from_password("s3cret pass", b"0123456789abcdef", 4096);
    exchange_with_pg_client(verifier, "s3cret pass", ChannelBinding::unrequested()).unwrap();
}

#[test]
fn postgres_protocol_client_without_tls_binding_sends_y_and_succeeds() {
    // `unsupported()` makes the client send the `y,,` header and `c=eSws`.
    let verifier = ScramVerifier::from_password("s3cret pass", b"0123456789abcdef", 4096);
    exchange_with_pg_client(verifier, "s3cret pass", ChannelBinding::unsupported()).unwrap();
}

#[test]
fn postgres_protocol_client_wrong_password_is_wrong_password() {
    let verifier = ScramVerifier::from_password("s3cret pass", b"0123456789abcdef", 4096);
    let err = exchange_with_pg_client(verifier, "s3cret pasS", ChannelBinding::unrequested());
    assert_eq!(err, Err(AuthError::WrongPassword));
}

#[test]
fn postgres_protocol_client_with_postgres_made_verifier_succeeds() {
    let verifier = ScramVerifier::parse(PG15_PENCIL_VERIFIER).unwrap();
    exchange_with_pg_client(verifier, "pencil", ChannelBinding::unrequested()).unwrap();
}

#[test]
fn verifier_from_password_matches_postgres() {
    let parsed = ScramVerifier::parse(PG15_PENCIL_VERIFIER).unwrap();
    assert_eq!(parsed.iterations, 4096);
    assert_eq!(
        ScramVerifier::from_password("pencil", &parsed.salt, parsed.iterations),
        parsed
    );
}

#[test]
fn verifier_display_is_pg_authid_format_and_parses_back() {
    let verifier = rfc_verifier();
    let text = verifier.to_string();
    assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
    assert_eq!(ScramVerifier::parse(&text).unwrap(), verifier);
    let pg = ScramVerifier::parse(PG15_PENCIL_VERIFIER).unwrap();
    assert_eq!(pg.to_string(), PG15_PENCIL_VERIFIER);
}

#[test]
fn verifier_debug_hides_keys() {
    let debug = format!("{:?}", rfc_verifier());
    assert_eq!(
        debug,
        "ScramVerifier { iterations: 4096, salt: \"W22ZaJ0SNY7soEsUEjb6gQ==\", .. }"
    );
    let md5 = Credential::Md5 {
        user: "alice".into(),
        password: "hunter2".into(),
    };
    assert!(!format!("{md5:?}").contains("hunter2"));
}

#[test]
fn verifier_parse_rejects_malformed() {
    let key = "35agnw3nx6MasdaSAN2H6mcog0IMMqkPNxYa+k4zf9g=";
    let cases = [
        (
            "md529e3d0a0b4f3e9dd311543f9993a8476",
            "does not start with SCRAM-SHA-256$",
        ),
        ("SCRAM-SHA-256$4096:c2FsdA==", "missing '$'"),
        (
            "SCRAM-SHA-256$4096$k:k",
            "missing ':' after the iteration count",
        ),
        (
            "SCRAM-SHA-256$4096:c2FsdA==$k",
            "missing ':' between the keys",
        ),
        ("SCRAM-SHA-256$0:c2FsdA==$k:k", "not a positive integer"),
        ("SCRAM-SHA-256$-1:c2FsdA==$k:k", "not a positive integer"),
        ("SCRAM-SHA-256$4096:c2F!dA==$k:k", "the salt is not base64"),
        (
            "SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:k",
            "StoredKey is not 32 bytes",
        ),
    ];
    for (input, reason) in cases {
        let err = ScramVerifier::parse(input).unwrap_err();
        let AuthError::BadVerifier(msg) = &err else {
            panic!("{input}: {err:?}");
        };
        assert!(msg.contains(reason), "{input}: {msg}");
    }
    let bad_server_key = format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}x");
    assert_eq!(
        ScramVerifier::parse(&bad_server_key)
            .unwrap_err()
            .to_string(),
        "invalid SCRAM verifier: ServerKey is not 32 bytes of base64; \
         expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
    );
}

#[test]
fn md5_check_matches_postgres_protocol() {
    let salt = [0x12, 0x34, 0x56, 0x78];
    let response = postgres_protocol::authentication::md5_hash(b"alice", b"hunter2", salt);
    assert!(md5_check("alice", "hunter2", salt, &response));
}

#[test]
fn md5_check_rejects_wrong_responses() {
    let salt = [0x12, 0x34, 0x56, 0x78];
    let right = postgres_protocol::authentication::md5_hash(b"alice", b"hunter2", salt);
    let wrong_password = postgres_protocol::authentication::md5_hash(b"alice", b"hunter3", salt);
    let wrong_salt = postgres_protocol::authentication::md5_hash(b"alice", b"hunter2", [0; 4]);
    let wrong_user = postgres_protocol::authentication::md5_hash(b"bob", b"hunter2", salt);
    for response in [
        wrong_password.as_str(),
        wrong_salt.as_str(),
        wrong_user.as_str(),
        &right[..right.len() - 1],
        &right.to_uppercase(),
        "",
    ] {
        assert!(!md5_check("alice", "hunter2", salt, response), "{response}");
    }
}

#[test]
fn random_nonce_is_24_printable_chars() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let a = random_nonce(&mut rng);
    let b = random_nonce(&mut rng);
    assert_eq!(a.len(), 24);
    assert!(is_printable(&a));
    assert_ne!(a, b);
    assert_eq!(random_nonce(&mut rand::rng()).len(), 24);
}

#[test]
fn only_scram_sha_256_is_accepted() {
    let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
    let err = server
        .client_first("SCRAM-SHA-256-PLUS", RFC_CLIENT_FIRST.as_bytes())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported SASL mechanism \"SCRAM-SHA-256-PLUS\"; shardgate offers only SCRAM-SHA-256"
    );
    assert!(!err.is_wrong_password());
}

#[test]
fn channel_binding_request_is_rejected() {
    let err = protocol_error("p=tls-server-end-point,,n=,r=abc", None);
    assert_eq!(err, AuthError::ChannelBindingUnsupported);
}

#[test]
fn y_header_needs_matching_binding() {
    let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
    server
        .client_first(SCRAM_SHA_256, b"y,,n=,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    // `biws` is base64 of `n,,`; the client said `y,,`, so it must send `eSws`.
    let err = server
        .client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed SCRAM message: channel binding (c=) does not match the GS2 header of \
         client-first-message"
    );
}

#[test]
fn malformed_client_first_says_what_is_wrong() {
    let cases = [
        ("", "expected channel-binding flag n, y or p= at the start"),
        (
            "x,,n=,r=abc",
            "expected channel-binding flag n, y or p= at the start",
        ),
        (
            "n,a=bob,n=,r=abc",
            "authorization identity (a=) is not supported",
        ),
        ("n,zz,n=,r=abc", "malformed GS2 header; expected n,, or y,,"),
        (
            "n,",
            "missing client-first-message-bare after the GS2 header",
        ),
        ("n,,", "expected username (n=)"),
        (
            "n,,m=ext,n=,r=abc",
            "mandatory extension (m=) is not supported",
        ),
        ("n,,r=abc", "expected username (n=)"),
        ("n,,n=user", "missing nonce (r=)"),
        ("n,,n=user,r=", "nonce (r=) is empty or not printable ASCII"),
        (
            "n,,n=user,r=a b",
            "nonce (r=) is empty or not printable ASCII",
        ),
        (
            "n,,n=user,r=abc,1",
            "malformed attribute; expected <letter>=<value>",
        ),
    ];
    for (input, reason) in cases {
        let err = protocol_error(input, None);
        assert_eq!(err, AuthError::Protocol(reason.into()), "{input}");
    }
    let err = ScramServer::new(rfc_verifier(), "x".into())
        .client_first(SCRAM_SHA_256, b"n,,n=\xff,r=abc")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed SCRAM message: message is not valid UTF-8"
    );
}

#[test]
fn client_first_extensions_are_signed_and_accepted() {
    let mut server = ScramServer::new(rfc_verifier(), "srv".into());
    let first = server
        .client_first(SCRAM_SHA_256, b"n,,n=,r=cli,x=ext")
        .unwrap();
    assert_eq!(first, b"r=clisrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
}

#[test]
fn malformed_client_final_says_what_is_wrong() {
    let nonce = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let cases = [
        (String::new(), "missing proof (p=) at the end"),
        (format!("c=biws,{nonce}"), "expected proof at the end (p=)"),
        (
            format!("c=biws,{nonce},p=abc"),
            "proof (p=) is not 32 bytes of base64",
        ),
        (format!("{nonce},{proof}"), "expected channel binding (c=)"),
        (format!("c=biws,{proof}"), "missing nonce (r=)"),
        (
            format!("c=biws,{nonce},=x,{proof}"),
            "malformed attribute; expected <letter>=<value>",
        ),
        (
            format!("c=biws,r=other,{proof}"),
            "nonce (r=) does not match the one the server sent",
        ),
        (
            format!("c=eSws,{nonce},{proof}"),
            "channel binding (c=) does not match the GS2 header of client-first-message",
        ),
        (
            format!("c=!!!,{nonce},{proof}"),
            "channel binding (c=) does not match the GS2 header of client-first-message",
        ),
    ];
    for (input, reason) in cases {
        let err = protocol_error(RFC_CLIENT_FIRST, Some(&input));
        assert_eq!(err, AuthError::Protocol(reason.into()), "{input}");
    }
}

#[test]
fn steps_out_of_order_are_protocol_errors() {
    let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
    let err = server
        .client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::Protocol("client-final-message was not expected now".into())
    );
    // The failed step ended the exchange: no second chance with a well-formed message.
    let err = server
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::Protocol("client-first-message was not expected now".into())
    );

    let mut server = rfc_server_after_first();
    let forged = RFC_CLIENT_FINAL.replace("p=dHzb", "p=eHzb");
    assert!(server.client_final(forged.as_bytes()).is_err());
    // A wrong proof cannot be retried on the same exchange.
    assert!(server.client_final(RFC_CLIENT_FINAL.as_bytes()).is_err());
}

#[test]
#[should_panic(expected = "SCRAM server nonce must be printable ASCII without ','")]
fn server_nonce_with_comma_is_a_caller_bug() {
    ScramServer::new(rfc_verifier(), "a,b".into());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(first in any::<Vec<u8>>(), last in any::<Vec<u8>>()) {
        let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
        let _ = server.client_first(SCRAM_SHA_256, &first);
        let _ = server.client_final(&last);
        let mut server = rfc_server_after_first();
        let _ = server.client_final(&last);
    }

    /// Random bytes rarely get past the first check; these strings of SCRAM's own alphabet do.
    #[test]
    fn scram_like_text_never_panics(
        first in "[nyp]?,?(a=[a-z]*)?,?(m=|n=)?[a-z=,]{0,12}(,r=[!-~]{0,8})?(,[a-z=]{0,4})?",
        last in "(c=[biwsSeyY=]{0,6})?,?(r=[!-~]{0,8})?,?([a-z=]{0,4},)?(p=[A-Za-z0-9+/=]{0,48})?",
        mechanism in "SCRAM-SHA-256|SCRAM-SHA-256-PLUS|.{0,4}",
    ) {
        let mut server = ScramServer::new(rfc_verifier(), RFC_SERVER_NONCE.into());
        let _ = server.client_first(&mechanism, first.as_bytes());
        let _ = server.client_final(last.as_bytes());
        let mut server = rfc_server_after_first();
        let _ = server.client_final(last.as_bytes());
    }
}
