//! Parallel semantics: children at once, bounded per group and run-wide, and a re-render after
//! each persisted output while siblings keep running.
mod common;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use smithers_core::engine::EngineOptions;
use smithers_core::node::{Parallel, Sequence, Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Ctx, Node};
use tokio::sync::Notify;

/// A compute task that stays inside `hw` for a while.
fn busy(id: &str, hw: &HighWater, n: i64) -> Node {
    let hw = hw.clone();
    Task::<Num>::new()
        .id(id)
        .run(move |_t| {
            let hw = hw.clone();
            async move {
                let _inside = hw.enter();
                tokio::time::sleep(Duration::from_millis(60)).await;
                Ok::<_, String>(num(n))
            }
        })
        .build()
}

fn busy_group(hw: &HighWater, ids: &[&str]) -> Vec<Node> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| busy(id, hw, i as i64))
        .collect()
}

#[tokio::test]
async fn parallel_starts_every_child_at_once_without_a_limit() {
    let h = Harness::new();
    // Each task waits at a barrier for all four: the run only finishes if they overlap.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        let tasks = ["a", "b", "c", "d"].map(|id| {
            let barrier = barrier.clone();
            Task::<Num>::new()
                .id(id)
                .run(move |_t| {
                    let barrier = barrier.clone();
                    async move {
                        tokio::time::timeout(Duration::from_secs(5), barrier.wait())
                            .await
                            .map_err(|_| "siblings did not run at the same time".to_owned())?;
                        Ok::<_, String>(num(1))
                    }
                })
                .build()
        });
        Workflow::new()
            .child(Parallel::new().child(tasks).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(h.num_rows(&report.run_id).len(), 4);
    let log = h.node_log(&report.run_id);
    assert_eq!(max_in_flight(&log), 4, "{log:?}");
    // All four start before any finishes.
    assert!(
        log[..4].iter().all(|e| e.starts_with("node_started:")),
        "{log:?}"
    );
}

#[tokio::test]
async fn parallel_max_concurrency_bounds_tasks_running_at_once() {
    let h = Harness::new();
    let hw = HighWater::default();
    let hw2 = hw.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Parallel::new()
                    .max_concurrency(2)
                    .child(busy_group(&hw2, &["a", "b", "c", "d", "e"]))
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(hw.max(), 2);
    let log = h.node_log(&report.run_id);
    assert_eq!(max_in_flight(&log), 2, "{log:?}");
    // Children start in tree order; the third waits for a finish.
    let started: Vec<&str> = log
        .iter()
        .filter_map(|e| e.strip_prefix("node_started:"))
        .collect();
    assert_eq!(started, ["a@0", "b@0", "c@0", "d@0", "e@0"]);
    assert!(log[2].starts_with("node_finished:"), "{log:?}");
    assert_eq!(h.num_rows(&report.run_id).len(), 5);
}

#[tokio::test]
async fn parallel_max_concurrency_counts_tasks_of_nested_groups() {
    let h = Harness::new();
    let hw = HighWater::default();
    let hw2 = hw.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Parallel::new()
                    .max_concurrency(2)
                    .child(
                        Parallel::new()
                            .child(busy_group(&hw2, &["a", "b", "c"]))
                            .build(),
                    )
                    .child(busy_group(&hw2, &["d", "e"]))
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(hw.max(), 2, "{:?}", h.node_log(&report.run_id));
    assert_eq!(max_in_flight(&h.node_log(&report.run_id)), 2);
    assert_eq!(h.num_rows(&report.run_id).len(), 5);
}

#[tokio::test]
async fn engine_max_concurrency_is_a_run_wide_limit() {
    let h = Harness::new();
    let hw = HighWater::default();
    let hw2 = hw.clone();
    let engine = h.engine_with(
        EngineOptions {
            max_concurrency: 2,
            ..EngineOptions::default()
        },
        move |_ctx: &Ctx<()>| {
            Workflow::new()
                .child(
                    Parallel::new()
                        .child(Parallel::new().child(busy_group(&hw2, &["a", "b"])).build())
                        .child(Parallel::new().child(busy_group(&hw2, &["c", "d"])).build())
                        .child(busy_group(&hw2, &["e"]))
                        .build(),
                )
                .build()
        },
    );
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(hw.max(), 2);
    assert_eq!(max_in_flight(&h.node_log(&report.run_id)), 2);
    assert_eq!(h.num_rows(&report.run_id).len(), 5);
}

#[tokio::test]
async fn workflow_max_concurrency_overrides_the_engine_limit() {
    let h = Harness::new();
    let hw = HighWater::default();
    let hw2 = hw.clone();
    let engine = h.engine_with(
        EngineOptions {
            max_concurrency: 1,
            ..EngineOptions::default()
        },
        move |_ctx: &Ctx<()>| {
            Workflow::new()
                .max_concurrency(3)
                .child(
                    Parallel::new()
                        .child(busy_group(&hw2, &["a", "b", "c", "d", "e", "f"]))
                        .build(),
                )
                .build()
        },
    );
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(hw.max(), 3);
    assert_eq!(max_in_flight(&h.node_log(&report.run_id)), 3);
}

#[tokio::test]
async fn a_node_depending_on_a_fast_sibling_starts_while_a_slow_one_still_runs() {
    let h = Harness::new();
    // `slow` only finishes once `dep` has started: if the engine waited for the whole parallel
    // group before rendering again, `slow` would time out and the run would fail.
    let dep_started = Arc::new(Notify::new());
    let slow_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dep_started2, slow_done2) = (dep_started.clone(), slow_done.clone());
    let engine = h.engine(move |ctx: &Ctx<()>| {
        let (notify, done) = (dep_started2.clone(), slow_done2.clone());
        let slow = Task::<Num>::new()
            .id("slow")
            .run(move |_t| {
                let (notify, done) = (notify.clone(), done.clone());
                async move {
                    tokio::time::timeout(Duration::from_secs(5), notify.notified())
                        .await
                        .map_err(|_| TaskErr::terminal("`dep` never started"))?;
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, TaskErr>(num(1))
                }
            })
            .build();
        let fast = Task::<Num>::new()
            .id("fast")
            .run(|_t| async { Ok::<_, String>(num(2)) })
            .build();
        let dep = ctx.output_maybe::<Num>("fast").map(|f| {
            let (notify, done) = (dep_started2.clone(), slow_done2.clone());
            Task::<Num>::new()
                .id("dep")
                .run(move |_t| {
                    let (notify, done) = (notify.clone(), done.clone());
                    async move {
                        let slow_was_done = done.load(std::sync::atomic::Ordering::SeqCst);
                        notify.notify_one();
                        Ok::<_, String>(Num {
                            n: f.n * 10,
                            note: Some(format!("slow done: {slow_was_done}")),
                        })
                    }
                })
                .build()
        });
        Workflow::new()
            .child(
                Sequence::new()
                    .child(Parallel::new().child(slow).child(fast).child(dep).build())
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let _ = slow_done;
    let log = h.node_log(&report.run_id);
    let pos = |e: &str| log.iter().position(|x| x == e).unwrap();
    assert!(
        pos("node_started:dep@0") < pos("node_finished:slow@0"),
        "{log:?}"
    );
    assert!(pos("node_finished:fast@0") < pos("node_started:dep@0"));
    let note: String = h
        .conn()
        .query_row(
            "SELECT note FROM num WHERE run_id = ?1 AND node_id = 'dep'",
            [&report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(note, "slow done: false");
    let mut rows = h.num_rows(&report.run_id);
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("dep".into(), 0, 20),
            ("fast".into(), 0, 2),
            ("slow".into(), 0, 1)
        ]
    );
}

use smithers_core::TaskError as TaskErr;
