//! Sequence semantics: order, persisted rows, events.
mod common;
use common::*;
use smithers_core::node::{Sequence, Task, Workflow};
use smithers_core::RunStatus;

#[tokio::test]
async fn sequence_runs_children_in_order_and_every_task_static_or_not_emits_started_and_finished() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &smithers_core::Ctx<()>| {
        Workflow::new()
            .name("seq")
            .child(
                Sequence::new()
                    .child(Task::<Num>::new().id("a").value(num(1)).build())
                    .child(
                        Task::<Num>::new()
                            .id("b")
                            .run(|_t| async { Ok::<_, String>(num(2)) })
                            .build(),
                    )
                    .child(Task::<Num>::new().id("c").value(num(3)).build())
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![("a".into(), 0, 1), ("b".into(), 0, 2), ("c".into(), 0, 3)]
    );
    let log: Vec<String> = h
        .event_log(&report.run_id)
        .into_iter()
        .filter(|e| e.starts_with("node_"))
        .collect();
    assert_eq!(
        log,
        [
            "node_started:a@0",
            "node_finished:a@0",
            "node_started:b@0",
            "node_finished:b@0",
            "node_started:c@0",
            "node_finished:c@0"
        ]
    );
    // A static value's started event carries its attempt, like any other.
    let started = h.event_payloads(&report.run_id, "node_started");
    assert_eq!(started.len(), 3);
    assert!(started.iter().all(|p| p["attempt"] == 1), "{started:?}");
    h.integrity_ok();
}
