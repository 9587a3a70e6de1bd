//! `skip_if` and `continue_on_fail`: a skipped node has a row and an event but no output; a
//! failed node with `continue_on_fail` does not fail the run.
mod common;
use common::*;
use smithers_core::node::{Parallel, Sequence, Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Ctx, TaskError};

fn failing(id: &str) -> Task<Num> {
    Task::<Num>::new()
        .id(id)
        .run(|_t| async { Err::<Num, _>(TaskError::terminal("it broke")) })
}

#[tokio::test]
async fn continue_on_fail_lets_the_run_finish_with_the_node_failed() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Sequence::new()
                    .child(failing("bad").continue_on_fail(true).build())
                    .child(Task::<Num>::new().id("after").value(num(7)).build())
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let run = &report.run_id;
    assert_eq!(h.run_status(run), ("finished".into(), None));
    assert_eq!(
        h.node_row(run, "bad", 0),
        Some(("failed".into(), 1, Some("it broke".into())))
    );
    assert_eq!(h.num_rows(run), vec![("after".into(), 0, 7)]);
    assert_eq!(
        h.node_log(run),
        [
            "node_started:bad@0",
            "node_failed:bad@0",
            "node_started:after@0",
            "node_finished:after@0"
        ]
    );
}

#[tokio::test]
async fn a_failed_node_fails_the_run_after_running_siblings_end() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Parallel::new()
                    .child(failing("bad").build())
                    .child(
                        Task::<Num>::new()
                            .id("slow")
                            .run(|_t| async {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                Ok::<_, String>(num(1))
                            })
                            .build(),
                    )
                    .build(),
            )
            .child(Task::<Num>::new().id("never").value(num(2)).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    let run = &report.run_id;
    assert_eq!(
        report.error.as_deref(),
        Some("node `bad` failed after 1 attempt(s): it broke")
    );
    // The sibling that was running when `bad` failed still got its output persisted.
    assert_eq!(h.num_rows(run), vec![("slow".into(), 0, 1)]);
    assert_eq!(h.node_row(run, "never", 0), None);
    assert_eq!(
        h.state("supervisor.last_error").as_deref(),
        Some("node `bad` failed after 1 attempt(s): it broke")
    );
}

#[tokio::test]
async fn skip_if_records_a_skipped_node_and_no_output() {
    let h = Harness::new();
    let counter = Counter::default();
    let c2 = counter.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        let c = c2.clone();
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("skipped")
                    .skip_if(true)
                    .run(move |_t| {
                        c.hit();
                        async { Ok::<_, String>(num(1)) }
                    })
                    .build(),
            )
            .child(Task::<Num>::new().id("kept").value(num(2)).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let run = &report.run_id;
    assert_eq!(counter.get(), 0);
    assert_eq!(
        h.node_row(run, "skipped", 0),
        Some(("skipped".into(), 0, None))
    );
    assert!(h.attempts(run, "skipped").is_empty());
    assert_eq!(h.num_rows(run), vec![("kept".into(), 0, 2)]);
    assert_eq!(
        h.node_log(run),
        [
            "node_skipped:skipped@0",
            "node_started:kept@0",
            "node_finished:kept@0"
        ]
    );
}

#[tokio::test]
async fn a_skipped_group_mounts_none_of_its_tasks() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Sequence::new()
                    .skip_if(true)
                    .child(Task::<Num>::new().id("inner").value(num(1)).build())
                    .build(),
            )
            .child(Task::<Num>::new().id("outer").value(num(2)).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(h.num_rows(&report.run_id), vec![("outer".into(), 0, 2)]);
    assert_eq!(h.node_row(&report.run_id, "inner", 0), None);
}
