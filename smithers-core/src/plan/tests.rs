//! Planner decisions, fed tree and state with no I/O.
use super::*;
use crate::node::{Branch, Parallel, Ralph, Sequence, Task, Workflow};
use crate::output::{Column, Output};

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct N {
    n: i64,
}

impl Output for N {
    const TABLE: &'static str = "n";
    const COLUMNS: &'static [Column] = &[];
}

fn t(id: &str) -> Task<N> {
    Task::<N>::new().id(id).value(N { n: 0 })
}

fn task(id: &str) -> Node {
    t(id).build()
}

/// The run state the planner reads, built fluently.
#[derive(Default)]
struct State {
    nodes: NodeStates,
    loops: HashMap<String, LoopState>,
    running: HashSet<NodeKey>,
}

impl State {
    fn node(mut self, id: &str, it: u32, status: NodeStatus) -> Self {
        let s = NodeState {
            status,
            failures: 0,
            attempts: 1,
            last_error: (status == NodeStatus::Failed).then(|| "boom".to_owned()),
        };
        self.nodes.entry(id.into()).or_default().insert(it, s);
        self
    }
    fn done(self, id: &str, it: u32) -> Self {
        self.node(id, it, NodeStatus::Finished)
    }
    fn failed(self, id: &str, it: u32) -> Self {
        self.node(id, it, NodeStatus::Failed)
    }
    fn running(mut self, id: &str, it: u32) -> Self {
        self.running.insert((id.into(), it));
        self.node(id, it, NodeStatus::Running)
    }
    fn lp(mut self, id: &str, iteration: u32, pass_start: u32, parent: u32) -> Self {
        let s = LoopState {
            iteration,
            pass_start,
            parent_iteration: parent,
            done: false,
        };
        self.loops.insert(id.into(), s);
        self
    }
}

fn describe(p: &Plan) -> String {
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(" ")
        }
    };
    let run = p
        .runnable
        .iter()
        .map(|r| format!("{}@{}", r.task.id, r.iteration))
        .collect();
    let skip = p
        .skipped
        .iter()
        .map(|(t, it, _)| format!("{}@{it}", t.id))
        .collect();
    let loops = p
        .loop_changes
        .iter()
        .map(|c| match c {
            LoopChange::Iterate { loop_id, state } => format!(
                "iterate {loop_id}@{}/{}/{}",
                state.iteration, state.pass_start, state.parent_iteration
            ),
            LoopChange::Finish {
                loop_id,
                state,
                max_reached,
            } => format!(
                "finish {loop_id}@{}{}",
                state.iteration,
                if *max_reached { " max" } else { "" }
            ),
        })
        .collect();
    let outcome = match &p.outcome {
        Outcome::Complete => "complete".to_owned(),
        Outcome::Pending => "pending".to_owned(),
        Outcome::Failed(e) => format!("failed: {e}"),
    };
    format!(
        "run {}; skip {}; loops {}; {outcome}",
        list(run),
        list(skip),
        list(loops)
    )
}

fn check(tree: Node, state: State, expect: &str) {
    let p = plan(
        &tree,
        &PlanInput {
            nodes: &state.nodes,
            loops: &state.loops,
            running: &state.running,
            approvals: &HashMap::new(),
            node_loop: &FastMap::default(),
        },
    );
    assert_eq!(describe(&p), expect, "tree:\n{tree:?}");
}

fn wf(child: Node) -> Node {
    Workflow::new().child(child).build()
}

fn seq(ids: &[&str]) -> Node {
    Sequence::new().child(ids.iter().map(|id| task(id))).build()
}

#[test]
fn sequence_mounts_up_to_the_first_incomplete_child() {
    let tree = || wf(seq(&["a", "b", "c"]));
    check(
        tree(),
        State::default(),
        "run a@0; skip -; loops -; pending",
    );
    check(
        tree(),
        State::default().done("a", 0),
        "run b@0; skip -; loops -; pending",
    );
    check(
        tree(),
        State::default().done("a", 0).running("b", 0),
        "run -; skip -; loops -; pending",
    );
    check(
        tree(),
        State::default().done("a", 0).done("b", 0).done("c", 0),
        "run -; skip -; loops -; complete",
    );
}

#[test]
fn failed_node_fails_unless_continue_on_fail() {
    check(
        wf(seq(&["a", "b"])),
        State::default().failed("a", 0),
        "run -; skip -; loops -; failed: node `a` failed after 1 attempt(s): boom",
    );
    let tree = wf(Sequence::new()
        .child(t("a").continue_on_fail(true).build())
        .child(task("b"))
        .build());
    check(
        tree,
        State::default().failed("a", 0),
        "run b@0; skip -; loops -; pending",
    );
}

#[test]
fn skip_if_is_decided_without_running() {
    let tree = wf(Sequence::new()
        .child(t("a").skip_if(true).build())
        .child(task("b"))
        .build());
    check(
        tree,
        State::default(),
        "run b@0; skip a@0; loops -; pending",
    );
}

#[test]
fn parallel_mounts_every_child_within_its_limit() {
    let par = |limit: Option<usize>| {
        let mut p = Parallel::new().child(["a", "b", "c"].map(task));
        if let Some(l) = limit {
            p = p.max_concurrency(l);
        }
        wf(p.build())
    };
    check(
        par(None),
        State::default(),
        "run a@0 b@0 c@0; skip -; loops -; pending",
    );
    check(
        par(Some(2)),
        State::default(),
        "run a@0 b@0; skip -; loops -; pending",
    );
    // A task already running anywhere in the group takes a slot first.
    check(
        par(Some(2)),
        State::default().running("c", 0),
        "run a@0; skip -; loops -; pending",
    );
    check(
        par(Some(2)),
        State::default().done("a", 0).running("b", 0),
        "run c@0; skip -; loops -; pending",
    );
    // Nested groups count by task.
    let nested = wf(Parallel::new()
        .max_concurrency(2)
        .child(Parallel::new().child(["a", "b", "c"].map(task)).build())
        .child(task("d"))
        .build());
    check(
        nested,
        State::default(),
        "run a@0 b@0; skip -; loops -; pending",
    );
}

#[test]
fn branch_mounts_only_the_chosen_child() {
    let br = |c: bool| {
        wf(Branch::new()
            .cond(c)
            .then(task("yes"))
            .otherwise(task("no"))
            .build())
    };
    check(
        br(true),
        State::default(),
        "run yes@0; skip -; loops -; pending",
    );
    check(
        br(false),
        State::default(),
        "run no@0; skip -; loops -; pending",
    );
    check(
        wf(Branch::new().cond(false).then(task("yes")).build()),
        State::default(),
        "run -; skip -; loops -; complete",
    );
}

fn ralph(until: bool, on_max: OnMaxReached) -> Node {
    wf(Ralph::new()
        .id("r")
        .until(until)
        .max_iterations(2)
        .on_max_reached(on_max)
        .child(task("t"))
        .build())
}

#[test]
fn ralph_iterates_then_stops_at_max_or_until() {
    use OnMaxReached::*;
    check(
        ralph(false, ReturnLast),
        State::default(),
        "run t@0; skip -; loops -; pending",
    );
    check(
        ralph(false, ReturnLast),
        State::default().done("t", 0),
        "run -; skip -; loops iterate r@1/0/0; pending",
    );
    check(
        ralph(false, ReturnLast),
        State::default().done("t", 0).lp("r", 1, 0, 0),
        "run t@1; skip -; loops -; pending",
    );
    check(
        ralph(false, ReturnLast),
        State::default().done("t", 0).done("t", 1).lp("r", 1, 0, 0),
        "run -; skip -; loops finish r@1 max; complete",
    );
    check(
        ralph(false, Fail),
        State::default().done("t", 0).done("t", 1).lp("r", 1, 0, 0),
        "run -; skip -; loops -; failed: loop `r` reached max_iterations (2) without its `until` condition becoming true",
    );
    check(
        ralph(true, Fail),
        State::default().done("t", 0),
        "run -; skip -; loops finish r@0; complete",
    );
    check(
        ralph(true, Fail),
        State::default(),
        "run -; skip -; loops finish r@0; complete",
    );
}

#[test]
fn nested_ralph_starts_a_new_pass_at_a_fresh_key_when_the_outer_loop_moves() {
    let tree = wf(Ralph::new()
        .id("outer")
        .max_iterations(3)
        .child(
            Ralph::new()
                .id("inner")
                .max_iterations(2)
                .child(task("i"))
                .build(),
        )
        .child(task("o"))
        .build());
    let mut done_pass = State::default().lp("outer", 1, 0, 0).lp("inner", 1, 0, 0);
    done_pass = done_pass.done("i", 0).done("i", 1).done("o", 0);
    check(
        tree,
        done_pass,
        "run -; skip -; loops iterate inner@2/2/1; pending",
    );
}

#[test]
fn duplicate_ids_fail_before_anything_runs() {
    check(
        wf(seq(&["a", "a"])),
        State::default(),
        "run -; skip -; loops -; failed: duplicate node id `a`: used by a <Task output=N> and by a <Task output=N>; give each node a unique id",
    );
}

/// What a plan decided, in full, for comparing two plans.
fn decided(p: &Plan) -> String {
    let mut running: Vec<String> = p
        .mounted_running
        .iter()
        .map(|(id, it)| format!("{id}@{it}"))
        .collect();
    running.sort();
    let waiting: Vec<String> = p
        .awaiting_approval
        .iter()
        .map(|r| r.task.id.to_string())
        .collect();
    format!("{}; running {running:?}; waiting {waiting:?}", describe(p))
}

#[test]
fn a_kept_tree_is_planned_as_a_fresh_walk_would_plan_it() {
    // A Parallel with room for 3: plain tasks, a skipped one, a nested sequence and a task that
    // needs approval among them, then a long run of plain tasks, and a task after the group.
    let mut children: Vec<Node> = vec![
        task("p0"),
        t("skipped").skip_if(true).build(),
        seq(&["s0", "s1"]),
        task("p1"),
        t("approve").needs_approval(true).build(),
    ];
    children.extend((0..40).map(|i| task(&format!("f{i}"))));
    let tree = wf(Sequence::new()
        .child(Parallel::new().max_concurrency(3).child(children).build())
        .child(task("after"))
        .build());
    let mut state = State::default();
    let approvals = HashMap::new();
    let node_loop = FastMap::default();
    let mut cursors = Cursors::default();
    let mut step = 0;
    loop {
        let input = PlanInput {
            nodes: &state.nodes,
            loops: &state.loops,
            running: &state.running,
            approvals: &approvals,
            node_loop: &node_loop,
        };
        let kept = plan_with(&tree, &input, &mut cursors);
        let fresh = plan(&tree, &input);
        assert_eq!(decided(&kept), decided(&fresh), "step {step}");
        if !matches!(kept.outcome, Outcome::Pending) || step > 200 {
            break;
        }
        for (t, it, _) in &kept.skipped {
            state = state.node(&t.id, *it, NodeStatus::Skipped);
        }
        for r in &kept.runnable {
            state = state.running(&r.task.id, r.iteration);
        }
        // Attempts end out of order: every third step the newest, else the oldest by id.
        let mut running: Vec<NodeKey> = state.running.iter().cloned().collect();
        running.sort();
        let ended = if step % 3 == 0 {
            running.pop()
        } else {
            running.first().cloned()
        };
        match ended {
            Some(key) => {
                state.running.remove(&key);
                state = state.done(&key.0, key.1);
            }
            None => break,
        }
        step += 1;
    }
    // Everything but the task waiting for its approval ran; the group never completed.
    assert!(step > 40, "{step} steps");
    assert!(state.running.is_empty());
    assert_eq!(
        state.nodes.get("f39").map(|m| m[&0].status),
        Some(NodeStatus::Finished)
    );
    assert!(!state.nodes.contains_key("after"));
}
