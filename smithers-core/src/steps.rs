//! The Steps API of seed 000 over the store: start, complete, fail and query steps of a run.
//!
//! The seed's contract holds: the methods are synchronous, rows are [`StepRecord`]s (snake_case
//! fields in JSON) and times are ISO 8601 strings. Each method has an `_async` twin for async
//! code; the synchronous ones block the calling thread on the store's reply, which is fine from
//! plain code and from a task body on tokio's multi-threaded runtime (the SQLite store answers
//! from its own thread).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use smithers_core::store::{Durability, SqliteStore, Store};
//! # use smithers_core::steps::{Steps, StepVcsInfo};
//! # fn main() -> smithers_core::Result<()> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open(".smithers/smithers.db", Durability::Full)?);
//! let steps = Steps::new(store, "my-run");
//! let id = steps.start(Some("implement-feature"))?;
//! steps.complete(id, StepVcsInfo { snapshot_before: Some("abc123".into()), ..Default::default() })?;
//! assert_eq!(steps.by_run("my-run")?.last().map(|s| s.status.as_str()), Some("completed"));
//! # Ok(()) }
//! ```

use std::sync::Arc;

use crate::error::Result;
use crate::model::GroupStatus;
use crate::store::{StepKey, StepRecord, StepVcs, Store, Write, WriteBatch};

/// What [`Steps::complete`] records about the working copy (seed 000's `vcsInfo`). In a jj
/// repository these are commit ids, never change ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepVcsInfo {
    /// The working copy before the step.
    pub snapshot_before: Option<String>,
    /// The working copy after it.
    pub snapshot_after: Option<String>,
    /// The commit the step made, if any.
    pub commit_created: Option<String>,
}

/// The steps of one run.
#[derive(Clone)]
pub struct Steps {
    store: Arc<dyn Store>,
    run_id: String,
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steps")
            .field("run_id", &self.run_id)
            .finish()
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

impl Steps {
    /// The steps of `run_id` in `store`.
    pub fn new(store: Arc<dyn Store>, run_id: impl Into<String>) -> Self {
        Steps {
            store,
            run_id: run_id.into(),
        }
    }

    /// The run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Starts a step in the run's current phase; returns its id (the next of the run).
    pub fn start(&self, name: Option<&str>) -> Result<i64> {
        block(self.start_async(name))
    }

    /// [`Steps::start`] for async code.
    pub async fn start_async(&self, name: Option<&str>) -> Result<i64> {
        self.store.start_step(&self.run_id, name).await
    }

    /// Completes a step, recording what it did to the working copy.
    pub fn complete(&self, id: i64, vcs: StepVcsInfo) -> Result<()> {
        block(self.complete_async(id, vcs))
    }

    /// [`Steps::complete`] for async code.
    pub async fn complete_async(&self, id: i64, vcs: StepVcsInfo) -> Result<()> {
        self.end(id, GroupStatus::Completed, Some(vcs)).await
    }

    /// Marks a step failed.
    pub fn fail(&self, id: i64) -> Result<()> {
        block(self.fail_async(id))
    }

    /// [`Steps::fail`] for async code.
    pub async fn fail_async(&self, id: i64) -> Result<()> {
        self.end(id, GroupStatus::Failed, None).await
    }

    async fn end(&self, id: i64, status: GroupStatus, vcs: Option<StepVcsInfo>) -> Result<()> {
        // An unknown id is an error naming it, before anything is written.
        self.store.step(&self.run_id, id).await?;
        let mut b = WriteBatch::new(&self.run_id);
        if let Some(v) = vcs.filter(|v| *v != StepVcsInfo::default()) {
            b.push(Write::StepVcs(StepVcs {
                step: StepKey::Id(id),
                repo: String::new(),
                backend: String::new(),
                before: v.snapshot_before.map(|c| (c, None)),
                after: v.snapshot_after.map(|c| (c, None)),
                commit_created: v.commit_created,
            }));
        }
        b.push(Write::StepEnd {
            step_id: id,
            status,
        });
        self.store.write(b).await
    }

    /// The run's current step: the latest active one that is running.
    pub fn current(&self) -> Result<Option<StepRecord>> {
        block(self.current_async())
    }

    /// [`Steps::current`] for async code.
    pub async fn current_async(&self) -> Result<Option<StepRecord>> {
        Ok(self
            .store
            .steps(&self.run_id)
            .await?
            .into_iter()
            .rev()
            .find(|s| s.active && s.status == "running"))
    }

    /// The steps of a phase (by its `phase_id`), active or not.
    pub fn list(&self, phase_id: i64) -> Result<Vec<StepRecord>> {
        block(self.list_async(phase_id))
    }

    /// [`Steps::list`] for async code.
    pub async fn list_async(&self, phase_id: i64) -> Result<Vec<StepRecord>> {
        Ok(self
            .store
            .steps(&self.run_id)
            .await?
            .into_iter()
            .filter(|s| s.phase_id == Some(phase_id))
            .collect())
    }

    /// Every step of a run (seed 000's `getByExecution`), by id.
    pub fn by_run(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        block(self.by_run_async(run_id))
    }

    /// [`Steps::by_run`] for async code.
    pub async fn by_run_async(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        if self.store.run(run_id).await?.is_none() {
            return Err(crate::Error::RunNotFound(run_id.to_owned()));
        }
        self.store.steps(run_id).await
    }
}
