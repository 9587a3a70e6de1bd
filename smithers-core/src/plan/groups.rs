//! Phases and steps as the planner reports them: what kind, where they stand, what is inside.

use crate::model::{GroupKind, GroupStatus};

/// A `<Phase>` or `<Step>` the render mounted.
#[derive(Clone)]
pub(crate) struct GroupState {
    /// Phase or step.
    pub(crate) kind: GroupKind,
    /// Its name.
    pub(crate) name: String,
    /// The enclosing phase of a step.
    pub(crate) phase: Option<String>,
    /// The iteration of its innermost loop.
    pub(crate) iteration: u32,
    /// Where it stands.
    pub(crate) status: GroupStatus,
    /// The ids of the tasks inside it.
    pub(crate) tasks: Vec<String>,
    /// The agent tasks inside it, for the step's agent config.
    pub(crate) agents: Vec<(String, crate::agent::SharedAgent)>,
    /// Its `on_start` / `on_complete` hooks.
    pub(crate) hooks: crate::node::GroupHooks,
}

impl std::fmt::Debug for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupState")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("phase", &self.phase)
            .field("iteration", &self.iteration)
            .field("status", &self.status)
            .field("tasks", &self.tasks)
            .field(
                "agents",
                &self.agents.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl GroupState {
    /// Whether it stopped for good: completed, failed or skipped.
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(
            self.status,
            GroupStatus::Completed | GroupStatus::Failed | GroupStatus::Skipped
        )
    }
}
