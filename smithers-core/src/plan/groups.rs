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
    /// Mounted but not reached yet (a later step of the active phase).
    Pending,
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
            GroupStatus::Pending => "pending",
            GroupStatus::Running => "running",
            GroupStatus::Completed => "completed",
            GroupStatus::Failed => "failed",
            GroupStatus::Skipped => "skipped",
        }
    }

    /// Parses [`GroupStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => GroupStatus::Pending,
            "running" => GroupStatus::Running,
            "completed" => GroupStatus::Completed,
            "failed" => GroupStatus::Failed,
            "skipped" => GroupStatus::Skipped,
            _ => return None,
        })
    }
}

/// A `<Phase>` or `<Step>` the render mounted.
#[derive(Clone)]
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
    /// The agent tasks inside it, for the step's agent config.
    pub agents: Vec<(String, crate::agent::SharedAgent)>,
    /// Its `on_start` / `on_complete` hooks.
    pub hooks: crate::node::GroupHooks,
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
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status,
            GroupStatus::Completed | GroupStatus::Failed | GroupStatus::Skipped
        )
    }

    /// The plain record its transition writes: kind, name, status, tasks and agent config.
    pub fn update(&self) -> crate::store::GroupUpdate {
        let agents: Vec<serde_json::Value> = self
            .agents
            .iter()
            .map(|(node, a)| crate::agent::agent_config(node, a.as_ref()))
            .collect();
        crate::store::GroupUpdate {
            kind: self.kind,
            name: self.name.clone(),
            phase: self.phase.clone(),
            iteration: self.iteration,
            status: self.status,
            tasks: self.tasks.clone(),
            agent_config: (!agents.is_empty()).then_some(serde_json::Value::Array(agents)),
        }
    }
}
