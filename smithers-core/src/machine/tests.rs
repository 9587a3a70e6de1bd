//! The decisions fed whole input sequences, with no store, processes or clock: every test
//! drives the machine through `RunState::handle` and reads only the commands it returns.
use std::collections::VecDeque;

use std::time::Duration;

use super::{AttemptOutput, AttemptResult, Command, Input, Prepared, RunState, StartAttempt};
use crate::agent::AgentResponse;
use crate::error::{Error, TaskError};
use crate::events::EventKind;
use crate::model::{ApprovalStatus, Timestamp, Usage};
use crate::node::{Node, Phase, Sequence, Task, Workflow};
use crate::output::{Column, ColumnKind, Output};
use crate::retry::RetryPolicy;
use crate::store::{FenceToken, Write, WriteBatch};

/// The time every input happens at.
const NOW: Timestamp = Timestamp::from_millis(1_795_586_883_123);

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

/// Event kinds of a batch, `kind:node` for node events.
fn kinds(b: &WriteBatch) -> Vec<String> {
    b.events()
        .map(|e| match &e.node_id {
            Some(n) => format!("{}:{n}", e.kind.name()),
            None => e.kind.name().to_owned(),
        })
        .collect()
}

// ---- Whole sequences through `handle`: inputs in, commands out, no store. ----

use crate::node::{Branch, Parallel};
use crate::store::ApprovalRecord;

/// The node records the commands wrote, as `id=status/attempts`.
fn node_writes(cmds: &VecDeque<Command>) -> Vec<String> {
    cmds.iter()
        .flat_map(|c| match c {
            Command::Commit(b) | Command::Finish { batch: b, .. } => {
                b.writes.iter().collect::<Vec<_>>()
            }
            _ => Vec::new(),
        })
        .filter_map(|w| match w {
            Write::Node(n) => Some(format!(
                "{}={}/{}",
                n.node_id,
                n.status.as_str(),
                n.attempts
            )),
            _ => None,
        })
        .collect()
}

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
                    .map(|p| p.task.id.as_ref())
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
            Command::RunHooks(calls) => format!(
                "run_hooks[{}]",
                calls
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Command::Finish { status, error, .. } => match error {
                Some(e) => format!("finish:{status}: {e}"),
                None => format!("finish:{status}"),
            },
            Command::Abort(e) => format!("abort: {e}"),
        })
        .collect()
}

fn render(st: &mut RunState, tree: Node) -> Vec<String> {
    describe(&st.handle(
        Input::Rendered {
            tree: Ok(tree),
            state_writes: Vec::new(),
            reads: Box::default(),
        },
        NOW,
    ))
}

/// Every lookup answered: tables ready, nothing cached.
fn prepared(st: &mut RunState, n: usize) -> Vec<String> {
    let ready = (0..n).map(|_| Prepared::Ready { cached: None }).collect();
    describe(&st.handle(Input::Prepared(ready), NOW))
}

/// The end of attempt `attempt` of `id` (iteration 0), fed as `Input::AttemptEnded`.
fn end(
    st: &mut RunState,
    id: &str,
    attempt: u32,
    outcome: std::result::Result<(), TaskError>,
    cancelling: bool,
) -> VecDeque<Command> {
    let result = AttemptResult {
        key: (id.to_owned(), 0),
        attempt,
        duration_ms: 5,
        outcome: outcome
            .map(|()| AttemptOutput::Value(serde_json::json!({"n": 1})))
            .map_err(|e| (e, None)),
    };
    st.handle(
        Input::AttemptEnded {
            result: Box::new(result),
            cancelling,
        },
        NOW,
    )
}

fn ended(
    st: &mut RunState,
    id: &str,
    attempt: u32,
    outcome: std::result::Result<(), TaskError>,
    cancelling: bool,
) -> Vec<String> {
    describe(&end(st, id, attempt, outcome, cancelling))
}

fn compute_with_retries(id: &str, retries: u32) -> Node {
    Task::<N>::new()
        .id(id)
        .retries(retries)
        .run(|_| async { Ok::<_, TaskError>(N { n: 1 }) })
        .build()
}

/// Renders `tree`, answers the lookups and returns the command lines of the start (the attempt
/// number is in `start:id#n`).
fn start_one(st: &mut RunState, tree: Node) -> Vec<String> {
    let mut out = render(st, tree);
    out.extend(prepared(st, 1));
    out
}

#[test]
fn retryable_failures_retry_until_the_budget_then_fail() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let tree = || Workflow::new().child(compute_with_retries("a", 2)).build();
    let mut events = Vec::new();
    let mut nodes = Vec::new();
    for attempt in 1..=3 {
        let started = start_one(&mut st, tree());
        assert!(
            started.contains(&format!("start:a#{attempt}")),
            "{started:?}"
        );
        let cmds = end(
            &mut st,
            "a",
            attempt,
            Err(TaskError::retryable("boom")),
            false,
        );
        events.push(describe(&cmds));
        nodes.extend(node_writes(&cmds));
    }
    assert_eq!(
        events,
        [
            ["commit[node_retrying:a,attempt_failed:a]"],
            ["commit[node_retrying:a,attempt_failed:a]"],
            ["commit[node_failed:a,attempt_failed:a]"]
        ]
    );
    assert_eq!(nodes, ["a=pending/1", "a=pending/2", "a=failed/3"]);
    let end = render(&mut st, tree());
    assert!(end[0].starts_with("finish:failed: "), "{end:?}");
}

#[test]
fn a_terminal_error_fails_at_once_and_success_records_the_output() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    start_one(
        &mut st,
        Workflow::new().child(compute_with_retries("a", 5)).build(),
    );
    let cmds = end(&mut st, "a", 1, Err(TaskError::terminal("boom")), false);
    assert_eq!(describe(&cmds), ["commit[node_failed:a,attempt_failed:a]"]);
    assert_eq!(node_writes(&cmds), ["a=failed/1"]);

    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let tree = || Workflow::new().child(compute_with_retries("b", 1)).build();
    start_one(&mut st, tree());
    assert_eq!(
        ended(&mut st, "b", 1, Err(TaskError::retryable("boom")), false),
        ["commit[node_retrying:b,attempt_failed:b]"]
    );
    assert!(start_one(&mut st, tree()).contains(&"start:b#2".to_owned()));
    let cmds = end(&mut st, "b", 2, Ok(()), false);
    assert_eq!(
        describe(&cmds),
        ["commit[node_finished:b,attempt_finished:b]"]
    );
    assert_eq!(node_writes(&cmds), ["b=finished/2"]);
    let Command::Commit(b) = &cmds[0] else {
        panic!("a commit")
    };
    assert!(b.writes.iter().any(|w| matches!(
        w,
        Write::Output { node_id, value, .. } if node_id == "b" && *value == serde_json::json!({"n": 1})
    )));
    assert!(b.writes.iter().any(|w| matches!(
        w,
        Write::State { key, value } if key == "supervisor.summary" && value == "1 node(s) finished; last: `b`"
    )));
}

#[test]
fn a_cancelled_attempt_keeps_the_retry_budget() {
    // One retry: a failure, a cancellation (the run was cancelled), a resume-like restart and a
    // second failure that is still within the budget of one failed attempt... then a third.
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let tree = || Workflow::new().child(compute_with_retries("a", 1)).build();
    start_one(&mut st, tree());
    assert_eq!(
        describe(&st.handle(Input::CancelRequested, NOW)),
        ["stop_all"]
    );
    let cmds = st.handle(Input::AllStopped(Vec::new()), NOW);
    assert_eq!(
        describe(&cmds),
        ["commit[attempt_cancelled:a]", "finish:cancelled"]
    );
    assert_eq!(node_writes(&cmds), ["a=pending/1"]);
    assert!(start_one(&mut st, tree()).contains(&"start:a#2".to_owned()));
    assert_eq!(
        ended(&mut st, "a", 2, Err(TaskError::retryable("flaky")), false),
        ["commit[node_retrying:a,attempt_failed:a]"],
        "one failure of a budget of one retry"
    );
}

#[test]
fn a_handed_back_run_records_its_attempts_interrupted_and_ends_queued() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let tree = || Workflow::new().child(compute_with_retries("a", 0)).build();
    start_one(&mut st, tree());
    let reason = "the worker stopped";
    assert_eq!(
        describe(&st.handle(
            Input::HandBack {
                reason: reason.into(),
                continuing: Vec::new()
            },
            NOW
        )),
        ["stop_all"]
    );
    assert!(
        st.handle(
            Input::HandBack {
                reason: reason.into(),
                continuing: Vec::new()
            },
            NOW
        )
        .is_empty(),
        "a second hand-back while stopping adds nothing"
    );
    let cmds = st.handle(Input::AllStopped(Vec::new()), NOW);
    assert_eq!(
        describe(&cmds),
        [
            "commit[attempt_cancelled:a]",
            "finish:queued: the worker stopped"
        ]
    );
    assert_eq!(
        node_writes(&cmds),
        ["a=pending/1"],
        "its node is pending again"
    );
    let Some(Command::Finish { batch, error, .. }) = cmds.back() else {
        unreachable!()
    };
    assert_eq!(error.as_deref(), Some(reason));
    assert!(batch.writes.iter().any(|w| matches!(
        w,
        Write::RunStatus {
            status: crate::model::RunStatus::Queued,
            error: None
        }
    )));
    assert!(batch.events().any(|e| e.kind
        == EventKind::RunQueued {
            reason: reason.into()
        }));
    // The interruption is no failure: with no retries left, the next driver still runs `a`.
    assert!(start_one(&mut st, tree()).contains(&"start:a#2".to_owned()));
}

#[test]
fn a_handed_back_pool_run_leaves_its_queued_attempts_to_the_next_driver() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let tree = || {
        Workflow::new()
            .child(
                Parallel::new()
                    .child(compute_with_retries("a", 0))
                    .child(compute_with_retries("b", 0))
                    .build(),
            )
            .build()
    };
    render(&mut st, tree());
    let cmds = st.handle(
        Input::Prepared(vec![
            Prepared::Ready { cached: None },
            Prepared::Ready { cached: None },
        ]),
        NOW,
    );
    assert_eq!(
        describe(&cmds),
        [
            "commit[node_started:a]",
            "start:a#1",
            "commit[node_started:b]",
            "start:b#1",
            "wait"
        ]
    );
    // `a` is queued for the workers; `b` runs in the driver's process.
    let reason = "the worker stopped";
    assert_eq!(
        describe(&st.handle(
            Input::HandBack {
                reason: reason.into(),
                continuing: vec![("a".into(), 0)],
            },
            NOW
        )),
        ["stop_all"],
        "only what the driver runs itself is stopped"
    );
    let cmds = st.handle(Input::AllStopped(Vec::new()), NOW);
    assert_eq!(
        describe(&cmds),
        [
            "commit[attempt_cancelled:b]",
            "finish:queued: the worker stopped"
        ]
    );
    assert_eq!(
        node_writes(&cmds),
        ["b=pending/1"],
        "`a` keeps its running node and its attempt row for the next driver to adopt"
    );

    // With only queued attempts, the run is handed back at once: nothing stops, nothing is
    // recorded for them.
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    start_one(
        &mut st,
        Workflow::new().child(compute_with_retries("a", 0)).build(),
    );
    let cmds = st.handle(
        Input::HandBack {
            reason: reason.into(),
            continuing: vec![("a".into(), 0)],
        },
        NOW,
    );
    assert_eq!(describe(&cmds), ["finish:queued: the worker stopped"]);
    assert!(node_writes(&cmds).is_empty(), "{:?}", node_writes(&cmds));
    assert!(!cmds.iter().any(|c| matches!(c,
        Command::Commit(b) | Command::Finish { batch: b, .. }
            if b.writes.iter().any(|w| matches!(w, Write::AttemptEnd { .. })))));
}

#[test]
fn a_render_records_skips_and_phase_transitions_and_hooks_run_once_on_the_executor() {
    let tree = |done: bool| {
        let phase = Phase::new()
            .name("p")
            .on_start(|h| h.set_state("phase", "p"))
            .child(Task::<N>::new().id("a").value(N { n: 1 }).build());
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
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    assert_eq!(render(&mut st, tree(false)), ["run_hooks[p]"]);
    // What the hooks wrote commits with the render's decisions: the frame and the transition.
    let cmds = st.handle(Input::HooksRan(vec![("phase".into(), "p".into())]), NOW);
    assert_eq!(describe(&cmds), ["commit[frame_rendered,step_changed]"]);
    let Command::Commit(b) = &cmds[0] else {
        panic!("a commit")
    };
    assert!(b
        .writes
        .iter()
        .any(|w| matches!(w, Write::State { key, .. } if key == "phase")));
    // The same render again: no new frame, no transition, no second hook call.
    assert_eq!(render(&mut st, tree(false)), ["prepare[a]"]);
}

#[test]
fn start_resume_and_heartbeat_are_stamped_with_the_time_they_happened() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let cmds = st.handle(
        Input::Started {
            workflow: "w".into(),
        },
        NOW,
    );
    assert_eq!(describe(&cmds), ["commit[run_started]"]);
    let Command::Commit(b) = &cmds[0] else {
        panic!("a commit")
    };
    assert_eq!(b.events().map(|e| e.at).collect::<Vec<_>>(), [NOW]);
    assert_eq!(
        describe(&st.handle(
            Input::Resumed {
                abandoned: 2,
                adopted: Vec::new()
            },
            NOW
        )),
        ["commit[run_resumed]"]
    );
    let later = Timestamp::from_millis(NOW.as_millis() + 30_000);
    let cmds = st.handle(Input::Heartbeat, later);
    let Command::Commit(b) = &cmds[0] else {
        panic!("a commit")
    };
    assert!(b.writes.iter().any(|w| matches!(
        w,
        Write::State { key, value } if key == "supervisor.heartbeat" && value == "2026-11-25T06:08:33.123Z"
    )));
}

#[test]
fn an_attempt_starts_ends_and_the_run_finishes() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let tree = || Workflow::new().child(compute("a")).build();
    assert_eq!(
        render(&mut st, tree()),
        ["commit[frame_rendered]", "prepare[a]"]
    );
    let cmds = st.handle(Input::Prepared(vec![Prepared::Ready { cached: None }]), NOW);
    assert_eq!(
        describe(&cmds),
        ["commit[node_started:a]", "start:a#1", "wait"]
    );
    assert_eq!(node_writes(&cmds), ["a=running/1"]);
    assert_eq!(
        ended(&mut st, "a", 1, Ok(()), false),
        ["commit[node_finished:a,attempt_finished:a]"]
    );
    assert_eq!(render(&mut st, tree()), ["finish:finished"]);
}

#[test]
fn an_attempt_queued_by_the_previous_driver_is_adopted_not_started_again() {
    let mut st = RunState::new("r", FenceToken::new("me", 2));
    let cmds = st.handle(
        Input::Resumed {
            abandoned: 0,
            adopted: vec![(("a".into(), 0), 3)],
        },
        NOW,
    );
    assert_eq!(describe(&cmds), ["commit[run_resumed]"]);
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
    let cmds = st.handle(
        Input::Prepared(vec![
            Prepared::Ready { cached: None },
            Prepared::Ready { cached: None },
        ]),
        NOW,
    );
    // `a` keeps its attempt (no new row, no second node_started); `b` starts as usual.
    assert_eq!(
        describe(&cmds),
        [
            "commit[]",
            "start:a#3",
            "commit[node_started:b]",
            "start:b#1",
            "wait"
        ]
    );
    let adopted: Vec<bool> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Start(s) => Some(s.adopted),
            _ => None,
        })
        .collect();
    assert_eq!(adopted, [true, false]);
    assert!(!cmds.iter().any(|c| matches!(c, Command::Commit(b) if b.writes.iter().any(|w| matches!(w, Write::AttemptStart { node_id, .. } if node_id == "a")))));
    assert_eq!(
        ended(&mut st, "a", 3, Ok(()), false),
        ["commit[node_finished:a,attempt_finished:a]"],
        "its outcome ends the adopted attempt"
    );
}

#[test]
fn statics_complete_in_one_shared_batch_before_anything_starts() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
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
        ["commit[node_started:a,node_finished:a,node_started:b,node_finished:b,attempt_finished:a,attempt_finished:b]"],
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
    let mut st = RunState::new("r", FenceToken::new("me", 1));
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
        ended(&mut st, "a", 1, Err(TaskError::terminal("boom")), false),
        ["commit[node_failed:a,attempt_failed:a]"]
    );
    assert_eq!(render(&mut st, tree()), ["wait"], "`b` is still running");
    ended(&mut st, "b", 1, Ok(()), false);
    let end = render(&mut st, tree());
    assert_eq!(end.len(), 1);
    assert!(end[0].starts_with("finish:failed: "), "{end:?}");
}

#[test]
fn cancellation_wins_over_the_attempts_it_ended() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
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
        describe(&st.handle(
            Input::AttemptEnded {
                result: Box::new(stopped),
                cancelling: true
            },
            NOW
        ))
        .is_empty(),
        "not recorded as a failure"
    );
    assert_eq!(
        describe(&st.handle(Input::CancelRequested, NOW)),
        ["stop_all"]
    );
    let cmds = st.handle(Input::AllStopped(Vec::new()), NOW);
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
    assert_eq!(node_writes(&cmds), ["a=pending/1"]);
    // Nothing is running any more: a later render starts `a` again.
    assert_eq!(
        render(&mut st, Workflow::new().child(compute("a")).build()),
        ["prepare[a]"]
    );
}

#[test]
fn a_task_the_tree_unmounts_is_stopped_and_its_attempt_recorded_cancelled() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
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
    let cmds = end(&mut st, "a", 1, Ok(()), false);
    assert_eq!(
        describe(&cmds),
        ["commit[attempt_cancelled:a]"],
        "its output is not kept"
    );
    assert_eq!(node_writes(&cmds), ["a=pending/1"]);
    // Mounted again, `a` has no output: it starts anew.
    let started = render(&mut st, tree(true));
    assert!(started.contains(&"prepare[a]".to_owned()), "{started:?}");
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
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    assert_eq!(
        render(&mut st, tree()),
        [
            "commit[frame_rendered,approval_requested:a]",
            "finish:waiting-approval: waiting for approval of `a`"
        ]
    );

    let mut st = RunState::new("r", FenceToken::new("me", 1));
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
        requested_at: NOW,
        decided_at: None,
        note: None,
    };
    assert!(describe(&st.handle(Input::ApprovalsPolled(vec![approved]), NOW)).is_empty());
    assert_eq!(render(&mut st, tree()), ["prepare[a]"]);
    assert_eq!(
        prepared(&mut st, 1),
        ["commit[node_started:a,node_finished:a,attempt_finished:a]"]
    );
    assert_eq!(render(&mut st, tree()), ["finish:finished"]);
}

#[test]
fn a_table_error_fails_the_run_and_a_lost_lease_stops_everything() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let tree = || Workflow::new().child(compute("a")).build();
    render(&mut st, tree());
    let p = vec![Prepared::TableError(Error::InvalidIdentifier("n-1".into()))];
    let end = describe(&st.handle(Input::Prepared(p), NOW));
    assert_eq!(end.len(), 1);
    assert!(end[0].starts_with("finish:failed: "), "{end:?}");

    let mut st = RunState::new("r", FenceToken::new("me", 1));
    render(&mut st, tree());
    prepared(&mut st, 1);
    assert_eq!(
        describe(&st.handle(
            Input::LeaseLost(Error::LeaseLost {
                run_id: "r".into(),
                detail: "`other` holds it".into()
            }),
            NOW
        )),
        ["stop_all"]
    );
    let aborted = AttemptResult {
        key: ("a".to_owned(), 0),
        attempt: 1,
        duration_ms: 6000,
        outcome: Err((TaskError::terminal("did not stop"), None)),
    };
    let cmds = st.handle(Input::AllStopped(vec![aborted]), NOW);
    assert_eq!(
        describe(&cmds),
        ["abort: lost the lease of run `r`: `other` holds it; this process stops without writing anything more, so that two processes never drive one run"],
        "a driver that lost its lease stops its attempts and records nothing"
    );
    assert!(node_writes(&cmds).is_empty());
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

fn agent_task(id: &str, retries: u32, policy: Option<RetryPolicy>) -> Node {
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

/// The end of attempt `attempt` of an agent task: its reply, or an error.
fn agent_ended(
    st: &mut RunState,
    id: &str,
    attempt: u32,
    outcome: std::result::Result<&str, TaskError>,
) -> Vec<String> {
    let result = AttemptResult {
        key: (id.to_owned(), 0),
        attempt,
        duration_ms: 5,
        outcome: match outcome {
            Ok(text) => Ok(AttemptOutput::Agent(AgentResponse {
                text: text.to_owned(),
                ..AgentResponse::default()
            })),
            Err(e) => Err((e, None)),
        },
    };
    describe(&st.handle(
        Input::AttemptEnded {
            result: Box::new(result),
            cancelling: false,
        },
        NOW,
    ))
}

/// Renders, answers the lookups and returns the attempt that starts.
fn started(st: &mut RunState, tree: &dyn Fn() -> Node) -> StartAttempt {
    st.handle(
        Input::Rendered {
            tree: Ok(tree()),
            state_writes: Vec::new(),
            reads: Box::default(),
        },
        NOW,
    );
    let cmds = st.handle(Input::Prepared(vec![Prepared::Ready { cached: None }]), NOW);
    let start = cmds.into_iter().find_map(|c| match c {
        Command::Start(s) => Some(s),
        _ => None,
    });
    start.expect("an attempt starts")
}

#[test]
fn only_an_invalid_reply_is_quoted_back_in_the_next_prompt() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let policy = RetryPolicy::immediate();
    let tree = || {
        Workflow::new()
            .child(agent_task("a", 3, Some(policy.clone())))
            .build()
    };
    let s = started(&mut st, &tree);
    assert_eq!(s.rejected, None);
    agent_ended(
        &mut st,
        "a",
        s.attempt,
        Err(TaskError::retryable("HTTP 500: boom")),
    );
    let s = started(&mut st, &tree);
    assert_eq!(
        s.rejected, None,
        "a transport error retries the original prompt"
    );
    agent_ended(&mut st, "a", s.attempt, Ok("I think it is fine."));
    let s = started(&mut st, &tree);
    let rejected = s.rejected.clone().expect("the reply is quoted");
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
        s.attempt,
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
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let policy = RetryPolicy::exponential(Duration::from_millis(200)).jitter(0.0);
    let tree = || {
        Workflow::new()
            .child(agent_task("a", 3, Some(policy.clone())))
            .build()
    };
    started(&mut st, &tree);
    assert_eq!(
        agent_ended(&mut st, "a", 1, Err(TaskError::retryable("HTTP 500"))),
        [
            "commit[node_retrying:a,attempt_failed:a]",
            "retry_after:a:200ms"
        ]
    );
    // Until the timer fires nothing starts, and the run is not stuck: it waits.
    assert_eq!(render(&mut st, tree()), ["wait"]);
    assert!(describe(&st.handle(Input::RetriesDue(vec![("a".into(), 0)]), NOW)).is_empty());
    assert_eq!(render(&mut st, tree()), ["prepare[a]"]);
    assert_eq!(
        prepared(&mut st, 1),
        ["commit[node_started:a]", "start:a#2", "wait"]
    );
    // The second wait doubles; a rate limit's own wait is honoured when longer.
    let limited = TaskError::retryable("HTTP 429").with_retry_after(Duration::from_secs(3));
    assert_eq!(
        agent_ended(&mut st, "a", 2, Err(limited))[1],
        "retry_after:a:3000ms"
    );
    // A terminal error is never retried, whatever the policy.
    st.handle(Input::RetriesDue(vec![("a".into(), 0)]), NOW);
    let s = started(&mut st, &tree);
    assert_eq!(
        agent_ended(&mut st, "a", s.attempt, Err(TaskError::terminal("bad key"))),
        ["commit[node_failed:a,attempt_failed:a]"]
    );
}

#[test]
fn the_retry_event_says_when_the_next_attempt_comes() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    let policy = RetryPolicy::exponential(Duration::from_millis(1500)).jitter(0.0);
    let tree = || {
        Workflow::new()
            .retry_policy(policy.clone())
            .child(agent_task("a", 1, None))
            .build()
    };
    started(&mut st, &tree);
    let cmds = st.handle(
        Input::AttemptEnded {
            result: Box::new(AttemptResult {
                key: ("a".into(), 0),
                attempt: 1,
                duration_ms: 1,
                outcome: Err((TaskError::retryable("HTTP 503"), None)),
            }),
            cancelling: false,
        },
        NOW,
    );
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
    let mut st = RunState::new("r", FenceToken::new("me", 1));
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
        describe(&st.handle(
            Input::UsageReported {
                key: ("a".into(), 0),
                usage: usage(input),
                model: None,
            },
            NOW,
        ))
    };
    assert!(report(&mut st, 500).is_empty(), "600 of 1000 tokens");
    assert_eq!(report(&mut st, 950), ["stop:a"], "1050 of 1000 tokens");
    // The stopped attempt fails for good with the budget's reason and what it streamed.
    let cmds = st.handle(
        Input::AttemptEnded {
            result: Box::new(AttemptResult {
                key: ("a".into(), 0),
                attempt: 1,
                duration_ms: 9,
                outcome: Err((TaskError::terminal("`claude` was cancelled"), None)),
            }),
            cancelling: false,
        },
        NOW,
    );
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
    assert_eq!(node_writes(&cmds), ["a=failed/1"]);
}

#[test]
fn a_spent_run_budget_parks_the_run_before_the_next_attempt() {
    let mut st = RunState::new("r", FenceToken::new("me", 1));
    // What recorded attempts spent, as `Engine::resume` hands it over.
    st.spend(
        "earlier",
        &Usage {
            input_tokens: Some(10),
            cost_usd: Some(2.5),
            ..Usage::default()
        },
    );
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
}
