//! The embedded SQLite store: one connection, used by a worker thread to which callers send
//! closures and await a oneshot reply. Writes queued while a transaction runs share the next
//! `BEGIN IMMEDIATE` (group commit), each inside its own savepoint so one failing batch never
//! undoes another. A write that finds nothing queued and the connection free commits on the
//! caller's own thread instead (on the multi-threaded runtime), sparing two thread wake-ups.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    pending_iteration, stored_json, stored_name, stored_time, ApprovalRecord, AttemptRecord,
    BadStoredValue, CancelOutcome, EventRecord, FenceToken, ForkRun, FrameRecord, ListedRun,
    LoadedRun, NewRun, NodeRecord, PhaseRecord, RestartRecord, RewindReport, RewindTo, RunRecord,
    StepRecord, Store, WorkerRecord, Write, WriteBatch,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result, StoreBackend, StoreError, StoreErrorKind};
use crate::events::{Event, EventKind};
use crate::frame::FrameNode;
use crate::model::{ApprovalStatus, LoopState, RunStatus, Timestamp, Usage};
use crate::output::OutputInfo;

mod connection;
mod fence;
mod output_rows;
mod reserve;
mod steps;
mod workers;
mod writes;

use connection::{configure, migrate, worker, Completion, Job, Shared, WriteJob};
use output_rows::{ensure_output_table, read_outputs};
use writes::apply;

pub(crate) use super::owner::holder_is_dead;
use fence::check_fence;
// Shared with the PostgreSQL store (identifier checks, the column registry).
#[cfg(feature = "postgres")]
pub(crate) use output_rows::{
    added_columns, check_ident, check_output_names, is_reserved, quote, StoredColumn,
};

/// How hard SQLite works to keep a commit on disk (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss. The default.
    #[default]
    Full,
    /// fsync at checkpoints: survives a process crash, may lose the last commits on power loss.
    Normal,
    /// No fsync: for tests and throwaway runs.
    Off,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
            Durability::Off => "OFF",
        }
    }
}

/// The SQLite [`Store`].
///
/// Dropping the last handle closes the database: the worker thread finishes what is queued and
/// closes the connection, which checkpoints the WAL into the database file, so the `.db` alone
/// holds every commit once the process is done with it.
pub struct SqliteStore {
    tx: mpsc::Sender<Job>,
    worker: Option<thread::JoinHandle<()>>,
    path: PathBuf,
    /// Stamps rows and decides lease expiry.
    clock: Arc<dyn Clock>,
    /// The connection, shared with the worker thread.
    shared: Arc<Shared>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Hang up: the worker drains the queue, closes the connection and exits.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(w) = self.worker.take() {
            if w.thread().id() != thread::current().id() {
                let _ = w.join();
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::OpenDb {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        let mut conn = Connection::open(&path).map_err(|e| Error::OpenDb {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // The first statements read the file: a damaged one fails here, named.
        configure(&conn, durability)
            .and_then(|()| migrate(&mut conn, &path))
            .map_err(|e| name_the_file(&path, e))?;
        reserve::ensure(&path);
        let (tx, rx) = mpsc::channel::<Job>();
        let shared = Arc::new(Shared::new(conn));
        let on_worker = shared.clone();
        let worker = thread::Builder::new()
            .name("smithers-sqlite".into())
            .spawn(move || worker(&on_worker, rx))
            .map_err(|e| Error::OpenDb {
                path: path.clone(),
                message: e.to_string(),
            })?;
        Ok(SqliteStore {
            tx,
            worker: Some(worker),
            path,
            clock: Arc::new(SystemClock),
            shared,
        })
    }

    /// Reads the time from `clock` (a [`crate::clock::TestClock`] in tests) instead of the
    /// system clock: row timestamps and lease expiry follow it.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions this store has committed since it was opened (writes queued
    /// together share one transaction). What benchmarks count to show commits per output.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Names the database in an error that means its file is damaged.
    fn named(&self, e: Error) -> Error {
        name_the_file(&self.path, e)
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.shared.send(
            &self.tx,
            Job::Read(Box::new(move |c| {
                let _ = tx.send(f(c));
            })),
        )?;
        rx.await
            .map_err(|_| Error::StoreClosed("the worker thread dropped a request".into()))?
            .map_err(|e| self.named(e))
    }

    async fn write_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |c| {
            let r = f(c);
            let ok = r.is_ok();
            let done: Completion = Box::new(move |commit: Result<()>| {
                let _ = tx.send(commit.and(r));
            });
            (ok, done)
        });
        if let Err(job) = self.shared.commit_here(job) {
            self.shared.send(&self.tx, Job::Write(job))?;
        }
        rx.await
            .map_err(|_| Error::StoreClosed("the worker thread dropped a request".into()))?
            .map_err(|e| {
                let e = self.named(e);
                if matches!(e, Error::DiskFull { .. }) {
                    // Make room for recording what happened (the next open restores it).
                    reserve::release(&self.path);
                }
                e
            })
    }
}

/// An SQLite error that means the file is not a database or is damaged becomes
/// [`Error::DatabaseDamaged`] naming `path`, and one that means the disk is full becomes
/// [`Error::DiskFull`]; any other error is returned as it is.
fn name_the_file(path: &Path, e: Error) -> Error {
    match e {
        Error::Store(e) if e.kind() == StoreErrorKind::DiskFull => Error::DiskFull {
            path: path.to_owned(),
            message: e.message().to_owned(),
        },
        Error::Store(e) if e.kind() == StoreErrorKind::Damaged => Error::DatabaseDamaged {
            path: path.to_owned(),
            message: e.message().to_owned(),
        },
        other => other,
    }
}

/// What kind of failure an SQLite error is.
fn sqlite_kind(e: &rusqlite::Error) -> StoreErrorKind {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => StoreErrorKind::Busy,
            C::DiskFull => StoreErrorKind::DiskFull,
            C::ConstraintViolation => StoreErrorKind::Constraint,
            C::DatabaseCorrupt | C::NotADatabase => StoreErrorKind::Damaged,
            C::SchemaChanged | C::TypeMismatch => StoreErrorKind::Schema,
            C::CannotOpen => StoreErrorKind::Connection,
            _ => StoreErrorKind::Other,
        },
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::InvalidColumnIndex(_) => StoreErrorKind::Schema,
        _ => StoreErrorKind::Other,
    }
}

/// An SQLite error as a backend-neutral [`StoreError`]: its kind read from SQLite's code, its
/// message SQLite's, the `rusqlite::Error` kept as the source.
pub(crate) fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::new(
        StoreBackend::Sqlite,
        sqlite_kind(&e),
        e.to_string(),
        Some(Box::new(e)),
    )
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        // A stored value that did not read in a row mapping (`time_at`, `name_at`, `json_at`)
        // is a bad record, not a database error.
        if let Some(bad) = bad_value(&e) {
            return Error::InvalidRecord(bad.to_string());
        }
        Error::Store(sqlite_error(e))
    }
}

/// The [`BadStoredValue`] a row mapping failed with, if that is why it failed.
fn bad_value(e: &rusqlite::Error) -> Option<&BadStoredValue> {
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, source) => source.downcast_ref(),
        _ => None,
    }
}

/// A [`BadStoredValue`] found in column `idx` as the error of a row mapping.
fn bad_at(idx: usize, e: BadStoredValue) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
}

/// Column `idx`, text, as `parse` (one of the `stored_*` readers) reads it; what it refuses
/// fails the row with [`BadStoredValue`] (an [`Error::InvalidRecord`] once converted).
fn parsed_at<T>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    parse: impl FnOnce(&str) -> std::result::Result<T, BadStoredValue>,
) -> rusqlite::Result<T> {
    let value = r.get_ref(idx)?.as_str()?;
    parse(value).map_err(|e| bad_at(idx, e))
}

/// Column `idx` read by `read` unless it is NULL (none).
fn unless_null<T>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    read: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    match r.get_ref(idx)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => read().map(Some),
    }
}

/// Column `idx` of a `table` row, RFC 3339 text, as a [`Timestamp`]; a value that does not
/// parse fails the row with [`BadStoredValue`] (an [`Error::InvalidRecord`] once converted).
pub(super) fn time_at(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> rusqlite::Result<Timestamp> {
    parsed_at(r, idx, |value| stored_time(table, column, value))
}

/// Column `idx` of a `table` row, one of the stored names of `T` (a status, a cost source);
/// any other text fails the row as [`time_at`] does.
pub(super) fn name_at<T: crate::model::StoredName>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> rusqlite::Result<T> {
    parsed_at(r, idx, |value| stored_name(table, column, value))
}

/// [`name_at`] of a nullable column (NULL: none).
pub(super) fn name_at_opt<T: crate::model::StoredName>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> rusqlite::Result<Option<T>> {
    unless_null(r, idx, || name_at(r, idx, table, column))
}

/// Column `idx` of a `table` row, JSON text, as a `T`; text that does not parse (or JSON of
/// another shape) fails the row as [`time_at`] does.
pub(super) fn json_at<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> rusqlite::Result<T> {
    parsed_at(r, idx, |value| stored_json(table, column, value))
}

/// [`json_at`] of a nullable column (NULL: none).
pub(super) fn json_at_opt<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> rusqlite::Result<Option<T>> {
    unless_null(r, idx, || json_at(r, idx, table, column))
}

/// [`time_at`] of a nullable column.
pub(super) fn time_at_opt(
    r: &rusqlite::Row<'_>,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> rusqlite::Result<Option<Timestamp>> {
    unless_null(r, idx, || time_at(r, idx, table, column))
}

const RUN_COLUMNS: &str =
    "run_id, workflow, status, input_json, error, created_at, updated_at, lease_owner, lease_expires_ms, lease_epoch, parent_run_id, parent_frame";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0)?,
        workflow: r.get(1)?,
        status: name_at(r, 2, "_smithers_runs", "status")?,
        input: json_at(r, 3, "_smithers_runs", "input_json")?,
        error: r.get(4)?,
        created_at: time_at(r, 5, "_smithers_runs", "created_at")?,
        updated_at: time_at(r, 6, "_smithers_runs", "updated_at")?,
        lease_owner: r.get(7)?,
        lease_expires_ms: r.get(8)?,
        lease_epoch: r.get(9)?,
        parent_run_id: r.get(10)?,
        parent_frame: r.get(11)?,
    })
}

fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    Ok(NodeRecord {
        node_id: r.get(0)?,
        iteration: r.get(1)?,
        status: name_at(r, 2, "_smithers_nodes", "status")?,
        attempts: r.get(3)?,
        output_table: r.get(4)?,
        loop_id: r.get(5)?,
        last_error: r.get(6)?,
    })
}

fn frame_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FrameRecord> {
    let tree: String = r.get(2)?;
    // A frame recorded before frames were data (no structure) is read from its text, so older
    // databases keep working; a structure that does not read is a damaged frame.
    let structure = json_at_opt(r, 4, "_smithers_frames", "structure")?
        .unwrap_or_else(|| FrameNode::from_legacy_text(&tree));
    Ok(FrameRecord {
        frame_no: r.get(0)?,
        tree_hash: r.get(1)?,
        tree,
        structure,
        created_at: time_at(r, 3, "_smithers_frames", "created_at")?,
    })
}

fn query_nodes(c: &Connection, run_id: &str) -> Result<Vec<NodeRecord>> {
    let mut st = c.prepare_cached(
        "SELECT node_id, iteration, status, attempts, output_table, loop_id, last_error
         FROM _smithers_nodes WHERE run_id = ?1 ORDER BY ord, node_id, iteration",
    )?;
    let rows = st
        .query_map([run_id], node_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The node states of a run in no particular order (what a resume needs; the order is the
/// index's, so no sort), reading each status without allocating it.
fn load_nodes(c: &Connection, run_id: &str) -> Result<Vec<NodeRecord>> {
    let mut st = c.prepare_cached(
        "SELECT node_id, iteration, status, attempts, output_table, loop_id, last_error
         FROM _smithers_nodes WHERE run_id = ?1",
    )?;
    let mut rows = st.query([run_id])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(NodeRecord {
            node_id: r.get(0)?,
            iteration: r.get(1)?,
            status: name_at(r, 2, "_smithers_nodes", "status")?,
            attempts: r.get(3)?,
            output_table: r.get(4)?,
            loop_id: r.get(5)?,
            last_error: r.get(6)?,
        });
    }
    Ok(out)
}

fn query_approvals(c: &Connection, run_id: &str) -> Result<Vec<ApprovalRecord>> {
    let mut st = c.prepare_cached(
        "SELECT node_id, iteration, status, requested_at, decided_at, note
         FROM _smithers_approvals WHERE run_id = ?1 ORDER BY rowid",
    )?;
    let rows = st
        .query_map([run_id], |r| {
            Ok(ApprovalRecord {
                node_id: r.get(0)?,
                iteration: r.get(1)?,
                status: name_at(r, 2, "_smithers_approvals", "status")?,
                requested_at: time_at(r, 3, "_smithers_approvals", "requested_at")?,
                decided_at: time_at_opt(r, 4, "_smithers_approvals", "decided_at")?,
                note: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_run_with(&self, run: NewRun, first: WriteBatch) -> Result<FenceToken> {
        let now: Timestamp = self.clock.now();
        self.write_with(move |c| {
            let at = now.to_string();
            c.execute(
                "INSERT INTO _smithers_runs
                   (run_id, workflow, status, input_json, created_at, updated_at, lease_owner, lease_expires_ms, lease_epoch)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?4, ?5, ?6, 1)",
                params![
                    run.run_id,
                    run.workflow,
                    serde_json::to_string(&run.input)?,
                    at,
                    run.owner,
                    now.as_millis() + run.lease_ttl.as_millis() as i64
                ],
            )?;
            let fence = FenceToken::new(run.owner, 1);
            if !first.is_empty() {
                apply(c, &first.fenced(&fence), now)?;
            }
            Ok(fence)
        })
        .await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM _smithers_runs WHERE run_id = ?1"),
                [run_id],
                run_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn latest_run(&self) -> Result<Option<RunRecord>> {
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM _smithers_runs ORDER BY created_at DESC, rowid DESC LIMIT 1"),
                [],
                run_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn runs(&self) -> Result<Vec<RunRecord>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM _smithers_runs ORDER BY created_at DESC, rowid DESC"
            ))?;
            let rows = st
                .query_map([], run_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn run_list(&self) -> Result<Vec<ListedRun>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM _smithers_runs ORDER BY created_at DESC, rowid DESC"
            ))?;
            let rows = st
                .query_map([], |r| match run_from_row(r) {
                    Ok(run) => Ok(ListedRun::Run(run)),
                    Err(e) => match bad_value(&e) {
                        Some(bad) => Ok(ListedRun::Damaged {
                            run_id: r.get(0)?,
                            error: bad.to_string(),
                        }),
                        None => Err(e),
                    },
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn acquire_lease(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<FenceToken> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        let now: Timestamp = self.clock.now();
        self.write_with(move |c| {
            let row: Option<(Option<String>, Option<i64>)> = c
                .query_row("SELECT lease_owner, lease_expires_ms FROM _smithers_runs WHERE run_id = ?1", [&run_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((holder, expires)) = row else { return Err(Error::RunNotFound(run_id)) };
            let now = now.as_millis();
            if let (Some(holder), Some(expires)) = (holder, expires) {
                if holder != owner && expires > now && !holder_is_dead(&holder) {
                    return Err(Error::LeaseHeld { run_id, owner: holder, expires_at: Timestamp::from_millis(expires).to_string() });
                }
            }
            // A new term: whoever held the lease before now holds a stale token.
            let epoch: i64 = c.query_row(
                "UPDATE _smithers_runs SET lease_owner = ?2, lease_expires_ms = ?3, lease_epoch = lease_epoch + 1
                 WHERE run_id = ?1 RETURNING lease_epoch",
                params![run_id, owner, now + ttl.as_millis() as i64],
                |r| r.get(0),
            )?;
            Ok(FenceToken::new(owner, epoch))
        })
        .await
    }

    async fn renew_lease(&self, run_id: &str, fence: &FenceToken, ttl: Duration) -> Result<()> {
        let (run_id, fence) = (run_id.to_owned(), fence.clone());
        let now: Timestamp = self.clock.now();
        self.write_with(move |c| {
            check_fence(c, &run_id, &fence)?;
            c.execute(
                "UPDATE _smithers_runs SET lease_expires_ms = ?2 WHERE run_id = ?1",
                params![run_id, now.as_millis() + ttl.as_millis() as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn release_lease(&self, run_id: &str, fence: &FenceToken) -> Result<()> {
        let (run_id, fence) = (run_id.to_owned(), fence.clone());
        self.write_with(move |c| {
            if check_fence(c, &run_id, &fence).is_err() {
                return Ok(()); // not ours any more: nothing to give up
            }
            c.execute(
                "UPDATE _smithers_runs SET lease_owner = NULL, lease_expires_ms = NULL WHERE run_id = ?1",
                params![run_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn reset_for_resume(&self, run_id: &str, fence: &FenceToken) -> Result<u32> {
        let (run_id, fence) = (run_id.to_owned(), fence.clone());
        let now: Timestamp = self.clock.now();
        self.write_with(move |c| {
            check_fence(c, &run_id, &fence)?;
            let now = now.to_string();
            let n = c.execute(
                "UPDATE _smithers_attempts SET status = 'abandoned', finished_at = ?2,
                   error = COALESCE(error, 'the process driving this attempt stopped before it ended')
                 WHERE run_id = ?1 AND status = 'in-progress'",
                params![run_id, now],
            )?;
            c.execute(
                "UPDATE _smithers_nodes SET status = 'pending', updated_at = ?2
                 WHERE run_id = ?1 AND status IN ('running', 'failed')",
                params![run_id, now],
            )?;
            c.execute(
                "UPDATE _smithers_runs SET status = 'running', error = NULL, finished_at = NULL, updated_at = ?2,
                   cancel_requested = 0 WHERE run_id = ?1",
                params![run_id, now],
            )?;
            Ok(n as u32)
        })
        .await
    }

    async fn load(&self, run_id: &str) -> Result<LoadedRun> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let nodes = load_nodes(c, &run_id)?;
            let tables: HashSet<String> = nodes.iter().filter_map(|n| n.output_table.clone()).collect();
            let mut outputs = Vec::new();
            for t in tables {
                read_outputs(c, &t, &run_id, &nodes, &mut outputs)?;
            }
            let mut st = c.prepare_cached(
                "SELECT loop_id, iteration, pass_start, parent_iteration, done FROM _smithers_ralph WHERE run_id = ?1",
            )?;
            let loops = st
                .query_map([&run_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        LoopState { iteration: r.get(1)?, pass_start: r.get(2)?, parent_iteration: r.get(3)?, done: r.get(4)? },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare_cached("SELECT key, value FROM state")?;
            let state = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            let last: Option<(u32, String)> = c
                .prepare_cached(
                    "SELECT frame_no, tree_hash FROM _smithers_frames WHERE run_id = ?1 ORDER BY frame_no DESC LIMIT 1",
                )?
                .query_row([&run_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let mut st = c.prepare_cached(
                "SELECT node_id, iteration, COUNT(*) FROM _smithers_attempts
                 WHERE run_id = ?1 AND status = 'failed' AND rolled_back = 0 GROUP BY node_id, iteration",
            )?;
            let failures = st
                .query_map([&run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let approvals = query_approvals(c, &run_id)?;
            let (last_frame, last_frame_hash) = match last {
                Some((no, hash)) => (no, Some(hash)),
                None => (0, None),
            };
            Ok(LoadedRun { approvals, failures, nodes, outputs, loops, state, last_frame, last_frame_hash })
        })
        .await
    }

    async fn ensure_output_table(&self, info: OutputInfo) -> Result<()> {
        let now = self.clock.now();
        self.write_with(move |c| ensure_output_table(c, &info, now))
            .await
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let now = self.clock.now();
        self.write_with(move |c| apply(c, &batch, now)).await
    }

    async fn nodes(&self, run_id: &str) -> Result<Vec<NodeRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| query_nodes(c, &run_id)).await
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT node_id, iteration, attempt, status, agent, started_at, duration_ms, error,
                   input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, session_id, exit_code, model,
                   vcs_repo, vcs_before, vcs_after, cost_source
                 FROM _smithers_attempts WHERE run_id = ?1 ORDER BY ord, node_id, iteration, attempt",
            )?;
            let rows = st
                .query_map([&run_id], |r| {
                    Ok(AttemptRecord {
                        node_id: r.get(0)?,
                        iteration: r.get(1)?,
                        attempt: r.get(2)?,
                        status: r.get(3)?,
                        agent: r.get(4)?,
                        started_at: time_at(r, 5, "_smithers_attempts", "started_at")?,
                        duration_ms: r.get(6)?,
                        error: r.get(7)?,
                        usage: Usage {
                            input_tokens: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                            output_tokens: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                            cache_read_tokens: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                            cache_write_tokens: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
                            cost_usd: r.get(12)?,
                        },
                        session_id: r.get(13)?,
                        exit_code: r.get(14)?,
                        model: r.get(15)?,
                        vcs_repo: r.get(16)?,
                        vcs_before: r.get(17)?,
                        vcs_after: r.get(18)?,
                        cost_source: name_at_opt(r, 19, "_smithers_attempts", "cost_source")?,
                        queue: None,
                        claim_owner: None,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn attempt_usage(&self, run_id: &str) -> Result<Vec<(String, Usage)>> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT node_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd
                 FROM _smithers_attempts
                 WHERE run_id = ?1 AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL
                   OR cache_read_tokens IS NOT NULL OR cache_write_tokens IS NOT NULL OR cost_usd IS NOT NULL)
                 ORDER BY ord, node_id, iteration, attempt",
            )?;
            let rows = st
                .query_map([&run_id], |r| {
                    let tokens = |i| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
                    Ok((
                        r.get(0)?,
                        Usage {
                            input_tokens: tokens(1)?,
                            output_tokens: tokens(2)?,
                            cache_read_tokens: tokens(3)?,
                            cache_write_tokens: tokens(4)?,
                            cost_usd: r.get(5)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn events(&self, run_id: &str, after_seq: i64) -> Result<Vec<EventRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, at, node_id, iteration, payload FROM _smithers_events
                 WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = st
                .query_map(params![run_id, after_seq], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(seq, at, node_id, iteration, payload)| {
                    Ok(EventRecord {
                        seq,
                        event: Event {
                            run_id: run_id.clone(),
                            node_id,
                            iteration,
                            at: Timestamp::parse(&at).ok_or_else(|| {
                                Error::InvalidRecord(format!(
                                    "event {seq} of run `{run_id}` has the timestamp `{at}`, which is not RFC 3339 UTC; the database was edited or is damaged"
                                ))
                            })?,
                            kind: stored_json("_smithers_events", "payload", &payload)?,
                        },
                    })
                })
                .collect()
        })
        .await
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| steps::query_steps(c, &run_id)).await
    }

    async fn phases(&self, run_id: &str) -> Result<Vec<PhaseRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| steps::query_phases(c, &run_id)).await
    }

    async fn start_step(&self, run_id: &str, name: Option<&str>) -> Result<i64> {
        let (run_id, name) = (run_id.to_owned(), name.map(str::to_owned));
        let now = self.clock.now();
        self.write_with(move |c| steps::start_step(c, &run_id, name.as_deref(), &now.to_string()))
            .await
    }

    async fn rewind(&self, run_id: &str, to: RewindTo, fence: &FenceToken) -> Result<RewindReport> {
        let (run_id, fence) = (run_id.to_owned(), fence.clone());
        let at = self.clock.now();
        self.write_with(move |c| {
            let now = at.to_string();
            let report = steps::rewind(c, &run_id, &to, &fence, &now)?;
            let what = match &to {
                RewindTo::Step(id) => format!("rolled back to before step {id}"),
                RewindTo::Frame(f) => format!("rewound to frame {f}"),
            };
            c.execute(
                "UPDATE _smithers_runs SET status = 'cancelled', error = ?2, finished_at = NULL,
                   cancel_requested = 0, updated_at = ?3 WHERE run_id = ?1",
                params![
                    run_id,
                    format!("{what}; `resume` re-runs what was cut"),
                    now
                ],
            )?;
            let mut b = WriteBatch::new(&run_id);
            b.push(Write::Event(crate::events::Event::run(
                &run_id,
                at,
                EventKind::RunRewound {
                    to: what,
                    seq: report.seq,
                    steps: report.deactivated_steps.clone(),
                    nodes: report.reset_nodes.len() as u32,
                },
            )));
            apply(c, &b, at)?;
            Ok(report)
        })
        .await
    }

    async fn fork_run(&self, fork: ForkRun) -> Result<RunRecord> {
        let at = self.clock.now();
        self.write_with(move |c| {
            steps::fork(c, &fork, &at.to_string())?;
            let mut b = WriteBatch::new(&fork.run_id);
            b.push(Write::Event(crate::events::Event::run(
                &fork.run_id,
                at,
                EventKind::RunForked {
                    parent_run_id: fork.parent_run_id.clone(),
                    frame: fork.frame,
                },
            )));
            apply(c, &b, at)?;
            Ok(c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM _smithers_runs WHERE run_id = ?1"),
                [&fork.run_id],
                run_from_row,
            )?)
        })
        .await
    }

    async fn cache_get(&self, key: &str) -> Result<Option<Value>> {
        let key = key.to_owned();
        self.read(move |c| {
            let text: Option<String> = c
                .query_row(
                    "SELECT output_json FROM _smithers_cache WHERE cache_key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(text
                .map(|t| stored_json("_smithers_cache", "output_json", &t))
                .transpose()?)
        })
        .await
    }

    async fn approvals(&self, run_id: &str) -> Result<Vec<ApprovalRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| query_approvals(c, &run_id)).await
    }

    async fn decide_approval(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: Option<u32>,
        approve: bool,
        note: Option<&str>,
    ) -> Result<ApprovalRecord> {
        let (run_id, node_id, note) = (
            run_id.to_owned(),
            node_id.to_owned(),
            note.map(str::to_owned),
        );
        let now: Timestamp = self.clock.now();
        self.write_with(move |c| {
            let pending: Vec<u32> = {
                let mut st = c.prepare_cached(
                    "SELECT iteration FROM _smithers_approvals
                     WHERE run_id = ?1 AND node_id = ?2 AND status = 'pending' ORDER BY iteration",
                )?;
                let rows = st.query_map(params![run_id, node_id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let iteration = pending_iteration(&run_id, &node_id, iteration, &pending)?;
            let status = if approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            let requested_at = c.query_row(
                "UPDATE _smithers_approvals SET status = ?4, decided_at = ?5, note = ?6
                 WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 RETURNING requested_at",
                params![
                    run_id,
                    node_id,
                    iteration,
                    status.as_str(),
                    now.to_string(),
                    note
                ],
                |r| time_at(r, 0, "_smithers_approvals", "requested_at"),
            )?;
            let kind = EventKind::ApprovalDecided {
                approved: approve,
                note: note.clone(),
            };
            let e = Event::node(&run_id, &node_id, iteration, now, kind);
            c.execute(
                "INSERT INTO _smithers_events (run_id, at, kind, node_id, iteration, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    run_id,
                    e.at.to_string(),
                    e.kind.name(),
                    e.node_id,
                    e.iteration,
                    serde_json::to_string(&e.kind)?
                ],
            )?;
            Ok(ApprovalRecord {
                node_id,
                iteration,
                status,
                requested_at,
                decided_at: Some(now),
                note,
            })
        })
        .await
    }

    async fn frames(&self, run_id: &str) -> Result<Vec<FrameRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT frame_no, tree_hash, tree, created_at, structure FROM _smithers_frames
                 WHERE run_id = ?1 ORDER BY frame_no",
            )?;
            let rows = st
                .query_map([run_id], frame_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn frame(&self, run_id: &str, frame_no: Option<u32>) -> Result<Option<FrameRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT frame_no, tree_hash, tree, created_at, structure FROM _smithers_frames
                 WHERE run_id = ?1 AND (?2 IS NULL OR frame_no = ?2) ORDER BY frame_no DESC LIMIT 1",
            )?;
            Ok(st
                .query_row(params![run_id, frame_no], frame_from_row)
                .optional()?)
        })
        .await
    }

    async fn request_cancel(&self, run_id: &str) -> Result<CancelOutcome> {
        let run_id = run_id.to_owned();
        let now: Timestamp = self.clock.now();
        self.write_with(move |c| {
            let row: Option<(String, Option<String>, Option<i64>)> = c
                .query_row(
                    "SELECT status, lease_owner, lease_expires_ms FROM _smithers_runs WHERE run_id = ?1",
                    [&run_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((status, holder, expires)) = row else {
                return Err(Error::RunNotFound(run_id));
            };
            let status: RunStatus = stored_name("_smithers_runs", "status", &status)?;
            if status.is_final() {
                return Ok(CancelOutcome::AlreadyFinal(status));
            }
            if let (Some(owner), Some(expires)) = (holder, expires) {
                if expires > now.as_millis() && !holder_is_dead(&owner) {
                    c.execute(
                        "UPDATE _smithers_runs SET cancel_requested = 1, updated_at = ?2 WHERE run_id = ?1",
                        params![run_id, now.to_string()],
                    )?;
                    return Ok(CancelOutcome::Requested { owner });
                }
            }
            // Nobody drives it: cancel it here, as the engine would have, settling what its
            // dead driver left: attempts in progress are abandoned, their nodes pending, and
            // the lease is cleared (a driver that was only paused is fenced out by it).
            let at = now.to_string();
            c.execute(
                "UPDATE _smithers_attempts SET status = 'abandoned', finished_at = ?2,
                   error = COALESCE(error, 'the process driving this attempt stopped before it ended; the run was cancelled')
                 WHERE run_id = ?1 AND status = 'in-progress'",
                params![run_id, at],
            )?;
            c.execute(
                "UPDATE _smithers_nodes SET status = 'pending', updated_at = ?2
                 WHERE run_id = ?1 AND status = 'running'",
                params![run_id, at],
            )?;
            c.execute(
                "UPDATE _smithers_runs SET lease_owner = NULL, lease_expires_ms = NULL WHERE run_id = ?1",
                [&run_id],
            )?;
            let mut b = WriteBatch::new(&run_id);
            b.push(Write::RunStatus {
                status: RunStatus::Cancelled,
                error: None,
            });
            b.push(Write::Event(Event::run(&run_id, now, crate::events::EventKind::RunCancelled)));
            apply(c, &b, now)?;
            Ok(CancelOutcome::Cancelled)
        })
        .await
    }

    async fn cancel_requested(&self, run_id: &str) -> Result<bool> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let flag: Option<bool> = c
                .prepare_cached("SELECT cancel_requested FROM _smithers_runs WHERE run_id = ?1")?
                .query_row([&run_id], |r| r.get(0))
                .optional()?;
            flag.ok_or(Error::RunNotFound(run_id))
        })
        .await
    }

    async fn raise_budget(&self, run_id: &str, raise: crate::budget::BudgetRaise) -> Result<()> {
        let run_id = run_id.to_owned();
        let now = self.clock.now();
        self.write_with(move |c| {
            let exists: Option<i64> = c
                .query_row(
                    "SELECT 1 FROM _smithers_runs WHERE run_id = ?1",
                    [&run_id],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Err(Error::RunNotFound(run_id));
            }
            c.execute(
                "INSERT INTO _smithers_budget_raises (run_id, node_id, add_usd, add_tokens, raised_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    run_id,
                    raise.node_id,
                    raise.add_usd,
                    raise.add_tokens as i64,
                    now.to_string()
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn budget_raises(&self, run_id: &str) -> Result<Vec<crate::budget::BudgetRaise>> {
        let run_id = run_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT node_id, add_usd, add_tokens FROM _smithers_budget_raises
                 WHERE run_id = ?1 ORDER BY rowid",
            )?;
            let rows = st
                .query_map([&run_id], |r| {
                    Ok(crate::budget::BudgetRaise {
                        node_id: r.get(0)?,
                        add_usd: r.get(1)?,
                        add_tokens: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn active_runs(&self) -> Result<Vec<RunRecord>> {
        self.read(|c| workers::active_runs(c)).await
    }

    async fn put_worker(&self, worker: &WorkerRecord) -> Result<()> {
        let worker = worker.clone();
        self.write_with(move |c| workers::put_worker(c, &worker))
            .await
    }

    async fn remove_worker(&self, worker_id: &str) -> Result<()> {
        let worker_id = worker_id.to_owned();
        self.write_with(move |c| workers::remove_worker(c, &worker_id))
            .await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.read(|c| workers::workers(c)).await
    }

    async fn restarts(&self, run_id: &str) -> Result<Option<RestartRecord>> {
        let run_id = run_id.to_owned();
        self.read(move |c| workers::restarts(c, &run_id)).await
    }

    async fn put_restarts(&self, record: &RestartRecord, fence: &FenceToken) -> Result<()> {
        let (record, fence) = (record.clone(), fence.clone());
        self.write_with(move |c| {
            check_fence(c, &record.run_id, &fence)?;
            workers::put_restarts(c, &record)
        })
        .await
    }

    async fn state_get(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.read(move |c| {
            Ok(
                c.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }

    async fn state_set(&self, key: &str, value: &str) -> Result<()> {
        let mut b = WriteBatch::new("");
        b.push(Write::State {
            key: key.to_owned(),
            value: value.to_owned(),
        });
        self.write(b).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::params;

    use super::{Durability, SqliteStore};
    use crate::error::Error;

    fn store(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let s = SqliteStore::open(dir.path().join("s.db"), Durability::Full).unwrap();
        Arc::new(s)
    }

    /// Writes `key` to the `state` table, failing after the insert when `fail`; returns the
    /// name of the thread the transaction ran on.
    async fn put(s: &SqliteStore, key: String, fail: bool) -> crate::Result<String> {
        s.write_with(move |c| {
            c.execute(
                "INSERT INTO state (key, value) VALUES (?1, 'v')",
                params![key],
            )?;
            if fail {
                return Err(Error::StoreClosed(format!("{key} fails on purpose")));
            }
            Ok(std::thread::current().name().unwrap_or("").to_owned())
        })
        .await
    }

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    async fn keys(s: &SqliteStore) -> Vec<String> {
        s.read(|c| {
            let mut st = c.prepare("SELECT key FROM state ORDER BY key")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
        .unwrap()
    }

    /// On the multi-threaded runtime a lone write commits on the caller's thread; on the
    /// current-thread runtime (which must not block) the worker thread commits it.
    #[test]
    fn a_lone_write_commits_on_the_callers_thread_only_where_it_may_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let multi = multi_thread();
        let on = multi.block_on(put(&s, "a".into(), false)).unwrap();
        assert_ne!(on, "smithers-sqlite", "committed on the worker thread");
        let on = multi
            .block_on(async {
                let s = s.clone();
                tokio::spawn(async move { put(&s, "b".into(), false).await })
                    .await
                    .unwrap()
            })
            .unwrap();
        assert_ne!(
            on, "smithers-sqlite",
            "a spawned task committed on the worker thread"
        );
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let on = current.block_on(put(&s, "c".into(), false)).unwrap();
        assert_eq!(on, "smithers-sqlite");
        assert_eq!(current.block_on(keys(&s)), ["a", "b", "c"]);
        assert_eq!(s.commits(), 3);
    }

    /// Many writers at once, on both paths: every batch that succeeds is there, every one that
    /// fails left nothing, reads in between see whole batches, and writes that queued behind a
    /// transaction still share commits.
    #[test]
    fn concurrent_writers_on_both_paths_keep_every_good_batch_and_no_failed_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let rt = multi_thread();
        let (good, threads) = rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..300 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    let key = format!("k{i:03}");
                    let fail = i % 7 == 3;
                    let r = put(&s, key.clone(), fail).await;
                    if i % 10 == 0 {
                        // A read between writes sees no failed key.
                        assert!(!keys(&s)
                            .await
                            .iter()
                            .any(|k| { k[1..].parse::<u32>().unwrap() % 7 == 3 }));
                    }
                    (key, fail, r)
                }));
            }
            let mut good = Vec::new();
            let mut threads = std::collections::HashSet::new();
            for t in tasks {
                let (key, fail, r) = t.await.unwrap();
                match r {
                    Ok(thread) => {
                        assert!(!fail, "{key} should have failed");
                        threads.insert(thread == "smithers-sqlite");
                        good.push(key);
                    }
                    Err(e) => {
                        assert!(fail, "{key}: {e}");
                        assert!(e.to_string().contains("fails on purpose"), "{e}");
                    }
                }
            }
            (good, threads)
        });
        assert_eq!(rt.block_on(keys(&s)), good);
        assert_eq!(good.len(), 300 - 43);
        assert!(
            s.commits() < 300 - 43,
            "{} commits for {} good writes: queued writes no longer share commits",
            s.commits(),
            good.len()
        );
        assert!(
            threads.contains(&true),
            "no write went to the worker thread"
        );
        assert!(
            threads.contains(&false),
            "no write committed on its caller's thread"
        );
    }

    /// A database made before nodes and attempts lost their rowid keeps every row, in the order
    /// it was inserted, and the rows inserted after the migration follow them in theirs (not in
    /// key order), with no separate key index left.
    #[tokio::test]
    async fn nodes_and_attempts_keep_their_insertion_order_through_the_without_rowid_migration() {
        use crate::clock::{Clock, SystemClock};
        use crate::events::{Event, EventKind};
        use crate::model::NodeStatus;
        use crate::store::{NodeRecord, Store, Write, WriteBatch};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = super::connection::database_before(&path, "nodes_attempts_without_rowid");
        for (run, node) in [("r", "z"), ("q", "k"), ("r", "a"), ("r", "m")] {
            old.execute(
                "INSERT INTO _smithers_nodes (run_id, node_id, iteration, status, attempts, updated_at)
                 VALUES (?1, ?2, 0, 'finished', 1, 't0')",
                params![run, node],
            )
            .unwrap();
        }
        for (node, attempt) in [("z", 1), ("a", 2), ("a", 1)] {
            old.execute(
                "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, status, started_at)
                 VALUES ('r', ?1, 0, ?2, 'finished', '2026-11-25T06:08:03.123Z')",
                params![node, attempt],
            )
            .unwrap();
        }
        drop(old);

        let s = SqliteStore::open(&path, Durability::Full).unwrap();
        let node = |id: &str| {
            Write::Node(NodeRecord {
                node_id: id.into(),
                iteration: 0,
                status: NodeStatus::Running,
                attempts: 1,
                output_table: None,
                loop_id: None,
                last_error: None,
            })
        };
        let start = |id: &str| Write::AttemptStart {
            node_id: id.into(),
            iteration: 0,
            attempt: 1,
            agent: None,
            owner: "me".into(),
        };
        let event = || {
            Write::Event(Event::run(
                "r",
                SystemClock.now(),
                EventKind::RunStarted {
                    workflow: "w".into(),
                },
            ))
        };
        // Insertion order, not key order: within a batch and across batches.
        let mut b = WriteBatch::new("r");
        b.writes = vec![
            event(),
            node("y"),
            start("y"),
            event(),
            node("x"),
            start("x"),
        ];
        s.write(b).await.unwrap();
        let mut b = WriteBatch::new("r");
        b.writes = vec![node("c"), node("b"), node("a")];
        s.write(b).await.unwrap();

        let nodes: Vec<String> = s
            .nodes("r")
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        assert_eq!(nodes, ["z", "a", "m", "y", "x", "c", "b"]);
        let attempts: Vec<(String, u32)> = s
            .attempts("r")
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.node_id, a.attempt))
            .collect();
        let expect = [("z", 1), ("a", 2), ("a", 1), ("y", 1), ("x", 1)];
        assert_eq!(attempts, expect.map(|(n, a)| (n.to_owned(), a)));
        assert_eq!(s.nodes("q").await.unwrap()[0].node_id, "k");
        // The upsert of `a` changed its status, not its place.
        assert_eq!(s.nodes("r").await.unwrap()[1].status, NodeStatus::Running);

        let c = rusqlite::Connection::open(&path).unwrap();
        let autoindexes: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'sqlite_autoindex__smithers_nodes%'
                   OR name LIKE 'sqlite_autoindex__smithers_attempts%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(autoindexes, 0);
    }
}
