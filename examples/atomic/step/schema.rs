//! What a test, fix or refactor step returns.

use smithers::prelude::*;

/// The report of a step that changes code.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
pub(crate) struct StepReport {
    /// What was done.
    pub(crate) summary: String,
    /// Whether the tests pass afterwards.
    pub(crate) ok: bool,
}
