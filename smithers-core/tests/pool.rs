//! Pool mode in one process: a driver with `EngineOptions::pool` queues every attempt, workers
//! (`Engine::serve_attempts`, each with its own store handle) claim and execute them, and the
//! driver decides from the outcomes they record — retries included. A cancelled run stops its
//! queued attempts; SQLite refuses pool mode before anything is written. The PostgreSQL tests use
//! their own schema of the test server (skipped, saying so, when none is reachable; a failure
//! under `SMITHERS_REQUIRE_EXTERNAL=1`). Real worker processes are in the facade's
//! `tests/pool.rs`.
mod common;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use smithers_core::engine::{Engine, EngineOptions, PoolOptions};
use smithers_core::error::TaskError;
use smithers_core::node::{Parallel, Task, Workflow};
use smithers_core::store::conformance::PgSchema;
use smithers_core::store::{lease_owner, Durability, PostgresStore, RunStatus, SqliteStore, Store};
use smithers_core::{Ctx, Node};
use tokio_util::sync::CancellationToken;

const WORKFLOW: &str = "pool-in-process";

/// A `Parallel` of `n` counted tasks and `flaky`, which fails its first attempt (retryable).
fn fan_out(
    n: usize,
    hits: &Counter,
    flaky_hits: &Counter,
) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    let (hits, flaky_hits) = (hits.clone(), flaky_hits.clone());
    move |_ctx| {
        let tasks = (0..n).map(|i| {
            let hits = hits.clone();
            Task::<Num>::new()
                .id(format!("t{i}"))
                .run(move |_t| {
                    hits.hit();
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, String>(num(i as i64))
                    }
                })
                .build()
        });
        let flaky_hits = flaky_hits.clone();
        let flaky = Task::<Num>::new()
            .id("flaky")
            .retries(1)
            .run(move |_t| {
                let first = flaky_hits.hit() == 1;
                async move {
                    if first {
                        return Err(TaskError::retryable("the first attempt fails"));
                    }
                    Ok(num(-1))
                }
            })
            .build();
        Workflow::new()
            .name(WORKFLOW)
            .max_concurrency(n + 1)
            .child(Parallel::new().child(tasks).child(flaky).build())
            .build()
    }
}

fn pool_options() -> EngineOptions {
    EngineOptions {
        pool: true,
        pool_poll: Duration::from_millis(100),
        max_concurrency: 64,
        ..EngineOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_execute_a_pool_run_and_its_driver_decides_the_retry() {
    let Some(schema) = PgSchema::create("workers_execute_a_pool_run").await else {
        return;
    };
    let (hits, flaky) = (Counter::default(), Counter::default());
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
        let engine = Engine::new(store, fan_out(30, &hits, &flaky));
        let mut options = PoolOptions::new(WORKFLOW, lease_owner());
        options.concurrency = 3;
        options.poll = Duration::from_millis(100);
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            engine.serve_attempts(options, stop).await
        }));
    }
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let driver =
        Engine::new(store.clone(), fan_out(30, &hits, &flaky)).with_options(pool_options());
    let report = driver.run_with_id("p", ()).await.unwrap();
    assert_eq!(
        (report.status, report.finished_nodes),
        (RunStatus::Finished, 31)
    );
    stop.cancel();
    let mut recorded = Vec::new();
    for w in workers {
        recorded.push(w.await.unwrap().unwrap().recorded);
    }
    assert_eq!(hits.get(), 30, "each task ran once");
    assert_eq!(
        flaky.get(),
        2,
        "the retry was decided by the driver and run by a worker"
    );
    assert_eq!(
        recorded.iter().sum::<u64>(),
        32,
        "every attempt was a worker's"
    );
    assert!(
        recorded.iter().all(|&r| r > 0),
        "both workers executed some: {recorded:?}"
    );
    let attempts = store.attempts("p").await.unwrap();
    let flaky_attempts: Vec<&str> = attempts
        .iter()
        .filter(|a| a.node_id == "flaky")
        .map(|a| a.status.as_str())
        .collect();
    assert_eq!(flaky_attempts, ["failed", "finished"]);
    assert!(attempts.iter().all(|a| a.claim_owner.is_some()), "claimed");
    assert_eq!(store.load("p").await.unwrap().outputs.len(), 31);
    drop((driver, store));
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pool_run_stops_its_queued_attempts() {
    let Some(schema) = PgSchema::create("a_cancelled_pool_run").await else {
        return;
    };
    let (hits, flaky) = (Counter::default(), Counter::default());
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let cancel = CancellationToken::new();
    let driver =
        Engine::new(store.clone(), fan_out(3, &hits, &flaky)).with_options(EngineOptions {
            cancel: cancel.clone(),
            ..pool_options()
        });
    let run = tokio::spawn(async move { driver.run_with_id("c", ()).await });
    // No worker: the attempts stay queued until the cancellation stops them.
    let probe: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    while probe.queued_attempts("c").await.unwrap().len() < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    let attempts = probe.attempts("c").await.unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(
        attempts.iter().all(|a| a.status == "cancelled"),
        "{attempts:?}"
    );
    assert!(
        probe
            .claim_attempts(WORKFLOW, "otherhost:1:w", 10, Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty(),
        "nothing is left for a worker"
    );
    assert_eq!(hits.get(), 0);
    drop((store, probe));
    schema.drop().await;
}

/// A task that waits until it is stopped, saying when it started and when it saw the stop.
fn stalled(
    started: &tokio::sync::mpsc::UnboundedSender<std::time::Instant>,
    stopped: &Arc<std::sync::Mutex<Option<std::time::Instant>>>,
) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    let (started, stopped) = (started.clone(), stopped.clone());
    move |_ctx| {
        let (started, stopped) = (started.clone(), stopped.clone());
        Workflow::new()
            .name(WORKFLOW)
            .child(
                Task::<Num>::new()
                    .id("stalled")
                    .run(move |t| {
                        let (started, stopped) = (started.clone(), stopped.clone());
                        let cancel = t.cancelled().clone();
                        async move {
                            let _ = started.send(std::time::Instant::now());
                            cancel.cancelled().await;
                            *stopped.lock().unwrap() = Some(std::time::Instant::now());
                            Err::<Num, _>(TaskError::terminal("the stalled body saw its stop"))
                        }
                    })
                    .build(),
            )
            .build()
    }
}

/// A stop the driver asks for reaches the worker holding the attempt on the worker's stop
/// channel, not at the claim's next renewal: with 30 s claims (renewed every 10 s) the body
/// sees its stop before the first renewal could have happened, and the driver records the
/// outcome the worker recorded (not the end of its stop grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_a_claimed_attempt_before_its_next_renewal() {
    let Some(schema) = PgSchema::create("a_stop_reaches_a_claimed_attempt").await else {
        return;
    };
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let stopped = Arc::new(std::sync::Mutex::new(None));
    let ttl = Duration::from_secs(30);
    let stop = CancellationToken::new();
    let worker = {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
        let engine = Engine::new(store, stalled(&started_tx, &stopped));
        let mut options = PoolOptions::new(WORKFLOW, lease_owner());
        options.claim_ttl = ttl;
        options.poll = Duration::from_millis(100);
        let stop = stop.clone();
        tokio::spawn(async move { engine.serve_attempts(options, stop).await })
    };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let cancel = CancellationToken::new();
    let driver =
        Engine::new(store.clone(), stalled(&started_tx, &stopped)).with_options(EngineOptions {
            cancel: cancel.clone(),
            ..pool_options()
        });
    let run = tokio::spawn(async move { driver.run_with_id("s", ()).await });
    let started = started_rx.recv().await.unwrap();
    assert!(stopped.lock().unwrap().is_none(), "running until stopped");
    cancel.cancel();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    let seen = stopped.lock().unwrap().expect("the body saw its stop");
    // The claim's first renewal is due a third of its period after the body started.
    assert!(
        seen.duration_since(started) < ttl / 3,
        "the stop was seen {:?} after the body started: at a renewal, not by notification",
        seen.duration_since(started)
    );
    let attempts = store.attempts("s").await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].status, "cancelled", "{attempts:?}");
    assert!(
        attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("the stalled body saw its stop")),
        "the driver recorded what the worker recorded: {attempts:?}"
    );
    stop.cancel();
    let served = worker.await.unwrap().unwrap();
    assert_eq!((served.claimed, served.recorded, served.lost), (1, 1, 0));
    drop(store);
    schema.drop().await;
}

/// An agent that answers with how often it was asked.
#[derive(Clone, Default)]
struct CountingAgent(Counter);

#[async_trait::async_trait]
impl smithers_core::Agent for CountingAgent {
    fn name(&self) -> &str {
        "counting"
    }
    async fn generate(
        &self,
        _req: smithers_core::AgentRequest,
    ) -> Result<smithers_core::AgentResponse, smithers_core::AgentError> {
        let n = self.0.hit();
        Ok(smithers_core::AgentResponse {
            text: format!(r#"{{"n": {n}, "note": null}}"#),
            ..smithers_core::AgentResponse::default()
        })
    }
}

/// `<Workflow cache>` with one agent task.
fn cached(agent: &CountingAgent) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    let agent = agent.clone();
    move |_ctx| {
        Workflow::new()
            .name(WORKFLOW)
            .cache(true)
            .child(
                Task::<Num>::new()
                    .id("ask")
                    .agent(agent.clone())
                    .prompt("Count.")
                    .build(),
            )
            .build()
    }
}

/// A driver that takes over a pool run adopts the attempt its predecessor queued even when the
/// task's output has been cached since: the adopted attempt is the node's (its worker runs it
/// and the driver consumes its outcome), not left queued beside a cache hit for a worker to run
/// after the node finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_adopts_a_queued_attempt_even_when_its_output_is_cached() {
    let Some(schema) = PgSchema::create("a_takeover_adopts_a_cached_attempt").await else {
        return;
    };
    let agent = CountingAgent::default();
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    // The first driver queues the attempt (no worker yet) and dies, its lease left to expire.
    let lease = Duration::from_millis(300);
    let first = Engine::new(store.clone(), cached(&agent)).with_options(EngineOptions {
        lease_ttl: lease,
        ..pool_options()
    });
    let dying = tokio::spawn(async move { first.run_with_id("taken", ()).await });
    while store.queued_attempts("taken").await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dying.abort();
    let _ = dying.await;
    // Meanwhile a local run caches the task's output.
    let local = Engine::new(store.clone(), cached(&agent))
        .run_with_id("local", ())
        .await
        .unwrap();
    assert_eq!(local.status, RunStatus::Finished);
    assert_eq!(agent.0.get(), 1);
    // The next driver takes the run over once the lease expired, a worker running.
    let stop = CancellationToken::new();
    let worker = {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
        let engine = Engine::new(store, cached(&agent));
        let mut options = PoolOptions::new(WORKFLOW, lease_owner());
        options.poll = Duration::from_millis(50);
        let stop = stop.clone();
        tokio::spawn(async move { engine.serve_attempts(options, stop).await })
    };
    let next = Engine::new(store.clone(), cached(&agent)).with_options(pool_options());
    let report = loop {
        match next.resume(Some("taken")).await {
            Err(smithers_core::Error::LeaseHeld { .. }) => {
                tokio::time::sleep(lease / 3).await;
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    stop.cancel();
    let served = worker.await.unwrap().unwrap();
    let attempts: Vec<(u32, String, bool)> = store
        .attempts("taken")
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.attempt, a.status, a.claim_owner.is_some()))
        .collect();
    assert_eq!(
        attempts,
        [(1, "finished".to_owned(), true)],
        "the adopted attempt, run by the worker, finished the node"
    );
    assert_eq!(served.recorded, 1, "{served:?}");
    assert_eq!(agent.0.get(), 2, "the worker asked the agent once");
    assert!(
        store.queued_attempts("taken").await.unwrap().is_empty(),
        "nothing is left in the queue"
    );
    assert_eq!(store.load("taken").await.unwrap().outputs.len(), 1);
    drop(store);
    schema.drop().await;
}

#[tokio::test]
async fn pool_mode_on_sqlite_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("p.db"), Durability::Off).unwrap());
    let (hits, flaky) = (Counter::default(), Counter::default());
    let engine = Engine::new(store.clone(), fan_out(2, &hits, &flaky)).with_options(pool_options());
    let e = engine.run_with_id("s", ()).await.unwrap_err();
    assert!(e.to_string().contains("needs a PostgreSQL database"), "{e}");
    assert!(store.runs().await.unwrap().is_empty(), "no run was created");
    let e = engine
        .serve_attempts(
            PoolOptions::new(WORKFLOW, lease_owner()),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs a PostgreSQL database"), "{e}");
}
