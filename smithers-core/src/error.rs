//! Errors of the core: every variant says what went wrong, where, and what to do, and carries a
//! stable [`Error::code`] for tooling.

use std::path::PathBuf;

/// The result type of smithers-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the engine, the store, or a workflow definition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQLite database could not be opened or queried.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// A PostgreSQL statement failed.
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL error: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),

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
        status: String,
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

    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

/// A tokio-postgres error with its causes: the server's message, detail and hint, or the I/O
/// error under "error connecting to server".
#[cfg(feature = "postgres")]
pub(crate) fn postgres_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = format!("{} ({})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            m.push_str(&format!("; {d}"));
        }
        if let Some(h) = db.hint() {
            m.push_str(&format!("; hint: {h}"));
        }
        return m;
    }
    let mut m = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !m.contains(&text) {
            m.push_str(": ");
            m.push_str(&text);
        }
        source = s.source();
    }
    m
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Sqlite(_) => "E_SQLITE",
            #[cfg(feature = "postgres")]
            Error::Postgres(_) => "E_POSTGRES",
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
            Error::Other(_) => "E_OTHER",
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
    fn from(e: std::io::Error) -> Self {
        TaskError::retryable(e.to_string())
    }
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
