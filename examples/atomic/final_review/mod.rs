//! The final review: component, schema (`schema.rs`), prompt (`prompt.md`).

mod schema;

pub(crate) use schema::FinalReview;
use smithers::prelude::*;
use smithers::SharedAgent;

use crate::node_id;

#[prompt(path = "prompt.md")]
struct FinalReviewPrompt<'a> {
    phase: &'a str,
    goal: &'a str,
}

/// Decides whether the phase is done (the loop's `until`).
#[component]
pub(crate) fn FinalReviewStep(phase: &str, goal: &str, agent: SharedAgent) -> Node {
    workflow! {
        <Task id={node_id(phase, "final-review")} output=FinalReview agent={agent}>{FinalReviewPrompt { phase, goal }}</Task>
    }
}
