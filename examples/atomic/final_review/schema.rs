//! What the final review returns.

use smithers::prelude::*;

/// The strict gate: is the phase complete?
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
pub(crate) struct FinalReview {
    /// True only when every criterion of the goal is met.
    pub(crate) ready_to_move_on: bool,
    /// What is still missing (empty when ready).
    pub(crate) reasons: Vec<String>,
}
