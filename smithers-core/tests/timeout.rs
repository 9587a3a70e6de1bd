//! Per-attempt timeouts: the attempt fails with "timed out" and is retried like any error.
mod common;
use std::time::Duration;

use common::*;
use smithers_core::node::{Task, Workflow};
use smithers_core::Ctx;
use smithers_core::RunStatus;

/// A task that hangs on its first `hangs` attempts.
fn hanging(counter: &Counter, hangs: u32, retries: u32) -> smithers_core::Node {
    let counter = counter.clone();
    Task::<Num>::new()
        .id("hang")
        .timeout(Duration::from_millis(50))
        .retries(retries)
        .run(move |t| {
            counter.hit();
            async move {
                if t.attempt() <= hangs {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok::<_, String>(num(i64::from(t.attempt())))
            }
        })
        .build()
}

#[tokio::test]
async fn timed_out_attempt_is_recorded_and_retried() {
    let h = Harness::new();
    let counter = Counter::default();
    let c2 = counter.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| Workflow::new().child(hanging(&c2, 1, 1)).build());
    let started = std::time::Instant::now();
    let report = engine.run(()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(counter.get(), 2);
    let run = &report.run_id;
    assert_eq!(
        h.attempts(run, "hang"),
        vec![
            (0, 1, "failed".into(), Some("timed out after 50ms".into())),
            (0, 2, "finished".into(), None),
        ]
    );
    assert_eq!(h.num_rows(run), vec![("hang".into(), 0, 2)]);
    assert_eq!(
        h.event_payloads(run, "node_retrying")[0]["error"],
        "timed out after 50ms; it will be tried again (attempt 2 of 2)"
    );
}

#[tokio::test]
async fn timeout_on_every_attempt_fails_the_run() {
    let h = Harness::new();
    let counter = Counter::default();
    let c2 = counter.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| Workflow::new().child(hanging(&c2, 9, 2)).build());
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert_eq!(counter.get(), 3);
    let run = &report.run_id;
    let attempts = h.attempts(run, "hang");
    assert_eq!(attempts.len(), 3);
    assert!(attempts
        .iter()
        .all(|a| a.2 == "failed" && a.3.as_deref() == Some("timed out after 50ms")));
    assert_eq!(
        report.error.as_deref(),
        Some("node `hang` failed after 3 attempt(s): timed out after 50ms")
    );
    assert_eq!(
        h.node_row(run, "hang", 0),
        Some(("failed".into(), 3, Some("timed out after 50ms".into())))
    );
}
