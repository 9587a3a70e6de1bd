//! Errors of the core: every variant says what went wrong, where, and what to do, and carries a
//! stable [`Error::code`] for tooling.

use std::path::PathBuf;

use crate::model::RunStatus;

/// The result type of smithers-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the engine, the store, or a workflow definition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database statement failed. Backend-neutral: what the engine acts on is
    /// [`StoreError::kind`]; the backend's own error is its [`source`](std::error::Error::source).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A database server could not be used: it cannot be reached, refused the login, has no
    /// such database, or its URL does not parse. `target` names host, port and database.
    #[error("cannot use {target}: {message}")]
    Connect {
        /// What was being connected to (`PostgreSQL database `x` at host:port (user `u`)`).
        target: String,
        /// Why, and what to do.
        message: String,
    },

    /// The database was migrated by a newer smithers than this binary: nothing is changed.
    #[error("{database} has schema version {applied}, but this binary knows versions up to {known}; it was written by a newer smithers: upgrade this binary (the database was left unchanged)")]
    SchemaNewer {
        /// The database.
        database: String,
        /// The highest migration recorded in it.
        applied: i64,
        /// The highest migration this binary has.
        known: i64,
    },

    /// A database file could not be created.
    #[error("cannot open database `{path}`: {message}")]
    OpenDb {
        /// The database path.
        path: PathBuf,
        /// Why.
        message: String,
    },

    /// The database file is not a SQLite database, or is damaged.
    #[error("database `{path}` cannot be used: {message}. It is not a smithers database or it is damaged: pass the right --db, or restore the file from a copy (`sqlite3 <file> .recover` saves what is still readable)")]
    DatabaseDamaged {
        /// The database path.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },

    /// The disk holding the database is full.
    #[error("the disk holding database `{path}` is full ({message}); free some space, then `resume` continues the run")]
    DiskFull {
        /// The database path.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },

    /// An embedded migration was edited after it had been applied.
    #[error("migration {version} (`{name}`) was applied with checksum {applied} but the binary has {current}; migrations must never be edited once released: add a new one")]
    MigrationChanged {
        /// Migration number.
        version: i64,
        /// Migration name.
        name: String,
        /// Checksum recorded in the database.
        applied: String,
        /// Checksum of the embedded migration.
        current: String,
    },

    /// An output type no longer matches the table that holds its earlier rows.
    #[error("output table `{table}` no longer matches `{type_name}`: {detail}. Rename the table with #[output(table = \"...\")] or migrate the existing rows")]
    SchemaChanged {
        /// The table.
        table: String,
        /// The Rust type.
        type_name: String,
        /// What differs, naming the field and both types.
        detail: String,
    },

    /// A table or column name that is not a plain identifier.
    #[error("`{0}` is not a valid SQL identifier: use ASCII letters, digits and `_`, not starting with a digit, at most 64 characters")]
    InvalidIdentifier(String),

    /// An output table named like smithers' own tables or SQLite's.
    #[error("output table `{0}` is reserved: smithers keeps its own tables in `_smithers_*` and `state`, and SQLite in `sqlite_*` (names are compared case-insensitively); name the table otherwise with #[output(table = \"...\")]")]
    ReservedTable(String),

    /// The database was written by a newer schema than this binary knows.
    #[error("database `{path}` has schema version {found}, newer than the {supported} this binary knows: it was written by a newer smithers; upgrade smithers (or the workflow binary) to use it. Nothing was changed")]
    SchemaTooNew {
        /// The database path.
        path: PathBuf,
        /// The schema version found in the database.
        found: i64,
        /// The newest schema version this binary knows.
        supported: i64,
    },

    /// Two nodes in one frame share an id.
    #[error(
        "duplicate node id `{id}`: used by {first} and by {second}; give each node a unique id"
    )]
    DuplicateNodeId {
        /// The id.
        id: String,
        /// Description of the first node (`<Task>` at path ...).
        first: String,
        /// Description of the second node.
        second: String,
    },

    /// A node id that cannot be used (empty, too long or with control characters).
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },

    /// `ctx.output(..)` of a task that has no output in the current iteration.
    #[error("node `{node}` has no output in iteration {iteration} yet; use `ctx.output_maybe` or `ctx.latest` when it may be absent")]
    MissingOutput {
        /// The node id.
        node: String,
        /// The iteration.
        iteration: u32,
    },

    /// `ctx.iteration(..)` named a loop the workflow does not have.
    #[error("`ctx.iteration(\"{loop_id}\")` reads a loop that this workflow does not have ({known}); give the loop's `LoopRef` to both `<Ralph id=..>` and `ctx.iteration(..)` (a `<Ralph>` without `id` is `LoopRef::DEFAULT`)")]
    UnknownLoop {
        /// The loop id that was read.
        loop_id: String,
        /// The loops the rendered tree has.
        known: String,
    },

    /// A persisted output could not be read back as the requested type.
    #[error("output of node `{node}` (iteration {iteration}) cannot be read as `{type_name}`: {message}")]
    OutputType {
        /// The node id.
        node: String,
        /// The iteration.
        iteration: u32,
        /// The requested type.
        type_name: String,
        /// serde's message.
        message: String,
    },

    /// The run does not exist.
    #[error("run `{0}` not found in this database; `smithers runs` lists the runs it has")]
    RunNotFound(String),

    /// The database has no run (to resume, or to show).
    #[error("no run in this database yet; start one with a workflow binary's `run`")]
    NoRunToResume,

    /// Another process holds the lease of the run.
    #[error("run `{run_id}` is being driven by another process (`{owner}`, lease valid until {expires_at}); wait for it to finish or stop it, then resume")]
    LeaseHeld {
        /// The run.
        run_id: String,
        /// The lease holder.
        owner: String,
        /// When the lease expires (RFC 3339).
        expires_at: String,
    },

    /// This process lost the run's lease (it stalled past the lease period and another process
    /// took the run over).
    #[error("lost the lease of run `{run_id}`: {detail}; this process stops without writing anything more, so that two processes never drive one run")]
    LeaseLost {
        /// The run.
        run_id: String,
        /// What happened to the lease (who holds it now, in which epoch).
        detail: String,
    },

    /// A worker's claim on a queued attempt expired or was taken by another worker: what it
    /// produced is not recorded (the attempt runs again under the new claim).
    #[error("lost the claim on `{node_id}` (attempt {attempt}) of run `{run_id}`: {detail}; this worker records nothing of it, so that one attempt's outcome is recorded once")]
    ClaimLost {
        /// The run.
        run_id: String,
        /// The task.
        node_id: String,
        /// The attempt.
        attempt: u32,
        /// What happened to the claim.
        detail: String,
    },

    /// The run already reached a final status.
    #[error("run `{run_id}` already {status}; nothing to resume")]
    RunAlreadyDone {
        /// The run.
        run_id: String,
        /// Its status.
        status: RunStatus,
    },

    /// The workflow input is not valid for the workflow's input type.
    #[error("invalid workflow input: {0}")]
    InvalidInput(String),

    /// A node failed and the run cannot continue.
    #[error("node `{node}` failed after {attempts} attempt(s): {message}")]
    NodeFailed {
        /// The node id.
        node: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },

    /// A Ralph loop reached `max_iterations` with `on_max_reached=Fail`.
    #[error(
        "loop `{id}` reached max_iterations ({max}) without its `until` condition becoming true"
    )]
    MaxIterationsReached {
        /// The loop id.
        id: String,
        /// The limit.
        max: u32,
    },

    /// The run was cancelled.
    #[error("run `{0}` was cancelled; `resume` continues it")]
    Cancelled(String),

    /// The store's worker thread is gone.
    #[error("the database worker stopped: {0}")]
    StoreClosed(String),

    /// JSON (de)serialisation of internal data failed.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),

    /// A run that did not finish (from [`RunReport::into_result`]).
    ///
    /// [`RunReport::into_result`]: crate::engine::RunReport::into_result
    #[error("run `{run_id}` {status}: {}", .error.as_deref().unwrap_or("no error recorded"))]
    RunNotFinished {
        /// The run.
        run_id: String,
        /// The status it stopped with.
        status: RunStatus,
        /// The error it recorded, if any.
        error: Option<String>,
    },

    /// Nothing can start and nothing is running, yet the run is not complete.
    #[error("no task can start and none is running; the workflow is stuck")]
    Stuck,

    /// The workflow function panicked while rendering.
    #[error("the workflow function panicked while rendering: {0}")]
    RenderPanicked(String),

    /// A worker's drive of a run panicked (the worker goes on with its other runs).
    #[error("the drive of run `{run_id}` panicked: {message}")]
    DrivePanicked {
        /// The run.
        run_id: String,
        /// The panic's message.
        message: String,
    },

    /// The run has no step with this id.
    #[error("run `{run_id}` has no step {step_id}; `smithers steps {run_id}` lists them")]
    StepNotFound {
        /// The run.
        run_id: String,
        /// The step id asked for.
        step_id: i64,
    },

    /// The run has no frame with this number.
    #[error("run `{run_id}` has no frame {frame}; `smithers frames {run_id} --all` lists them")]
    FrameNotFound {
        /// The run.
        run_id: String,
        /// The frame asked for.
        frame: u32,
    },

    /// An approval was decided for a node that has none pending (in that iteration).
    #[error("node `{node_id}` of run `{run_id}` has no pending approval{}; `smithers status {run_id}` shows what the run waits for", .iteration.map(|i| format!(" in iteration {i}")).unwrap_or_default())]
    NoPendingApproval {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// The iteration asked for, if one was.
        iteration: Option<u32>,
    },

    /// An approval was decided without an iteration for a node pending in several.
    #[error("node `{node_id}` waits for approval in iterations {iterations:?}; pass --iteration")]
    AmbiguousApproval {
        /// The node.
        node_id: String,
        /// The iterations waiting.
        iterations: Vec<u32>,
    },

    /// A node has no working-copy snapshot to revert to, or a step none to roll back to or diff.
    #[error("{0}")]
    NoSnapshot(String),

    /// A rollback, rewind or diff was refused before anything changed (the working copy has
    /// later changes, a snapshot was garbage-collected, the step is inactive...).
    #[error("{0}")]
    TimeTravelRefused(String),

    /// A git or jj command failed.
    #[error(transparent)]
    Vcs(#[from] VcsError),

    /// A price catalog cannot be read or is not valid.
    #[error("{0}")]
    PriceCatalog(String),

    /// `smithers db copy` refused or failed; nothing was copied.
    #[error("{0}")]
    Copy(String),

    /// A stored record cannot be read back (a timestamp that is not RFC 3339, ...): the
    /// database was edited or is damaged.
    #[error("{0}")]
    InvalidRecord(String),

    /// What was asked is not available with this store or this build.
    #[error("{0}")]
    Unsupported(String),

    /// A command-line argument that cannot be acted on.
    #[error("{0}")]
    InvalidArgument(String),

    /// A report (`smithers status`, `runs`, ...) could not be written to its output: a closed
    /// pipe, a full disk.
    #[error(
        "cannot write the output: {0}; check where the output goes (a closed pipe, a full disk)"
    )]
    WriteOutput(#[source] std::io::Error),

    /// A state the code rules out was reached: a bug of smithers.
    #[error("internal error: {0}; this is a bug of smithers, please report it")]
    Internal(String),
}

/// What a snapshot failure (`vcs`) says: which command, in which directory, and the tool's message.
#[derive(Debug, thiserror::Error)]
#[error("{tool} {command} in `{dir}` failed: {message}")]
pub struct VcsError {
    /// `git` or `jj`.
    pub tool: &'static str,
    /// The subcommand.
    pub command: String,
    /// The working directory.
    pub dir: PathBuf,
    /// stderr of the tool, or the spawn error.
    pub message: String,
}

/// What kind of failure a [`StoreError`] is: what the engine (or an operator) does about it
/// depends on this, never on the backend's own error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Another writer holds a lock, or the transaction lost a serialization race: trying again
    /// later may succeed.
    Busy,
    /// The disk holding the database is full: trying again once there is room may succeed.
    DiskFull,
    /// A constraint (unique, foreign key, not null, check) refused the write.
    Constraint,
    /// A table, column or type is not what the statement expects: the schema differs from
    /// what this binary knows.
    Schema,
    /// The database is not a database, or is damaged.
    Damaged,
    /// The connection to the database was lost or could not be used.
    Connection,
    /// Any other failure of the backend.
    Other,
}

impl StoreErrorKind {
    /// Whether trying the same statement again later may succeed (busy, full disk, lost
    /// connection), as opposed to a failure that repeats until something is changed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            StoreErrorKind::Busy | StoreErrorKind::DiskFull | StoreErrorKind::Connection
        )
    }
}

/// Which store backend an error came from; names the backend in the message and in
/// [`Error::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreBackend {
    /// The embedded SQLite store.
    Sqlite,
    /// The PostgreSQL store.
    Postgres,
}

/// A failed database statement, with no backend type in its signature: the engine acts on
/// [`kind`](StoreError::kind), and the backend's error (`rusqlite::Error`,
/// `tokio_postgres::Error`) is kept, boxed, as the [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct StoreError {
    backend: StoreBackend,
    kind: StoreErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StoreError {
    /// An error of `backend` of `kind`; `message` is the backend's message with its causes, as
    /// the user reads it.
    pub fn new(
        backend: StoreBackend,
        kind: StoreErrorKind,
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StoreError {
            backend,
            kind,
            message: message.into(),
            source,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The backend that failed.
    pub fn backend(&self) -> StoreBackend {
        self.backend
    }

    /// The backend's message (without the `database error:` prefix).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same failure with `message` in place of the backend's (for a caller that knows
    /// better what failed, such as a `COMMIT`); kind and source are kept.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.backend {
            StoreBackend::Sqlite => write!(f, "database error: {}", self.message),
            StoreBackend::Postgres => write!(f, "PostgreSQL error: {}", self.message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Store(e) => match e.backend {
                StoreBackend::Sqlite => "E_SQLITE",
                StoreBackend::Postgres => "E_POSTGRES",
            },
            Error::Connect { .. } => "E_CONNECT",
            Error::SchemaNewer { .. } => "E_SCHEMA_NEWER",
            Error::OpenDb { .. } => "E_OPEN_DB",
            Error::DatabaseDamaged { .. } => "E_DB_DAMAGED",
            Error::DiskFull { .. } => "E_DISK_FULL",
            Error::MigrationChanged { .. } => "E_MIGRATION_CHANGED",
            Error::SchemaChanged { .. } => "E_SCHEMA_CHANGED",
            Error::InvalidIdentifier(_) => "E_INVALID_IDENTIFIER",
            Error::ReservedTable(_) => "E_RESERVED_NAME",
            Error::SchemaTooNew { .. } => "E_SCHEMA_TOO_NEW",
            Error::DuplicateNodeId { .. } => "E_DUPLICATE_NODE_ID",
            Error::InvalidNodeId { .. } => "E_INVALID_NODE_ID",
            Error::MissingOutput { .. } => "E_MISSING_OUTPUT",
            Error::UnknownLoop { .. } => "E_UNKNOWN_LOOP",
            Error::OutputType { .. } => "E_OUTPUT_TYPE",
            Error::RunNotFound(_) => "E_RUN_NOT_FOUND",
            Error::NoRunToResume => "E_NO_RUN",
            Error::LeaseHeld { .. } => "E_LEASE_HELD",
            Error::RunAlreadyDone { .. } => "E_RUN_DONE",
            Error::LeaseLost { .. } => "E_LEASE_LOST",
            Error::ClaimLost { .. } => "E_CLAIM_LOST",
            Error::InvalidInput(_) => "E_INVALID_INPUT",
            Error::NodeFailed { .. } => "E_NODE_FAILED",
            Error::MaxIterationsReached { .. } => "E_MAX_ITERATIONS",
            Error::Cancelled(_) => "E_CANCELLED",
            Error::StoreClosed(_) => "E_STORE_CLOSED",
            Error::Json(_) => "E_JSON",
            Error::RunNotFinished { .. } => "E_RUN_NOT_FINISHED",
            Error::Stuck => "E_STUCK",
            Error::RenderPanicked(_) => "E_RENDER_PANICKED",
            Error::DrivePanicked { .. } => "E_DRIVE_PANICKED",
            Error::StepNotFound { .. } => "E_STEP_NOT_FOUND",
            Error::FrameNotFound { .. } => "E_FRAME_NOT_FOUND",
            Error::NoPendingApproval { .. } => "E_NO_PENDING_APPROVAL",
            Error::AmbiguousApproval { .. } => "E_AMBIGUOUS_APPROVAL",
            Error::NoSnapshot(_) => "E_NO_SNAPSHOT",
            Error::TimeTravelRefused(_) => "E_TIME_TRAVEL_REFUSED",
            Error::Vcs(_) => "E_VCS",
            Error::PriceCatalog(_) => "E_PRICE_CATALOG",
            Error::Copy(_) => "E_COPY",
            Error::InvalidRecord(_) => "E_INVALID_RECORD",
            Error::Unsupported(_) => "E_UNSUPPORTED",
            Error::InvalidArgument(_) => "E_INVALID_ARGUMENT",
            Error::WriteOutput(_) => "E_WRITE_OUTPUT",
            Error::Internal(_) => "E_INTERNAL",
        }
    }
}

/// The error a task (compute or agent) returns. Retryable errors consume one of the task's
/// `retries`; terminal errors fail the node at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// What happened.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// When the error is a rate limit, how long the service asked us to wait before trying again
    /// (`retry-after`, a reset time): the next attempt waits at least this long.
    pub retry_after: Option<std::time::Duration>,
}

impl TaskError {
    /// A retryable error.
    pub fn retryable(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A terminal error: no retry.
    pub fn terminal(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// The same error, asking the next attempt to wait at least `after` (a rate limit's reset).
    #[must_use]
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        TaskError::retryable(message)
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        TaskError::retryable(message)
    }
}

impl From<std::io::Error> for TaskError {
    /// Retryable or terminal by the error's kind: see [`TaskError::io`].
    fn from(e: std::io::Error) -> Self {
        let retryable = io_is_retryable(e.kind());
        TaskError {
            message: e.to_string(),
            retryable,
            retry_after: None,
        }
    }
}

impl TaskError {
    /// An I/O error of a task, `context` saying what was being done ("cannot write the prompt
    /// file"). Retryable when another attempt may succeed (interrupted, timed out, a connection
    /// reset or refused, a busy resource, a full disk, an unexpected end of a stream, and kinds
    /// with no better name), terminal when the same call fails the same way until someone changes
    /// something (not found, permission denied, already exists, invalid input or data,
    /// unsupported, a read-only file system, a directory where a file was expected...).
    pub fn io(context: impl std::fmt::Display, e: &std::io::Error) -> Self {
        TaskError {
            message: format!("{context}: {e}"),
            retryable: io_is_retryable(e.kind()),
            retry_after: None,
        }
    }
}

/// Whether an I/O error of `kind` may go away on another attempt (see [`TaskError::io`]).
fn io_is_retryable(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    !matches!(
        kind,
        K::NotFound
            | K::PermissionDenied
            | K::AlreadyExists
            | K::InvalidInput
            | K::InvalidData
            | K::Unsupported
            | K::ReadOnlyFilesystem
            | K::IsADirectory
            | K::NotADirectory
            | K::DirectoryNotEmpty
            | K::InvalidFilename
            | K::FileTooLarge
            | K::ArgumentListTooLong
            | K::CrossesDevices
            | K::TooManyLinks
            | K::NotSeekable
    )
}

impl From<serde_json::Error> for TaskError {
    fn from(e: serde_json::Error) -> Self {
        TaskError::retryable(e.to_string())
    }
}

impl From<Error> for TaskError {
    fn from(e: Error) -> Self {
        TaskError::terminal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error as IoError, ErrorKind};

    use super::TaskError;

    fn retryable(kind: ErrorKind) -> bool {
        TaskError::from(IoError::new(kind, "x")).retryable
    }

    #[test]
    fn io_errors_that_repeat_until_something_changes_are_terminal() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput,
            ErrorKind::InvalidData,
            ErrorKind::Unsupported,
            ErrorKind::ReadOnlyFilesystem,
            ErrorKind::IsADirectory,
        ] {
            assert!(!retryable(kind), "{kind:?} should be terminal");
        }
    }

    #[test]
    fn io_errors_that_may_pass_are_retryable() {
        for kind in [
            ErrorKind::Interrupted,
            ErrorKind::TimedOut,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionRefused,
            ErrorKind::BrokenPipe,
            ErrorKind::UnexpectedEof,
            ErrorKind::ResourceBusy,
            ErrorKind::StorageFull,
            ErrorKind::Other,
        ] {
            assert!(retryable(kind), "{kind:?} should be retryable");
        }
    }

    #[test]
    fn an_io_error_in_context_keeps_the_message_and_decides_by_kind() {
        let e = TaskError::io(
            "cannot write the prompt file",
            &IoError::new(ErrorKind::PermissionDenied, "denied"),
        );
        assert_eq!(e.message, "cannot write the prompt file: denied");
        assert!(!e.retryable);
    }
}
