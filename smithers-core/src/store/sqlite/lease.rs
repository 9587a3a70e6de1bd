//! Lease owners: `host:pid:nonce`, so a lease whose holder process died on this host can be
//! taken over at once instead of after its expiry.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;
use crate::store::FenceToken;

/// The fencing check of the SQLite store, the one place it is made: inside the caller's write
/// transaction, the run's current lease owner and epoch must be `fence`'s.
pub(super) fn check_fence(c: &Connection, run_id: &str, fence: &FenceToken) -> Result<()> {
    let current: Option<(Option<String>, i64)> = c
        .prepare_cached("SELECT lease_owner, lease_epoch FROM _smithers_runs WHERE run_id = ?1")?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    fence.check(run_id, current.as_ref().map(|(o, e)| (o.as_deref(), *e)))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

/// A lease owner for this process: `host:pid:nonce`.
pub fn lease_owner() -> String {
    format!(
        "{}:{}:{}",
        hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Whether the holder of a lease is a process on this host that no longer exists: then its lease
/// is stale whatever its expiry (a `kill -9` must not block resume for a lease period).
pub(crate) fn holder_is_dead(owner: &str) -> bool {
    let mut parts = owner.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() || !Path::new("/proc/self").exists() {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) if pid == std::process::id() => false,
        Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}
