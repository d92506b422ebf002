//! Byte-level oracle: the same raw message sequence is sent to Postgres directly and through
//! shardgate, and the replies must be identical, message for message. This pins down the
//! extended protocol (pipelining, several Executes per Sync, portal suspension, errors mid-batch,
//! Flush without Sync, BEGIN without Sync) exactly as Postgres answers it.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Env, PASSWORD, USER};

/// One reply message: tag and body.
type Reply = (char, Vec<u8>);

/// A logged-in raw connection.
pub struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn login(port: u16) -> Raw {
        use postgres_protocol::authentication::sasl;
        use postgres_protocol::message::backend::Message;
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = BytesMut::new();
        frontend::startup_message([("user", USER), ("database", "app")], &mut out).unwrap();
        s.write_all(&out).await.unwrap();
        let (mut buf, mut scram) = (BytesMut::new(), None);
        loop {
            s.read_buf(&mut buf).await.unwrap();
            while let Some(msg) = Message::parse(&mut buf).unwrap() {
                let mut out = BytesMut::new();
                match msg {
                    Message::AuthenticationSasl(_) => {
                        let sc = sasl::ScramSha256::new(
                            PASSWORD.as_bytes(),
                            sasl::ChannelBinding::unsupported(),
                        );
                        frontend::sasl_initial_response(
                            sasl::SCRAM_SHA_256,
                            sc.message(),
                            &mut out,
                        )
                        .unwrap();
                        scram = Some(sc);
                    }
                    Message::AuthenticationSaslContinue(body) => {
                        let sc = scram.as_mut().unwrap();
                        sc.update(body.data()).unwrap();
                        frontend::sasl_response(sc.message(), &mut out).unwrap();
                    }
                    Message::ReadyForQuery(_) => return Raw { s, buf },
                    Message::ErrorResponse(_) => panic!("login refused"),
                    _ => {}
                }
                s.write_all(&out).await.unwrap();
            }
        }
    }

    pub fn into_stream(self) -> TcpStream {
        self.s
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Reads replies until `n` ReadyForQuery have arrived (or, with `n == 0`, until `count` messages).
    pub async fn replies(&mut self, ready: usize, count: usize) -> Vec<Reply> {
        let mut got = Vec::new();
        let mut readies = 0;
        loop {
            while self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() < len + 1 {
                    break;
                }
                let msg = self.buf.split_to(len + 1);
                let tag = msg[0] as char;
                readies += usize::from(tag == 'Z');
                got.push((tag, msg[5..].to_vec()));
                if (ready > 0 && readies == ready) || (ready == 0 && got.len() == count) {
                    return got;
                }
            }
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.s.read_buf(&mut self.buf),
            )
            .await
            .expect("a reply within 10 s")
            .unwrap();
            assert!(n > 0, "connection closed; got so far: {got:?}");
        }
    }
}

/// Runs the same steps on both connections and requires identical replies at every step.
/// A step is (messages, ReadyForQuery count to wait for, or message count when that is 0).
async fn same_replies(env: &Env, steps: &[(BytesMut, usize, usize)]) {
    let mut direct = Raw::login(env.pg.port()).await;
    let mut proxied = Raw::login(env.port()).await;
    for (i, (bytes, ready, count)) in steps.iter().enumerate() {
        direct.send(bytes).await;
        proxied.send(bytes).await;
        let want = direct.replies(*ready, *count).await;
        let got = proxied.replies(*ready, *count).await;
        assert_eq!(
            got, want,
            "step {i}: shardgate's replies differ from Postgres'"
        );
    }
}

fn msgs(build: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    build(&mut b);
    b
}

fn bind(b: &mut BytesMut, portal: &str, stmt: &str, params: &[&str]) {
    frontend::bind(
        portal,
        stmt,
        std::iter::empty::<i16>(),
        params.iter(),
        |p, buf| {
            buf.extend_from_slice(p.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        std::iter::empty::<i16>(),
        b,
    )
    .map_err(|_| "bind")
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_replies_are_byte_identical_to_postgres() {
    let env = Env::start().await;
    env.direct("create table t (id int primary key, v text); grant all on t to app");
    let steps = vec![
        // Named statement, Describe, two portals and several Executes in one Sync.
        (
            msgs(|b| {
                frontend::parse("s1", "select $1::int + 1 as n", std::iter::empty(), b).unwrap();
                frontend::describe(b'S', "s1", b).unwrap();
                bind(b, "p1", "s1", &["5"]);
                frontend::describe(b'P', "p1", b).unwrap();
                frontend::execute("p1", 0, b).unwrap();
                bind(b, "", "s1", &["41"]);
                frontend::execute("", 0, b).unwrap();
                frontend::close(b'P', "p1", b).unwrap();
                frontend::sync(b);
            }),
            1,
            0,
        ),
        // Portal suspension: Execute with a row limit, twice, then to the end.
        (
            msgs(|b| {
                frontend::parse(
                    "",
                    "select g from generate_series(1, 5) g",
                    std::iter::empty(),
                    b,
                )
                .unwrap();
                bind(b, "", "", &[]);
                frontend::execute("", 2, b).unwrap();
                frontend::execute("", 2, b).unwrap();
                frontend::execute("", 0, b).unwrap();
                frontend::sync(b);
            }),
            1,
            0,
        ),
        // An error mid-batch: the rest up to Sync is skipped; the next batch works.
        (
            msgs(|b| {
                frontend::parse("", "select 1/0", std::iter::empty(), b).unwrap();
                bind(b, "", "", &[]);
                frontend::execute("", 0, b).unwrap();
                bind(b, "", "s1", &["1"]);
                frontend::execute("", 0, b).unwrap();
                frontend::sync(b);
                bind(b, "", "s1", &["2"]);
                frontend::execute("", 0, b).unwrap();
                frontend::sync(b);
            }),
            2,
            0,
        ),
        // The unnamed statement across a Flush: replies arrive without a Sync.
        (
            msgs(|b| {
                frontend::parse("", "select 'flushed'::text", std::iter::empty(), b).unwrap();
                frontend::describe(b'S', "", b).unwrap();
                frontend::flush(b);
            }),
            0,
            3,
        ),
        (
            msgs(|b| {
                bind(b, "", "", &[]);
                frontend::execute("", 0, b).unwrap();
                frontend::sync(b);
            }),
            1,
            0,
        ),
        // BEGIN without a Sync before the first statement (as JDBC sends it), then an error
        // inside the transaction and the failed state, then ROLLBACK.
        (
            msgs(|b| {
                frontend::parse("", "BEGIN", std::iter::empty(), b).unwrap();
                bind(b, "", "", &[]);
                frontend::execute("", 0, b).unwrap();
                frontend::parse("", "insert into t values (1, 'a')", std::iter::empty(), b)
                    .unwrap();
                bind(b, "", "", &[]);
                frontend::execute("", 0, b).unwrap();
                frontend::sync(b);
                frontend::parse("", "insert into t values (1, 'dup')", std::iter::empty(), b)
                    .unwrap();
                bind(b, "", "", &[]);
                frontend::execute("", 0, b).unwrap();
                frontend::sync(b);
                frontend::query("select 1", b).unwrap();
                frontend::query("rollback", b).unwrap();
            }),
            4,
            0,
        ),
        // Simple queries: several statements, an empty one, and a statement-level error.
        (
            msgs(|b| {
                frontend::query("select 1; select 'two'", b).unwrap();
                frontend::query("", b).unwrap();
                frontend::query(";", b).unwrap();
                frontend::query("select nosuchcolumn", b).unwrap();
            }),
            4,
            0,
        ),
        // Closing a statement that does not exist is not an error; Sync alone answers Z.
        (
            msgs(|b| {
                frontend::close(b'S', "never_prepared", b).unwrap();
                frontend::close(b'P', "never_bound", b).unwrap();
                frontend::sync(b);
                frontend::sync(b);
            }),
            2,
            0,
        ),
    ];
    same_replies(&env, &steps).await;
}
