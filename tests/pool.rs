//! Pool mode on PostgreSQL, with real processes: worker processes of one workflow binary share
//! one run's tasks (each claimed by one worker with `FOR UPDATE SKIP LOCKED`), a worker takes
//! over the run when its driver is killed (adopting the attempts queued for the pool instead of
//! re-running them), and workers and drivers SIGKILLed at random still finish the run with one
//! output per node and no finished work repeated.
//!
//! The processes are this test binary re-executed as a workflow binary (see `common::child`),
//! with short leases and claims (`--lease-ttl-ms`) so takeovers come quickly. Each test uses a
//! fresh schema of the test server (skipped, saying so, with no server; a failure under
//! `SMITHERS_REQUIRE_EXTERNAL=1`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{append, finish, kill9, run_as_workflow_binary, signal, ChildEnv};
use common::{init_repo, jj_or_skip, vcs};
use serde::{Deserialize, Serialize};
use smithers::__private::{Column, ColumnKind};
use smithers_core::node::{Parallel, Task, Workflow};
use smithers_core::store::conformance::PgSchema;
use smithers_core::store::{PostgresStore, RunStatus, Store};
use smithers_core::{Ctx, Node, Output};

/// What each task returns: its node and the process that executed it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Done {
    node: String,
    pid: i64,
}

impl Output for Done {
    const TABLE: &'static str = "pool_done";
    const COLUMNS: &'static [Column] = &[
        Column {
            name: "node",
            kind: ColumnKind::Text,
            nullable: false,
            rust_type: "String",
        },
        Column {
            name: "pid",
            kind: ColumnKind::Integer,
            nullable: false,
            rust_type: "i64",
        },
    ];
}

const TASKS: usize = 200;

/// A worker: drives at most 2 runs and executes at most 2 attempts at once; restarts a run whose
/// driver died with a short backoff (the torture kills drivers on purpose).
const WORKER: &str =
    "worker --concurrency 2 --poll-ms 50 --restart-limit 1000 --restart-backoff-ms 10";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A `Parallel` of 200 tasks; each logs `exec <node> <pid> <start ms>` when its body starts,
/// then sleeps `millis`.
fn pool_workflow(log: PathBuf, millis: u64) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    move |_ctx| {
        let tasks = (0..TASKS).map(|i| {
            let (node, log) = (format!("t{i:03}"), log.clone());
            Task::<Done>::new()
                .id(node.clone())
                .run(move |_t| {
                    let (node, log) = (node.clone(), log.clone());
                    async move {
                        let pid = std::process::id();
                        append(&log, &format!("exec {node} {pid} {}", now_ms()));
                        tokio::time::sleep(Duration::from_millis(millis)).await;
                        Ok::<_, String>(Done {
                            node,
                            pid: i64::from(pid),
                        })
                    }
                })
                .build()
        });
        Workflow::new()
            .name("pool")
            .max_concurrency(TASKS)
            .child(Parallel::new().child(tasks).build())
            .build()
    }
}

/// Child entry point: when `SMITHERS_CHILD_ARGS` is set, behave as a workflow binary.
#[test]
fn pool_child() {
    run_as_workflow_binary(pool_workflow);
}

/// Child processes of one test: the database URL and the shared execution log.
struct Pool {
    url: String,
    env: ChildEnv,
}

impl Pool {
    fn new(url: &str) -> Self {
        Pool {
            url: url.to_owned(),
            env: ChildEnv::new("pool_child"),
        }
    }

    /// A workflow binary running `args` on the test's database, tasks sleeping `millis`, a
    /// lease and claim period of `ttl_ms`.
    fn spawn(&self, args: &str, millis: u64, ttl_ms: u64) -> Child {
        self.env
            .command_on(
                &self.url,
                &format!("--quiet --lease-ttl-ms {ttl_ms} {args}"),
                millis,
            )
            .spawn()
            .expect("spawn child")
    }

    /// The execution log: (node, pid, start ms) per body started.
    fn executions(&self) -> Vec<(String, u32, i64)> {
        self.env
            .log_lines()
            .iter()
            .filter_map(|l| {
                let mut p = l.strip_prefix("exec ")?.split(' ');
                Some((
                    p.next()?.to_owned(),
                    p.next()?.parse().ok()?,
                    p.next()?.parse().ok()?,
                ))
            })
            .collect()
    }
}

/// Polls `done` until it holds, failing after `limit`.
async fn eventually(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(store: &Arc<dyn Store>, run: &str) -> Option<RunStatus> {
    store.run(run).await.ok().flatten().map(|r| r.status)
}

/// What every pool test checks at the end: the run finished with one output per node, each
/// node finished by one attempt, and no task's body started after its node had finished (no
/// finished work repeated). Returns the executions per node.
async fn check_finished_once(
    store: &Arc<dyn Store>,
    run: &str,
    pool: &Pool,
) -> BTreeMap<String, Vec<(u32, i64)>> {
    let rec = store.run(run).await.unwrap().expect("the run");
    assert_eq!(rec.status, RunStatus::Finished, "{rec:?}");
    let loaded = store.load(run).await.unwrap();
    let nodes: BTreeSet<&str> = loaded.outputs.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(loaded.outputs.len(), TASKS, "one output row per node");
    assert_eq!(nodes.len(), TASKS, "every node has its output");
    let attempts = store.attempts(run).await.unwrap();
    let mut finished: HashMap<&str, usize> = HashMap::new();
    for a in &attempts {
        if a.status == "finished" {
            *finished.entry(a.node_id.as_str()).or_default() += 1;
        }
    }
    assert!(
        finished.len() == TASKS && finished.values().all(|&n| n == 1),
        "each node finished by exactly one attempt"
    );
    // When each node finished, by its `node_finished` event.
    let finished_at: HashMap<String, i64> = store
        .events(run, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind.name() == "node_finished")
        .filter_map(|e| Some((e.event.node_id?, e.event.at.as_millis())))
        .collect();
    let mut per_node: BTreeMap<String, Vec<(u32, i64)>> = BTreeMap::new();
    for (node, pid, at) in pool.executions() {
        per_node.entry(node).or_default().push((pid, at));
    }
    assert_eq!(per_node.len(), TASKS, "every task's body ran");
    for (node, runs) in &per_node {
        let done = finished_at[node];
        for (pid, at) in runs {
            assert!(
                *at <= done,
                "node `{node}` finished at {done} ms, and process {pid} started it again at {at} ms"
            );
        }
    }
    per_node
}

/// [`check_finished_once`], and no task's body ran twice. Returns the processes that ran them.
async fn check_each_ran_once(store: &Arc<dyn Store>, run: &str, pool: &Pool) -> BTreeSet<u32> {
    let per_node = check_finished_once(store, run, pool).await;
    let repeated: Vec<&String> = per_node
        .iter()
        .filter(|(_, r)| r.len() != 1)
        .map(|(n, _)| n)
        .collect();
    assert!(
        repeated.is_empty(),
        "every task ran exactly once; these ran more: {repeated:?}"
    );
    per_node.values().flatten().map(|(pid, _)| *pid).collect()
}

/// Sends every worker SIGTERM, then waits for each and checks it stopped cleanly.
fn stop_workers(workers: Vec<Child>) {
    for w in &workers {
        signal(w, libc::SIGTERM);
    }
    for w in workers {
        let (code, stderr) = finish(w);
        assert_eq!(code, Some(0), "a worker stops cleanly on SIGTERM: {stderr}");
    }
}

/// Four worker processes share a run of 200 tasks queued by a driver in pool mode: every task
/// runs exactly once, every worker executes some, and when the driver is SIGKILLed mid-run a
/// worker takes the run over (adopting the queued attempts) and finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_a_run_and_one_takes_over_when_the_driver_dies() {
    let Some(schema) = PgSchema::create("four_workers_share_a_run").await else {
        return;
    };
    let pool = Pool::new(&schema.url);
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let workers: Vec<Child> = (0..4).map(|_| pool.spawn(WORKER, 100, 1000)).collect();
    let worker_pids: BTreeSet<u32> = workers.iter().map(Child::id).collect();
    let mut driver = pool.spawn(
        "run --run-id shared --pool --max-concurrency 200",
        100,
        1000,
    );
    let driver_pid = driver.id();
    eventually(
        "60 task bodies started",
        Duration::from_secs(60),
        async || pool.executions().len() >= 60,
    )
    .await;
    kill9(&mut driver);
    eventually(
        "the run to finish after its driver died",
        Duration::from_secs(120),
        async || status(&store, "shared").await == Some(RunStatus::Finished),
    )
    .await;
    stop_workers(workers);
    let pids = check_each_ran_once(&store, "shared", &pool).await;
    assert!(
        !pids.contains(&driver_pid),
        "the driver in pool mode runs no task itself"
    );
    assert_eq!(pids, worker_pids, "every worker executed some of the tasks");
    let rec = store.run("shared").await.unwrap().unwrap();
    assert!(rec.lease_epoch >= 2, "a worker took the run over: {rec:?}");
    let attempts = store.attempts("shared").await.unwrap();
    assert!(
        attempts.iter().all(|a| a.status != "abandoned"),
        "the queued attempts were adopted, not abandoned"
    );
    drop(store);
    schema.drop().await;
}

/// A tiny deterministic generator (xorshift), seeded from the clock and printed, so a failing
/// sequence of kills can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The crash torture on PostgreSQL: while a run of 200 tasks goes on, worker processes and the
/// driver are SIGKILLed at random (at least 50 kills; each killed worker is replaced, and a dead
/// driver is replaced by a worker's takeover). The run finishes, with one output per node, each
/// node finished by one attempt, and no task body started after its node finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_drivers_killed_at_random_finish_each_node_once() {
    let Some(schema) = PgSchema::create("pool_crash_torture").await else {
        return;
    };
    let pool = Pool::new(&schema.url);
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let seed = (now_ms() as u64) | 1;
    eprintln!("pool crash torture: seed {seed}");
    let mut rng = Rng(seed);
    let mut workers: Vec<Child> = (0..4).map(|_| pool.spawn(WORKER, 200, 600)).collect();
    let mut driver = Some(pool.spawn(
        "run --run-id torture --pool --max-concurrency 200",
        200,
        600,
    ));
    // The kills start once the run exists and its tasks are under way.
    eventually(
        "10 task bodies started",
        Duration::from_secs(60),
        async || pool.executions().len() >= 10,
    )
    .await;
    let (mut kills, mut driver_kills) = (0, 0);
    let started = Instant::now();
    while status(&store, "torture").await != Some(RunStatus::Finished) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the run did not finish within 180 s ({kills} kills)"
        );
        tokio::time::sleep(Duration::from_millis(30 + rng.below(60) as u64)).await;
        if kills >= 50 {
            continue; // enough kills: let it finish
        }
        // Whoever drives the run now (the first driver, or a worker that took it over).
        let driving_pid = store
            .run("torture")
            .await
            .ok()
            .flatten()
            .and_then(|r| r.lease_owner)
            .and_then(|o| o.split(':').nth(1).and_then(|p| p.parse::<u32>().ok()));
        // Kill the first driver now and then, else a worker (which may be driving the run).
        let killed = match driver.as_mut() {
            Some(d) if rng.below(5) == 0 => {
                let pid = d.id();
                kill9(d);
                driver = None;
                pid
            }
            _ => {
                let i = rng.below(workers.len());
                let pid = workers[i].id();
                kill9(&mut workers[i]);
                workers[i] = pool.spawn(WORKER, 200, 600);
                pid
            }
        };
        if driving_pid == Some(killed) {
            driver_kills += 1;
        }
        kills += 1;
    }
    assert!(kills >= 50, "only {kills} kills before the run finished");
    eprintln!(
        "pool crash torture: {kills} kills ({driver_kills} of the process driving the run), finished in {:?}",
        started.elapsed()
    );
    assert!(driver_kills >= 2, "drivers were killed too: {driver_kills}");
    for w in &workers {
        signal(w, libc::SIGTERM);
    }
    for w in workers {
        finish(w);
    }
    if let Some(mut d) = driver {
        kill9(&mut d);
    }
    check_finished_once(&store, "torture", &pool).await;
    drop(store);
    schema.drop().await;
}

/// The run's attempts as `(node, attempt, status, queue, claim epoch)`, read with a client of the
/// test's own (the store's records do not carry the claim epoch).
async fn attempt_rows(url: &str, run: &str) -> Vec<(String, i64, String, Option<String>, i64)> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT node_id, attempt, status, queue, claim_epoch FROM _smithers_attempts
             WHERE run_id = $1 ORDER BY node_id, attempt",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    drop(client);
    let _ = conn.await;
    rows
}

/// The pid in a lease owner or worker id (`host:pid:nonce`).
fn pid_of(owner: &str) -> Option<u32> {
    owner.split(':').nth(1)?.parse().ok()
}

/// SIGTERM of the worker driving a pool run hands the run back without stopping its attempts:
/// those queued and those claimed by other workers go on, the next driver adopts them, and every
/// task's body runs exactly once — one attempt per node, none cancelled, none run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driving_worker_stopped_by_sigterm_leaves_its_attempts_to_the_next_driver() {
    let Some(schema) = PgSchema::create("sigterm_leaves_pool_attempts").await else {
        return;
    };
    let pool = Pool::new(&schema.url);
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let (code, stderr) = finish(pool.spawn("run --detach --run-id handed", 300, 1000));
    assert_eq!(code, Some(0), "{stderr}");
    // The first worker drives the run and executes none of its attempts itself.
    let driver = pool.spawn(
        "worker --concurrency 1 --attempts 0 --poll-ms 50",
        300,
        1000,
    );
    let driver_pid = driver.id();
    eventually(
        "the first worker to drive the run",
        Duration::from_secs(60),
        async || {
            store
                .run("handed")
                .await
                .ok()
                .flatten()
                .and_then(|r| r.lease_owner)
                .and_then(|o| pid_of(&o))
                == Some(driver_pid)
        },
    )
    .await;
    // Two more execute the attempts (and are there to take the run over).
    let workers: Vec<Child> = (0..2)
        .map(|_| {
            pool.spawn(
                "worker --concurrency 1 --attempts 4 --poll-ms 50",
                300,
                1000,
            )
        })
        .collect();
    let worker_pids: BTreeSet<u32> = workers.iter().map(Child::id).collect();
    eventually(
        "40 task bodies started",
        Duration::from_secs(60),
        async || pool.executions().len() >= 40,
    )
    .await;
    let claimed = store
        .attempts("handed")
        .await
        .unwrap()
        .iter()
        .filter(|a| a.queue.as_deref() == Some("claimed"))
        .count();
    assert!(
        claimed > 0,
        "other workers hold claims when the driver is stopped"
    );
    signal(&driver, libc::SIGTERM);
    let (code, stderr) = finish(driver);
    assert_eq!(code, Some(0), "the driving worker stops cleanly: {stderr}");
    // The hand-back stopped none of the attempts: they are in progress (queued, claimed or
    // recorded for the next driver) or finished.
    let after = store.attempts("handed").await.unwrap();
    let stopped: Vec<String> = after
        .iter()
        .filter(|a| a.status != "in-progress" && a.status != "finished")
        .map(|a| format!("{} #{} {}", a.node_id, a.attempt, a.status))
        .collect();
    assert!(
        stopped.is_empty(),
        "the hand-back left the workers' attempts alone: {stopped:?}"
    );
    eventually(
        "the run to finish after its driver was stopped",
        Duration::from_secs(120),
        async || status(&store, "handed").await == Some(RunStatus::Finished),
    )
    .await;
    stop_workers(workers);
    let pids = check_each_ran_once(&store, "handed", &pool).await;
    assert_eq!(pids, worker_pids, "the other workers executed every task");
    let rows = attempt_rows(&schema.url, "handed").await;
    assert_eq!(
        rows.len(),
        TASKS,
        "one attempt per node: none started again"
    );
    assert!(
        rows.iter()
            .all(|(_, attempt, status, _, _)| *attempt == 1 && status == "finished"),
        "each node's one attempt finished"
    );
    // Handed back, then taken over by another worker that adopted what was queued.
    let kinds: Vec<String> = store
        .events("handed", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.kind.name().to_owned())
        .filter(|k| k.starts_with("run_"))
        .collect();
    let queued_at = kinds
        .iter()
        .rposition(|k| k == "run_queued")
        .expect("a run_queued event for the hand-back");
    assert!(
        kinds[queued_at..].contains(&"run_resumed".to_owned()),
        "the next driver resumed the run: {kinds:?}"
    );
    let rec = store.run("handed").await.unwrap().unwrap();
    assert!(
        rec.lease_epoch >= 2,
        "another worker drove the run: {rec:?}"
    );
    assert_eq!(
        store.restarts("handed").await.unwrap(),
        None,
        "a hand-back is no crash"
    );
    drop(store);
    schema.drop().await;
}

/// A worker SIGKILLed while it holds claims: another worker sees its process gone at its next
/// heartbeat (every 5 s) and frees its claims — not when they expire (30 s after their last
/// renewal here) — and runs those attempts; the freed claims are fenced (their epoch moved on),
/// each node finishes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claims_of_a_sigkilled_worker_are_freed_at_once_not_at_their_expiry() {
    let Some(schema) = PgSchema::create("sigkilled_worker_claims_freed").await else {
        return;
    };
    // Leases and claims of 30 s, renewed every 10 s: the victim's last renewal was at most 10 s
    // before the kill, so its claims would hold at least 20 s after it.
    const TTL: u64 = 30_000;
    let pool = Pool::new(&schema.url);
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let driver = pool.spawn("run --run-id claims --pool", 50, TTL);
    // The victim comes first and claims 4 attempts whose bodies sleep a minute: it holds their
    // claims until it is killed.
    let mut victim = pool.spawn(
        "worker --concurrency 1 --attempts 4 --poll-ms 50",
        60_000,
        TTL,
    );
    let victim_pid = victim.id();
    let victims = || -> Vec<String> {
        pool.executions()
            .into_iter()
            .filter(|(_, pid, _)| *pid == victim_pid)
            .map(|(node, _, _)| node)
            .collect()
    };
    eventually(
        "the victim to start 4 bodies",
        Duration::from_secs(60),
        async || victims().len() >= 4,
    )
    .await;
    let held: BTreeSet<String> = victims().into_iter().collect();
    assert_eq!(held.len(), 4, "{held:?}");
    let held_epochs: BTreeMap<String, i64> = attempt_rows(&schema.url, "claims")
        .await
        .into_iter()
        .filter(|(node, ..)| held.contains(node))
        .map(|(node, _, _, queue, epoch)| {
            assert_eq!(queue.as_deref(), Some("claimed"), "{node}");
            (node, epoch)
        })
        .collect();
    let workers: Vec<Child> = (0..2)
        .map(|_| pool.spawn("worker --concurrency 1 --attempts 4 --poll-ms 50", 50, TTL))
        .collect();
    eventually(
        "the other workers to start 20 bodies",
        Duration::from_secs(60),
        async || pool.executions().len() >= 24,
    )
    .await;
    kill9(&mut victim);
    let killed_at = now_ms();
    eventually("the run to finish", Duration::from_secs(60), async || {
        status(&store, "claims").await == Some(RunStatus::Finished)
    })
    .await;
    let finished_after = now_ms() - killed_at;
    stop_workers(workers);
    let (code, stderr) = finish(driver);
    assert_eq!(code, Some(0), "the driver finished the run: {stderr}");
    let per_node = check_finished_once(&store, "claims", &pool).await;
    let twice: BTreeSet<String> = per_node
        .iter()
        .filter(|(_, r)| r.len() != 1)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(
        twice, held,
        "the victim's attempts ran again elsewhere, and nothing else did"
    );
    // Each ran again soon after the kill: the claims were freed, not waited out.
    let mut rerun_ms = Vec::new();
    for node in &held {
        let (pid, at) = per_node[node]
            .iter()
            .find(|(pid, _)| *pid != victim_pid)
            .copied()
            .expect("run again by another worker");
        assert_ne!(pid, victim_pid);
        rerun_ms.push(at - killed_at);
    }
    eprintln!(
        "claims of the SIGKILLed worker: its attempts ran again {rerun_ms:?} ms after the kill (claims of {TTL} ms, poll 50 ms); the run finished {finished_after} ms after it"
    );
    assert!(
        rerun_ms.iter().all(|&ms| ms < TTL as i64 / 2),
        "the victim's attempts ran again {rerun_ms:?} ms after the kill: its claims, renewed at most {} ms before it, were waited out",
        TTL / 3
    );
    let rows = attempt_rows(&schema.url, "claims").await;
    assert_eq!(
        rows.len(),
        TASKS,
        "the freed attempts kept their rows: none started anew"
    );
    for (node, attempt, status, _, epoch) in rows.iter().filter(|(n, ..)| held.contains(n)) {
        assert_eq!((*attempt, status.as_str()), (1, "finished"), "{node}");
        assert!(
            *epoch >= held_epochs[node] + 2,
            "{node}: freed (epoch moved) and claimed again: {epoch} vs the victim's {}",
            held_epochs[node]
        );
    }
    drop(store);
    schema.drop().await;
}

/// Pool mode with time travel: a worker executing the tasks of `<Step>`s snapshots its own
/// working copy around them (the driver, elsewhere, takes none), records the snapshots on the
/// attempts' and the steps' rows, and `smithers rewind` restores the files the worker changed;
/// `resume` in pool mode re-runs exactly the steps cut. Needs jj (skipped, saying so, without
/// it; a failure under `SMITHERS_REQUIRE_EXTERNAL=1`) and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_a_worker_ran_is_rewound_with_the_working_copy_it_changed() {
    use smithers_core::engine::{Engine, EngineOptions, PoolOptions};
    use smithers_core::node::{Phase, Step};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let Some(jj) = jj_or_skip("a_step_a_worker_ran_is_rewound_with_the_working_copy_it_changed")
    else {
        return;
    };
    let Some(schema) = PgSchema::create("pool_step_rewound").await else {
        return;
    };
    // The worker's working copy: a jj repository colocated with git.
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().to_path_buf();
    init_repo(&dir, &[("notes.txt", "start\n")]);
    vcs(&jj, &dir, &["git", "init", "--colocate", "--quiet"]);
    // The driver's directory is no repository: the snapshots must be the worker's.
    let elsewhere = tempfile::tempdir().unwrap();

    let runs: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let workflow = {
        let (dir, runs) = (dir.clone(), runs.clone());
        move |ctx: &Ctx<()>| {
            let step = |i: usize, name: &str, line: &str| {
                let (dir, runs, line) = (dir.clone(), runs.clone(), line.to_owned());
                Step::new()
                    .name(name)
                    .child(
                        Task::<Done>::new()
                            .id(line.clone())
                            .run(move |_t| {
                                let (dir, runs, line) = (dir.clone(), runs.clone(), line.clone());
                                async move {
                                    runs[i].fetch_add(1, Ordering::SeqCst);
                                    let p = dir.join("notes.txt");
                                    let mut text =
                                        std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
                                    text.push_str(&line);
                                    text.push('\n');
                                    std::fs::write(&p, text).map_err(|e| e.to_string())?;
                                    Ok::<_, String>(Done {
                                        node: line,
                                        pid: i64::from(std::process::id()),
                                    })
                                }
                            })
                            .build(),
                    )
                    .build()
            };
            // `two` and `three` are mounted once `a` is done: frame 2 is the tree after `one`.
            let mut work = Phase::new().name("work").child(step(0, "one", "a"));
            if ctx.output_maybe::<Done>("a").is_some() {
                work = work.child(step(1, "two", "b")).child(step(2, "three", "c"));
            }
            Workflow::new()
                .name("pool-steps")
                .child(work.build())
                .build()
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
        let engine = Engine::new(store, workflow.clone()).with_options(EngineOptions {
            workdir: Some(dir.clone()),
            ..EngineOptions::default()
        });
        let mut options = PoolOptions::new("pool-steps", smithers_core::store::lease_owner());
        options.claim_ttl = Duration::from_secs(30);
        options.poll = Duration::from_millis(50);
        let stop = stop.clone();
        tokio::spawn(async move { engine.serve_attempts(options, stop).await })
    };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let driver_options = || EngineOptions {
        pool: true,
        pool_poll: Duration::from_millis(50),
        workdir: Some(elsewhere.path().to_path_buf()),
        ..EngineOptions::default()
    };
    let report = Engine::new(store.clone(), workflow.clone())
        .with_options(driver_options())
        .run_with_id("steps", ())
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let notes = || std::fs::read_to_string(dir.join("notes.txt")).unwrap();
    assert_eq!(notes(), "start\na\nb\nc\n");
    let steps = store.steps("steps").await.unwrap();
    assert_eq!(steps.len(), 3, "{steps:?}");
    let root = std::fs::canonicalize(&dir).unwrap();
    for s in &steps {
        assert!(
            s.snapshot_before.is_some()
                && s.snapshot_after.is_some()
                && s.vcs_backend.as_deref() == Some("jj")
                && s.vcs_repo
                    .as_deref()
                    .is_some_and(|r| std::fs::canonicalize(r).ok().as_ref() == Some(&root)),
            "every step is snapshotted in the worker's working copy: {s:?}"
        );
    }
    let attempts = store.attempts("steps").await.unwrap();
    assert!(
        attempts
            .iter()
            .all(|a| a.claim_owner.is_some() && a.vcs_before.is_some() && a.vcs_after.is_some()),
        "each attempt ran on the worker and carries its snapshots: {attempts:?}"
    );

    // Rewind to frame 2 (step `one` done, `two` not started): the files go back to after `a`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smithers"))
        .env_remove("SMITHERS_DB")
        .args(["--db", &schema.url, "rewind", "steps", "--frame", "2"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert_eq!(
        notes(),
        "start\na\n",
        "the working copy is restored: {said}"
    );
    assert_eq!(
        store.run("steps").await.unwrap().unwrap().status,
        RunStatus::Cancelled
    );

    // Resumed in pool mode: the worker re-runs exactly the steps cut.
    let again = Engine::new(
        Arc::new(PostgresStore::connect(&schema.url).await.unwrap()),
        workflow,
    )
    .with_options(driver_options())
    .resume(Some("steps"))
    .await
    .unwrap();
    assert_eq!(again.status, RunStatus::Finished, "{again:?}");
    assert_eq!(
        runs.iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect::<Vec<_>>(),
        [1, 2, 2]
    );
    assert_eq!(notes(), "start\na\nb\nc\n");
    stop.cancel();
    worker.await.unwrap().unwrap();
    drop(store);
    schema.drop().await;
}
