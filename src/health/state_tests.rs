//! State transitions, lag and the choice of primary, with times handed in.

use std::time::{Duration, SystemTime};

use super::*;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn replica(lsn: u64, since_last_replay_ms: Option<u64>) -> Observation {
    Observation {
        role: Role::Replica,
        lsn: Some(Lsn(lsn)),
        receive_lsn: Some(Lsn(lsn)),
        since_last_replay_ms,
    }
}

fn primary(lsn: u64) -> Observation {
    Observation {
        role: Role::Primary,
        lsn: Some(Lsn(lsn)),
        receive_lsn: None,
        since_last_replay_ms: None,
    }
}

fn refused() -> Result<Observation, String> {
    Err("connection refused".into())
}

#[test]
fn a_first_success_brings_an_unknown_server_up_and_logs_once() {
    let mut t = Tracker::default();
    assert_eq!(t.state().kind(), Kind::Unknown);
    assert_eq!(
        t.record(Ok(primary(10)), at(1), 2),
        Some((Kind::Unknown, Kind::Up(Role::Primary)))
    );
    assert_eq!(
        t.record(Ok(primary(20)), at(2), 2),
        None,
        "no line per check"
    );
    assert_eq!(
        t.state(),
        &ServerState::Up {
            observed: primary(20),
            checked_at: at(2)
        }
    );
}

#[test]
fn a_ban_needs_failures_in_a_row_and_keeps_its_start() {
    let mut t = Tracker::default();
    t.record(Ok(replica(5, Some(0))), at(1), 2);
    assert_eq!(
        t.record(refused(), at(2), 2),
        None,
        "one failure is not enough"
    );
    assert_eq!(t.state().observed(), Some(&replica(5, Some(0))));
    assert_eq!(t.record(Ok(replica(6, Some(0))), at(3), 2), None);
    assert_eq!(t.record(refused(), at(4), 2), None, "the count restarted");
    assert_eq!(
        t.record(refused(), at(5), 2),
        Some((Kind::Up(Role::Replica), Kind::Banned))
    );
    assert_eq!(t.record(Err("timed out".into()), at(6), 2), None);
    assert_eq!(
        t.state(),
        &ServerState::Banned {
            reason: "timed out".into(),
            since: at(5),
            failures: 3
        }
    );
    assert_eq!(
        t.record(Ok(replica(7, Some(0))), at(7), 2),
        Some((Kind::Banned, Kind::Up(Role::Replica)))
    );
}

#[test]
fn with_one_failure_to_ban_a_never_seen_server_is_banned_at_once() {
    let mut t = Tracker::default();
    assert_eq!(
        t.record(refused(), at(1), 1),
        Some((Kind::Unknown, Kind::Banned))
    );
    let mut t = Tracker::default();
    assert_eq!(t.record(refused(), at(1), 2), None, "still unknown");
    assert_eq!(t.state(), &ServerState::Unknown);
}

#[test]
fn a_promotion_is_a_change_of_state() {
    let mut t = Tracker::default();
    t.record(Ok(replica(5, Some(0))), at(1), 1);
    assert_eq!(
        t.record(Ok(primary(9)), at(2), 1),
        Some((Kind::Up(Role::Replica), Kind::Up(Role::Primary)))
    );
}

#[test]
fn lag_is_bytes_behind_and_zero_time_when_caught_up() {
    assert_eq!(
        lag(Lsn(100), &replica(100, Some(60_000))),
        Some(Lag { bytes: 0, ms: 0 }),
        "an idle, caught-up replica has no lag, however old its last transaction"
    );
    assert_eq!(
        lag(Lsn(150), &replica(100, Some(2_500))),
        Some(Lag {
            bytes: 50,
            ms: 2_500
        })
    );
    assert_eq!(
        lag(Lsn(100), &replica(120, Some(5))),
        Some(Lag { bytes: 0, ms: 0 }),
        "read just after its primary, a replica may be ahead"
    );
    assert_eq!(
        lag(Lsn(150), &replica(100, None)),
        None,
        "behind, age unknown"
    );
    let nothing_replayed = Observation {
        lsn: None,
        ..replica(0, None)
    };
    assert_eq!(lag(Lsn(150), &nothing_replayed), None);
}

#[test]
fn the_primary_follows_promotion_and_stays_after_failover() {
    use Role::*;
    assert_eq!(
        choose_primary(&[Some(Primary), Some(Replica)], None),
        Some(0)
    );
    assert_eq!(choose_primary(&[None, Some(Replica)], Some(0)), None);
    assert_eq!(choose_primary(&[None, Some(Primary)], Some(0)), Some(1));
    assert_eq!(
        choose_primary(&[Some(Primary), Some(Primary)], Some(1)),
        Some(1),
        "the old primary back and writable does not take the shard back"
    );
    assert_eq!(
        choose_primary(&[Some(Primary), Some(Primary)], None),
        Some(0),
        "with no history the configured primary wins"
    );
    assert_eq!(
        choose_primary(&[Some(Replica), Some(Primary)], Some(5)),
        Some(1),
        "a choice out of range (after a reload) is dropped"
    );
}
