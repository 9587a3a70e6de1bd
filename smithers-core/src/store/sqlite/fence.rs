//! The fencing check of the SQLite store, the one place it is made.

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;
use crate::store::FenceToken;

/// Inside the caller's write transaction, the run's current lease owner and epoch must be
/// `fence`'s.
pub(super) fn check_fence(c: &Connection, run_id: &str, fence: &FenceToken) -> Result<()> {
    let current = current_lease(c, run_id)?;
    fence.check(run_id, current.as_ref().map(|(o, e)| (o.as_deref(), *e)))
}

/// The run's lease owner and epoch, `None` when there is no such run.
pub(super) fn current_lease(c: &Connection, run_id: &str) -> Result<Option<(Option<String>, i64)>> {
    Ok(
        c.prepare_cached("SELECT lease_owner, lease_epoch FROM _smithers_runs WHERE run_id = ?1")?
            .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    )
}
