//! Pool mode on the worker's side: claiming queued attempts of a workflow's runs and executing
//! them ([`Engine::serve_attempts`]). The worker is the same workflow binary as the driver, so it
//! finds a claimed task's body by rendering the run from persisted state
//! ([`Engine::render_run`]); an agent task gets the prompt the driver assembled and queued. The
//! claim is renewed every third of its period; the raw outcome is recorded fenced by the claim,
//! and progress lines and the usage an agent reports so far too, so a worker whose claim expired
//! or was taken commits nothing. A driver's request to stop an attempt reaches its worker on the
//! worker's stop channel at once (every attempt in flight then checks its flag, renewing its
//! claim); the renewal sees the flag too, for a worker whose notifications stopped. What the
//! outcome means (validation, retries, budgets, cache) is
//! decided by the run's driver, which checks the budgets with the reported usage mid-attempt.
//!
//! Working-copy snapshots are the worker's too, by the local executor's rules: around the
//! attempt of an agent that edits files, and of every task inside a `<Step>` (the step's
//! `before` is the working copy before its first attempt, its `after` the one after its last),
//! recorded on the attempt's and the steps' rows under the claim, so `smithers rewind` restores
//! the working copy the attempts changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attempt::{run_attempt, AttemptInput};
use super::remote::to_remote;
use super::{panic_message, Engine};
use crate::agent::ProgressSink;
use crate::ctx::Ctx;
use crate::error::{Error, Result, TaskError};
use crate::events::{Event, EventKind};
use crate::machine::AttemptResult;
use crate::machine::RunState;
use crate::node::{Node, TaskExec, TaskSpec};
use crate::store::{queue_channel, stop_channel, Claim, RemoteError, RemoteOutcome};
use crate::store::{FenceToken, StepKey, StepRecord, StepVcs, Store, Write};

/// How a worker executes queued attempts.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// The workflow whose runs' attempts it claims (the run's recorded workflow name).
    pub workflow: String,
    /// Who it is, as claims record it (`host:pid:nonce`, [`crate::store::lease_owner`]).
    pub owner: String,
    /// At most this many attempts executed at once.
    pub concurrency: usize,
    /// How long a claim holds unless renewed (renewed every third of it).
    pub claim_ttl: Duration,
    /// The longest wait between two looks at the queue when no notification came.
    pub poll: Duration,
}

impl PoolOptions {
    /// Options for `workflow`'s worker `owner`: 4 attempts at once, 30 s claims, polling every
    /// second at most.
    pub fn new(workflow: impl Into<String>, owner: impl Into<String>) -> Self {
        PoolOptions {
            workflow: workflow.into(),
            owner: owner.into(),
            concurrency: 4,
            claim_ttl: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// What a worker did until it stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// Attempts it claimed.
    pub claimed: u64,
    /// Outcomes it recorded.
    pub recorded: u64,
    /// Attempts whose claim it lost (nothing recorded).
    pub lost: u64,
    /// Claims it gave back when told to stop.
    pub released: u64,
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    recorded: AtomicU64,
    lost: AtomicU64,
    released: AtomicU64,
}

/// The shortest wait between two looks at the queue when no notification came.
const FIRST_POLL: Duration = Duration::from_millis(25);

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A second handle on this engine (same store, workflow function and options), for tasks
    /// that outlive a borrow.
    fn handle(&self) -> Arc<Engine<I>> {
        Arc::new(Engine {
            store: self.store.clone(),
            workflow: self.workflow.clone(),
            options: self.options.clone(),
        })
    }

    /// Executes queued attempts of `options.workflow`'s runs until `stop` is cancelled: claims
    /// up to `concurrency` at once (woken by the workflow's notification channel, polling with
    /// backoff as the fallback), executes each, renews its claim, and records its outcome for the
    /// run's driver. When stopped, the attempts in flight are stopped and their claims given
    /// back, so another worker takes them at once. Needs a store with the attempt queue
    /// (PostgreSQL).
    pub async fn serve_attempts(
        &self,
        options: PoolOptions,
        stop: CancellationToken,
    ) -> Result<PoolReport> {
        if !self.store.supports_pool() {
            return Err(crate::store::pool_unsupported(&format!(
                "a worker of workflow `{}`",
                options.workflow
            )));
        }
        let engine = self.handle();
        let counters = Arc::new(Counters::default());
        let renders = Arc::new(Renders::default());
        let mut wake = self
            .store
            .listen(&queue_channel(&options.workflow))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot listen for queued attempts; polling instead");
                None
            });
        // Stop requests for the attempts it holds: each wake-up makes every attempt in flight
        // check its flag at once.
        let (stops_tx, stops) = tokio::sync::watch::channel(0u64);
        let stop_wake = match self.store.listen(&stop_channel(&options.owner)).await {
            Ok(Some(mut rx)) => Some(tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    stops_tx.send_modify(|n| *n += 1);
                }
            })),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for stop requests; they are seen at each claim renewal");
                None
            }
        };
        let release = CancellationToken::new();
        let mut running: JoinSet<()> = JoinSet::new();
        let mut pause = FIRST_POLL;
        let concurrency = options.concurrency.max(1);
        while !stop.is_cancelled() {
            let free = concurrency.saturating_sub(running.len());
            let mut got = 0;
            if free > 0 {
                // Taken before claiming: a stop of an attempt claimed now is announced after
                // this, so its attempt sees the change.
                let stops = stops.clone();
                match self
                    .store
                    .claim_attempts(&options.workflow, &options.owner, free, options.claim_ttl)
                    .await
                {
                    Ok(claims) => {
                        got = claims.len();
                        for claim in claims {
                            counters.claimed.fetch_add(1, Ordering::Relaxed);
                            running.spawn(execute_claim(
                                engine.clone(),
                                claim,
                                options.claim_ttl,
                                release.clone(),
                                stops.clone(),
                                counters.clone(),
                                renders.clone(),
                            ));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming attempts failed; trying again"),
                }
            }
            if got > 0 && got == free {
                // Maybe more queued: claim again as soon as a slot frees.
                pause = FIRST_POLL;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {
                    pause = FIRST_POLL;
                    continue;
                }
                n = async { wake.as_mut()?.recv().await }, if wake.is_some() && free > got => {
                    if n.is_none() {
                        wake = None;
                    }
                    pause = FIRST_POLL;
                }
                _ = tokio::time::sleep(pause) => {
                    pause = (pause * 2).min(options.poll);
                }
            }
        }
        // Stopping: the attempts in flight give their claims back.
        release.cancel();
        while running.join_next().await.is_some() {}
        if let Some(t) = stop_wake {
            t.abort();
        }
        Ok(PoolReport {
            claimed: counters.claimed.load(Ordering::Relaxed),
            recorded: counters.recorded.load(Ordering::Relaxed),
            lost: counters.lost.load(Ordering::Relaxed),
            released: counters.released.load(Ordering::Relaxed),
        })
    }
}

/// The trees a worker rendered, by run, each with the run's queue position read before its
/// snapshot was loaded: it serves every claimed attempt at or before that position (what the
/// driver saw when it queued them is in it), and a later attempt renders again.
#[derive(Default)]
struct Renders(std::sync::Mutex<HashMap<String, (i64, Arc<Node>)>>);

/// Runs whose trees a worker keeps at most.
const RENDERS_KEPT: usize = 64;

impl Renders {
    fn get(&self, claim: &Claim) -> Option<Arc<Node>> {
        let m = self.0.lock().ok()?;
        m.get(&claim.run_id)
            .filter(|(position, _)| claim.position <= *position)
            .map(|(_, tree)| tree.clone())
    }

    fn put(&self, run_id: &str, position: i64, tree: Arc<Node>) {
        let Ok(mut m) = self.0.lock() else {
            return;
        };
        if m.len() >= RENDERS_KEPT && !m.contains_key(run_id) {
            m.clear();
        }
        match m.get(run_id) {
            Some((p, _)) if *p >= position => {}
            _ => {
                m.insert(run_id.to_owned(), (position, tree));
            }
        }
    }
}

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The run's tree as its persisted state renders it, recent enough for `claim`.
    async fn tree_for(&self, claim: &Claim, renders: &Renders) -> Result<Arc<Node>> {
        if let Some(tree) = renders.get(claim) {
            return Ok(tree);
        }
        let position = self.store.queue_position(&claim.run_id).await?;
        let rec = self
            .store
            .run(&claim.run_id)
            .await?
            .ok_or_else(|| Error::RunNotFound(claim.run_id.clone()))?;
        let input: I = serde_json::from_value(rec.input).map_err(|e| {
            Error::InvalidInput(format!(
                "the stored input of run `{}` does not fit this workflow's input type: {e}",
                claim.run_id
            ))
        })?;
        // What a render reads: outputs, loop counters, `state` (no attempts, steps or phases).
        let loaded = self.store.load(&claim.run_id).await?;
        let st = RunState::loaded(
            &claim.run_id,
            FenceToken::new(String::new(), 0),
            loaded,
            Vec::new(),
            Vec::new(),
        );
        let tree = Arc::new(self.render_catching(&Ctx::new(Arc::new(input), st.snap))?);
        renders.put(&claim.run_id, position, tree.clone());
        Ok(tree)
    }
}

/// The task `id` among the mounted nodes of `tree`.
fn find_task(tree: &Node, id: &str) -> Option<Arc<TaskSpec>> {
    if let crate::node::NodeKind::Task(t) = tree.kind() {
        if t.id == id {
            return Some(t.clone());
        }
    }
    tree.mounted_children()
        .iter()
        .find_map(|c| find_task(c, id))
}

/// A failure the worker records without running the body (the driver decides what it means).
fn failed(message: String, retryable: bool) -> RemoteOutcome {
    RemoteOutcome {
        duration_ms: 0,
        value: None,
        reply: None,
        error: Some(RemoteError {
            message,
            retryable,
            retry_after_ms: None,
        }),
    }
}

/// Executes one claimed attempt: finds its task, runs its body while renewing the claim, and
/// records the outcome under the claim. `release` gives the claim back instead (the worker is
/// stopping); a change of `stops` makes it check at once whether its stop was requested.
async fn execute_claim<I>(
    engine: Arc<Engine<I>>,
    claim: Claim,
    ttl: Duration,
    release: CancellationToken,
    stops: tokio::sync::watch::Receiver<u64>,
    counters: Arc<Counters>,
    renders: Arc<Renders>,
) where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let store = engine.store.clone();
    let task = match engine.tree_for(&claim, &renders).await {
        Ok(tree) => find_task(&tree, &claim.node_id).ok_or_else(|| {
            format!(
                "worker `{}` renders run `{}` without task `{}`: is it running another version of the workflow binary?",
                claim.token.owner, claim.run_id, claim.node_id
            )
        }),
        Err(e) => Err(format!(
            "worker `{}` could not render run `{}`: {e}",
            claim.token.owner, claim.run_id
        )),
    };
    let outcome = match task {
        Err(message) => Some(failed(message, false)),
        Ok(task) => run_claimed(&engine, &claim, task, ttl, &release, stops, &counters).await,
    };
    let Some(outcome) = outcome else {
        return;
    };
    if release.is_cancelled() && outcome.error.is_some() {
        // Stopped because the worker is stopping: another worker runs it.
        match store.release_claim(&claim).await {
            Ok(()) => counters.released.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, node = %claim.node_id, "could not give a claim back; it expires");
                0
            }
        };
        return;
    }
    match store.record_outcome(&claim, &outcome).await {
        Ok(()) => {
            counters.recorded.fetch_add(1, Ordering::Relaxed);
        }
        Err(e @ Error::ClaimLost { .. }) => {
            counters.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "an outcome was not recorded");
        }
        Err(e) => {
            tracing::warn!(error = %e, node = %claim.node_id, "could not record an outcome; the claim expires and the attempt runs again")
        }
    }
}

/// Runs the body of a claimed task, renewing the claim; `None` when the claim was lost (nothing
/// is to be recorded).
async fn run_claimed<I>(
    engine: &Engine<I>,
    claim: &Claim,
    task: Arc<TaskSpec>,
    ttl: Duration,
    release: &CancellationToken,
    mut stops: tokio::sync::watch::Receiver<u64>,
    counters: &Counters,
) -> Option<RemoteOutcome>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let store = engine.store.clone();
    let cancel = release.child_token();
    // Progress lines go to the store under the claim, in order, from one writer.
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let writer = {
        let (store, claim) = (store.clone(), claim.clone());
        tokio::spawn(async move {
            while let Some(first) = lines_rx.recv().await {
                let mut events = vec![first];
                while let Ok(more) = lines_rx.try_recv() {
                    events.push(more);
                }
                if let Err(e) = store.write_claimed(&claim, events).await {
                    tracing::warn!(error = %e, "progress lines were not written");
                    if matches!(e, Error::ClaimLost { .. }) {
                        break;
                    }
                }
            }
        })
    };
    // Usage so far goes to the attempt's row under the claim (the latest of what is waiting,
    // one writer), for the driver to check the budgets; a stop it asked for is seen there too.
    let (usage_tx, mut usage_rx) =
        tokio::sync::mpsc::unbounded_channel::<(crate::model::Usage, Option<String>)>();
    let reporter = {
        let (store, claim, cancel) = (store.clone(), claim.clone(), cancel.clone());
        tokio::spawn(async move {
            while let Some(mut latest) = usage_rx.recv().await {
                while let Ok(more) = usage_rx.try_recv() {
                    latest = more;
                }
                match store
                    .report_usage(&claim, &latest.0, latest.1.as_deref())
                    .await
                {
                    Ok(r) if r.stop_requested => cancel.cancel(),
                    Ok(_) => {}
                    Err(e @ Error::ClaimLost { .. }) => {
                        tracing::warn!(error = %e, "usage was not reported");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not report usage; the next report carries it")
                    }
                }
            }
        })
    };
    let progress = {
        let (run_id, node_id, it) = (claim.run_id.clone(), claim.node_id.clone(), claim.iteration);
        let clock = engine.options.clock.clone();
        ProgressSink::new(move |stream, line| {
            if stream == crate::agent::USAGE_STREAM {
                // For the budgets, which the driver checks mid-attempt as for its own attempts.
                if let Some(report) = super::attempt::usage_line(line) {
                    let _ = usage_tx.send(report);
                }
                return;
            }
            let _ = lines_tx.send(Event::node(
                &run_id,
                &node_id,
                it,
                clock.now(),
                EventKind::NodeOutput {
                    stream: stream.into(),
                    line: super::attempt::trim_line(line),
                },
            ));
        })
    };
    let input = AttemptInput {
        run_id: claim.run_id.clone(),
        iteration: claim.iteration,
        attempt: claim.attempt,
        rejected: None,
        prompt: claim.payload.prompt.clone(),
        cancel: cancel.clone(),
        progress,
        vcs: None,
        steps: crate::steps::Steps::new(store.clone(), claim.run_id.clone()),
    };
    let snapshots = WorkerSnapshots::new(engine, claim, &task).await;
    if let Some(s) = &snapshots {
        s.take(true).await;
    }
    let started = Instant::now();
    // Boxed so it can be dropped (with its progress sink) as soon as it ended.
    let mut body = Box::pin(std::panic::AssertUnwindSafe(run_attempt(&task, input)).catch_unwind());
    let mut renew = super::periodic(ttl / 3);
    let mut lost = false;
    let outcome = loop {
        // Renewal is due, or a stop was announced on the worker's channel (maybe this one's):
        // renewing says whether this attempt was asked to stop.
        tokio::select! {
            r = &mut body => break r,
            _ = renew.tick(), if !lost => {}
            Ok(()) = stops.changed(), if !lost => {}
        }
        match store.renew_claim(claim, ttl).await {
            Ok(r) if r.stop_requested => cancel.cancel(),
            Ok(_) => {}
            Err(e @ Error::ClaimLost { .. }) => {
                tracing::warn!(error = %e, "stopping an attempt whose claim was lost");
                lost = true;
                counters.lost.fetch_add(1, Ordering::Relaxed);
                cancel.cancel();
            }
            Err(e) => tracing::warn!(error = %e, "could not renew a claim; trying again"),
        }
    };
    drop(body);
    if let (Some(s), false) = (&snapshots, lost) {
        s.take(false).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), reporter).await;
    if lost {
        return None;
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(panic) => Err((
            TaskError::terminal(format!("the task panicked: {}", panic_message(&*panic))),
            None,
        )),
    };
    Some(to_remote(&AttemptResult {
        key: (claim.node_id.clone(), claim.iteration),
        attempt: claim.attempt,
        duration_ms: started.elapsed().as_millis() as i64,
        outcome,
    }))
}

/// The working-copy snapshots a worker takes around a claimed attempt (see the module docs).
struct WorkerSnapshots {
    store: Arc<dyn Store>,
    claim: Claim,
    repo: crate::vcs::Repo,
    /// The run's active steps that hold this task in this iteration, as they were when the
    /// attempt started.
    steps: Vec<StepRecord>,
}

impl WorkerSnapshots {
    /// `None` when no snapshot is due: snapshots are off, the task is no agent that edits
    /// files and in no step, or its directory is in no repository.
    async fn new<I>(engine: &Engine<I>, claim: &Claim, task: &TaskSpec) -> Option<Self>
    where
        I: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        if !engine.options.vcs_snapshots {
            return None;
        }
        let agent = match &task.exec {
            TaskExec::Agent(a) => Some(a),
            _ => None,
        };
        let steps: Vec<StepRecord> = match engine.store.steps(&claim.run_id).await {
            Ok(all) => all
                .into_iter()
                .filter(|s| {
                    s.active
                        && s.source == "tree"
                        && s.iteration == claim.iteration
                        && s.task_ids.contains(&claim.node_id)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, node = %claim.node_id, "could not read the run's steps; the attempt's steps get no snapshot");
                Vec::new()
            }
        };
        if steps.is_empty() && !agent.is_some_and(|a| a.edits_files()) {
            return None;
        }
        let dir = agent
            .and_then(|a| a.cwd())
            .or_else(|| engine.options.workdir.clone())
            .or_else(|| std::env::current_dir().ok())?;
        let repo = crate::vcs::Repo::find_or_log(&dir).await?;
        Some(WorkerSnapshots {
            store: engine.store.clone(),
            claim: claim.clone(),
            repo,
            steps,
        })
    }

    /// Takes the `before` or `after` snapshot and records it under the claim; a failure is
    /// logged, never fatal to the attempt.
    async fn take(&self, before: bool) {
        let c = &self.claim;
        let phase = if before { "before" } else { "after" };
        let name = crate::vcs::attempt_ref(&c.run_id, &c.node_id, c.iteration, c.attempt, phase);
        let message = format!(
            "smithers: {phase} attempt {} of node `{}` (iteration {}) in run {}, on worker {}",
            c.attempt, c.node_id, c.iteration, c.run_id, c.token.owner
        );
        let snap = match self.repo.snapshot(&name, &message).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, node = %c.node_id, "working-copy snapshot failed; this attempt and its steps cannot be rolled back");
                return;
            }
        };
        let repo = snap.root.display().to_string();
        let mut writes = vec![Write::AttemptVcs {
            node_id: c.node_id.clone(),
            iteration: c.iteration,
            attempt: c.attempt,
            repo: repo.clone(),
            before: before.then(|| snap.commit.clone()),
            after: (!before).then(|| snap.commit.clone()),
        }];
        let taken = Some((snap.commit.clone(), snap.head.clone()));
        for s in &self.steps {
            // A step's `before` is the working copy before its first attempt.
            if before && s.snapshot_before.is_some() {
                continue;
            }
            writes.push(Write::StepVcs(StepVcs {
                step: StepKey::Id(s.step_id),
                repo: repo.clone(),
                backend: snap.backend.as_str().to_owned(),
                before: if before { taken.clone() } else { None },
                after: if before { None } else { taken.clone() },
                commit_created: None,
            }));
        }
        if let Err(e) = self.store.write_claimed_vcs(c, writes).await {
            tracing::warn!(error = %e, node = %c.node_id, "could not record a working-copy snapshot");
        }
    }
}
