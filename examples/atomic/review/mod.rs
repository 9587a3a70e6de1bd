//! The review step: component, schema (`schema.rs`), prompt (`prompt.md`).

mod schema;

pub(crate) use schema::Review;
use smithers::prelude::*;
use smithers::SharedAgent;

use crate::node_id;

#[prompt(path = "prompt.md")]
struct ReviewPrompt<'a> {
    phase: &'a str,
    unit: &'a str,
}

/// Reviews the unit just implemented.
#[component]
pub(crate) fn ReviewStep(phase: &str, unit: &str, agent: SharedAgent) -> Node {
    workflow! {
        <Task id={node_id(phase, "review")} output=Review agent={agent}>{ReviewPrompt { phase, unit }}</Task>
    }
}
