//! Budgets with the engine driving fake CLI executables: a task stopped by its budget while its
//! agent works (and its process tree gone) — in the driver's process, and on a pool worker on
//! PostgreSQL — and a run parked as `waiting-budget`, raised with `smithers budget RUN --add 5`
//! and resumed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use smithers::agents::ClaudeCodeAgent;
use smithers::prelude::*;
use smithers::{OnBudget, SharedAgent};
use smithers_core::engine::{CancellationToken, Engine, EngineOptions, PoolOptions};
use smithers_core::store::conformance::PgSchema;
use smithers_core::store::{lease_owner, Durability, PostgresStore, RunStatus, SqliteStore, Store};

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Verdict {
    summary: String,
    severity: String,
}

fn fake_cli() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smithers-agents/tests/fixtures/fake-cli.sh")
}

fn store(db: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(db, Durability::Normal).unwrap())
}

fn options() -> EngineOptions {
    EngineOptions {
        vcs_snapshots: false,
        ..EngineOptions::default()
    }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

/// A fake Claude that reads a file (60 500 tokens so far), then edits it (130 000 + 1000), then
/// stalls; it writes the pids of its processes in `dir` (see [`assert_cli_gone`]).
fn stalling_claude(dir: &Path) -> SharedAgent {
    Arc::new(
        ClaudeCodeAgent::new()
            .binary(fake_cli())
            .env("FAKE_SCENARIO", "claude/usage-stall")
            .env("FAKE_STALL", "1")
            .env("FAKE_PID_FILE", dir.join("pids")),
    )
}

/// Waits for the fake CLI's processes (the leader and its `sleep`, by the pids it wrote in
/// `dir`) to be gone, failing after 5 s.
async fn assert_cli_gone(dir: &Path) {
    let mut pids = std::fs::read_to_string(dir.join("pids.leader")).unwrap();
    pids.push(' ');
    pids.push_str(&std::fs::read_to_string(dir.join("pids")).unwrap_or_default());
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        for _ in 0..250 {
            if !alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "process {pid} survived the budget stop");
    }
}

/// The error of task `fix` stopped by its 100000-token budget after spending 131000.
fn fix_budget_error(run_id: &str) -> String {
    format!(
        "task `fix` budget exceeded: max_tokens 100000, spent 131000 tokens over 1 attempt(s); \
         raise it with `smithers budget {run_id} --task fix --add-tokens 100000`, then `resume`"
    )
}

/// (node, attempt, status, error, input_tokens, output_tokens)
type Row = (
    String,
    u32,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn rows(db: &Path) -> Vec<Row> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT node_id, attempt, status, error, input_tokens, output_tokens
             FROM _smithers_attempts ORDER BY ord",
        )
        .unwrap();
    st.query_map([], |x| {
        Ok((
            x.get(0)?,
            x.get(1)?,
            x.get(2)?,
            x.get(3)?,
            x.get(4)?,
            x.get(5)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test]
async fn a_task_is_stopped_by_its_token_budget_while_the_agent_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let agent = stalling_claude(dir.path());
    let engine = Engine::new(store(&db), move |_ctx: &Ctx<()>| {
        workflow! {
            <Workflow name="budget">
                <Task id="fix" output=Verdict agent={agent.clone()} retries=3 max_tokens=100000>
                    "Fix the bug."
                </Task>
            </Workflow>
        }
    })
    .with_options(options());
    let started = std::time::Instant::now();
    let report = engine.run(()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped, not timed out"
    );
    assert_eq!(report.status, RunStatus::Failed);
    let run_id = report.run_id;
    let rows = rows(&db);
    assert_eq!(rows.len(), 1, "a budget stop is not retried: {rows:?}");
    let (node, attempt, status, error, input, output) = rows[0].clone();
    assert_eq!(
        (node.as_str(), attempt, status.as_str()),
        ("fix", 1, "failed")
    );
    assert_eq!(error.as_deref(), Some(fix_budget_error(&run_id).as_str()));
    // What it streamed before being stopped is what it spent.
    assert_eq!((input, output), (Some(130_000), Some(1000)));
    // The CLI is gone (and its `sleep`, if it got that far before the stop).
    assert_cli_gone(dir.path()).await;
    // Progress a person can read: what the agent did before it was stopped.
    let c = rusqlite::Connection::open(&db).unwrap();
    let mut st = c
        .prepare("SELECT payload FROM _smithers_events WHERE kind = 'node_output' ORDER BY seq")
        .unwrap();
    let lines: Vec<String> = st
        .query_map([], |x| x.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("uses Read: src/lib.rs")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("uses Edit: src/lib.rs")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_run_parked_by_its_budget_resumes_after_smithers_budget_add() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    // Each attempt reports $0.0076235 (the captured Claude result).
    let agent: SharedAgent = Arc::new(
        ClaudeCodeAgent::new()
            .binary(fake_cli())
            .env("FAKE_SCENARIO", "claude/ok"),
    );
    let tree = move |_ctx: &Ctx<()>| {
        workflow! {
            <Workflow name="budget" max_cost_usd=0.01 on_budget={OnBudget::Park}>
                <Sequence>
                    <Task id="a" output=Verdict agent={agent.clone()}> "One." </Task>
                    <Task id="b" output=Verdict agent={agent.clone()}> "Two." </Task>
                    <Task id="c" output=Verdict agent={agent.clone()}> "Three." </Task>
                </Sequence>
            </Workflow>
        }
    };
    let engine = Engine::new(store(&db), tree.clone()).with_options(options());
    let report = engine.run(()).await.unwrap();
    let run_id = report.run_id.clone();
    assert_eq!(report.status, RunStatus::WaitingBudget, "{report:?}");
    let reason = format!(
        "run budget exceeded: max_cost_usd $0.0100, spent $0.0152 over 2 attempt(s); raise it \
         with `smithers budget {run_id} --add 5`, then `resume`"
    );
    assert_eq!(report.error.as_deref(), Some(reason.as_str()));
    let done: Vec<String> = rows(&db).into_iter().map(|r| r.0).collect();
    assert_eq!(done, ["a", "b"], "`c` did not start");

    let s = store(&db);
    let rec = s.run(&run_id).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::WaitingBudget);
    assert_eq!(rec.error.as_deref(), Some(reason.as_str()));
    drop(s);

    let out = Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("--db")
        .arg(&db)
        .args(["budget", &run_id, "--add", "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("raised the run's budget of run {run_id} by $5.00; `resume` continues it\n")
    );

    let engine = Engine::new(store(&db), tree).with_options(options());
    let report = engine.resume(Some(&run_id)).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let all: Vec<(String, String)> = rows(&db).into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        all,
        [
            ("a".to_owned(), "finished".to_owned()),
            ("b".to_owned(), "finished".to_owned()),
            ("c".to_owned(), "finished".to_owned())
        ]
    );
}

/// The same budget stop in pool mode on PostgreSQL: a worker (`Engine::serve_attempts`, its own
/// store handle) executes the agent and reports the usage it streams under its claim; the
/// driver, which decides budgets, stops the attempt mid-way as it would its own, and the worker
/// sees the stop and ends the CLI. (Skipped, saying so, without a PostgreSQL server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_task_run_by_a_worker_is_stopped_by_its_token_budget_mid_attempt() {
    let Some(schema) = PgSchema::create("budget_stops_a_pool_attempt").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let agent = stalling_claude(dir.path());
    let tree = move |_ctx: &Ctx<()>| {
        workflow! {
            <Workflow name="budget">
                <Task id="fix" output=Verdict agent={agent.clone()} retries=3 max_tokens=100000>
                    "Fix the bug."
                </Task>
            </Workflow>
        }
    };
    // The worker: claims of 3 s, renewed every second (a stop is seen at the latest then).
    let owner = lease_owner();
    let mut pool = PoolOptions::new("budget", owner.clone());
    pool.claim_ttl = Duration::from_secs(3);
    pool.poll = Duration::from_millis(100);
    let worker = Engine::new(
        Arc::new(PostgresStore::connect(&schema.url).await.unwrap()) as Arc<dyn Store>,
        tree.clone(),
    )
    .with_options(options());
    let stop = CancellationToken::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move { worker.serve_attempts(pool, stop).await }
    });
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let driver = Engine::new(store.clone(), tree).with_options(EngineOptions {
        pool: true,
        pool_poll: Duration::from_millis(100),
        ..options()
    });
    let started = std::time::Instant::now();
    let report = driver.run(()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stopped, not timed out"
    );
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    stop.cancel();
    let served = serving.await.unwrap().unwrap();
    assert_eq!(
        (served.claimed, served.recorded),
        (1, 1),
        "the worker ran the attempt and recorded how it ended"
    );
    let run_id = report.run_id;
    let attempts = store.attempts(&run_id).await.unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "a budget stop is not retried: {attempts:?}"
    );
    let a = &attempts[0];
    assert_eq!(
        (a.node_id.as_str(), a.attempt, a.status.as_str()),
        ("fix", 1, "failed")
    );
    assert_eq!(
        a.claim_owner.as_deref(),
        Some(owner.as_str()),
        "the worker's"
    );
    assert_eq!(a.error.as_deref(), Some(fix_budget_error(&run_id).as_str()));
    // What the worker reported before the stop is what the attempt spent.
    assert_eq!(
        (a.usage.input_tokens, a.usage.output_tokens),
        (Some(130_000), Some(1000))
    );
    // The worker ended the CLI (and its `sleep`).
    assert_cli_gone(dir.path()).await;
    drop((driver, store));
    schema.drop().await;
}
