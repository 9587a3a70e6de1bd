//! Output tables: created on first use, checked against the type on every run, one row per
//! `(run_id, node_id, iteration)` with a typed column per field.

use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::Timestamp;
use crate::output::{Column, ColumnKind, OutputInfo};
use crate::store::NodeRecord;

/// Validates an identifier before it is quoted into SQL.
pub(crate) fn check_ident(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidIdentifier(name.to_owned()))
    }
}

/// Whether `table` is smithers' (`_smithers_*`, `state`) or SQLite's (`sqlite_*`). SQLite
/// compares identifiers case-insensitively, so this does too: `_SMITHERS_EVENTS` is
/// `_smithers_events`.
pub(crate) fn is_reserved(table: &str) -> bool {
    let t = table.to_ascii_lowercase();
    t.starts_with("_smithers_") || t.starts_with("sqlite_") || t == "state"
}

/// Quotes a name checked by [`check_ident`].
pub(crate) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// A column as recorded in `_smithers_output_tables.columns_json` (every backend).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredColumn {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) nullable: bool,
    pub(crate) rust_type: String,
}

impl StoredColumn {
    /// The name and kind of each of `stored` (as read from `columns_json`); a kind no smithers
    /// writes is a damaged record.
    pub(crate) fn kinds(stored: &[StoredColumn]) -> Result<Vec<(String, ColumnKind)>> {
        stored
            .iter()
            .map(|s| {
                let kind =
                    crate::store::stored_name("_smithers_output_tables", "columns_json", &s.kind)?;
                Ok((s.name.clone(), kind))
            })
            .collect()
    }

    /// The recorded columns of `info`.
    pub(crate) fn of(info: &OutputInfo) -> Vec<StoredColumn> {
        info.columns
            .iter()
            .map(|c| StoredColumn {
                name: c.name.into(),
                kind: c.kind.as_str().into(),
                nullable: c.nullable,
                rust_type: c.rust_type.into(),
            })
            .collect()
    }
}

fn describe(kind: &str, rust_type: &str) -> String {
    format!("`{rust_type}` ({kind})")
}

/// Checks the table and column names of `info` before they are quoted into SQL (every backend).
pub(crate) fn check_output_names(info: &OutputInfo) -> Result<()> {
    check_ident(info.table)?;
    if is_reserved(info.table) {
        return Err(Error::ReservedTable(info.table.to_owned()));
    }
    for col in info.columns {
        check_ident(col.name)?;
    }
    Ok(())
}

/// The columns of `info` that a table recorded with `old` lacks, or a [`Error::SchemaChanged`]
/// naming the field when one was removed or retyped (every backend).
pub(crate) fn added_columns(
    info: &OutputInfo,
    old: &[StoredColumn],
) -> Result<Vec<&'static Column>> {
    let columns = StoredColumn::of(info);
    let schema_err = |detail: String| Error::SchemaChanged {
        table: info.table.into(),
        type_name: info.short_name().into(),
        detail,
    };
    for o in old {
        match columns.iter().find(|n| n.name == o.name) {
            None => {
                return Err(schema_err(format!(
                    "field `{}` of type {} was removed, but earlier rows hold it",
                    o.name,
                    describe(&o.kind, &o.rust_type)
                )))
            }
            Some(n) if n.kind != o.kind || (n.nullable != o.nullable && !n.nullable) => {
                return Err(schema_err(format!(
                    "field `{}` changed type from {} to {}",
                    o.name,
                    describe(&o.kind, &o.rust_type),
                    describe(&n.kind, &n.rust_type)
                )))
            }
            Some(_) => {}
        }
    }
    Ok(info
        .columns
        .iter()
        .filter(|n| !old.iter().any(|o| o.name == n.name))
        .collect())
}

pub(super) fn ensure_output_table(c: &Connection, info: &OutputInfo, now: Timestamp) -> Result<()> {
    check_output_names(info)?;
    let signature = info.signature();
    let stored: Option<(String, String)> = c
        .query_row(
            "SELECT signature, columns_json FROM _smithers_output_tables WHERE table_name = ?1",
            [info.table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let columns = StoredColumn::of(info);
    match stored {
        Some((sig, _)) if sig == signature => Ok(()),
        Some((_, old_json)) => {
            let old: Vec<StoredColumn> =
                crate::store::stored_json("_smithers_output_tables", "columns_json", &old_json)?;
            for n in added_columns(info, &old)? {
                // Earlier rows have no value for an added field: the column is nullable.
                c.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    quote(info.table),
                    quote(n.name),
                    n.kind.sql_type()
                ))?;
            }
            c.execute(
                "UPDATE _smithers_output_tables SET type_name = ?2, columns_json = ?3, signature = ?4 WHERE table_name = ?1",
                params![info.table, info.type_name, serde_json::to_string(&columns)?, signature],
            )?;
            Ok(())
        }
        None => {
            let mut ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} (run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration INTEGER NOT NULL",
                quote(info.table)
            );
            for col in info.columns {
                ddl.push_str(&format!(
                    ", {} {}{}",
                    quote(col.name),
                    col.kind.sql_type(),
                    if col.nullable { "" } else { " NOT NULL" }
                ));
            }
            ddl.push_str(", PRIMARY KEY (run_id, node_id, iteration))");
            c.execute_batch(&ddl)?;
            c.execute(
                "INSERT INTO _smithers_output_tables (table_name, type_name, columns_json, signature, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![info.table, info.type_name, serde_json::to_string(&columns)?, signature, now.to_string()],
            )?;
            Ok(())
        }
    }
}

fn to_sql(col: &Column, v: Option<&Value>) -> std::result::Result<SqlValue, String> {
    let v = match v {
        None | Some(Value::Null) => return Ok(SqlValue::Null),
        Some(v) => v,
    };
    Ok(match col.kind {
        ColumnKind::Integer => match v.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => {
                return Err(format!(
                    "field `{}` = {v} does not fit a 64-bit signed integer column",
                    col.name
                ))
            }
        },
        ColumnKind::Bool => SqlValue::Integer(i64::from(
            v.as_bool()
                .ok_or_else(|| format!("field `{}` is not a bool", col.name))?,
        )),
        ColumnKind::Real => SqlValue::Real(
            v.as_f64()
                .ok_or_else(|| format!("field `{}` is not a number", col.name))?,
        ),
        ColumnKind::Text => match v {
            Value::String(s) => SqlValue::Text(s.clone()),
            other => SqlValue::Text(other.to_string()),
        },
        ColumnKind::Json => SqlValue::Text(v.to_string()),
    })
}

/// A stored value of `col` (of output table `table`) as JSON; the text of a JSON column that
/// does not parse is a damaged row (every JSON value is written as its JSON text).
fn from_sql(table: &str, col: &str, kind: ColumnKind, v: SqlValue) -> Result<Value> {
    Ok(match (kind, v) {
        (_, SqlValue::Null) => Value::Null,
        (ColumnKind::Bool, SqlValue::Integer(i)) => Value::Bool(i != 0),
        (_, SqlValue::Integer(i)) => Value::from(i),
        (_, SqlValue::Real(f)) => Value::from(f),
        (ColumnKind::Json, SqlValue::Text(s)) => {
            crate::store::stored_json(table.to_owned(), col.to_owned(), &s)?
        }
        (_, SqlValue::Text(s)) => Value::String(s),
        (_, SqlValue::Blob(b)) => Value::String(String::from_utf8_lossy(&b).into_owned()),
    })
}

pub(super) fn insert_output(
    c: &Connection,
    info: &OutputInfo,
    run_id: &str,
    node_id: &str,
    iteration: u32,
    value: &Value,
) -> Result<()> {
    let mut names = String::from("run_id, node_id, iteration");
    let mut marks = String::from("?1, ?2, ?3");
    for (i, col) in info.columns.iter().enumerate() {
        names.push_str(", ");
        names.push_str(&quote(col.name));
        marks.push_str(&format!(", ?{}", i + 4));
    }
    let sql = format!(
        "INSERT INTO {} ({names}) VALUES ({marks})",
        quote(info.table)
    );
    let mut st = c.prepare_cached(&sql)?;
    let mut args: Vec<SqlValue> = vec![
        SqlValue::Text(run_id.into()),
        SqlValue::Text(node_id.into()),
        SqlValue::Integer(iteration.into()),
    ];
    for col in info.columns {
        args.push(
            to_sql(col, value.get(col.name)).map_err(|m| Error::OutputType {
                node: node_id.into(),
                iteration,
                type_name: info.short_name().into(),
                message: m,
            })?,
        );
    }
    let args: Vec<ToSqlOutput<'_>> = args.into_iter().map(ToSqlOutput::Owned).collect();
    st.execute(rusqlite::params_from_iter(args.iter()))?;
    Ok(())
}

/// Reads every output row of `run_id` in `table` back to JSON, using the column kinds recorded
/// in the registry (not the current Rust type, which a resume may have changed).
pub(super) fn read_outputs(
    c: &Connection,
    table: &str,
    run_id: &str,
    nodes: &[NodeRecord],
    out: &mut Vec<(String, u32, Value)>,
) -> Result<()> {
    check_ident(table)?;
    let cols_json: Option<String> = c
        .query_row(
            "SELECT columns_json FROM _smithers_output_tables WHERE table_name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?;
    let Some(cols_json) = cols_json else {
        return Ok(());
    };
    let stored: Vec<StoredColumn> =
        crate::store::stored_json("_smithers_output_tables", "columns_json", &cols_json)?;
    let cols = StoredColumn::kinds(&stored)?;
    let mut select = String::from("SELECT node_id, iteration");
    for (name, _) in &cols {
        check_ident(name)?;
        select.push_str(", ");
        select.push_str(&quote(name));
    }
    select.push_str(&format!(" FROM {} WHERE run_id = ?1", quote(table)));
    let mut st = c.prepare(&select)?;
    let mut rows = st.query([run_id])?;
    let finished: std::collections::HashSet<(&str, u32), crate::model::FastHash> = nodes
        .iter()
        .filter(|n| n.output_table.as_deref() == Some(table))
        .map(|n| (n.node_id.as_str(), n.iteration))
        .collect();
    while let Some(r) = rows.next()? {
        let node_id: String = r.get(0)?;
        let iteration: u32 = r.get(1)?;
        if !finished.contains(&(node_id.as_str(), iteration)) {
            continue;
        }
        let mut obj = serde_json::Map::new();
        for (i, (name, kind)) in cols.iter().enumerate() {
            let value = from_sql(table, name, *kind, r.get::<_, SqlValue>(i + 2)?)?;
            obj.insert(name.clone(), value);
        }
        out.push((node_id, iteration, Value::Object(obj)));
    }
    Ok(())
}
