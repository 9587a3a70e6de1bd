//! What a compute task's body receives.

use tokio_util::sync::CancellationToken;

use crate::agent::ProgressSink;

/// The context of one attempt of a compute task.
#[derive(Clone, Debug)]
pub struct TaskCtx {
    pub(crate) run_id: String,
    pub(crate) node_id: String,
    pub(crate) iteration: u32,
    pub(crate) attempt: u32,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: ProgressSink,
    pub(crate) steps: Option<crate::steps::Steps>,
}

impl TaskCtx {
    /// A context for calling a task body outside the engine (tests, tools).
    pub fn detached(
        run_id: impl Into<String>,
        node_id: impl Into<String>,
        iteration: u32,
        attempt: u32,
    ) -> Self {
        TaskCtx {
            run_id: run_id.into(),
            node_id: node_id.into(),
            iteration,
            attempt,
            cancel: CancellationToken::new(),
            progress: ProgressSink::discard(),
            steps: None,
        }
    }
    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
    /// The task's node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
    /// The loop iteration this attempt belongs to.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }
    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Cancelled when the run is cancelled or the attempt times out: long bodies should watch it.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }
    /// The Steps API of this run (seed 000): start, complete and query steps from a task body.
    /// `None` for a [`TaskCtx::detached`] context.
    pub fn steps(&self) -> Option<&crate::steps::Steps> {
        self.steps.as_ref()
    }
    /// Reports a progress line (a `NodeOutput` event).
    pub fn progress(&self, line: &str) {
        self.progress.line("progress", line)
    }
}
