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
    let a = q.checkout(Instant::now()).await.unwrap();
    let b = q.checkout(Instant::now()).await.unwrap();
    assert_eq!((a.conn, b.conn), (None, None), "nothing opened yet");
    assert_eq!(q.free(), 0);
    a.place.give_back(1);
    b.place.give_back(2);
    assert_eq!((q.free(), q.idle()), (2, 2));
    let c = q.checkout(Instant::now()).await.unwrap();
    assert_eq!(c.conn, Some(2), "the warmest connection first");
    assert_eq!(q.free(), 1);
}

#[tokio::test]
async fn waiters_are_served_first_come_first_served_with_the_connection_in_hand() {
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout(Instant::now()).await.unwrap();
    let first = tokio::spawn({
        let q = q.clone();
        async move { q.checkout(Instant::now()).await }
    });
    until_waiting(&q, 1).await;
    let second = tokio::spawn({
        let q = q.clone();
        async move { q.checkout(Instant::now()).await }
    });
    until_waiting(&q, 2).await;
    // The returner cannot take its connection straight back: the line comes first.
    held.place.give_back(7);
    let mut late = task::spawn(q.checkout(Instant::now()));
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
    let held = q.checkout(Instant::now()).await.unwrap();
    let started = Instant::now();
    let got = q.checkout(Instant::now()).await;
    assert_eq!(got.err(), Some(TimedOut));
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.waiting(), 0);
    held.place.give_back(1);
    assert_eq!((q.free(), q.idle()), (1, 1));
}

#[tokio::test]
async fn a_waiter_that_left_passes_its_turn_on() {
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout(Instant::now()).await.unwrap();
    let mut gone = task::spawn(q.checkout(Instant::now()));
    assert!(gone.poll().is_pending());
    let mut next = task::spawn(q.checkout(Instant::now()));
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
async fn a_waiter_that_left_is_no_longer_counted_as_waiting() {
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout(Instant::now()).await.unwrap();
    let mut first = task::spawn(q.checkout(Instant::now()));
    assert!(first.poll().is_pending());
    let mut gone = task::spawn(q.checkout(Instant::now()));
    assert!(gone.poll().is_pending());
    assert_eq!(q.waiting(), 2);
    drop(gone);
    assert_eq!(
        q.waiting(),
        1,
        "a checkout that left is not counted as waiting"
    );
    held.place.give_back(4);
    assert!(first.is_woken());
    assert_eq!(q.waiting(), 0);
}

#[tokio::test]
async fn a_grant_nobody_collected_returns_its_place() {
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout(Instant::now()).await.unwrap();
    let mut gone = task::spawn(q.checkout(Instant::now()));
    assert!(gone.poll().is_pending());
    held.place.give_back(5);
    // Granted, but the checkout is dropped before it runs again (its client left).
    drop(gone);
    assert_eq!(q.free(), 1, "the place is not lost with the grant");
    let again = q.checkout(Instant::now()).await.unwrap();
    assert_eq!(
        again.conn, None,
        "the connection went back to its owner with the grant"
    );
}

#[tokio::test]
async fn the_sweeper_stops_when_nobody_waits_and_starts_again() {
    let q = Queue::<u32>::new(1, Duration::from_millis(20));
    let held = q.checkout(Instant::now()).await.unwrap();
    for round in 0..3 {
        // Without a sweeper started again for a new waiter, it would wait forever.
        let got = tokio::time::timeout(Duration::from_secs(5), q.checkout(Instant::now())).await;
        assert_eq!(
            got.ok().and_then(|r| r.err()),
            Some(TimedOut),
            "round {round}"
        );
    }
    drop(held);
    assert_eq!(q.free(), 1);
}

/// Many tasks on several threads checking out, giving back (or dropping: a broken connection),
/// and giving up while waiting: never more holders than places, and every place comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_contention_places_are_never_exceeded_and_all_come_back() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const SIZE: u32 = 3;
    let q = Queue::<u32>::new(SIZE, LONG);
    let holders = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16u32)
        .map(|t| {
            let (q, holders) = (q.clone(), holders.clone());
            tokio::spawn(async move {
                for i in 0..300u32 {
                    // Every seventh checkout gives up almost at once (its client left).
                    let wait = if (t + i) % 7 == 0 { 1 } else { 5_000 };
                    let Ok(Ok(grant)) = tokio::time::timeout(
                        Duration::from_micros(wait),
                        q.checkout(Instant::now()),
                    )
                    .await
                    else {
                        continue;
                    };
                    let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= SIZE as usize, "{now} holders of {SIZE} places");
                    tokio::task::yield_now().await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    match (i % 5, grant.conn) {
                        (0, _) => drop(grant.place), // broken: the connection is not handed on
                        (_, conn) => grant.place.give_back(conn.unwrap_or(t * 1000 + i)),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no task panicked");
    }
    assert_eq!(q.free(), SIZE, "every place came back");
    assert!(q.idle() <= SIZE);
    // A place is freed only when no live waiter is left: the ones that gave up were passed over.
    assert_eq!(q.waiting(), 0);
}

#[tokio::test]
async fn a_granted_slot_is_reused_only_once_its_waiter_has_taken_the_grant() {
    let spare = |q: &Queue<u32>| q.lock().spare.len();
    let q = Queue::<u32>::new(1, LONG);
    let held = q.checkout(Instant::now()).await.unwrap();
    let mut a = task::spawn(q.checkout(Instant::now()));
    assert!(a.poll().is_pending());
    held.place.give_back(1);
    assert_eq!(spare(&q), 1, "the granted slot is kept");
    // `a` has not taken its grant: the next waiter must not get its slot.
    let mut b = task::spawn(q.checkout(Instant::now()));
    assert!(b.poll().is_pending());
    let granted = match a.poll() {
        std::task::Poll::Ready(Ok(grant)) => grant,
        _ => panic!("the first waiter lost its grant"),
    };
    assert_eq!(granted.conn, Some(1));
    assert!(
        b.poll().is_pending(),
        "the second waiter waits for its own turn"
    );
    drop(a);
    granted.place.give_back(2);
    match b.poll() {
        std::task::Poll::Ready(Ok(grant)) => assert_eq!(grant.conn, Some(2)),
        _ => panic!("the second waiter did not get the next connection"),
    }
    drop(b);
    // Both slots are free now; a third wait takes one of them instead of a new one.
    let before = spare(&q);
    let held = q.checkout(Instant::now()).await.unwrap();
    let mut c = task::spawn(q.checkout(Instant::now()));
    assert!(c.poll().is_pending());
    assert_eq!(spare(&q), before - 1, "a spare slot was reused");
    held.place.give_back(3);
    assert!(c.is_woken());
}
