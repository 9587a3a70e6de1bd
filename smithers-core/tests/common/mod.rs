//! Shared helpers for the engine behaviour tests: a store in a temp dir, an event recorder, a
//! hand-written `Output` type (the derive lives in the facade), and row queries.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use smithers_core::clock::{Clock, SystemClock};
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::events::Event;
use smithers_core::output::{Column, ColumnKind, Output};
use smithers_core::store::{Durability, SqliteStore, Store};
use smithers_core::{Ctx, Node};

mod repo;
#[allow(unused_imports)] // not every test binary uses the repository helpers
pub use repo::*;

/// A small output: a number and a note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Num {
    pub n: i64,
    pub note: Option<String>,
}

impl Output for Num {
    const TABLE: &'static str = "num";
    const COLUMNS: &'static [Column] = &[
        Column {
            name: "n",
            kind: ColumnKind::Integer,
            nullable: false,
            rust_type: "i64",
        },
        Column {
            name: "note",
            kind: ColumnKind::Text,
            nullable: true,
            rust_type: "Option<String>",
        },
    ];
}

pub fn num(n: i64) -> Num {
    Num { n, note: None }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub db: std::path::PathBuf,
    pub store: Arc<dyn Store>,
    pub events: Arc<Mutex<Vec<Event>>>,
    /// The clock of the stores and engines this harness makes.
    pub clock: Arc<dyn Clock>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A harness whose stores and engines read `clock` (a `TestClock` to move time by hand).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("smithers.db");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&db, Durability::Normal)
                .unwrap()
                .with_clock(clock.clone()),
        );
        Harness {
            dir,
            db,
            store,
            events: Arc::default(),
            clock,
        }
    }

    pub fn engine<I>(&self, f: impl Fn(&Ctx<I>) -> Node + Send + Sync + 'static) -> Engine<I>
    where
        I: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.engine_with(EngineOptions::default(), f)
    }

    /// An engine with these options, recording events into `self.events`.
    pub fn engine_with<I>(
        &self,
        options: EngineOptions,
        f: impl Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
    ) -> Engine<I>
    where
        I: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let events = self.events.clone();
        // Step snapshots cover the test's scratch directory unless a test names a repository,
        // never the repository the tests run in.
        let workdir = options
            .workdir
            .clone()
            .or_else(|| Some(self.dir.path().to_path_buf()));
        Engine::new(self.store.clone(), f).with_options(EngineOptions {
            workdir,
            on_event: Some(Arc::new(move |e: &Event| {
                events.lock().unwrap().push(e.clone())
            })),
            clock: self.clock.clone(),
            ..options
        })
    }

    /// A second store on the same database file, as a new process would open it.
    pub fn reopen(&self) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&self.db, Durability::Normal)
                .unwrap()
                .with_clock(self.clock.clone()),
        )
    }

    /// Node events only (`node_started:a@0`...), from the database.
    pub fn node_log(&self, run_id: &str) -> Vec<String> {
        self.event_log(run_id)
            .into_iter()
            .filter(|e| e.starts_with("node_"))
            .collect()
    }

    /// `(iteration, attempt, status, error)` of every attempt of a node, in order.
    pub fn attempts(&self, run_id: &str, node: &str) -> Vec<(u32, u32, String, Option<String>)> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT iteration, attempt, status, error FROM _smithers_attempts WHERE run_id = ?1 AND node_id = ?2 ORDER BY ord, iteration, attempt")
            .unwrap();
        st.query_map([run_id, node], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Event payloads of one kind, as JSON.
    pub fn event_payloads(&self, run_id: &str, kind: &str) -> Vec<serde_json::Value> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT payload FROM _smithers_events WHERE run_id = ?1 AND kind = ?2 ORDER BY seq",
            )
            .unwrap();
        st.query_map([run_id, kind], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|s| serde_json::from_str(&s.unwrap()).unwrap())
            .collect()
    }

    /// A key of the `state` table.
    pub fn state(&self, key: &str) -> Option<String> {
        self.conn()
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .ok()
    }

    /// A single integer from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Opens a plain connection for assertions on persisted rows.
    pub fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }

    /// `(node_id, iteration, n)` of every row of the `num` table, in insertion order.
    pub fn num_rows(&self, run_id: &str) -> Vec<(String, u32, i64)> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT node_id, iteration, n FROM num WHERE run_id = ?1 ORDER BY rowid")
            .unwrap();
        st.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Event kinds (`node_started:a`...) of a run, from the database.
    pub fn event_log(&self, run_id: &str) -> Vec<String> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT kind, COALESCE(node_id, ''), COALESCE(iteration, -1) FROM _smithers_events WHERE run_id = ?1 ORDER BY seq")
            .unwrap();
        st.query_map([run_id], |r| {
            let (k, n, i): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok(if n.is_empty() {
                k
            } else {
                format!("{k}:{n}@{i}")
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// `(status, attempts)` of a node.
    pub fn node_row(
        &self,
        run_id: &str,
        node: &str,
        it: u32,
    ) -> Option<(String, u32, Option<String>)> {
        let c = self.conn();
        c.query_row(
            "SELECT status, attempts, last_error FROM _smithers_nodes WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            rusqlite::params![run_id, node, it],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()
    }

    pub fn run_status(&self, run_id: &str) -> (String, Option<String>) {
        self.conn()
            .query_row(
                "SELECT status, error FROM _smithers_runs WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    pub fn integrity_ok(&self) {
        let s: String = self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(s, "ok");
    }
}

/// Counts tasks inside a section at once and remembers the highest count.
#[derive(Clone, Default)]
pub struct HighWater {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl HighWater {
    /// Enters the section until the guard drops.
    pub fn enter(&self) -> HighWaterGuard {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        HighWaterGuard(self.now.clone())
    }

    /// The highest number of tasks seen inside at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// Leaves a [`HighWater`] section on drop.
pub struct HighWaterGuard(Arc<AtomicUsize>);

impl Drop for HighWaterGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The most attempts in flight at once according to a node event log.
pub fn max_in_flight(log: &[String]) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for e in log {
        if e.starts_with("node_started:") {
            now += 1;
            max = max.max(now);
        } else if e.starts_with("node_finished:")
            || e.starts_with("node_failed:")
            || e.starts_with("node_retrying:")
        {
            now = now.saturating_sub(1);
        }
    }
    max
}

/// Counts executions of a task body.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// Adds one and returns the new count.
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The count.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// `one of `a`, `b`, ...`: the names a stored-name column may hold, as the error lists them.
pub fn one_of(names: impl Iterator<Item = &'static str>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    format!("one of {}", names.join(", "))
}

/// The error of a stored-name column (`table.column`) holding `value`, none of `names`.
pub fn not_a_stored_name(
    column: &str,
    value: &str,
    names: impl Iterator<Item = &'static str>,
) -> String {
    format!(
        "`{column}` holds `{value}`, which is not {}; the database was edited or is damaged: \
         correct the value or restore the database from a copy",
        one_of(names)
    )
}

/// Writes the runs `good` and `r` of workflow `w`, each with input `{"topic": <run>}` and its
/// node `a` finished, and what `more` adds to each run's batch.
pub async fn good_and_r(store: &dyn Store, more: impl Fn(&mut smithers_core::store::WriteBatch)) {
    use smithers_core::store::{lease_owner, NewRun, NodeRecord, NodeStatus, Write, WriteBatch};
    for run_id in ["good", "r"] {
        store
            .create_run(NewRun {
                run_id: run_id.into(),
                workflow: "w".into(),
                input: serde_json::json!({"topic": run_id}),
                owner: lease_owner(),
                lease_ttl: std::time::Duration::from_secs(30),
            })
            .await
            .unwrap();
        let mut b = WriteBatch::new(run_id);
        b.push(Write::Node(NodeRecord {
            node_id: "a".into(),
            iteration: 0,
            status: NodeStatus::Finished,
            attempts: 1,
            output_table: None,
            loop_id: None,
            last_error: None,
        }));
        more(&mut b);
        store.write(b).await.unwrap();
    }
}

/// Writes the run `r` of workflow `w` with an approval requested at node `gate`: the rows the
/// stored-time tests damage (`created_at` to `yesterday`, `decided_at` to
/// `2026-11-25 06:08:03`) before [`check_bad_times`].
pub async fn run_r_with_approval(store: &dyn Store) {
    use smithers_core::store::{lease_owner, NewRun, Write, WriteBatch};
    store
        .create_run(NewRun {
            run_id: "r".into(),
            workflow: "w".into(),
            input: serde_json::Value::Null,
            owner: lease_owner(),
            lease_ttl: std::time::Duration::from_secs(30),
        })
        .await
        .unwrap();
    let mut b = WriteBatch::new("r");
    b.push(Write::ApprovalRequest {
        node_id: "gate".into(),
        iteration: 0,
    });
    store.write(b).await.unwrap();
}

/// Reading run `r` and its approvals, damaged as [`run_r_with_approval`] says, fails with an
/// error naming the table, column and value.
pub async fn check_bad_times(store: &dyn Store) {
    let runs = store.run("r").await.unwrap_err();
    let approvals = store.approvals("r").await.unwrap_err();
    for (e, expected) in [
        (&runs, "`_smithers_runs.created_at` holds `yesterday`, which is not an RFC 3339 UTC timestamp"),
        (&approvals, "`_smithers_approvals.decided_at` holds `2026-11-25 06:08:03`, which is not an RFC 3339 UTC timestamp"),
    ] {
        assert_eq!(e.code(), "E_INVALID_RECORD", "{e}");
        assert!(e.to_string().starts_with(expected), "{e}");
        assert!(e.to_string().contains("the database was edited or is damaged"), "{e}");
    }
}

/// Reading run `r` of [`good_and_r`] with its status set to `done` and its node's to `ok` fails
/// with errors naming each. Returns the run's error.
pub async fn check_bad_statuses(store: &dyn Store) -> smithers_core::Error {
    use smithers_core::store::{NodeStatus, RunStatus};
    let run_err = store.run("r").await.unwrap_err();
    assert_eq!(run_err.code(), "E_INVALID_RECORD", "{run_err}");
    assert_eq!(
        run_err.to_string(),
        not_a_stored_name(
            "_smithers_runs.status",
            "done",
            RunStatus::ALL.iter().map(|s| s.as_str())
        )
    );
    let nodes_err = store.nodes("r").await.unwrap_err();
    assert_eq!(nodes_err.code(), "E_INVALID_RECORD", "{nodes_err}");
    assert_eq!(
        nodes_err.to_string(),
        not_a_stored_name(
            "_smithers_nodes.status",
            "ok",
            NodeStatus::ALL.iter().map(|s| s.as_str())
        )
    );
    run_err
}
