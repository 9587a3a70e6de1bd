//! The decision core: the engine's decisions as a sans-I/O state machine over the in-memory run.
//!
//! [`RunState::handle`] takes one [`Input`] — what happened: the run started or resumed, a
//! render, the lookups it asked for, hooks that ran, an attempt's end, approval decisions, a
//! timer, a cancellation — and the time it happened, updates the state and returns the
//! [`Command`]s that follow from it: writes to commit, attempts to start or stop, lookups to make,
//! hooks to run, whether to wait, how the run finishes. The executor (`crate::engine`) carries
//! them out with the store, the agents, the clock and tokio, and renders again when a batch of
//! commands is done.
//!
//! **Architecture Invariant:** nothing here can do I/O. The core's imports are the domain model,
//! the tree, the planner, events and the store's *records* (write batches, loaded runs) — never
//! the `Store` trait, a backend, tokio, a clock, files, processes or the network; time comes in
//! as the `now` of each input. `smithers-core/tests/architecture.rs` checks these imports. The
//! tests in `tests.rs` feed input sequences only.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::agent::AgentResponse;
use crate::ctx::Reads;
use crate::error::{Error, Result, TaskError};
use crate::events::{Event, EventKind};
use crate::model::{NodeKey, NodeState, NodeStatus, RunStatus, Timestamp, Usage};
use crate::node::{Hook, Node, NodeKind, TaskExec, TaskSpec};
use crate::plan::{self, Outcome, PlanInput, Runnable};
use crate::prompt::RejectedReply;
use crate::store::{ApprovalRecord, AttemptEnd, NodeRecord, Write, WriteBatch};

mod outcome;
mod output;
mod render;
mod state;
#[cfg(test)]
mod tests;

use outcome::supervisor;
use output::{cache_key, extract_output};
pub(crate) use state::RunState;
use state::Running;

/// What happened: everything that can move a run on.
pub(crate) enum Input {
    /// A new run's row was created (holding its lease): record that it started.
    Started {
        /// The workflow's name.
        workflow: String,
    },
    /// A run's lease was taken again and its state loaded (see [`RunState::loaded`]);
    /// `abandoned` attempts of a dead process were reset; `adopted` attempts (node, iteration,
    /// attempt) are queued for workers (pool mode) and carry on: their outcomes are awaited,
    /// not run again.
    Resumed {
        abandoned: u32,
        adopted: Vec<(NodeKey, u32)>,
    },
    /// The workflow function rendered over the current state (or panicked: `Err`), with the
    /// state it wrote while rendering.
    Rendered {
        tree: Result<Node>,
        state_writes: Vec<(String, String)>,
        reads: Box<Reads>,
    },
    /// Nothing the last render read has changed: plan the kept tree again.
    Replan,
    /// The answers to [`Command::Prepare`], in its order; the list stops at the first task whose
    /// output table cannot hold its type.
    Prepared(Vec<Prepared>),
    /// An attempt's body returned. `cancelling`: the run was being cancelled by then.
    AttemptEnded {
        result: Box<AttemptResult>,
        cancelling: bool,
    },
    /// Approval decisions read while waiting for them.
    ApprovalsPolled(Vec<ApprovalRecord>),
    /// A running attempt reported its usage so far (`ProgressSink::usage`).
    UsageReported {
        key: NodeKey,
        usage: Usage,
        model: Option<String>,
    },
    /// The hooks of [`Command::RunHooks`] ran and wrote these `state` keys.
    HooksRan(Vec<(String, String)>),
    /// The heartbeat timer fired.
    Heartbeat,
    /// Ctrl-C or `smithers cancel`.
    CancelRequested,
    /// A new run's row was created, but no driver is to run it here (`run --detach`): record
    /// that it waits for a worker, `reason` saying why.
    Queued { reason: String },
    /// The driver stops without ending the run (a `worker` told to stop): stop every attempt
    /// it runs itself, record them as interrupted (their nodes pending), and leave the run
    /// `queued` for another worker, `reason` saying why. The `continuing` attempts are queued
    /// for workers (pool mode): they carry on without this driver, their rows left in progress
    /// (queued, claimed or recorded) and their nodes running, for the next driver to adopt.
    HandBack {
        reason: String,
        continuing: Vec<NodeKey>,
    },
    /// The answer to [`Command::StopAll`]: how each running attempt ended once told to stop
    /// (the executor makes up a result for one that did not end in time).
    AllStopped(Vec<AttemptResult>),
    /// The lease could not be renewed: another process may be driving the run.
    LeaseLost(Error),
    /// The backoffs of these tasks ([`Command::RetryAfter`]) are over.
    RetriesDue(Vec<NodeKey>),
    /// The drive stopped with an error of the store or the machinery: the run must not stay
    /// `running`.
    DriveFailed(String),
}

/// What an attempt's body produced.
pub(crate) struct AttemptResult {
    pub(crate) key: NodeKey,
    pub(crate) attempt: u32,
    /// How long the body ran.
    pub(crate) duration_ms: i64,
    pub(crate) outcome: std::result::Result<AttemptOutput, (TaskError, Option<AgentResponse>)>,
}

/// A successful body's result.
pub(crate) enum AttemptOutput {
    /// A compute task's (or static) value.
    Value(Value),
    /// An agent's reply, from which the output is extracted.
    Agent(AgentResponse),
}

/// A `<Phase>`/`<Step>` hook to run, with what it may read.
pub(crate) struct HookCall {
    pub(crate) hook: Hook,
    /// The phase or step's name.
    pub(crate) name: String,
}

/// Where an output that needs no attempt body comes from.
#[derive(Clone, Copy)]
enum Source {
    /// A `value={..}` task.
    Static,
    /// A `<Workflow cache>` hit.
    Cache,
}

/// The answer to one [`Preparation`].
pub(crate) enum Prepared {
    /// The output table is ready; `cached` is the output stored under the cache key, if any.
    Ready { cached: Option<Value> },
    /// The output type does not fit its table (a definition error).
    TableError(Error),
}

/// A lookup a runnable task needs before it can start: its output table must exist, and under
/// `<Workflow cache>` an agent task may find its output under `cache_key`.
pub(crate) struct Preparation {
    pub(crate) task: Arc<TaskSpec>,
    pub(crate) cache_key: Option<String>,
}

/// An attempt to run: its row is committed (by the [`Command::Commit`] before it) and its body
/// is to be spawned.
pub(crate) struct StartAttempt {
    pub(crate) task: Arc<TaskSpec>,
    pub(crate) iteration: u32,
    pub(crate) attempt: u32,
    /// The previous attempt's reply and why it was rejected, quoted in an agent's prompt (only
    /// when that attempt failed because of its reply).
    pub(crate) rejected: Option<RejectedReply>,
    /// An attempt queued for workers by the run's previous driver (pool mode): its row exists
    /// and a worker may be running it; the executor awaits its outcome instead of starting it.
    pub(crate) adopted: bool,
}

/// What the executor does next, in order. When the commands of an input are all done (none of
/// them waits, finishes or feeds another input), the tree is rendered again.
pub(crate) enum Command {
    /// Commit the batch in one transaction; an error ends the drive.
    Commit(WriteBatch),
    /// Ensure the output tables and look up the cache, in order, stopping at the first table
    /// error; then feed [`Input::Prepared`].
    Prepare(Vec<Preparation>),
    /// Snapshot the working copy for these steps (one snapshot serves them all) and record it.
    Snapshot(Vec<StepSnapshot>),
    /// Spawn an attempt's body.
    Start(StartAttempt),
    /// Run these hooks, in order, on the executor and feed [`Input::HooksRan`] with the state
    /// they wrote.
    RunHooks(Vec<HookCall>),
    /// Tell a running attempt to stop (the tree no longer mounts its task).
    Stop(NodeKey),
    /// Feed [`Input::RetriesDue`] with `key` once `delay` has passed: the task's next attempt
    /// waits out its backoff (the executor keeps the timer; decisions never sleep).
    RetryAfter { key: NodeKey, delay: Duration },
    /// Stop every running attempt, give them a moment to end with what they produced, abort the
    /// rest, and feed [`Input::AllStopped`].
    StopAll,
    /// Wait for the next attempt to end, a timer or a cancellation, and feed it.
    Wait,
    /// Only a human decision can move the run: wait a poll period, read the approvals and feed
    /// [`Input::ApprovalsPolled`] (or [`Input::CancelRequested`]).
    WaitForApprovals,
    /// The run is over with this status: commit `batch` (its row, event and supervisor keys),
    /// then report.
    Finish {
        status: RunStatus,
        error: Option<String>,
        batch: WriteBatch,
    },
    /// The drive ends with this error (the run's status is left to the caller).
    Abort(Error),
}

/// A step whose working copy is to be recorded: before it starts, or after it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StepSnapshot {
    pub(crate) name: String,
    pub(crate) iteration: u32,
    pub(crate) after: bool,
}

/// Why every running attempt is being stopped ([`Command::StopAll`]), and so what follows.
pub(crate) enum Stopping {
    /// The run is cancelled: record the attempts, then finish `cancelled`.
    Cancel,
    /// The run is handed back (`Input::HandBack`): record the attempts, then finish `queued`.
    HandBack(String),
    /// The lease is lost: end the drive writing nothing (the run is another process's).
    LeaseLost(Error),
}

/// Runnable tasks waiting for the answers to their [`Command::Prepare`].
pub(crate) struct PendingStart {
    runnable: Vec<Runnable>,
    cache_keys: Vec<Option<String>>,
    limit: usize,
    awaiting_approval: Vec<String>,
}

impl RunState {
    /// Takes what happened at `now` and returns what to do: the engine's decisions, with no
    /// I/O.
    pub(crate) fn handle(&mut self, input: Input, now: Timestamp) -> VecDeque<Command> {
        self.now = now;
        let mut cmds = VecDeque::new();
        match input {
            Input::Started { workflow } => {
                let mut b = WriteBatch::new(&self.run_id);
                b.push(Write::Event(Event::run(
                    &self.run_id,
                    now,
                    EventKind::RunStarted { workflow },
                )));
                supervisor(&mut b, "running", "Run started");
                cmds.push_back(Command::Commit(b));
            }
            Input::Resumed { abandoned, adopted } => {
                let mut b = WriteBatch::new(&self.run_id);
                b.push(Write::Event(Event::run(
                    &self.run_id,
                    now,
                    EventKind::RunResumed { abandoned },
                )));
                let summary = if adopted.is_empty() {
                    format!("Run resumed ({abandoned} interrupted attempt(s) will be retried)")
                } else {
                    format!(
                        "Run resumed ({abandoned} interrupted attempt(s) will be retried, {} queued attempt(s) adopted)",
                        adopted.len()
                    )
                };
                self.adopted.extend(adopted);
                supervisor(&mut b, "running", &summary);
                cmds.push_back(Command::Commit(b));
            }
            Input::HooksRan(state) => {
                let mut b = self
                    .pending_hooks
                    .take()
                    .unwrap_or_else(|| WriteBatch::new(&self.run_id));
                for (k, v) in state {
                    self.set_state(&mut b, k, v);
                }
                cmds.push_back(Command::Commit(b));
                if !self.snapshots.is_empty() {
                    cmds.push_back(Command::Snapshot(std::mem::take(&mut self.snapshots)));
                }
            }
            Input::DriveFailed(error) => {
                cmds.push_back(Command::Commit(
                    self.end_batch(RunStatus::Failed, Some(&error)),
                ));
            }
            Input::Rendered {
                tree,
                state_writes,
                reads,
            } => {
                self.reads = *reads;
                self.stale = false;
                self.cursors = plan::Cursors::default();
                match tree {
                    Ok(tree) => {
                        self.rendered(&tree, true, state_writes, &mut cmds);
                        self.tree = Some(tree);
                    }
                    Err(e) => {
                        self.failure.get_or_insert(e);
                        self.tree = None;
                        let empty = Node::fragment(None::<Node>);
                        self.rendered(&empty, true, state_writes, &mut cmds);
                    }
                }
            }
            Input::Replan => match self.tree.take() {
                Some(tree) => {
                    self.rendered(&tree, false, Vec::new(), &mut cmds);
                    self.tree = Some(tree);
                }
                // Nothing kept: the executor renders (it only replans a tree that stands).
                None => self.stale = true,
            },
            Input::Prepared(prepared) => self.prepared(prepared, &mut cmds),
            Input::AttemptEnded { result, cancelling } => {
                if cancelling && result.outcome.is_err() {
                    // Ended because the run is being cancelled: the cancellation records it,
                    // with what it produced.
                    self.stopped.push(*result);
                } else if let Some(b) = self.attempt_ended(*result) {
                    cmds.push_back(Command::Commit(b));
                }
            }
            Input::ApprovalsPolled(decided) => {
                self.stale = true;
                self.apply_approvals(decided);
            }
            Input::UsageReported { key, usage, model } => {
                self.usage_reported(key, usage, model, &mut cmds)
            }
            Input::RetriesDue(keys) => {
                for k in keys {
                    self.backing_off.remove(&k);
                }
            }
            Input::Heartbeat => {
                let mut b = WriteBatch::new(&self.run_id);
                b.push(Write::State {
                    key: "supervisor.heartbeat".into(),
                    value: now.to_string(),
                });
                cmds.push_back(Command::Commit(b));
            }
            Input::Queued { reason } => {
                cmds.push_back(Command::Commit(
                    self.end_batch(RunStatus::Queued, Some(&reason)),
                ));
            }
            Input::HandBack { reason, continuing } => {
                if self.stopping.is_none() {
                    // Nothing is written for them: the next driver adopts them as they are.
                    for key in &continuing {
                        self.running.remove(key);
                    }
                }
                if self.running.is_empty() {
                    cmds.push_back(self.finish(RunStatus::Queued, Some(reason)));
                } else if self.stopping.is_none() {
                    self.stopping = Some(Stopping::HandBack(reason));
                    cmds.push_back(Command::StopAll);
                }
            }
            Input::CancelRequested => {
                if self.running.is_empty() {
                    cmds.push_back(self.finish(RunStatus::Cancelled, None));
                } else {
                    self.stopping = Some(Stopping::Cancel);
                    cmds.push_back(Command::StopAll);
                }
            }
            Input::LeaseLost(e) => {
                // The run is another process's now: stop every attempt and write nothing, not
                // even their cancellation (the new driver abandons and re-runs them).
                if self.running.is_empty() {
                    cmds.push_back(Command::Abort(e));
                } else {
                    self.stopping = Some(Stopping::LeaseLost(e));
                    cmds.push_back(Command::StopAll);
                }
            }
            Input::AllStopped(results) => match self.stopping.take() {
                Some(Stopping::LeaseLost(e)) => {
                    self.running.clear();
                    self.stopped.clear();
                    cmds.push_back(Command::Abort(e));
                }
                Some(Stopping::HandBack(reason)) => {
                    let b = self.cancel_running(results, &reason);
                    cmds.push_back(Command::Commit(b));
                    cmds.push_back(self.finish(RunStatus::Queued, Some(reason)));
                }
                Some(Stopping::Cancel) | None => {
                    let b = self.cancel_running(results, "the run was cancelled");
                    cmds.push_back(Command::Commit(b));
                    cmds.push_back(self.finish(RunStatus::Cancelled, None));
                }
            },
        }
        for (key, delay) in self.new_backoffs.drain(..) {
            cmds.push_back(Command::RetryAfter { key, delay });
        }
        cmds
    }

    /// A render (`fresh`) or a kept tree: plan it, stop what it unmounted, record what it
    /// decided on its own; then render again, finish, or prepare the runnable tasks.
    fn rendered(
        &mut self,
        tree: &Node,
        fresh: bool,
        state_writes: Vec<(String, String)>,
        cmds: &mut VecDeque<Command>,
    ) {
        let running = self.running_keys();
        let plan = plan::plan_with(
            tree,
            &PlanInput {
                nodes: &self.nodes,
                loops: &self.snap.loops,
                running: &running,
                approvals: &self.approvals,
                node_loop: &self.snap.node_loop,
            },
            &mut self.cursors,
        );
        if !plan.node_loop.is_empty() {
            // Outputs are keyed by their loop's counter: what `output` reads may differ now.
            self.stale = true;
            let snap = Arc::make_mut(&mut self.snap);
            for (id, lp) in &plan.node_loop {
                match lp {
                    Some(l) => snap.node_loop.insert(id.clone(), l.clone()),
                    None => snap.node_loop.remove(id),
                };
            }
        }

        // A running task the tree no longer mounts (its branch switched, its loop ended) stops.
        for (key, r) in self.running.iter_mut() {
            if !r.unmounted && !plan.mounted_running.contains(key) {
                r.unmounted = true;
                cmds.push_back(Command::Stop(key.clone()));
            }
        }

        // What the render decided on its own: state writes, skips, loop moves, denied
        // approvals, approval requests, the frame.
        let (b, decided, hooks) = self.on_render(tree, fresh, &plan, state_writes);
        if !hooks.is_empty() {
            // The hooks run on the executor; what they write commits with this render's
            // decisions, then the tree is rendered again over it.
            self.pending_hooks = Some(b);
            cmds.push_back(Command::RunHooks(hooks));
            return;
        }
        if !b.is_empty() {
            cmds.push_back(Command::Commit(b));
        }
        if !self.snapshots.is_empty() {
            cmds.push_back(Command::Snapshot(std::mem::take(&mut self.snapshots)));
        }
        if decided && self.failure.is_none() {
            return; // the tree may differ now: render again before starting anything
        }

        // Is the run over?
        let complete = matches!(plan.outcome, Outcome::Complete);
        if let Outcome::Failed(e) = plan.outcome {
            self.failure.get_or_insert(e);
        }
        if self.running.is_empty() {
            if let Some(e) = self.failure.take() {
                cmds.push_back(self.finish(RunStatus::Failed, Some(e.to_string())));
                return;
            }
            if complete {
                cmds.push_back(self.finish(RunStatus::Finished, None));
                return;
            }
        }

        let awaiting_approval: Vec<String> = plan
            .awaiting_approval
            .iter()
            .map(|r| format!("`{}`", r.task.id))
            .collect();
        if self.failure.is_some() {
            self.idle(awaiting_approval, cmds);
            return;
        }
        // Start what is runnable, within the run-wide limit (after the lookups).
        let limit = match tree.kind() {
            NodeKind::Workflow(w) => w.max_concurrency.unwrap_or(self.max_concurrency),
            _ => self.max_concurrency,
        }
        .max(1);
        // `<Workflow cache>`: an agent task whose key matches an earlier output reuses it.
        let cache = match tree.kind() {
            NodeKind::Workflow(w) if w.cache => Some(w.name.clone()),
            _ => None,
        };
        if let NodeKind::Workflow(w) = tree.kind() {
            self.workflow.clone_from(&w.name);
            self.workflow_retry_policy.clone_from(&w.retry_policy);
            self.run_budget.clone_from(&w.budget);
            self.on_budget = w.on_budget;
        }
        if self.parked.is_some() {
            // Waiting for a budget raise: nothing new starts.
            self.idle(awaiting_approval, cmds);
            return;
        }
        let runnable: Vec<Runnable> = plan
            .runnable
            .into_iter()
            .filter(|r| {
                let key = (r.task.id.to_string(), r.iteration);
                !self.running.contains_key(&key) && !self.backing_off.contains(&key)
            })
            .collect();
        if runnable.is_empty() {
            self.idle(awaiting_approval, cmds);
            return;
        }
        // Only the first free slots can start (or find their output in the cache). An attempt
        // adopted from the previous driver is the node's, cached output or not: a worker runs
        // it or has run it, and its outcome is consumed (a cache hit beside it would leave it
        // queued for a worker to run after the node finished).
        let free = limit.saturating_sub(self.running.len());
        let cache_keys: Vec<Option<String>> = runnable
            .iter()
            .enumerate()
            .map(|(i, r)| match (&cache, &r.task.exec) {
                (Some(wf), TaskExec::Agent(agent))
                    if i < free
                        && !self
                            .adopted
                            .contains_key(&(r.task.id.to_string(), r.iteration)) =>
                {
                    Some(cache_key(wf, &r.task, agent.as_ref()))
                }
                _ => None,
            })
            .collect();
        cmds.push_back(Command::Prepare(
            runnable
                .iter()
                .zip(&cache_keys)
                .map(|(r, k)| Preparation {
                    task: r.task.clone(),
                    cache_key: k.clone(),
                })
                .collect(),
        ));
        self.pending = Some(PendingStart {
            runnable,
            cache_keys,
            limit,
            awaiting_approval,
        });
    }

    /// The lookups are done: complete static values and cache hits in one shared batch (then
    /// render again: the tree may depend on them), or start attempts within the limit.
    fn prepared(&mut self, prepared: Vec<Prepared>, cmds: &mut VecDeque<Command>) {
        let Some(PendingStart {
            runnable,
            cache_keys,
            limit,
            awaiting_approval,
        }) = self.pending.take()
        else {
            return;
        };
        let mut statics = WriteBatch::new(&self.run_id);
        let mut over_budget = WriteBatch::new(&self.run_id);
        for ((r, key), p) in runnable.into_iter().zip(cache_keys).zip(prepared) {
            // An output type that does not fit its table is a definition error: the run fails
            // with it (after the running attempts end) instead of staying `running`.
            let cached = match p {
                Prepared::Ready { cached } => cached,
                Prepared::TableError(e) => {
                    self.failure.get_or_insert(e);
                    break;
                }
            };
            // Static values have no side effects and take no time: every one the plan offers
            // starts and finishes in one shared transaction.
            if let TaskExec::Value(v) = &r.task.exec {
                let v = v.to_json();
                self.complete_static(&mut statics, &r, v, Source::Static);
                continue;
            }
            if self.running.len() >= limit || !statics.is_empty() {
                continue;
            }
            if let Some(v) = cached {
                self.complete_static(&mut statics, &r, Ok(v), Source::Cache);
                continue;
            }
            // Checked before every attempt: a task or run past its budget does not start.
            if self.parked.is_some() {
                continue;
            }
            if let Some(reason) = self.over_budget(&r.task, None) {
                self.budget_exceeded_before_start(&mut over_budget, &r, reason);
                continue;
            }
            let (b, start) = self.start(r, key);
            cmds.push_back(Command::Commit(b));
            cmds.push_back(Command::Start(start));
        }
        if !over_budget.is_empty() {
            statics.writes.extend(over_budget.writes);
        }
        if !statics.is_empty() {
            cmds.push_back(Command::Commit(statics));
            return;
        }
        self.idle(awaiting_approval, cmds);
    }

    /// Nothing more starts now: wait for approvals, for the running attempts, or stop.
    fn idle(&mut self, awaiting_approval: Vec<String>, cmds: &mut VecDeque<Command>) {
        if let Some(reason) = &self.parked {
            cmds.push_back(if self.running.is_empty() {
                self.finish(RunStatus::WaitingBudget, Some(reason.clone()))
            } else {
                Command::Wait
            });
            return;
        }
        if self.running.is_empty() && self.failure.is_none() && !self.backing_off.is_empty() {
            // A task waits out its backoff: its timer moves the run on.
            cmds.push_back(Command::Wait);
            return;
        }
        if self.running.is_empty() && self.failure.is_none() && !awaiting_approval.is_empty() {
            // Only human decisions can move the run on.
            cmds.push_back(if self.wait_for_approval {
                Command::WaitForApprovals
            } else {
                self.finish(
                    RunStatus::WaitingApproval,
                    Some(format!(
                        "waiting for approval of {}",
                        awaiting_approval.join(", ")
                    )),
                )
            });
            return;
        }
        if self.running.is_empty() {
            let e = self.failure.take().unwrap_or(Error::Stuck);
            cmds.push_back(self.finish(RunStatus::Failed, Some(e.to_string())));
            return;
        }
        // A failure waits for the running attempts to end.
        cmds.push_back(Command::Wait);
    }

    /// A static value or a cache hit: an attempt that starts and ends in `b`.
    fn complete_static(
        &mut self,
        b: &mut WriteBatch,
        r: &Runnable,
        v: std::result::Result<Value, String>,
        source: Source,
    ) {
        let t = &r.task;
        let attempt = self.attempts(&t.id, r.iteration) + 1;
        b.push(Write::AttemptStart {
            node_id: t.id.to_string(),
            iteration: r.iteration,
            attempt,
            agent: match source {
                Source::Static => None,
                Source::Cache => Some("cache".to_owned()),
            },
            owner: self.fence.owner.clone(),
        });
        // The same events as any attempt, so whatever reads events sees every node start.
        b.push(Write::Event(Event::node(
            &self.run_id,
            &t.id,
            r.iteration,
            self.now,
            EventKind::NodeStarted { attempt },
        )));
        let validated = v.and_then(|v| {
            t.output.check(&v).map_err(|e| match source {
                Source::Static => format!("static value of `{}`: {e}", t.id),
                Source::Cache => format!("cached output of `{}`: {e}", t.id),
            })
        });
        match validated {
            Ok(value) => self.on_success(
                b,
                t,
                r.iteration,
                r.loop_id.clone(),
                attempt,
                value,
                AttemptEnd::default(),
            ),
            Err(e) => self.on_failure(
                b,
                t,
                r.iteration,
                r.loop_id.clone(),
                attempt,
                TaskError::terminal(e),
                AttemptEnd::default(),
            ),
        }
    }

    /// A new attempt of `r`: the batch recording it running, and what to spawn. An attempt
    /// adopted from the previous driver keeps its number and its row (no new attempt starts).
    fn start(&mut self, r: Runnable, cache_key: Option<String>) -> (WriteBatch, StartAttempt) {
        let t = r.task;
        let adopted = self.adopted.remove(&(t.id.to_string(), r.iteration));
        let attempt = adopted.unwrap_or_else(|| self.attempts(&t.id, r.iteration) + 1);
        let agent_name = match &t.exec {
            TaskExec::Agent(a) => Some(a.name().to_owned()),
            _ => None,
        };
        let mut b = WriteBatch::new(&self.run_id);
        b.push(Write::Node(NodeRecord {
            node_id: t.id.to_string(),
            iteration: r.iteration,
            status: NodeStatus::Running,
            attempts: attempt,
            output_table: None,
            loop_id: r.loop_id.clone(),
            last_error: None,
        }));
        if adopted.is_none() {
            b.push(Write::AttemptStart {
                node_id: t.id.to_string(),
                iteration: r.iteration,
                attempt,
                agent: agent_name,
                owner: self.fence.owner.clone(),
            });
            b.push(Write::Event(Event::node(
                &self.run_id,
                &t.id,
                r.iteration,
                self.now,
                EventKind::NodeStarted { attempt },
            )));
        }
        let (last_error, failures) = self
            .node(&t.id, r.iteration)
            .map_or((None, 0), |n| (n.last_error.clone(), n.failures));
        let rejected = self.rejected.get(&(t.id.to_string(), r.iteration)).cloned();
        self.set_node(
            &t.id,
            r.iteration,
            NodeState {
                status: NodeStatus::Running,
                attempts: attempt,
                failures,
                last_error: last_error.clone(),
            },
        );
        self.running.insert(
            (t.id.to_string(), r.iteration),
            Running {
                task: t.clone(),
                loop_id: r.loop_id,
                unmounted: false,
                cache_key,
            },
        );
        let start = StartAttempt {
            task: t,
            iteration: r.iteration,
            attempt,
            rejected,
            adopted: adopted.is_some(),
        };
        (b, start)
    }

    /// The end of an attempt: output + node + attempt + events in one batch.
    fn attempt_ended(&mut self, res: AttemptResult) -> Option<WriteBatch> {
        let running = self.running.remove(&res.key)?;
        let mut b = WriteBatch::new(&self.run_id);
        if running.unmounted {
            let key = res.key.clone();
            self.on_cancelled(
                &mut b,
                &key,
                running.loop_id,
                "a re-render no longer mounts this task (its branch or loop moved on)",
                Some(res),
            );
            return Some(b);
        }
        let t = running.task;
        let (id, it) = (res.key.0.clone(), res.key.1);
        let streamed = self.streamed.remove(&res.key);
        let budget_stop = self.budget_stops.remove(&res.key);
        if let (Some(reason), Err(_)) = (&budget_stop, &res.outcome) {
            if self.on_budget == crate::budget::OnBudget::Park {
                // Stopped by the budget: the attempt is recorded stopped, the run parks.
                self.parked = Some(reason.clone());
                let key = res.key.clone();
                let mut res = res;
                if let (Err((e, resp)), Some((u, m))) = (&mut res.outcome, &streamed) {
                    e.message = format!("stopped by the budget: {}", e.message);
                    let r = resp.get_or_insert_with(AgentResponse::default);
                    if r.usage == Usage::default() {
                        r.usage = u.clone();
                    }
                    if r.model.is_none() {
                        r.model.clone_from(m);
                    }
                }
                self.on_cancelled(&mut b, &key, running.loop_id, reason, Some(res));
                return Some(b);
            }
        }
        let mut end = AttemptEnd {
            duration_ms: res.duration_ms,
            ..AttemptEnd::default()
        };
        // `reply`: an agent's reply, quoted back if it does not validate.
        let (value, transcript, reply) = match res.outcome {
            Ok(AttemptOutput::Value(v)) => (Ok(v), None, None),
            Ok(AttemptOutput::Agent(resp)) => {
                end.usage = resp.usage.clone();
                end.session_id = resp.session_id.clone();
                end.exit_code = resp.exit_code;
                end.model = resp.model.clone();
                let v = extract_output(&t, &resp);
                let reply = match (&resp.json, resp.text.trim().is_empty()) {
                    (Some(json), true) => json.to_string(),
                    _ => resp.text.clone(),
                };
                (v, resp.transcript, Some(reply))
            }
            Err((e, resp)) => {
                if let Some(r) = &resp {
                    end.usage = r.usage.clone();
                    end.exit_code = r.exit_code;
                    end.session_id = r.session_id.clone();
                    end.model = r.model.clone();
                }
                (Err(e), resp.and_then(|r| r.transcript), None)
            }
        };
        // A killed agent may not have reported its usage at the end: what it streamed counts.
        if let Some((u, m)) = streamed {
            if end.usage == Usage::default() {
                end.usage = u;
            }
            if end.model.is_none() {
                end.model = m;
            }
        }
        let value = match (budget_stop, value) {
            (Some(reason), Err(_)) => Err(TaskError::terminal(reason)),
            (_, v) => v,
        };
        if let Some(text) = transcript {
            b.push(Write::Transcript {
                node_id: id.clone(),
                iteration: it,
                attempt: res.attempt,
                text,
            });
        }
        let validated = value.and_then(|v| {
            t.output.check(&v).map_err(|e| {
                TaskError::retryable(format!(
                    "node `{id}` returned output that does not match `{}`: {e}",
                    t.output.short_name()
                ))
            })
        });
        match (&validated, reply) {
            (Err(e), Some(reply)) => {
                let rejected = RejectedReply {
                    reply,
                    error: e.message.clone(),
                };
                self.rejected.insert(res.key.clone(), rejected);
            }
            // Not the reply's fault (or a success): the next attempt sends the original prompt.
            _ => {
                self.rejected.remove(&res.key);
            }
        }
        match validated {
            Ok(v) => {
                if let Some(key) = running.cache_key {
                    b.push(Write::CachePut {
                        key,
                        workflow: self.workflow.clone(),
                        node_id: t.id.to_string(),
                        table: t.output.table.to_owned(),
                        value: v.clone(),
                    });
                }
                self.on_success(&mut b, &t, it, running.loop_id, res.attempt, v, end)
            }
            Err(e) => self.on_failure(&mut b, &t, it, running.loop_id, res.attempt, e, end),
        }
        Some(b)
    }

    /// A running attempt's usage so far: stop it when it takes its task or the run past a budget.
    fn usage_reported(
        &mut self,
        key: NodeKey,
        mut usage: Usage,
        model: Option<String>,
        cmds: &mut VecDeque<Command>,
    ) {
        let Some(task) = self.running.get(&key).map(|r| r.task.clone()) else {
            return;
        };
        if self.budget_stops.contains_key(&key) {
            return;
        }
        if usage.cost_usd.is_none() {
            usage.cost_usd = model
                .as_deref()
                .and_then(|m| self.prices.estimate(m, &usage));
        }
        let reason = self.over_budget(&task, Some(&usage));
        self.streamed.insert(key.clone(), (usage, model));
        if let Some(reason) = reason {
            self.budget_stops.insert(key.clone(), reason);
            cmds.push_back(Command::Stop(key));
        }
    }

    /// Why `t` may not spend more (its own budget, then the run's), counting `current`, the
    /// usage of its running attempt, when given.
    pub(super) fn over_budget(&self, t: &TaskSpec, current: Option<&Usage>) -> Option<String> {
        let with = |s: crate::budget::Spent| match current {
            Some(u) => s.with(u),
            None => s,
        };
        let task = with(self.task_spent.get(&*t.id).copied().unwrap_or_default());
        let (usd, tokens) = self.task_raise.get(&*t.id).copied().unwrap_or((0.0, 0));
        let scope = format!("task `{}`", t.id);
        crate::budget::exceeded(
            &scope,
            &t.budget,
            usd,
            tokens,
            &task,
            &self.run_id,
            Some(&t.id),
        )
        .or_else(|| {
            let (usd, tokens) = self.run_raise;
            let run = with(self.run_spent);
            crate::budget::exceeded(
                "run",
                &self.run_budget,
                usd,
                tokens,
                &run,
                &self.run_id,
                None,
            )
        })
    }

    /// A task that may not start because a budget is spent: it fails (no attempt is made), or
    /// the run parks.
    fn budget_exceeded_before_start(&mut self, b: &mut WriteBatch, r: &Runnable, reason: String) {
        if self.on_budget == crate::budget::OnBudget::Park {
            self.parked = Some(reason);
            return;
        }
        let t = &r.task;
        let failures = self.node(&t.id, r.iteration).map_or(0, |n| n.failures);
        let last_error = format!("node `{}`: {reason}", t.id);
        self.fail_without_attempt(b, r, reason, failures);
        b.push(Write::State {
            key: "supervisor.last_error".into(),
            value: last_error,
        });
    }

    /// A task that fails before any attempt starts (a spent budget, a denied approval): its node
    /// failed with `error`, and the `node_failed` event.
    fn fail_without_attempt(
        &mut self,
        b: &mut WriteBatch,
        r: &Runnable,
        error: String,
        failures: u32,
    ) {
        let t = &r.task;
        let attempts = self.attempts(&t.id, r.iteration);
        b.push(Write::Node(NodeRecord {
            node_id: t.id.to_string(),
            iteration: r.iteration,
            status: NodeStatus::Failed,
            attempts,
            output_table: None,
            loop_id: r.loop_id.clone(),
            last_error: Some(error.clone()),
        }));
        b.push(Write::Event(Event::node(
            &self.run_id,
            &t.id,
            r.iteration,
            self.now,
            EventKind::NodeFailed {
                attempt: attempts,
                error: error.clone(),
            },
        )));
        self.set_node(
            &t.id,
            r.iteration,
            NodeState {
                status: NodeStatus::Failed,
                attempts,
                failures,
                last_error: Some(error),
            },
        );
    }

    /// Every running attempt recorded as cancelled, with what it produced (`results`, and those
    /// that ended while the cancellation was on its way); one that finished with its output in
    /// the meantime is recorded as finished.
    fn cancel_running(&mut self, results: Vec<AttemptResult>, why: &str) -> WriteBatch {
        let mut b = WriteBatch::new(&self.run_id);
        let mut ended: HashMap<NodeKey, AttemptResult> = HashMap::new();
        let stopped = std::mem::take(&mut self.stopped);
        for r in stopped.into_iter().chain(results) {
            if r.outcome.is_ok() {
                if let Some(done) = self.attempt_ended(r) {
                    b.writes.extend(done.writes);
                }
            } else {
                ended.insert(r.key.clone(), r);
            }
        }
        let running: Vec<_> = self.running.drain().collect();
        for (key, r) in running {
            let result = ended.remove(&key);
            self.on_cancelled(&mut b, &key, r.loop_id, why, result);
        }
        b
    }
}
