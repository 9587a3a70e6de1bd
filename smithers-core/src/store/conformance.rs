//! The behaviour every [`Store`] backend must have, as one suite: each behaviour is a function
//! here, and [`store_conformance_tests!`](crate::store_conformance_tests) expands one
//! `#[tokio::test]` per behaviour for a backend, so SQLite and Postgres each run the whole list
//! and a failure names the broken behaviour.
//!
//! Enabled with the `conformance` feature. Each check takes a fresh, empty store and panics with
//! a message naming the broken rule. A backend implements [`Backend`] (open a fresh store on a
//! given clock, hand it out, dispose of it) and invokes
//! `smithers_core::store_conformance_tests!(ItsBackend);` in
//! a test file: `smithers-core/tests/store_conformance.rs` does so for SQLite and for
//! [`PostgresBackend`] (feature `postgres`).

use std::future::Future;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{
    run_channel, stop_channel, AttemptEnd, CancelOutcome, Claim, ClaimHolder, ClaimRenewal,
    FenceToken, ForkRun, GroupUpdate, NewRun, NodeRecord, QueuedAttempt, RemoteOutcome,
    RestartRecord, RewindTo, Store, UsageReport, WorkerRecord, Write, WriteBatch,
};
use crate::clock::{Clock, SystemClock, TestClock};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::model::{ApprovalStatus, LoopState, NodeStatus, RunStatus, Timestamp, Usage};
use crate::output::{Column, ColumnKind, Output, OutputInfo};

/// An output with one column of each kind.
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Every {
    i: i64,
    b: bool,
    r: f64,
    t: String,
    j: Vec<String>,
    o: Option<String>,
}

impl Output for Every {
    const TABLE: &'static str = "conformance_every";
    const COLUMNS: &'static [Column] = &[
        Column {
            name: "i",
            kind: ColumnKind::Integer,
            nullable: false,
            rust_type: "i64",
        },
        Column {
            name: "b",
            kind: ColumnKind::Bool,
            nullable: false,
            rust_type: "bool",
        },
        Column {
            name: "r",
            kind: ColumnKind::Real,
            nullable: false,
            rust_type: "f64",
        },
        Column {
            name: "t",
            kind: ColumnKind::Text,
            nullable: false,
            rust_type: "String",
        },
        Column {
            name: "j",
            kind: ColumnKind::Json,
            nullable: false,
            rust_type: "Vec<String>",
        },
        Column {
            name: "o",
            kind: ColumnKind::Text,
            nullable: true,
            rust_type: "Option<String>",
        },
    ];
}

fn new_run(id: &str, owner: &str) -> NewRun {
    NewRun {
        run_id: id.into(),
        workflow: "conformance".into(),
        input: json!({"x": 1}),
        owner: owner.into(),
        lease_ttl: Duration::from_secs(60),
    }
}

fn finished(node: &str, value: serde_json::Value, info: OutputInfo) -> Vec<Write> {
    vec![
        Write::Output {
            info,
            node_id: node.into(),
            iteration: 0,
            value,
        },
        Write::Node(NodeRecord {
            node_id: node.into(),
            iteration: 0,
            status: NodeStatus::Finished,
            attempts: 1,
            output_table: Some(info.table.into()),
            loop_id: None,
            last_error: None,
        }),
        Write::Event(Event::node(
            "r",
            node,
            0,
            Timestamp::from_millis(0),
            EventKind::NodeFinished {
                attempt: 1,
                usage: None,
            },
        )),
    ]
}

/// The instant an RFC 3339 literal of a check names.
fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap_or_else(|| panic!("`{text}` is not RFC 3339"))
}

fn batch(writes: Vec<Write>) -> WriteBatch {
    WriteBatch {
        run_id: "r".into(),
        fence: None,
        writes,
    }
}

/// A backend under test: how to open a fresh, empty store for one test and dispose of it.
pub trait Backend: Sized {
    /// Opens a fresh store for the test `test`, reading the time from `clock` (its
    /// `with_clock`); `None` when the test is skipped (after [`external_missing`] said why).
    fn open(test: &'static str, clock: Arc<dyn Clock>)
        -> impl Future<Output = Option<Self>> + Send;
    /// The store to check.
    fn store(&self) -> Arc<dyn Store>;
    /// Removes what [`Backend::open`] created (a schema, a file); runs even when the check failed.
    fn close(self) -> impl Future<Output = ()> + Send;
    /// Why the backend does not have the behaviour `case` yet, if so: the test then prints
    /// `skipped: <case>: <why>` instead of running. A gap said out loud, never a pass.
    fn lacks(_case: &str) -> Option<&'static str> {
        None
    }
}

/// Runs one behaviour `case` on a fresh store of `B` on the system clock, disposing of it
/// afterwards whatever the outcome, then re-raising the check's panic.
pub async fn run_case<B, F, Fut>(test: &'static str, case: F)
where
    B: Backend,
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on::<B, _, _>(test, Arc::new(SystemClock), case).await;
}

/// [`run_case`] for a behaviour that reads the store's clock: the store reads a
/// [`TestClock`] (at [`CLOCK_START`]), which `case` is given to read and move.
pub async fn run_clocked_case<B, F, Fut>(test: &'static str, case: F)
where
    B: Backend,
    F: FnOnce(Arc<dyn Store>, TestClock) -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = TestClock::at_millis(CLOCK_START);
    let given = clock.clone();
    run_on::<B, _, _>(test, Arc::new(clock), move |s| case(s, given)).await;
}

/// Where [`run_clocked_case`]'s clock starts: 2026-11-25T06:08:03.123Z, a time no test runs
/// at, so a row stamped from the system clock cannot pass for it.
pub const CLOCK_START: i64 = 1_795_586_883_123;

async fn run_on<B, F, Fut>(test: &'static str, clock: Arc<dyn Clock>, case: F)
where
    B: Backend,
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::FutureExt as _;
    if let Some(why) = B::lacks(test) {
        let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
        return;
    }
    let Some(backend) = B::open(test, clock).await else {
        return;
    };
    let outcome = AssertUnwindSafe(case(backend.store())).catch_unwind().await;
    backend.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Whether tests must fail instead of skipping when an external server or tool is missing
/// (`SMITHERS_REQUIRE_EXTERNAL=1`, which CI sets).
pub fn external_required() -> bool {
    std::env::var("SMITHERS_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// A test needs something this machine lacks (a PostgreSQL server, a tool): prints
/// `skipped: <test>: <why>` straight to stderr (the harness does not capture it) so the skip is
/// never silent, or panics when [`external_required`].
pub fn external_missing(test: &str, why: &str) {
    if external_required() {
        panic!("{test}: {why} (SMITHERS_REQUIRE_EXTERNAL=1 turns this skip into a failure)");
    }
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// Expands one `#[tokio::test]` per conformance behaviour for a [`Backend`] type: the whole
/// suite, each behaviour its own test named after it. Add a behaviour here and to the module.
#[macro_export]
macro_rules! store_conformance_tests {
    ($backend:ty) => {
        $crate::store_conformance_tests!(@cases $backend;
            runs_round_trip,
            outputs_round_trip_every_column_kind,
            a_failing_batch_writes_nothing,
            a_run_and_its_first_batch_commit_together,
            concurrent_batches_commit_independently,
            leases_exclude_a_live_holder,
            a_batch_with_a_stale_token_commits_nothing,
            lease_calls_are_fenced,
            resume_reset_abandons_in_progress_attempts,
            loops_state_events_and_steps_persist,
            approvals_and_cancel_requests,
            attempts_frames_and_cache_persist,
            steps_are_numbered_rewound_and_forked,
            a_follower_after_seq_never_misses_an_event,
            workers_and_restarts_persist,
            skip_locked_claims_give_each_attempt_to_one_worker,
            a_stale_claim_commits_nothing,
            queued_attempts_are_adopted_stopped_and_announced,
            the_claims_of_a_dead_worker_are_freed_fenced,
            usage_reports_are_fenced_by_the_claim_and_read_by_the_driver,
        );
        $crate::store_conformance_tests!(@clocked $backend;
            rows_and_leases_read_the_store_clock,
        );
    };
    (@clocked $backend:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store::conformance::run_clocked_case::<$backend, _, _>(
                    stringify!($case),
                    $crate::store::conformance::$case,
                )
                .await;
            }
        )*
    };
    (@cases $backend:ty; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store::conformance::run_case::<$backend, _, _>(
                    stringify!($case),
                    $crate::store::conformance::$case,
                )
                .await;
            }
        )*
    };
}

/// Active runs are the `running` and `queued` ones; the worker registry and runs' restart
/// bookkeeping are upserted, read back and removed.
pub async fn workers_and_restarts_persist(s: Arc<dyn Store>) {
    let owner = "h:1:aaaa";
    let first = s.create_run(new_run("q", owner)).await.unwrap();
    let mut b = batch(vec![Write::RunStatus {
        status: RunStatus::Queued,
        error: None,
    }]);
    b.run_id = "q".into();
    s.write(b.fenced(&first)).await.unwrap();
    s.release_lease("q", &first).await.unwrap();
    let r_fence = s.create_run(new_run("r", owner)).await.unwrap();
    s.create_run(new_run("done", owner)).await.unwrap();
    let mut b = batch(vec![Write::RunStatus {
        status: RunStatus::Finished,
        error: None,
    }]);
    b.run_id = "done".into();
    s.write(b).await.unwrap();
    let active: Vec<(String, RunStatus, Option<String>)> = s
        .active_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.run_id, r.status, r.lease_owner))
        .collect();
    assert_eq!(
        active,
        [
            ("q".to_owned(), RunStatus::Queued, None),
            ("r".to_owned(), RunStatus::Running, Some(owner.to_owned())),
        ],
        "active runs: running and queued, oldest first; a finished run is not"
    );

    let mut w = WorkerRecord {
        worker_id: "h:7:w1".into(),
        host: "h".into(),
        pid: 7,
        workflow: None,
        concurrency: 4,
        driving: vec![],
        started_at: at("2026-12-01T00:00:00.000Z"),
        heartbeat_at: at("2026-12-01T00:00:00.000Z"),
        expires_ms: 1_000,
    };
    s.put_worker(&w).await.unwrap();
    w.workflow = Some("conformance".into());
    w.driving = vec!["q".into(), "r".into()];
    w.heartbeat_at = at("2026-12-01T00:00:05.000Z");
    w.expires_ms = 16_000;
    s.put_worker(&w).await.unwrap();
    let mut other = w.clone();
    other.worker_id = "h:8:w2".into();
    other.pid = 8;
    other.started_at = at("2026-12-01T00:00:01.000Z");
    s.put_worker(&other).await.unwrap();
    assert_eq!(
        s.workers().await.unwrap(),
        [w.clone(), other.clone()],
        "a heartbeat updates the row; workers oldest first"
    );
    assert!(w.is_stale(16_001) && !w.is_stale(16_000));
    s.remove_worker("h:7:w1").await.unwrap();
    s.remove_worker("unknown").await.unwrap();
    assert_eq!(s.workers().await.unwrap(), [other]);

    assert_eq!(s.restarts("r").await.unwrap(), None);
    let mut r = RestartRecord {
        run_id: "r".into(),
        restarts: 1,
        progress: 0,
        last_restart_at: at("2026-12-01T00:00:02.000Z"),
        last_restart_ms: 2_000,
        last_reason: "its driver is gone".into(),
        last_worker: "h:8:w2".into(),
    };
    s.put_restarts(&r, &r_fence).await.unwrap();
    r.restarts = 2;
    r.progress = 3;
    r.last_restart_ms = 9_000;
    s.put_restarts(&r, &r_fence).await.unwrap();
    assert_eq!(s.restarts("r").await.unwrap(), Some(r.clone()));
    // Fenced by the lease of the worker that took the run over: a worker whose term is over
    // (another took the run since) counts nothing.
    s.release_lease("r", &r_fence).await.unwrap();
    let taker = s
        .acquire_lease("r", "h:2:bbbb", Duration::from_secs(60))
        .await
        .unwrap();
    let mut stale = r.clone();
    stale.restarts = 3;
    assert!(matches!(
        s.put_restarts(&stale, &r_fence).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(s.restarts("r").await.unwrap(), Some(r.clone()));
    s.put_restarts(&stale, &taker).await.unwrap();
    assert_eq!(s.restarts("r").await.unwrap(), Some(stale));
}

/// Created runs are read back, newest first.
pub async fn runs_round_trip(s: Arc<dyn Store>) {
    s.create_run(new_run("a", "me")).await.expect("create a");
    s.create_run(new_run("b", "me")).await.expect("create b");
    let a = s.run("a").await.unwrap().expect("run a exists");
    assert_eq!(
        (a.status, a.input.clone()),
        (RunStatus::Running, json!({"x": 1}))
    );
    assert_eq!(
        s.latest_run().await.unwrap().map(|r| r.run_id),
        Some("b".into())
    );
    assert_eq!(s.runs().await.unwrap().len(), 2);
    assert!(s.run("nope").await.unwrap().is_none());
    assert!(
        s.create_run(new_run("a", "me")).await.is_err(),
        "a run id is unique"
    );
}

/// Typed columns come back as the JSON that went in.
pub async fn outputs_round_trip_every_column_kind(s: Arc<dyn Store>) {
    s.create_run(new_run("r", "me")).await.unwrap();
    let info = Every::info();
    s.ensure_output_table(info)
        .await
        .expect("create the output table");
    let value =
        json!({"i": -7, "b": true, "r": 1.5, "t": "it's \"quoted\"", "j": ["a", "b"], "o": null});
    s.write(batch(finished(
        "x'); DROP TABLE conformance_every; --",
        value.clone(),
        info,
    )))
    .await
    .unwrap();
    let loaded = s.load("r").await.unwrap();
    assert_eq!(loaded.outputs.len(), 1);
    assert_eq!(loaded.outputs[0].0, "x'); DROP TABLE conformance_every; --");
    assert_eq!(loaded.outputs[0].2, value, "every column kind round-trips");
    s.ensure_output_table(info)
        .await
        .expect("ensuring twice is a no-op");
}

/// A batch is all or nothing: when one write fails, none of it is visible.
pub async fn a_failing_batch_writes_nothing(s: Arc<dyn Store>) {
    s.create_run(new_run("r", "me")).await.unwrap();
    let info = Every::info();
    s.ensure_output_table(info).await.unwrap();
    let v = json!({"i": 1, "b": false, "r": 0.0, "t": "", "j": [], "o": "x"});
    s.write(batch(finished("once", v.clone(), info)))
        .await
        .unwrap();
    // The same output key again violates the primary key: the whole second batch is undone.
    let mut again = finished("once", v, info);
    again.insert(
        0,
        Write::State {
            key: "must-not-exist".into(),
            value: "1".into(),
        },
    );
    assert!(
        s.write(batch(again)).await.is_err(),
        "a duplicate output row is refused"
    );
    assert_eq!(
        s.state_get("must-not-exist").await.unwrap(),
        None,
        "nothing of a failed batch is written"
    );
    assert_eq!(s.load("r").await.unwrap().outputs.len(), 1);
}

/// `create_run_with` commits the run and its first batch together, under the new run's token:
/// both, or on any error neither (and the run id stays free).
pub async fn a_run_and_its_first_batch_commit_together(s: Arc<dyn Store>) {
    let mut first = WriteBatch::new("r");
    first.push(Write::Event(Event::run(
        "r",
        Timestamp::from_millis(0),
        EventKind::RunStarted {
            workflow: "conformance".into(),
        },
    )));
    first.push(Write::State {
        key: "started".into(),
        value: "r".into(),
    });
    let fence = s.create_run_with(new_run("r", "me"), first).await.unwrap();
    assert_eq!(fence, FenceToken::new("me", 1));
    let run = s.run("r").await.unwrap().expect("the run was created");
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.lease_owner.as_deref(), Some("me"));
    let events = s.events("r", 0).await.unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [e] if matches!(e.event.kind, EventKind::RunStarted { .. })
        ),
        "the first batch's event is the run's only event: {events:?}"
    );
    assert_eq!(s.state_get("started").await.unwrap().as_deref(), Some("r"));

    // A first batch that fails (the same output key twice) leaves neither run nor batch.
    let info = Every::info();
    s.ensure_output_table(info).await.unwrap();
    let v = json!({"i": 1, "b": false, "r": 0.0, "t": "", "j": [], "o": "x"});
    let mut bad = WriteBatch::new("s");
    bad.push(Write::State {
        key: "must-not-exist".into(),
        value: "1".into(),
    });
    bad.writes.extend(finished("once", v.clone(), info));
    bad.writes.extend(finished("once", v, info));
    assert!(
        s.create_run_with(new_run("s", "me"), bad).await.is_err(),
        "a duplicate output row is refused"
    );
    assert!(
        s.run("s").await.unwrap().is_none(),
        "no run of a failed start"
    );
    assert_eq!(s.state_get("must-not-exist").await.unwrap(), None);
    s.create_run(new_run("s", "me"))
        .await
        .expect("the id of a failed start is free");
}

/// Batches queued together commit independently: one failing does not undo another.
pub async fn concurrent_batches_commit_independently(s: Arc<dyn Store>) {
    s.create_run(new_run("r", "me")).await.unwrap();
    let info = Every::info();
    s.ensure_output_table(info).await.unwrap();
    let v = json!({"i": 1, "b": false, "r": 0.0, "t": "", "j": [], "o": null});
    s.write(batch(finished("dup", v.clone(), info)))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        let v = v.clone();
        handles.push(tokio::spawn(async move {
            let node = if i % 5 == 0 {
                "dup".to_owned()
            } else {
                format!("n{i}")
            };
            s.write(batch(finished(&node, v, info))).await
        }));
    }
    let mut ok = 0;
    for h in handles {
        if h.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 16,
        "the 16 distinct nodes commit, the 4 duplicates fail alone"
    );
    assert_eq!(s.load("r").await.unwrap().outputs.len(), 17);
}

/// A live lease keeps other owners out, names its holder, and can be renewed and released.
pub async fn leases_exclude_a_live_holder(s: Arc<dyn Store>) {
    let live = s
        .create_run(new_run("r", "otherhost:1:live"))
        .await
        .unwrap();
    assert_eq!(
        live,
        FenceToken::new("otherhost:1:live", 1),
        "a new run's lease is in epoch 1"
    );
    match s.acquire_lease("r", "me", Duration::from_secs(60)).await {
        Err(Error::LeaseHeld { owner, .. }) => assert_eq!(owner, "otherhost:1:live"),
        other => panic!("a live lease of another owner must refuse, got {other:?}"),
    }
    s.renew_lease("r", &live, Duration::from_secs(60))
        .await
        .expect("the holder renews");
    assert!(matches!(
        s.renew_lease("r", &FenceToken::new("me", 1), Duration::from_secs(60))
            .await,
        Err(Error::LeaseLost { .. })
    ));
    s.release_lease("r", &live).await.unwrap();
    let mine = s
        .acquire_lease("r", "me", Duration::from_secs(60))
        .await
        .expect("a released lease is free");
    assert_eq!(
        mine,
        FenceToken::new("me", 2),
        "every acquisition increments the epoch"
    );
    assert_eq!(s.run("r").await.unwrap().unwrap().lease_epoch, 2);
    assert!(matches!(
        s.acquire_lease("nope", "me", Duration::from_secs(1)).await,
        Err(Error::RunNotFound(_))
    ));
}

/// Resume turns in-progress attempts into abandoned ones and their nodes back to pending.
pub async fn resume_reset_abandons_in_progress_attempts(s: Arc<dyn Store>) {
    let fence = s.create_run(new_run("r", "me")).await.unwrap();
    s.write(batch(vec![
        Write::Node(NodeRecord {
            node_id: "a".into(),
            iteration: 0,
            status: NodeStatus::Running,
            attempts: 1,
            output_table: None,
            loop_id: None,
            last_error: None,
        }),
        Write::AttemptStart {
            node_id: "a".into(),
            iteration: 0,
            attempt: 1,
            agent: None,
            owner: "dead".into(),
        },
    ]))
    .await
    .unwrap();
    assert_eq!(s.reset_for_resume("r", &fence).await.unwrap(), 1);
    let attempts = s.attempts("r").await.unwrap();
    assert_eq!(attempts[0].status, "abandoned");
    assert_eq!(s.nodes("r").await.unwrap()[0].status, NodeStatus::Pending);
}

/// Loop counters, `state`, events (in order) and steps persist.
pub async fn loops_state_events_and_steps_persist(s: Arc<dyn Store>) {
    s.create_run(new_run("r", "me")).await.unwrap();
    let st = LoopState {
        iteration: 3,
        pass_start: 2,
        parent_iteration: 1,
        done: false,
    };
    s.write(batch(vec![
        Write::Loop {
            loop_id: "l".into(),
            state: st.clone(),
        },
        Write::State {
            key: "k".into(),
            value: "v".into(),
        },
        Write::Event(Event::run(
            "r",
            Timestamp::from_millis(0),
            EventKind::RunStarted {
                workflow: "w".into(),
            },
        )),
        Write::Event(Event::run(
            "r",
            Timestamp::from_millis(0),
            EventKind::RunFinished,
        )),
    ]))
    .await
    .unwrap();
    let loaded = s.load("r").await.unwrap();
    assert_eq!(loaded.loops, vec![("l".to_owned(), st)]);
    assert_eq!(s.state_get("k").await.unwrap().as_deref(), Some("v"));
    let events = s.events("r", 0).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.name()).collect();
    assert_eq!(kinds, ["run_started", "run_finished"]);
    let first = events[0].seq;
    assert_eq!(
        s.events("r", first).await.unwrap().len(),
        1,
        "after_seq excludes what was read"
    );
}

/// Approvals are decided once, by node; cancellation of an undriven run is immediate.
pub async fn approvals_and_cancel_requests(s: Arc<dyn Store>) {
    s.create_run(new_run("r", "otherhost:1:live"))
        .await
        .unwrap();
    s.write(batch(vec![Write::ApprovalRequest {
        node_id: "deploy".into(),
        iteration: 0,
    }]))
    .await
    .unwrap();
    assert!(
        s.decide_approval("r", "build", None, true, None)
            .await
            .is_err(),
        "nothing pending for `build`"
    );
    let d = s
        .decide_approval("r", "deploy", None, false, Some("no"))
        .await
        .unwrap();
    assert_eq!(
        (d.status, d.note.as_deref()),
        (ApprovalStatus::Denied, Some("no"))
    );
    assert!(
        s.decide_approval("r", "deploy", None, true, None)
            .await
            .is_err(),
        "decided once"
    );
    assert!(matches!(
        s.request_cancel("r").await.unwrap(),
        CancelOutcome::Requested { .. }
    ));
    assert!(s.cancel_requested("r").await.unwrap());
    let gone = s
        .create_run(new_run("idle", "otherhost:1:gone"))
        .await
        .unwrap();
    s.release_lease("idle", &gone).await.unwrap();
    assert!(matches!(
        s.request_cancel("idle").await.unwrap(),
        CancelOutcome::Cancelled
    ));
    assert_eq!(
        s.run("idle").await.unwrap().unwrap().status,
        RunStatus::Cancelled
    );
}

/// An attempt's end (usage, exit code, model), its snapshots and transcript, frames and cached
/// outputs all read back as written.
pub async fn attempts_frames_and_cache_persist(s: Arc<dyn Store>) {
    s.create_run(new_run("r", "me")).await.unwrap();
    let usage = Usage {
        input_tokens: Some(12),
        output_tokens: Some(3),
        cache_read_tokens: None,
        cache_write_tokens: Some(1),
        cost_usd: Some(0.25),
    };
    s.write(batch(vec![
        Write::AttemptStart {
            node_id: "a".into(),
            iteration: 0,
            attempt: 1,
            agent: Some("claude".into()),
            owner: "me".into(),
        },
        Write::AttemptVcs {
            node_id: "a".into(),
            iteration: 0,
            attempt: 1,
            repo: "/repo".into(),
            before: Some("abc".into()),
            after: None,
        },
        Write::Frame {
            frame_no: 1,
            hash: "h1".into(),
            tree: crate::frame::FrameNode::from_legacy_text("<Workflow>"),
        },
        Write::Frame {
            frame_no: 2,
            hash: "h2".into(),
            tree: crate::frame::FrameNode::from_legacy_text("<Workflow>\n  <Task a>"),
        },
    ]))
    .await
    .unwrap();
    s.write(batch(vec![
        Write::AttemptEnd {
            node_id: "a".into(),
            iteration: 0,
            attempt: 1,
            end: AttemptEnd {
                status: "finished",
                error: None,
                duration_ms: 42,
                usage: usage.clone(),
                session_id: Some("sess".into()),
                exit_code: Some(0),
                model: Some("m".into()),
                cost_source: Some(crate::price::CostSource::Estimated),
            },
        },
        Write::AttemptVcs {
            node_id: "a".into(),
            iteration: 0,
            attempt: 1,
            repo: "/repo".into(),
            before: None,
            after: Some("def".into()),
        },
        Write::Transcript {
            node_id: "a".into(),
            iteration: 0,
            attempt: 1,
            text: "{\"type\":\"done\"}\n".into(),
        },
        Write::CachePut {
            key: "k1".into(),
            workflow: "conformance".into(),
            node_id: "a".into(),
            table: "t".into(),
            value: json!({"answer": [1, 2]}),
        },
    ]))
    .await
    .unwrap();
    let a = &s.attempts("r").await.unwrap()[0];
    assert_eq!(
        (
            a.status.as_str(),
            a.agent.as_deref(),
            a.duration_ms,
            &a.usage
        ),
        ("finished", Some("claude"), Some(42), &usage),
        "an attempt's end is recorded"
    );
    assert_eq!(
        (
            a.session_id.as_deref(),
            a.exit_code,
            a.model.as_deref(),
            a.cost_source
        ),
        (
            Some("sess"),
            Some(0),
            Some("m"),
            Some(crate::price::CostSource::Estimated)
        )
    );
    assert_eq!(
        (
            a.vcs_repo.as_deref(),
            a.vcs_before.as_deref(),
            a.vcs_after.as_deref()
        ),
        (Some("/repo"), Some("abc"), Some("def")),
        "a later snapshot keeps the earlier one"
    );
    let frames = s.frames("r").await.unwrap();
    assert_eq!(
        frames.iter().map(|f| f.frame_no).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(s.frame("r", None).await.unwrap().unwrap().tree_hash, "h2");
    // The text view is rendered from the structure that was written.
    assert_eq!(
        s.frame("r", Some(1)).await.unwrap().unwrap().tree,
        crate::frame::FrameNode::from_legacy_text("<Workflow>").to_text()
    );
    assert!(s.frame("r", Some(9)).await.unwrap().is_none());
    assert_eq!(s.load("r").await.unwrap().last_frame, 2);
    assert_eq!(
        s.cache_get("k1").await.unwrap(),
        Some(json!({"answer": [1, 2]}))
    );
    assert_eq!(s.cache_get("k2").await.unwrap(), None);
}

/// The PostgreSQL server tests use: `SMITHERS_TEST_POSTGRES`, by default the `test` database of
/// the server every development and CI machine of this project runs.
#[cfg(feature = "postgres")]
pub fn test_postgres_url() -> String {
    std::env::var("SMITHERS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema on the test server for one test, so tests run in parallel without seeing each
/// other's tables; [`PgSchema::drop`] removes it with everything in it.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PgSchema {
    /// A URL whose connections use the schema (`options=-csearch_path=...`).
    pub url: String,
    /// The schema's name.
    pub schema: String,
    server: String,
}

#[cfg(feature = "postgres")]
impl PgSchema {
    /// Creates the schema for test `test`, or returns `None` after [`external_missing`] when no
    /// server can be reached (a failure under `SMITHERS_REQUIRE_EXTERNAL=1`).
    pub async fn create(test: &str) -> Option<PgSchema> {
        let server = test_postgres_url();
        let suffix: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let schema = format!(
            "t_{suffix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        if let Err(why) = admin(&server, &format!("CREATE SCHEMA \"{schema}\"")).await {
            external_missing(
                test,
                &format!("no PostgreSQL server to test against at {server} ({why})"),
            );
            return None;
        }
        let sep = if server.contains('?') { '&' } else { '?' };
        Some(PgSchema {
            url: format!("{server}{sep}options=-csearch_path%3D{schema}"),
            schema,
            server,
        })
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        if let Err(e) = admin(
            &self.server,
            &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema),
        )
        .await
        {
            let _ = writeln!(
                std::io::stderr(),
                "warning: schema `{}` on {} was not dropped: {e}",
                self.schema,
                self.server
            );
        }
    }
}

/// Runs `sql` on its own connection to `server`.
#[cfg(feature = "postgres")]
async fn admin(server: &str, sql: &str) -> Result<(), String> {
    let mut config: tokio_postgres::Config = server.parse().map_err(|e| format!("{e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| crate::store::postgres::postgres_message(&e))?;
    let task = tokio::spawn(conn);
    let r = client
        .batch_execute(sql)
        .await
        .map_err(|e| crate::store::postgres::postgres_message(&e));
    drop(client);
    let _ = task.await;
    r
}

/// The PostgreSQL [`Backend`]: a [`PostgresStore`](crate::store::PostgresStore) in a fresh
/// schema of the test server, dropped afterwards.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PostgresBackend {
    schema: PgSchema,
    store: Arc<crate::store::PostgresStore>,
}

#[cfg(feature = "postgres")]
impl Backend for PostgresBackend {
    async fn open(test: &'static str, clock: Arc<dyn Clock>) -> Option<Self> {
        let schema = PgSchema::create(test).await?;
        let store = crate::store::PostgresStore::connect(&schema.url)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot open a PostgresStore: {e}"))
            .with_clock(clock);
        Some(PostgresBackend {
            schema,
            store: Arc::new(store),
        })
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn close(self) {
        drop(self.store);
        self.schema.drop().await;
    }
}

/// Every time the store reads itself comes from its clock: the rows it stamps (runs, attempts,
/// approvals, steps), lease expiry, and the events it records on its own (a decision, a
/// cancel). With a test clock each recorded time is the clock's, to the millisecond.
pub async fn rows_and_leases_read_the_store_clock(s: Arc<dyn Store>, clock: TestClock) {
    let t0 = clock.now();
    assert_eq!(t0.as_millis(), CLOCK_START);
    let fence = s.create_run(new_run("r", "me")).await.unwrap();
    let run = s.run("r").await.unwrap().unwrap();
    assert_eq!(
        (run.created_at, run.updated_at, run.lease_expires_ms),
        (t0, t0, Some(t0.as_millis() + 60_000)),
        "create_run stamps the run and its lease from the store's clock"
    );

    clock.advance(Duration::from_secs(5));
    let t1 = clock.now();
    let mut b = batch(vec![
        Write::RunStatus {
            status: RunStatus::WaitingApproval,
            error: None,
        },
        Write::AttemptStart {
            node_id: "a".into(),
            iteration: 0,
            attempt: 1,
            agent: None,
            owner: "me".into(),
        },
        Write::ApprovalRequest {
            node_id: "gate".into(),
            iteration: 0,
        },
    ]);
    b.fence = Some(fence.clone());
    s.write(b).await.unwrap();
    let run = s.run("r").await.unwrap().unwrap();
    assert_eq!(
        (run.created_at, run.updated_at),
        (t0, t1),
        "a batch stamps what it changes, not what it leaves"
    );
    assert_eq!(s.attempts("r").await.unwrap()[0].started_at, t1);
    let asked = &s.approvals("r").await.unwrap()[0];
    assert_eq!((asked.requested_at, asked.decided_at), (t1, None));

    clock.advance(Duration::from_secs(7));
    let t2 = clock.now();
    s.renew_lease("r", &fence, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        s.run("r").await.unwrap().unwrap().lease_expires_ms,
        Some(t2.as_millis() + 30_000),
        "a renewed lease runs from the store's clock"
    );
    let decided = s
        .decide_approval("r", "gate", None, true, None)
        .await
        .unwrap();
    assert_eq!((decided.requested_at, decided.decided_at), (t1, Some(t2)));
    let stored = &s.approvals("r").await.unwrap()[0];
    assert_eq!((stored.requested_at, stored.decided_at), (t1, Some(t2)));
    let step = s.start_step("r", Some("manual")).await.unwrap();
    let steps = s.steps("r").await.unwrap();
    let row = steps.iter().find(|r| r.step_id == step).unwrap();
    assert_eq!((row.created_at, row.started_at), (t2, Some(t2)));

    // Nobody holds the lease any more: the store cancels the run itself, and its event is dated
    // by its clock.
    clock.advance(Duration::from_secs(60));
    let t3 = clock.now();
    assert_eq!(
        s.request_cancel("r").await.unwrap(),
        CancelOutcome::Cancelled,
        "the lease expired by the store's clock (at {}), not the system's",
        Timestamp::from_millis(t2.as_millis() + 30_000)
    );
    let events = s.events("r", 0).await.unwrap();
    let at = |want: fn(&EventKind) -> bool| {
        events
            .iter()
            .find(|e| want(&e.event.kind))
            .map(|e| e.event.at)
    };
    assert_eq!(
        at(|k| matches!(k, EventKind::ApprovalDecided { .. })),
        Some(t2)
    );
    assert_eq!(at(|k| matches!(k, EventKind::RunCancelled)), Some(t3));
    assert_eq!(s.run("r").await.unwrap().unwrap().updated_at, t3);
}

/// A run taken over by another owner: `old` is the first holder's token (epoch 1), `new` the
/// taker's (epoch 2). The first lease is made to expire at once.
async fn taken_over(s: &Arc<dyn Store>) -> (FenceToken, FenceToken) {
    let old = s
        .create_run(NewRun {
            lease_ttl: Duration::ZERO,
            ..new_run("r", "otherhost:1:paused")
        })
        .await
        .unwrap();
    let new = s
        .acquire_lease("r", "otherhost:2:taker", Duration::from_secs(60))
        .await
        .expect("an expired lease is taken over");
    assert_eq!(new.epoch, old.epoch + 1, "a takeover increments the epoch");
    (old, new)
}

/// Fencing: a batch carrying the token of a writer that lost the lease commits nothing — no
/// output, node state, attempt, event, state key or run status — and fails with `LeaseLost`
/// naming the new holder; the holder's batches commit. Same owner, older epoch, is stale too.
pub async fn a_batch_with_a_stale_token_commits_nothing(s: Arc<dyn Store>) {
    let info = Every::info();
    s.ensure_output_table(info).await.unwrap();
    let (old, new) = taken_over(&s).await;
    let v = json!({"i": 1, "b": false, "r": 0.0, "t": "", "j": [], "o": null});
    let mut writes = finished("late", v.clone(), info);
    writes.extend([
        Write::AttemptStart {
            node_id: "late".into(),
            iteration: 0,
            attempt: 1,
            agent: None,
            owner: old.owner.clone(),
        },
        Write::State {
            key: "stale-key".into(),
            value: "1".into(),
        },
        Write::RunStatus {
            status: RunStatus::Failed,
            error: Some("stale".into()),
        },
        Write::Event(Event::run(
            "r",
            Timestamp::from_millis(0),
            EventKind::RunFailed {
                error: "stale".into(),
            },
        )),
    ]);
    let stale = batch(writes.clone()).fenced(&old);
    match s.write(stale).await {
        Err(Error::LeaseLost { run_id, detail }) => {
            assert_eq!(run_id, "r");
            assert!(
                detail.contains("`otherhost:2:taker` took the run over (lease epoch 2"),
                "the error names the new holder and epoch: {detail}"
            );
        }
        other => panic!("a stale token must be refused with LeaseLost, got {other:?}"),
    }
    let same_owner_old_epoch = FenceToken::new(new.owner.clone(), old.epoch);
    assert!(
        matches!(
            s.write(batch(writes.clone()).fenced(&same_owner_old_epoch))
                .await,
            Err(Error::LeaseLost { .. })
        ),
        "the epoch is part of the token"
    );
    assert!(
        s.load("r").await.unwrap().outputs.is_empty(),
        "no output row"
    );
    assert!(s.nodes("r").await.unwrap().is_empty(), "no node state");
    assert!(s.attempts("r").await.unwrap().is_empty(), "no attempt");
    assert!(s.events("r", 0).await.unwrap().is_empty(), "no event");
    assert_eq!(
        s.state_get("stale-key").await.unwrap(),
        None,
        "no state key"
    );
    let run = s.run("r").await.unwrap().unwrap();
    assert_eq!(
        (
            run.status,
            run.error,
            run.lease_owner.as_deref(),
            run.lease_epoch
        ),
        (RunStatus::Running, None, Some("otherhost:2:taker"), 2),
        "the run row is untouched"
    );
    // The holder's own batch goes through.
    s.write(batch(finished("late", v, info)).fenced(&new))
        .await
        .expect("the current holder writes");
    assert_eq!(s.load("r").await.unwrap().outputs.len(), 1);
}

/// The lease calls of a driver are fenced as its batches: a stale holder can neither renew,
/// nor release the new holder's lease, nor reset the run for a resume.
pub async fn lease_calls_are_fenced(s: Arc<dyn Store>) {
    let (old, new) = taken_over(&s).await;
    s.write(batch(vec![Write::AttemptStart {
        node_id: "a".into(),
        iteration: 0,
        attempt: 1,
        agent: None,
        owner: new.owner.clone(),
    }]))
    .await
    .unwrap();
    assert!(matches!(
        s.renew_lease("r", &old, Duration::from_secs(60)).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        s.reset_for_resume("r", &old).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(
        s.attempts("r").await.unwrap()[0].status,
        "in-progress",
        "a stale reset abandons nothing of the new holder's"
    );
    s.release_lease("r", &old).await.unwrap();
    let run = s.run("r").await.unwrap().unwrap();
    assert_eq!(
        (run.lease_owner.as_deref(), run.lease_epoch),
        (Some("otherhost:2:taker"), 2),
        "a stale release leaves the new holder's lease alone"
    );
    s.release_lease("r", &new).await.unwrap();
    match s
        .write(
            batch(vec![Write::State {
                key: "k".into(),
                value: "v".into(),
            }])
            .fenced(&new),
        )
        .await
    {
        Err(Error::LeaseLost { detail, .. }) => {
            assert!(detail.contains("the lease was released"), "{detail}")
        }
        other => panic!("a released lease fences its holder's writes, got {other:?}"),
    }
}

fn group(kind: crate::model::GroupKind, name: &str, status: crate::model::GroupStatus) -> Write {
    Write::Group(GroupUpdate {
        kind,
        name: name.into(),
        phase: (kind == crate::model::GroupKind::Step).then(|| "p".to_owned()),
        iteration: 0,
        status,
        tasks: vec![if name == "one" { "a" } else { "b" }.to_owned()],
        agent_config: None,
    })
}

fn frame(n: u32) -> Vec<Write> {
    vec![
        Write::Frame {
            frame_no: n,
            hash: format!("h{n}"),
            tree: crate::frame::FrameNode::from_legacy_text(&format!(
                "<Workflow name=\"tree {n}\" />\n"
            )),
        },
        Write::Event(Event::run(
            "r",
            Timestamp::from_millis(0),
            EventKind::FrameRendered { frame: n },
        )),
    ]
}

/// Steps get ids from 1 with their parents and a pending row; a rewind to a step deactivates it
/// and later ones and makes their nodes pending, only for the lease holder; a fork copies the
/// history up to a frame and records its parent.
pub async fn steps_are_numbered_rewound_and_forked(s: Arc<dyn Store>) {
    use crate::model::{GroupKind::*, GroupStatus::*};
    let me = s.create_run(new_run("r", "me")).await.unwrap();
    let info = Every::info();
    s.ensure_output_table(info).await.unwrap();
    let v = json!({"i": 1, "b": true, "r": 1.0, "t": "t", "j": [], "o": null});
    let mut w = vec![
        group(Phase, "p", Running),
        group(Step, "one", Running),
        group(Step, "two", Pending),
    ];
    w.extend(finished("a", v.clone(), info));
    w.extend(frame(1));
    w.extend([group(Step, "one", Completed), group(Step, "two", Running)]);
    s.write(batch(w)).await.unwrap();
    let mut w = finished("b", v.clone(), info);
    w.push(group(Step, "two", Completed));
    w.extend(frame(2));
    s.write(batch(w)).await.unwrap();

    let steps = s.steps("r").await.unwrap();
    let rows: Vec<_> = steps
        .iter()
        .map(|x| {
            (
                x.step_id,
                x.parent_step_id,
                x.name.as_str(),
                x.status.as_str(),
                x.active,
                x.phase_id,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, None, "one", "completed", true, Some(1)),
            (2, Some(1), "two", "completed", true, Some(1))
        ],
        "steps are numbered from 1 with their parent and phase"
    );
    assert!(steps[1].created_seq <= steps[1].started_seq.unwrap());
    assert_eq!(s.phases("r").await.unwrap()[0].name, "p");

    let e = s
        .rewind(
            "r",
            RewindTo::Step(2),
            &FenceToken::new("someone-else", me.epoch),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::LeaseLost { .. }),
        "a rewind is refused without the run's lease: {e}"
    );
    let e = s.rewind("r", RewindTo::Step(9), &me).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "run `r` has no step 9; `smithers steps r` lists them"
    );
    let r = s.rewind("r", RewindTo::Step(2), &me).await.unwrap();
    assert_eq!(r.deactivated_steps, [2]);
    assert_eq!(r.reset_nodes, [("b".to_owned(), 0)]);
    let loaded = s.load("r").await.unwrap();
    assert_eq!(
        loaded
            .outputs
            .iter()
            .map(|o| o.0.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let steps = s.steps("r").await.unwrap();
    assert_eq!(
        steps.iter().map(|x| x.active).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(
        s.run("r").await.unwrap().unwrap().status,
        RunStatus::Cancelled
    );
    // A step of the same name runs again as a new row whose parent is the last active step.
    s.write(batch(vec![group(Step, "two", Running)]))
        .await
        .unwrap();
    let again = s.steps("r").await.unwrap().pop().unwrap();
    assert_eq!(
        (again.step_id, again.parent_step_id, again.active),
        (3, Some(1), true)
    );

    let id = s.start_step("r", Some("manual")).await.unwrap();
    assert_eq!(id, 4);
    let fork = s
        .fork_run(ForkRun {
            parent_run_id: "r".into(),
            frame: 1,
            run_id: "f".into(),
            input: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (fork.parent_run_id.as_deref(), fork.parent_frame),
        (Some("r"), Some(1))
    );
    assert_eq!(fork.status, RunStatus::Cancelled);
    let loaded = s.load("f").await.unwrap();
    assert_eq!(
        loaded
            .outputs
            .iter()
            .map(|o| o.0.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(s.frames("f").await.unwrap().len(), 1);
    let e = s
        .fork_run(ForkRun {
            parent_run_id: "r".into(),
            frame: 5,
            run_id: "g".into(),
            input: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "run `r` has no frame 5; `smithers frames r --all` lists them"
    );
    assert!(
        s.run("g").await.unwrap().is_none(),
        "a refused fork creates nothing"
    );
}

/// Following a run's events by sequence number is safe under concurrent writers: while several
/// writers commit batches of the run at once (each an event followed by more writes, so its
/// transaction stays open after its sequence number is handed out), a reader that repeatedly
/// asks for `events(run, after_seq)` with the highest `seq` it has seen ends up with every event,
/// each exactly once, in increasing order. On PostgreSQL an identity column alone would let
/// `seq` 11 commit before 10, and the follower would skip 10.
pub async fn a_follower_after_seq_never_misses_an_event(s: Arc<dyn Store>) {
    const WRITERS: usize = 6;
    const BATCHES: usize = 25;
    let me = s.create_run(new_run("r", "me")).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (s, me, done) = (s.clone(), me.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let mut writes = vec![Write::Event(Event::node(
                    "r",
                    &format!("w{w}"),
                    b as u32,
                    Timestamp::from_millis(0),
                    EventKind::NodeStarted { attempt: 1 },
                ))];
                // Work after the event, so the transaction that took the number stays open.
                writes.extend((0..20).map(|k| Write::State {
                    key: format!("w{w}.k{k}"),
                    value: b.to_string(),
                }));
                s.write(batch(writes).fenced(&me))
                    .await
                    .unwrap_or_else(|e| panic!("writer {w}, batch {b}: {e}"));
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    let mut seen: Vec<i64> = Vec::new();
    let mut last = 0;
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == WRITERS;
        for e in s.events("r", last).await.unwrap() {
            assert!(
                e.seq > last,
                "events after seq {last} returned seq {}",
                e.seq
            );
            last = e.seq;
            seen.push(e.seq);
        }
        if finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let all: Vec<i64> = s
        .events("r", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(all.len(), WRITERS * BATCHES, "every batch wrote its event");
    let missed: Vec<&i64> = all.iter().filter(|q| !seen.contains(q)).collect();
    assert!(
        missed.is_empty(),
        "the follower never saw seq {missed:?}: they committed after a higher seq it had already read"
    );
    assert_eq!(seen, all);
}

/// `n` attempts of run `run_id` (created for `workflow`, holding `fence`) started and queued for
/// workers in one batch, as a driver in pool mode commits them.
/// The run's lease expires at once (its driver may be taken over).
async fn queue_attempts(s: &Arc<dyn Store>, run_id: &str, workflow: &str, n: usize) -> FenceToken {
    let fence = s
        .create_run(NewRun {
            workflow: workflow.into(),
            lease_ttl: Duration::ZERO,
            ..new_run(run_id, "otherhost:1:driver")
        })
        .await
        .unwrap();
    let mut b = WriteBatch::new(run_id);
    for i in 0..n {
        let node = format!("t{i}");
        b.push(Write::Node(NodeRecord {
            node_id: node.clone(),
            iteration: 0,
            status: NodeStatus::Running,
            attempts: 1,
            output_table: None,
            loop_id: None,
            last_error: None,
        }));
        b.push(Write::AttemptStart {
            node_id: node.clone(),
            iteration: 0,
            attempt: 1,
            agent: None,
            owner: fence.owner.clone(),
        });
        b.push(Write::AttemptQueued {
            workflow: workflow.into(),
            node_id: node,
            iteration: 0,
            attempt: 1,
            payload: QueuedAttempt {
                prompt: Some(format!("prompt {i}")),
                output_type: "Every".into(),
            },
        });
    }
    s.write(b.fenced(&fence)).await.expect("queue attempts");
    fence
}

fn outcome(v: i64) -> RemoteOutcome {
    RemoteOutcome {
        duration_ms: 5,
        value: Some(json!({ "v": v })),
        reply: None,
        error: None,
    }
}

/// A store without the attempt queue (SQLite) refuses pool mode whole, saying it needs
/// PostgreSQL: a batch that queues an attempt writes nothing, and claiming is an error.
async fn refuses_pool_mode(s: &Arc<dyn Store>) {
    assert!(!s.supports_pool());
    let fence = s
        .create_run(new_run("r", "otherhost:1:driver"))
        .await
        .unwrap();
    let mut b = WriteBatch::new("r");
    b.push(Write::AttemptStart {
        node_id: "t".into(),
        iteration: 0,
        attempt: 1,
        agent: None,
        owner: fence.owner.clone(),
    });
    b.push(Write::AttemptQueued {
        workflow: "conformance".into(),
        node_id: "t".into(),
        iteration: 0,
        attempt: 1,
        payload: QueuedAttempt::default(),
    });
    let e = s
        .write(b.fenced(&fence))
        .await
        .expect_err("queueing is refused");
    assert!(e.to_string().contains("needs a PostgreSQL database"), "{e}");
    assert!(
        s.attempts("r").await.unwrap().is_empty(),
        "nothing of the batch is written"
    );
    let e = s
        .claim_attempts("conformance", "w", 1, Duration::from_secs(1))
        .await
        .expect_err("claiming is refused");
    assert!(e.to_string().contains("needs a PostgreSQL database"), "{e}");
}

/// Workers claiming at once never get the same attempt (`FOR UPDATE SKIP LOCKED`): 4 claimers
/// racing over 40 queued attempts claim each exactly once; attempts of another workflow, and of
/// a run that is no longer running, are not theirs.
pub async fn skip_locked_claims_give_each_attempt_to_one_worker(s: Arc<dyn Store>) {
    if !s.supports_pool() {
        return refuses_pool_mode(&s).await;
    }
    queue_attempts(&s, "r", "conformance", 40).await;
    queue_attempts(&s, "other", "another-workflow", 3).await;
    let stopped = queue_attempts(&s, "stopped", "conformance", 3).await;
    let mut b = WriteBatch::new("stopped");
    b.push(Write::RunStatus {
        status: RunStatus::Cancelled,
        error: None,
    });
    s.write(b.fenced(&stopped)).await.unwrap();
    let mut workers = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        workers.push(tokio::spawn(async move {
            let owner = format!("otherhost:{w}:worker");
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim_attempts("conformance", &owner, 3, Duration::from_secs(60))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut all: Vec<Claim> = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let mut nodes: Vec<String> = all.iter().map(|c| c.node_id.clone()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        all.len(),
        40,
        "every queued attempt is claimed once, no more"
    );
    assert_eq!(nodes.len(), 40, "no attempt goes to two workers");
    assert!(all
        .iter()
        .all(|c| c.run_id == "r" && c.workflow == "conformance"));
    assert!(
        all.iter().all(|c| c.token.epoch == 1),
        "a first claim is epoch 1"
    );
    let t7 = all.iter().find(|c| c.node_id == "t7").unwrap();
    assert_eq!(
        t7.payload.prompt.as_deref(),
        Some("prompt 7"),
        "the payload rides on the claim"
    );
    let a = s.attempts("r").await.unwrap();
    assert!(a
        .iter()
        .all(|a| a.queue.as_deref() == Some("claimed") && a.claim_owner.is_some()));
    let last = s.queue_position("r").await.unwrap();
    assert!(
        all.iter().all(|c| c.position > 0 && c.position <= last),
        "every claimed attempt is at or before the run's queue position"
    );
    assert_eq!(
        s.claim_attempts(
            "another-workflow",
            "otherhost:9:w",
            10,
            Duration::from_secs(60)
        )
        .await
        .unwrap()
        .len(),
        3,
        "the other workflow's attempts were left to its workers"
    );
}

/// Budgets mid-attempt in pool mode: a worker reports the usage of a claimed attempt so far
/// (each report replacing the last), the driver reads the latest report of each attempt in
/// progress, a report under a stale claim is `ClaimLost` and writes nothing, and the answer
/// carries the driver's stop request.
pub async fn usage_reports_are_fenced_by_the_claim_and_read_by_the_driver(s: Arc<dyn Store>) {
    let usage = |tokens: u64| Usage {
        input_tokens: Some(tokens),
        output_tokens: Some(10),
        ..Usage::default()
    };
    if !s.supports_pool() {
        assert!(s.usage_reports("r").await.unwrap().is_empty());
        return refuses_pool_mode(&s).await;
    }
    let driver = queue_attempts(&s, "r", "conformance", 2).await;
    let stale = s
        .claim_attempts("conformance", "otherhost:1:paused", 1, Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .expect("a claim");
    let claim = loop {
        let got = s
            .claim_attempts("conformance", "otherhost:2:w", 2, Duration::from_secs(60))
            .await
            .unwrap();
        if let Some(c) = got.into_iter().find(|c| c.node_id == stale.node_id) {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(s.usage_reports("r").await.unwrap().is_empty(), "none yet");
    let r = s
        .report_usage(&claim, &usage(100), Some("m1"))
        .await
        .unwrap();
    assert!(!r.stop_requested);
    s.report_usage(&claim, &usage(250), Some("m1"))
        .await
        .unwrap();
    assert!(matches!(
        s.report_usage(&stale, &usage(999_999), None).await,
        Err(Error::ClaimLost { .. })
    ));
    assert_eq!(
        s.usage_reports("r").await.unwrap(),
        [UsageReport {
            node_id: claim.node_id.clone(),
            iteration: 0,
            attempt: 1,
            usage: usage(250),
            model: Some("m1".into()),
        }],
        "the latest report of the current claim, nothing of the stale one"
    );
    s.stop_queued_attempt("r", &claim.node_id, 0, 1, &driver)
        .await
        .unwrap();
    assert!(
        s.report_usage(&claim, &usage(300), Some("m1"))
            .await
            .unwrap()
            .stop_requested,
        "the worker hears the stop at its next report"
    );
    s.record_outcome(&claim, &outcome(1)).await.unwrap();
    assert!(
        s.usage_reports("r").await.unwrap().is_empty(),
        "an attempt whose outcome is recorded reports no more"
    );
}

/// The claims of a worker known dead are freed at once, not at their expiry, and fenced: its
/// attempts are queued again with their claim epoch incremented, its renewal and outcome are
/// `ClaimLost` (saying its claim was freed), another worker claims them. Holders are listed
/// with their worker's heartbeat expiry; the claims of other workers, and of the same owner on
/// another workflow's runs, stay.
pub async fn the_claims_of_a_dead_worker_are_freed_fenced(s: Arc<dyn Store>) {
    let ttl = Duration::from_secs(60);
    if !s.supports_pool() {
        assert!(s.claim_holders("conformance").await.unwrap().is_empty());
        let e = s
            .free_claims("conformance", &["otherhost:1:dead".into()])
            .await
            .expect_err("freeing is refused");
        assert!(e.to_string().contains("needs a PostgreSQL database"), "{e}");
        return refuses_pool_mode(&s).await;
    }
    queue_attempts(&s, "r", "conformance", 4).await;
    queue_attempts(&s, "other", "another-workflow", 1).await;
    let dead = s
        .claim_attempts("conformance", "otherhost:1:dead", 2, ttl)
        .await
        .unwrap();
    let live = s
        .claim_attempts("conformance", "otherhost:2:live", 2, ttl)
        .await
        .unwrap();
    let theirs = s
        .claim_attempts("another-workflow", "otherhost:1:dead", 1, ttl)
        .await
        .unwrap();
    assert_eq!((dead.len(), live.len(), theirs.len()), (2, 2, 1));
    s.put_worker(&WorkerRecord {
        worker_id: "otherhost:2:live".into(),
        host: "otherhost".into(),
        pid: 2,
        workflow: Some("conformance".into()),
        concurrency: 2,
        driving: vec![],
        started_at: at("2026-12-01T00:00:00.000Z"),
        heartbeat_at: at("2026-12-01T00:00:00.000Z"),
        expires_ms: 123,
    })
    .await
    .unwrap();
    assert_eq!(
        s.claim_holders("conformance").await.unwrap(),
        [
            ClaimHolder {
                owner: "otherhost:1:dead".into(),
                heartbeat_expires_ms: None,
            },
            ClaimHolder {
                owner: "otherhost:2:live".into(),
                heartbeat_expires_ms: Some(123),
            },
        ],
        "each holder once, with its worker's heartbeat expiry (none: not registered)"
    );
    assert_eq!(
        s.free_claims("conformance", &["otherhost:1:dead".into()])
            .await
            .unwrap(),
        2
    );
    for c in &dead {
        match s.renew_claim(c, ttl).await {
            Err(Error::ClaimLost { detail, .. }) => {
                assert!(detail.contains("its claim was freed"), "{detail}")
            }
            other => panic!("a freed claim does not renew: {other:?}"),
        }
        assert!(matches!(
            s.record_outcome(c, &outcome(1)).await,
            Err(Error::ClaimLost { .. })
        ));
    }
    s.renew_claim(&theirs[0], ttl)
        .await
        .expect("the same owner's claim on another workflow's run is not freed");
    for c in &live {
        s.renew_claim(c, ttl).await.expect("a live worker's claim");
    }
    let mut again = s
        .claim_attempts("conformance", "otherhost:3:taker", 10, ttl)
        .await
        .unwrap();
    again.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let mut was = dead.clone();
    was.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    assert_eq!(
        again.iter().map(|c| &c.node_id).collect::<Vec<_>>(),
        was.iter().map(|c| &c.node_id).collect::<Vec<_>>(),
        "the freed attempts, and only they, are claimable at once"
    );
    for (a, w) in again.iter().zip(&was) {
        assert_eq!(
            (a.attempt, a.token.epoch),
            (w.attempt, w.token.epoch + 2),
            "the same attempt; its epoch moved at the freeing and at the new claim"
        );
    }
    assert_eq!(
        s.claim_holders("conformance")
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.owner)
            .collect::<Vec<_>>(),
        ["otherhost:2:live", "otherhost:3:taker"]
    );
    assert_eq!(s.free_claims("conformance", &[]).await.unwrap(), 0);
}

/// Fencing of claims: a worker whose claim was taken over (after it expired) commits nothing —
/// no outcome, no progress line, no renewal, no snapshot — and fails with `ClaimLost` naming the new holder;
/// an expired claim nobody took is refused too; the current holder records its outcome, which
/// the driver then reads.
pub async fn a_stale_claim_commits_nothing(s: Arc<dyn Store>) {
    if !s.supports_pool() {
        return refuses_pool_mode(&s).await;
    }
    queue_attempts(&s, "r", "conformance", 1).await;
    let stale = s
        .claim_attempts("conformance", "otherhost:1:paused", 1, Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .expect("a claim");
    // The claim expired at once: another worker takes the attempt.
    let fresh = loop {
        let got = s
            .claim_attempts(
                "conformance",
                "otherhost:2:taker",
                1,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        if let Some(c) = got.into_iter().next() {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(
        fresh.token.epoch,
        stale.token.epoch + 1,
        "a claim increments the epoch"
    );
    let e = s
        .record_outcome(&stale, &outcome(1))
        .await
        .expect_err("stale outcome");
    match &e {
        Error::ClaimLost { detail, .. } => {
            assert!(
                detail.contains("otherhost:2:taker"),
                "names the new holder: {detail}"
            )
        }
        other => panic!("expected ClaimLost, got {other}"),
    }
    let line = Event::node(
        "r",
        &stale.node_id,
        0,
        Timestamp::from_millis(0),
        EventKind::NodeOutput {
            stream: "stdout".into(),
            line: "late".into(),
        },
    );
    assert!(matches!(
        s.write_claimed(&stale, vec![line.clone()]).await,
        Err(Error::ClaimLost { .. })
    ));
    assert!(matches!(
        s.renew_claim(&stale, Duration::from_secs(60)).await,
        Err(Error::ClaimLost { .. })
    ));
    // Working-copy snapshots of the attempt: the holder's only, and of that attempt only.
    let snapshot = |claim: &Claim, commit: &str| Write::AttemptVcs {
        node_id: claim.node_id.clone(),
        iteration: claim.iteration,
        attempt: claim.attempt,
        repo: "/repo".into(),
        before: Some(commit.into()),
        after: None,
    };
    assert!(matches!(
        s.write_claimed_vcs(&stale, vec![snapshot(&stale, "stale")])
            .await,
        Err(Error::ClaimLost { .. })
    ));
    let mut elsewhere = fresh.clone();
    elsewhere.attempt += 1;
    let e = s
        .write_claimed_vcs(&fresh, vec![snapshot(&elsewhere, "other")])
        .await
        .expect_err("another attempt's snapshot");
    assert!(
        e.to_string()
            .contains("may record only the snapshots of that attempt"),
        "{e}"
    );
    s.write_claimed_vcs(&fresh, vec![snapshot(&fresh, "fresh")])
        .await
        .expect("holder's snapshot");
    let vcs: Vec<Option<String>> = s
        .attempts("r")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.vcs_before)
        .collect();
    assert_eq!(
        vcs,
        [Some("fresh".to_owned())],
        "the holder's snapshot only"
    );
    assert!(
        s.recorded_outcomes("r").await.unwrap().is_empty(),
        "nothing recorded"
    );
    assert!(
        s.events("r", 0).await.unwrap().is_empty(),
        "no progress line"
    );
    // The holder writes.
    s.write_claimed(&fresh, vec![line])
        .await
        .expect("holder's progress");
    assert_eq!(
        s.renew_claim(&fresh, Duration::from_secs(60))
            .await
            .unwrap(),
        ClaimRenewal {
            stop_requested: false
        }
    );
    s.record_outcome(&fresh, &outcome(2))
        .await
        .expect("holder's outcome");
    let rec = s.recorded_outcomes("r").await.unwrap();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        (
            rec[0].node_id.as_str(),
            rec[0].worker.as_deref(),
            &rec[0].outcome
        ),
        (
            fresh.node_id.as_str(),
            Some("otherhost:2:taker"),
            &outcome(2)
        )
    );
    assert!(
        matches!(
            s.record_outcome(&fresh, &outcome(3)).await,
            Err(Error::ClaimLost { .. })
        ),
        "an outcome is recorded once"
    );
    // An expired claim nobody took is refused as well.
    queue_attempts(&s, "r2", "conformance", 1).await;
    let other = s
        .claim_attempts("conformance", "otherhost:3:slow", 1, Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .expect("the second run's attempt");
    assert_eq!(other.run_id, "r2");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(
        s.record_outcome(&other, &outcome(4)).await,
        Err(Error::ClaimLost { .. })
    ));
    assert!(s.recorded_outcomes("r2").await.unwrap().is_empty());
}

/// A driver taking a run over adopts its queued attempts (not abandoned, nodes still running)
/// and reads outcomes already recorded; stopping an attempt no worker holds ends it at once,
/// stopping a claimed one flags it and tells its worker on its stop channel; stopping is fenced
/// by the run's lease; a recorded outcome wakes the listeners of the run's channel.
pub async fn queued_attempts_are_adopted_stopped_and_announced(s: Arc<dyn Store>) {
    if !s.supports_pool() {
        assert!(
            s.listen(&run_channel("r")).await.unwrap().is_none(),
            "no notifications: poll"
        );
        return refuses_pool_mode(&s).await;
    }
    let mut wake = s
        .listen(&run_channel("r"))
        .await
        .unwrap()
        .expect("PostgreSQL notifies");
    let old = queue_attempts(&s, "r", "conformance", 3).await;
    let claimed = s
        .claim_attempts(
            "conformance",
            "otherhost:2:worker",
            2,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    s.record_outcome(&claimed[0], &outcome(7)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wake.recv())
        .await
        .expect("a recorded outcome notifies the run's channel")
        .expect("the listener is open");
    // The driver died; another takes the run over.
    let new = s
        .acquire_lease("r", "otherhost:3:taker", Duration::from_secs(60))
        .await
        .unwrap_or_else(|_| panic!("take over"));
    let _ = old;
    assert_eq!(
        s.reset_for_resume("r", &new).await.unwrap(),
        0,
        "nothing abandoned"
    );
    let queued = s.queued_attempts("r").await.unwrap();
    assert_eq!(
        queued.len(),
        3,
        "queued, claimed and recorded attempts are adopted"
    );
    assert!(s
        .nodes("r")
        .await
        .unwrap()
        .iter()
        .all(|n| n.status == NodeStatus::Running));
    let rec = s.recorded_outcomes("r").await.unwrap();
    assert_eq!((rec.len(), &rec[0].outcome), (1, &outcome(7)));
    // Stop the unclaimed one: it ends at once, as cancelled.
    let unclaimed = queued
        .iter()
        .find(|q| claimed.iter().all(|c| c.node_id != q.node_id))
        .unwrap();
    let stale = FenceToken::new("otherhost:1:driver", 1);
    assert!(matches!(
        s.stop_queued_attempt("r", &unclaimed.node_id, 0, 1, &stale)
            .await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(s
        .stop_queued_attempt("r", &unclaimed.node_id, 0, 1, &new)
        .await
        .unwrap());
    let rec = s.recorded_outcomes("r").await.unwrap();
    let stopped = rec
        .iter()
        .find(|r| r.node_id == unclaimed.node_id)
        .expect("recorded");
    assert!(stopped.outcome.error.as_ref().is_some_and(|e| !e.retryable));
    assert!(
        s.claim_attempts(
            "conformance",
            "otherhost:4:late",
            5,
            Duration::from_secs(60)
        )
        .await
        .unwrap()
        .is_empty(),
        "a stopped attempt is not claimed"
    );
    // Stop the claimed one: its worker is told on its stop channel (when the store has
    // notifications) and sees the flag when it renews.
    let mut told = s
        .listen(&stop_channel(&claimed[1].token.owner))
        .await
        .unwrap();
    assert!(!s
        .stop_queued_attempt("r", &claimed[1].node_id, 0, 1, &new)
        .await
        .unwrap());
    if let Some(told) = told.as_mut() {
        assert!(
            tokio::time::timeout(Duration::from_secs(10), told.recv())
                .await
                .is_ok_and(|n| n.is_some()),
            "the worker holding a stopped attempt is notified"
        );
    }
    assert!(
        s.renew_claim(&claimed[1], Duration::from_secs(60))
            .await
            .unwrap()
            .stop_requested
    );
    // Release puts an attempt back in the queue for another worker.
    s.release_claim(&claimed[1]).await.unwrap();
    let again = s
        .claim_attempts(
            "conformance",
            "otherhost:5:next",
            5,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].node_id, claimed[1].node_id);
    assert_eq!(again[0].token.epoch, 2);
}
