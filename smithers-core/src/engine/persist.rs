//! The write batches of the engine: success, failure, cancellation and the end of a run.

use super::*;
use crate::node::HookCtx;
use crate::plan::GroupStatus;

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Persists what a render decided without running anything: state writes, skips, loop
    /// moves, denied approvals, new approval requests and a new frame. Returns whether the tree
    /// may now differ (then it is rendered again before anything starts).
    pub(super) async fn persist_render(
        &self,
        st: &mut RunState,
        tree: &Node,
        plan: &plan::Plan,
        state_writes: Vec<(String, String)>,
    ) -> Result<bool> {
        let mut b = WriteBatch::new(&st.run_id);
        for (k, v) in state_writes {
            Arc::make_mut(&mut st.snap)
                .state
                .insert(k.clone(), v.clone());
            b.push(Write::State { key: k, value: v });
        }
        self.record_frame(st, tree, &mut b);
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
                &st.run_id,
                &task.id,
                *it,
                EventKind::NodeSkipped,
            )));
            st.set_node(
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
            b.push(Write::Event(Event::run(&st.run_id, event)));
            Arc::make_mut(&mut st.snap)
                .loops
                .insert(loop_id.clone(), state.clone());
        }
        for r in &plan.denied {
            let t = &r.task;
            let key = (t.id.clone(), r.iteration);
            let note = st.approval_notes.get(&key).cloned().flatten();
            let error = match note {
                Some(n) => format!("approval denied: {n}"),
                None => "approval denied".to_owned(),
            };
            let attempts = st.attempts(&t.id, r.iteration);
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
                &st.run_id,
                &t.id,
                r.iteration,
                EventKind::NodeFailed {
                    attempt: attempts,
                    error: error.clone(),
                },
            )));
            st.set_node(
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
            let before = st.groups.get(&key).copied();
            if before != Some(g.status) {
                st.groups.insert(key, g.status);
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
                        run_id: &st.run_id,
                        name: &g.name,
                        state: Vec::new(),
                    };
                    hook(&mut cx);
                    for (k, v) in cx.state {
                        Arc::make_mut(&mut st.snap)
                            .state
                            .insert(k.clone(), v.clone());
                        b.push(Write::State { key: k, value: v });
                    }
                }
                b.push(Write::Group(g.clone()));
                b.push(Write::Event(Event::run(
                    &st.run_id,
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
            if st.approvals.contains_key(&key) {
                continue;
            }
            b.push(Write::ApprovalRequest {
                node_id: key.0.clone(),
                iteration: key.1,
            });
            b.push(Write::Event(Event::node(
                &st.run_id,
                &key.0,
                key.1,
                EventKind::ApprovalRequested,
            )));
            st.approvals.insert(key, ApprovalStatus::Pending);
        }
        if !b.is_empty() {
            self.commit(b).await?;
        }
        Ok(decided)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_success(
        &self,
        st: &mut RunState,
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
            &st.run_id,
            &t.id,
            it,
            EventKind::NodeFinished { attempt, usage },
        )));
        st.finished += 1;
        self.supervisor(
            b,
            "running",
            &format!("{} node(s) finished; last: `{}`", st.finished, t.id),
        );
        st.set_node(
            &t.id,
            it,
            NodeState {
                status: NodeStatus::Finished,
                attempts: attempt,
                failures: st.node(&t.id, it).map_or(0, |n| n.failures),
                last_error: None,
            },
        );
        Arc::make_mut(&mut st.snap)
            .outputs
            .entry(t.id.clone())
            .or_default()
            .insert(it, value);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_failure(
        &self,
        st: &mut RunState,
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
        let failures = st.node(&t.id, it).map_or(0, |n| n.failures) + 1;
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
        b.push(Write::Event(Event::node(&st.run_id, &t.id, it, kind)));
        if !retry {
            b.push(Write::State {
                key: "supervisor.last_error".into(),
                value: format!("node `{}`: {}", t.id, e.message),
            });
        }
        st.set_node(
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

    pub(super) async fn cancel_all(&self, st: &mut RunState, join: &mut JoinSet<AttemptResult>) {
        for r in st.running.values() {
            r.cancel.cancel();
        }
        // Give attempts a moment to stop their processes, then abort what is left.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while join.join_next().await.is_some() {}
        })
        .await;
        join.abort_all();
        let mut b = WriteBatch::new(&st.run_id);
        let running: Vec<_> = st.running.drain().collect();
        for (key, r) in running {
            self.push_cancelled(st, &mut b, &key, r.loop_id, "the run was cancelled");
        }
        if let Err(e) = self.commit(b).await {
            tracing::error!(error = %e, "could not record cancelled attempts");
        }
    }

    /// Records a stopped attempt: the attempt `cancelled` with `reason`, its node pending again
    /// (a later render that mounts it starts a new attempt).
    pub(super) fn push_cancelled(
        &self,
        st: &mut RunState,
        b: &mut WriteBatch,
        (id, it): &NodeKey,
        loop_id: Option<String>,
        reason: &str,
    ) {
        let (attempts, failures) = st
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
        st.set_node(
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

    pub(super) async fn finish(
        &self,
        st: &mut RunState,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<RunReport> {
        let mut b = WriteBatch::new(&st.run_id);
        if status == RunStatus::WaitingApproval {
            // A run parked for approval is not in error: `error` carries what it waits for.
            let reason = error.clone().unwrap_or_default();
            b.push(Write::RunStatus {
                status,
                error: None,
            });
            b.push(Write::Event(Event::run(
                &st.run_id,
                EventKind::RunWaiting {
                    reason: reason.clone(),
                },
            )));
            self.supervisor(
                &mut b,
                "idle",
                &format!("Run {reason}; `resume` continues after a decision"),
            );
            self.commit(b).await?;
            return Ok(RunReport {
                run_id: st.run_id.clone(),
                status,
                error,
                finished_nodes: st.finished,
            });
        }
        b.push(Write::RunStatus {
            status,
            error: error.clone(),
        });
        let (kind, sup, summary) = match status {
            RunStatus::Finished => (
                EventKind::RunFinished,
                "done",
                format!("Run finished: {} node(s)", st.finished),
            ),
            RunStatus::Cancelled => (
                EventKind::RunCancelled,
                "idle",
                "Run cancelled; resume continues it".to_owned(),
            ),
            _ => (
                EventKind::RunFailed {
                    error: error.clone().unwrap_or_default(),
                },
                "error",
                format!("Run failed: {}", error.as_deref().unwrap_or("")),
            ),
        };
        b.push(Write::Event(Event::run(&st.run_id, kind)));
        self.supervisor(&mut b, sup, &summary);
        if let Some(e) = &error {
            b.push(Write::State {
                key: "supervisor.last_error".into(),
                value: e.clone(),
            });
        }
        self.commit(b).await?;
        Ok(RunReport {
            run_id: st.run_id.clone(),
            status,
            error,
            finished_nodes: st.finished,
        })
    }

    pub(super) fn supervisor(&self, b: &mut WriteBatch, status: &str, summary: &str) {
        b.push(Write::State {
            key: "supervisor.status".into(),
            value: status.into(),
        });
        b.push(Write::State {
            key: "supervisor.summary".into(),
            value: summary.into(),
        });
    }

    pub(super) async fn commit(&self, b: WriteBatch) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        self.store.write(b.clone()).await?;
        self.deliver(&b);
        Ok(())
    }

    pub(super) fn deliver(&self, b: &WriteBatch) {
        for e in b.events() {
            e.trace();
            if let Some(l) = &self.options.on_event {
                l(e);
            }
        }
    }
}
