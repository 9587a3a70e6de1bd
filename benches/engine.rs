//! Engine overhead benchmark: `cargo bench --bench engine`.
//!
//! Everything runs with FULL durability against a real SQLite file in a temp dir, and is set
//! against the bare SQLite commit floor measured in the same run (one insert per transaction,
//! WAL, `synchronous=FULL`), so the ratios mean something on a loaded machine. It prints:
//! - per-node cost of a sequence of N static tasks (N from `SMITHERS_BENCH_N`, default
//!   `100,1000,10000,100000`) and its ratio to the floor and to the smallest N. A short case
//!   (N <= 1000) is several runs, each on a fresh database right after a floor of as many
//!   commits on a fresh database (medians of both); a long one is set against floors just
//!   before and after it;
//! - the same sequence of 1 000 with `synchronous=OFF` beside a bare insert with it: the CPU
//!   part of a node's cost, with no fsync;
//! - a Ralph loop (`SMITHERS_BENCH_RALPH` iterations, default 10 000): cost and commits per
//!   iteration;
//! - a Parallel of `SMITHERS_BENCH_PARALLEL` computed tasks (default 10 000) with
//!   `max_concurrency` 64;
//! - WAL pages written per output commit (frames a sequence adds to the WAL, per commit);
//! - peak RSS (`VmHWM`) after the largest sequence;
//! - resuming a run with `SMITHERS_BENCH_RESUME` finished nodes (default 100 000): load,
//!   render, plan, run the one node left.
//!
//! A size of 0 skips that case. Static tasks do no work, so what is measured is the engine.

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

fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    open_with(dir, Durability::Full)
}

fn open_with(dir: &tempfile::TempDir, durability: Durability) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(dir.path().join("bench.db"), durability).expect("open store"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env_sizes(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(s) => s
            .split(',')
            .map(|p| {
                p.trim().parse::<usize>().unwrap_or_else(|e| {
                    panic!("{name}={s:?}: `{p}` is not a count ({e}); give e.g. 100,1000")
                })
            })
            .filter(|&n| n > 0)
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn env_size(name: &str, default: usize) -> usize {
    env_sizes(name, &[default]).first().copied().unwrap_or(0)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Peak resident set of this process (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The floor: one row inserted per transaction, WAL, `synchronous=FULL`, same file system.
fn commit_floor(commits: usize) -> Duration {
    commit_floor_with(commits, "FULL")
}

fn commit_floor_with(commits: usize, synchronous: &str) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = rusqlite::Connection::open(dir.path().join("floor.db")).expect("open floor db");
    c.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    c.pragma_update(None, "synchronous", synchronous)
        .expect("synchronous");
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .expect("create");
    let mut st = c.prepare("INSERT INTO t (v) VALUES (?1)").expect("prepare");
    let t = Instant::now();
    for i in 0..commits {
        st.execute([format!("{{\"n\":{i}}}")]).expect("insert");
    }
    t.elapsed() / commits as u32
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

/// Per-node cost and commits per node of one run on a fresh database.
async fn bench_sequence(n: usize, durability: Durability) -> (Duration, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with(&dir, durability);
    let engine = Engine::new(store.clone() as Arc<dyn Store>, sequence(n));
    let before = store.commits();
    let t = Instant::now();
    let r = engine.run(()).await.expect("run");
    let el = t.elapsed();
    assert_eq!(r.finished_nodes, n);
    (el / n as u32, (store.commits() - before) as f64 / n as f64)
}

/// The page numbers of the frames of the WAL's current generation, in order (a 32-byte header
/// whose salts, bytes 16..24, every frame of the generation repeats at bytes 8..16 of its own
/// 24-byte header; then one page); `None` when frames of an earlier generation follow them (the
/// WAL started over after a checkpoint, so what the run wrote is no longer all there).
fn wal_frames(db: &std::path::Path) -> Option<Vec<u32>> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let bytes = std::fs::read(wal).unwrap_or_default();
    let Some(salts) = bytes.get(16..24) else {
        return Some(Vec::new());
    };
    let frames: Vec<&[u8]> = bytes[32..].chunks_exact(24 + 4096).collect();
    let current: Vec<u32> = frames
        .iter()
        .take_while(|f| &f[8..16] == salts)
        .map(|f| u32::from_be_bytes([f[0], f[1], f[2], f[3]]))
        .collect();
    // Frames of an earlier generation after the current ones: the WAL started over.
    if current.len() < frames.len() {
        return None;
    }
    Some(current)
}

/// WAL pages written per output commit: the frames a sequence of `n` static tasks adds to the
/// WAL, against one of `base` tasks, per commit added, in all and per b-tree (table or index,
/// named through `dbstat`). Each run starts on an empty WAL and must stay under the store's
/// auto-checkpoint (200 pages), so the WAL only grows while it runs; `None` when it did not.
async fn pages_per_commit(base: usize, n: usize) -> Option<(f64, Vec<(String, f64)>)> {
    let mut frames = Vec::new();
    let mut commits = Vec::new();
    let mut names = std::collections::HashMap::new();
    for size in [base, n] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir);
        // The migrations' pages out of the WAL first: the run alone must stay under the
        // store's auto-checkpoint (200 pages), or the WAL starts over while it runs.
        rusqlite::Connection::open(store.path())
            .and_then(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
            .expect("checkpoint");
        let engine = Engine::new(store.clone() as Arc<dyn Store>, sequence(size));
        engine.run(()).await.expect("run");
        let wal = wal_frames(store.path())?;
        // Which b-tree each page belongs to, read while the WAL still holds them.
        let c = rusqlite::Connection::open(store.path()).expect("open for dbstat");
        let mut st = c
            .prepare("SELECT pageno, name FROM dbstat")
            .expect("dbstat");
        let rows = st
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))
            .expect("dbstat rows");
        for row in rows {
            let (page, name) = row.expect("dbstat row");
            names.insert((size, page), name);
        }
        let mut by_tree: std::collections::BTreeMap<String, i64> = Default::default();
        for page in &wal {
            let name = names.get(&(size, *page)).cloned().unwrap_or_else(|| {
                if *page == 1 {
                    "header (page 1)".into()
                } else {
                    "free".into()
                }
            });
            *by_tree.entry(name).or_default() += 1;
        }
        frames.push((wal.len(), by_tree));
        commits.push(store.commits());
    }
    if commits[1] <= commits[0] {
        return None;
    }
    let added = (commits[1] - commits[0]) as f64;
    let total = (frames[1].0 - frames[0].0) as f64 / added;
    let mut per: Vec<(String, f64)> = frames[1]
        .1
        .iter()
        .map(|(name, &count)| {
            let before = frames[0].1.get(name).copied().unwrap_or(0);
            (name.clone(), (count - before) as f64 / added)
        })
        .filter(|(_, p)| *p > 0.05)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some((total, per))
}

/// Per-iteration cost and commits per iteration.
async fn bench_ralph(iterations: u32) -> (Duration, f64) {
    const TICK: Ref<Step> = Ref::new("tick");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let engine = Engine::new(store.clone() as Arc<dyn Store>, move |ctx: &Ctx<()>| {
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
    let before = store.commits();
    let t = Instant::now();
    let r = engine.run(()).await.expect("run");
    let el = t.elapsed();
    assert_eq!(r.finished_nodes, iterations as usize);
    let commits = (store.commits() - before) as f64 / f64::from(iterations);
    (el / iterations, commits)
}

/// Per-task cost of a Parallel of computed tasks, at most 64 running at once.
async fn bench_parallel(n: usize) -> (Duration, f64) {
    let ids: Vec<String> = (0..n).map(|i| format!("par-{i}")).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let engine = Engine::new(store.clone() as Arc<dyn Store>, move |_ctx: &Ctx<()>| {
        Workflow::new()
            .name("bench-parallel")
            .child(
                Parallel::new()
                    .max_concurrency(64)
                    .child(ids.iter().enumerate().map(|(i, id)| {
                        Task::<Step>::new()
                            .id(id)
                            .run(move |_t| async move {
                                Ok::<_, smithers_core::TaskError>(Step { n: i as i64 })
                            })
                            .build()
                    }))
                    .build(),
            )
            .build()
    });
    let before = store.commits();
    let t = Instant::now();
    let r = engine.run(()).await.expect("run");
    let el = t.elapsed();
    assert_eq!(r.finished_nodes, n);
    let commits = (store.commits() - before) as f64 / n as f64;
    (el / n as u32, commits)
}

/// Resuming a run with `n` finished nodes and one left: load, render, plan, run the last one.
async fn bench_resume(n: usize) -> Duration {
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
        open(&dir) as Arc<dyn Store>,
        make(ids.clone(), gate.clone()),
    );
    let r = first.run(()).await.expect("first run");
    assert_eq!(r.finished_nodes, n);
    drop(first);
    std::fs::write(&gate, b"open").expect("gate");
    let engine = Engine::new(open(&dir) as Arc<dyn Store>, make(ids, gate));
    let t = Instant::now();
    let r = engine.resume(None).await.expect("resume");
    let el = t.elapsed();
    assert_eq!(r.finished_nodes, n + 1);
    el
}

/// The floor next to a case (fsync latency on a shared machine moves with everyone else's
/// writes, so a floor taken once is not comparable).
struct Floors(Vec<(String, Duration, Duration)>);

enum Floor {
    /// Measured just before a long case; `record` measures it just after too.
    Around(Duration),
    /// The median of floors measured just before each of a short case's runs.
    Interleaved(Duration),
}

impl Floors {
    fn before() -> Duration {
        commit_floor(300)
    }

    fn record(&mut self, case: String, per: Duration, floor: Floor) {
        let floor = match floor {
            Floor::Around(before) => {
                let after = commit_floor(300);
                let floor = (before + after) / 2;
                println!(
                    "    floor around it {:>9.1} µs/commit ({:.1} before, {:.1} after): {:.2}x floor",
                    us(floor),
                    us(before),
                    us(after),
                    per.as_secs_f64() / floor.as_secs_f64()
                );
                floor
            }
            Floor::Interleaved(floor) => {
                println!(
                    "    floor before each run {:>9.1} µs/commit (median): {:.2}x floor",
                    us(floor),
                    per.as_secs_f64() / floor.as_secs_f64()
                );
                floor
            }
        };
        self.0.push((case, per, floor));
    }
}

fn main() {
    let sizes = env_sizes("SMITHERS_BENCH_N", &[100, 1000, 10_000, 100_000]);
    let ralph = env_size("SMITHERS_BENCH_RALPH", 10_000);
    let parallel = env_size("SMITHERS_BENCH_PARALLEL", 10_000);
    let resume = env_size("SMITHERS_BENCH_RESUME", 100_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        println!("smithers engine overhead (durability FULL; floor = one SQLite insert per commit, WAL, synchronous=FULL)");
        match pages_per_commit(3, 12).await {
            Some((p, per)) => {
                println!("WAL pages per output commit (sequence of 12 against 3 static tasks): {p:.1} (the floor's insert: 1)");
                let per: Vec<String> = per.iter().map(|(n, p)| format!("{n} {p:.2}")).collect();
                println!("    by table or index: {}", per.join(", "));
            }
            None => println!("WAL pages per output commit: not measured (the WAL was checkpointed)"),
        }
        if let Some(&n) = sizes.iter().find(|&&n| n == 1000).or(sizes.first()) {
            // What the engine and SQLite cost in CPU alone: the same sequence with no fsync (first:
            // after the largest sequence the machine is busy with its files for a while).
            let (per, _) = bench_sequence(n, Durability::Off).await;
            let floor = commit_floor_with(1000, "OFF");
            println!(
                "sequence N={n} with synchronous=OFF (no fsync: the CPU part) {:>9.1} µs/node; a bare insert with synchronous=OFF {:.1} µs",
                us(per),
                us(floor)
            );
        }
        let mut floors = Floors(Vec::new());
        let mut seq = Vec::new();
        let mut peak = None;
        for &n in &sizes {
            let reps = match n {
                0..=100 => 11,
                101..=1000 => 5,
                _ => 1,
            };
            let t = Instant::now();
            let (per, commits, floor) = if reps == 1 {
                let before = Floors::before();
                let (per, commits) = bench_sequence(n, Durability::Full).await;
                (per, commits, Floor::Around(before))
            } else {
                // Short runs: a floor of as many commits just before each run, so both sample
                // the same moments of the machine; medians of both.
                let mut runs = Vec::new();
                let mut floor = Vec::new();
                let mut commits = 0.0;
                for _ in 0..reps {
                    floor.push(commit_floor(n.max(100)));
                    let (per, c) = bench_sequence(n, Durability::Full).await;
                    runs.push(per);
                    commits = c;
                }
                (median(runs), commits, Floor::Interleaved(median(floor)))
            };
            seq.push((n, per));
            peak = peak_rss_mib();
            println!(
                "sequence N={n:<7} {:>9.1} µs/node  {commits:.2} commits/node  ({reps} run(s), {:.1} s)",
                us(per),
                t.elapsed().as_secs_f64()
            );
            floors.record(format!("sequence N={n}"), per, floor);
        }
        if let (Some(n), Some(mib)) = (sizes.iter().max(), peak) {
            println!("peak RSS after sequence N={n}: {mib:.1} MiB (VmHWM)");
        }
        if ralph > 0 {
            let before = Floors::before();
            let (per, commits) = bench_ralph(ralph as u32).await;
            println!(
                "ralph {ralph} iterations {:>9.1} µs/iteration  {commits:.2} commits/iteration",
                us(per)
            );
            floors.record(format!("ralph {ralph} iterations"), per, Floor::Around(before));
        }
        if parallel > 0 {
            let before = Floors::before();
            let (per, commits) = bench_parallel(parallel).await;
            println!(
                "parallel {parallel} tasks (max_concurrency 64) {:>9.1} µs/task  {commits:.2} commits/task",
                us(per)
            );
            floors.record(format!("parallel {parallel} tasks"), per, Floor::Around(before));
        }
        if resume > 0 {
            let el = bench_resume(resume).await;
            println!(
                "resume of a run with {resume} finished nodes (load, render, plan, run the last): {:.1} ms",
                el.as_secs_f64() * 1e3
            );
        }
        println!("summary (per node / iteration / task, against the floor measured around each case):");
        let first = seq.first().copied();
        for (case, per, floor) in &floors.0 {
            let vs_first = match (first, case.starts_with("sequence")) {
                (Some((n0, per0)), true) => format!(
                    "   {:.2}x sequence N={n0} per node",
                    per.as_secs_f64() / per0.as_secs_f64()
                ),
                _ => String::new(),
            };
            println!(
                "  {case:<26} {:>9.1} µs  {:>5.2}x floor{vs_first}",
                us(*per),
                per.as_secs_f64() / floor.as_secs_f64()
            );
        }
        if let Some(mib) = peak_rss_mib() {
            println!("peak RSS of the whole run: {mib:.1} MiB (VmHWM)");
        }
    });
}
