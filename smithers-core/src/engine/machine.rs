//! The engine's decisions as a state machine over the in-memory run: each `on_*` method takes
//! what happened (a render's plan, an attempt's end, a cancellation), updates the state and
//! returns the writes that record it. Nothing here does I/O; the loop in `mod.rs` commits the
//! writes and runs the attempts, and the tests below feed event sequences with no disk.

use super::*;
use crate::node::HookCtx;
use crate::plan::GroupStatus;

impl RunState {
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
}
