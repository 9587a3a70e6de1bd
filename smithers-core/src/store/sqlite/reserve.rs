//! A reserve of disk space beside the database (`<db>-reserve`, 256 KiB of zeros): when a commit
//! fails because the disk is full, the store deletes it, so that the engine can still record
//! why the run stopped instead of leaving it `running` with nobody driving it. The next open
//! puts the reserve back when there is room.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Size of the reserve: room for the few pages that record a run's failure, with margin.
const RESERVE_BYTES: u64 = 256 * 1024;

/// Where the reserve of `db` lives.
pub(super) fn reserve_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push("-reserve");
    db.with_file_name(name)
}

/// Creates the reserve unless it exists; a disk too full to hold it leaves none (the store
/// works without it).
pub(super) fn ensure(db: &Path) {
    let path = reserve_path(db);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == RESERVE_BYTES) {
        return;
    }
    let written = std::fs::File::create(&path).and_then(|mut f| {
        // Real zeros, not a sparse file: the blocks must be allocated to be worth freeing.
        let zeros = vec![0u8; RESERVE_BYTES as usize];
        f.write_all(&zeros)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        tracing::warn!(error = %e, reserve = %path.display(), "no room for the disk-space reserve of the database");
    }
}

/// Frees the reserve (the disk is full); says whether there was one.
pub(super) fn release(db: &Path) -> bool {
    let path = reserve_path(db);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(
                database = %db.display(),
                "the disk is full: released the {} KiB reserve `{}` so the run's failure can be recorded; free some space, then resume",
                RESERVE_BYTES / 1024,
                path.display()
            );
            true
        }
        Err(_) => false,
    }
}
