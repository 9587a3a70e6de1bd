//! Per-node overhead on PostgreSQL next to SQLite and next to the bare commit of each, measured in
//! the same run: `cargo bench --bench postgres`.
//!
//! A sequence of N static tasks (no work, so what is measured is the engine: render, plan, one
//! committed batch per output, re-render) runs on a `PostgresStore` in a fresh schema of the test
//! server (`SMITHERS_TEST_POSTGRES`, by default postgres://postgres@127.0.0.1:5432/test) and on a
//! SQLite file with `synchronous=FULL`. The floors are one minimal committed transaction (one
//! INSERT) on one connection of the same server, and on a SQLite file with the same settings.
//! With no server reachable it says so and exits 0.

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
    });
}
