//! The engine's decisions as a sans-I/O state machine over the in-memory run.
//!
//! [`RunState::handle`] takes one [`Input`] — what happened: a render, the lookups it asked
//! for, an attempt's end, approval decisions, a timer, a cancellation — updates the state and
//! returns the [`Command`]s that follow from it: writes to commit, attempts to start or stop,
//! lookups to make, whether to wait, how the run finishes. Nothing here does I/O: the executor
//! in `mod.rs` (`Engine::drive`) carries out the commands with the store, the agents and the
//! clock, and renders again when a batch of commands is done. The tests below feed event
//! sequences with no disk and no processes.

use std::collections::VecDeque;

use super::attempt::{extract_output, AgentResponseOrValue};
use super::*;
use crate::node::HookCtx;
use crate::plan::GroupStatus;
use crate::store::ApprovalRecord;

/// What happened: everything that can move a run on.
pub(super) enum Input {
    /// The workflow function rendered over the current state (or panicked: `Err`), with the
    /// state it wrote while rendering.
    Rendered {
        tree: Result<Node>,
        state_writes: Vec<(String, String)>,
    },
    /// The answers to [`Command::Prepare`], in its order; the list stops at the first task whose
    /// output table cannot hold its type.
    Prepared(Vec<Prepared>),
    /// An attempt's body returned. `cancelling`: the run was being cancelled by then.
    AttemptEnded {
        result: AttemptResult,
        cancelling: bool,
    },
    /// Approval decisions read while waiting for them.
    ApprovalsPolled(Vec<ApprovalRecord>),
    /// The heartbeat timer fired at `now` (RFC 3339).
    Heartbeat { now: String },
    /// Ctrl-C or `smithers cancel`.
    CancelRequested,
    /// The lease could not be renewed: another process may be driving the run.
    LeaseLost(Error),
}

/// The answer to one [`Preparation`].
pub(super) enum Prepared {
    /// The output table is ready; `cached` is the output stored under the cache key, if any.
    Ready { cached: Option<Value> },
    /// The output type does not fit its table (a definition error).
    TableError(Error),
}

/// A lookup a runnable task needs before it can start: its output table must exist, and under
/// `<Workflow cache>` an agent task may find its output under `cache_key`.
pub(super) struct Preparation {
    pub(super) task: Arc<TaskSpec>,
    pub(super) cache_key: Option<String>,
}

/// An attempt to run: its row is committed (by the [`Command::Commit`] before it) and its body
/// is to be spawned.
pub(super) struct StartAttempt {
    pub(super) task: Arc<TaskSpec>,
    pub(super) iteration: u32,
    pub(super) attempt: u32,
    /// The previous attempt's error, appended to an agent's prompt.
    pub(super) last_error: Option<String>,
}

/// What the executor does next, in order. When the commands of an input are all done (none of
/// them waits, finishes or feeds another input), the tree is rendered again.
pub(super) enum Command {
    /// Commit the batch in one transaction; an error ends the drive.
    Commit(WriteBatch),
    /// Ensure the output tables and look up the cache, in order, stopping at the first table
    /// error; then feed [`Input::Prepared`].
    Prepare(Vec<Preparation>),
    /// Spawn an attempt's body.
    Start(StartAttempt),
    /// Tell a running attempt to stop (the tree no longer mounts its task).
    Stop(NodeKey),
    /// Stop every running attempt, give them a moment to end, then record this batch (their
    /// attempts cancelled) as well as possible.
    CancelAll(WriteBatch),
    /// Wait for the next attempt to end, a timer or a cancellation, and feed it.
    Wait,
    /// Only a human decision can move the run: wait a poll period, read the approvals and feed
    /// [`Input::ApprovalsPolled`] (or [`Input::CancelRequested`]).
    WaitForApprovals,
    /// The run is over with this status.
    Finish {
        status: RunStatus,
        error: Option<String>,
    },
    /// The drive ends with this error (the run's status is left to the caller).
    Abort(Error),
}

/// Runnable tasks waiting for the answers to their [`Command::Prepare`].
pub(super) struct PendingStart {
    runnable: Vec<Runnable>,
    cache_keys: Vec<Option<String>>,
    limit: usize,
    awaiting_approval: Vec<String>,
}

impl RunState {
    /// Takes what happened and returns what to do: the engine's decisions, with no I/O.
    pub(super) fn handle(&mut self, input: Input) -> VecDeque<Command> {
        let mut cmds = VecDeque::new();
        match input {
            Input::Rendered { tree, state_writes } => self.rendered(tree, state_writes, &mut cmds),
            Input::Prepared(prepared) => self.prepared(prepared, &mut cmds),
            Input::AttemptEnded { result, cancelling } => {
                if let Some(b) = self.attempt_ended(result, cancelling) {
                    cmds.push_back(Command::Commit(b));
                }
            }
            Input::ApprovalsPolled(decided) => self.apply_approvals(decided),
            Input::Heartbeat { now } => {
                let mut b = WriteBatch::new(&self.run_id);
                b.push(Write::State {
                    key: "supervisor.heartbeat".into(),
                    value: now,
                });
                cmds.push_back(Command::Commit(b));
            }
            Input::CancelRequested => {
                if !self.running.is_empty() {
                    cmds.push_back(Command::CancelAll(self.cancel_running()));
                }
                cmds.push_back(Command::Finish {
                    status: RunStatus::Cancelled,
                    error: None,
                });
            }
            Input::LeaseLost(e) => {
                cmds.push_back(Command::CancelAll(self.cancel_running()));
                cmds.push_back(Command::Abort(e));
            }
        }
        cmds
    }

    /// A render: plan it, stop what it unmounted, record what it decided on its own; then
    /// render again, finish, or prepare the runnable tasks.
    fn rendered(
        &mut self,
        tree: Result<Node>,
        state_writes: Vec<(String, String)>,
        cmds: &mut VecDeque<Command>,
    ) {
        let tree = match tree {
            Ok(t) => t,
            Err(e) => {
                self.failure.get_or_insert(e);
                Node::fragment(None::<Node>)
            }
        };
        let running: HashSet<NodeKey> = self.running.keys().cloned().collect();
        let plan = plan::plan(
            &tree,
            &PlanInput {
                nodes: &self.nodes,
                loops: &self.snap.loops,
                running: &running,
                approvals: &self.approvals,
                node_loop: &self.snap.node_loop,
            },
        );
        if !plan.node_loop.is_empty() {
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
        let (b, decided) = self.on_render(&tree, &plan, state_writes);
        if !b.is_empty() {
            cmds.push_back(Command::Commit(b));
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
                cmds.push_back(Command::Finish {
                    status: RunStatus::Failed,
                    error: Some(e.to_string()),
                });
                return;
            }
            if complete {
                cmds.push_back(Command::Finish {
                    status: RunStatus::Finished,
                    error: None,
                });
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
        }
        let runnable: Vec<Runnable> = plan
            .runnable
            .into_iter()
            .filter(|r| !self.running.contains_key(&(r.task.id.clone(), r.iteration)))
            .collect();
        if runnable.is_empty() {
            self.idle(awaiting_approval, cmds);
            return;
        }
        // Only the first free slots can start (or find their output in the cache).
        let free = limit.saturating_sub(self.running.len());
        let cache_keys: Vec<Option<String>> = runnable
            .iter()
            .enumerate()
            .map(|(i, r)| match (&cache, &r.task.exec) {
                (Some(wf), TaskExec::Agent(agent)) if i < free => {
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
                let v = v.clone();
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
            let (b, start) = self.start(r, key);
            cmds.push_back(Command::Commit(b));
            cmds.push_back(Command::Start(start));
        }
        if !statics.is_empty() {
            cmds.push_back(Command::Commit(statics));
            return;
        }
        self.idle(awaiting_approval, cmds);
    }

    /// Nothing more starts now: wait for approvals, for the running attempts, or stop.
    fn idle(&mut self, awaiting_approval: Vec<String>, cmds: &mut VecDeque<Command>) {
        if self.running.is_empty() && self.failure.is_none() && !awaiting_approval.is_empty() {
            // Only human decisions can move the run on.
            cmds.push_back(if self.wait_for_approval {
                Command::WaitForApprovals
            } else {
                Command::Finish {
                    status: RunStatus::WaitingApproval,
                    error: Some(format!(
                        "waiting for approval of {}",
                        awaiting_approval.join(", ")
                    )),
                }
            });
            return;
        }
        if self.running.is_empty() {
            let e = self.failure.take().unwrap_or_else(|| {
                Error::Other("no task can start and none is running; the workflow is stuck".into())
            });
            cmds.push_back(Command::Finish {
                status: RunStatus::Failed,
                error: Some(e.to_string()),
            });
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
            node_id: t.id.clone(),
            iteration: r.iteration,
            attempt,
            agent: match source {
                Source::Static => None,
                Source::Cache => Some("cache".to_owned()),
            },
            owner: self.owner.clone(),
        });
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

    /// A new attempt of `r`: the batch recording it running, and what to spawn.
    fn start(&mut self, r: Runnable, cache_key: Option<String>) -> (WriteBatch, StartAttempt) {
        let t = r.task;
        let attempt = self.attempts(&t.id, r.iteration) + 1;
        let agent_name = match &t.exec {
            TaskExec::Agent(a) => Some(a.name().to_owned()),
            _ => None,
        };
        let mut b = WriteBatch::new(&self.run_id);
        b.push(Write::Node(NodeRecord {
            node_id: t.id.clone(),
            iteration: r.iteration,
            status: NodeStatus::Running,
            attempts: attempt,
            output_table: None,
            loop_id: r.loop_id.clone(),
            last_error: None,
        }));
        b.push(Write::AttemptStart {
            node_id: t.id.clone(),
            iteration: r.iteration,
            attempt,
            agent: agent_name,
            owner: self.owner.clone(),
        });
        b.push(Write::Event(Event::node(
            &self.run_id,
            &t.id,
            r.iteration,
            EventKind::NodeStarted { attempt },
        )));
        let (last_error, failures) = self
            .node(&t.id, r.iteration)
            .map_or((None, 0), |n| (n.last_error.clone(), n.failures));
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
            (t.id.clone(), r.iteration),
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
            last_error,
        };
        (b, start)
    }

    /// The end of an attempt: output + node + attempt + events in one batch.
    fn attempt_ended(&mut self, res: AttemptResult, cancelling: bool) -> Option<WriteBatch> {
        if cancelling && res.outcome.is_err() {
            // Ended because the run is being cancelled: the cancellation records it.
            return None;
        }
        let running = self.running.remove(&res.key)?;
        let mut b = WriteBatch::new(&self.run_id);
        if running.unmounted {
            self.on_cancelled(
                &mut b,
                &res.key,
                running.loop_id,
                "a re-render no longer mounts this task (its branch or loop moved on)",
            );
            return Some(b);
        }
        let t = running.task;
        let (id, it) = (res.key.0.clone(), res.key.1);
        let mut end = AttemptEnd {
            duration_ms: res.duration_ms,
            ..AttemptEnd::default()
        };
        let (value, transcript) = match res.outcome {
            Ok(AgentResponseOrValue::Value(v)) => (Ok(v), None),
            Ok(AgentResponseOrValue::Agent(resp)) => {
                end.usage = resp.usage.clone();
                end.session_id = resp.session_id.clone();
                end.exit_code = resp.exit_code;
                end.model = resp.model.clone();
                let v = extract_output(&t, &resp);
                (v, resp.transcript)
            }
            Err((e, resp)) => {
                if let Some(r) = &resp {
                    end.usage = r.usage.clone();
                    end.exit_code = r.exit_code;
                }
                (Err(e), resp.and_then(|r| r.transcript))
            }
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
        match validated {
            Ok(v) => {
                if let Some(key) = running.cache_key {
                    b.push(Write::CachePut {
                        key,
                        workflow: self.workflow.clone(),
                        node_id: t.id.clone(),
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

    /// Every running attempt recorded as cancelled.
    fn cancel_running(&mut self) -> WriteBatch {
        let mut b = WriteBatch::new(&self.run_id);
        let running: Vec<_> = self.running.drain().collect();
        for (key, r) in running {
            self.on_cancelled(&mut b, &key, r.loop_id, "the run was cancelled");
        }
        b
    }

    /// What a render decided without running anything: state writes, skips, loop
    /// moves, denied approvals, new approval requests and a new frame. Returns whether the tree
    /// may now differ (then it is rendered again before anything starts).
    pub(super) fn on_render(
        &mut self,
        tree: &Node,
        plan: &plan::Plan,
        state_writes: Vec<(String, String)>,
    ) -> (WriteBatch, bool) {
        let mut b = WriteBatch::new(&self.run_id);
        for (k, v) in state_writes {
            Arc::make_mut(&mut self.snap)
                .state
                .insert(k.clone(), v.clone());
            b.push(Write::State { key: k, value: v });
        }
        self.record_frame(tree, &mut b);
        let decided =
            !plan.skipped.is_empty() || !plan.loop_changes.is_empty() || !plan.denied.is_empty();
        for (task, it, lp) in &plan.skipped {
            b.push(Write::Node(NodeRecord {
                node_id: task.id.clone(),
                iteration: *it,
                status: NodeStatus::Skipped,
                attempts: 0,
                output_table: None,
                loop_id: lp.clone(),
                last_error: None,
            }));
            b.push(Write::Event(Event::node(
                &self.run_id,
                &task.id,
                *it,
                EventKind::NodeSkipped,
            )));
            self.set_node(
                &task.id,
                *it,
                NodeState {
                    status: NodeStatus::Skipped,
                    attempts: 0,
                    failures: 0,
                    last_error: None,
                },
            );
        }
        for change in &plan.loop_changes {
            let (loop_id, state, event) = match change {
                LoopChange::Iterate { loop_id, state } => (
                    loop_id,
                    state,
                    EventKind::LoopIterated {
                        loop_id: loop_id.clone(),
                        iteration: state.iteration,
                    },
                ),
                LoopChange::Finish {
                    loop_id,
                    state,
                    max_reached,
                } => (
                    loop_id,
                    state,
                    EventKind::LoopFinished {
                        loop_id: loop_id.clone(),
                        iteration: state.iteration,
                        max_reached: *max_reached,
                    },
                ),
            };
            b.push(Write::Loop {
                loop_id: loop_id.clone(),
                state: state.clone(),
            });
            b.push(Write::Event(Event::run(&self.run_id, event)));
            Arc::make_mut(&mut self.snap)
                .loops
                .insert(loop_id.clone(), state.clone());
        }
        for r in &plan.denied {
            let t = &r.task;
            let key = (t.id.clone(), r.iteration);
            let note = self.approval_notes.get(&key).cloned().flatten();
            let error = match note {
                Some(n) => format!("approval denied: {n}"),
                None => "approval denied".to_owned(),
            };
            let attempts = self.attempts(&t.id, r.iteration);
            b.push(Write::Node(NodeRecord {
                node_id: t.id.clone(),
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
                    failures: 0,
                    last_error: Some(error),
                },
            );
        }
        for g in &plan.groups {
            let key = (g.kind, g.name.clone(), g.iteration);
            let before = self.groups.get(&key).copied();
            if before != Some(g.status) {
                self.groups.insert(key, g.status);
                // Hooks run once per transition; a phase that completes within one render
                // still starts first.
                let mut hooks = Vec::new();
                if before.is_none() && g.status != GroupStatus::Skipped {
                    hooks.extend(g.hooks.on_start.clone());
                }
                if g.status == GroupStatus::Completed {
                    hooks.extend(g.hooks.on_complete.clone());
                }
                for hook in hooks {
                    let mut cx = HookCtx {
                        run_id: &self.run_id,
                        name: &g.name,
                        state: Vec::new(),
                    };
                    hook(&mut cx);
                    for (k, v) in cx.state {
                        Arc::make_mut(&mut self.snap)
                            .state
                            .insert(k.clone(), v.clone());
                        b.push(Write::State { key: k, value: v });
                    }
                }
                b.push(Write::Group(g.clone()));
                b.push(Write::Event(Event::run(
                    &self.run_id,
                    EventKind::StepChanged {
                        kind: g.kind,
                        name: g.name.clone(),
                        iteration: g.iteration,
                        status: g.status,
                    },
                )));
            }
        }
        for r in &plan.awaiting_approval {
            let key = (r.task.id.clone(), r.iteration);
            if self.approvals.contains_key(&key) {
                continue;
            }
            b.push(Write::ApprovalRequest {
                node_id: key.0.clone(),
                iteration: key.1,
            });
            b.push(Write::Event(Event::node(
                &self.run_id,
                &key.0,
                key.1,
                EventKind::ApprovalRequested,
            )));
            self.approvals.insert(key, ApprovalStatus::Pending);
        }
        (b, decided)
    }

    /// Records a frame when the tree's shape changed since the last one.
    fn record_frame(&mut self, tree: &Node, b: &mut WriteBatch) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        shape_hash(tree, &mut h);
        let hash = h.finish();
        if hash == self.frame_hash {
            return;
        }
        self.frame_hash = hash;
        self.frame_no += 1;
        b.push(Write::Frame {
            frame_no: self.frame_no,
            hash: format!("{hash:016x}"),
            tree: tree.to_tree_string(),
        });
        b.push(Write::Event(Event::run(
            &self.run_id,
            EventKind::FrameRendered {
                frame: self.frame_no,
            },
        )));
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_success(
        &mut self,
        b: &mut WriteBatch,
        t: &TaskSpec,
        it: u32,
        loop_id: Option<String>,
        attempt: u32,
        value: Value,
        mut end: AttemptEnd,
    ) {
        end.status = "finished";
        let usage = (end.usage != Usage::default()).then(|| end.usage.clone());
        b.push(Write::Output {
            info: t.output,
            node_id: t.id.clone(),
            iteration: it,
            value: value.clone(),
        });
        b.push(Write::Node(NodeRecord {
            node_id: t.id.clone(),
            iteration: it,
            status: NodeStatus::Finished,
            attempts: attempt,
            output_table: Some(t.output.table.to_owned()),
            loop_id,
            last_error: None,
        }));
        b.push(Write::AttemptEnd {
            node_id: t.id.clone(),
            iteration: it,
            attempt,
            end,
        });
        b.push(Write::Event(Event::node(
            &self.run_id,
            &t.id,
            it,
            EventKind::NodeFinished { attempt, usage },
        )));
        self.finished += 1;
        supervisor(
            b,
            "running",
            &format!("{} node(s) finished; last: `{}`", self.finished, t.id),
        );
        self.set_node(
            &t.id,
            it,
            NodeState {
                status: NodeStatus::Finished,
                attempts: attempt,
                failures: self.node(&t.id, it).map_or(0, |n| n.failures),
                last_error: None,
            },
        );
        Arc::make_mut(&mut self.snap)
            .outputs
            .entry(t.id.clone())
            .or_default()
            .insert(it, value);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_failure(
        &mut self,
        b: &mut WriteBatch,
        t: &TaskSpec,
        it: u32,
        loop_id: Option<String>,
        attempt: u32,
        e: TaskError,
        mut end: AttemptEnd,
    ) {
        // `retries` counts failed attempts only: one cancelled by the user or abandoned by a
        // dead process does not use up a retry.
        let failures = self.node(&t.id, it).map_or(0, |n| n.failures) + 1;
        let retry = e.retryable && failures <= t.retries;
        let msg = if retry {
            format!(
                "{}; it will be tried again (attempt {} of {})",
                e.message,
                failures + 1,
                t.retries + 1
            )
        } else {
            e.message.clone()
        };
        end.status = "failed";
        end.error = Some(e.message.clone());
        let status = if retry {
            NodeStatus::Pending
        } else {
            NodeStatus::Failed
        };
        b.push(Write::Node(NodeRecord {
            node_id: t.id.clone(),
            iteration: it,
            status,
            attempts: attempt,
            output_table: None,
            loop_id,
            last_error: Some(e.message.clone()),
        }));
        b.push(Write::AttemptEnd {
            node_id: t.id.clone(),
            iteration: it,
            attempt,
            end,
        });
        let kind = if retry {
            EventKind::NodeRetrying {
                attempt,
                error: msg,
            }
        } else {
            EventKind::NodeFailed {
                attempt,
                error: e.message.clone(),
            }
        };
        b.push(Write::Event(Event::node(&self.run_id, &t.id, it, kind)));
        if !retry {
            b.push(Write::State {
                key: "supervisor.last_error".into(),
                value: format!("node `{}`: {}", t.id, e.message),
            });
        }
        self.set_node(
            &t.id,
            it,
            NodeState {
                status,
                attempts: attempt,
                failures,
                last_error: Some(e.message),
            },
        );
    }

    /// Records a stopped attempt: the attempt `cancelled` with `reason`, its node pending again
    /// (a later render that mounts it starts a new attempt).
    pub(super) fn on_cancelled(
        &mut self,
        b: &mut WriteBatch,
        (id, it): &NodeKey,
        loop_id: Option<String>,
        reason: &str,
    ) {
        let (attempts, failures) = self
            .node(id, *it)
            .map_or((1, 0), |n| (n.attempts, n.failures));
        b.push(Write::Node(NodeRecord {
            node_id: id.clone(),
            iteration: *it,
            status: NodeStatus::Pending,
            attempts,
            output_table: None,
            loop_id,
            last_error: Some("cancelled".into()),
        }));
        b.push(Write::AttemptEnd {
            node_id: id.clone(),
            iteration: *it,
            attempt: attempts,
            end: AttemptEnd {
                status: "cancelled",
                error: Some(reason.to_owned()),
                ..AttemptEnd::default()
            },
        });
        self.set_node(
            id,
            *it,
            NodeState {
                status: NodeStatus::Pending,
                attempts,
                failures,
                last_error: Some("cancelled".into()),
            },
        );
    }
}

/// The `supervisor.status` and `supervisor.summary` state keys (seed 002's contract).
pub(super) fn supervisor(b: &mut WriteBatch, status: &str, summary: &str) {
    b.push(Write::State {
        key: "supervisor.status".into(),
        value: status.into(),
    });
    b.push(Write::State {
        key: "supervisor.summary".into(),
        value: summary.into(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Phase, Sequence, Task, Workflow};
    use crate::output::{Column, ColumnKind, Output};
    use crate::store::AttemptEnd;

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

    fn task(id: &str, retries: u32) -> Arc<TaskSpec> {
        match Task::<N>::new()
            .id(id)
            .retries(retries)
            .value(N { n: 1 })
            .build()
            .kind
        {
            NodeKind::Task(t) => t,
            _ => unreachable!(),
        }
    }

    /// Event kinds of a batch, `kind:node` for node events.
    fn kinds(b: &WriteBatch) -> Vec<String> {
        b.events()
            .map(|e| match &e.node_id {
                Some(n) => format!("{}:{n}", e.kind.name()),
                None => e.kind.name().to_owned(),
            })
            .collect()
    }

    fn node_status(st: &RunState, id: &str) -> (NodeStatus, u32, u32) {
        let n = st.node(id, 0).expect("node state");
        (n.status, n.attempts, n.failures)
    }

    /// Feeds `outcomes` (Err(retryable?) or Ok) as successive attempt ends.
    fn feed(st: &mut RunState, t: &TaskSpec, outcomes: &[Result<(), bool>]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            let attempt = i as u32 + 1;
            let mut b = WriteBatch::new("r");
            match o {
                Ok(()) => st.on_success(
                    &mut b,
                    t,
                    0,
                    None,
                    attempt,
                    serde_json::json!({"n": 1}),
                    AttemptEnd::default(),
                ),
                Err(retryable) => {
                    let e = if *retryable {
                        TaskError::retryable("boom")
                    } else {
                        TaskError::terminal("boom")
                    };
                    st.on_failure(&mut b, t, 0, None, attempt, e, AttemptEnd::default())
                }
            }
            out.push(kinds(&b));
        }
        out
    }

    #[test]
    fn retryable_failures_retry_until_the_budget_then_fail() {
        let mut st = RunState::new("r", "me".into());
        let t = task("a", 2);
        let events = feed(&mut st, &t, &[Err(true), Err(true), Err(true)]);
        assert_eq!(
            events,
            [["node_retrying:a"], ["node_retrying:a"], ["node_failed:a"]]
        );
        assert_eq!(node_status(&st, "a"), (NodeStatus::Failed, 3, 3));
    }

    #[test]
    fn a_terminal_error_fails_at_once_and_success_records_the_output() {
        let mut st = RunState::new("r", "me".into());
        assert_eq!(
            feed(&mut st, &task("a", 5), &[Err(false)]),
            [["node_failed:a"]]
        );
        assert_eq!(node_status(&st, "a").0, NodeStatus::Failed);
        let mut st = RunState::new("r", "me".into());
        assert_eq!(
            feed(&mut st, &task("b", 1), &[Err(true), Ok(())]),
            [vec!["node_retrying:b"], vec!["node_finished:b"]]
        );
        assert_eq!(node_status(&st, "b"), (NodeStatus::Finished, 2, 1));
        assert_eq!(st.snap.outputs["b"][&0], serde_json::json!({"n": 1}));
        assert_eq!(st.finished, 1);
    }

    #[test]
    fn a_cancelled_attempt_keeps_the_retry_budget() {
        let mut st = RunState::new("r", "me".into());
        let t = task("a", 1);
        st.set_node(
            "a",
            0,
            NodeState {
                status: NodeStatus::Running,
                attempts: 1,
                failures: 0,
                last_error: None,
            },
        );
        let mut b = WriteBatch::new("r");
        st.on_cancelled(&mut b, &("a".into(), 0), None, "the run was cancelled");
        assert_eq!(node_status(&st, "a"), (NodeStatus::Pending, 1, 0));
        let mut b = WriteBatch::new("r");
        st.on_failure(
            &mut b,
            &t,
            0,
            None,
            2,
            TaskError::retryable("flaky"),
            AttemptEnd::default(),
        );
        assert_eq!(
            kinds(&b),
            ["node_retrying:a"],
            "one failure of a budget of one retry"
        );
    }

    #[test]
    fn a_render_records_skips_and_phase_transitions_and_runs_hooks_once() {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = started.clone();
        let tree = |done: bool| {
            let s = s.clone();
            let mut phase = Phase::new().name("p").on_start(move |h| {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                h.set_state("phase", "p");
            });
            phase = phase.child(Task::<N>::new().id("a").value(N { n: 1 }).build());
            Workflow::new()
                .child(phase.build())
                .child(
                    Sequence::new()
                        .child(
                            Task::<N>::new()
                                .id("skipped")
                                .skip_if(!done)
                                .value(N { n: 2 })
                                .build(),
                        )
                        .build(),
                )
                .build()
        };
        let mut st = RunState::new("r", "me".into());
        let t = tree(false);
        let p = plan::plan(
            &t,
            &PlanInput {
                nodes: &st.nodes,
                loops: &st.snap.loops,
                running: &HashSet::new(),
                approvals: &st.approvals,
                node_loop: &st.snap.node_loop,
            },
        );
        let (b, decided) = st.on_render(&t, &p, Vec::new());
        assert!(!decided, "nothing skipped yet: the phase is still running");
        assert_eq!(kinds(&b), ["frame_rendered", "step_changed"]);
        assert!(b
            .writes
            .iter()
            .any(|w| matches!(w, Write::State { key, .. } if key == "phase")));
        // The same render again: no new frame, no transition, no second hook call.
        let (b, _) = st.on_render(&t, &p, Vec::new());
        assert!(b.is_empty(), "{:?}", kinds(&b));
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    // ---- Whole sequences through `handle`: inputs in, commands out, no store. ----

    use crate::node::{Branch, Parallel};
    use crate::store::ApprovalRecord;

    fn compute(id: &str) -> Node {
        Task::<N>::new()
            .id(id)
            .run(|_| async { Ok::<_, TaskError>(N { n: 1 }) })
            .build()
    }

    /// One line per command: commits list their events and attempt ends.
    fn describe(cmds: &VecDeque<Command>) -> Vec<String> {
        let batch = |b: &WriteBatch| {
            let mut parts = kinds(b);
            parts.extend(b.writes.iter().filter_map(|w| match w {
                Write::AttemptEnd { node_id, end, .. } => {
                    Some(format!("attempt_{}:{node_id}", end.status))
                }
                _ => None,
            }));
            parts.join(",")
        };
        cmds.iter()
            .map(|c| match c {
                Command::Commit(b) => format!("commit[{}]", batch(b)),
                Command::Prepare(items) => format!(
                    "prepare[{}]",
                    items
                        .iter()
                        .map(|p| p.task.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Command::Start(s) => format!("start:{}#{}", s.task.id, s.attempt),
                Command::Stop((id, _)) => format!("stop:{id}"),
                Command::CancelAll(b) => format!("cancel_all[{}]", batch(b)),
                Command::Wait => "wait".into(),
                Command::WaitForApprovals => "wait_for_approvals".into(),
                Command::Finish { status, error } => match error {
                    Some(e) => format!("finish:{status}: {e}"),
                    None => format!("finish:{status}"),
                },
                Command::Abort(e) => format!("abort: {e}"),
            })
            .collect()
    }

    fn render(st: &mut RunState, tree: Node) -> Vec<String> {
        describe(&st.handle(Input::Rendered {
            tree: Ok(tree),
            state_writes: Vec::new(),
        }))
    }

    /// Every lookup answered: tables ready, nothing cached.
    fn prepared(st: &mut RunState, n: usize) -> Vec<String> {
        let ready = (0..n).map(|_| Prepared::Ready { cached: None }).collect();
        describe(&st.handle(Input::Prepared(ready)))
    }

    fn ended(
        st: &mut RunState,
        id: &str,
        outcome: std::result::Result<(), TaskError>,
        cancelling: bool,
    ) -> Vec<String> {
        let result = AttemptResult {
            key: (id.to_owned(), 0),
            attempt: st.attempts(id, 0),
            duration_ms: 5,
            outcome: outcome
                .map(|()| AgentResponseOrValue::Value(serde_json::json!({"n": 1})))
                .map_err(|e| (e, None)),
        };
        describe(&st.handle(Input::AttemptEnded { result, cancelling }))
    }

    #[test]
    fn an_attempt_starts_ends_and_the_run_finishes() {
        let mut st = RunState::new("r", "me".into());
        let tree = || Workflow::new().child(compute("a")).build();
        assert_eq!(
            render(&mut st, tree()),
            ["commit[frame_rendered]", "prepare[a]"]
        );
        assert_eq!(
            prepared(&mut st, 1),
            ["commit[node_started:a]", "start:a#1", "wait"]
        );
        assert_eq!(node_status(&st, "a"), (NodeStatus::Running, 1, 0));
        assert_eq!(
            ended(&mut st, "a", Ok(()), false),
            ["commit[node_finished:a,attempt_finished:a]"]
        );
        assert_eq!(render(&mut st, tree()), ["finish:finished"]);
    }

    #[test]
    fn statics_complete_in_one_shared_batch_before_anything_starts() {
        let mut st = RunState::new("r", "me".into());
        let tree = || {
            Workflow::new()
                .child(
                    Parallel::new()
                        .child(Task::<N>::new().id("a").value(N { n: 1 }).build())
                        .child(compute("c"))
                        .child(Task::<N>::new().id("b").value(N { n: 2 }).build())
                        .build(),
                )
                .build()
        };
        assert_eq!(
            render(&mut st, tree()),
            ["commit[frame_rendered]", "prepare[a,c,b]"]
        );
        assert_eq!(
            prepared(&mut st, 3),
            ["commit[node_finished:a,node_finished:b,attempt_finished:a,attempt_finished:b]"],
            "the tree renders again before `c` starts"
        );
        assert_eq!(render(&mut st, tree()), ["prepare[c]"]);
        assert_eq!(
            prepared(&mut st, 1),
            ["commit[node_started:c]", "start:c#1", "wait"]
        );
    }

    #[test]
    fn a_failure_waits_for_the_running_attempts_then_fails_the_run() {
        let mut st = RunState::new("r", "me".into());
        let tree = || {
            Workflow::new()
                .child(
                    Parallel::new()
                        .child(compute("a"))
                        .child(compute("b"))
                        .build(),
                )
                .build()
        };
        render(&mut st, tree());
        assert_eq!(
            prepared(&mut st, 2),
            [
                "commit[node_started:a]",
                "start:a#1",
                "commit[node_started:b]",
                "start:b#1",
                "wait"
            ]
        );
        assert_eq!(
            ended(&mut st, "a", Err(TaskError::terminal("boom")), false),
            ["commit[node_failed:a,attempt_failed:a]"]
        );
        assert_eq!(render(&mut st, tree()), ["wait"], "`b` is still running");
        ended(&mut st, "b", Ok(()), false);
        let end = render(&mut st, tree());
        assert_eq!(end.len(), 1);
        assert!(end[0].starts_with("finish:failed: "), "{end:?}");
    }

    #[test]
    fn cancellation_wins_over_the_attempts_it_ended() {
        let mut st = RunState::new("r", "me".into());
        render(&mut st, Workflow::new().child(compute("a")).build());
        prepared(&mut st, 1);
        assert!(
            ended(&mut st, "a", Err(TaskError::terminal("cancelled")), true).is_empty(),
            "not recorded as a failure"
        );
        assert_eq!(
            describe(&st.handle(Input::CancelRequested)),
            ["cancel_all[attempt_cancelled:a]", "finish:cancelled"]
        );
        assert_eq!(node_status(&st, "a"), (NodeStatus::Pending, 1, 0));
        assert!(st.running.is_empty());
    }

    #[test]
    fn a_task_the_tree_unmounts_is_stopped_and_its_attempt_recorded_cancelled() {
        let mut st = RunState::new("r", "me".into());
        let tree = |first: bool| {
            Workflow::new()
                .child(
                    Branch::new()
                        .cond(first)
                        .then(compute("a"))
                        .otherwise(compute("b"))
                        .build(),
                )
                .build()
        };
        render(&mut st, tree(true));
        prepared(&mut st, 1);
        assert_eq!(
            render(&mut st, tree(false)),
            ["stop:a", "commit[frame_rendered]", "prepare[b]"]
        );
        assert_eq!(
            prepared(&mut st, 1),
            ["commit[node_started:b]", "start:b#1", "wait"]
        );
        assert_eq!(
            ended(&mut st, "a", Ok(()), false),
            ["commit[attempt_cancelled:a]"],
            "its output is not kept"
        );
        assert_eq!(node_status(&st, "a").0, NodeStatus::Pending);
        assert!(!st.snap.outputs.contains_key("a"));
    }

    #[test]
    fn approvals_park_the_run_or_wait_for_a_decision() {
        let tree = || {
            Workflow::new()
                .child(
                    Task::<N>::new()
                        .id("a")
                        .needs_approval(true)
                        .value(N { n: 1 })
                        .build(),
                )
                .build()
        };
        let mut st = RunState::new("r", "me".into());
        assert_eq!(
            render(&mut st, tree()),
            [
                "commit[frame_rendered,approval_requested:a]",
                "finish:waiting-approval: waiting for approval of `a`"
            ]
        );

        let mut st = RunState::new("r", "me".into());
        st.wait_for_approval = true;
        assert_eq!(
            render(&mut st, tree()),
            [
                "commit[frame_rendered,approval_requested:a]",
                "wait_for_approvals"
            ]
        );
        let approved = ApprovalRecord {
            node_id: "a".into(),
            iteration: 0,
            status: ApprovalStatus::Approved,
            requested_at: String::new(),
            decided_at: None,
            note: None,
        };
        assert!(describe(&st.handle(Input::ApprovalsPolled(vec![approved]))).is_empty());
        assert_eq!(render(&mut st, tree()), ["prepare[a]"]);
        assert_eq!(
            prepared(&mut st, 1),
            ["commit[node_finished:a,attempt_finished:a]"]
        );
        assert_eq!(render(&mut st, tree()), ["finish:finished"]);
    }

    #[test]
    fn a_table_error_fails_the_run_and_a_lost_lease_stops_everything() {
        let mut st = RunState::new("r", "me".into());
        let tree = || Workflow::new().child(compute("a")).build();
        render(&mut st, tree());
        let p = vec![Prepared::TableError(Error::InvalidIdentifier("n-1".into()))];
        let end = describe(&st.handle(Input::Prepared(p)));
        assert_eq!(end.len(), 1);
        assert!(end[0].starts_with("finish:failed: "), "{end:?}");

        let mut st = RunState::new("r", "me".into());
        render(&mut st, tree());
        prepared(&mut st, 1);
        assert_eq!(
            describe(&st.handle(Input::LeaseLost(Error::Other("lease".into())))),
            ["cancel_all[attempt_cancelled:a]", "abort: lease"]
        );
    }
}
