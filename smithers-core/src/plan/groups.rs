//! Phases and steps as the planner reports them: what kind, where they stand, what is inside.

/// Which kind of named group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// `<Phase>`.
    Phase,
    /// `<Step>`.
    Step,
}

impl GroupKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Phase => "phase",
            GroupKind::Step => "step",
        }
    }

    /// Parses [`GroupKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "phase" => Some(GroupKind::Phase),
            "step" => Some(GroupKind::Step),
            _ => None,
        }
    }
}

/// Where a phase or step stands, as of this render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStatus {
    /// Mounted with work left.
    Running,
    /// Every task in it is terminal.
    Completed,
    /// A task in it failed.
    Failed,
    /// `skip_if` was true.
    Skipped,
}

impl GroupStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Running => "running",
            GroupStatus::Completed => "completed",
            GroupStatus::Failed => "failed",
            GroupStatus::Skipped => "skipped",
        }
    }

    /// Parses [`GroupStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => GroupStatus::Running,
            "completed" => GroupStatus::Completed,
            "failed" => GroupStatus::Failed,
            "skipped" => GroupStatus::Skipped,
            _ => return None,
        })
    }
}

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
