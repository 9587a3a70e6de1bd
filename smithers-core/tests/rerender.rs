//! Rendering only what changed: the workflow function is called again only when an output, a
//! loop counter or a `state` key its last render read has changed; otherwise the kept tree is
//! planned again. The counts below are calls of the workflow function; `run` renders once to
//! name the run before the drive's first render, so a run that never re-renders counts 2.
mod common;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use smithers_core::engine::Engine;
use smithers_core::node::{Parallel, Phase, Ralph, Sequence, Task, Workflow};
use smithers_core::store::{Durability, RunStatus, SqliteStore, Store};
use smithers_core::{Ctx, LoopRef, Node, Ref, TaskError};

const A: Ref<Num> = Ref::new("a");
const B: Ref<Num> = Ref::new("b");

fn value(id: &str, n: i64) -> Node {
    Task::<Num>::new().id(id).value(num(n)).build()
}

/// A sequence `a`, `b`, `c` (+ `extra` static tasks) whose `c` is `read(ctx) + 100`, the
/// workflow function counting its calls.
fn counted(
    calls: &Arc<AtomicUsize>,
    extra: usize,
    read: impl Fn(&Ctx<()>) -> i64 + Send + Sync + 'static,
) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    let calls = calls.clone();
    move |ctx| {
        calls.fetch_add(1, Ordering::SeqCst);
        let seen = read(ctx);
        Workflow::new()
            .child(
                Sequence::new()
                    .child(value("a", 1))
                    .child(value("b", 2))
                    .child(value("c", seen + 100))
                    .child((0..extra).map(|i| value(&format!("x{i}"), 0)))
                    .build(),
            )
            .build()
    }
}

fn n_of(h: &Harness, run_id: &str, node: &str) -> i64 {
    h.num_rows(run_id)
        .into_iter()
        .find(|(id, _, _)| id == node)
        .map(|(_, _, n)| n)
        .unwrap_or_else(|| panic!("no output row for `{node}`"))
}

#[tokio::test]
async fn outputs_no_render_read_do_not_re_render_the_tree() {
    for extra in [0, 20] {
        let h = Harness::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let engine = h.engine(counted(&calls, extra, |_| 0));
        let report = engine.run(()).await.unwrap();
        assert_eq!(report.status, RunStatus::Finished, "{report:?}");
        assert_eq!(report.finished_nodes, 3 + extra);
        assert_eq!(h.num_rows(&report.run_id).len(), 3 + extra);
        assert_eq!(n_of(&h, &report.run_id, "c"), 100);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "{} outputs landed, none of them read: the first tree stands",
            3 + extra
        );
    }
}

#[tokio::test]
async fn an_output_read_through_output_maybe_re_renders_and_is_seen_at_once() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = h.engine(counted(&calls, 5, |ctx| {
        ctx.output_maybe(B).map_or(0, |b| b.n)
    }));
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    // `a` and the extra tasks were not read; `b` was, so its landing renders once more.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(n_of(&h, &report.run_id, "c"), 102);
}

#[tokio::test]
async fn an_output_read_through_output_re_renders() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = h.engine(counted(&calls, 0, |ctx| ctx.output(A).map_or(0, |a| a.n)));
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(n_of(&h, &report.run_id, "c"), 101);
}

#[tokio::test]
async fn an_output_read_through_latest_re_renders() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = h.engine(counted(&calls, 3, |ctx| ctx.latest(B).map_or(0, |b| b.n)));
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(n_of(&h, &report.run_id, "c"), 102);
}

#[tokio::test]
async fn an_output_read_through_outputs_re_renders() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let engine = h.engine(counted(&calls, 3, |ctx| {
        ctx.outputs(A).iter().map(|a| a.n).sum::<i64>() + i64::from(ctx.iteration_count(B))
    }));
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    // `a` (through `outputs`) and `b` (through `iteration_count`) were read: two re-renders.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(n_of(&h, &report.run_id, "c"), 102);
}

#[tokio::test]
async fn a_loop_counter_that_moves_re_renders() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let engine = h.engine(move |ctx: &Ctx<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let it = i64::from(ctx.iteration(LoopRef::DEFAULT));
        Workflow::new()
            .child(
                Ralph::new()
                    .max_iterations(3)
                    .child(value("t", it * 10))
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    // Each iteration's value was rendered from the counter as it moved.
    assert_eq!(
        h.num_rows(&report.run_id),
        vec![("t".into(), 0, 0), ("t".into(), 1, 10), ("t".into(), 2, 20)]
    );
    assert!(calls.load(Ordering::SeqCst) >= 4, "{calls:?}");
}

#[tokio::test]
async fn a_state_key_read_re_renders_when_a_hook_sets_it() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let engine = h.engine(move |ctx: &Ctx<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let k: i64 = ctx
            .state()
            .get("k")
            .map_or(0, |v| v.parse().expect("a number"));
        Workflow::new()
            .child(
                Phase::new()
                    .name("first")
                    .on_complete(|cx| cx.set_state("k", "7"))
                    .child(value("a", 1))
                    .build(),
            )
            .child(value("b", 2))
            .child(value("c", k))
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    // `a` was not read, but the hook its completion fired set `k`, which was: the next plan
    // (after `b`) renders again and `c` sees it.
    assert_eq!(n_of(&h, &report.run_id, "c"), 7);
    assert_eq!(h.state("k").as_deref(), Some("7"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_state_key_not_read_does_not_re_render() {
    let h = Harness::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        Workflow::new()
            .child(
                Phase::new()
                    .name("first")
                    .on_complete(|cx| cx.set_state("k", "7"))
                    .child(value("a", 1))
                    .build(),
            )
            .child(value("b", 2))
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(h.state("k").as_deref(), Some("7"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A Parallel of `k` compute tasks whose bodies all return at the same moment (they wait on one
/// barrier), then a task whose value sums what the render read of each. Returns the commits of
/// the whole run, the calls of the workflow function, and the sum.
async fn ended_together(k: usize) -> (u64, usize, i64) {
    let h = Harness::new();
    let store = Arc::new(
        // A second handle on the harness's database, for its commit count.
        SqliteStore::open(&h.db, Durability::Normal).unwrap(),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let gate = Arc::new(tokio::sync::Barrier::new(k));
    let ids: Vec<String> = (0..k).map(|i| format!("p{i}")).collect();
    let engine = Engine::new(store.clone() as Arc<dyn Store>, move |ctx: &Ctx<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        // Every output of the Parallel is read: each one landing alone would re-render.
        let seen: i64 = ids
            .iter()
            .map(|id| ctx.output_maybe::<Num>(id.as_str()).map_or(0, |o| o.n))
            .sum();
        let tasks = ids.iter().enumerate().map(|(i, id)| {
            let gate = gate.clone();
            Task::<Num>::new()
                .id(id)
                .run(move |_t| {
                    let gate = gate.clone();
                    async move {
                        gate.wait().await;
                        Ok::<_, TaskError>(num(i as i64 + 1))
                    }
                })
                .build()
        });
        Workflow::new()
            .child(Parallel::new().child(tasks).build())
            .child(value("sum", seen))
            .build()
    });
    let before = store.commits();
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(report.finished_nodes, k + 1);
    let commits = store.commits() - before;
    let sum = n_of(&h, &report.run_id, "sum");
    (commits, calls.load(Ordering::SeqCst), sum)
}

#[tokio::test]
async fn completions_ready_together_persist_in_one_commit_and_cause_one_render() {
    let (commits_one, renders_one, sum_one) = ended_together(1).await;
    let (commits, renders, sum) = ended_together(6).await;
    // The render after the outputs read every one of them.
    assert_eq!(sum_one, 1);
    assert_eq!(sum, 21);
    // Six outputs that landed together cost what one does: their rows in one transaction,
    // followed by one render. Each landing alone would add a commit and a render (five more of
    // each); the store's other writes (the progress writer's events, the lease's release)
    // share transactions as they happen to queue, which moves the count by one either way.
    assert_eq!(
        renders, renders_one,
        "6 completions at once: {renders} renders; one alone: {renders_one}"
    );
    assert!(
        commits <= commits_one + 1,
        "6 completions at once: {commits} commits; one alone: {commits_one}"
    );
    // `run` names the run, the drive's first render starts the tasks, one more sees them all.
    assert_eq!(renders, 3);
}
