//! Reading and writing the relay's TCP sockets without tokio's per-call layers.
//!
//! A relayed query makes two reads and two writes. Through `AsyncRead::poll_read` /
//! `AsyncWriteExt::write_all` each one enters a future, tokio's cooperative budget and its readiness
//! poll before the system call. Here a socket that tokio already knows to be ready is read or
//! written directly (`try_io`: one readiness load, then the call), and a task waits for readiness
//! only when the socket has nothing: the same system calls, fewer instructions around them
//! (bench/README.md, "2026-12-07 (ninth session)").
//!
//! Those layers also kept tokio's cooperative budget, which makes a task that always finds its
//! sockets ready yield now and then; the session's loop keeps a count of its own instead
//! (`Session::run`).

use std::io::{self, ErrorKind};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::TcpStream;

/// Space kept free in a read buffer: a read fills what is free, so less would mean more reads.
const READ_ROOM: usize = 4096;
/// What a read buffer grows by when it has less than [`READ_ROOM`] free.
const READ_GROWTH: usize = 16 * 1024;

/// Reads what `stream` has into `buf`; waits (registering the task) only when it has nothing.
/// `Ok(0)`: the peer closed the connection.
///
/// It registers the task on every wait, even when a registration from an earlier poll may still
/// be there. Skipping that (a flag for "registered already", 0e8f2cd) lost wake-ups: tokio's
/// driver sets a socket's readiness and only then takes the registration, so a task polled in
/// between could read the bytes, clear the readiness and register again, and the driver's wake
/// then took the new registration while nothing was left to read.
pub fn poll_recv(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    make_room(buf);
    loop {
        match try_recv(stream, buf) {
            Recv::Got(n) => return Poll::Ready(Ok(n)),
            Recv::Failed(e) => return Poll::Ready(Err(e)),
            Recv::Nothing => ready!(stream.poll_read_ready(cx))?,
        }
    }
}

/// Keeps at least [`READ_ROOM`] free in `buf` before a read.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_GROWTH);
    }
}

/// What one read attempt found. Not an `io::Result`: telling `WouldBlock` from other errors
/// takes a call per attempt, and most attempts find nothing.
enum Recv {
    Got(usize),
    /// No readiness seen, or a read that found nothing (and cleared the readiness).
    Nothing,
    Failed(io::Error),
}

/// One read, if tokio has seen the socket readable. A read that leaves room in `buf` has
/// drained the socket (a stream socket returns all it holds, up to the room given), so the
/// readiness is cleared at once, as tokio's `poll_read` does: without that, the next read would be
/// a system call that finds nothing. The clear must go through `try_io`'s own readiness
/// snapshot, taken before the read, so a readiness set during the read (the socket may belong to
/// another worker's driver) is not lost.
fn try_recv(stream: &TcpStream, buf: &mut BytesMut) -> Recv {
    let room = buf.capacity() - buf.len();
    let mut found = Recv::Nothing;
    // Its result says only whether readiness was cleared; `found` says what the read did.
    let _ = stream.try_io(Interest::READABLE, || match stream.try_read_buf(buf) {
        Ok(n) => {
            found = Recv::Got(n);
            if n > 0 && n < room {
                return Err(ErrorKind::WouldBlock.into()); // makes try_io clear the readiness
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(e),
        Err(e) => {
            found = Recv::Failed(e);
            Ok(())
        }
    });
    found
}

/// Writes as much of `data` as the socket takes now, without waiting. `Ok(0)` for non-empty
/// data never happens: a socket that takes nothing gives `WouldBlock`.
pub fn try_send(stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
    stream.try_write(data)
}

/// How much of its data a `try_send` took: a socket with a full buffer took none.
pub fn taken(sent: io::Result<usize>) -> io::Result<usize> {
    match sent {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

/// The client's side of a session: a TCP socket, read and written as above, or a TLS stream,
/// through its `AsyncRead` and `AsyncWrite`.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    /// Reads what the client sent into `buf`.
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;

    /// Writes what can be written now (`WouldBlock`: nothing; use `write_all`).
    fn try_send(&mut self, data: &[u8]) -> io::Result<usize>;
}

impl ClientStream for TcpStream {
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        poll_recv(self, cx, buf)
    }

    fn try_send(&mut self, data: &[u8]) -> io::Result<usize> {
        try_send(self, data)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        make_room(buf);
        tokio_util::io::poll_read_buf(std::pin::Pin::new(self), cx, buf)
    }

    fn try_send(&mut self, _data: &[u8]) -> io::Result<usize> {
        // TLS records are written through the stream's own buffering.
        Err(ErrorKind::WouldBlock.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    async fn recv(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
        let read = poll_fn(|cx| poll_recv(stream, cx, buf));
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("a read waited 5 s for bytes that were sent: a wake-up was lost")
    }

    /// Sends `msg` from `a` and reads it on `b`, in as many reads as it takes.
    async fn ping(a: &mut TcpStream, b: &TcpStream, buf: &mut BytesMut, msg: &str) {
        a.write_all(msg.as_bytes()).await.unwrap();
        let mut got = 0;
        while got < msg.len() {
            got += recv(b, buf).await.unwrap();
        }
        assert_eq!(&buf[..], msg.as_bytes());
        buf.clear();
    }

    #[tokio::test]
    async fn every_message_of_a_ping_pong_arrives_after_the_drained_reads_before_it() {
        // Each read drains the socket and clears its readiness; the next message must still
        // wake the reader.
        let (mut a, b) = pair().await;
        let mut buf = BytesMut::new();
        for i in 0..500u32 {
            ping(&mut a, &b, &mut buf, &format!("message {i}")).await;
        }
    }

    #[tokio::test]
    async fn a_reader_polled_again_without_bytes_still_wakes_for_the_next_message() {
        // As in a session: the task is polled for other reasons between the client's messages,
        // and each of those polls finds the client socket without readiness.
        let (mut a, b) = pair().await;
        let mut buf = BytesMut::new();
        for i in 0..200u32 {
            for _ in 0..3 {
                let polled = poll_fn(|cx| Poll::Ready(poll_recv(&b, cx, &mut buf))).await;
                assert!(polled.is_pending(), "nothing was sent yet");
            }
            ping(&mut a, &b, &mut buf, &format!("message {i}")).await;
        }
    }

    /// A waker that notes whether it was woken.
    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn every_wait_registers_the_waker_it_was_polled_with() {
        // The contract that replaced `Armed` (see `poll_recv`): a poll that finds nothing
        // registers its own waker, even right after another poll registered one.
        let (mut a, b) = pair().await;
        let mut buf = BytesMut::new();
        let (first, second) = (
            std::sync::Arc::new(Flag::default()),
            std::sync::Arc::new(Flag::default()),
        );
        for flag in [&first, &second] {
            let waker = std::task::Waker::from(flag.clone());
            let polled = poll_recv(&b, &mut Context::from_waker(&waker), &mut buf);
            assert!(polled.is_pending(), "nothing was sent yet");
        }
        a.write_all(b"hello").await.unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(5), async {
            while !second.0.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        });
        woken
            .await
            .expect("the second poll's waker was not woken: it was not registered");
        recv(&b, &mut buf).await.unwrap();
        assert_eq!(&buf[..], b"hello");
    }

    #[tokio::test]
    async fn a_reader_out_of_budget_still_wakes_for_the_next_message() {
        let (mut a, b) = pair().await;
        let mut buf = BytesMut::new();
        // One poll that has used up the task's budget first: tokio answers `Pending` without
        // registering the task (it wakes the task itself instead).
        let polled = poll_fn(|cx| {
            while let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
                progress.made_progress();
            }
            Poll::Ready(poll_recv(&b, cx, &mut buf))
        })
        .await;
        assert!(polled.is_pending());
        a.write_all(b"hello").await.unwrap();
        recv(&b, &mut buf).await.unwrap();
        assert_eq!(&buf[..], b"hello");
    }

    #[tokio::test]
    async fn a_read_that_fills_the_buffer_leaves_the_rest_readable() {
        let (mut a, b) = pair().await;
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&sent).await.unwrap();
        drop(a);
        let mut buf = BytesMut::new();
        while recv(&b, &mut buf).await.unwrap() > 0 {}
        assert_eq!(buf.len(), sent.len());
        assert!(buf[..] == sent[..], "bytes arrived out of order or changed");
    }

    #[tokio::test]
    async fn a_closed_peer_reads_as_zero_bytes() {
        let (a, b) = pair().await;
        drop(a);
        assert_eq!(recv(&b, &mut BytesMut::new()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn try_send_writes_now_or_says_would_block() {
        let (a, b) = pair().await;
        b.writable().await.unwrap();
        assert_eq!(try_send(&b, b"hello").unwrap(), 5);
        let mut buf = BytesMut::new();
        assert_eq!(recv(&a, &mut buf).await.unwrap(), 5);
        // Nobody reads `a`: the socket buffers fill, and then nothing more is taken.
        let chunk = vec![0u8; 64 * 1024];
        let full = (0..10_000).find_map(|_| match try_send(&b, &chunk) {
            Err(e) => Some(e.kind()),
            Ok(_) => None,
        });
        assert_eq!(full, Some(ErrorKind::WouldBlock));
    }
}
