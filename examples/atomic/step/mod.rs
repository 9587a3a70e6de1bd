//! The test, fix and refactor steps: one component, one schema (`schema.rs`), one prompt
//! (`prompt.md`) with a section per kind.

mod schema;

pub(crate) use schema::StepReport;
use smithers::prelude::*;
use smithers::SharedAgent;

use crate::node_id;

/// Which step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepKind {
    /// Write and run tests.
    Test,
    /// Fix what the review found.
    Fix,
    /// Simplify.
    Refactor,
}

impl StepKind {
    /// The step's name: its node id suffix and its `skip_phases` name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StepKind::Test => "test",
            StepKind::Fix => "fix",
            StepKind::Refactor => "refactor",
        }
    }

    fn emoji(self) -> &'static str {
        match self {
            StepKind::Test => "🧪",
            StepKind::Fix => "🐛",
            StepKind::Refactor => "♻️",
        }
    }
}

#[prompt(path = "prompt.md")]
struct StepPrompt<'a> {
    kind: StepKind,
    phase: &'a str,
    unit: &'a str,
    issues: &'a [String],
}

/// A step that changes code: test, fix or refactor; `skip` records it as skipped.
#[component]
pub(crate) fn WorkStep(
    phase: &str,
    kind: StepKind,
    unit: &str,
    issues: &[String],
    skip: bool,
    agent: SharedAgent,
) -> Node {
    let prompt = StepPrompt {
        kind,
        phase,
        unit,
        issues,
    };
    workflow! {
        <Task id={node_id(phase, kind.name())} output=StepReport agent={agent} skip_if={skip}>{prompt}</Task>
    }
}
