//! The engine loop: render → plan → start tasks → persist each result in one transaction →
//! render again, after EACH persisted output, while the other tasks keep running.
//!
//! The decisions are the sealed core in the private `machine` module (`RunState::handle`: an `Input` and
//! the time in, `Command`s out); `Engine::drive` is the executor that renders, feeds the machine
//! and carries out its commands against the [`Store`], the agents, the clock and tokio. Writes go
//! through the store as one [`WriteBatch`] per change. Preparing, spawning and running attempts
//! is in `attempt`, committing and cancelling in `persist`.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
pub use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::ctx::{Ctx, RunSnapshot};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::machine::{AttemptResult, Command, HookCall, Input, RunState, StepSnapshot};
use crate::model::{NodeKey, RunStatus};
use crate::node::{HookCtx, Node, NodeKind};
use crate::store::{lease_owner, FenceToken, NewRun, Store, Write, WriteBatch};

mod attempt;
mod persist;
mod pool;
mod remote;

use attempt::AttemptHandle;
pub use pool::{PoolOptions, PoolReport};
use remote::Remote;

/// A takeover from a driver that is gone, as a `worker`'s supervision decided it
/// ([`Engine::restart`]).
pub(crate) struct Restarting {
    /// The lease epoch of the dead driver, as the worker saw the run when it decided.
    pub(crate) from_epoch: i64,
    /// The bookkeeping to write: the run's restart count with this takeover.
    pub(crate) record: crate::store::RestartRecord,
    /// Seed 002's `supervisor.last_error`: a driver died, who restarted the run.
    pub(crate) note: String,
}

/// Why a run handed back by [`EngineOptions::hand_back`] is queued.
const HAND_BACK: &str =
    "the worker driving it stopped (SIGTERM or Ctrl-C); the next worker continues it";

/// A callback receiving every event after it is persisted.
pub type EventListener = Arc<dyn Fn(&Event) + Send + Sync>;

/// The workflow function: renders the tree from the context.
pub type WorkflowFn<I> = Arc<dyn Fn(&Ctx<I>) -> Node + Send + Sync>;

/// A fresh run id (a UUID without dashes), as `run` and `fork` make.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// How a run is driven.
#[derive(Clone)]
pub struct EngineOptions {
    /// Run-wide limit of tasks running at once (a `<Workflow max_concurrency>` overrides it).
    pub max_concurrency: usize,
    /// Lease period; the lease is renewed every third of it.
    pub lease_ttl: Duration,
    /// Receives every event after it is persisted.
    pub on_event: Option<EventListener>,
    /// Cancels the run (Ctrl-C): in-flight attempts stop, the run is marked cancelled.
    pub cancel: CancellationToken,
    /// Hands the run back (a `worker` stopping on SIGTERM): in-flight attempts run here stop and
    /// are recorded as interrupted, their nodes pending; attempts queued for workers (pool mode)
    /// go on, for the next driver to adopt; the run becomes `queued` and its lease is released,
    /// so another worker continues it at once.
    pub hand_back: CancellationToken,
    /// Interval of the `supervisor.heartbeat` state key.
    pub heartbeat: Duration,
    /// When only `needs_approval` tasks are left: wait for `smithers approve|deny` (polling the
    /// database) instead of stopping with status `waiting-approval`.
    pub wait_for_approval: bool,
    /// How often to look for approval decisions while waiting.
    pub approval_poll: Duration,
    /// How often to look for a cancellation requested from another process (`smithers cancel`).
    pub cancel_poll: Duration,
    /// Snapshot the agent's git working copy before and after each agent attempt (commits under
    /// `refs/smithers/...`, recorded on the attempt) so `smithers revert` can undo it.
    pub vcs_snapshots: bool,
    /// The directory whose repository step snapshots cover (every `<Step>`, compute tasks
    /// included); the process's current directory when `None`.
    pub workdir: Option<std::path::PathBuf>,
    /// The wait between attempts of an agent task that sets no `retry_policy` (nor does its
    /// workflow); default: 1 s doubling up to a minute, ± 20 %. Compute tasks without a policy
    /// retry at once. A rate limit's `retry_after` is always waited.
    pub agent_retry_policy: crate::retry::RetryPolicy,
    /// Prices used to estimate the cost of an attempt whose agent reports none (default: the
    /// built-in catalog; see [`crate::price::PriceCatalog::load_toml`] to override it).
    pub prices: Arc<crate::price::PriceCatalog>,
    /// After a failure of the store or the machinery (a full disk), how long to keep trying to
    /// record the run as failed before giving up and leaving it `running` for a `resume`.
    pub failure_retry: Duration,
    /// Where the engine reads the time it stamps on events and state (the system clock; a
    /// [`crate::clock::TestClock`] in tests).
    pub clock: Arc<dyn Clock>,
    /// Phase and step names to skip (seed 004's `SKIP_PHASES`; `--skip-phase` and
    /// `SMITHERS_SKIP_PHASES` on a workflow binary): every `<Phase>` and `<Step>` of one of
    /// these names renders as `skip_if`, and [`Ctx::skips`] reads them. A setting of this
    /// process, not of the run: give it again to `resume`.
    pub skip_phases: Vec<String>,
    /// Pool mode (PostgreSQL): attempts are queued for the workers of the workflow
    /// ([`Engine::serve_attempts`]) instead of run in this process; the driver still makes every
    /// decision (retries, validation, budgets, cache) from the outcomes they record.
    pub pool: bool,
    /// In pool mode, the longest wait between two looks at the recorded outcomes when no
    /// notification came.
    pub pool_poll: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_concurrency: 16,
            lease_ttl: Duration::from_secs(30),
            on_event: None,
            cancel: CancellationToken::new(),
            hand_back: CancellationToken::new(),
            heartbeat: Duration::from_secs(30),
            wait_for_approval: false,
            approval_poll: Duration::from_millis(500),
            vcs_snapshots: true,
            workdir: None,
            agent_retry_policy: crate::retry::RetryPolicy::exponential(Duration::from_secs(1))
                .max_delay(Duration::from_secs(60)),
            prices: Arc::new(crate::price::PriceCatalog::builtin()),
            cancel_poll: Duration::from_secs(1),
            failure_retry: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            skip_phases: Vec::new(),
            pool: false,
            pool_poll: Duration::from_millis(500),
        }
    }
}

/// The result of driving a run until it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// The run id.
    pub run_id: String,
    /// Final status.
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Nodes finished with an output.
    pub finished_nodes: usize,
}

impl RunReport {
    /// `Ok` when finished, the run's error otherwise.
    pub fn into_result(self) -> Result<RunReport> {
        match self.status {
            RunStatus::Finished => Ok(self),
            RunStatus::Cancelled => Err(Error::Cancelled(self.run_id)),
            status => Err(Error::RunNotFinished {
                run_id: self.run_id,
                status,
                error: self.error,
            }),
        }
    }
}

/// Drives runs of one workflow against a store.
pub struct Engine<I> {
    store: Arc<dyn Store>,
    workflow: WorkflowFn<I>,
    options: EngineOptions,
}

impl<I> Clone for Engine<I> {
    fn clone(&self) -> Self {
        Engine {
            store: self.store.clone(),
            workflow: self.workflow.clone(),
            options: self.options.clone(),
        }
    }
}

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// An engine for `workflow` over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        workflow: impl Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
    ) -> Self {
        Engine {
            store,
            workflow: Arc::new(workflow),
            options: EngineOptions::default(),
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// The options.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The options, to change.
    pub fn options_mut(&mut self) -> &mut EngineOptions {
        &mut self.options
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Renders the tree for `input` without running anything and without checking it.
    pub fn render(&self, input: I) -> Node {
        (self.workflow)(&Ctx::empty(input))
    }

    /// Renders the tree for `input` as a new run's first render sees it, without running
    /// anything (what `graph` prints), with the checks a run makes before anything starts: a
    /// panic in the workflow function, `ctx.iteration(L)` of a loop the tree does not have
    /// ([`Error::UnknownLoop`]), and mounted ids that are invalid or not unique
    /// ([`Error::InvalidNodeId`], [`Error::DuplicateNodeId`]) are the errors the run would
    /// fail with.
    pub fn render_checked(&self, input: I) -> Result<Node> {
        render_checked(&*self.workflow, input, &self.options.skip_phases)
    }

    /// Starts a new run with a fresh id and drives it until it stops.
    pub async fn run(&self, input: I) -> Result<RunReport> {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        self.run_with_id(&run_id, input).await
    }

    /// Starts a new run with the given id.
    pub async fn run_with_id(&self, run_id: &str, input: I) -> Result<RunReport> {
        self.check_pool_mode()?;
        let input = Arc::new(input);
        let (workflow, run) = self.new_run(run_id, &input)?;
        // The run's row and its start record in one commit.
        let mut st = RunState::new(run_id, FenceToken::new(run.owner.clone(), 1));
        let mut commands = st.handle(Input::Started { workflow }, self.options.clock.now());
        let first = match commands.pop_front() {
            Some(Command::Commit(b)) => b,
            other => {
                if let Some(c) = other {
                    commands.push_front(c);
                }
                WriteBatch::new(run_id)
            }
        };
        let events: Vec<Event> = first.events().cloned().collect();
        st.fence = self.store.create_run_with(run, first).await?;
        self.deliver(&events);
        self.commit_all(&st.fence, commands).await?;
        let report = self.drive_and_release(&mut st, input).await;
        free(st);
        report
    }

    /// Creates a run without driving it (`run --detach`): its row is written `queued`, with no
    /// lease, and a `worker` of this workflow picks it up. Returns the run id.
    pub async fn enqueue(&self, run_id: Option<&str>, input: I) -> Result<String> {
        let run_id = run_id.map_or_else(new_run_id, str::to_owned);
        let input = Arc::new(input);
        let (_, fence) = self.create(&run_id, &input).await?;
        let mut st = RunState::new(&run_id, fence);
        self.execute_all(
            &mut st,
            Input::Queued {
                reason: "created by `run --detach`; a `worker` of this workflow drives it".into(),
            },
        )
        .await?;
        self.store.release_lease(&run_id, &st.fence).await?;
        Ok(run_id)
    }

    /// The name of the workflow this engine's function renders for `input` (the stored input of
    /// a run), or `None` when `input` does not fit the input type or the render panics: what a
    /// `worker` compares with a run's `workflow` to know whether the run is its own.
    pub(crate) fn workflow_name_for(&self, input: &serde_json::Value) -> Option<String> {
        let input: I = serde_json::from_value(input.clone()).ok()?;
        let tree = self.render_catching(&Ctx::empty(input)).ok()?;
        Some(workflow_name(&tree))
    }

    /// Renders the first tree of a new run and creates its row, holding the lease.
    async fn create(&self, run_id: &str, input: &Arc<I>) -> Result<(String, FenceToken)> {
        let (workflow, run) = self.new_run(run_id, input)?;
        let fence = self.store.create_run(run).await?;
        Ok((workflow, fence))
    }

    /// Renders the first tree of a new run: its workflow name and its row, held by this process.
    fn new_run(&self, run_id: &str, input: &Arc<I>) -> Result<(String, NewRun)> {
        let input_json =
            serde_json::to_value(&**input).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let first = RunSnapshot {
            run_id: run_id.to_owned(),
            ..RunSnapshot::default()
        };
        let tree = self.render_catching(&self.ctx(input.clone(), Arc::new(first)))?;
        let workflow = workflow_name(&tree);
        let run = NewRun {
            run_id: run_id.to_owned(),
            workflow: workflow.clone(),
            input: input_json,
            owner: lease_owner(),
            lease_ttl: self.options.lease_ttl,
        };
        Ok((workflow, run))
    }

    /// Resumes a run (the latest one when `run_id` is `None`): attempts a dead process left in
    /// progress become new attempts; finished nodes never run again.
    pub async fn resume(&self, run_id: Option<&str>) -> Result<RunReport> {
        self.resume_with(run_id, None).await
    }

    /// [`Engine::resume`] by a `worker` taking a run over from a driver that is gone: `restart`
    /// (its supervision's bookkeeping) is written under the new lease before anything runs —
    /// and only when that lease is the next term after the dead driver's, so of several
    /// workers racing to take the same run over, the one that got it counts one restart and
    /// the others count nothing.
    pub(crate) async fn restart(&self, run_id: &str, restart: Restarting) -> Result<RunReport> {
        self.resume_with(Some(run_id), Some(restart)).await
    }

    async fn resume_with(
        &self,
        run_id: Option<&str>,
        restart: Option<Restarting>,
    ) -> Result<RunReport> {
        let rec = match run_id {
            Some(id) => self
                .store
                .run(id)
                .await?
                .ok_or_else(|| Error::RunNotFound(id.to_owned()))?,
            None => self.store.latest_run().await?.ok_or(Error::NoRunToResume)?,
        };
        if rec.status == RunStatus::Finished {
            return Err(Error::RunAlreadyDone {
                run_id: rec.run_id,
                status: rec.status,
            });
        }
        let input: I = serde_json::from_value(rec.input.clone()).map_err(|e| {
            Error::InvalidInput(format!(
                "the stored input of run `{}` no longer matches the input type: {e}",
                rec.run_id
            ))
        })?;
        let fence = self
            .store
            .acquire_lease(&rec.run_id, &lease_owner(), self.options.lease_ttl)
            .await?;
        if let Some(restart) = restart {
            self.record_restart(&fence, restart).await?;
        }
        // A queued run nothing ran of yet (`run --detach`) starts here; any other resumes.
        let fresh =
            rec.status == RunStatus::Queued && self.store.nodes(&rec.run_id).await?.is_empty();
        let abandoned = self.store.reset_for_resume(&rec.run_id, &fence).await?;
        // Attempts the previous driver queued for workers carry on: adopted, not re-run.
        let adopted = self
            .store
            .queued_attempts(&rec.run_id)
            .await?
            .into_iter()
            .map(|q| ((q.node_id, q.iteration), q.attempt))
            .collect();
        let mut st = self.load_state(&rec.run_id, fence).await?;
        let first = if fresh {
            Input::Started {
                workflow: rec.workflow.clone(),
            }
        } else {
            Input::Resumed { abandoned, adopted }
        };
        self.execute_all(&mut st, first).await?;
        let report = self.drive_and_release(&mut st, Arc::new(input)).await;
        free(st);
        report
    }

    /// Forks run `parent` at frame `frame` into a new run (with `input`, or the parent's) and
    /// drives it: its history is the parent's up to that frame (outputs, loop counters, steps),
    /// and it records its parent run and frame. An input that does not fit the workflow's
    /// input type, an unknown run or an unknown frame is an error before anything is written.
    pub async fn fork(
        &self,
        parent: &str,
        frame: u32,
        input: Option<serde_json::Value>,
    ) -> Result<RunReport> {
        let rec = self
            .store
            .run(parent)
            .await?
            .ok_or_else(|| Error::RunNotFound(parent.to_owned()))?;
        let value = input.clone().unwrap_or_else(|| rec.input.clone());
        serde_json::from_value::<I>(value).map_err(|e| {
            Error::InvalidInput(format!(
                "the fork's input does not fit this workflow's input type: {e}; no run was created"
            ))
        })?;
        let run_id = new_run_id();
        self.store
            .fork_run(crate::store::ForkRun {
                parent_run_id: parent.to_owned(),
                frame,
                run_id: run_id.clone(),
                input,
            })
            .await?;
        self.resume(Some(&run_id)).await
    }

    /// Renders the tree over a run's persisted state without running anything, with the checks
    /// of [`Engine::render_checked`] (the workflow may have changed since the run started).
    pub async fn render_run(&self, run_id: &str) -> Result<Node> {
        let rec = self
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| Error::RunNotFound(run_id.to_owned()))?;
        let input: I =
            serde_json::from_value(rec.input).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let st = self
            .load_state(run_id, FenceToken::new(String::new(), 0))
            .await?;
        let tree = self.render_catching(&self.ctx(Arc::new(input), st.snap))?;
        crate::plan::check_ids(&tree)?;
        Ok(tree)
    }

    /// Writes a restart's bookkeeping and its `supervisor.last_error` note under `fence`, when
    /// `fence` is the term right after the one the restart was decided on: a worker that decided
    /// on a stale view of the run (another took it over and let it go since) counts nothing.
    async fn record_restart(&self, fence: &FenceToken, restart: Restarting) -> Result<()> {
        let run_id = restart.record.run_id.clone();
        if fence.epoch != restart.from_epoch + 1 {
            tracing::debug!(run_id = %run_id, from_epoch = restart.from_epoch, epoch = fence.epoch, "the run was driven since the restart was decided: not counted");
            return Ok(());
        }
        self.store.put_restarts(&restart.record, fence).await?;
        let mut b = WriteBatch::new(&run_id).fenced(fence);
        b.push(Write::State {
            key: "supervisor.last_error".into(),
            value: restart.note,
        });
        if let Err(e) = self.store.write(b).await {
            tracing::warn!(error = %e, "could not write supervisor.last_error");
        }
        Ok(())
    }

    /// Pool mode needs a store with the attempt queue: said before anything is written.
    fn check_pool_mode(&self) -> Result<()> {
        if self.options.pool && !self.store.supports_pool() {
            return Err(crate::store::pool_unsupported("driving a run in pool mode"));
        }
        Ok(())
    }

    /// Loads a run's persisted state into memory.
    async fn load_state(&self, run_id: &str, fence: FenceToken) -> Result<RunState> {
        let loaded = self.store.load(run_id).await?;
        let phases = self.store.phases(run_id).await?;
        let steps = self.store.steps(run_id).await?;
        let mut st = RunState::loaded(run_id, fence, loaded, phases, steps);
        // What was spent so far, and the budgets raised since (`smithers budget`).
        for (node, usage) in self.store.attempt_usage(run_id).await? {
            st.spend(&node, &usage);
        }
        for r in self.store.budget_raises(run_id).await? {
            let slot = match r.node_id {
                Some(n) => st.task_raise.entry(n).or_default(),
                None => &mut st.run_raise,
            };
            slot.0 += r.add_usd;
            slot.1 += r.add_tokens;
        }
        Ok(st)
    }

    /// Feeds `input` and carries out its commands, which must not wait or start anything (the
    /// start and resume records).
    async fn execute_all(&self, st: &mut RunState, input: Input) -> Result<()> {
        let commands = st.handle(input, self.options.clock.now());
        self.commit_all(&st.fence, commands).await
    }

    /// Carries out commands that only commit (what `execute_all` feeds back).
    async fn commit_all(
        &self,
        fence: &FenceToken,
        commands: impl IntoIterator<Item = Command>,
    ) -> Result<()> {
        for command in commands {
            match command {
                Command::Commit(b) => self.commit(fence, b).await?,
                _ => unreachable!("starting or resuming a run only commits"),
            }
        }
        Ok(())
    }

    async fn drive_and_release(&self, st: &mut RunState, input: Arc<I>) -> Result<RunReport> {
        let (tx, writer) = self.spawn_progress_writer(st.fence.clone());
        let result = self.drive(st, input, tx).await;
        // Every attempt has ended and `drive` dropped its sender: the writer drains what is
        // queued and stops.
        let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        if let Err(e) = &result {
            // A driver that lost its lease writes nothing more: the run is another's now.
            if !matches!(e, Error::LeaseLost { .. }) {
                // An error of the store or the machinery: the run must not stay `running`.
                self.record_failure(st, e).await;
            }
        }
        if let Err(e) = self.store.release_lease(&st.run_id, &st.fence).await {
            tracing::warn!(error = %e, "could not release the run lease");
        }
        result
    }

    /// Records the run as failed with `error`, retrying (with backoff, for
    /// `EngineOptions::failure_retry`) while the store cannot write, so a failure such as a full
    /// disk is recorded as soon as there is room again.
    async fn record_failure(&self, st: &mut RunState, error: &Error) {
        let batches: Vec<WriteBatch> = st
            .handle(
                Input::DriveFailed(error.to_string()),
                self.options.clock.now(),
            )
            .into_iter()
            .filter_map(|command| match command {
                Command::Commit(b) => Some(b),
                _ => None,
            })
            .collect();
        let deadline = tokio::time::Instant::now() + self.options.failure_retry;
        for b in batches {
            let mut pause = Duration::from_millis(50);
            loop {
                let e = match self.commit(&st.fence, b.clone()).await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if matches!(e, Error::LeaseLost { .. }) || tokio::time::Instant::now() >= deadline {
                    tracing::error!(error = %e, run_id = %st.run_id, "could not record the run's failure ({error}); it stays `running` and `resume` continues it");
                    return;
                }
                tracing::warn!(error = %e, "could not record the run's failure yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// `smithers cancel` from another process sets a flag on the run: act on it as on Ctrl-C.
    async fn poll_remote_cancel(&self, st: &RunState) {
        match self.store.cancel_requested(&st.run_id).await {
            Ok(true) => self.options.cancel.cancel(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not check for a cancellation request"),
        }
    }

    /// Persists progress lines in batches: whatever is queued when the writer wakes goes in one
    /// transaction, so a chatty agent costs few commits.
    fn spawn_progress_writer(
        &self,
        fence: FenceToken,
    ) -> (UnboundedSender<Event>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let store = self.store.clone();
        let writer = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut b = WriteBatch::new(&first.run_id).fenced(&fence);
                b.push(Write::Event(first));
                while b.writes.len() < 512 {
                    match rx.try_recv() {
                        Ok(e) => b.push(Write::Event(e)),
                        Err(_) => break,
                    }
                }
                if let Err(e) = store.write(b).await {
                    tracing::warn!(error = %e, "could not persist progress lines");
                }
            }
        });
        (tx, writer)
    }

    /// The loop, an executor of the decisions in `machine`: render, feed the render to
    /// [`RunState::handle`], carry out the commands it returns (committing, preparing and
    /// starting attempts, waiting for the next input and feeding it), render again. Returns when
    /// the run finished, failed or was cancelled.
    async fn drive(
        &self,
        st: &mut RunState,
        input: Arc<I>,
        progress: UnboundedSender<Event>,
    ) -> Result<RunReport> {
        st.max_concurrency = self.options.max_concurrency;
        st.wait_for_approval = self.options.wait_for_approval;
        let clock = &self.options.clock;
        st.agent_retry_policy = self.options.agent_retry_policy.clone();
        st.prices = self.options.prices.clone();
        // Usage the running attempts report, fed to the machine for the budgets.
        let (usage_tx, mut usage_rx) = tokio::sync::mpsc::unbounded_channel();
        // Attempts waiting for their retry: when each is due.
        let mut retries_due: Vec<(tokio::time::Instant, NodeKey)> = Vec::new();
        let mut join: JoinSet<AttemptResult> = JoinSet::new();
        let mut tokens: HashMap<NodeKey, AttemptHandle> = HashMap::new();
        // Pool mode, or attempts adopted from the previous driver: outcomes come from workers.
        let remote = if self.options.pool || st.adopting() {
            let workflow = match self.store.run(&st.run_id).await? {
                Some(r) => r.workflow,
                None => return Err(Error::RunNotFound(st.run_id.clone())),
            };
            let watcher = Remote::start(
                self.store.clone(),
                &st.run_id,
                self.options.pool_poll,
                usage_tx.clone(),
            )
            .await;
            Some((workflow, watcher))
        } else {
            None
        };
        // Output tables ensured by this drive.
        let mut tables: HashSet<&'static str> = HashSet::new();
        let mut lease_tick = periodic(self.options.lease_ttl / 3);
        let mut heartbeat = periodic(self.options.heartbeat);
        let mut repo: Option<Option<crate::vcs::Repo>> = None;
        let mut cancel_poll = periodic(self.options.cancel_poll);
        // Batches to commit, held until the next command that acts outside the run's memory
        // (a lookup, an attempt, a wait, the end): what an output and the renders it causes
        // decide (an output and its loop's advance) goes in one transaction.
        let mut held: Option<WriteBatch> = None;
        // Attempts found ended along with the one `Command::Wait` fed.
        let mut ended_too: Vec<AttemptResult> = Vec::new();
        // `hand_back` was fed once: the machine is stopping the attempts.
        let mut handing_back = false;
        loop {
            // Render over the persisted state, unless nothing the last render read changed:
            // then its tree still stands and is planned again.
            let rendered = if st.tree_stands() {
                Input::Replan
            } else {
                let ctx = self.ctx(input.clone(), st.snap.clone());
                let tree = self.render_catching(&ctx);
                let state_writes = ctx.take_state_writes();
                let reads = Box::new(ctx.take_reads());
                drop(ctx);
                Input::Rendered {
                    tree,
                    state_writes,
                    reads,
                }
            };
            let mut commands = st.handle(rendered, clock.now());
            // Carry out the decisions; when none is left, render again.
            while let Some(command) = commands.pop_front() {
                if let Command::Commit(b) = command {
                    match &mut held {
                        Some(h) => h.writes.extend(b.writes),
                        None => held = Some(b),
                    }
                    continue;
                }
                // Attempts decided together start together, after one commit of all their rows.
                let mut starts = Vec::new();
                let command = match command {
                    Command::Start(s) => {
                        starts.push(s);
                        while matches!(
                            commands.front(),
                            Some(Command::Commit(_) | Command::Start(_))
                        ) {
                            match commands.pop_front() {
                                Some(Command::Commit(b)) => match &mut held {
                                    Some(h) => h.writes.extend(b.writes),
                                    None => held = Some(b),
                                },
                                Some(Command::Start(s)) => starts.push(s),
                                _ => {}
                            }
                        }
                        None
                    }
                    other => Some(other),
                };
                if let (true, Some((workflow, _))) = (self.options.pool, &remote) {
                    // Pool mode: the attempts' rows are committed queued for the workers.
                    let b = held.get_or_insert_with(|| WriteBatch::new(&st.run_id));
                    for s in starts.iter().filter(|s| !s.adopted) {
                        b.push(attempt::queued(workflow, s));
                    }
                }
                if let Some(b) = held.take() {
                    // A refused commit (another process took the run over) stops the drive
                    // through `Input::LeaseLost`, which writes nothing more.
                    match self.commit(&st.fence, b).await {
                        Ok(()) => {}
                        Err(e @ Error::LeaseLost { .. }) => {
                            commands.clear();
                            commands.extend(st.handle(Input::LeaseLost(e), clock.now()));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                for s in starts {
                    let remote = match &remote {
                        Some((_, r)) if self.options.pool || s.adopted => Some(r),
                        _ => None,
                    };
                    self.spawn_attempt(st, &progress, &usage_tx, &mut join, &mut tokens, remote, s);
                }
                let Some(command) = command else {
                    continue;
                };
                let next = match command {
                    Command::Commit(_) => unreachable!("commits are held above"),
                    Command::Prepare(items) => {
                        Input::Prepared(self.prepare(&mut tables, items).await?)
                    }
                    Command::Start(_) => unreachable!("starts are taken above"),
                    Command::RunHooks(calls) => Input::HooksRan(run_hooks(&st.run_id, calls)),
                    Command::Snapshot(steps) => {
                        self.snapshot_steps(st, &mut repo, steps).await?;
                        continue;
                    }
                    Command::Stop(key) => {
                        if let Some(h) = tokens.get(&key) {
                            h.cancel.cancel();
                        }
                        continue;
                    }
                    Command::StopAll => {
                        Input::AllStopped(self.stop_all(&mut join, &mut tokens).await)
                    }
                    Command::RetryAfter { key, delay } => {
                        retries_due.push((tokio::time::Instant::now() + delay, key));
                        continue;
                    }
                    Command::Finish {
                        status,
                        error,
                        batch,
                    } => {
                        self.commit(&st.fence, batch).await?;
                        return Ok(RunReport {
                            run_id: st.run_id.clone(),
                            status,
                            error,
                            finished_nodes: st.finished,
                        });
                    }
                    Command::Abort(e) => return Err(e),
                    Command::WaitForApprovals => {
                        tokio::select! {
                            biased;
                            _ = self.options.cancel.cancelled() => Input::CancelRequested,
                            _ = self.options.hand_back.cancelled(), if !handing_back => {
                                handing_back = true;
                                Input::HandBack {
                                    reason: HAND_BACK.into(),
                                    continuing: attempt::leave_remote(&mut tokens),
                                }
                            }
                            _ = tokio::time::sleep(self.options.approval_poll) => {
                                self.poll_remote_cancel(st).await;
                                Input::ApprovalsPolled(self.store.approvals(&st.run_id).await?)
                            }
                        }
                    }
                    // The next attempt to end, or a tick, or cancellation. Cancellation wins over
                    // an attempt that ended because of it: such an attempt is recorded as
                    // cancelled (its node pending), never as a failure.
                    Command::Wait => tokio::select! {
                        biased;
                        _ = self.options.cancel.cancelled() => Input::CancelRequested,
                        // Attempts queued for workers are left in the queue: the next driver
                        // adopts them instead of running them again.
                        _ = self.options.hand_back.cancelled(), if !handing_back => {
                            handing_back = true;
                            Input::HandBack {
                                reason: HAND_BACK.into(),
                                continuing: attempt::leave_remote(&mut tokens),
                            }
                        }
                        Some(done) = join.join_next() => match done {
                            Ok(result) => {
                                tokens.remove(&result.key);
                                let cancelling = self.options.cancel.is_cancelled();
                                // Attempts that ended together are recorded together: one
                                // commit, one render.
                                while let Some(more) = join.try_join_next() {
                                    match more {
                                        Ok(r) => {
                                            tokens.remove(&r.key);
                                            ended_too.push(r);
                                        }
                                        Err(e) => tracing::error!(error = %e, "an attempt task panicked or was aborted"),
                                    }
                                }
                                Input::AttemptEnded { result: Box::new(result), cancelling }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "an attempt task panicked or was aborted");
                                continue;
                            }
                        },
                        _ = lease_tick.tick() => {
                            match self.store.renew_lease(&st.run_id, &st.fence, self.options.lease_ttl).await {
                                Ok(()) => continue,
                                Err(e) => Input::LeaseLost(e),
                            }
                        }
                        _ = cancel_poll.tick() => {
                            self.poll_remote_cancel(st).await;
                            continue;
                        }
                        Some((key, usage, model)) = usage_rx.recv() => Input::UsageReported { key, usage, model },
                        _ = heartbeat.tick() => Input::Heartbeat,
                        _ = tokio::time::sleep_until(next_due(&retries_due)), if !retries_due.is_empty() => {
                            let now = tokio::time::Instant::now();
                            let due: Vec<NodeKey> = retries_due.iter().filter(|(at, _)| *at <= now).map(|(_, k)| k.clone()).collect();
                            retries_due.retain(|(at, _)| *at > now);
                            Input::RetriesDue(due)
                        }
                    },
                };
                commands.extend(st.handle(next, clock.now()));
                let cancelling = self.options.cancel.is_cancelled();
                for result in ended_too.drain(..) {
                    commands.extend(st.handle(
                        Input::AttemptEnded {
                            result: Box::new(result),
                            cancelling,
                        },
                        clock.now(),
                    ));
                }
            }
        }
    }

    /// Carries out `Command::Snapshot`: one snapshot of the working copy serves every step in
    /// the list. A snapshot that fails is logged, never fatal: the step just cannot be rolled
    /// back.
    async fn snapshot_steps(
        &self,
        st: &RunState,
        repo: &mut Option<Option<crate::vcs::Repo>>,
        steps: Vec<StepSnapshot>,
    ) -> Result<()> {
        // In pool mode the files change where the attempts run: each worker snapshots its
        // working copy around the attempts of a step (engine/pool.rs), the driver takes none.
        if !self.options.vcs_snapshots || self.options.pool || steps.is_empty() {
            return Ok(());
        }
        if repo.is_none() {
            let dir = match &self.options.workdir {
                Some(d) => Some(d.clone()),
                None => std::env::current_dir().ok(),
            };
            *repo = Some(match dir {
                Some(d) => crate::vcs::Repo::find_or_log(&d).await,
                None => None,
            });
        }
        let Some(Some(repo)) = repo.as_ref() else {
            return Ok(());
        };
        let first = &steps[0];
        let name = crate::vcs::step_ref(&st.run_id, &first.name, first.iteration, first.after);
        let message = format!(
            "smithers: {} step `{}` (iteration {}) of run {}",
            if first.after { "after" } else { "before" },
            first.name,
            first.iteration,
            st.run_id
        );
        let snap = match repo.snapshot(&name, &message).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, step = %first.name, "working-copy snapshot failed; this step cannot be rolled back");
                return Ok(());
            }
        };
        let mut b = WriteBatch::new(&st.run_id);
        for (i, s) in steps.iter().enumerate() {
            if i > 0 {
                let name = crate::vcs::step_ref(&st.run_id, &s.name, s.iteration, s.after);
                if let Err(e) = repo.keep(&name, &snap.commit).await {
                    tracing::warn!(error = %e, "could not keep a snapshot reachable");
                }
            }
            let taken = Some((snap.commit.clone(), snap.head.clone()));
            b.push(Write::StepVcs(crate::store::StepVcs {
                step: crate::store::StepKey::Named {
                    name: s.name.clone(),
                    iteration: s.iteration,
                },
                repo: snap.root.display().to_string(),
                backend: snap.backend.as_str().to_owned(),
                before: if s.after { None } else { taken.clone() },
                after: if s.after { taken } else { None },
                commit_created: None,
            }));
        }
        self.commit(&st.fence, b).await
    }

    fn render_catching(&self, ctx: &Ctx<I>) -> Result<Node> {
        render_catching(&*self.workflow, ctx)
    }

    /// The context of a render over `snap`.
    fn ctx(&self, input: Arc<I>, snap: Arc<RunSnapshot>) -> Ctx<I> {
        Ctx::new(input, snap).with_skip_phases(&self.options.skip_phases)
    }
}

/// Calls the workflow function: a panic becomes an error, and so does a read of a loop the
/// tree does not have.
fn render_catching<I>(workflow: &dyn Fn(&Ctx<I>) -> Node, ctx: &Ctx<I>) -> Result<Node> {
    let mut tree = std::panic::catch_unwind(AssertUnwindSafe(|| workflow(ctx)))
        .map_err(|p| Error::RenderPanicked(panic_message(&*p)))?;
    ctx.check_loop_reads(&tree)?;
    if !ctx.skip_phases().is_empty() {
        skip_named(&mut tree, ctx.skip_phases());
    }
    Ok(tree)
}

/// Marks every `<Phase>` and `<Step>` named in `names` as `skip_if`.
fn skip_named(node: &mut Node, names: &[String]) {
    if let NodeKind::Phase(p) | NodeKind::Step(p) = &mut node.kind {
        if names.contains(&p.name) {
            p.skip_if = true;
        }
    }
    for c in &mut node.children {
        skip_named(c, names);
    }
}

/// [`Engine::render_checked`] without an engine: the tree a new run with `input` renders first,
/// or the error the run would fail with before anything starts (a panic while rendering, an
/// unknown loop, an invalid or duplicate id). What `graph --input` prints. `skip_phases` as
/// [`EngineOptions::skip_phases`].
pub fn render_checked<I>(
    workflow: &dyn Fn(&Ctx<I>) -> Node,
    input: I,
    skip_phases: &[String],
) -> Result<Node> {
    let ctx = Ctx::empty(input).with_skip_phases(skip_phases);
    let tree = render_catching(workflow, &ctx)?;
    crate::plan::check_ids(&tree)?;
    Ok(tree)
}

/// Frees the in-memory state of a run that stopped. A large one (the tree, node states and
/// outputs of tens of thousands of nodes take a noticeable part of a second to free) is freed
/// on a thread of its own, so the caller has its report without waiting for the allocator.
fn free(st: RunState) {
    /// Node states from which freeing is worth a thread.
    const LARGE: usize = 10_000;
    if st.node_count() >= LARGE {
        // If no thread can be made, the closure (and the state in it) is dropped right here.
        let _ = std::thread::Builder::new()
            .name("smithers-free".into())
            .spawn(move || drop(st));
    }
}

/// The name a run of `tree` is recorded under: its `<Workflow name>`, or `workflow`.
fn workflow_name(tree: &Node) -> String {
    match tree.kind() {
        NodeKind::Workflow(w) if !w.name.is_empty() => w.name.clone(),
        _ => "workflow".to_owned(),
    }
}

/// The earliest time a retry is due.
fn next_due(due: &[(tokio::time::Instant, NodeKey)]) -> tokio::time::Instant {
    due.iter()
        .map(|(at, _)| *at)
        .min()
        .unwrap_or_else(tokio::time::Instant::now)
}

/// Carries out `Command::RunHooks`: each hook runs once, in order, and what it sets in `state`
/// is handed back to the machine (which commits it with the transition that fired it).
fn run_hooks(run_id: &str, calls: Vec<HookCall>) -> Vec<(String, String)> {
    let mut state = Vec::new();
    for call in calls {
        let mut cx = HookCtx {
            run_id,
            name: &call.name,
            state: Vec::new(),
        };
        (call.hook)(&mut cx);
        state.append(&mut cx.state);
    }
    state
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A timer that first fires one `period` from now, then every `period` (a tick missed while
/// busy is delayed, not bunched). Not `tokio::time::interval`, whose first tick is due at once:
/// awaiting it costs up to a millisecond of timer resolution, which every run start paid once
/// per timer.
pub(crate) fn periodic(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
