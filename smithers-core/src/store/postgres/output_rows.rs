//! Output tables on PostgreSQL: one typed column per field (BIGINT, BOOLEAN, DOUBLE PRECISION,
//! TEXT, JSONB), created on first use under an advisory lock, registered in
//! `_smithers_output_tables` like on SQLite, read back to JSON with the recorded kinds.

use deadpool_postgres::{GenericClient, Object, Transaction};
use serde_json::Value;
use tokio_postgres::Row;

use super::writes::Param;
use crate::error::{Error, Result};
use crate::model::Timestamp;
use crate::output::{Column, ColumnKind, OutputInfo};
use crate::store::sqlite::{added_columns, check_output_names, quote, StoredColumn};
use crate::store::NodeRecord;

fn pg_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Integer => "BIGINT",
        ColumnKind::Bool => "BOOLEAN",
        ColumnKind::Real => "DOUBLE PRECISION",
        ColumnKind::Text => "TEXT",
        ColumnKind::Json => "JSONB",
    }
}

/// Creates or extends `info`'s table; a new table's row in `_smithers_output_tables` is stamped
/// `now`.
pub(super) async fn ensure_output_table(
    client: &mut Object,
    info: &OutputInfo,
    now: Timestamp,
) -> Result<()> {
    check_output_names(info)?;
    let signature = info.signature();
    let tx = client.transaction().await?;
    // Two processes creating the same table would race on the catalog: one at a time.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("smithers.output_table.{}", info.table)],
    )
    .await?;
    let stored = tx
        .query_opt(
            "SELECT signature, columns_json FROM _smithers_output_tables WHERE table_name = $1",
            &[&info.table],
        )
        .await?;
    let columns = serde_json::to_value(StoredColumn::of(info))?;
    match stored {
        Some(row) if row.get::<_, String>(0) == signature => return Ok(()),
        Some(row) => {
            let old: Vec<StoredColumn> =
                super::json_at(&row, 1, "_smithers_output_tables", "columns_json")?;
            for n in added_columns(info, &old)? {
                // Earlier rows have no value for an added field: the column is nullable.
                tx.batch_execute(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    quote(info.table),
                    quote(n.name),
                    pg_type(n.kind)
                ))
                .await?;
            }
            tx.execute(
                "UPDATE _smithers_output_tables SET type_name = $2, columns_json = $3, signature = $4
                 WHERE table_name = $1",
                &[&info.table, &info.type_name, &columns, &signature],
            )
            .await?;
        }
        None => {
            create_output_table(&tx, info.table, &StoredColumn::of(info)).await?;
            tx.execute(
                "INSERT INTO _smithers_output_tables (table_name, type_name, columns_json, signature, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&info.table, &info.type_name, &columns, &signature, &now.to_string()],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Creates the output table `name` with `columns` (checked identifiers) inside `tx`.
pub(super) async fn create_output_table(
    tx: &Transaction<'_>,
    name: &str,
    columns: &[StoredColumn],
) -> Result<()> {
    let mut ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} (run_id TEXT NOT NULL, node_id TEXT NOT NULL, iteration BIGINT NOT NULL",
        quote(name)
    );
    for col in columns {
        let kind = crate::store::stored_name("_smithers_output_tables", "columns_json", &col.kind)?;
        ddl.push_str(&format!(
            ", {} {}{}",
            quote(&col.name),
            pg_type(kind),
            if col.nullable { "" } else { " NOT NULL" }
        ));
    }
    ddl.push_str(", PRIMARY KEY (run_id, node_id, iteration))");
    tx.batch_execute(&ddl).await?;
    Ok(())
}

/// A typed parameter for `col`, NULL of the column's type when absent.
fn to_param(col: &Column, v: Option<&Value>) -> std::result::Result<Param, String> {
    let v = v.filter(|v| !v.is_null());
    Ok(match col.kind {
        ColumnKind::Integer => Box::new(match v {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                format!(
                    "field `{}` = {v} does not fit a 64-bit signed integer column",
                    col.name
                )
            })?),
        }),
        ColumnKind::Bool => Box::new(match v {
            None => None,
            Some(v) => Some(
                v.as_bool()
                    .ok_or_else(|| format!("field `{}` is not a bool", col.name))?,
            ),
        }),
        ColumnKind::Real => Box::new(match v {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| format!("field `{}` is not a number", col.name))?,
            ),
        }),
        ColumnKind::Text => Box::new(v.map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        ColumnKind::Json => Box::new(v.cloned()),
    })
}

/// The INSERT of one output row and its parameters.
pub(super) fn insert_output(
    info: &OutputInfo,
    run_id: &str,
    node_id: &str,
    iteration: u32,
    value: &Value,
) -> Result<(String, Vec<Param>)> {
    check_output_names(info)?;
    let mut names = String::from("run_id, node_id, iteration");
    let mut marks = String::from("$1, $2, $3");
    for (i, col) in info.columns.iter().enumerate() {
        names.push_str(", ");
        names.push_str(&quote(col.name));
        marks.push_str(&format!(", ${}", i + 4));
    }
    let sql = format!(
        "INSERT INTO {} ({names}) VALUES ({marks})",
        quote(info.table)
    );
    let mut params: Vec<Param> = vec![
        Box::new(run_id.to_owned()),
        Box::new(node_id.to_owned()),
        Box::new(i64::from(iteration)),
    ];
    for col in info.columns {
        params.push(
            to_param(col, value.get(col.name)).map_err(|m| Error::OutputType {
                node: node_id.into(),
                iteration,
                type_name: info.short_name().into(),
                message: m,
            })?,
        );
    }
    Ok((sql, params))
}

fn from_row(kind: ColumnKind, r: &Row, i: usize) -> Result<Value> {
    Ok(match kind {
        ColumnKind::Integer => r
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::from),
        ColumnKind::Bool => r
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::Bool),
        ColumnKind::Real => r
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::from),
        ColumnKind::Text => r
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::String),
        ColumnKind::Json => r.try_get::<_, Option<Value>>(i)?.unwrap_or(Value::Null),
    })
}

/// Reads every output row of `run_id` in `table` back to JSON, using the column kinds recorded
/// in the registry (not the current Rust type, which a resume may have changed).
pub(super) async fn read_outputs(
    client: &impl GenericClient,
    table: &str,
    run_id: &str,
    nodes: &[NodeRecord],
    out: &mut Vec<(String, u32, Value)>,
) -> Result<()> {
    crate::store::sqlite::check_ident(table)?;
    let Some(row) = client
        .query_opt(
            "SELECT columns_json FROM _smithers_output_tables WHERE table_name = $1",
            &[&table],
        )
        .await?
    else {
        return Ok(());
    };
    let stored: Vec<StoredColumn> =
        super::json_at(&row, 0, "_smithers_output_tables", "columns_json")?;
    let cols = StoredColumn::kinds(&stored)?;
    let mut select = String::from("SELECT node_id, iteration");
    for (name, _) in &cols {
        crate::store::sqlite::check_ident(name)?;
        select.push_str(", ");
        select.push_str(&quote(name));
    }
    select.push_str(&format!(" FROM {} WHERE run_id = $1", quote(table)));
    let finished: std::collections::HashSet<(&str, u32), crate::model::FastHash> = nodes
        .iter()
        .filter(|n| n.output_table.as_deref() == Some(table))
        .map(|n| (n.node_id.as_str(), n.iteration))
        .collect();
    for r in client.query(&select, &[&run_id]).await? {
        let node_id: String = r.get(0);
        let iteration = r.get::<_, i64>(1) as u32;
        if !finished.contains(&(node_id.as_str(), iteration)) {
            continue;
        }
        let mut obj = serde_json::Map::new();
        for (i, (name, kind)) in cols.iter().enumerate() {
            obj.insert(name.clone(), from_row(*kind, &r, i + 2)?);
        }
        out.push((node_id, iteration, Value::Object(obj)));
    }
    Ok(())
}
