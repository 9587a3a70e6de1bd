//! Node ids: duplicates and invalid ids fail the run with a message naming them; any other text,
//! quotes and SQL included, is stored verbatim and never breaks the database.
mod common;
use common::*;
use smithers_core::node::{Parallel, Ralph, Sequence, Task, Workflow};
use smithers_core::Ctx;
use smithers_core::RunStatus;

#[tokio::test]
async fn duplicate_node_id_fails_the_run_naming_the_id() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Sequence::new()
                    .child(Task::<Num>::new().id("review").value(num(1)).build())
                    .child(
                        Parallel::new()
                            .child(Task::<Num>::new().id("review").value(num(2)).build())
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    let expected =
        "duplicate node id `review`: used by a <Task output=Num> and by a <Task output=Num>; give each node a unique id";
    assert_eq!(report.error.as_deref(), Some(expected));
    assert_eq!(
        h.run_status(&report.run_id),
        ("failed".into(), Some(expected.into()))
    );
    // Nothing ran: the tree is rejected before any task starts.
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_nodes"), 0);
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_attempts"), 0);
    assert_eq!(
        h.event_payloads(&report.run_id, "run_failed")[0]["error"],
        expected
    );
}

#[tokio::test]
async fn two_loops_with_the_default_id_are_a_duplicate() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Ralph::new()
                    .child(Task::<Num>::new().id("a").value(num(1)).build())
                    .build(),
            )
            .child(
                Ralph::new()
                    .child(Task::<Num>::new().id("b").value(num(1)).build())
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    let err = report.error.unwrap();
    assert!(err.contains("duplicate node id `ralph`"), "{err}");
}

#[tokio::test]
async fn task_without_id_fails_the_run_naming_its_output_type() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(Task::<Num>::new().value(num(1)).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert_eq!(
        report.error.as_deref(),
        Some("invalid node id \"\": ids must not be empty; give the task an `id` (task with output `Num`)")
    );
}

#[tokio::test]
async fn node_ids_with_quotes_and_sql_are_stored_verbatim() {
    let h = Harness::new();
    let ids = [
        "x'); DROP TABLE num; --",
        "\"; DROP TABLE _smithers_runs; --",
        "it's `ticked` \\ back",
        "ünïcødé 🦀",
    ];
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Sequence::new()
                    .child(ids.iter().enumerate().map(|(i, id)| {
                        Task::<Num>::new()
                            .id(*id)
                            .run(move |_t| async move { Ok::<_, String>(num(i as i64)) })
                            .build()
                    }))
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let rows = h.num_rows(&report.run_id);
    let expected: Vec<(String, u32, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.to_string(), 0, i as i64))
        .collect();
    assert_eq!(rows, expected);
    for id in ids {
        assert_eq!(
            h.node_row(&report.run_id, id, 0),
            Some(("finished".into(), 1, None))
        );
        assert_eq!(h.attempts(&report.run_id, id).len(), 1);
    }
    assert!(h
        .node_log(&report.run_id)
        .contains(&format!("node_finished:{}@0", ids[0])));
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_runs"), 1);
    h.integrity_ok();
}
