//! Branch semantics: only the chosen child is mounted, and the choice follows a re-render.
mod common;
use common::*;
use smithers_core::node::{Branch, Ralph, Sequence, Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Ctx, LoopRef};

fn value(id: &str, n: i64) -> smithers_core::Node {
    Task::<Num>::new().id(id).value(num(n)).build()
}

#[tokio::test]
async fn branch_mounts_only_the_chosen_child() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Branch::new()
                    .cond(false)
                    .then(value("yes", 1))
                    .otherwise(value("no", 2))
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(h.num_rows(&report.run_id), vec![("no".into(), 0, 2)]);
    assert_eq!(h.node_row(&report.run_id, "yes", 0), None);
    assert!(h.attempts(&report.run_id, "yes").is_empty());
    assert!(h
        .node_log(&report.run_id)
        .iter()
        .all(|e| !e.contains("yes")));
}

#[tokio::test]
async fn branch_switches_when_a_re_render_sees_an_earlier_output() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let big = ctx.output_maybe::<Num>("a").is_some_and(|a| a.n > 3);
        Workflow::new()
            .child(
                Sequence::new()
                    .child(
                        Task::<Num>::new()
                            .id("a")
                            .run(|_t| async { Ok::<_, String>(num(5)) })
                            .build(),
                    )
                    .child(
                        Branch::new()
                            .cond(big)
                            .then(value("big", 1))
                            .otherwise(value("small", 2))
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![("a".into(), 0, 5), ("big".into(), 0, 1)]
    );
    assert_eq!(h.node_row(&report.run_id, "small", 0), None);
    // Two frames: before `a` the branch mounted `small`, after it `big`.
    let c = h.conn();
    let mut st = c
        .prepare("SELECT tree FROM _smithers_frames WHERE run_id = ?1 ORDER BY frame_no")
        .unwrap();
    let frames: Vec<String> = st
        .query_map([&report.run_id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert!(frames[0].contains("<Branch if=false>"), "{}", frames[0]);
    assert!(frames[1].contains("<Branch if=true>"), "{}", frames[1]);
}

#[tokio::test]
async fn branch_inside_a_loop_follows_the_iteration() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let even = ctx.iteration(LoopRef::DEFAULT).is_multiple_of(2);
        let n = i64::from(ctx.iteration(LoopRef::DEFAULT));
        Workflow::new()
            .child(
                Ralph::new()
                    .max_iterations(4)
                    .child(
                        Branch::new()
                            .cond(even)
                            .then(value("even", n))
                            .otherwise(value("odd", n))
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![
            ("even".into(), 0, 0),
            ("odd".into(), 1, 1),
            ("even".into(), 2, 2),
            ("odd".into(), 3, 3)
        ]
    );
}

#[tokio::test]
async fn a_running_task_unmounted_by_a_branch_switch_is_cancelled_not_stored() {
    use smithers_core::node::Parallel;
    const FAST: smithers_core::Ref<Num> = smithers_core::Ref::new("fast");
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let fast_done = ctx.output_maybe(FAST).is_some();
        Workflow::new()
            .child(
                Parallel::new()
                    .child(
                        Branch::new()
                            .cond(!fast_done)
                            .child(
                                Task::<Num>::new()
                                    .id("slow")
                                    .run(|_t| async {
                                        tokio::time::sleep(std::time::Duration::from_secs(30))
                                            .await;
                                        Ok::<_, String>(num(1))
                                    })
                                    .build(),
                            )
                            .build(),
                    )
                    .child(
                        Task::<Num>::new()
                            .id(FAST)
                            .run(|_t| async {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                Ok::<_, String>(num(2))
                            })
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let started = std::time::Instant::now();
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the slow task was not stopped"
    );
    assert_eq!(h.num_rows(&report.run_id), vec![("fast".into(), 0, 2)]);
    let slow = h.attempts(&report.run_id, "slow");
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].2, "cancelled");
    assert!(
        slow[0]
            .3
            .as_deref()
            .is_some_and(|e| e.contains("no longer mounts")),
        "{slow:?}"
    );
    assert_eq!(
        h.node_row(&report.run_id, "slow", 0).map(|r| r.0),
        Some("pending".into())
    );
}
