//! Task retries: each attempt is a row with its status and error, `node_retrying` events, and the
//! node's attempt count.
mod common;
use common::*;
use smithers_core::node::{Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Ctx, TaskError};

/// A task failing with `boom N` on its first `fails` attempts.
fn flaky(counter: &Counter, fails: u32, retries: u32) -> smithers_core::Node {
    let counter = counter.clone();
    Task::<Num>::new()
        .id("flaky")
        .retries(retries)
        .run(move |t| {
            counter.hit();
            async move {
                if t.attempt() <= fails {
                    Err(format!("boom {}", t.attempt()))
                } else {
                    Ok(num(i64::from(t.attempt())))
                }
            }
        })
        .build()
}

#[tokio::test]
async fn task_retries_after_errors_then_succeeds() {
    let h = Harness::new();
    let counter = Counter::default();
    let c2 = counter.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| Workflow::new().child(flaky(&c2, 2, 2)).build());
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(counter.get(), 3);
    let run = &report.run_id;
    assert_eq!(
        h.attempts(run, "flaky"),
        vec![
            (0, 1, "failed".into(), Some("boom 1".into())),
            (0, 2, "failed".into(), Some("boom 2".into())),
            (0, 3, "finished".into(), None),
        ]
    );
    assert_eq!(
        h.node_row(run, "flaky", 0),
        Some(("finished".into(), 3, None))
    );
    assert_eq!(h.num_rows(run), vec![("flaky".into(), 0, 3)]);
    assert_eq!(
        h.node_log(run),
        [
            "node_started:flaky@0",
            "node_retrying:flaky@0",
            "node_started:flaky@0",
            "node_retrying:flaky@0",
            "node_started:flaky@0",
            "node_finished:flaky@0",
        ]
    );
    let retrying = h.event_payloads(run, "node_retrying");
    assert_eq!(retrying[0]["attempt"], 1);
    assert_eq!(
        retrying[0]["error"],
        "boom 1; it will be tried again (attempt 2 of 3)"
    );
    assert_eq!(
        retrying[1]["error"],
        "boom 2; it will be tried again (attempt 3 of 3)"
    );
    let started = h.event_payloads(run, "node_started");
    let attempts: Vec<_> = started.iter().map(|e| e["attempt"].clone()).collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test]
async fn task_retries_exhausted_fail_the_node_and_the_run() {
    let h = Harness::new();
    let counter = Counter::default();
    let c2 = counter.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(flaky(&c2, 10, 1))
            .child(Task::<Num>::new().id("after").value(num(1)).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert_eq!(counter.get(), 2);
    let run = &report.run_id;
    assert_eq!(
        h.attempts(run, "flaky"),
        vec![
            (0, 1, "failed".into(), Some("boom 1".into())),
            (0, 2, "failed".into(), Some("boom 2".into())),
        ]
    );
    assert_eq!(
        h.node_row(run, "flaky", 0),
        Some(("failed".into(), 2, Some("boom 2".into())))
    );
    let expected = "node `flaky` failed after 2 attempt(s): boom 2";
    assert_eq!(report.error.as_deref(), Some(expected));
    assert_eq!(h.run_status(run), ("failed".into(), Some(expected.into())));
    assert_eq!(h.node_row(run, "after", 0), None);
    assert_eq!(
        h.node_log(run),
        [
            "node_started:flaky@0",
            "node_retrying:flaky@0",
            "node_started:flaky@0",
            "node_failed:flaky@0",
        ]
    );
    assert_eq!(h.event_payloads(run, "node_failed")[0]["error"], "boom 2");
}

#[tokio::test]
async fn terminal_task_error_is_not_retried() {
    let h = Harness::new();
    let counter = Counter::default();
    let c2 = counter.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        let c = c2.clone();
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("fatal")
                    .retries(3)
                    .run(move |_t| {
                        c.hit();
                        async { Err::<Num, _>(TaskError::terminal("no way")) }
                    })
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert_eq!(counter.get(), 1);
    assert_eq!(
        h.attempts(&report.run_id, "fatal"),
        vec![(0, 1, "failed".into(), Some("no way".into()))]
    );
    assert!(h.event_payloads(&report.run_id, "node_retrying").is_empty());
}

#[tokio::test]
async fn a_cancelled_attempt_does_not_use_up_a_retry() {
    use smithers_core::engine::{CancellationToken, EngineOptions};
    let h = Harness::new();
    // Attempt 1 hangs until the run is cancelled; attempt 2 fails; attempt 3 succeeds.
    let tree = |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("job")
                    .retries(1)
                    .run(|t| async move {
                        match t.attempt() {
                            1 => {
                                t.cancelled().cancelled().await;
                                Err(TaskError::retryable("stopped"))
                            }
                            2 => Err(TaskError::retryable("flaky")),
                            n => Ok(num(i64::from(n))),
                        }
                    })
                    .build(),
            )
            .build()
    };
    let cancel = CancellationToken::new();
    let engine = h.engine_with(
        EngineOptions {
            cancel: cancel.clone(),
            ..EngineOptions::default()
        },
        tree,
    );
    let events = h.events.clone();
    tokio::spawn(async move {
        while !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.kind.name() == "node_started")
        {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        cancel.cancel();
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    let report = smithers_core::engine::Engine::new(h.reopen(), tree)
        .resume(Some(&report.run_id))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let statuses: Vec<String> = h
        .attempts(&report.run_id, "job")
        .into_iter()
        .map(|a| a.2)
        .collect();
    assert_eq!(statuses, ["cancelled", "failed", "finished"]);
    assert_eq!(h.num_rows(&report.run_id), vec![("job".into(), 0, 3)]);
}

#[tokio::test]
async fn a_task_that_panics_fails_its_node_instead_of_hanging_the_run() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("boom")
                    .retries(3)
                    .run(|_t| async {
                        if true {
                            panic!("index out of bounds");
                        }
                        Ok::<_, String>(num(1))
                    })
                    .build(),
            )
            .build()
    });
    let report = tokio::time::timeout(std::time::Duration::from_secs(10), engine.run(()))
        .await
        .expect("the run ends")
        .unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let attempts = h.attempts(&report.run_id, "boom");
    assert_eq!(attempts.len(), 1, "a panic is terminal: no retry");
    assert_eq!(
        attempts[0].3.as_deref(),
        Some("the task panicked: index out of bounds")
    );
    h.integrity_ok();
}
