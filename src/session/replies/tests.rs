use super::*;
use crate::protocol::backend::{
    BIND_COMPLETE, DATA_ROW, ERROR_RESPONSE as E, PARSE_COMPLETE, READY_FOR_QUERY as Z,
};

fn stmt(sql: &str) -> std::sync::Arc<crate::session::prepared::Statement> {
    crate::session::prepared::Registry::default().intern(sql, &[0, 0], "")
}

fn run(r: &mut Replies, msgs: &[(u8, &[u8])]) -> Vec<Verdict> {
    let mut undo = Undo::default();
    msgs.iter()
        .map(|(t, b)| r.on_message(*t, b, &mut undo))
        .collect()
}

fn ready(forward: bool) -> Verdict {
    Verdict::Ready {
        status: msg::TxStatus::Idle,
        forward,
    }
}

#[test]
fn injected_parse_is_swallowed_and_the_rest_forwarded_in_order() {
    let mut r = Replies::default();
    let injected = stmt("select 7");
    r.push(Pending::InjectedParse {
        stmt: injected.clone(),
    });
    r.push(Pending::Bind);
    r.push(Pending::Execute);
    r.push(Pending::Sync);
    let got = run(
        &mut r,
        &[
            (PARSE_COMPLETE, b""),
            (BIND_COMPLETE, b""),
            (DATA_ROW, b"x"),
            (b'C', b"SELECT 1\0"),
            (Z, b"I"),
        ],
    );
    use Verdict::*;
    assert_eq!(got, vec![Swallow, Forward, Forward, Forward, ready(true)]);
    assert!(
        injected.is_valid(),
        "ParseComplete marks the statement valid"
    );
    assert!(r.is_empty());
}

#[test]
fn synthetic_replies_wait_for_their_turn() {
    let mut r = Replies::default();
    r.push(Pending::Bind);
    r.push(Pending::Synthetic(Bytes::from_static(b"1-synthetic")));
    r.push(Pending::Sync);
    let mut out = Vec::new();
    r.drain_front(|b| out.push(b.to_vec()));
    assert!(out.is_empty(), "nothing may overtake the BindComplete");
    assert_eq!(run(&mut r, &[(BIND_COMPLETE, b"")]), vec![Verdict::Forward]);
    r.drain_front(|b| out.push(b.to_vec()));
    assert_eq!(out, vec![b"1-synthetic".to_vec()]);
}

#[test]
fn an_error_skips_to_sync_and_reports_what_to_undo() {
    let mut r = Replies::default();
    let registry = crate::session::prepared::Registry::default();
    let (s3, s4) = (
        registry.intern("select 3", &[0, 0], ""),
        registry.intern("select 4", &[0, 0], ""),
    );
    r.push(Pending::Parse {
        registered: Some(("s1".into(), s3.clone())),
    });
    r.push(Pending::InjectedParse { stmt: s4.clone() });
    r.push(Pending::Bind);
    r.push(Pending::Synthetic(Bytes::from_static(b"never")));
    r.push(Pending::Sync);
    let mut undo = Undo::default();
    assert_eq!(r.on_message(E, b"", &mut undo), Verdict::Forward);
    assert_eq!(undo.client_statements, vec![("s1".to_string(), s3.id)]);
    assert_eq!(
        undo.server_statements,
        vec![s3.id, s4.id],
        "a refused client Parse did not prepare its statement on the backend either"
    );
    assert!(
        !s3.is_valid() && !s4.is_valid(),
        "a failed Parse does not make a statement valid"
    );
    assert!(!undo.awaiting_sync, "the Sync was already sent");
    assert_eq!(r.owed_ready(), 1);
    assert_eq!(run(&mut r, &[(Z, b"I")]), vec![ready(true)]);
}

#[test]
fn an_error_before_the_sync_was_sent_says_the_backend_awaits_it() {
    // A pipelining client (psycopg) whose Sync had not reached shardgate yet when the error came.
    let mut r = Replies::default();
    r.push(Pending::Bind);
    r.push(Pending::Execute);
    let mut undo = Undo::default();
    assert_eq!(r.on_message(E, b"", &mut undo), Verdict::Forward);
    assert!(undo.awaiting_sync);
    assert!(r.is_empty());
}

#[test]
fn settings_query_is_swallowed_whole() {
    let mut r = Replies::default();
    r.push(Pending::Settings);
    r.push(Pending::Query);
    let got = run(
        &mut r,
        &[
            (b'S', b"TimeZone\0UTC\0"),
            (b'C', b"SET\0"),
            (Z, b"I"),
            (b'C', b"SELECT 1\0"),
            (Z, b"I"),
        ],
    );
    use Verdict::*;
    assert_eq!(
        got,
        vec![Swallow, Swallow, ready(false), Forward, ready(true)]
    );
}

/// Bind, Execute of a COPY FROM STDIN, a Sync the backend ignores (it arrives during COPY), the
/// CopyDone and the Sync after it.
fn copy_in_batch() -> Replies {
    let mut r = Replies::default();
    r.push(Pending::Bind);
    r.push(Pending::Execute);
    r.push(Pending::Sync);
    r.push(Pending::CopyEnd);
    r.push(Pending::Sync);
    r
}

#[test]
fn syncs_sent_during_copy_in_are_forgotten() {
    let mut r = copy_in_batch();
    let got = run(
        &mut r,
        &[(BIND_COMPLETE, b""), (b'G', b"\0\0\0"), (b'C', b"COPY 2\0")],
    );
    assert_eq!(got, vec![Verdict::Forward; 3]);
    r.drain_front(|_| {});
    assert_eq!(r.owed_ready(), 1);
    assert_eq!(run(&mut r, &[(Z, b"I")]), vec![ready(true)]);
    assert!(r.is_empty());
}

#[test]
fn a_reply_that_fits_nothing_is_a_desync() {
    let mut r = Replies::default();
    assert!(matches!(
        run(&mut r, &[(DATA_ROW, b"")])[0],
        Verdict::Desync(_)
    ));
    r.push(Pending::Bind);
    assert!(matches!(
        run(&mut r, &[(PARSE_COMPLETE, b"")])[0],
        Verdict::Desync(_)
    ));
}

#[test]
fn a_local_parse_complete_skipped_by_an_error_undoes_the_name() {
    let mut r = Replies::default();
    r.push(Pending::Bind);
    r.push(Pending::LocalParse {
        name: "s9".into(),
        id: 9,
    });
    r.push(Pending::UnnamedParse);
    r.push(Pending::Sync);
    let mut out = Vec::new();
    r.drain_front(|b| out.push(b.to_vec()));
    assert!(
        out.is_empty(),
        "the local ParseComplete waits behind the BindComplete"
    );
    let mut undo = Undo::default();
    assert_eq!(r.on_message(E, b"", &mut undo), Verdict::Forward);
    assert_eq!(undo.client_statements, vec![("s9".to_string(), 9)]);
    assert!(
        undo.unnamed_lost,
        "the skipped unnamed Parse leaves the client without one"
    );
}

#[test]
fn a_failed_settings_query_makes_the_backend_settings_unknown() {
    let mut r = Replies::default();
    r.push(Pending::Settings);
    r.push(Pending::Query);
    let mut undo = Undo::default();
    assert_eq!(r.on_message(E, b"", &mut undo), Verdict::Forward);
    assert!(undo.settings_failed);
    assert_eq!(run(&mut r, &[(Z, b"I")]), vec![ready(false)]);
}

#[test]
fn only_ended_batches_ignores_replies_shardgate_makes_itself() {
    let mut r = Replies::default();
    assert!(!r.only_ended_batches(), "nothing outstanding");
    r.push(Pending::UnnamedParse);
    r.push(Pending::Bind);
    assert!(
        !r.only_ended_batches(),
        "the current batch is on the backend"
    );
    r.push(Pending::Execute);
    r.push(Pending::Sync);
    assert!(r.only_ended_batches());
    // A ParseComplete answered locally in the next batch sends nothing to the backend.
    r.push(Pending::LocalParse {
        name: "s".into(),
        id: 1,
    });
    r.push(Pending::Synthetic(bytes::Bytes::from_static(b"x")));
    assert!(r.only_ended_batches());
    r.push(Pending::Describe);
    assert!(!r.only_ended_batches());
    r.push(Pending::Sync);
    r.push(Pending::Query);
    assert!(
        r.only_ended_batches(),
        "a simple query is a batch of its own"
    );
}

#[test]
fn readies_asked_and_received_count_only_what_the_client_sees() {
    let mut r = Replies::default();
    r.push(Pending::Settings); // injected at checkout: its ReadyForQuery is swallowed
    r.push(Pending::Query);
    r.push(Pending::Bind);
    r.push(Pending::Sync);
    assert_eq!((r.readies_asked(), r.readies_received()), (2, 0));
    run(&mut r, &[(Z, b"I")]);
    assert_eq!(
        r.readies_received(),
        0,
        "the settings query's ready is not the client's"
    );
    run(&mut r, &[(Z, b"I"), (BIND_COMPLETE, b""), (Z, b"I")]);
    assert_eq!((r.readies_asked(), r.readies_received()), (2, 2));
    // A lost backend: nothing outstanding will come, and none is counted as still owed.
    r.push(Pending::Query);
    r.clear();
    assert_eq!((r.readies_asked(), r.readies_received()), (3, 3));
}

#[test]
fn a_sync_forgotten_during_copy_in_is_no_longer_asked_for() {
    let mut r = copy_in_batch();
    run(&mut r, &[(BIND_COMPLETE, b""), (b'G', b"\0\0\0")]);
    assert_eq!(r.readies_asked(), 1);
    run(&mut r, &[(b'C', b"COPY 2\0")]);
    r.drain_front(|_| {});
    run(&mut r, &[(Z, b"I")]);
    assert_eq!((r.readies_asked(), r.readies_received()), (1, 1));
}

/// The relay's shortcut must agree with the full decision: every message it lets through is one
/// `on_message` forwards, leaving the queue and the undo list as they were.
#[test]
fn what_passes_through_is_forwarded_with_nothing_changed() {
    let fronts = || {
        vec![
            Pending::Query,
            Pending::Execute,
            Pending::Sync,
            Pending::Describe,
            Pending::Settings,
            Pending::CommitLsn,
            Pending::Injected,
            Pending::Bind,
            Pending::Parse { registered: None },
            Pending::Raise,
        ]
    };
    let mut passed = 0;
    for i in 0..fronts().len() {
        for tag in 0..=u8::MAX {
            let mut r = Replies::default();
            r.push(fronts().swap_remove(i));
            r.push(Pending::Sync);
            if !r.passes_through(tag) {
                continue;
            }
            passed += 1;
            let before = format!("{:?}", r.queue);
            let mut undo = Undo::default();
            assert_eq!(
                r.on_message(tag, b"", &mut undo),
                Verdict::Forward,
                "tag {tag}"
            );
            assert_eq!(format!("{:?}", r.queue), before, "tag {tag}");
            assert_eq!(undo, Undo::default());
        }
    }
    assert_eq!(
        passed, 4,
        "rows of a query or an Execute, a query's description and end"
    );
}
