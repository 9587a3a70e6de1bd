//! What a review returns.

use smithers::prelude::*;

/// A review of one unit.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
pub(crate) struct Review {
    /// Whether the unit is right as it is.
    pub(crate) approved: bool,
    /// What must change (empty when approved).
    pub(crate) issues: Vec<String>,
}
