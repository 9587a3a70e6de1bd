//! The in-memory state of the run being driven.

use super::*;
use crate::ctx::Reads;

/// The sending end of the attempts' usage reports: (attempt, usage so far, model).
pub(super) type UsageSender = tokio::sync::mpsc::UnboundedSender<(NodeKey, Usage, Option<String>)>;

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
pub(super) struct RunState {
    pub(super) run_id: String,
    /// Workflow name, from the root `<Workflow name>` of the latest render.
    pub(super) workflow: String,
    /// This driver's lease: owner (recorded on its attempts) and epoch. Every batch it commits
    /// carries it, so nothing is written once another process took the run over.
    pub(super) fence: FenceToken,
    pub(super) snap: Arc<RunSnapshot>,
    pub(super) nodes: HashMap<String, HashMap<u32, NodeState>>,
    pub(super) running: HashMap<NodeKey, Running>,
    pub(super) tables: HashSet<&'static str>,
    /// Where progress lines go to be persisted (in batches, off the engine's path).
    pub(super) progress_tx: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    /// Where running attempts' usage reports go (to be fed as `Input::UsageReported`).
    pub(super) usage_tx: Option<UsageSender>,
    /// Decisions on `needs_approval` tasks (pending ones included).
    pub(super) approvals: HashMap<NodeKey, ApprovalStatus>,
    /// The notes of decided approvals.
    pub(super) approval_notes: HashMap<NodeKey, Option<String>>,
    /// The last recorded status of each phase and step.
    pub(super) groups: HashMap<(plan::GroupKind, String, u32), plan::GroupStatus>,
    pub(super) frame_no: u32,
    pub(super) frame_hash: u64,
    pub(super) finished: usize,
    /// Why the run fails, once the running attempts have ended.
    pub(super) failure: Option<Error>,
    /// Run-wide limit of tasks running at once (`EngineOptions::max_concurrency`).
    pub(super) max_concurrency: usize,
    /// `EngineOptions::wait_for_approval`.
    pub(super) wait_for_approval: bool,
    /// Runnable tasks waiting for their lookups (`Command::Prepare`).
    pub(super) pending: Option<super::machine::PendingStart>,
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
    pub(super) snapshots: Vec<super::machine::StepSnapshot>,
    /// Why every running attempt is being stopped, while it is.
    pub(super) stopping: Option<super::machine::Stopping>,
    /// Attempts that ended while the run was being cancelled, recorded by the cancellation.
    pub(super) stopped: Vec<AttemptResult>,
    /// The workflow's default retry policy (from the latest render).
    pub(super) workflow_retry_policy: Option<crate::retry::RetryPolicy>,
    /// `EngineOptions::prices`.
    pub(super) prices: Arc<crate::price::PriceCatalog>,
    /// `EngineOptions::agent_retry_policy`.
    pub(super) agent_retry_policy: crate::retry::RetryPolicy,
    /// Tasks waiting out a backoff before their next attempt.
    pub(super) backing_off: HashSet<NodeKey>,
    /// Backoffs decided but not yet handed to the executor.
    pub(super) new_backoffs: Vec<(NodeKey, Duration)>,
    /// The last reply of a task that did not validate: quoted back in its next prompt.
    pub(super) rejected: HashMap<NodeKey, crate::prompt::RejectedReply>,
    /// The run's budget and what exceeding a budget does (from the latest render).
    pub(super) run_budget: crate::budget::Budget,
    pub(super) on_budget: crate::budget::OnBudget,
    /// What the run and each task (by node id) have spent in recorded attempts.
    pub(super) run_spent: crate::budget::Spent,
    pub(super) task_spent: HashMap<String, crate::budget::Spent>,
    /// Allowances added with `smithers budget`: the run's, and each task's (USD, tokens).
    pub(super) run_raise: (f64, u64),
    pub(super) task_raise: HashMap<String, (f64, u64)>,
    /// The usage (and model) running attempts reported so far.
    pub(super) streamed: HashMap<NodeKey, (Usage, Option<String>)>,
    /// Attempts stopped because they exceeded a budget, with the reason.
    pub(super) budget_stops: HashMap<NodeKey, String>,
    /// The run waits for a budget raise: nothing new starts, and once the running attempts end
    /// it stops as `waiting-budget` with this reason.
    pub(super) parked: Option<String>,
}

impl RunState {
    pub(super) fn new(run_id: &str, owner: String) -> Self {
        RunState {
            run_id: run_id.to_owned(),
            workflow: String::new(),
            fence: FenceToken::new(owner, 0),
            snap: Arc::new(RunSnapshot {
                run_id: run_id.to_owned(),
                ..RunSnapshot::default()
            }),
            nodes: HashMap::new(),
            running: HashMap::new(),
            tables: HashSet::new(),
            progress_tx: None,
            usage_tx: None,
            approvals: HashMap::new(),
            approval_notes: HashMap::new(),
            groups: HashMap::new(),
            frame_no: 0,
            frame_hash: 0,
            finished: 0,
            failure: None,
            max_concurrency: EngineOptions::default().max_concurrency,
            wait_for_approval: false,
            pending: None,
            tree: None,
            reads: Reads::default(),
            stale: true,
            cursors: plan::Cursors::default(),
            snapshots: Vec::new(),
            stopping: None,
            stopped: Vec::new(),
            workflow_retry_policy: None,
            agent_retry_policy: EngineOptions::default().agent_retry_policy,
            prices: Arc::new(crate::price::PriceCatalog::builtin()),
            backing_off: HashSet::new(),
            new_backoffs: Vec::new(),
            rejected: HashMap::new(),
            run_budget: crate::budget::Budget::default(),
            on_budget: crate::budget::OnBudget::default(),
            run_spent: crate::budget::Spent::default(),
            task_spent: HashMap::new(),
            run_raise: (0.0, 0),
            task_raise: HashMap::new(),
            streamed: HashMap::new(),
            budget_stops: HashMap::new(),
            parked: None,
        }
    }

    pub(super) fn apply_approvals(&mut self, approvals: Vec<crate::store::ApprovalRecord>) {
        for a in approvals {
            let key = (a.node_id, a.iteration);
            self.approval_notes.insert(key.clone(), a.note);
            self.approvals.insert(key, a.status);
        }
    }

    /// Whether the kept tree still stands: the next plan needs no render.
    pub(super) fn tree_stands(&self) -> bool {
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
}

pub(super) fn shape_hash(node: &Node, h: &mut impl Hasher) {
    node.tag().hash(h);
    match node.kind() {
        NodeKind::Task(t) => t.id.hash(h),
        NodeKind::Ralph(r) => r.id.hash(h),
        NodeKind::Branch(b) => b.cond.hash(h),
        NodeKind::Phase(n) | NodeKind::Step(n) => n.name.hash(h),
        _ => {}
    }
    node.children().len().hash(h);
    for c in node.children() {
        shape_hash(c, h);
    }
}
