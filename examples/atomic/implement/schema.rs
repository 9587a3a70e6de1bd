//! What an implement step returns.

use smithers::prelude::*;

/// One atomic unit implemented and committed.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
pub(crate) struct Implement {
    /// Files created or changed.
    pub(crate) files_changed: Vec<String>,
    /// The commit made for this unit.
    pub(crate) commit_message: String,
    /// What atomic unit was implemented.
    pub(crate) what_was_done: String,
    /// The next smallest atomic unit to implement, or null when the phase needs nothing more.
    pub(crate) next_smallest_unit: Option<String>,
}
