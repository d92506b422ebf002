//! The server side of client authentication: SCRAM-SHA-256 (RFC 5802 / RFC 7677) and MD5.
//!
//! shardgate authenticates its clients itself, against the users in its config, so it has to play the
//! role Postgres plays in `auth-scram.c`. Everything here is sans-io: the state machines take the bytes
//! of a client message and return the bytes of the reply; the session code wraps them in
//! `AuthenticationSASLContinue` / `AuthenticationSASLFinal` frames. Randomness (the server nonce, salts)
//! is an argument, so an exchange recorded from a real client replays exactly in a test.
//!
//! Only `SCRAM-SHA-256` without channel binding is offered: shardgate terminates TLS itself but does not
//! yet expose the certificate hash that `SCRAM-SHA-256-PLUS` (`tls-server-end-point`) needs.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

#[cfg(test)]
mod tests;

/// The one SASL mechanism shardgate offers, for the `AuthenticationSASL` mechanism list.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The prefix of a SCRAM verifier in `pg_authid.rolpassword`.
const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";

/// What the server knows about a user's password, computed once at config load.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Offer SCRAM-SHA-256. Built from a verifier string in the config, or from a plain-text password
    /// with [`ScramVerifier::from_password`].
    Scram(ScramVerifier),
    /// Offer MD5. The MD5 challenge needs the plain-text password (or its `md5(password || user)`
    /// hash, which is just as good to an attacker), so this is only built from plain-text config.
    Md5 { user: String, password: String },
}

/// Hand-written so a plain-text password never lands in a log line.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Scram(v) => f.debug_tuple("Scram").field(v).finish(),
            Credential::Md5 { user, .. } => f
                .debug_struct("Md5")
                .field("user", user)
                .finish_non_exhaustive(),
        }
    }
}

/// A SCRAM-SHA-256 verifier: enough to check a client's proof, not enough to log in as the client.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`: the client proves it knows its preimage.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`: proves to the client that we know the password too.
    pub server_key: [u8; 32],
}

/// Why authentication failed. Only [`AuthError::WrongPassword`] is the client's credentials being
/// wrong (SQLSTATE 28P01); every other client-caused variant is a protocol violation (08P01).
/// [`AuthError::BadVerifier`] comes from config load and never reaches a client.
/// No retry helps any of them within the same exchange: a failed exchange is over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The proof (SCRAM) or hash (MD5) did not match. The message deliberately says nothing more.
    #[error("password authentication failed")]
    WrongPassword,
    /// The client sent a malformed or out-of-order message.
    #[error("malformed SCRAM message: {0}")]
    Protocol(String),
    /// A verifier string in the config is not in `pg_authid` format.
    #[error("invalid SCRAM verifier: {0}")]
    BadVerifier(String),
    /// The client picked a SASL mechanism we did not offer.
    #[error("unsupported SASL mechanism \"{0}\"; shardgate offers only SCRAM-SHA-256")]
    UnsupportedMechanism(String),
    /// The client asked for channel binding (`p=` GS2 flag), which needs SCRAM-SHA-256-PLUS.
    #[error(
        "SCRAM channel binding is not supported; connect with channel_binding=disable or prefer"
    )]
    ChannelBindingUnsupported,
}

impl AuthError {
    /// True if the client's password was wrong (SQLSTATE 28P01, `invalid_password`); false for
    /// protocol violations (08P01).
    pub fn is_wrong_password(&self) -> bool {
        matches!(self, AuthError::WrongPassword)
    }
}

fn protocol(msg: &str) -> AuthError {
    AuthError::Protocol(msg.to_owned())
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `Hi()` of RFC 5802: PBKDF2-HMAC-SHA256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(password).expect("HMAC takes any key length");
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u).for_each(|(o, b)| *o ^= b);
    }
    out
}

/// Decodes base64 that must hold exactly 32 bytes (a key, a proof).
fn decode_32(b64: &str) -> Option<[u8; 32]> {
    B64.decode(b64).ok()?.try_into().ok()
}

impl ScramVerifier {
    /// Derives the verifier the way Postgres does for `CREATE ROLE .. PASSWORD 'plain'`.
    ///
    /// SASLprep: RFC 5802 normalizes the password with SASLprep first. We use the password bytes
    /// as they are. For ASCII passwords that is exactly SASLprep's result (SASLprep changes only
    /// non-ASCII text, and Postgres itself falls back to the raw bytes when SASLprep rejects a
    /// password, e.g. one with control characters). A non-ASCII password that SASLprep would change
    /// (not NFKC, or containing non-ASCII spaces) will not match what clients compute; give such
    /// users a verifier string from Postgres instead.
    ///
    /// # Panics
    /// If `iterations` is 0 (Hi() is undefined; Postgres uses 4096).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        assert!(iterations > 0, "SCRAM iteration count must be at least 1");
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Parses `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`, the format of
    /// `pg_authid.rolpassword`, so operators can copy verifiers from Postgres into the config.
    pub fn parse(s: &str) -> Result<ScramVerifier, AuthError> {
        let bad = |what: &str| AuthError::BadVerifier(format!("{what}; expected {FORMAT}"));
        const FORMAT: &str = "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>";
        let rest = s
            .strip_prefix(VERIFIER_PREFIX)
            .ok_or_else(|| bad("does not start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("missing '$'"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or_else(|| bad("missing ':' after the iteration count"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or_else(|| bad("missing ':' between the keys"))?;
        let iterations = match iterations.parse::<u32>() {
            Ok(i) if i > 0 => i,
            _ => return Err(bad("the iteration count is not a positive integer")),
        };
        Ok(ScramVerifier {
            iterations,
            salt: B64
                .decode(salt)
                .map_err(|_| bad("the salt is not base64"))?,
            stored_key: decode_32(stored_key)
                .ok_or_else(|| bad("StoredKey is not 32 bytes of base64"))?,
            server_key: decode_32(server_key)
                .ok_or_else(|| bad("ServerKey is not 32 bytes of base64"))?,
        })
    }
}

/// The `pg_authid` format, which [`ScramVerifier::parse`] reads back.
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERIFIER_PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// Hand-written so the keys never land in a log line: they let anyone impersonate the *server*.
impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .finish_non_exhaustive()
    }
}

/// A fresh server nonce for production: 18 random bytes in base64, i.e. 24 printable characters
/// with no ',' and no '=' padding (the same length Postgres uses).
pub fn random_nonce<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut bytes = [0u8; 18];
    rng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// Checks the response to `AuthenticationMD5Password`: the client sends
/// `"md5" || hex(md5(hex(md5(password || user)) || salt))`.
/// Compared in constant time so the time taken does not reveal how much of a guess was right.
pub fn md5_check(user: &str, password: &str, salt: [u8; 4], client_response: &str) -> bool {
    let expected =
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
    expected.as_bytes().ct_eq(client_response.as_bytes()).into()
}

/// One SCRAM-SHA-256 exchange with one client, server side. Each step consumes the state it needs, so
/// a step called out of order or after a failure is a protocol error rather than a second chance.
pub struct ScramServer {
    state: State,
}

enum State {
    AwaitingClientFirst {
        verifier: ScramVerifier,
        server_nonce: String,
    },
    AwaitingClientFinal {
        verifier: ScramVerifier,
        /// `n,,` or `y,,`: the client must echo it, base64-encoded, in `c=`.
        gs2_header: String,
        /// Client nonce followed by server nonce: the client must echo it in `r=`.
        nonce: String,
        /// `client-first-message-bare + "," + server-first-message + ","`: the start of the
        /// AuthMessage both sides sign.
        auth_message_prefix: String,
    },
    /// Succeeded, failed, or was fed a bad message; nothing more is accepted.
    Done,
}

impl ScramServer {
    /// `server_nonce` is appended to the client's nonce; use [`random_nonce`] in production.
    ///
    /// # Panics
    /// If `server_nonce` is empty or has a character outside the printable ASCII range or a ','
    /// (RFC 5802 `printable`). This is the caller's bug, never the client's input.
    pub fn new(verifier: ScramVerifier, server_nonce: String) -> Self {
        assert!(
            is_printable(&server_nonce),
            "SCRAM server nonce must be printable ASCII without ','"
        );
        ScramServer {
            state: State::AwaitingClientFirst {
                verifier,
                server_nonce,
            },
        }
    }

    /// Input: the mechanism name and data of the client's `SASLInitialResponse`.
    /// Output: the server-first-message, to send in `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingClientFirst {
            verifier,
            server_nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(protocol("client-first-message was not expected now"));
        };
        if mechanism != SCRAM_SHA_256 {
            return Err(AuthError::UnsupportedMechanism(sanitize(mechanism)));
        }
        let first = ClientFirst::parse(as_utf8(data)?)?;
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        self.state = State::AwaitingClientFinal {
            auth_message_prefix: format!("{},{server_first},", first.bare),
            gs2_header: first.gs2_header.to_owned(),
            nonce,
            verifier,
        };
        Ok(server_first.into_bytes())
    }

    /// Input: the data of the client's `SASLResponse`.
    /// Output: the server-final-message, to send in `AuthenticationSASLFinal`; returned only when
    /// the client's proof is right, otherwise [`AuthError::WrongPassword`].
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitingClientFinal {
            verifier,
            gs2_header,
            nonce,
            auth_message_prefix,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(protocol("client-final-message was not expected now"));
        };
        let last = ClientFinal::parse(as_utf8(data)?)?;
        // The channel binding and nonce are public values, so plain comparisons are fine here.
        if B64.decode(last.channel_binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(protocol(
                "channel binding (c=) does not match the GS2 header of client-first-message",
            ));
        }
        if last.nonce != nonce {
            return Err(protocol(
                "nonce (r=) does not match the one the server sent",
            ));
        }
        let auth_message = format!("{auth_message_prefix}{}", last.without_proof);
        if !proof_is_valid(&verifier, auth_message.as_bytes(), &last.proof) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// RFC 5802 §3: `ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)` and the client knows the
/// password iff `H(ClientKey) == StoredKey`. The last compare is constant-time so timing does not leak
/// how close a forged proof came.
fn proof_is_valid(verifier: &ScramVerifier, auth_message: &[u8], proof: &[u8; 32]) -> bool {
    let mut client_key = hmac(&verifier.stored_key, auth_message);
    client_key.iter_mut().zip(proof).for_each(|(k, p)| *k ^= p);
    sha256(&client_key).ct_eq(&verifier.stored_key).into()
}

fn as_utf8(data: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(data).map_err(|_| protocol("message is not valid UTF-8"))
}

/// RFC 5802 `printable`: 0x21..=0x7E except ','. Nonces must be printable.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Client-chosen text going into an error message: keep it short and printable.
fn sanitize(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Reads the attribute `name=value` from `part`, returning the value.
fn attr<'a>(part: Option<&'a str>, name: char, what: &str) -> Result<&'a str, AuthError> {
    let part = part.ok_or_else(|| AuthError::Protocol(format!("missing {what} ({name}=)")))?;
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(n), Some('=')) if n == name => Ok(&part[2..]),
        _ => Err(AuthError::Protocol(format!("expected {what} ({name}=)"))),
    }
}

/// Optional extensions at the end of a message: we understand none, but they must be attributes.
fn check_extensions<'a>(rest: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    for ext in rest {
        let b = ext.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(protocol("malformed attribute; expected <letter>=<value>"));
        }
    }
    Ok(())
}

/// `gs2-header client-first-message-bare`, borrowed from the client's message.
struct ClientFirst<'a> {
    /// `n,,` or `y,,`.
    gs2_header: &'a str,
    /// `n=<user>,r=<nonce>[,ext]`: part of the signed AuthMessage, kept byte for byte.
    bare: &'a str,
    client_nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    fn parse(msg: &'a str) -> Result<Self, AuthError> {
        let mut header = msg.splitn(3, ',');
        match header.next() {
            // `y` means "the client could bind but thinks the server cannot". Postgres rejects it
            // as a downgrade attack when it offers -PLUS; we never do, so it is honest here.
            Some("n" | "y") => {}
            Some(flag) if flag.starts_with("p=") => {
                return Err(AuthError::ChannelBindingUnsupported)
            }
            _ => {
                return Err(protocol(
                    "expected channel-binding flag n, y or p= at the start",
                ))
            }
        }
        match header.next() {
            Some("") => {}
            Some(a) if a.starts_with("a=") => {
                return Err(protocol("authorization identity (a=) is not supported"))
            }
            _ => return Err(protocol("malformed GS2 header; expected n,, or y,,")),
        }
        let bare = header
            .next()
            .ok_or_else(|| protocol("missing client-first-message-bare after the GS2 header"))?;
        let mut parts = bare.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(protocol("mandatory extension (m=) is not supported"));
        }
        // Postgres ignores the SCRAM username (clients send an empty one): the startup packet's
        // user is the one being authenticated. We check only that the attribute is there.
        attr(first, 'n', "username")?;
        let client_nonce = attr(parts.next(), 'r', "nonce")?;
        if !is_printable(client_nonce) {
            return Err(protocol("nonce (r=) is empty or not printable ASCII"));
        }
        check_extensions(parts)?;
        Ok(ClientFirst {
            gs2_header: &msg[..msg.len() - bare.len()],
            bare,
            client_nonce,
        })
    }
}

/// `c=<binding>,r=<nonce>[,ext],p=<proof>`, borrowed from the client's message.
struct ClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    /// Everything before `,p=`: the last part of the signed AuthMessage.
    without_proof: &'a str,
    proof: [u8; 32],
}

impl<'a> ClientFinal<'a> {
    fn parse(msg: &'a str) -> Result<Self, AuthError> {
        // The proof is always the last attribute (RFC 5802 §7).
        let (without_proof, proof) = msg
            .rsplit_once(',')
            .ok_or_else(|| protocol("missing proof (p=) at the end"))?;
        let proof = attr(Some(proof), 'p', "proof at the end")?;
        let proof =
            decode_32(proof).ok_or_else(|| protocol("proof (p=) is not 32 bytes of base64"))?;
        let mut parts = without_proof.split(',');
        let channel_binding = attr(parts.next(), 'c', "channel binding")?;
        let nonce = attr(parts.next(), 'r', "nonce")?;
        check_extensions(parts)?;
        Ok(ClientFinal {
            channel_binding,
            nonce,
            without_proof,
            proof,
        })
    }
}
