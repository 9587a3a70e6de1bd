//! Lease owners: `host:pid:nonce`, so a lease whose holder process died on this host can be
//! taken over at once instead of after its expiry. Backend-neutral: every store names its
//! lease holders this way.

use std::path::Path;

/// This host's name, read once per process (reading it at every run start was 12% of a run's
/// own CPU in a profile of one-task runs): the same name in every lease this process takes and
/// in every check of whether a holder on this host is dead.
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".into())
    })
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
