//! Testing workflows: run one to its end on a throwaway SQLite database and assert on what it
//! persisted (like Smithers' `renderWorkflow`).
//!
//! [`WorkflowTest`] owns a temporary directory with the database; [`WorkflowTest::run`] drives a
//! run to its end and returns a [`TestRun`] to read outputs, node states, events and rows from.
//! Agent tasks get a [`ScriptedAgent`](crate::agents::ScriptedAgent): it answers from a script,
//! so the test runs offline, and records every prompt it was sent.
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::agents::ScriptedAgent;
//! use smithers::testing::WorkflowTest;
//! use smithers::testing::RunStatus;
//!
//! #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
//! struct Review { approved: bool }
//! const REVIEW: Ref<Review> = Ref::new("review");
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let reviewer = ScriptedAgent::new()
//!     .reply(r#"{"approved": false}"#)
//!     .reply(r#"{"approved": true}"#);
//! let agent = reviewer.clone();
//! let test = WorkflowTest::new(move |ctx: &Ctx<()>| {
//!     let approved = ctx.latest(REVIEW).is_some_and(|r| r.approved);
//!     workflow! {
//!         <Workflow name="review">
//!             <Ralph until={approved} max_iterations=3>
//!                 <Task id=REVIEW agent={agent.clone()}> "Review the change." </Task>
//!             </Ralph>
//!         </Workflow>
//!     }
//! });
//! let run = test.run(()).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Finished);
//! assert_eq!(run.outputs(REVIEW).await, vec![(0, Review { approved: false }), (1, Review { approved: true })]);
//! assert_eq!(run.query_i64("SELECT COUNT(*) FROM review WHERE approved = 1"), 1);
//! assert!(reviewer.requests()[0].prompt.starts_with("Review the change."));
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use smithers_core::engine::{Engine, EngineOptions, RunReport};
use smithers_core::store::{Durability, SqliteStore, Store};
use smithers_core::{Ctx, Node, NodeRef, Output};

pub use smithers_core::store::{NodeRecord, NodeStatus, RunStatus};

/// A workflow bound to a temporary database, ready to run in a test. The directory is removed
/// when the test and every [`TestRun`] from it are dropped.
///
/// Git snapshots of agents' working copies are off (a test's agents edit nothing); change
/// that, or anything else, with [`WorkflowTest::options`].
pub struct WorkflowTest<I> {
    /// Shared with every [`TestRun`], so a run's rows stay readable after the test is dropped.
    dir: Arc<tempfile::TempDir>,
    store: Arc<dyn Store>,
    engine: Engine<I>,
}

impl<I> WorkflowTest<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The workflow on a fresh database in a new temporary directory (removed on drop).
    ///
    /// # Panics
    /// If the temporary directory or the database cannot be created (a broken test machine,
    /// not a workflow error).
    pub fn new(workflow: impl Fn(&Ctx<I>) -> Node + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory for the test");
        let db = dir.path().join("smithers.db");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&db, Durability::Off)
                .unwrap_or_else(|e| panic!("cannot create the test database: {e}")),
        );
        let engine = Engine::new(store.clone(), workflow).with_options(test_options());
        WorkflowTest {
            dir: Arc::new(dir),
            store,
            engine,
        }
    }

    /// Another workflow on this test's database: a changed version of the workflow (does it
    /// resume the old one's runs? what does a changed output type do?) or a second workflow
    /// beside it. It starts with the options [`WorkflowTest::new`] sets, not this one's.
    pub fn with_workflow<J>(
        &self,
        workflow: impl Fn(&Ctx<J>) -> Node + Send + Sync + 'static,
    ) -> WorkflowTest<J>
    where
        J: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        WorkflowTest {
            dir: self.dir.clone(),
            store: self.store.clone(),
            engine: Engine::new(self.store.clone(), workflow).with_options(test_options()),
        }
    }

    /// Changes the engine options (concurrency, approvals, event listener...).
    #[must_use]
    pub fn options(mut self, f: impl FnOnce(&mut EngineOptions)) -> Self {
        f(self.engine.options_mut());
        self
    }

    /// Starts a run with this input and drives it until it stops (finished, failed,
    /// waiting-approval, cancelled). A failed run is not an `Err`: check
    /// [`TestRun::status`] and [`TestRun::error`]. `Err` is an error of the engine or the
    /// store (a definition error found before the run started, a broken database).
    pub async fn run(&self, input: I) -> smithers_core::Result<TestRun> {
        let report = self.engine.run(input).await?;
        Ok(self.test_run(report))
    }

    /// Resumes a run (after an approval, or a run stopped on purpose).
    pub async fn resume(&self, run_id: &str) -> smithers_core::Result<TestRun> {
        let report = self.engine.resume(Some(run_id)).await?;
        Ok(self.test_run(report))
    }

    /// The store, for decisions (`decide_approval`) or reads this helper has no method for.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("smithers.db")
    }

    fn test_run(&self, report: RunReport) -> TestRun {
        TestRun {
            report,
            store: self.store.clone(),
            db: self.db_path(),
            _dir: self.dir.clone(),
        }
    }
}

/// The engine options of a test: no git snapshots (a test's agents edit nothing).
fn test_options() -> EngineOptions {
    EngineOptions {
        vcs_snapshots: false,
        ..EngineOptions::default()
    }
}

/// A run that stopped, and read access to what it persisted.
pub struct TestRun {
    report: RunReport,
    store: Arc<dyn Store>,
    db: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl TestRun {
    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.report.run_id
    }

    /// How the run ended.
    pub fn status(&self) -> RunStatus {
        self.report.status
    }

    /// Why it failed (or what it waits for), as the run recorded it.
    pub fn error(&self) -> Option<&str> {
        self.report.error.as_deref()
    }

    /// The engine's report.
    pub fn report(&self) -> &RunReport {
        &self.report
    }

    /// Every output of `node`, by iteration, lowest first, read back as `T`.
    ///
    /// # Panics
    /// If the database cannot be read or a stored output does not deserialise as `T` (the test
    /// asked for the wrong type).
    pub async fn outputs<T: Output>(&self, node: impl NodeRef<T>) -> Vec<(u32, T)> {
        let id = node.node_id().to_owned();
        let loaded = self
            .store
            .load(&self.report.run_id)
            .await
            .unwrap_or_else(|e| panic!("cannot read run `{}`: {e}", self.report.run_id));
        let mut out: Vec<(u32, T)> = loaded
            .outputs
            .into_iter()
            .filter(|(n, _, _)| *n == id)
            .map(|(_, it, v)| {
                let t = serde_json::from_value(v).unwrap_or_else(|e| {
                    panic!(
                        "output of `{id}` (iteration {it}) is not a `{}`: {e}",
                        std::any::type_name::<T>()
                    )
                });
                (it, t)
            })
            .collect();
        out.sort_by_key(|(it, _)| *it);
        out
    }

    /// The output of `node` in its highest iteration, if it has one.
    pub async fn latest<T: Output>(&self, node: impl NodeRef<T>) -> Option<T> {
        self.outputs(node).await.pop().map(|(_, t)| t)
    }

    /// The state of every node, in the order the store lists them.
    pub async fn nodes(&self) -> Vec<NodeRecord> {
        self.store
            .nodes(&self.report.run_id)
            .await
            .unwrap_or_else(|e| panic!("cannot read run `{}`: {e}", self.report.run_id))
    }

    /// The status of `node_id` in `iteration`, if it has a row.
    pub async fn node_status(&self, node_id: &str, iteration: u32) -> Option<NodeStatus> {
        self.nodes()
            .await
            .into_iter()
            .find(|n| n.node_id == node_id && n.iteration == iteration)
            .map(|n| n.status)
    }

    /// The run's events as `kind` or `kind:node@iteration` lines, in order
    /// (`node_started:review@0`).
    pub async fn event_log(&self) -> Vec<String> {
        self.store
            .events(&self.report.run_id, 0)
            .await
            .unwrap_or_else(|e| panic!("cannot read run `{}`: {e}", self.report.run_id))
            .into_iter()
            .map(|r| {
                let e = &r.event;
                let kind = e.kind.name();
                match (&e.node_id, e.iteration) {
                    (Some(n), Some(it)) => format!("{kind}:{n}@{it}"),
                    _ => kind.to_owned(),
                }
            })
            .collect()
    }

    /// Rows of a SQL query over the run's database, each column as JSON (`INTEGER` → number,
    /// `TEXT` → string, `NULL` → null). `?1` is bound to the run id, so
    /// `SELECT diff FROM patch WHERE run_id = ?1 ORDER BY iteration` reads this run's rows.
    ///
    /// # Panics
    /// If the query is not valid SQL for this database (the message names the query).
    pub fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let conn = rusqlite::Connection::open(&self.db)
            .unwrap_or_else(|e| panic!("cannot open `{}`: {e}", self.db.display()));
        let mut st = conn
            .prepare(sql)
            .unwrap_or_else(|e| panic!("query `{sql}` failed: {e}"));
        let n = st.column_count();
        let params: &[&dyn rusqlite::ToSql] = if st.parameter_count() > 0 {
            &[&self.report.run_id]
        } else {
            &[]
        };
        let rows = st
            .query_map(params, |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(v) => Value::from(v),
                            rusqlite::types::ValueRef::Real(v) => Value::from(v),
                            rusqlite::types::ValueRef::Text(t) => {
                                Value::from(String::from_utf8_lossy(t).into_owned())
                            }
                            rusqlite::types::ValueRef::Blob(b) => Value::from(b.to_vec()),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Value>>>()
            })
            .unwrap_or_else(|e| panic!("query `{sql}` failed: {e}"));
        rows.map(|r| r.unwrap_or_else(|e| panic!("query `{sql}` failed: {e}")))
            .collect()
    }

    /// A query's single integer (`SELECT COUNT(*) ...`).
    ///
    /// # Panics
    /// If the query fails or its first value is not an integer.
    pub fn query_i64(&self, sql: &str) -> i64 {
        self.query(sql)
            .first()
            .and_then(|r| r.first())
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("query `{sql}` returned no integer"))
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db
    }
}
