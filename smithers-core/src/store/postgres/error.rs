//! PostgreSQL errors as backend-neutral [`StoreError`]s: the kind read from the SQLSTATE class
//! (or a lost connection), the message the server's with its detail and hint, the
//! `tokio_postgres::Error` kept as the source.

use tokio_postgres::error::SqlState;

use crate::error::{Error, StoreBackend, StoreError, StoreErrorKind};

/// A tokio-postgres error with its causes: the server's message, detail and hint, or the I/O
/// error under "error connecting to server".
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

/// What kind of failure a PostgreSQL error is, from its SQLSTATE (class 40 and lock timeouts are
/// busy, 53100 a full disk, class 23 a constraint, class 42 the schema, XX001/XX002 damage,
/// class 08 and server shutdowns a lost connection).
fn postgres_kind(e: &tokio_postgres::Error) -> StoreErrorKind {
    let Some(code) = e.code() else {
        return if e.is_closed() || has_io_source(e) {
            StoreErrorKind::Connection
        } else {
            StoreErrorKind::Other
        };
    };
    let s = code.code();
    if *code == SqlState::DISK_FULL {
        StoreErrorKind::DiskFull
    } else if s.starts_with("40") || *code == SqlState::LOCK_NOT_AVAILABLE {
        StoreErrorKind::Busy
    } else if s.starts_with("23") {
        StoreErrorKind::Constraint
    } else if s.starts_with("42") {
        StoreErrorKind::Schema
    } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
        StoreErrorKind::Damaged
    } else if s.starts_with("08") || s.starts_with("57P") {
        StoreErrorKind::Connection
    } else {
        StoreErrorKind::Other
    }
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A tokio-postgres error as a backend-neutral [`StoreError`].
pub(crate) fn postgres_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::new(
        StoreBackend::Postgres,
        postgres_kind(&e),
        postgres_message(&e),
        Some(Box::new(e)),
    )
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Store(postgres_error(e))
    }
}
