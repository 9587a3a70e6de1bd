//! Ralph loops: iteration keys, `until`, `on_max_reached`, nesting, and the loop accessors of
//! `Ctx`.
mod common;
use common::*;
use smithers_core::node::{OnMaxReached, Ralph, Sequence, Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Ctx, LoopRef, Node};

fn value(id: &str, n: i64) -> Node {
    Task::<Num>::new().id(id).value(num(n)).build()
}

/// `(loop_id, iteration, pass_start, parent_iteration, done)` rows of `_smithers_ralph`.
fn loops(h: &Harness, run_id: &str) -> Vec<(String, u32, u32, u32, bool)> {
    let c = h.conn();
    let mut st = c
        .prepare("SELECT loop_id, iteration, pass_start, parent_iteration, done FROM _smithers_ralph WHERE run_id = ?1 ORDER BY loop_id")
        .unwrap();
    st.query_map([run_id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test]
async fn ralph_keys_rows_by_iteration_and_returns_last_at_max() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let it = i64::from(ctx.iteration(LoopRef::DEFAULT));
        Workflow::new()
            .child(
                Ralph::new()
                    .max_iterations(3)
                    .child(
                        Task::<Num>::new()
                            .id("t")
                            .run(move |t| async move {
                                Ok::<_, String>(num(it * 10 + i64::from(t.iteration())))
                            })
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
        vec![("t".into(), 0, 0), ("t".into(), 1, 11), ("t".into(), 2, 22)]
    );
    for it in 0..3 {
        assert_eq!(
            h.node_row(&report.run_id, "t", it),
            Some(("finished".into(), 1, None))
        );
    }
    assert_eq!(
        loops(&h, &report.run_id),
        vec![("ralph".into(), 2, 0, 0, true)]
    );
    let finished = h.event_payloads(&report.run_id, "loop_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["max_reached"], true);
    assert_eq!(finished[0]["iteration"], 2);
    assert_eq!(h.event_payloads(&report.run_id, "loop_iterated").len(), 2);
}

#[tokio::test]
async fn ralph_until_stops_the_loop_before_max() {
    const FIX_LOOP: LoopRef = LoopRef::new("fix");
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let done = ctx.latest::<Num>("t").is_some_and(|t| t.n >= 2);
        Workflow::new()
            .child(
                Ralph::new()
                    .id(FIX_LOOP)
                    .until(done)
                    .max_iterations(10)
                    .on_max_reached(OnMaxReached::Fail)
                    .child(value("t", i64::from(ctx.iteration(FIX_LOOP))))
                    .build(),
            )
            .child(value("after", 99))
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![
            ("t".into(), 0, 0),
            ("t".into(), 1, 1),
            ("t".into(), 2, 2),
            ("after".into(), 0, 99)
        ]
    );
    let finished = h.event_payloads(&report.run_id, "loop_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["max_reached"], false);
    assert_eq!(
        loops(&h, &report.run_id),
        vec![("fix".into(), 2, 0, 0, true)]
    );
}

#[tokio::test]
async fn ralph_until_true_before_the_first_iteration_runs_nothing() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(Ralph::new().until(true).child(value("t", 1)).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_nodes"), 0);
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_attempts"), 0);
    let finished = h.event_payloads(&report.run_id, "loop_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["max_reached"], false);
}

#[tokio::test]
async fn ralph_on_max_reached_fail_fails_the_run_with_a_clear_error() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Ralph::new()
                    .id("fix")
                    .max_iterations(2)
                    .on_max_reached(OnMaxReached::Fail)
                    .child(value("t", i64::from(ctx.iteration("fix"))))
                    .build(),
            )
            .child(value("after", 99))
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    let expected =
        "loop `fix` reached max_iterations (2) without its `until` condition becoming true";
    assert_eq!(report.error.as_deref(), Some(expected));
    assert_eq!(
        h.run_status(&report.run_id),
        ("failed".into(), Some(expected.into()))
    );
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![("t".into(), 0, 0), ("t".into(), 1, 1)]
    );
    let failed = h.event_payloads(&report.run_id, "run_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"], expected);
}

#[tokio::test]
async fn nested_ralph_keys_are_monotone_across_outer_passes() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let (o, i) = (ctx.iteration("outer"), ctx.iteration("inner"));
        Workflow::new()
            .child(
                Ralph::new()
                    .id("outer")
                    .max_iterations(2)
                    .child(
                        Ralph::new()
                            .id("inner")
                            .max_iterations(2)
                            .child(value("i", i64::from(o * 100 + i)))
                            .build(),
                    )
                    .child(value("o", i64::from(o)))
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![
            ("i".into(), 0, 0),
            ("i".into(), 1, 1),
            ("o".into(), 0, 0),
            ("i".into(), 2, 100),
            ("i".into(), 3, 101),
            ("o".into(), 1, 1),
        ]
    );
    assert_eq!(
        loops(&h, &report.run_id),
        vec![
            ("inner".into(), 3, 2, 1, true),
            ("outer".into(), 1, 0, 0, true)
        ]
    );
    // Each node records its innermost loop.
    let loop_of = |node: &str| -> String {
        h.conn()
            .query_row(
                "SELECT DISTINCT loop_id FROM _smithers_nodes WHERE run_id = ?1 AND node_id = ?2",
                [&report.run_id, node],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(loop_of("i"), "inner");
    assert_eq!(loop_of("o"), "outer");
}

#[tokio::test]
async fn ctx_reads_loop_counters_and_every_iteration_of_an_output() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let it = ctx.iteration(LoopRef::DEFAULT);
        let all = ctx.outputs::<Num>("t");
        let summary = Num {
            n: all.iter().map(|t| t.n).sum(),
            note: Some(format!(
                "iteration={it} count={} latest={:?} values={:?} current={:?}",
                ctx.iteration_count::<Num>("t"),
                ctx.latest::<Num>("t").map(|t| t.n),
                all.iter().map(|t| t.n).collect::<Vec<_>>(),
                ctx.output_maybe::<Num>("t").map(|t| t.n),
            )),
        };
        Workflow::new()
            .child(
                Sequence::new()
                    .child(
                        Ralph::new()
                            .max_iterations(3)
                            .child(value("t", i64::from(it) + 1))
                            .build(),
                    )
                    .child(Task::<Num>::new().id("summary").value(summary).build())
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let note: String = h
        .conn()
        .query_row(
            "SELECT note FROM num WHERE run_id = ?1 AND node_id = 'summary'",
            [&report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        note,
        "iteration=2 count=3 latest=Some(3) values=[1, 2, 3] current=Some(3)"
    );
    assert_eq!(
        h.num_rows(&report.run_id).last(),
        Some(&("summary".into(), 0, 6))
    );
}

#[tokio::test]
async fn reading_the_iteration_of_a_loop_the_tree_lacks_fails_the_run_naming_its_loops() {
    // A port from TS: the loop has id `loop` but the render reads the default loop `ralph`.
    // Reading 0 forever would run the loop to its maximum; the render fails instead.
    const LOOP: LoopRef = LoopRef::new("loop");
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let it = ctx.iteration(LoopRef::DEFAULT);
        Workflow::new()
            .child(
                Ralph::new()
                    .id(LOOP)
                    .max_iterations(3)
                    .child(value("t", i64::from(it)))
                    .build(),
            )
            .build()
    });
    // The first render already reads it, so the run is refused before it starts.
    let err = engine.run(()).await.unwrap_err();
    assert_eq!(err.code(), "E_UNKNOWN_LOOP");
    assert_eq!(
        err.to_string(),
        "`ctx.iteration(\"ralph\")` reads a loop that this workflow does not have \
         (the tree's loops are `loop`); give the loop's `LoopRef` to both `<Ralph id=..>` and \
         `ctx.iteration(..)` (a `<Ralph>` without `id` is `LoopRef::DEFAULT`)"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_runs"), 0);
}

#[tokio::test]
async fn a_loop_read_by_its_handle_that_is_not_rendered_any_more_keeps_its_last_counter() {
    // Once a loop has run, its counter stays readable after the tree stops rendering it
    // (here the loop is dropped from the tree when it finished).
    const FIX_LOOP: LoopRef = LoopRef::new("fix");
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let loop_done = ctx.latest::<Num>("t").is_some_and(|t| t.n >= 1);
        let seen = ctx.iteration(FIX_LOOP);
        let mut wf = Workflow::new();
        if !loop_done || ctx.latest::<Num>("after").is_none() && seen == 0 {
            wf = wf.child(
                Ralph::new()
                    .id(FIX_LOOP)
                    .until(loop_done)
                    .max_iterations(5)
                    .child(value("t", i64::from(seen)))
                    .build(),
            );
        }
        if loop_done {
            wf = wf.child(value("after", i64::from(seen) * 100));
        }
        wf.build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![
            ("t".into(), 0, 0),
            ("t".into(), 1, 1),
            ("after".into(), 0, 100)
        ]
    );
}
