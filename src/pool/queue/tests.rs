use std::time::{Duration, Instant};

use tokio_test::task;

use super::{Queue, TimedOut};

const LONG: Duration = Duration::from_secs(30);

/// Polls `queue` until `n` checkouts are in line (they run on other tasks).
async fn until_waiting(queue: &Queue<u32>, n: u32) {
    while queue.waiting() != n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_free_place_comes_with_the_most_recently_returned_connection() {
    let q = Queue::<u32>::new(2, LONG);
    let a = q.checkout().await.unwrap();
    let b = q.checkout().await.unwrap();
    assert_eq!((a.conn, b.conn), (None, None), "nothing opened yet");
    assert_eq!(q.free(), 0);
    a.place.give_back(1);
    b.place.give_back(2);
    assert_eq!((q.free(), q.idle()), (2, 2));
    let c = q.checkout().await.unwrap();
    assert_eq!(c.conn, Some(2), "the warmest connection first");
    assert_eq!(q.free(), 1);
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served_with_the_connection_in_hand() {
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout().await.unwrap();
    let first = tokio::spawn({
        let q = q.clone();
        async move { q.checkout().await }
    });
    until_waiting(&q, 1).await;
    let second = tokio::spawn({
        let q = q.clone();
        async move { q.checkout().await }
    });
    until_waiting(&q, 2).await;
    // The returner cannot take its connection straight back: the line comes first.
    held.place.give_back(7);
    let mut late = task::spawn(q.checkout());
    assert!(late.poll().is_pending());
    let got = first.await.unwrap().unwrap();
    assert_eq!(got.conn, Some(7));
    drop(got.place); // a place given back without a connection (it broke)
    let got = second.await.unwrap().unwrap();
    assert_eq!(got.conn, None, "a broken connection is not handed on");
    assert_eq!((q.free(), q.idle()), (0, 0));
}

#[tokio::test]
async fn a_waiter_times_out_and_the_place_stays_with_its_holder() {
    let q = Queue::<u32>::new(1, Duration::from_millis(50));
    let held = q.checkout().await.unwrap();
    let started = Instant::now();
    let got = q.checkout().await;
    assert_eq!(got.err(), Some(TimedOut));
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.waiting(), 0);
    held.place.give_back(1);
    assert_eq!((q.free(), q.idle()), (1, 1));
}

#[tokio::test]
async fn a_waiter_that_left_passes_its_turn_on() {
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout().await.unwrap();
    let mut gone = task::spawn(q.checkout());
    assert!(gone.poll().is_pending());
    let mut next = task::spawn(q.checkout());
    assert!(next.poll().is_pending());
    drop(gone);
    held.place.give_back(3);
    assert!(next.is_woken());
    match next.poll() {
        std::task::Poll::Ready(Ok(grant)) => assert_eq!(grant.conn, Some(3)),
        other => panic!(
            "expected the connection, got {:?}",
            other.map(|r| r.is_ok())
        ),
    }
    assert_eq!(q.waiting(), 0);
}

#[tokio::test]
async fn a_grant_nobody_collected_returns_its_place() {
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout().await.unwrap();
    let mut gone = task::spawn(q.checkout());
    assert!(gone.poll().is_pending());
    held.place.give_back(5);
    // Granted, but the checkout is dropped before it runs again (its client left).
    drop(gone);
    assert_eq!(q.free(), 1, "the place is not lost with the grant");
    let again = q.checkout().await.unwrap();
    assert_eq!(
        again.conn, None,
        "the connection went back to its owner with the grant"
    );
}

#[tokio::test]
async fn the_sweeper_stops_when_nobody_waits_and_starts_again() {
    let q = Queue::<u32>::new(1, Duration::from_millis(20));
    let held = q.checkout().await.unwrap();
    for round in 0..3 {
        // Without a sweeper started again for a new waiter, it would wait forever.
        let got = tokio::time::timeout(Duration::from_secs(5), q.checkout()).await;
        assert_eq!(
            got.ok().and_then(|r| r.err()),
            Some(TimedOut),
            "round {round}"
        );
    }
    drop(held);
    assert_eq!(q.free(), 1);
}
