//! Phases and steps as the planner reports them: what kind, where they stand, what is inside.

use crate::model::{GroupKind, GroupStatus};

/// A `<Phase>` or `<Step>` the render mounted.
#[derive(Clone, Debug)]
pub struct GroupState {
    /// Phase or step.
    pub kind: GroupKind,
    /// Its name.
    pub name: String,
    /// The enclosing phase of a step.
    pub phase: Option<String>,
    /// The iteration of its innermost loop.
    pub iteration: u32,
    /// Where it stands.
    pub status: GroupStatus,
    /// The ids of the tasks inside it.
    pub tasks: Vec<String>,
    /// Its `on_start` / `on_complete` hooks.
    pub hooks: crate::node::GroupHooks,
}
