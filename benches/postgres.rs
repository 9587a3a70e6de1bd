//! Per-node overhead on PostgreSQL next to SQLite and next to the bare commit of each, measured in
//! the same run: `cargo bench --bench postgres`.
//!
//! A sequence of N static tasks (no work, so what is measured is the engine: render, plan, one
//! committed batch per output, re-render) runs on a `PostgresStore` in a fresh schema of the test
//! server (`SMITHERS_TEST_POSTGRES`, by default postgres://postgres@127.0.0.1:5432/test) and on a
//! SQLite file with `synchronous=FULL`. The floors are one minimal committed transaction (one
//! INSERT) on one connection of the same server, and on a SQLite file with the same settings.
//! With no server reachable it says so and exits 0.
//!
//! Then what limits one primary, for SCALING.md: commits per second of 1 and 8 connections
//! committing at once, with and without a NOTIFY in each transaction; store batches per second
//! of 8 writers on one run (serialised by the run lock) and on 8 runs; and the rows and bytes
//! one output leaves behind, counted after a run of 2000 static tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smithers::__private::{Column, ColumnKind};
use smithers_core::engine::Engine;
use smithers_core::node::{Sequence, Task, Workflow};
use smithers_core::store::conformance::PgSchema;
use smithers_core::store::{Durability, PostgresStore, SqliteStore, Store};
use smithers_core::{Ctx, Output};

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

const NODES: usize = 200;
const REPS: usize = 5;
const COMMITS: usize = 1000;
/// How long each concurrent-commit case runs.
const CONCURRENT_SECS: f64 = 3.0;
/// The run whose rows and bytes are counted.
const FOOTPRINT_NODES: usize = 2000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
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

/// Median wall time per node of a run of `NODES` static tasks on a fresh store from `open`.
async fn per_node<F, Fut>(open: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    let mut samples = Vec::new();
    for _ in 0..REPS {
        let engine = Engine::new(open().await, sequence(NODES));
        let t = Instant::now();
        let r = engine.run(()).await.expect("run");
        samples.push(t.elapsed() / NODES as u32);
        assert_eq!(r.finished_nodes, NODES);
    }
    median(samples)
}

/// Mean time of one `BEGIN; INSERT; COMMIT` on one connection to `url`.
async fn postgres_commit(url: &str) -> Duration {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE bare (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .expect("create");
    let insert = client
        .prepare("INSERT INTO bare (id, v) VALUES ($1, $2)")
        .await
        .expect("prepare");
    let mut client = client;
    let t = Instant::now();
    for i in 0..COMMITS as i64 {
        let tx = client.transaction().await.expect("begin");
        tx.execute(&insert, &[&i, &"x"]).await.expect("insert");
        tx.commit().await.expect("commit");
    }
    t.elapsed() / COMMITS as u32
}

/// Mean time of one `BEGIN IMMEDIATE; INSERT; COMMIT` on a WAL file with synchronous=FULL.
fn sqlite_commit(dir: &tempfile::TempDir) -> Duration {
    let c = rusqlite::Connection::open(dir.path().join("bare.db")).expect("open");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.pragma_update(None, "synchronous", "FULL").expect("full");
    c.execute_batch("CREATE TABLE bare (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .expect("create");
    let t = Instant::now();
    for i in 0..COMMITS as i64 {
        c.execute_batch("BEGIN IMMEDIATE").expect("begin");
        c.prepare_cached("INSERT INTO bare (id, v) VALUES (?1, 'x')")
            .expect("prepare")
            .execute([i])
            .expect("insert");
        c.execute_batch("COMMIT").expect("commit");
    }
    t.elapsed() / COMMITS as u32
}

/// Commits per second of `conns` connections committing at once for `secs`, each transaction one
/// INSERT, and a `pg_notify` when `notify`: group commit lets concurrent commits share a WAL
/// flush; a transaction that notifies holds PostgreSQL's global notify lock through its commit,
/// so notifying commits do not.
async fn concurrent_commits(url: &str, conns: usize, notify: bool, secs: f64) -> f64 {
    let mut tasks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    for c in 0..conns {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let insert = client
                .prepare("INSERT INTO bare_many (v) VALUES ($1)")
                .await
                .expect("prepare");
            let mut n = 0u64;
            while Instant::now() < deadline {
                let tx = client.transaction().await.expect("begin");
                tx.execute(&insert, &[&(c as i64)]).await.expect("insert");
                if notify {
                    tx.execute("SELECT pg_notify('smithers_bench', '')", &[])
                        .await
                        .expect("notify");
                }
                tx.commit().await.expect("commit");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("committer");
    }
    total as f64 / secs
}

/// Batches per second that `writers` tasks commit through one `PostgresStore`, each batch an
/// event and a node row, all on one run (`runs` = 1: serialised by the run lock) or spread
/// over `runs` runs.
async fn store_batches(store: &Arc<dyn Store>, writers: usize, runs: usize, secs: f64) -> f64 {
    use smithers_core::events::{Event, EventKind};
    use smithers_core::model::{NodeStatus, Timestamp};
    use smithers_core::store::{NewRun, NodeRecord, Write, WriteBatch};
    let mut fences = Vec::new();
    for r in 0..runs {
        let run_id = format!("lock-{writers}-{runs}-{r}");
        let fence = store
            .create_run(NewRun {
                run_id: run_id.clone(),
                workflow: "bench".into(),
                input: serde_json::Value::Null,
                owner: "bench:1:x".into(),
                lease_ttl: Duration::from_secs(600),
            })
            .await
            .expect("create run");
        fences.push((run_id, fence));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, (run_id, fence)) = (store.clone(), fences[w % runs].clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < deadline {
                let node = format!("w{w}-{n}");
                let mut b = WriteBatch::new(&run_id).fenced(&fence);
                b.push(Write::Node(NodeRecord {
                    node_id: node.clone(),
                    iteration: 0,
                    status: NodeStatus::Finished,
                    attempts: 1,
                    output_table: None,
                    loop_id: None,
                    last_error: None,
                }));
                b.push(Write::Event(Event::node(
                    &run_id,
                    &node,
                    0,
                    Timestamp::from_millis(0),
                    EventKind::NodeStarted { attempt: 1 },
                )));
                store.write(b).await.expect("batch");
                n += 1;
            }
            n as u64
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    total as f64 / secs
}

/// Rows and bytes (tables and their indexes) per output after one run of `n` static tasks in a
/// fresh schema, and the WAL the server wrote meanwhile (cluster-wide: other sessions' writes
/// count too, so an upper bound).
async fn footprint(n: usize) -> Option<(Duration, Vec<(String, i64, i64)>, i64)> {
    let schema = PgSchema::create("bench_postgres_footprint").await?;
    let store: Arc<dyn Store> =
        Arc::new(PostgresStore::connect(&schema.url).await.expect("connect"));
    let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let before: String = client
        .query_one("SELECT pg_current_wal_lsn()::TEXT", &[])
        .await
        .expect("lsn")
        .get(0);
    let t = Instant::now();
    let r = Engine::new(store, sequence(n)).run(()).await.expect("run");
    let took = t.elapsed() / n as u32;
    assert_eq!(r.finished_nodes, n);
    let wal: i64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::TEXT::pg_lsn)::BIGINT",
            &[&before],
        )
        .await
        .expect("wal")
        .get(0);
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = current_schema() ORDER BY table_name",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rows = Vec::new();
    for t in tables {
        let row = client
            .query_one(
                &format!("SELECT COUNT(*), pg_total_relation_size('\"{t}\"') FROM \"{t}\""),
                &[],
            )
            .await
            .expect("count");
        let (count, bytes): (i64, i64) = (row.get(0), row.get(1));
        if count > 0 {
            rows.push((t, count, bytes));
        }
    }
    drop(client);
    schema.drop().await;
    Some((took, rows, wal))
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let Some(floor_schema) = PgSchema::create("bench_postgres").await else {
            return;
        };
        let pg_floor = postgres_commit(&floor_schema.url).await;
        floor_schema.drop().await;

        let schemas = std::sync::Mutex::new(Vec::new());
        let pg = per_node(|| async {
            let s = PgSchema::create("bench_postgres").await.expect("a schema");
            let store: Arc<dyn Store> =
                Arc::new(PostgresStore::connect(&s.url).await.expect("connect"));
            schemas.lock().expect("schemas").push(s);
            store
        })
        .await;
        for s in schemas.into_inner().expect("schemas") {
            s.drop().await;
        }

        let dirs = std::sync::Mutex::new(Vec::new());
        let sqlite = per_node(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let store: Arc<dyn Store> = Arc::new(
                SqliteStore::open(dir.path().join("bench.db"), Durability::Full).expect("open"),
            );
            dirs.lock().expect("dirs").push(dir);
            store
        })
        .await;
        let floor_dir = tempfile::tempdir().expect("tempdir");
        let sqlite_floor = sqlite_commit(&floor_dir);

        println!(
            "per-node overhead, sequence of {NODES} static tasks (median of {REPS} runs); floors: mean of {COMMITS} commits"
        );
        println!(
            "PostgreSQL  {:>8.1} µs/node   bare commit {:>7.1} µs   ratio {:.2}x",
            micros(pg),
            micros(pg_floor),
            pg.as_secs_f64() / pg_floor.as_secs_f64()
        );
        println!(
            "SQLite FULL {:>8.1} µs/node   bare commit {:>7.1} µs   ratio {:.2}x",
            micros(sqlite),
            micros(sqlite_floor),
            sqlite.as_secs_f64() / sqlite_floor.as_secs_f64()
        );
        println!(
            "PostgreSQL / SQLite per node: {:.2}x",
            pg.as_secs_f64() / sqlite.as_secs_f64()
        );

        // What limits one primary: concurrent commits, with and without NOTIFY, and the run lock.
        let many = PgSchema::create("bench_postgres_many").await.expect("a schema");
        {
            let (client, conn) = tokio_postgres::connect(&many.url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client
                .batch_execute(
                    "CREATE TABLE bare_many (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v BIGINT NOT NULL)",
                )
                .await
                .expect("create");
        }
        println!("commits per second of one server (bare INSERT per transaction, {CONCURRENT_SECS} s each)");
        for (conns, notify) in [(1, false), (8, false), (1, true), (8, true)] {
            let rate = concurrent_commits(&many.url, conns, notify, CONCURRENT_SECS).await;
            println!(
                "  {conns} connection(s){:<14} {rate:>8.0} commits/s",
                if notify { ", with NOTIFY" } else { "" }
            );
        }
        many.drop().await;

        let lock = PgSchema::create("bench_postgres_run_lock").await.expect("a schema");
        let store: Arc<dyn Store> =
            Arc::new(PostgresStore::connect(&lock.url).await.expect("connect"));
        println!("store batches per second (a node row and an event each, 8 writers, {CONCURRENT_SECS} s each)");
        for runs in [1, 8] {
            let rate = store_batches(&store, 8, runs, CONCURRENT_SECS).await;
            println!(
                "  {} {rate:>8.0} batches/s",
                if runs == 1 {
                    "all on one run (the run lock serialises them):"
                } else {
                    "spread over 8 runs:                           "
                }
            );
        }
        drop(store);
        lock.drop().await;

        if let Some((took, rows, wal)) = footprint(FOOTPRINT_NODES).await {
            println!(
                "footprint of one run of {FOOTPRINT_NODES} static tasks ({:.1} µs/node): rows and bytes per output, tables with their indexes",
                micros(took)
            );
            let (mut all_rows, mut all_bytes) = (0, 0);
            for (table, count, bytes) in &rows {
                all_rows += count;
                all_bytes += bytes;
                println!(
                    "  {table:<26} {:>6.2} rows {:>8.0} B",
                    *count as f64 / FOOTPRINT_NODES as f64,
                    *bytes as f64 / FOOTPRINT_NODES as f64
                );
            }
            println!(
                "  {:<26} {:>6.2} rows {:>8.0} B;  WAL written meanwhile (whole server, an upper bound): {:.0} B/output",
                "all",
                all_rows as f64 / FOOTPRINT_NODES as f64,
                all_bytes as f64 / FOOTPRINT_NODES as f64,
                wal as f64 / FOOTPRINT_NODES as f64
            );
        }
    });
}
