//! Events: every run and node transition, persisted in `_smithers_events` in the same transaction
//! as the change it describes, then delivered to the `on_event` callback and to `tracing`.

use serde::{Deserialize, Serialize};

use crate::model::{GroupKind, GroupStatus, Timestamp, Usage};

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new run started.
    RunStarted {
        /// Workflow name.
        workflow: String,
    },
    /// A run was resumed; `abandoned` attempts of a dead process were discarded.
    RunResumed {
        /// Attempts left in progress by a dead process.
        abandoned: u32,
    },
    /// The run finished.
    RunFinished,
    /// The run failed.
    RunFailed {
        /// Why.
        error: String,
    },
    /// The run was cancelled.
    RunCancelled,
    /// The run stopped to wait for human decisions; `resume` continues it.
    RunWaiting {
        /// What it waits for.
        reason: String,
    },
    /// The run waits for a `worker` to drive it, with no lease (`run --detach`, or a worker
    /// that stopped handed it back).
    RunQueued {
        /// Why it is queued.
        reason: String,
    },
    /// The rendered tree changed shape (a new frame was recorded).
    FrameRendered {
        /// Frame number.
        frame: u32,
    },
    /// An attempt of a node started.
    NodeStarted {
        /// Attempt number.
        attempt: u32,
    },
    /// A node finished with an output.
    NodeFinished {
        /// Attempt number.
        attempt: u32,
        /// Usage of the attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// An attempt failed and the node will be tried again.
    NodeRetrying {
        /// The failed attempt.
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// A node failed for good.
    NodeFailed {
        /// Attempts made.
        attempt: u32,
        /// Why.
        error: String,
    },
    /// A node was skipped (`skip_if`).
    NodeSkipped,
    /// A line of agent or task progress.
    NodeOutput {
        /// `stdout`, `stderr`, `text`, `progress`...
        stream: String,
        /// The line.
        line: String,
    },
    /// A `needs_approval` task waits for a human decision.
    ApprovalRequested,
    /// A human decided on a `needs_approval` task.
    ApprovalDecided {
        /// Approved or denied.
        approved: bool,
        /// The decider's note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// A phase or step started, completed, failed or was skipped.
    StepChanged {
        /// Phase or step.
        kind: GroupKind,
        /// Its name.
        name: String,
        /// Its iteration.
        iteration: u32,
        /// The new status.
        status: GroupStatus,
    },
    /// `smithers step rollback` / `rewind` cut the run's history: later steps are inactive,
    /// nodes that moved after the cut are pending again.
    RunRewound {
        /// To where, in words (`rolled back to before step 3`).
        to: String,
        /// The event sequence number of the cut.
        seq: i64,
        /// Steps made inactive.
        steps: Vec<i64>,
        /// How many nodes are pending again.
        nodes: u32,
    },
    /// The run was forked from another run's history.
    RunForked {
        /// The run it was copied from.
        parent_run_id: String,
        /// The parent's frame it was copied up to.
        frame: u32,
    },
    /// A Ralph loop moved to a new iteration.
    LoopIterated {
        /// Loop id.
        loop_id: String,
        /// The new iteration.
        iteration: u32,
    },
    /// A Ralph loop's pass completed.
    LoopFinished {
        /// Loop id.
        loop_id: String,
        /// The last iteration.
        iteration: u32,
        /// The limit was reached before `until` became true.
        max_reached: bool,
    },
}

impl EventKind {
    /// The event's name as stored in the `kind` column.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::RunResumed { .. } => "run_resumed",
            EventKind::RunFinished => "run_finished",
            EventKind::RunFailed { .. } => "run_failed",
            EventKind::RunCancelled => "run_cancelled",
            EventKind::RunWaiting { .. } => "run_waiting",
            EventKind::RunQueued { .. } => "run_queued",
            EventKind::FrameRendered { .. } => "frame_rendered",
            EventKind::NodeStarted { .. } => "node_started",
            EventKind::NodeFinished { .. } => "node_finished",
            EventKind::NodeRetrying { .. } => "node_retrying",
            EventKind::NodeFailed { .. } => "node_failed",
            EventKind::NodeSkipped => "node_skipped",
            EventKind::NodeOutput { .. } => "node_output",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalDecided { .. } => "approval_decided",
            EventKind::StepChanged { .. } => "step_changed",
            EventKind::LoopIterated { .. } => "loop_iterated",
            EventKind::RunRewound { .. } => "run_rewound",
            EventKind::RunForked { .. } => "run_forked",
            EventKind::LoopFinished { .. } => "loop_finished",
        }
    }
}

/// One event of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The run.
    pub run_id: String,
    /// The node, for node events.
    pub node_id: Option<String>,
    /// The node's iteration, for node events.
    pub iteration: Option<u32>,
    /// When it happened (RFC 3339 in JSON and in the database).
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// A run-level event that happened `at`.
    pub fn run(run_id: &str, at: Timestamp, kind: EventKind) -> Self {
        Event {
            run_id: run_id.to_owned(),
            node_id: None,
            iteration: None,
            at,
            kind,
        }
    }

    /// A node-level event that happened `at`.
    pub fn node(
        run_id: &str,
        node_id: &str,
        iteration: u32,
        at: Timestamp,
        kind: EventKind,
    ) -> Self {
        Event {
            run_id: run_id.to_owned(),
            node_id: Some(node_id.to_owned()),
            iteration: Some(iteration),
            at,
            kind,
        }
    }

    /// Emits the event to `tracing`.
    pub(crate) fn trace(&self) {
        match &self.kind {
            EventKind::NodeOutput { stream, line } => {
                tracing::debug!(run_id = %self.run_id, node_id = ?self.node_id, stream = %stream, "{line}")
            }
            EventKind::RunFailed { error }
            | EventKind::NodeFailed { error, .. }
            | EventKind::NodeRetrying { error, .. } => {
                tracing::warn!(run_id = %self.run_id, node_id = ?self.node_id, iteration = ?self.iteration, event = self.kind.name(), "{error}")
            }
            _ => {
                tracing::info!(run_id = %self.run_id, node_id = ?self.node_id, iteration = ?self.iteration, event = self.kind.name())
            }
        }
    }
}
