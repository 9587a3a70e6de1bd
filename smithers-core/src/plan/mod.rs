//! The scheduler: a pure function from a rendered tree and the run's state to what happens next.
//!
//! It does no I/O. Each component's rule lives in its arm of `Planner::walk`: a `Sequence`
//! mounts children until the first one that is not complete, a `Parallel` mounts all (bounded by
//! `max_concurrency`), a `Branch` mounts the chosen child, a `Ralph` loop repeats its children
//! and asks to advance its counter when an iteration completes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::Error;
use crate::model::{
    ApprovalStatus, FastMap, GroupKind, GroupStatus, LoopState, NodeKey, NodeState, NodeStates,
    NodeStatus,
};
use crate::node::{Node, NodeKind, OnMaxReached, TaskExec, TaskSpec};

/// What the planner reads.
pub(crate) struct PlanInput<'a> {
    /// Node states by id, then iteration.
    pub(crate) nodes: &'a NodeStates,
    /// Loop states.
    pub(crate) loops: &'a HashMap<String, LoopState>,
    /// Attempts in flight.
    pub(crate) running: &'a HashSet<NodeKey>,
    /// Decisions on `needs_approval` tasks.
    pub(crate) approvals: &'a HashMap<NodeKey, ApprovalStatus>,
    /// Node id → innermost loop id, as the last render left it.
    pub(crate) node_loop: &'a FastMap<String, String>,
}

/// A loop decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LoopChange {
    /// Start the loop's counter at a new iteration (next iteration, or a new pass of a nested loop).
    Iterate {
        /// Loop id.
        loop_id: String,
        /// New state.
        state: LoopState,
    },
    /// The current pass is complete.
    Finish {
        /// Loop id.
        loop_id: String,
        /// New state (done).
        state: LoopState,
        /// Whether `max_iterations` was reached with `until` still false.
        max_reached: bool,
    },
}

/// Whether the tree is done.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Every mounted node is terminal.
    Complete,
    /// Work remains.
    Pending,
    /// A node failed (or a loop hit its limit with `on_max_reached=Fail`).
    Failed(Error),
}

/// A task ready to start.
#[derive(Clone)]
pub(crate) struct Runnable {
    /// The task.
    pub(crate) task: Arc<TaskSpec>,
    /// Its iteration key.
    pub(crate) iteration: u32,
    /// Its innermost loop.
    pub(crate) loop_id: Option<String>,
}

/// What the planner decided.
pub(crate) struct Plan {
    /// Tasks ready to start, in tree order.
    pub(crate) runnable: Vec<Runnable>,
    /// Tasks to record as skipped, with their loop.
    pub(crate) skipped: Vec<(Arc<TaskSpec>, u32, Option<String>)>,
    /// Loop counter changes to persist (then re-render).
    pub(crate) loop_changes: Vec<LoopChange>,
    /// Mounted tasks whose innermost loop differs from `PlanInput::node_loop` (`None`: outside
    /// any loop now).
    pub(crate) node_loop: HashMap<String, Option<String>>,
    /// Running attempts whose task is still mounted; any other running attempt was unmounted by
    /// this render (a branch switched, a loop finished) and should stop.
    pub(crate) mounted_running: HashSet<NodeKey>,
    /// `needs_approval` tasks ready but not decided: the run waits for a human.
    pub(crate) awaiting_approval: Vec<Runnable>,
    /// Phases and steps the render mounted, with their status.
    pub(crate) groups: Vec<GroupState>,
    /// `needs_approval` tasks a human denied: the engine records them failed.
    pub(crate) denied: Vec<Runnable>,
    /// Overall outcome.
    pub(crate) outcome: Outcome,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Complete,
    /// Work remains; `active` when a task of the subtree runs or can start now.
    Pending {
        active: bool,
    },
    Failed,
}

struct Planner<'a> {
    input: &'a PlanInput<'a>,
    runnable: Vec<Runnable>,
    skipped: Vec<(Arc<TaskSpec>, u32, Option<String>)>,
    loop_changes: Vec<LoopChange>,
    node_loop: HashMap<String, Option<String>>,
    mounted_running: HashSet<NodeKey>,
    awaiting_approval: Vec<Runnable>,
    denied: Vec<Runnable>,
    groups: Vec<GroupState>,
    /// The phase being walked, for the steps inside it.
    phase: Option<String>,
    /// Mounted tasks found running so far in the walk (a `Parallel` counts its subtree's).
    running_seen: usize,
    error: Option<Error>,
    /// See [`Cursors::complete`].
    complete: HashMap<(usize, u32), usize>,
    /// See [`Cursors::parallels`].
    parallels: HashMap<(usize, u32), ParallelCursor>,
    /// See [`Cursors::loops_started`].
    loops_started: HashSet<(usize, u32)>,
}

/// One plan's walk of a `Parallel`'s children.
struct ParallelWalk {
    /// Per walked child: where its runnable, skipped, loop changes and groups start.
    marks: Vec<(usize, usize, usize, usize)>,
    /// Per walked child: its index.
    walked: Vec<usize>,
    /// The walked children that are not complete (or decided something), in order.
    open: Vec<usize>,
    /// The group's status so far.
    result: Status,
}

/// The status of a group from its children's: failed if one failed, else pending if one is
/// (active if one is), else complete.
fn merge(a: Status, b: Status) -> Status {
    match (a, b) {
        (Status::Failed, _) | (_, Status::Failed) => Status::Failed,
        (Status::Pending { active: a }, Status::Pending { active: b }) => {
            Status::Pending { active: a || b }
        }
        (Status::Pending { active }, Status::Complete)
        | (Status::Complete, Status::Pending { active }) => Status::Pending { active },
        (Status::Complete, Status::Complete) => Status::Complete,
    }
}

/// What the planner remembers of one rendered tree between plans of it: that its ids were
/// checked, how many leading children of each `Sequence` (per iteration) are complete, which
/// children of each `Parallel` can still change, and which loop iterations have started, so
/// planning again after one output walks only what can still change.
///
/// Only valid for the tree it was built on, while no loop counter moved (completion is then
/// monotone: a finished or skipped task stays so); a new render starts a new one.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    ids_checked: bool,
    /// (address of a `Sequence`'s children slice in the tree, iteration) → leading children
    /// complete.
    complete: HashMap<(usize, u32), usize>,
    /// (address of a `Parallel`'s children slice, iteration) → which children can still change.
    parallels: HashMap<(usize, u32), ParallelCursor>,
    /// (address of a `Ralph`'s children slice, iteration) of loop iterations known to have
    /// started (a task in them has state or runs): that stays so while the tree is kept.
    loops_started: HashSet<(usize, u32)>,
}

/// What the planner knows of one `Parallel` (in one iteration) of a kept tree, so that planning
/// it again costs what can still change, not its size: the children not yet complete, and where
/// the children that no plan has offered to start begin.
#[derive(Debug, Default)]
struct ParallelCursor {
    /// Children before `fresh` that were not complete at the last plan, in order.
    open: Vec<usize>,
    /// From here on every child is a plain task (no `skip_if`, no approval) that has no state,
    /// is not running and was never kept runnable: planned, each would only ask to start, and
    /// the ones past the group's free room would be trimmed. They are walked only while the
    /// group has room.
    fresh: usize,
}

/// Plans the next step for `tree`.
pub(crate) fn plan(tree: &Node, input: &PlanInput<'_>) -> Plan {
    plan_with(tree, input, &mut Cursors::default())
}

/// Plans the next step for `tree`, skipping what `cursors` (built by earlier plans of this very
/// tree) knows to be complete.
pub(crate) fn plan_with(tree: &Node, input: &PlanInput<'_>, cursors: &mut Cursors) -> Plan {
    let mut p = Planner {
        input,
        runnable: Vec::new(),
        skipped: Vec::new(),
        loop_changes: Vec::new(),
        node_loop: HashMap::new(),
        mounted_running: HashSet::new(),
        awaiting_approval: Vec::new(),
        denied: Vec::new(),
        groups: Vec::new(),
        phase: None,
        running_seen: 0,
        error: None,
        complete: std::mem::take(&mut cursors.complete),
        parallels: std::mem::take(&mut cursors.parallels),
        loops_started: std::mem::take(&mut cursors.loops_started),
    };
    if !cursors.ids_checked {
        p.check_ids(tree, &mut FastMap::default());
        cursors.ids_checked = p.error.is_none();
    }
    // An invalid tree (duplicate or bad ids) is not walked: nothing in it may start.
    let outcome = match p.error.take() {
        Some(e) => Outcome::Failed(e),
        None => match (p.walk(tree, 0, None), p.error.take()) {
            (_, Some(e)) => Outcome::Failed(e),
            (Status::Complete, None) => Outcome::Complete,
            (Status::Pending { .. }, None) => Outcome::Pending,
            (Status::Failed, None) => Outcome::Failed(Error::Internal(
                "a node failed without recording why".into(),
            )),
        },
    };
    cursors.complete = std::mem::take(&mut p.complete);
    cursors.parallels = std::mem::take(&mut p.parallels);
    cursors.loops_started = std::mem::take(&mut p.loops_started);
    Plan {
        runnable: p.runnable,
        skipped: p.skipped,
        loop_changes: p.loop_changes,
        node_loop: p.node_loop,
        mounted_running: p.mounted_running,
        awaiting_approval: p.awaiting_approval,
        groups: p.groups,
        denied: p.denied,
        outcome,
    }
}

/// The id rules a run enforces before anything starts, for what renders without running
/// (`graph`): every mounted task and loop id is valid (not empty, at most 256 bytes, no control
/// characters) and unique. The error is the one the run would fail with.
pub(crate) fn check_ids(tree: &Node) -> Result<(), Error> {
    let nodes = crate::model::NodeStates::default();
    let loops = HashMap::new();
    let running = HashSet::new();
    let approvals = HashMap::new();
    let node_loop = crate::model::FastMap::default();
    let input = PlanInput {
        nodes: &nodes,
        loops: &loops,
        running: &running,
        approvals: &approvals,
        node_loop: &node_loop,
    };
    match plan(tree, &input).outcome {
        Outcome::Failed(e @ (Error::DuplicateNodeId { .. } | Error::InvalidNodeId { .. })) => {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// The ids of every task under `node`.
fn task_ids(node: &Node, out: &mut Vec<String>) {
    if let NodeKind::Task(t) = &node.kind {
        out.push(t.id.to_string());
    }
    for c in &node.children {
        task_ids(c, out);
    }
}

/// The agent tasks under `node`.
fn task_agents(node: &Node, out: &mut Vec<(String, crate::agent::SharedAgent)>) {
    if let NodeKind::Task(t) = &node.kind {
        if let TaskExec::Agent(a) = &t.exec {
            out.push((t.id.to_string(), a.clone()));
        }
    }
    for c in &node.children {
        task_agents(c, out);
    }
}

/// How a duplicate-id error names a node.
fn describe(node: &Node) -> String {
    match &node.kind {
        NodeKind::Task(t) => format!("a <Task output={}>", t.output.short_name()),
        _ => "a <Ralph> loop".to_owned(),
    }
}

fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("ids must not be empty; give the task an `id`".into());
    }
    if id.len() > 256 {
        return Err(format!(
            "ids are at most 256 bytes, this one has {}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("ids must not contain control characters".into());
    }
    Ok(())
}

impl<'a> Planner<'a> {
    /// Every mounted task and loop id must be valid and unique (ids are unique per frame).
    fn check_ids<'t>(&mut self, node: &'t Node, seen: &mut FastMap<&'t str, &'t Node>) {
        let id = match &node.kind {
            NodeKind::Task(t) => Some(t.id.as_ref()),
            NodeKind::Ralph(r) => Some(r.id.as_str()),
            NodeKind::Branch(_) => {
                // Ids are unique per frame: only the mounted arm of a branch counts.
                for c in node.mounted_children() {
                    self.check_ids(c, seen);
                }
                return;
            }
            _ => None,
        };
        if let Some(id) = id {
            if let Err(reason) = check_node_id(id) {
                let reason = match &node.kind {
                    NodeKind::Task(t) => {
                        format!("{reason} (task with output `{}`)", t.output.short_name())
                    }
                    _ => reason,
                };
                self.error.get_or_insert(Error::InvalidNodeId {
                    id: id.to_owned(),
                    reason,
                });
            } else if let Some(first) = seen.insert(id, node) {
                self.error.get_or_insert(Error::DuplicateNodeId {
                    id: id.to_owned(),
                    first: describe(first),
                    second: describe(node),
                });
            }
        }
        for c in &node.children {
            self.check_ids(c, seen);
        }
    }

    fn state(&self, id: &str, it: u32) -> Option<&'a NodeState> {
        self.input.nodes.get(id).and_then(|m| m.get(&it))
    }

    fn walk(&mut self, node: &Node, it: u32, lp: Option<&str>) -> Status {
        match &node.kind {
            NodeKind::Task(t) => self.task(t, it, lp),
            NodeKind::Workflow(_) | NodeKind::Fragment => self.sequence(&node.children, it, lp),
            NodeKind::Sequence(g) => {
                if g.skip_if {
                    return Status::Complete;
                }
                self.sequence(&node.children, it, lp)
            }
            NodeKind::Phase(n) | NodeKind::Step(n) => {
                let kind = if matches!(node.kind, NodeKind::Phase(_)) {
                    GroupKind::Phase
                } else {
                    GroupKind::Step
                };
                let mut tasks = Vec::new();
                task_ids(node, &mut tasks);
                let mut agents = Vec::new();
                if kind == GroupKind::Step {
                    task_agents(node, &mut agents);
                }
                let index = self.groups.len();
                self.groups.push(GroupState {
                    kind,
                    name: n.name.clone(),
                    phase: if kind == GroupKind::Step {
                        self.phase.clone()
                    } else {
                        None
                    },
                    iteration: it,
                    status: GroupStatus::Skipped,
                    tasks,
                    agents,
                    hooks: n.hooks.clone(),
                });
                if n.skip_if {
                    return Status::Complete;
                }
                let outer = if kind == GroupKind::Phase {
                    self.phase.replace(n.name.clone())
                } else {
                    None
                };
                let status = self.sequence(&node.children, it, lp);
                if kind == GroupKind::Phase {
                    self.phase = outer;
                }
                self.groups[index].status = match status {
                    Status::Complete => GroupStatus::Completed,
                    Status::Failed => GroupStatus::Failed,
                    Status::Pending { .. } => GroupStatus::Running,
                };
                status
            }
            NodeKind::Parallel(g) => {
                if g.skip_if {
                    return Status::Complete;
                }
                self.parallel(&node.children, g.max_concurrency, it, lp)
            }
            NodeKind::Branch(_) => match node.mounted_children().first() {
                Some(c) => self.walk(c, it, lp),
                None => Status::Complete,
            },
            NodeKind::Ralph(r) => self.ralph(node, r, it),
        }
    }

    fn task(&mut self, t: &Arc<TaskSpec>, it: u32, lp: Option<&str>) -> Status {
        if self.input.node_loop.get(&*t.id).map(String::as_str) != lp {
            self.node_loop
                .insert(t.id.to_string(), lp.map(str::to_owned));
        }
        if !self.input.running.is_empty() && self.input.running.contains(&(t.id.to_string(), it)) {
            self.mounted_running.insert((t.id.to_string(), it));
            self.running_seen += 1;
            return Status::Pending { active: true };
        }
        match self.state(&t.id, it).map(|s| s.status) {
            Some(NodeStatus::Finished | NodeStatus::Skipped) => Status::Complete,
            Some(NodeStatus::Failed) if t.continue_on_fail => Status::Complete,
            Some(NodeStatus::Failed) => {
                let s = self.state(&t.id, it);
                self.error.get_or_insert(Error::NodeFailed {
                    node: t.id.to_string(),
                    attempts: s.map_or(0, |s| s.attempts),
                    message: s
                        .and_then(|s| s.last_error.clone())
                        .unwrap_or_else(|| "unknown error".into()),
                });
                Status::Failed
            }
            _ if t.skip_if => {
                self.skipped.push((t.clone(), it, lp.map(str::to_owned)));
                Status::Complete
            }
            _ => {
                let r = Runnable {
                    task: t.clone(),
                    iteration: it,
                    loop_id: lp.map(str::to_owned),
                };
                if !t.needs_approval {
                    self.runnable.push(r);
                    return Status::Pending { active: true };
                }
                match self.input.approvals.get(&(t.id.to_string(), it)) {
                    Some(ApprovalStatus::Approved) => {
                        self.runnable.push(r);
                        Status::Pending { active: true }
                    }
                    Some(ApprovalStatus::Denied) => {
                        // The engine records the node failed, then renders again.
                        self.denied.push(r);
                        Status::Pending { active: true }
                    }
                    _ => {
                        self.awaiting_approval.push(r);
                        Status::Pending { active: false }
                    }
                }
            }
        }
    }

    /// Where the leading complete children of `children` in iteration `it` end, as far as
    /// earlier plans of this tree know.
    fn cursor(&self, children: &[Node], it: u32) -> ((usize, u32), usize) {
        let key = (children.as_ptr() as usize, it);
        (key, self.complete.get(&key).copied().unwrap_or(0))
    }

    fn advance(&mut self, key: (usize, u32), from: usize, to: usize) {
        if to > from {
            self.complete.insert(key, to);
        }
    }

    fn sequence(&mut self, children: &[Node], it: u32, lp: Option<&str>) -> Status {
        let (key, start) = self.cursor(children, it);
        let mut done = start;
        for (i, c) in children.iter().enumerate().skip(start) {
            let changes = self.loop_changes.len();
            match self.walk(c, it, lp) {
                Status::Complete => {
                    // Complete without deciding anything: it stays complete in this tree.
                    if done == i && self.loop_changes.len() == changes {
                        done = i + 1;
                    }
                }
                other => {
                    self.advance(key, start, done);
                    // The active phase has mounted its later steps: they are pending.
                    if self.phase.is_some() {
                        for rest in &children[i + 1..] {
                            self.pending_steps(rest, it);
                        }
                    }
                    return other;
                }
            }
        }
        self.advance(key, start, done);
        Status::Complete
    }

    /// Reports the `<Step>`s under `node` (not past a nested phase or loop) as pending.
    fn pending_steps(&mut self, node: &Node, it: u32) {
        match &node.kind {
            NodeKind::Step(n) => {
                let mut tasks = Vec::new();
                task_ids(node, &mut tasks);
                let mut agents = Vec::new();
                task_agents(node, &mut agents);
                self.groups.push(GroupState {
                    kind: GroupKind::Step,
                    name: n.name.clone(),
                    phase: self.phase.clone(),
                    iteration: it,
                    status: GroupStatus::Pending,
                    tasks,
                    agents,
                    hooks: n.hooks.clone(),
                });
            }
            NodeKind::Phase(_) | NodeKind::Ralph(_) | NodeKind::Task(_) => {}
            NodeKind::Branch(b) => {
                let chosen = if b.cond {
                    node.children.first()
                } else {
                    node.children.get(1)
                };
                if let Some(c) = chosen {
                    self.pending_steps(c, it);
                }
            }
            _ => {
                for c in &node.children {
                    self.pending_steps(c, it);
                }
            }
        }
    }

    fn parallel(
        &mut self,
        children: &[Node],
        limit: Option<usize>,
        it: u32,
        lp: Option<&str>,
    ) -> Status {
        // The limit counts tasks of the whole subtree (a nested group's too), not children, and
        // tasks already running anywhere in the group count before any new one starts.
        let limit = limit.unwrap_or(usize::MAX).max(1);
        let base = self.marks();
        let running_before = self.running_seen;
        let key = (children.as_ptr() as usize, it);
        let mut walk = ParallelWalk {
            marks: Vec::new(),
            walked: Vec::new(),
            open: Vec::new(),
            result: Status::Complete,
        };
        let fresh = match self.parallels.remove(&key) {
            // The first plan of this group in this tree walks every child, and finds where the
            // trailing run of fresh plain tasks begins.
            None => {
                let mut fresh = children.len();
                for (i, c) in children.iter().enumerate() {
                    if !self.plain_fresh(c, it, lp) {
                        fresh = children.len();
                    } else if fresh == children.len() {
                        fresh = i;
                    }
                    self.parallel_child(&mut walk, children, i, it, lp);
                }
                fresh
            }
            // Later plans walk the open children, then as many fresh ones as there is room
            // for once the running tasks and the open children's new ones are counted; the
            // others would be trimmed (they start nothing and decide nothing), so they are
            // not walked.
            Some(ParallelCursor { open, fresh }) => {
                for i in open {
                    self.parallel_child(&mut walk, children, i, it, lp);
                }
                let running = self.running_seen - running_before;
                let asked = self.runnable.len() - base.0;
                let room = limit.saturating_sub(running).saturating_sub(asked);
                let end = fresh.saturating_add(room).min(children.len());
                for i in fresh..end {
                    self.parallel_child(&mut walk, children, i, it, lp);
                }
                if end < children.len() {
                    // Waiting for room: pending, and each can start once there is.
                    walk.result = merge(walk.result, Status::Pending { active: true });
                }
                fresh
            }
        };
        let kept = self.trim_to_limit(limit, self.running_seen - running_before, base, &walk.marks);
        // A fresh child whose task was kept runnable may start now: it is no longer fresh (the
        // fresh ones kept are the first of their run, as each asks for one slot).
        let fresh = kept
            .iter()
            .map(|&w| walk.walked[w] + 1)
            .fold(fresh, usize::max);
        walk.open.retain(|&i| i < fresh);
        self.parallels.insert(
            key,
            ParallelCursor {
                open: walk.open,
                fresh,
            },
        );
        walk.result
    }

    /// Walks child `i` of a `Parallel`, recording where its decisions start and whether it can
    /// still change.
    fn parallel_child(
        &mut self,
        walk: &mut ParallelWalk,
        children: &[Node],
        i: usize,
        it: u32,
        lp: Option<&str>,
    ) {
        walk.marks.push(self.marks());
        walk.walked.push(i);
        let changes = self.loop_changes.len();
        let s = self.walk(&children[i], it, lp);
        // Complete without deciding anything: it stays complete in this tree.
        if !(s == Status::Complete && self.loop_changes.len() == changes) {
            walk.open.push(i);
        }
        walk.result = merge(walk.result, s);
    }

    /// Whether planning `node` now would only ask to start its one task, and go on doing so
    /// until a plan keeps it runnable: a task without `skip_if` or approval, in the loop the
    /// run knows it in, with no state that ends it, not running.
    fn plain_fresh(&self, node: &Node, it: u32, lp: Option<&str>) -> bool {
        let NodeKind::Task(t) = &node.kind else {
            return false;
        };
        !t.skip_if
            && !t.needs_approval
            && self.input.node_loop.get(&*t.id).map(String::as_str) == lp
            && self
                .state(&t.id, it)
                .is_none_or(|s| s.status == NodeStatus::Pending)
            && (self.input.running.is_empty()
                || !self.input.running.contains(&(t.id.to_string(), it)))
    }

    /// Where the planner's outputs end now: runnable, skipped, loop changes, groups.
    fn marks(&self) -> (usize, usize, usize, usize) {
        (
            self.runnable.len(),
            self.skipped.len(),
            self.loop_changes.len(),
            self.groups.len(),
        )
    }

    /// Keeps the runnable tasks of a `Parallel`'s children, in tree order, while fewer than
    /// `limit` tasks would run; a child left without room starts nothing and decides nothing
    /// (its phases and steps have not started either). Returns the positions in `marks` of the
    /// children whose tasks were kept.
    fn trim_to_limit(
        &mut self,
        limit: usize,
        running: usize,
        base: (usize, usize, usize, usize),
        marks: &[(usize, usize, usize, usize)],
    ) -> Vec<usize> {
        let mut room = limit.saturating_sub(running);
        let mut kept = Vec::new();
        let ends = marks.iter().skip(1).copied().chain([self.marks()]);
        let (mut runnable, mut skipped, mut loop_changes, mut groups) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (w, (&(r0, s0, l0, g0), (r1, s1, l1, g1))) in marks.iter().zip(ends).enumerate() {
            let new = r1 - r0;
            if new > 0 && room == 0 {
                continue;
            }
            let keep = new.min(room);
            if keep > 0 {
                kept.push(w);
            }
            room -= keep;
            runnable.extend_from_slice(&self.runnable[r0..r0 + keep]);
            skipped.extend_from_slice(&self.skipped[s0..s1]);
            loop_changes.extend_from_slice(&self.loop_changes[l0..l1]);
            groups.extend_from_slice(&self.groups[g0..g1]);
        }
        self.runnable.truncate(base.0);
        self.runnable.extend(runnable);
        self.skipped.truncate(base.1);
        self.skipped.extend(skipped);
        self.loop_changes.truncate(base.2);
        self.loop_changes.extend(loop_changes);
        self.groups.truncate(base.3);
        self.groups.extend(groups);
        kept
    }

    /// Whether any task under `node` has state (or is running) in iteration `it`.
    fn started(&self, node: &Node, it: u32) -> bool {
        match &node.kind {
            NodeKind::Task(t) => {
                self.state(&t.id, it).is_some()
                    || self.input.running.contains(&(t.id.to_string(), it))
            }
            NodeKind::Ralph(_) => false,
            _ => node.children.iter().any(|c| self.started(c, it)),
        }
    }

    fn ralph(&mut self, node: &Node, r: &crate::node::RalphProps, parent_it: u32) -> Status {
        if r.skip_if {
            return Status::Complete;
        }
        let st = match self.input.loops.get(&r.id) {
            Some(st) if st.parent_iteration != parent_it => {
                // The enclosing loop moved on: a new pass of this loop, at a fresh iteration key.
                let next = st.iteration + 1;
                let state = LoopState {
                    iteration: next,
                    pass_start: next,
                    parent_iteration: parent_it,
                    done: false,
                };
                self.loop_changes.push(LoopChange::Iterate {
                    loop_id: r.id.clone(),
                    state,
                });
                return Status::Pending { active: true };
            }
            Some(st) => st.clone(),
            None => LoopState {
                iteration: 0,
                pass_start: 0,
                parent_iteration: parent_it,
                done: false,
            },
        };
        if st.done {
            return Status::Complete;
        }
        // Once an iteration has started it stays started in this tree.
        let key = (node.children.as_ptr() as usize, st.iteration);
        let fresh = !self.loops_started.contains(&key)
            && !node.children.iter().any(|c| self.started(c, st.iteration));
        if !fresh {
            self.loops_started.insert(key);
        }
        if r.until && fresh {
            // `until` is checked at iteration boundaries: before an iteration starts or after it ends.
            let state = LoopState {
                done: true,
                ..st.clone()
            };
            self.loop_changes.push(LoopChange::Finish {
                loop_id: r.id.clone(),
                state,
                max_reached: false,
            });
            return Status::Complete;
        }
        let status = self.sequence(&node.children, st.iteration, Some(&r.id));
        if status != Status::Complete {
            return status;
        }
        if r.until {
            let state = LoopState { done: true, ..st };
            self.loop_changes.push(LoopChange::Finish {
                loop_id: r.id.clone(),
                state,
                max_reached: false,
            });
            return Status::Complete;
        }
        let done_iterations = st.iteration - st.pass_start + 1;
        if done_iterations >= r.max_iterations {
            return match r.on_max_reached {
                OnMaxReached::ReturnLast => {
                    let state = LoopState { done: true, ..st };
                    self.loop_changes.push(LoopChange::Finish {
                        loop_id: r.id.clone(),
                        state,
                        max_reached: true,
                    });
                    Status::Complete
                }
                OnMaxReached::Fail => {
                    self.error.get_or_insert(Error::MaxIterationsReached {
                        id: r.id.clone(),
                        max: r.max_iterations,
                    });
                    Status::Failed
                }
            };
        }
        let state = LoopState {
            iteration: st.iteration + 1,
            ..st
        };
        self.loop_changes.push(LoopChange::Iterate {
            loop_id: r.id.clone(),
            state,
        });
        Status::Pending { active: true }
    }
}

mod groups;
#[cfg(test)]
mod tests;

pub(crate) use groups::GroupState;
