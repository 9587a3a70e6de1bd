//! Reaching the server: the URL parsed into a config, a description of the target that every
//! connection error names (host, port, database, user), the mapping of connection failures to
//! errors that say what to do, and the embedded migrations applied under an advisory lock.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Object, PoolError};
use sha2::{Digest, Sha256};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;

use super::error::postgres_message;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::store::redact_url;

/// The embedded PostgreSQL migrations: (version, name, SQL).
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "lease_epoch",
        include_str!("../../../migrations/postgres/0002_lease_epoch.sql"),
    ),
    (
        3,
        "cost_source",
        include_str!("../../../migrations/postgres/0003_cost_source.sql"),
    ),
    (
        4,
        "step_records",
        include_str!("../../../migrations/postgres/0004_step_records.sql"),
    ),
    (
        5,
        "budget_raises",
        include_str!("../../../migrations/postgres/0005_budget_raises.sql"),
    ),
    (
        6,
        "frame_structure",
        include_str!("../../../migrations/postgres/0006_frame_structure.sql"),
    ),
    (
        7,
        "attempt_queue",
        include_str!("../../../migrations/postgres/0007_attempt_queue.sql"),
    ),
    (
        8,
        "workers",
        include_str!("../../../migrations/postgres/0008_workers.sql"),
    ),
    (
        9,
        "ralph_history_order",
        include_str!("../../../migrations/postgres/0009_ralph_history_order.sql"),
    ),
    (
        10,
        "usage_reports",
        include_str!("../../../migrations/postgres/0010_usage_reports.sql"),
    ),
];

/// Parses `url` into a config with smithers' defaults (user `postgres`, a 5 s connect timeout).
pub(super) fn parse(url: &str) -> Result<Config> {
    let unparsable = |why: String| {
        Error::Connect {
        target: format!("PostgreSQL URL `{}`", redact_url(url)),
        message: format!(
            "{why}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, e.g. postgres://postgres@127.0.0.1:5432/smithers"
        ),
    }
    };
    let mut config =
        Config::from_str(url).map_err(|e| unparsable(format!("the URL does not parse ({e})")))?;
    if config.get_hosts().is_empty() {
        return Err(unparsable("the URL names no host".into()));
    }
    if config.get_user().is_none() {
        config.user("postgres");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("smithers");
    Ok(config)
}

/// `PostgreSQL database `db` at host:port (user `u`)`, named by every connection error.
pub(super) fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "(no host)".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or(user);
    format!("PostgreSQL database `{db}` at {host}:{port} (user `{user}`)")
}

/// A failure to connect, said in the user's terms: which of unreachable server, refused
/// authentication or missing database it is, and what to do.
pub(super) fn connect_error(target: &str, e: &tokio_postgres::Error) -> Error {
    let message = if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_CATALOG_NAME {
            format!(
                "the database does not exist ({}); create it (`createdb -h HOST -U USER NAME`) or name an existing one in the URL",
                db.message()
            )
        } else if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            format!(
                "the server refused authentication ({}); check the user and password in the URL and the server's pg_hba.conf",
                db.message()
            )
        } else {
            format!("the server refused the connection: {}", db.message())
        }
    } else if is_io(e) {
        format!(
            "the server cannot be reached ({}); is PostgreSQL running and listening on that host and port?",
            postgres_message(e)
        )
    } else {
        format!("the connection failed: {}", postgres_message(e))
    };
    Error::Connect {
        target: target.to_owned(),
        message,
    }
}

fn is_io(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    e.to_string().contains("timeout")
}

/// A failure to get a pooled connection.
pub(super) fn pool_error(target: &str, e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => connect_error(target, &e),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
            connect_error(target, &e)
        }
        other => Error::Connect {
            target: target.to_owned(),
            message: format!("no connection from the pool: {other}"),
        },
    }
}

fn checksum(sql: &str) -> String {
    hex::encode(&Sha256::digest(sql.as_bytes())[..16])
}

/// Applies the pending migrations in one transaction under an advisory lock of the schema, so
/// concurrent processes migrate once and a failure leaves nothing half-applied. Refuses a schema
/// newer than this binary and an edited migration, changing nothing.
pub(super) async fn migrate(client: &mut Object, target: &str) -> Result<()> {
    let tx = client.transaction().await?;
    let schema: Option<String> = tx.query_one("SELECT current_schema()", &[]).await?.get(0);
    let Some(schema) = schema else {
        return Err(Error::Connect {
            target: target.to_owned(),
            message: "no schema of the search_path exists; create it or fix `options=-csearch_path=...` in the URL".into(),
        });
    };
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("smithers.migrations.{schema}")],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS _smithers_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .await?;
    let applied: Vec<(i64, String)> = tx
        .query(
            "SELECT version, checksum FROM _smithers_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&(newest, _)) = applied.last().filter(|(v, _)| *v > known) {
        return Err(Error::SchemaNewer {
            database: format!("{target}, schema `{schema}`,"),
            applied: newest,
            known,
        });
    }
    for &(version, name, sql) in MIGRATIONS {
        let current = checksum(sql);
        match applied.iter().find(|(v, _)| *v == version) {
            Some((_, a)) if *a == current => {}
            Some((_, a)) => {
                return Err(Error::MigrationChanged {
                    version,
                    name: name.into(),
                    applied: a.clone(),
                    current,
                })
            }
            None => {
                tx.batch_execute(sql).await?;
                // Migrations run while connecting, before `with_clock` can give the store its
                // clock: the system's time, as in SQLite.
                tx.execute(
                    "INSERT INTO _smithers_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
                    &[&version, &name, &current, &SystemClock.now().to_string()],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn describe_names_host_port_database_and_user() {
        let c = parse("postgres://alice@db.example:6543/runs").unwrap();
        assert_eq!(
            describe(&c),
            "PostgreSQL database `runs` at db.example:6543 (user `alice`)"
        );
        let c = parse("postgresql://127.0.0.1").unwrap();
        assert_eq!(
            describe(&c),
            "PostgreSQL database `postgres` at 127.0.0.1:5432 (user `postgres`)"
        );
    }
}
