//! Engine overhead benchmark: `cargo bench --bench engine`.
//!
//! Prints the median wall time per node (FULL durability, a real SQLite file in a temp dir) for:
//! a sequence of N static tasks (N = 10, 100, 1000), a 1000-iteration Ralph loop, and the time to
//! resume a run that has 10 000 finished nodes. Static tasks do no work, so what is measured is
//! the engine: render, plan, one committed transaction per output, re-render.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smithers::__private::{Column, ColumnKind};
use smithers_core::engine::Engine;
use smithers_core::node::{Parallel, Ralph, Sequence, Task, Workflow};
use smithers_core::store::{Durability, SqliteStore, Store};
use smithers_core::{Ctx, LoopRef, Output, Ref};

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Step {
    n: i64,
}

impl Output for Step {
    const TABLE: &'static str = "bench_step";
    const COLUMNS: &'static [Column] = &[Column {
        name: "n",
        kind: ColumnKind::Integer,
        nullable: false,
        rust_type: "i64",
    }];
}

fn store(dir: &tempfile::TempDir, durability: Durability) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.path().join("bench.db"), durability).expect("open store"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn sequence(n: usize) -> impl Fn(&Ctx<()>) -> smithers_core::Node + Send + Sync + 'static {
    let ids: Vec<String> = (0..n).map(|i| format!("step-{i}")).collect();
    move |_ctx| {
        Workflow::new()
            .name("bench-sequence")
            .child(
                Sequence::new()
                    .child(ids.iter().enumerate().map(|(i, id)| {
                        Task::<Step>::new()
                            .id(id)
                            .value(Step { n: i as i64 })
                            .build()
                    }))
                    .build(),
            )
            .build()
    }
}

async fn bench_sequence(n: usize, reps: usize) -> Duration {
    let mut samples = Vec::new();
    for _ in 0..reps {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new(store(&dir, Durability::Full), sequence(n));
        let t = Instant::now();
        let r = engine.run(()).await.expect("run");
        let el = t.elapsed();
        assert_eq!(r.finished_nodes, n);
        samples.push(el / n as u32);
    }
    median(samples)
}

async fn bench_ralph(iterations: u32, reps: usize) -> Duration {
    const TICK: Ref<Step> = Ref::new("tick");
    let mut samples = Vec::new();
    for _ in 0..reps {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::new(store(&dir, Durability::Full), move |ctx: &Ctx<()>| {
            let done = ctx
                .latest(TICK)
                .is_some_and(|s| s.n + 1 >= iterations as i64);
            let it = ctx.iteration(LoopRef::DEFAULT);
            Workflow::new()
                .name("bench-ralph")
                .child(
                    Ralph::new()
                        .until(done)
                        .max_iterations(iterations + 1)
                        .child(
                            Task::<Step>::new()
                                .id(TICK)
                                .value(Step { n: it as i64 })
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let t = Instant::now();
        let r = engine.run(()).await.expect("run");
        let el = t.elapsed();
        assert_eq!(r.finished_nodes, iterations as usize);
        samples.push(el / iterations);
    }
    median(samples)
}

async fn bench_resume(n: usize, reps: usize) -> Duration {
    let mut samples = Vec::new();
    for _ in 0..reps {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("done-{i}")).collect());
        let gate = dir.path().join("gate");
        let make = |ids: Arc<Vec<String>>, gate: std::path::PathBuf| {
            move |_ctx: &Ctx<()>| {
                let gate = gate.clone();
                Workflow::new()
                    .name("bench-resume")
                    .child(
                        Parallel::new()
                            .child(ids.iter().enumerate().map(|(i, id)| {
                                Task::<Step>::new()
                                    .id(id)
                                    .value(Step { n: i as i64 })
                                    .build()
                            }))
                            .build(),
                    )
                    .child(
                        Task::<Step>::new()
                            .id("last")
                            .run(move |_t| {
                                let open = gate.exists();
                                async move {
                                    if open {
                                        Ok(Step { n: -1 })
                                    } else {
                                        Err(smithers_core::TaskError::terminal("gate closed"))
                                    }
                                }
                            })
                            .build(),
                    )
                    .build()
            }
        };
        let first = Engine::new(
            store(&dir, Durability::Full),
            make(ids.clone(), gate.clone()),
        );
        let r = first.run(()).await.expect("first run");
        assert_eq!(r.finished_nodes, n);
        drop(first);
        std::fs::write(&gate, b"open").expect("gate");
        let engine = Engine::new(store(&dir, Durability::Full), make(ids, gate));
        let t = Instant::now();
        let r = engine.resume(None).await.expect("resume");
        samples.push(t.elapsed());
        assert_eq!(r.finished_nodes, n + 1);
    }
    median(samples)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        println!("smithers engine overhead (durability FULL, median of runs)");
        let s10 = bench_sequence(10, 31).await;
        let s100 = bench_sequence(100, 11).await;
        let s1000 = bench_sequence(1000, 5).await;
        println!("sequence N=10     {:>9.1} µs/node", s10.as_secs_f64() * 1e6);
        println!(
            "sequence N=100    {:>9.1} µs/node",
            s100.as_secs_f64() * 1e6
        );
        println!(
            "sequence N=1000   {:>9.1} µs/node   (N=1000 / N=10 = {:.2}x)",
            s1000.as_secs_f64() * 1e6,
            s1000.as_secs_f64() / s10.as_secs_f64()
        );
        let r = bench_ralph(1000, 5).await;
        println!(
            "ralph 1000 iters  {:>9.1} µs/iteration",
            r.as_secs_f64() * 1e6
        );
        let res = bench_resume(10_000, 5).await;
        println!(
            "resume 10000 finished nodes (load + render + last node): {:.1} ms",
            res.as_secs_f64() * 1e3
        );
    });
}
