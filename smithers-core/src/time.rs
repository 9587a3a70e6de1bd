//! Wall-clock readings for the stores that do not take a [`crate::clock::Clock`] yet (the
//! PostgreSQL store); everything else reads its clock.

use crate::clock::{Clock, SystemClock};
use crate::model::Timestamp;

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn now_ms() -> i64 {
    SystemClock.now().as_millis()
}

/// The system time as RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    SystemClock.now().to_string()
}

/// Formats epoch milliseconds as RFC 3339 UTC.
pub(crate) fn ms_to_rfc3339(ms: i64) -> String {
    Timestamp::from_millis(ms).to_string()
}
