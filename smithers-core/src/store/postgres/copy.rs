//! `smithers db copy`: a whole SQLite database moved into PostgreSQL in one transaction — runs,
//! nodes, attempts, transcripts, frames, events, loop counters, approvals, cache, steps, the
//! `state` table, and every output table with its typed columns. Either all of it arrives or
//! nothing does; a run id the target already has is refused by name.

use std::path::Path;

use deadpool_postgres::Transaction;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use super::output_rows::create_output_table;
use super::writes::{Param, Pipeline};
use super::PostgresStore;
use crate::error::{Error, Result};
use crate::output::ColumnKind;
use crate::store::sqlite::{check_ident, quote, StoredColumn};
use crate::store::{Durability, SqliteStore};

/// How a column's SQLite value becomes its PostgreSQL parameter.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    Int,
    Real,
    Bool,
    Json,
    /// An event sequence number (or a position in the history that names one): shifted past
    /// the target's own events.
    Seq,
}

use Kind::*;

/// One internal table: its columns, its order, and what a row the target already has does.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    order: &'static str,
    on_conflict: &'static str,
}

/// Every internal table of the SQLite schema, in an order that respects nothing but reading:
/// PostgreSQL has no foreign keys between them. A table of the source not listed here (nor an
/// output table) stops the copy, so a table added later is never left behind silently.
const TABLES: &[Table] = &[
    Table {
        name: "_smithers_runs",
        columns: &[
            ("run_id", Text),
            ("workflow", Text),
            ("status", Text),
            ("input_json", Json),
            ("error", Text),
            ("created_at", Text),
            ("updated_at", Text),
            ("finished_at", Text),
            ("lease_owner", Text),
            ("lease_expires_ms", Int),
            ("cancel_requested", Bool),
            ("lease_epoch", Int),
            ("parent_run_id", Text),
            ("parent_frame", Int),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_nodes",
        columns: &[
            ("run_id", Text),
            ("node_id", Text),
            ("iteration", Int),
            ("status", Text),
            ("attempts", Int),
            ("output_table", Text),
            ("loop_id", Text),
            ("last_error", Text),
            ("updated_at", Text),
        ],
        order: "ord, node_id, iteration",
        on_conflict: "",
    },
    Table {
        name: "_smithers_attempts",
        columns: &[
            ("run_id", Text),
            ("node_id", Text),
            ("iteration", Int),
            ("attempt", Int),
            ("status", Text),
            ("owner", Text),
            ("agent", Text),
            ("started_at", Text),
            ("finished_at", Text),
            ("duration_ms", Int),
            ("error", Text),
            ("input_tokens", Int),
            ("output_tokens", Int),
            ("cache_read_tokens", Int),
            ("cache_write_tokens", Int),
            ("cost_usd", Real),
            ("session_id", Text),
            ("exit_code", Int),
            ("model", Text),
            ("vcs_repo", Text),
            ("vcs_before", Text),
            ("vcs_after", Text),
            ("cost_source", Text),
            ("rolled_back", Bool),
        ],
        order: "ord, node_id, iteration, attempt",
        on_conflict: "",
    },
    Table {
        name: "_smithers_transcripts",
        columns: &[
            ("run_id", Text),
            ("node_id", Text),
            ("iteration", Int),
            ("attempt", Int),
            ("transcript", Text),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_frames",
        columns: &[
            ("run_id", Text),
            ("frame_no", Int),
            ("tree_hash", Text),
            ("tree", Text),
            ("created_at", Text),
        ],
        order: "rowid",
        on_conflict: "",
    },
    // Sequence numbers keep their order and gaps, shifted past the target's own events.
    Table {
        name: "_smithers_events",
        columns: &[
            ("seq", Seq),
            ("run_id", Text),
            ("at", Text),
            ("kind", Text),
            ("node_id", Text),
            ("iteration", Int),
            ("payload", Json),
        ],
        order: "seq",
        on_conflict: "",
    },
    Table {
        name: "_smithers_ralph_history",
        columns: &[
            ("run_id", Text),
            ("loop_id", Text),
            ("seq", Seq),
            ("iteration", Int),
            ("pass_start", Int),
            ("parent_iteration", Int),
            ("done", Bool),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_rolled_back_outputs",
        columns: &[
            ("run_id", Text),
            ("node_id", Text),
            ("iteration", Int),
            ("output_table", Text),
            ("output_json", Json),
            ("rolled_back_at", Text),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_phases",
        columns: &[
            ("run_id", Text),
            ("phase_id", Int),
            ("name", Text),
            ("iteration", Int),
            ("status", Text),
            ("active", Bool),
            ("started_at", Text),
            ("completed_at", Text),
            ("duration_ms", Int),
            ("created_at", Text),
            ("created_seq", Seq),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_budget_raises",
        columns: &[
            ("run_id", Text),
            ("node_id", Text),
            ("add_usd", Real),
            ("add_tokens", Int),
            ("raised_at", Text),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_ralph",
        columns: &[
            ("run_id", Text),
            ("loop_id", Text),
            ("iteration", Int),
            ("pass_start", Int),
            ("parent_iteration", Int),
            ("done", Bool),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_approvals",
        columns: &[
            ("run_id", Text),
            ("node_id", Text),
            ("iteration", Int),
            ("status", Text),
            ("requested_at", Text),
            ("decided_at", Text),
            ("note", Text),
        ],
        order: "rowid",
        on_conflict: "",
    },
    Table {
        name: "_smithers_steps",
        columns: &[
            ("run_id", Text),
            ("step_id", Int),
            ("parent_step_id", Int),
            ("active", Bool),
            ("source", Text),
            ("name", Text),
            ("phase_id", Int),
            ("phase", Text),
            ("iteration", Int),
            ("status", Text),
            ("task_ids", Json),
            ("started_at", Text),
            ("completed_at", Text),
            ("duration_ms", Int),
            ("created_at", Text),
            ("created_seq", Seq),
            ("started_seq", Seq),
            ("vcs_repo", Text),
            ("vcs_backend", Text),
            ("snapshot_before", Text),
            ("snapshot_after", Text),
            ("head_before", Text),
            ("commit_created", Text),
            ("agent_config_json", Json),
            ("token_usage_json", Json),
            ("exit_code", Int),
        ],
        order: "rowid",
        on_conflict: "",
    },
    // Cached outputs are shared by runs: an entry the target has is kept.
    Table {
        name: "_smithers_cache",
        columns: &[
            ("cache_key", Text),
            ("workflow", Text),
            ("node_id", Text),
            ("output_table", Text),
            ("output_json", Json),
            ("run_id", Text),
            ("created_at", Text),
        ],
        order: "rowid",
        on_conflict: "ON CONFLICT (cache_key) DO NOTHING",
    },
    // How often workers restarted each run: supervision goes on where the runs go.
    Table {
        name: "_smithers_restarts",
        columns: &[
            ("run_id", Text),
            ("restarts", Int),
            ("progress", Int),
            ("last_restart_at", Text),
            ("last_restart_ms", Int),
            ("last_reason", Text),
            ("last_worker", Text),
        ],
        order: "rowid",
        on_conflict: "",
    },
    // The key-value table is the database's: the source's value of a key wins.
    Table {
        name: "state",
        columns: &[("key", Text), ("value", Text), ("updated_at", Text)],
        order: "rowid",
        on_conflict: "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
    },
];

/// Tables of the source that hold nothing to copy.
const SKIPPED: &[&str] = &[
    "_smithers_migrations",
    // Live processes of the source's machine: they heartbeat into the source, not the copy.
    "_smithers_workers",
    "_smithers_output_tables",
    "sqlite_sequence",
];

/// What a copy moved: rows per table, in copy order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// `(table, rows)`.
    pub tables: Vec<(String, u64)>,
}

impl CopyReport {
    /// Rows copied into `table`.
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// An output table of the source: its registry row and its rows.
struct OutputTable {
    name: String,
    type_name: String,
    signature: String,
    created_at: String,
    columns: Vec<StoredColumn>,
    rows: Vec<Vec<SqlValue>>,
}

/// Everything read from the source.
struct Source {
    internal: Vec<(&'static Table, Vec<Vec<SqlValue>>)>,
    outputs: Vec<OutputTable>,
}

fn read_source(path: &Path) -> Result<Source> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::OpenDb {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let select = |table: &str, columns: &[String], order: &str| -> Result<Vec<Vec<SqlValue>>> {
        let cols: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {order}",
            cols.join(", "),
            quote(table)
        );
        let mut st = c.prepare(&sql)?;
        let rows = st.query_map([], |r| {
            (0..columns.len())
                .map(|i| r.get::<_, SqlValue>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    };
    let mut outputs = Vec::new();
    for row in select(
        "_smithers_output_tables",
        &[
            "table_name",
            "type_name",
            "signature",
            "created_at",
            "columns_json",
        ]
        .map(String::from),
        "rowid",
    )? {
        let text = |v: &SqlValue| match v {
            SqlValue::Text(s) => s.clone(),
            _ => String::new(),
        };
        let columns: Vec<StoredColumn> =
            crate::store::stored_json("_smithers_output_tables", "columns_json", &text(&row[4]))?;
        let name = text(&row[0]);
        check_output_names_of(&name, &columns)?;
        let mut names = vec!["run_id".to_owned(), "node_id".into(), "iteration".into()];
        names.extend(columns.iter().map(|c| c.name.clone()));
        let rows = select(&name, &names, "rowid")?;
        outputs.push(OutputTable {
            name,
            type_name: text(&row[1]),
            signature: text(&row[2]),
            created_at: text(&row[3]),
            columns,
            rows,
        });
    }
    let present: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if let Some(unknown) = present.iter().find(|t| {
        !SKIPPED.contains(&t.as_str())
            && !TABLES.iter().any(|k| k.name == t.as_str())
            && !outputs.iter().any(|o| &o.name == *t)
    }) {
        return Err(Error::Copy(format!(
            "`{}` has a table `{unknown}` this smithers does not know how to copy; use the smithers that wrote it (nothing was copied)",
            path.display()
        )));
    }
    let mut internal = Vec::new();
    for t in TABLES {
        let names: Vec<String> = t.columns.iter().map(|(n, _)| (*n).to_owned()).collect();
        internal.push((t, select(t.name, &names, t.order)?));
    }
    Ok(Source { internal, outputs })
}

/// The names of a recorded output table, checked before they are quoted into SQL.
fn check_output_names_of(table: &str, columns: &[StoredColumn]) -> Result<()> {
    check_ident(table)?;
    if crate::store::sqlite::is_reserved(table) {
        return Err(Error::ReservedTable(table.to_owned()));
    }
    columns.iter().try_for_each(|c| check_ident(&c.name))
}

/// The value `v` of `table.column` (of kind `kind`) as a parameter; the text of a JSON column
/// that does not parse is a damaged source row, never copied as something else.
fn to_param(table: &str, column: &str, kind: Kind, v: &SqlValue, shift: i64) -> Result<Param> {
    Ok(match (kind, v) {
        (Seq, SqlValue::Integer(i)) => Box::new(Some(*i + shift)),
        (Seq, _) => Box::new(None::<i64>),
        (Text, SqlValue::Null) => Box::new(None::<String>),
        (Int, SqlValue::Null) => Box::new(None::<i64>),
        (Real, SqlValue::Null) => Box::new(None::<f64>),
        (Bool, SqlValue::Null) => Box::new(None::<bool>),
        (Json, SqlValue::Null) => Box::new(None::<Value>),
        (Text, SqlValue::Text(s)) => Box::new(Some(s.clone())),
        (Text, SqlValue::Integer(i)) => Box::new(Some(i.to_string())),
        (Text, SqlValue::Real(f)) => Box::new(Some(f.to_string())),
        (Int, SqlValue::Integer(i)) => Box::new(Some(*i)),
        (Int, SqlValue::Real(f)) => Box::new(Some(*f as i64)),
        (Real, SqlValue::Real(f)) => Box::new(Some(*f)),
        (Real, SqlValue::Integer(i)) => Box::new(Some(*i as f64)),
        (Bool, SqlValue::Integer(i)) => Box::new(Some(*i != 0)),
        (Json, SqlValue::Text(s)) => Box::new(Some(crate::store::stored_json::<Value>(
            table.to_owned(),
            column.to_owned(),
            s,
        )?)),
        (Json, SqlValue::Integer(i)) => Box::new(Some(Value::from(*i))),
        (Json, SqlValue::Real(f)) => Box::new(Some(Value::from(*f))),
        (kind, other) => match kind {
            // A value of another type than the column's (SQLite allows it): kept as text.
            Text | Json => Box::new(Some(format!("{other:?}"))),
            Int | Bool | Seq => Box::new(None::<i64>),
            Real => Box::new(None::<f64>),
        },
    })
}

/// How a recorded output column is copied; a kind no smithers writes is a damaged record.
fn kind_of(column: &StoredColumn) -> Result<Kind> {
    let kind = crate::store::stored_name("_smithers_output_tables", "columns_json", &column.kind)?;
    Ok(match kind {
        ColumnKind::Integer => Int,
        ColumnKind::Bool => Bool,
        ColumnKind::Real => Real,
        ColumnKind::Text => Text,
        ColumnKind::Json => Json,
    })
}

/// Queues the INSERTs of `rows` into `table`.
async fn insert_rows(
    p: &mut Pipeline<'_, '_>,
    table: &str,
    columns: &[(String, Kind)],
    on_conflict: &str,
    rows: &[Vec<SqlValue>],
    shift: i64,
) -> Result<()> {
    let names: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    // Identity columns given by the source (event sequence numbers) are written as they are.
    let overriding = if columns.iter().any(|(n, k)| n == "seq" && matches!(k, Seq))
        && table == "_smithers_events"
    {
        "OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {} ({}) {overriding} VALUES ({}) {on_conflict}",
        quote(table),
        names.join(", "),
        marks.join(", ")
    );
    for row in rows {
        let params = columns
            .iter()
            .zip(row)
            .map(|((n, k), v)| to_param(table, n, *k, v, shift))
            .collect::<Result<_>>()?;
        p.push(&sql, params).await?;
    }
    Ok(())
}

async fn write_target(tx: &Transaction<'_>, target: &str, source: &Source) -> Result<CopyReport> {
    let run_ids: Vec<String> = source
        .internal
        .iter()
        .find(|(t, _)| t.name == "_smithers_runs")
        .map(|(_, rows)| {
            rows.iter()
                .filter_map(|r| match r.first() {
                    Some(SqlValue::Text(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let clashes: Vec<String> = tx
        .query(
            "SELECT run_id FROM _smithers_runs WHERE run_id = ANY($1) ORDER BY run_id",
            &[&run_ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !clashes.is_empty() {
        return Err(Error::Copy(format!(
            "{target} already has run(s) {}; nothing was copied (copy into an empty database, or delete those runs there first)",
            clashes.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut report = CopyReport::default();
    for o in &source.outputs {
        let existing = tx
            .query_opt(
                "SELECT signature FROM _smithers_output_tables WHERE table_name = $1",
                &[&o.name],
            )
            .await?;
        match existing {
            Some(row) if row.get::<_, String>(0) != o.signature => {
                return Err(Error::SchemaChanged {
                    table: o.name.clone(),
                    type_name: o.type_name.clone(),
                    detail: format!(
                        "{target} holds it with other columns than the source; nothing was copied"
                    ),
                })
            }
            Some(_) => {}
            None => {
                create_output_table(tx, &o.name, &o.columns).await?;
                tx.execute(
                    "INSERT INTO _smithers_output_tables (table_name, type_name, columns_json, signature, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&o.name, &o.type_name, &serde_json::to_value(&o.columns)?, &o.signature, &o.created_at],
                )
                .await?;
            }
        }
    }
    // Event positions are shifted past the target's events; nobody appends meanwhile.
    tx.batch_execute("LOCK TABLE _smithers_events IN EXCLUSIVE MODE")
        .await?;
    let shift: i64 = tx
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM _smithers_events", &[])
        .await?
        .get(0);
    let mut p = Pipeline::new(tx);
    for (t, rows) in &source.internal {
        let columns: Vec<(String, Kind)> = t
            .columns
            .iter()
            .map(|(n, k)| ((*n).to_owned(), *k))
            .collect();
        insert_rows(&mut p, t.name, &columns, t.on_conflict, rows, shift).await?;
        report.tables.push((t.name.to_owned(), rows.len() as u64));
    }
    for o in &source.outputs {
        let mut columns = vec![
            ("run_id".to_owned(), Text),
            ("node_id".to_owned(), Text),
            ("iteration".to_owned(), Int),
        ];
        for c in &o.columns {
            columns.push((c.name.clone(), kind_of(c)?));
        }
        insert_rows(&mut p, &o.name, &columns, "", &o.rows, shift).await?;
        report.tables.push((o.name.clone(), o.rows.len() as u64));
    }
    p.run().await?;
    tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('_smithers_events', 'seq'),
                       GREATEST((SELECT MAX(seq) FROM _smithers_events), 1))",
    )
    .await?;
    Ok(report)
}

impl PostgresStore {
    /// Copies the whole SQLite database at `path` (migrated first, as any smithers command does)
    /// into this database, in one transaction: all of it or, on any error, nothing. Refuses a
    /// run id this database already has, naming it.
    pub async fn copy_from_sqlite(&self, path: &Path) -> Result<CopyReport> {
        if !path.is_file() {
            return Err(Error::OpenDb {
                path: path.to_owned(),
                message: "no such file; pass the path of a smithers SQLite database".into(),
            });
        }
        drop(SqliteStore::open(path, Durability::Full)?);
        let owned = path.to_owned();
        let source = tokio::task::spawn_blocking(move || read_source(&owned))
            .await
            .map_err(|e| Error::Copy(format!("reading the SQLite database failed: {e}")))??;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let report = write_target(&tx, &self.target, &source).await?;
        tx.commit().await?;
        Ok(report)
    }
}
