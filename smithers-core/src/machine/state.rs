//! The in-memory state of the run being driven, and how it is rebuilt from what the store
//! loaded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::budget::{Budget, OnBudget, Spent};
use crate::ctx::{Reads, RunSnapshot};
use crate::error::Error;
use crate::model::{
    ApprovalStatus, GroupKind, GroupStatus, NodeKey, NodeState, NodeStatus, Timestamp, Usage,
};
use crate::node::{Node, TaskSpec};
use crate::plan;
use crate::price::PriceCatalog;
use crate::prompt::RejectedReply;
use crate::retry::RetryPolicy;
use crate::store::{ApprovalRecord, FenceToken, LoadedRun, PhaseRecord, StepRecord, WriteBatch};

use super::{AttemptResult, PendingStart, StepSnapshot, Stopping};

/// An attempt in flight.
pub(super) struct Running {
    pub(super) task: Arc<TaskSpec>,
    pub(super) loop_id: Option<String>,
    /// A re-render no longer mounts the task: its attempt was told to stop and will be recorded
    /// as cancelled, never as the node's output.
    pub(super) unmounted: bool,
    /// Where to keep the output for `<Workflow cache>`.
    pub(super) cache_key: Option<String>,
}

/// In-memory state of the run being driven.
pub(crate) struct RunState {
    pub(crate) run_id: String,
    /// Workflow name, from the root `<Workflow name>` of the latest render.
    pub(super) workflow: String,
    /// This driver's lease: owner (recorded on its attempts) and epoch. Every batch it commits
    /// carries it, so nothing is written once another process took the run over.
    pub(crate) fence: FenceToken,
    pub(crate) snap: Arc<RunSnapshot>,
    pub(super) nodes: HashMap<String, HashMap<u32, NodeState>>,
    pub(super) running: HashMap<NodeKey, Running>,
    /// Decisions on `needs_approval` tasks (pending ones included).
    pub(super) approvals: HashMap<NodeKey, ApprovalStatus>,
    /// The notes of decided approvals.
    pub(super) approval_notes: HashMap<NodeKey, Option<String>>,
    /// The last recorded status of each phase and step.
    pub(super) groups: HashMap<(GroupKind, String, u32), GroupStatus>,
    pub(super) frame_no: u32,
    /// Why every running attempt is being stopped, while it is.
    pub(super) stopping: Option<Stopping>,
    /// Attempts that ended while the run was being cancelled, recorded by the cancellation.
    pub(super) stopped: Vec<AttemptResult>,
    /// The workflow's default retry policy (from the latest render).
    pub(super) workflow_retry_policy: Option<RetryPolicy>,
    /// `EngineOptions::prices`.
    pub(crate) prices: Arc<PriceCatalog>,
    /// `EngineOptions::agent_retry_policy`.
    pub(crate) agent_retry_policy: RetryPolicy,
    /// Tasks waiting out a backoff before their next attempt.
    pub(super) backing_off: HashSet<NodeKey>,
    /// Backoffs decided but not yet handed to the executor.
    pub(super) new_backoffs: Vec<(NodeKey, Duration)>,
    /// The run's budget and what exceeding a budget does (from the latest render).
    pub(super) run_budget: Budget,
    pub(super) on_budget: OnBudget,
    /// What the run and each task (by node id) have spent in recorded attempts.
    pub(super) run_spent: Spent,
    pub(super) task_spent: HashMap<String, Spent>,
    /// Allowances added with `smithers budget`: the run's, and each task's (USD, tokens).
    pub(crate) run_raise: (f64, u64),
    pub(crate) task_raise: HashMap<String, (f64, u64)>,
    /// The usage (and model) running attempts reported so far.
    pub(super) streamed: HashMap<NodeKey, (Usage, Option<String>)>,
    /// Attempts stopped because they exceeded a budget, with the reason.
    pub(super) budget_stops: HashMap<NodeKey, String>,
    /// The run waits for a budget raise: nothing new starts, and once the running attempts end
    /// it stops as `waiting-budget` with this reason.
    pub(super) parked: Option<String>,
    /// The last reply of a task that did not validate: quoted back in its next prompt.
    pub(super) rejected: HashMap<NodeKey, RejectedReply>,
    pub(super) frame_hash: u64,
    pub(crate) finished: usize,
    /// Why the run fails, once the running attempts have ended.
    pub(super) failure: Option<Error>,
    /// Run-wide limit of tasks running at once (`EngineOptions::max_concurrency`).
    pub(crate) max_concurrency: usize,
    /// `EngineOptions::wait_for_approval`.
    pub(crate) wait_for_approval: bool,
    /// Runnable tasks waiting for their lookups (`Command::Prepare`).
    pub(super) pending: Option<PendingStart>,
    /// A render's decisions waiting for its hooks (`Command::RunHooks`).
    pub(super) pending_hooks: Option<WriteBatch>,
    /// The last rendered tree, kept while nothing it read has changed: it is re-planned
    /// without calling the workflow function.
    pub(super) tree: Option<Node>,
    /// What the render of `tree` read.
    pub(super) reads: Reads,
    /// Something `tree`'s render read has changed (or a loop counter moved): render again.
    pub(super) stale: bool,
    /// The planner's memory of `tree` (cursors, ids checked); reset with every new render.
    pub(super) cursors: plan::Cursors,
    /// Steps that started or ended in the last render: their working copy is recorded next.
    pub(super) snapshots: Vec<StepSnapshot>,
    /// When the input being handled happened.
    pub(super) now: Timestamp,
    /// Attempts queued for workers by the previous driver (pool mode), by task: adopted when
    /// the plan offers their task, instead of starting a new attempt.
    pub(super) adopted: HashMap<NodeKey, u32>,
}

/// `EngineOptions::max_concurrency`'s default, until the executor sets it.
const DEFAULT_MAX_CONCURRENCY: usize = 16;

impl RunState {
    /// The state of a new run.
    pub(crate) fn new(run_id: &str, fence: FenceToken) -> Self {
        RunState {
            run_id: run_id.to_owned(),
            workflow: String::new(),
            fence,
            stopping: None,
            stopped: Vec::new(),
            workflow_retry_policy: None,
            // The executor sets both from `EngineOptions`.
            agent_retry_policy: RetryPolicy::immediate(),
            run_budget: Budget::default(),
            on_budget: OnBudget::default(),
            run_spent: Spent::default(),
            task_spent: HashMap::new(),
            run_raise: (0.0, 0),
            task_raise: HashMap::new(),
            streamed: HashMap::new(),
            budget_stops: HashMap::new(),
            parked: None,
            prices: Arc::new(PriceCatalog::builtin()),
            backing_off: HashSet::new(),
            new_backoffs: Vec::new(),
            rejected: HashMap::new(),
            snap: Arc::new(RunSnapshot {
                run_id: run_id.to_owned(),
                ..RunSnapshot::default()
            }),
            nodes: HashMap::new(),
            running: HashMap::new(),
            approvals: HashMap::new(),
            approval_notes: HashMap::new(),
            groups: HashMap::new(),
            frame_no: 0,
            frame_hash: 0,
            finished: 0,
            failure: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            wait_for_approval: false,
            pending: None,
            pending_hooks: None,
            tree: None,
            reads: Reads::default(),
            stale: true,
            cursors: plan::Cursors::default(),
            snapshots: Vec::new(),
            now: Timestamp::default(),
            adopted: HashMap::new(),
        }
    }

    /// The state of a run rebuilt from what the store loaded: node states, outputs, loops,
    /// `state`, approvals, and the phase and step transitions already recorded (whose hooks do
    /// not fire again).
    pub(crate) fn loaded(
        run_id: &str,
        fence: FenceToken,
        loaded: LoadedRun,
        phases: Vec<PhaseRecord>,
        steps: Vec<StepRecord>,
    ) -> Self {
        let mut st = RunState::new(run_id, fence);
        st.frame_no = loaded.last_frame;
        let failures: HashMap<(&str, u32), u32> = loaded
            .failures
            .iter()
            .map(|(n, it, f)| ((n.as_str(), *it), *f))
            .collect();
        let snap = Arc::make_mut(&mut st.snap);
        for n in &loaded.nodes {
            if n.status == NodeStatus::Finished {
                st.finished += 1;
            }
            if let Some(l) = &n.loop_id {
                snap.node_loop.insert(n.node_id.clone(), l.clone());
            }
            st.nodes.entry(n.node_id.clone()).or_default().insert(
                n.iteration,
                NodeState {
                    status: n.status,
                    attempts: n.attempts,
                    failures: failures
                        .get(&(n.node_id.as_str(), n.iteration))
                        .copied()
                        .unwrap_or(0),
                    last_error: n.last_error.clone(),
                },
            );
        }
        for (node, it, v) in loaded.outputs {
            snap.outputs.entry(node).or_default().insert(it, v);
        }
        snap.loops = loaded.loops.into_iter().collect();
        snap.state = loaded.state.into_iter().collect();
        st.apply_approvals(loaded.approvals);
        // Transitions already recorded do not fire their hooks again; rolled-back steps are
        // not read, so they run (and are recorded) again.
        for p in phases {
            if let (true, Some(status)) = (p.active, GroupStatus::parse(&p.status)) {
                st.groups
                    .insert((GroupKind::Phase, p.name, p.iteration), status);
            }
        }
        for s in steps {
            if let (true, "tree", Some(status)) =
                (s.active, s.source.as_str(), GroupStatus::parse(&s.status))
            {
                st.groups
                    .insert((GroupKind::Step, s.name, s.iteration), status);
            }
        }
        st
    }

    pub(super) fn apply_approvals(&mut self, approvals: Vec<ApprovalRecord>) {
        for a in approvals {
            let key = (a.node_id, a.iteration);
            self.approval_notes.insert(key.clone(), a.note);
            self.approvals.insert(key, a.status);
        }
    }

    /// Whether the kept tree still stands: the next plan needs no render.
    pub(crate) fn tree_stands(&self) -> bool {
        !self.stale && self.tree.is_some()
    }

    pub(super) fn node(&self, id: &str, it: u32) -> Option<&NodeState> {
        self.nodes.get(id).and_then(|m| m.get(&it))
    }

    pub(super) fn attempts(&self, id: &str, it: u32) -> u32 {
        self.node(id, it).map_or(0, |n| n.attempts)
    }

    pub(super) fn set_node(&mut self, id: &str, it: u32, s: NodeState) {
        match self.nodes.get_mut(id) {
            Some(m) => {
                m.insert(it, s);
            }
            None => {
                self.nodes.insert(id.to_owned(), HashMap::from([(it, s)]));
            }
        }
    }

    /// Whether attempts queued by the previous driver are still to be adopted.
    pub(crate) fn adopting(&self) -> bool {
        !self.adopted.is_empty()
    }

    /// The keys of the attempts in flight.
    pub(super) fn running_keys(&self) -> HashSet<NodeKey> {
        self.running.keys().cloned().collect()
    }
}
