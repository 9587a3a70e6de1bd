//! The decisions fed whole event sequences, with no store, processes or clock.
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
    st.on_cancelled(
        &mut b,
        &("a".into(), 0),
        None,
        "the run was cancelled",
        None,
    );
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
    let (b, decided) = st.on_render(&t, true, &p, Vec::new());
    assert!(!decided, "nothing skipped yet: the phase is still running");
    assert_eq!(kinds(&b), ["frame_rendered", "step_changed"]);
    assert!(b
        .writes
        .iter()
        .any(|w| matches!(w, Write::State { key, .. } if key == "phase")));
    // The same render again: no new frame, no transition, no second hook call.
    let (b, _) = st.on_render(&t, true, &p, Vec::new());
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
            Command::Snapshot(steps) => format!(
                "snapshot[{}]",
                steps
                    .iter()
                    .map(|s| format!(
                        "{}#{}:{}",
                        s.name,
                        s.iteration,
                        if s.after { "after" } else { "before" }
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Command::Stop((id, _)) => format!("stop:{id}"),
            Command::StopAll => "stop_all".into(),
            Command::RetryAfter { key, delay } => {
                format!("retry_after:{}:{}ms", key.0, delay.as_millis())
            }
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
        reads: Box::default(),
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
    describe(&st.handle(Input::AttemptEnded {
        result: Box::new(result),
        cancelling,
    }))
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
    let stopped = AttemptResult {
        key: ("a".to_owned(), 0),
        attempt: 1,
        duration_ms: 4700,
        outcome: Err((
            TaskError::terminal("`claude` was cancelled; its process group was killed"),
            Some(AgentResponse {
                session_id: Some("s-1".into()),
                exit_code: Some(137),
                transcript: Some("{\"type\":\"system\"}\n".into()),
                ..AgentResponse::default()
            }),
        )),
    };
    assert!(
        describe(&st.handle(Input::AttemptEnded {
            result: Box::new(stopped),
            cancelling: true
        }))
        .is_empty(),
        "not recorded as a failure"
    );
    assert_eq!(describe(&st.handle(Input::CancelRequested)), ["stop_all"]);
    let cmds = st.handle(Input::AllStopped(Vec::new()));
    assert_eq!(
        describe(&cmds),
        ["commit[attempt_cancelled:a]", "finish:cancelled"]
    );
    // The attempt's row keeps what it produced: real duration, session, exit status, its own
    // account of the stop, and its transcript.
    let Some(Command::Commit(b)) = cmds.front() else {
        unreachable!()
    };
    let end = b.writes.iter().find_map(|w| match w {
        Write::AttemptEnd {
            end, attempt: 1, ..
        } => Some(end),
        _ => None,
    });
    let end = end.expect("attempt end");
    assert_eq!(end.duration_ms, 4700);
    assert_eq!(end.session_id.as_deref(), Some("s-1"));
    assert_eq!(end.exit_code, Some(137));
    assert_eq!(
        end.error.as_deref(),
        Some("the run was cancelled; `claude` was cancelled; its process group was killed")
    );
    assert!(b
        .writes
        .iter()
        .any(|w| matches!(w, Write::Transcript { text, .. } if text.contains("system"))));
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
        ["stop_all"]
    );
    let aborted = AttemptResult {
        key: ("a".to_owned(), 0),
        attempt: 1,
        duration_ms: 6000,
        outcome: Err((TaskError::terminal("did not stop"), None)),
    };
    assert_eq!(
        describe(&st.handle(Input::AllStopped(vec![aborted]))),
        ["abort: lease"],
        "a driver that lost its lease stops its attempts and records nothing"
    );
    assert!(st.running.is_empty());
}

/// An agent that is never called: the machine only needs its name.
struct Silent;

#[async_trait::async_trait]
impl crate::agent::Agent for Silent {
    fn name(&self) -> &str {
        "silent"
    }
    async fn generate(
        &self,
        _: crate::agent::AgentRequest,
    ) -> std::result::Result<AgentResponse, crate::agent::AgentError> {
        Err(crate::agent::AgentError::terminal("never called"))
    }
}

fn agent_task(id: &str, retries: u32, policy: Option<crate::retry::RetryPolicy>) -> Node {
    let mut t = Task::<N>::new()
        .id(id)
        .agent(Silent)
        .retries(retries)
        .prompt("Count.");
    if let Some(p) = policy {
        t = t.retry_policy(p);
    }
    t.build()
}

fn agent_ended(
    st: &mut RunState,
    id: &str,
    outcome: std::result::Result<&str, TaskError>,
) -> Vec<String> {
    let result = AttemptResult {
        key: (id.to_owned(), 0),
        attempt: st.attempts(id, 0),
        duration_ms: 5,
        outcome: match outcome {
            Ok(text) => Ok(AgentResponseOrValue::Agent(AgentResponse {
                text: text.to_owned(),
                ..AgentResponse::default()
            })),
            Err(e) => Err((e, None)),
        },
    };
    describe(&st.handle(Input::AttemptEnded {
        result: Box::new(result),
        cancelling: false,
    }))
}

fn started(st: &mut RunState, tree: &dyn Fn() -> Node) -> StartAttempt {
    st.handle(Input::Rendered {
        tree: Ok(tree()),
        state_writes: Vec::new(),
        reads: Box::default(),
    });
    let cmds = st.handle(Input::Prepared(vec![Prepared::Ready { cached: None }]));
    let start = cmds.into_iter().find_map(|c| match c {
        Command::Start(s) => Some(s),
        _ => None,
    });
    start.expect("an attempt starts")
}

#[test]
fn only_an_invalid_reply_is_quoted_back_in_the_next_prompt() {
    let mut st = RunState::new("r", "me".into());
    let policy = crate::retry::RetryPolicy::immediate();
    let tree = || {
        Workflow::new()
            .child(agent_task("a", 3, Some(policy.clone())))
            .build()
    };
    assert_eq!(started(&mut st, &tree).rejected, None);
    agent_ended(&mut st, "a", Err(TaskError::retryable("HTTP 500: boom")));
    assert_eq!(
        started(&mut st, &tree).rejected,
        None,
        "a transport error retries the original prompt"
    );
    agent_ended(&mut st, "a", Ok("I think it is fine."));
    let rejected = started(&mut st, &tree)
        .rejected
        .expect("the reply is quoted");
    assert_eq!(rejected.reply, "I think it is fine.");
    assert!(
        rejected
            .error
            .starts_with("node `a`: the agent's reply has no JSON object for `N`"),
        "{}",
        rejected.error
    );
    agent_ended(
        &mut st,
        "a",
        Err(TaskError::retryable("timed out after 1s")),
    );
    assert_eq!(
        started(&mut st, &tree).rejected,
        None,
        "after a timeout, the original prompt again"
    );
}

#[test]
fn a_backoff_is_a_timer_the_executor_waits_on() {
    let mut st = RunState::new("r", "me".into());
    let policy = crate::retry::RetryPolicy::exponential(Duration::from_millis(200)).jitter(0.0);
    let tree = || {
        Workflow::new()
            .child(agent_task("a", 3, Some(policy.clone())))
            .build()
    };
    started(&mut st, &tree);
    assert_eq!(
        agent_ended(&mut st, "a", Err(TaskError::retryable("HTTP 500"))),
        [
            "commit[node_retrying:a,attempt_failed:a]",
            "retry_after:a:200ms"
        ]
    );
    // Until the timer fires nothing starts, and the run is not stuck: it waits.
    assert_eq!(render(&mut st, tree()), ["wait"]);
    assert!(describe(&st.handle(Input::RetriesDue(vec![("a".into(), 0)]))).is_empty());
    assert_eq!(render(&mut st, tree()), ["prepare[a]"]);
    assert_eq!(
        prepared(&mut st, 1),
        ["commit[node_started:a]", "start:a#2", "wait"]
    );
    // The second wait doubles; a rate limit's own wait is honoured when longer.
    let limited = TaskError::retryable("HTTP 429").with_retry_after(Duration::from_secs(3));
    assert_eq!(
        agent_ended(&mut st, "a", Err(limited))[1],
        "retry_after:a:3000ms"
    );
    // A terminal error is never retried, whatever the policy.
    st.handle(Input::RetriesDue(vec![("a".into(), 0)]));
    started(&mut st, &tree);
    assert_eq!(
        agent_ended(&mut st, "a", Err(TaskError::terminal("bad key"))),
        ["commit[node_failed:a,attempt_failed:a]"]
    );
}

#[test]
fn the_retry_event_says_when_the_next_attempt_comes() {
    let mut st = RunState::new("r", "me".into());
    let policy = crate::retry::RetryPolicy::exponential(Duration::from_millis(1500)).jitter(0.0);
    let tree = || {
        Workflow::new()
            .retry_policy(policy.clone())
            .child(agent_task("a", 1, None))
            .build()
    };
    started(&mut st, &tree);
    let cmds = st.handle(Input::AttemptEnded {
        result: Box::new(AttemptResult {
            key: ("a".into(), 0),
            attempt: 1,
            duration_ms: 1,
            outcome: Err((TaskError::retryable("HTTP 503"), None)),
        }),
        cancelling: false,
    });
    let Some(Command::Commit(b)) = cmds.front() else {
        unreachable!()
    };
    let retrying = b.events().find_map(|e| match &e.kind {
        EventKind::NodeRetrying { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert_eq!(
        retrying.as_deref(),
        Some("HTTP 503; it will be tried again in 1.5s (attempt 2 of 2)"),
        "the workflow's default policy applies"
    );
}

#[test]
fn a_budget_stops_an_attempt_as_usage_streams_in_and_blocks_the_next() {
    let mut st = RunState::new("r", "me".into());
    let tree = || {
        Workflow::new()
            .child(
                Task::<N>::new()
                    .id("a")
                    .agent(Silent)
                    .retries(2)
                    .retry_policy(crate::retry::RetryPolicy::immediate())
                    .max_tokens(1000)
                    .prompt("Count.")
                    .build(),
            )
            .build()
    };
    started(&mut st, &tree);
    let usage = |input: u64| Usage {
        input_tokens: Some(input),
        output_tokens: Some(100),
        ..Usage::default()
    };
    let report = |st: &mut RunState, input: u64| {
        describe(&st.handle(Input::UsageReported {
            key: ("a".into(), 0),
            usage: usage(input),
            model: None,
        }))
    };
    assert!(report(&mut st, 500).is_empty(), "600 of 1000 tokens");
    assert_eq!(report(&mut st, 950), ["stop:a"], "1050 of 1000 tokens");
    // The stopped attempt fails for good with the budget's reason and what it streamed.
    let cmds = st.handle(Input::AttemptEnded {
        result: Box::new(AttemptResult {
            key: ("a".into(), 0),
            attempt: 1,
            duration_ms: 9,
            outcome: Err((TaskError::terminal("`claude` was cancelled"), None)),
        }),
        cancelling: false,
    });
    assert_eq!(describe(&cmds), ["commit[node_failed:a,attempt_failed:a]"]);
    let Some(Command::Commit(b)) = cmds.front() else {
        unreachable!()
    };
    let end = b.writes.iter().find_map(|w| match w {
        Write::AttemptEnd { end, .. } => Some(end),
        _ => None,
    });
    let end = end.expect("attempt end");
    assert_eq!(end.usage.input_tokens, Some(950));
    assert_eq!(
        end.error.as_deref(),
        Some(
            "task `a` budget exceeded: max_tokens 1000, spent 1050 tokens over 1 attempt(s); \
             raise it with `smithers budget r --task a --add-tokens 1000`, then `resume`"
        )
    );
    assert_eq!(node_status(&st, "a").0, NodeStatus::Failed);
}

#[test]
fn a_spent_run_budget_parks_the_run_before_the_next_attempt() {
    let mut st = RunState::new("r", "me".into());
    st.run_spent.add(&Usage {
        input_tokens: Some(10),
        cost_usd: Some(2.5),
        ..Usage::default()
    });
    let tree = || {
        Workflow::new()
            .max_cost_usd(2.0)
            .on_budget(crate::budget::OnBudget::Park)
            .child(agent_task("a", 0, None))
            .build()
    };
    assert_eq!(
        render(&mut st, tree()),
        ["commit[frame_rendered]", "prepare[a]"]
    );
    assert_eq!(
        prepared(&mut st, 1),
        ["finish:waiting-budget: run budget exceeded: max_cost_usd $2.0000, spent $2.5000 over 1 \
          attempt(s); raise it with `smithers budget r --add 5`, then `resume`"]
    );
    assert_eq!(st.attempts("a", 0), 0, "no attempt was started");
}
