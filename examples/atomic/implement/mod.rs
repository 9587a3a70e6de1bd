//! The implement step: component, schema (`schema.rs`), prompt (`prompt.md`).

mod schema;

pub(crate) use schema::Implement;
use smithers::prelude::*;
use smithers::SharedAgent;

use crate::node_id;

/// The prompt, rendered from `prompt.md`.
#[prompt(path = "prompt.md")]
struct ImplementPrompt<'a> {
    phase: &'a str,
    goal: &'a str,
    unit: &'a str,
    /// 1 for the first unit.
    number: u32,
}

/// Implements one unit and names the next one.
#[component]
pub(crate) fn ImplementStep(
    phase: &str,
    goal: &str,
    unit: &str,
    iteration: u32,
    agent: SharedAgent,
) -> Node {
    let prompt = ImplementPrompt {
        phase,
        goal,
        unit,
        number: iteration + 1,
    };
    workflow! {
        <Task id={node_id(phase, "implement")} output=Implement agent={agent}>{prompt}</Task>
    }
}
