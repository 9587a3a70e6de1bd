//! Resume: a cancelled or crashed run continues without re-running finished nodes, interrupted
//! attempts become new attempts, and a live lease held by another process is respected.
mod common;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use smithers_core::clock::TestClock;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::node::{Sequence, Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Ctx, Error, Node};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Counters of `a`, `b`, `c` executions; `b` blocks forever while `block` is set.
#[derive(Clone, Default)]
struct Script {
    a: Counter,
    b: Counter,
    c: Counter,
    block: Arc<AtomicBool>,
    b_started: Arc<Notify>,
}

impl Script {
    fn tree(&self) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
        let s = self.clone();
        move |_ctx| {
            let (a, b, c) = (s.a.clone(), s.b.clone(), s.c.clone());
            let (block, started) = (s.block.clone(), s.b_started.clone());
            Workflow::new()
                .name("resumable")
                .child(
                    Sequence::new()
                        .child(
                            Task::<Num>::new()
                                .id("a")
                                .run(move |_t| {
                                    a.hit();
                                    async { Ok::<_, String>(num(1)) }
                                })
                                .build(),
                        )
                        .child(
                            Task::<Num>::new()
                                .id("b")
                                .run(move |_t| {
                                    b.hit();
                                    let (block, started) = (block.clone(), started.clone());
                                    async move {
                                        if block.load(Ordering::SeqCst) {
                                            started.notify_one();
                                            std::future::pending::<()>().await;
                                        }
                                        Ok::<_, String>(num(2))
                                    }
                                })
                                .build(),
                        )
                        .child(
                            Task::<Num>::new()
                                .id("c")
                                .run(move |_t| {
                                    c.hit();
                                    async { Ok::<_, String>(num(3)) }
                                })
                                .build(),
                        )
                        .build(),
                )
                .build()
        }
    }
}

fn assert_each_output_once(h: &Harness, run: &str) {
    assert_eq!(
        h.num_rows(run),
        vec![("a".into(), 0, 1), ("b".into(), 0, 2), ("c".into(), 0, 3)]
    );
}

#[tokio::test]
async fn cancelled_run_resumes_without_rerunning_finished_nodes() {
    let h = Harness::new();
    let script = Script::default();
    script.block.store(true, Ordering::SeqCst);
    let cancel = CancellationToken::new();
    let engine = h.engine_with(
        EngineOptions {
            cancel: cancel.clone(),
            ..EngineOptions::default()
        },
        script.tree(),
    );
    let started = script.b_started.clone();
    let canceller = tokio::spawn(async move {
        started.notified().await;
        cancel.cancel();
    });
    let report = engine.run(()).await.unwrap();
    canceller.await.unwrap();
    let run = report.run_id.clone();
    assert_eq!(report.status, RunStatus::Cancelled, "{report:?}");
    assert_eq!(h.run_status(&run), ("cancelled".into(), None));
    assert_eq!(
        h.attempts(&run, "b"),
        vec![(
            0,
            1,
            "cancelled".into(),
            Some("the run was cancelled".into())
        )]
    );
    assert_eq!(
        h.node_row(&run, "b", 0),
        Some(("pending".into(), 1, Some("cancelled".into())))
    );
    assert_eq!(h.num_rows(&run), vec![("a".into(), 0, 1)]);
    assert!(h.event_log(&run).contains(&"run_cancelled".to_owned()));
    assert_eq!(h.state("supervisor.status").as_deref(), Some("idle"));

    // A new process: a new store on the same file, a new engine.
    script.block.store(false, Ordering::SeqCst);
    let engine2 = Engine::new(h.reopen(), script.tree()).with_options(EngineOptions {
        clock: h.clock.clone(),
        ..EngineOptions::default()
    });
    let report = engine2.resume(Some(&run)).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!((script.a.get(), script.b.get(), script.c.get()), (1, 2, 1));
    assert_each_output_once(&h, &run);
    assert_eq!(
        h.attempts(&run, "b"),
        vec![
            (
                0,
                1,
                "cancelled".into(),
                Some("the run was cancelled".into())
            ),
            (0, 2, "finished".into(), None)
        ]
    );
    assert_eq!(h.attempts(&run, "a").len(), 1);
    assert_eq!(h.run_status(&run), ("finished".into(), None));
    let resumed = h.event_payloads(&run, "run_resumed");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["abandoned"], 0);
    h.integrity_ok();
}

#[tokio::test]
async fn crashed_run_abandons_the_in_progress_attempt_and_retries_it_on_resume() {
    // The store reads a test clock: the dead driver's lease expires when the test says so.
    let clock = TestClock::starting_now();
    let h = Harness::with_clock(Arc::new(clock.clone()));
    let script = Script::default();
    script.block.store(true, Ordering::SeqCst);
    let ttl = Duration::from_millis(300);
    let engine = h.engine_with(
        EngineOptions {
            lease_ttl: ttl,
            ..EngineOptions::default()
        },
        script.tree(),
    );
    let started = script.b_started.clone();
    // The "process" dies while `b` runs: its future is dropped mid-flight.
    let driver = tokio::spawn(async move { engine.run(()).await });
    started.notified().await;
    driver.abort();
    assert!(driver.await.unwrap_err().is_cancelled());
    let run: String = h
        .conn()
        .query_row("SELECT run_id FROM _smithers_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(h.run_status(&run), ("running".into(), None));
    assert_eq!(h.attempts(&run, "b")[0].2, "in-progress");

    // While the dead driver's lease has not expired, resume refuses.
    script.block.store(false, Ordering::SeqCst);
    let engine2 = Engine::new(h.reopen(), script.tree());
    match engine2.resume(Some(&run)).await {
        Err(Error::LeaseHeld { run_id, .. }) => assert_eq!(run_id, run),
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    clock.advance(ttl + Duration::from_millis(100));
    let report = engine2.resume(Some(&run)).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!((script.a.get(), script.b.get(), script.c.get()), (1, 2, 1));
    assert_each_output_once(&h, &run);
    assert_eq!(
        h.attempts(&run, "b"),
        vec![
            (
                0,
                1,
                "abandoned".into(),
                Some("the process driving this attempt stopped before it ended".into())
            ),
            (0, 2, "finished".into(), None)
        ]
    );
    assert_eq!(h.event_payloads(&run, "run_resumed")[0]["abandoned"], 1);
    h.integrity_ok();
}

#[tokio::test]
async fn failed_run_resumes_at_the_failed_node() {
    let h = Harness::new();
    let fail = Arc::new(AtomicBool::new(true));
    let (a, b) = (Counter::default(), Counter::default());
    let tree = {
        let (fail, a, b) = (fail.clone(), a.clone(), b.clone());
        move |_ctx: &Ctx<()>| {
            let (fail, a, b) = (fail.clone(), a.clone(), b.clone());
            Workflow::new()
                .child(
                    Task::<Num>::new()
                        .id("a")
                        .run(move |_t| {
                            a.hit();
                            async { Ok::<_, String>(num(1)) }
                        })
                        .build(),
                )
                .child(
                    Task::<Num>::new()
                        .id("b")
                        .run(move |_t| {
                            b.hit();
                            let fail = fail.load(Ordering::SeqCst);
                            async move {
                                if fail {
                                    Err("flaky dependency".to_owned())
                                } else {
                                    Ok(num(2))
                                }
                            }
                        })
                        .build(),
                )
                .build()
        }
    };
    let engine = h.engine(tree.clone());
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    fail.store(false, Ordering::SeqCst);
    let report = h.engine(tree).resume(None).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!((a.get(), b.get()), (1, 2));
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![("a".into(), 0, 1), ("b".into(), 0, 2)]
    );
    assert_eq!(
        h.node_row(&report.run_id, "b", 0),
        Some(("finished".into(), 2, None))
    );
    // A finished run is not resumed again.
    match h
        .engine(|_ctx: &Ctx<()>| Workflow::new().build())
        .resume(None)
        .await
    {
        Err(Error::RunAlreadyDone { status, .. }) => assert_eq!(status, RunStatus::Finished),
        other => panic!("expected RunAlreadyDone, got {other:?}"),
    }
}

#[tokio::test]
async fn resume_while_another_owner_holds_a_live_lease_fails_naming_the_holder() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("bad")
                    .run(|_t| async { Err::<Num, _>("nope".to_owned()) })
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let run = report.run_id;
    h.store
        .acquire_lease(&run, "otherhost:1:x", Duration::from_secs(60))
        .await
        .unwrap();
    let events_before = h.event_log(&run).len();
    let err = engine.resume(Some(&run)).await.unwrap_err();
    match &err {
        Error::LeaseHeld { run_id, owner, .. } => {
            assert_eq!(run_id, &run);
            assert_eq!(owner, "otherhost:1:x");
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    assert_eq!(err.code(), "E_LEASE_HELD");
    assert!(err.to_string().contains("`otherhost:1:x`"), "{err}");
    // Nothing was touched: still failed, same events, the holder keeps its lease.
    assert_eq!(h.run_status(&run).0, "failed");
    assert_eq!(h.event_log(&run).len(), events_before);
    let holder: String = h
        .conn()
        .query_row(
            "SELECT lease_owner FROM _smithers_runs WHERE run_id = ?1",
            [&run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(holder, "otherhost:1:x");
}
