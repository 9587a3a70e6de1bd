//! The connection side of the SQLite store: pragmas, embedded migrations, the one connection
//! (shared by the worker thread and writers that commit on their own thread), and the worker
//! thread that commits queued writes together (group commit).

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::Durability;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// The embedded migrations: (version, name, SQL).
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../../migrations/0001_init.sql")),
    (
        2,
        "cancel_requested",
        include_str!("../../../migrations/0002_cancel_requested.sql"),
    ),
    (
        3,
        "approvals",
        include_str!("../../../migrations/0003_approvals.sql"),
    ),
    (
        4,
        "cache",
        include_str!("../../../migrations/0004_cache.sql"),
    ),
    (
        5,
        "attempt_vcs",
        include_str!("../../../migrations/0005_attempt_vcs.sql"),
    ),
    (
        6,
        "steps",
        include_str!("../../../migrations/0006_steps.sql"),
    ),
    (
        7,
        "lease_epoch",
        include_str!("../../../migrations/0007_lease_epoch.sql"),
    ),
    (
        8,
        "cost_source",
        include_str!("../../../migrations/0008_cost_source.sql"),
    ),
    (
        9,
        "step_records",
        include_str!("../../../migrations/0009_step_records.sql"),
    ),
    (
        10,
        "budget_raises",
        include_str!("../../../migrations/0010_budget_raises.sql"),
    ),
    (
        11,
        "frame_structure",
        include_str!("../../../migrations/0011_frame_structure.sql"),
    ),
    (
        12,
        "workers",
        include_str!("../../../migrations/0012_workers.sql"),
    ),
    (
        13,
        "events_rowid",
        include_str!("../../../migrations/0013_events_rowid.sql"),
    ),
    (
        14,
        "nodes_attempts_without_rowid",
        include_str!("../../../migrations/0014_nodes_attempts_without_rowid.sql"),
    ),
];

pub(super) type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;
pub(super) type Completion = Box<dyn FnOnce(Result<()>) + Send>;
pub(super) type WriteJob = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

pub(super) enum Job {
    Read(ReadJob),
    Write(WriteJob),
}

/// WAL pages after which a commit checkpoints (`PRAGMA wal_autocheckpoint`).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 200;

pub(super) fn configure(conn: &Connection, durability: Durability) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.pragma())?;
    // Checkpoint every 200 WAL pages (about 20 output commits), not SQLite's 1 000: while the
    // WAL file grows, every commit also extends it (file-system metadata at each fsync), and a
    // short run on a fresh database paid that at every commit. A smaller WAL wraps around
    // sooner and costs the same in the steady state (BENCHMARKS.md).
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(256);
    register_ord(conn)?;
    Ok(())
}

/// `smithers_ord()`, the insertion order of a node or attempt row (those tables have no rowid,
/// migration 0014): microseconds since the Unix epoch by the system clock, and always more than
/// the last value this connection gave, so rows inserted one after another, in one batch or in
/// many, sort in that order. Only a run's lease holder inserts its rows, and a driver that takes
/// a run over does so seconds after the last one stopped, so its rows sort after them too.
fn register_ord(conn: &Connection) -> Result<()> {
    let last = AtomicI64::new(0);
    conn.create_scalar_function("smithers_ord", 0, FunctionFlags::SQLITE_UTF8, move |_| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let prev = last.load(Ordering::Relaxed);
        let next = now.max(prev.saturating_add(1));
        last.store(next, Ordering::Relaxed);
        Ok(next)
    })?;
    Ok(())
}

pub(super) fn checksum(sql: &str) -> String {
    hex::encode(&Sha256::digest(sql.as_bytes())[..16])
}

/// The schema version of this binary: its newest migration.
pub(super) fn supported_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Refuses a database written by a newer schema than this binary knows, before anything is
/// written to it: a migration recorded above ours, or a higher `user_version`.
fn refuse_newer(conn: &Connection, path: &Path) -> Result<()> {
    let supported = supported_version();
    let user_version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_smithers_migrations')",
        [],
        |r| r.get(0),
    )?;
    let recorded: i64 = if has_table {
        conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM _smithers_migrations",
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    let found = recorded.max(user_version);
    if found > supported {
        return Err(Error::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    refuse_newer(conn, path)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _smithers_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )?;
    for &(version, name, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: Option<String> = tx
            .query_row(
                "SELECT checksum FROM _smithers_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        let current = checksum(sql);
        match applied {
            Some(a) if a == current => {}
            Some(a) => {
                return Err(Error::MigrationChanged {
                    version,
                    name: name.into(),
                    applied: a,
                    current,
                });
            }
            None => {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO _smithers_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
                    params![version, name, current, SystemClock.now().to_string()],
                )?;
            }
        }
        tx.commit()?;
    }
    // Mirrors the newest migration, so tools that read `user_version` see the schema too.
    conn.pragma_update(None, "user_version", supported_version())?;
    Ok(())
}

/// The store's one connection and what its users share.
pub(super) struct Shared {
    /// `None` once the worker thread has closed it.
    conn: Mutex<Option<Connection>>,
    /// Jobs sent to the worker thread and not yet taken by it.
    queued: AtomicUsize,
    /// Transactions committed so far (`SqliteStore::commits`).
    pub(super) commits: AtomicU64,
}

impl Shared {
    pub(super) fn new(conn: Connection) -> Self {
        Shared {
            conn: Mutex::new(Some(conn)),
            queued: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
        }
    }

    /// Sends `job` to the worker thread.
    pub(super) fn send(&self, tx: &mpsc::Sender<Job>, job: Job) -> Result<()> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        tx.send(job).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            Error::StoreClosed("the worker thread has exited".into())
        })
    }

    /// Commits `job` on the calling thread when nothing waits for the connection and the
    /// runtime can lend this thread to a blocking call ([`tokio::task::block_in_place`], on
    /// the multi-threaded runtime): handing a write to the worker thread and back costs two
    /// thread wake-ups (about 36 µs on a 2-core VM), as much as a fifth of a commit. Gives the
    /// job back otherwise (a current-thread runtime must not block; a queued job was asked
    /// first; the worker holds the connection, or has closed it), for the worker thread to
    /// commit with whatever else is queued then.
    pub(super) fn commit_here(&self, job: WriteJob) -> std::result::Result<(), WriteJob> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_thread || self.queued.load(Ordering::SeqCst) != 0 {
            return Err(job);
        }
        let Ok(guard) = self.conn.try_lock() else {
            return Err(job);
        };
        let Some(conn) = guard.as_ref() else {
            return Err(job);
        };
        if tokio::task::block_in_place(|| run_group(conn, vec![job])) {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

pub(super) fn worker(shared: &Shared, rx: mpsc::Receiver<Job>) {
    let mut pending: Option<Job> = None;
    loop {
        let job = match pending.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => break,
            },
        };
        // A job that panicked on a writer's thread left its transaction open: the store is
        // closed from then on (as when a job panics on this thread), never used half-done.
        let Ok(mut guard) = shared.conn.lock() else {
            tracing::error!(
                "a write panicked while it held the database connection; the store is closed"
            );
            return;
        };
        // Counted as queued until the connection is this thread's: meanwhile writers on their
        // own threads leave it to this one.
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        let Some(conn) = guard.as_mut() else {
            return;
        };
        match job {
            Job::Read(f) => f(conn),
            Job::Write(first) => {
                let mut group = vec![first];
                // Group commit: take every write already queued, stop at the first read.
                while let Ok(next) = rx.try_recv() {
                    match next {
                        Job::Write(w) => {
                            shared.queued.fetch_sub(1, Ordering::SeqCst);
                            group.push(w);
                        }
                        read => {
                            pending = Some(read);
                            break;
                        }
                    }
                }
                if run_group(conn, group) {
                    shared.commits.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    // Every handle is gone. Closing the last connection checkpoints the WAL into the database
    // file and removes it.
    let conn = match shared.conn.lock() {
        Ok(mut g) => g.take(),
        Err(_) => None,
    };
    if let Some(Err((_, e))) = conn.map(Connection::close) {
        tracing::warn!(error = %e, "could not close the database cleanly");
    }
}

/// One caller's copy of a failed `COMMIT`: SQLite's code is kept (a full disk stays a full disk).
fn commit_error(e: &rusqlite::Error) -> Error {
    let copy = match e {
        rusqlite::Error::SqliteFailure(f, m) => rusqlite::Error::SqliteFailure(*f, m.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    };
    let e = super::sqlite_error(copy);
    let message = format!("commit failed: {}", e.message());
    Error::Store(e.with_message(message))
}

/// Runs the jobs in one transaction; returns whether it committed.
fn run_group(conn: &Connection, group: Vec<WriteJob>) -> bool {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        // Dropping the jobs drops their reply channels: each caller gets `StoreClosed`.
        tracing::error!(error = %e, "cannot begin a write transaction; {} write(s) dropped", group.len());
        return false;
    }
    let mut completions = Vec::with_capacity(group.len());
    let alone = group.len() == 1;
    for job in group {
        // A job alone needs no savepoint: when it fails, the transaction holds nothing else
        // and is rolled back whole (and SQLite keeps no statement journal for a savepoint).
        if !alone {
            if let Err(e) = exec(conn, "SAVEPOINT batch") {
                tracing::error!(error = %e, "cannot open a savepoint");
            }
        }
        let (ok, completion) = job(conn);
        if alone && !ok {
            if let Err(e) = exec(conn, "ROLLBACK") {
                tracing::error!(error = %e, "cannot roll back a failed write");
            }
            completion(Ok(()));
            return false;
        }
        if !alone {
            // A failed batch is undone alone; the others in the group still commit.
            let end: &[&str] = if ok {
                &["RELEASE batch"]
            } else {
                &["ROLLBACK TO batch", "RELEASE batch"]
            };
            for sql in end {
                if let Err(e) = exec(conn, sql) {
                    tracing::error!(error = %e, "cannot close a savepoint");
                }
            }
        }
        completions.push(completion);
    }
    let commit_err = exec(conn, "COMMIT").err();
    if commit_err.is_some() {
        let _ = exec(conn, "ROLLBACK");
    }
    let committed = commit_err.is_none();
    for c in completions {
        c(match &commit_err {
            None => Ok(()),
            Some(e) => Err(commit_error(e)),
        });
    }
    committed
}

/// Runs one statement of transaction control, prepared once per connection.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A database made by an older smithers: the migrations before `migration` applied and
/// recorded, as that version left it (for tests of what a migration does to existing rows).
#[cfg(test)]
pub(super) fn database_before(path: &Path, migration: &str) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "CREATE TABLE _smithers_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
           checksum TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .unwrap();
    let before = MIGRATIONS
        .iter()
        .position(|m| m.1 == migration)
        .unwrap_or_else(|| panic!("no migration named `{migration}`"));
    for &(version, name, sql) in &MIGRATIONS[..before] {
        c.execute_batch(sql).unwrap();
        c.execute(
            "INSERT INTO _smithers_migrations VALUES (?1, ?2, ?3, 'then')",
            rusqlite::params![version, name, checksum(sql)],
        )
        .unwrap();
    }
    c
}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection};

    use super::{database_before, migrate};

    /// A database made before events lost AUTOINCREMENT keeps every event with its seq, and the
    /// events recorded after the migration continue after the largest seq.
    #[test]
    fn events_keep_their_seqs_through_the_events_rowid_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut c = database_before(&path, "events_rowid");
        for (run, kind) in [
            ("a", "run_started"),
            ("b", "run_started"),
            ("a", "node_finished"),
        ] {
            c.execute(
                "INSERT INTO _smithers_events (run_id, at, kind, payload) VALUES (?1, 't0', ?2, '{}')",
                params![run, kind],
            )
            .unwrap();
        }
        // AUTOINCREMENT never reuses a seq, even of a deleted last event: the next is 4, not 3.
        c.execute("DELETE FROM _smithers_events WHERE seq = 3", [])
            .unwrap();
        c.execute(
            "INSERT INTO _smithers_events (run_id, at, kind, payload) VALUES ('b', 't1', 'run_finished', '{}')",
            [],
        )
        .unwrap();

        migrate(&mut c, &path).unwrap();

        let events = |c: &Connection| -> Vec<(i64, String, String)> {
            c.prepare("SELECT seq, run_id, kind FROM _smithers_events ORDER BY seq")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let row = |seq: i64, run: &str, kind: &str| (seq, run.to_owned(), kind.to_owned());
        assert_eq!(
            events(&c),
            [
                row(1, "a", "run_started"),
                row(2, "b", "run_started"),
                row(4, "b", "run_finished")
            ]
        );
        c.execute(
            "INSERT INTO _smithers_events (run_id, at, kind, payload) VALUES ('a', 't2', 'run_finished', '{}')",
            [],
        )
        .unwrap();
        assert_eq!(events(&c).last(), Some(&row(5, "a", "run_finished")));
        // No AUTOINCREMENT bookkeeping left, and the per-run index is back.
        let sequence_rows: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_sequence'
                   AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = '_smithers_events')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sequence_rows, 0);
        let plan: String = c
            .query_row(
                "EXPLAIN QUERY PLAN SELECT seq FROM _smithers_events WHERE run_id = 'a' AND seq > 1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("_smithers_events_run"), "{plan}");
    }
}
