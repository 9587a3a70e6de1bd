//! Throughput of pool mode on PostgreSQL with 1, 2 and 4 workers: `cargo bench --bench pool`.
//!
//! One run of a `Parallel` of 200 compute tasks that each sleep 50 ms is driven in pool mode
//! (`EngineOptions::pool`: every attempt queued, none run by the driver) while N workers
//! (`Engine::serve_attempts`, each with its own connection pool and its own claims, executing
//! one attempt at a time) claim and execute them; the wall time from the run's start to its end
//! gives tasks per second. The workers run in this process as independent loops (the test
//! `tests/pool.rs` runs them as separate processes); what differs from separate machines is that
//! they share this machine's CPU, which sleeping tasks barely use. The run's database is a fresh
//! schema of the test server (`SMITHERS_TEST_POSTGRES`, by default
//! postgres://postgres@127.0.0.1:5432/test). With no server reachable it says so and exits 0.
//! Target (issue 11): 4 workers at least 3.5x one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smithers::__private::{Column, ColumnKind};
use smithers_core::engine::{CancellationToken, Engine, EngineOptions, PoolOptions};
use smithers_core::node::{Parallel, Task, Workflow};
use smithers_core::store::conformance::PgSchema;
use smithers_core::store::{lease_owner, PostgresStore, Store};
use smithers_core::{Ctx, Output};

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Slept {
    n: i64,
}

impl Output for Slept {
    const TABLE: &'static str = "bench_slept";
    const COLUMNS: &'static [Column] = &[Column {
        name: "n",
        kind: ColumnKind::Integer,
        nullable: false,
        rust_type: "i64",
    }];
}

const TASKS: usize = 200;
const SLEEP: Duration = Duration::from_millis(50);
const WORKFLOW: &str = "bench-pool";

/// When the last task body ended (of the run being measured).
static LAST_BODY_END: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

fn fan_out(ctx: &Ctx<()>) -> smithers_core::Node {
    let _ = ctx;
    Workflow::new()
        .name(WORKFLOW)
        .max_concurrency(TASKS)
        .child(
            Parallel::new()
                .child((0..TASKS).map(|i| {
                    Task::<Slept>::new()
                        .id(format!("t{i:03}"))
                        .run(move |_t| async move {
                            tokio::time::sleep(SLEEP).await;
                            if let Ok(mut last) = LAST_BODY_END.lock() {
                                *last = Some(Instant::now());
                            }
                            Ok::<_, String>(Slept { n: i as i64 })
                        })
                        .build()
                }))
                .build(),
        )
        .build()
}

/// Drives one run with `workers` workers; returns its wall time, and how long before its end
/// the last task body ended (the time the driver took to consume the last outcomes).
async fn once(url: &str, workers: usize) -> (Duration, Duration) {
    let driver_store: Arc<dyn Store> =
        Arc::new(PostgresStore::connect(url).await.expect("connect"));
    let stop = CancellationToken::new();
    let mut serving = Vec::new();
    for _ in 0..workers {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(url).await.expect("connect"));
        let engine = Engine::new(store, fan_out);
        let mut options = PoolOptions::new(WORKFLOW, lease_owner());
        options.concurrency = 1;
        options.poll = Duration::from_millis(200);
        let stop = stop.clone();
        serving.push(tokio::spawn(async move {
            engine.serve_attempts(options, stop).await
        }));
    }
    let engine = Engine::new(driver_store, fan_out).with_options(EngineOptions {
        pool: true,
        max_concurrency: TASKS,
        ..EngineOptions::default()
    });
    let started = Instant::now();
    let report = engine.run(()).await.expect("the run");
    let took = started.elapsed();
    let ended = Instant::now();
    let lag = LAST_BODY_END
        .lock()
        .ok()
        .and_then(|l| *l)
        .map_or(Duration::ZERO, |l| ended.saturating_duration_since(l));
    assert_eq!(report.finished_nodes, TASKS, "{report:?}");
    stop.cancel();
    let mut executed = 0;
    for s in serving {
        let r = s.await.expect("worker task").expect("worker");
        assert!(r.recorded > 0, "every worker executed some: {r:?}");
        executed += r.recorded;
    }
    assert_eq!(executed, TASKS as u64, "every task executed once");
    (took, lag)
}

fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("(uptime: {e})"))
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        println!("pool mode on PostgreSQL: a Parallel of {TASKS} tasks sleeping {SLEEP:?} each, workers executing one attempt at a time");
        println!("load before: {}", uptime());
        let mut one = None;
        for workers in [1usize, 2, 4] {
            let Some(schema) = PgSchema::create("bench_pool").await else {
                println!("no PostgreSQL server reachable: nothing measured");
                return;
            };
            let (took, lag) = once(&schema.url, workers).await;
            schema.drop().await;
            let per_sec = TASKS as f64 / took.as_secs_f64();
            let base = *one.get_or_insert(per_sec);
            println!(
                "{workers} worker(s): {:>7.1} ms for {TASKS} tasks, {per_sec:>6.1} tasks/s, {:.2}x one worker (ideal {}x; floor {} ms); the run ended {:.1} ms after the last task body",
                took.as_secs_f64() * 1e3,
                per_sec / base,
                workers,
                (TASKS / workers) as u128 * SLEEP.as_millis(),
                lag.as_secs_f64() * 1e3,
            );
        }
        println!("load after: {}", uptime());
    });
}
