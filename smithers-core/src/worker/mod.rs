//! The `worker`: a long-lived process of one workflow binary that drives the runs of its
//! workflow that nobody drives, and supervises them (DESIGN.md section 9, seed 002).
//!
//! It registers itself in `_smithers_workers` and heartbeats there. Each tick:
//! 1. **claim and execute attempts** (pool mode, PostgreSQL): once it knows its workflow (from
//!    the first run of it it sees), a loop of its own ([`Engine::serve_attempts`]) claims queued
//!    attempts of the workflow's runs, up to [`WorkerOptions::attempts`] at once, executes them
//!    and records their outcomes for the runs' drivers; the runs it drives are driven in pool
//!    mode too (their attempts queued for every worker). At each heartbeat it frees the claims
//!    of workers known dead (their process gone from this host, or their heartbeat expired),
//!    so their attempts run again without waiting for the claims to expire;
//! 2. **take over runs**: an active run of its workflow with no live driver — `queued` (by
//!    `run --detach`, or handed back by a stopping worker) or `running` with an expired lease or
//!    a dead holder — is driven through the ordinary fenced [`Engine::resume`], up to
//!    [`WorkerOptions::concurrency`] runs at once. A takeover from a dead driver is a *restart*,
//!    counted in `_smithers_restarts` under the new lease before anything runs (so the count
//!    survives the worker itself dying with the run, and two workers racing for the same dead
//!    run count it once), spaced by an exponential backoff, and limited: a run whose driver dies
//!    every time is marked failed with an error saying so (the decisions, without I/O, are in
//!    `worker/supervise.rs`).
//!
//! Stopping ([`Worker::run`]'s `stop` token, SIGTERM or Ctrl-C in the binary) takes no new work,
//! hands every driven run back ([`EngineOptions::hand_back`](crate::engine::EngineOptions): the
//! attempts it runs itself interrupted, those queued for workers left to them and to the next
//! driver, the run `queued`, the lease released, so another worker continues at once), gives
//! back the claims of the attempts it executes, and deregisters.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{panic_message, Engine, Restarting, RunReport};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::model::{NodeStatus, RunStatus, Timestamp};
use crate::store::{lease_owner, RunRecord, Store, WorkerRecord, Write, WriteBatch};

mod supervise;

pub use supervise::RestartPolicy;
use supervise::{dead_holders, decide, give_up_error, vacancy, Restart, Vacant};

/// How a worker works.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Runs driven at once at most (`worker --concurrency`).
    pub concurrency: usize,
    /// The wait between ticks when nothing happens (`worker --poll-ms`): a run whose driver died
    /// is taken over within its lease expiry plus this.
    pub poll: Duration,
    /// How often the worker renews its row in the registry; it is stale after three of these.
    pub heartbeat: Duration,
    /// Restarts of runs whose driver keeps dying.
    pub restarts: RestartPolicy,
    /// Pool mode (a store with the attempt queue, PostgreSQL): queued attempts executed at once
    /// at most; 0 executes none.
    pub attempts: usize,
    /// How long a claim on a queued attempt holds unless renewed (every third of it).
    pub claim_ttl: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 4,
            poll: Duration::from_secs(1),
            heartbeat: Duration::from_secs(5),
            restarts: RestartPolicy::default(),
            attempts: 4,
            claim_ttl: Duration::from_secs(30),
        }
    }
}

/// What a worker did, once it stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerReport {
    /// Its id in the registry.
    pub worker_id: String,
    /// Runs it drove until they stopped, with the status they stopped in.
    pub driven: Vec<(String, RunStatus)>,
    /// Runs it marked failed after the restart limit.
    pub failed: Vec<String>,
    /// Runs it was driving when told to stop, handed back `queued`.
    pub handed_back: Vec<String>,
    /// The queued attempts it executed (pool mode).
    pub attempts: crate::engine::PoolReport,
}

/// The end of one drive: the run, and how its drive ended.
type DriveEnd = (String, Result<RunReport>);

/// A worker of one workflow over a store; see the module documentation.
pub struct Worker<I> {
    engine: Engine<I>,
    options: WorkerOptions,
    id: String,
    started_at: Timestamp,
    /// The workflow whose runs it drives, learned from the first run that is its own.
    workflow: Option<String>,
    /// Whether each run seen so far belongs to this worker's workflow.
    ours: HashMap<String, bool>,
    /// Runs driven now, with the token that hands each back.
    driving: HashMap<String, CancellationToken>,
    drives: JoinSet<DriveEnd>,
    report: WorkerReport,
    /// The loop executing queued attempts (pool mode), once started, and how to stop it.
    serving: Option<(
        CancellationToken,
        tokio::task::JoinHandle<Result<crate::engine::PoolReport>>,
    )>,
}

impl<I> Worker<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A worker driving runs with `engine` (its store, workflow and options: lease period,
    /// event listener, prices...). Its id is a fresh lease owner (`host:pid:nonce`).
    pub fn new(engine: Engine<I>, options: WorkerOptions) -> Self {
        let id = lease_owner();
        let started_at = engine.options().clock.now();
        Worker {
            engine,
            options,
            report: WorkerReport {
                worker_id: id.clone(),
                ..WorkerReport::default()
            },
            id,
            started_at,
            workflow: None,
            ours: HashMap::new(),
            driving: HashMap::new(),
            drives: JoinSet::new(),
            serving: None,
        }
    }

    /// Its id in the registry (`_smithers_workers.worker_id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    fn now(&self) -> Timestamp {
        self.engine.options().clock.now()
    }

    /// Registers, then ticks until `stop` is cancelled; then hands back what it drives and
    /// deregisters. Fails only when it cannot register (the database is unreachable); a store
    /// error in a tick is logged and the next tick tries again.
    pub async fn run(mut self, stop: CancellationToken) -> Result<WorkerReport> {
        self.register().await?;
        tracing::info!(
            worker = %self.id,
            concurrency = self.options.concurrency,
            poll_ms = self.options.poll.as_millis() as u64,
            "worker started"
        );
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        while !stop.is_cancelled() {
            if let Err(e) = self.tick().await {
                tracing::warn!(worker = %self.id, error = %e, "worker tick failed; trying again at the next one");
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(end) = self.drives.join_next(), if !self.drives.is_empty() => {
                    self.drive_ended(end).await;
                }
                _ = heartbeat.tick() => {
                    self.heartbeat().await;
                    if let Err(e) = self.free_dead_claims().await {
                        tracing::warn!(worker = %self.id, error = %e, "could not free the claims of dead workers; trying again at the next heartbeat");
                    }
                }
                _ = tokio::time::sleep(self.options.poll) => {}
            }
        }
        self.stop_gracefully().await;
        Ok(self.report)
    }

    /// One tick of the loop.
    async fn tick(&mut self) -> Result<()> {
        // (2) Take over runs nobody drives (which also learns the workflow's name).
        let taken = self.take_over_runs().await;
        // (1) Claim and execute queued attempts of this workflow's runs: a loop of its own,
        //     started once the workflow is known.
        self.serve_attempts();
        taken
    }

    /// Pool mode, at each heartbeat: frees the claims of workers known dead — a process of this
    /// host that is gone (SIGKILL), or a worker whose heartbeat expired — so their attempts run
    /// again within a heartbeat period, not when the claims expire. Fenced: freeing increments
    /// each attempt's claim epoch.
    async fn free_dead_claims(&self) -> Result<()> {
        let Some(workflow) = &self.workflow else {
            return Ok(());
        };
        if !self.store().supports_pool() {
            return Ok(());
        }
        let holders = self.store().claim_holders(workflow).await?;
        let dead = dead_holders(&holders, &self.id, self.now(), crate::store::holder_is_dead);
        if dead.is_empty() {
            return Ok(());
        }
        let owners: Vec<String> = dead.iter().map(|(owner, _)| owner.clone()).collect();
        let freed = self.store().free_claims(workflow, &owners).await?;
        for (owner, why) in &dead {
            tracing::info!(worker = %self.id, dead = %owner, freed, "freed the claims of a worker that is gone: {why}");
        }
        Ok(())
    }

    /// Starts the loop executing queued attempts of this worker's workflow (pool mode), once:
    /// when the store has the attempt queue, the workflow is known and `attempts` is not 0.
    fn serve_attempts(&mut self) {
        let Some(workflow) = &self.workflow else {
            return;
        };
        if self.serving.is_some() || self.options.attempts == 0 || !self.store().supports_pool() {
            return;
        }
        let mut options = crate::engine::PoolOptions::new(workflow.clone(), self.id.clone());
        options.concurrency = self.options.attempts;
        options.claim_ttl = self.options.claim_ttl;
        options.poll = self.options.poll;
        let stop = CancellationToken::new();
        let engine = self.engine.clone();
        let token = stop.clone();
        tracing::info!(worker = %self.id, workflow = %workflow, attempts = self.options.attempts, "executing queued attempts");
        self.serving = Some((
            stop,
            tokio::spawn(async move { engine.serve_attempts(options, token).await }),
        ));
    }

    /// Looks over the active runs and drives those of its workflow that have no live driver,
    /// while it has room.
    async fn take_over_runs(&mut self) -> Result<()> {
        let runs = self.store().active_runs().await?;
        let mut changed = false;
        for run in runs {
            if self.driving.len() >= self.options.concurrency {
                break;
            }
            if self.driving.contains_key(&run.run_id) || !self.is_ours(&run) {
                continue;
            }
            let Some(vacant) = vacancy(&run, self.now(), crate::store::holder_is_dead) else {
                continue;
            };
            let restart = match vacant {
                Vacant::Queued => None,
                Vacant::DriverGone(reason) => match self.may_restart(&run, &reason).await? {
                    Some(restart) => Some(restart),
                    None => continue,
                },
            };
            self.drive(run.run_id, restart);
            changed = true;
        }
        if changed {
            self.heartbeat().await;
        }
        Ok(())
    }

    /// Whether a run of this workflow: its stored input fits the input type and renders a tree
    /// of the run's workflow name. Remembered per run.
    fn is_ours(&mut self, run: &RunRecord) -> bool {
        if let Some(&ours) = self.ours.get(&run.run_id) {
            return ours;
        }
        let ours = self
            .engine
            .workflow_name_for(&run.input)
            .is_some_and(|name| name == run.workflow);
        if ours && self.workflow.is_none() {
            self.workflow = Some(run.workflow.clone());
        }
        self.ours.insert(run.run_id.clone(), ours);
        ours
    }

    /// The supervision of a run whose driver is gone: the restart to record when taking it
    /// over now (under the new lease, [`Engine::restart`]), or `None` while it waits out its
    /// backoff or once it is marked failed after the limit.
    async fn may_restart(&mut self, run: &RunRecord, reason: &str) -> Result<Option<Restarting>> {
        let store = self.store().clone();
        let previous = store.restarts(&run.run_id).await?;
        let progress = store
            .nodes(&run.run_id)
            .await?
            .iter()
            .filter(|n| n.status == NodeStatus::Finished)
            .count() as u32;
        let policy = &self.options.restarts;
        match decide(
            policy,
            previous.as_ref(),
            progress,
            self.now(),
            reason,
            &self.id,
            &run.run_id,
        ) {
            Restart::Now(record) => {
                tracing::info!(worker = %self.id, run_id = %run.run_id, restart = record.restarts, limit = policy.limit, "taking over a run whose driver is gone: {reason}");
                // Seed 002's key for the most recent error: a driver died.
                let note = format!(
                    "run `{}`: {reason}; restarted by worker `{}` (restart {} of at most {})",
                    run.run_id, self.id, record.restarts, policy.limit
                );
                Ok(Some(Restarting {
                    from_epoch: run.lease_epoch,
                    record,
                    note,
                }))
            }
            Restart::Wait(until) => {
                tracing::debug!(worker = %self.id, run_id = %run.run_id, until = %until, "waiting out the restart backoff");
                Ok(None)
            }
            Restart::GiveUp { restarts } => {
                self.give_up(run, restarts, reason).await?;
                Ok(None)
            }
        }
    }

    /// Marks a run failed after the restart limit, holding its lease for the write: attempts
    /// the dead driver left in progress are abandoned, and the run, its `run_failed` event and
    /// the supervisor keys are written in one fenced batch.
    async fn give_up(&mut self, run: &RunRecord, restarts: u32, reason: &str) -> Result<()> {
        let store = self.store().clone();
        let in_progress: Vec<(String, u32)> = store
            .attempts(&run.run_id)
            .await?
            .into_iter()
            .filter(|a| a.status == "in-progress")
            .map(|a| (a.node_id, a.attempt))
            .collect();
        let error = give_up_error(
            &run.run_id,
            restarts,
            self.options.restarts.limit,
            reason,
            &in_progress,
        );
        let fence = match store
            .acquire_lease(&run.run_id, &lease_owner(), self.engine.options().lease_ttl)
            .await
        {
            Ok(f) => f,
            // Another worker or driver got there first: the run is theirs.
            Err(Error::LeaseHeld { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if fence.epoch != run.lease_epoch + 1 {
            // Another worker took the run over (or marked it failed) since it was read here:
            // it decided on a fresher view.
            if let Err(e) = store.release_lease(&run.run_id, &fence).await {
                tracing::warn!(run_id = %run.run_id, error = %e, "could not release a lease taken on a stale view");
            }
            return Ok(());
        }
        let written = async {
            store.reset_for_resume(&run.run_id, &fence).await?;
            let mut b = WriteBatch::new(&run.run_id).fenced(&fence);
            b.push(Write::RunStatus {
                status: RunStatus::Failed,
                error: Some(error.clone()),
            });
            b.push(Write::Event(Event::run(
                &run.run_id,
                self.now(),
                EventKind::RunFailed {
                    error: error.clone(),
                },
            )));
            for (key, value) in [
                ("supervisor.status", "error".to_owned()),
                (
                    "supervisor.summary",
                    format!("Run {} failed: {error}", run.run_id),
                ),
                ("supervisor.last_error", error.clone()),
            ] {
                b.push(Write::State {
                    key: key.into(),
                    value,
                });
            }
            store.write(b).await
        }
        .await;
        if let Err(e) = store.release_lease(&run.run_id, &fence).await {
            tracing::warn!(run_id = %run.run_id, error = %e, "could not release the lease of a run marked failed");
        }
        written?;
        tracing::error!(worker = %self.id, run_id = %run.run_id, "run marked failed: {error}");
        self.report.failed.push(run.run_id.clone());
        Ok(())
    }

    /// Starts driving a run: [`Engine::resume`] (or [`Engine::restart`] for a takeover from a
    /// driver that is gone) on a task of its own, with its own cancel and hand-back tokens.
    fn drive(&mut self, run_id: String, restart: Option<Restarting>) {
        let hand_back = CancellationToken::new();
        let mut engine = self.engine.clone();
        let options = engine.options_mut();
        options.cancel = CancellationToken::new();
        options.hand_back = hand_back.clone();
        self.driving.insert(run_id.clone(), hand_back);
        self.drives.spawn(async move {
            let drive = match restart {
                Some(restart) => AssertUnwindSafe(engine.restart(&run_id, restart).boxed()),
                None => AssertUnwindSafe(engine.resume(Some(&run_id)).boxed()),
            }
            .catch_unwind();
            let result = drive.await.unwrap_or_else(|p| {
                Err(Error::DrivePanicked {
                    run_id: run_id.clone(),
                    message: panic_message(&*p),
                })
            });
            (run_id, result)
        });
    }

    /// A drive ended: the run is no longer driven here.
    async fn drive_ended(&mut self, end: std::result::Result<DriveEnd, tokio::task::JoinError>) {
        let (run_id, result) = match end {
            Ok(end) => end,
            Err(e) => {
                // Drives catch their panics: only an abort at shutdown ends up here.
                tracing::error!(worker = %self.id, error = %e, "a drive task ended abnormally");
                return;
            }
        };
        self.driving.remove(&run_id);
        match result {
            Ok(report) => {
                tracing::info!(worker = %self.id, run_id = %run_id, status = %report.status, "drive ended");
                if report.status == RunStatus::Queued {
                    self.report.handed_back.push(run_id);
                } else {
                    self.report.driven.push((run_id, report.status));
                }
            }
            // Another worker or driver took it first.
            Err(e @ (Error::LeaseHeld { .. } | Error::RunAlreadyDone { .. })) => {
                tracing::debug!(worker = %self.id, run_id = %run_id, error = %e, "run not taken over");
            }
            Err(e) => {
                tracing::warn!(worker = %self.id, run_id = %run_id, error = %e, "drive ended with an error");
            }
        }
        self.heartbeat().await;
    }

    /// Stops taking work, hands back every driven run and waits for their drives to end, then
    /// deregisters.
    async fn stop_gracefully(&mut self) {
        tracing::info!(worker = %self.id, runs = self.driving.len(), "worker stopping: handing back the runs it drives");
        for token in self.driving.values() {
            token.cancel();
        }
        while let Some(end) = self.drives.join_next().await {
            self.drive_ended(end).await;
        }
        // The attempts in flight give their claims back, for another worker to take at once.
        if let Some((stop, serving)) = self.serving.take() {
            stop.cancel();
            match serving.await {
                Ok(Ok(report)) => self.report.attempts = report,
                Ok(Err(e)) => {
                    tracing::warn!(worker = %self.id, error = %e, "executing queued attempts failed")
                }
                Err(e) => {
                    tracing::error!(worker = %self.id, error = %e, "the attempt loop ended abnormally")
                }
            }
        }
        if let Err(e) = self.store().remove_worker(&self.id).await {
            tracing::warn!(worker = %self.id, error = %e, "could not deregister the worker");
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }

    fn record(&self) -> WorkerRecord {
        let now = self.now();
        let mut parts = self.id.split(':');
        let host = parts.next().unwrap_or_default().to_owned();
        let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let mut driving: Vec<String> = self.driving.keys().cloned().collect();
        driving.sort();
        WorkerRecord {
            worker_id: self.id.clone(),
            host,
            pid,
            workflow: self.workflow.clone(),
            concurrency: self.options.concurrency as i64,
            driving,
            started_at: self.started_at,
            heartbeat_at: now,
            expires_ms: now.plus(self.options.heartbeat * 3).as_millis(),
        }
    }

    /// Registers, and removes the rows of workers of this host whose process is gone (killed
    /// before they could deregister).
    async fn register(&self) -> Result<()> {
        self.store().put_worker(&self.record()).await?;
        for w in self.store().workers().await? {
            if crate::store::holder_is_dead(&w.worker_id) {
                tracing::info!(worker = %self.id, dead = %w.worker_id, "removing the registration of a worker that is gone");
                self.store().remove_worker(&w.worker_id).await?;
            }
        }
        Ok(())
    }

    async fn heartbeat(&self) {
        if let Err(e) = self.store().put_worker(&self.record()).await {
            tracing::warn!(worker = %self.id, error = %e, "could not renew the worker's heartbeat");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::Ctx;
    use crate::error::TaskError;
    use crate::node::{Node, Task, Workflow};
    use crate::output::{Column, ColumnKind, Output};
    use crate::store::{Durability, NewRun, SqliteStore};

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct N {
        n: i64,
    }
    impl Output for N {
        const TABLE: &'static str = "n";
        const COLUMNS: &'static [Column] = &[Column {
            name: "n",
            kind: ColumnKind::Integer,
            nullable: false,
            rust_type: "i64",
        }];
    }

    /// One task that runs for a minute: a run taken over stays driven for the whole test.
    fn slow(_: &Ctx<()>) -> Node {
        Workflow::new()
            .name("race")
            .child(
                Task::<N>::new()
                    .id("slow")
                    .run(|_| async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok::<_, TaskError>(N { n: 1 })
                    })
                    .build(),
            )
            .build()
    }

    /// Two workers see the same run whose driver is gone. The first takes it over and counts
    /// the restart; the second decided on the same stale view of the run, after the first
    /// counted (so its decision is restart 2): its takeover finds the lease held, and it counts
    /// nothing — one takeover, one restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_racing_for_a_dead_run_count_one_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("w.db"), Durability::Off).unwrap());
        store
            .create_run(NewRun {
                run_id: "r".into(),
                workflow: "race".into(),
                input: serde_json::Value::Null,
                owner: "elsewhere:1:dead".into(),
                lease_ttl: Duration::from_millis(1),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // What both workers read of the run: running, its driver's lease expired.
        let stale = store.run("r").await.unwrap().unwrap();
        let options = WorkerOptions {
            restarts: RestartPolicy {
                backoff: Duration::ZERO,
                ..RestartPolicy::default()
            },
            ..WorkerOptions::default()
        };
        let mut a = Worker::new(Engine::new(store.clone(), slow), options.clone());
        let mut b = Worker::new(Engine::new(store.clone(), slow), options);
        a.take_over_runs().await.unwrap();
        assert_eq!(a.driving.len(), 1, "the first worker takes the run over");
        let counted = || async {
            store
                .restarts("r")
                .await
                .unwrap()
                .map(|r| (r.restarts, r.last_worker))
        };
        // Counted under its new lease, once it holds it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while counted().await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no restart counted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(counted().await, Some((1, a.id().to_owned())));
        assert_eq!(
            store.run("r").await.unwrap().unwrap().lease_epoch,
            stale.lease_epoch + 1
        );

        assert!(b.is_ours(&stale));
        let restart = b
            .may_restart(&stale, "its driver is gone")
            .await
            .unwrap()
            .expect("on its stale view, the second worker decides to restart the run");
        assert_eq!(
            restart.record.restarts, 2,
            "it read the first worker's count"
        );
        b.drive("r".into(), Some(restart));
        let (_, end) = b.drives.join_next().await.unwrap().unwrap();
        assert!(
            matches!(end, Err(Error::LeaseHeld { .. })),
            "the run is the first worker's: {end:?}"
        );
        assert_eq!(
            counted().await,
            Some((1, a.id().to_owned())),
            "one takeover, one restart"
        );
        let note = store
            .state_get("supervisor.last_error")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(
            note.contains(&format!("restarted by worker `{}` (restart 1 ", a.id())),
            "the note is the first worker's: {note}"
        );
        drop(a);
    }
}
