//! What a render decides without running anything: state writes, skips, loop moves, denied
//! approvals, approval requests, phase and step transitions (with their hooks), new frames.

use std::sync::Arc;

use crate::agent::agent_config;
use crate::events::{Event, EventKind};
use crate::model::{ApprovalStatus, GroupKind, GroupStatus, NodeState, NodeStatus};
use crate::node::{shape_hash, Node};
use crate::plan::{GroupState, LoopChange, Plan};
use crate::store::{GroupUpdate, NodeRecord, Write, WriteBatch};

use super::{HookCall, RunState, StepSnapshot};

impl RunState {
    /// What a render decided without running anything: state writes, skips, loop
    /// moves, denied approvals, new approval requests and a new frame (`fresh`: the tree was
    /// rendered, not kept). Returns whether the tree may now differ (then it is planned again,
    /// and rendered again when what changed was read, before anything starts).
    pub(super) fn on_render(
        &mut self,
        tree: &Node,
        fresh: bool,
        plan: &Plan,
        state_writes: Vec<(String, String)>,
    ) -> (WriteBatch, bool, Vec<HookCall>) {
        let mut b = WriteBatch::new(&self.run_id);
        let mut calls = Vec::new();
        for (k, v) in state_writes {
            self.set_state(&mut b, k, v);
        }
        if fresh {
            // A kept tree has the shape of the last frame.
            self.record_frame(tree, &mut b);
        }
        if !plan.loop_changes.is_empty() {
            // A loop counter moved: the iteration every output in the loop is keyed by.
            self.stale = true;
        }
        let decided =
            !plan.skipped.is_empty() || !plan.loop_changes.is_empty() || !plan.denied.is_empty();
        for (task, it, lp) in &plan.skipped {
            b.push(Write::Node(NodeRecord {
                node_id: task.id.to_string(),
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
                self.now,
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
            b.push(Write::Event(Event::run(&self.run_id, self.now, event)));
            Arc::make_mut(&mut self.snap)
                .loops
                .insert(loop_id.clone(), state.clone());
        }
        for r in &plan.denied {
            let t = &r.task;
            let key = (t.id.to_string(), r.iteration);
            let note = self.approval_notes.get(&key).cloned().flatten();
            let error = match note {
                Some(n) => format!("approval denied: {n}"),
                None => "approval denied".to_owned(),
            };
            self.fail_without_attempt(&mut b, r, error, 0);
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
                calls.extend(hooks.into_iter().map(|hook| HookCall {
                    hook,
                    name: g.name.clone(),
                }));
                b.push(Write::Group(group_update(g)));
                // Every step inside a repository records the working copy before and after it.
                if g.kind == GroupKind::Step {
                    let started = g.status != GroupStatus::Pending
                        && g.status != GroupStatus::Skipped
                        && matches!(before, None | Some(GroupStatus::Pending));
                    if started {
                        self.snapshots.push(StepSnapshot {
                            name: g.name.clone(),
                            iteration: g.iteration,
                            after: false,
                        });
                    }
                    if g.is_terminal() && g.status != GroupStatus::Skipped {
                        self.snapshots.push(StepSnapshot {
                            name: g.name.clone(),
                            iteration: g.iteration,
                            after: true,
                        });
                    }
                }
                b.push(Write::Event(Event::run(
                    &self.run_id,
                    self.now,
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
            let key = (r.task.id.to_string(), r.iteration);
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
                self.now,
                EventKind::ApprovalRequested,
            )));
            self.approvals.insert(key, ApprovalStatus::Pending);
        }
        (b, decided, calls)
    }

    /// A `state` write, visible to the next render (which happens when the last one read `k`).
    pub(super) fn set_state(&mut self, b: &mut WriteBatch, k: String, v: String) {
        if self.reads.state.contains(&k) {
            self.stale = true;
        }
        Arc::make_mut(&mut self.snap)
            .state
            .insert(k.clone(), v.clone());
        b.push(Write::State { key: k, value: v });
    }

    /// Records a frame when the tree's shape changed since the last one.
    fn record_frame(&mut self, tree: &Node, b: &mut WriteBatch) {
        let hash = shape_hash(tree);
        if hash == self.frame_hash {
            return;
        }
        self.frame_hash = hash;
        self.frame_no += 1;
        b.push(Write::Frame {
            frame_no: self.frame_no,
            hash: format!("{hash:016x}"),
            tree: tree.frame(),
        });
        b.push(Write::Event(Event::run(
            &self.run_id,
            self.now,
            EventKind::FrameRendered {
                frame: self.frame_no,
            },
        )));
    }
}

/// The plain record a phase's or step's transition writes: kind, name, status, tasks and agent
/// config.
fn group_update(g: &GroupState) -> GroupUpdate {
    let agents: Vec<serde_json::Value> = g
        .agents
        .iter()
        .map(|(node, a)| agent_config(node, a.as_ref()))
        .collect();
    GroupUpdate {
        kind: g.kind,
        name: g.name.clone(),
        phase: g.phase.clone(),
        iteration: g.iteration,
        status: g.status,
        tasks: g.tasks.clone(),
        agent_config: (!agents.is_empty()).then_some(serde_json::Value::Array(agents)),
    }
}
