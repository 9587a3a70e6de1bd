//! The SQL of supervision on SQLite: active runs, the worker registry (`_smithers_workers`) and
//! runs' restart bookkeeping (`_smithers_restarts`).

use rusqlite::{params, Connection, OptionalExtension};

use super::{json_at, run_from_row, time_at, RUN_COLUMNS};
use crate::error::Result;
use crate::store::{RestartRecord, RunRecord, WorkerRecord};

pub(super) fn active_runs(c: &Connection) -> Result<Vec<RunRecord>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM _smithers_runs WHERE status IN ('running', 'queued')
         ORDER BY created_at, rowid"
    ))?;
    let rows = st
        .query_map([], run_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(super) fn put_worker(c: &Connection, w: &WorkerRecord) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO _smithers_workers
           (worker_id, host, pid, workflow, concurrency, driving_json, started_at, heartbeat_at, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (worker_id) DO UPDATE SET workflow = excluded.workflow,
           concurrency = excluded.concurrency, driving_json = excluded.driving_json,
           heartbeat_at = excluded.heartbeat_at, expires_ms = excluded.expires_ms",
    )?
    .execute(params![
        w.worker_id,
        w.host,
        w.pid,
        w.workflow,
        w.concurrency,
        serde_json::to_string(&w.driving)?,
        w.started_at.to_string(),
        w.heartbeat_at.to_string(),
        w.expires_ms
    ])?;
    Ok(())
}

pub(super) fn remove_worker(c: &Connection, worker_id: &str) -> Result<()> {
    c.prepare_cached("DELETE FROM _smithers_workers WHERE worker_id = ?1")?
        .execute([worker_id])?;
    Ok(())
}

pub(super) fn workers(c: &Connection) -> Result<Vec<WorkerRecord>> {
    let mut st = c.prepare_cached(
        "SELECT worker_id, host, pid, workflow, concurrency, driving_json, started_at, heartbeat_at, expires_ms
         FROM _smithers_workers ORDER BY started_at, rowid",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(WorkerRecord {
                worker_id: r.get(0)?,
                host: r.get(1)?,
                pid: r.get(2)?,
                workflow: r.get(3)?,
                concurrency: r.get(4)?,
                driving: json_at(r, 5, "_smithers_workers", "driving")?,
                started_at: time_at(r, 6, "_smithers_workers", "started_at")?,
                heartbeat_at: time_at(r, 7, "_smithers_workers", "heartbeat_at")?,
                expires_ms: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(super) fn restarts(c: &Connection, run_id: &str) -> Result<Option<RestartRecord>> {
    Ok(c
        .prepare_cached(
            "SELECT run_id, restarts, progress, last_restart_at, last_restart_ms, last_reason, last_worker
             FROM _smithers_restarts WHERE run_id = ?1",
        )?
        .query_row([run_id], |r| {
            Ok(RestartRecord {
                run_id: r.get(0)?,
                restarts: r.get(1)?,
                progress: r.get(2)?,
                last_restart_at: time_at(r, 3, "_smithers_restarts", "last_restart_at")?,
                last_restart_ms: r.get(4)?,
                last_reason: r.get(5)?,
                last_worker: r.get(6)?,
            })
        })
        .optional()?)
}

pub(super) fn put_restarts(c: &Connection, r: &RestartRecord) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO _smithers_restarts
           (run_id, restarts, progress, last_restart_at, last_restart_ms, last_reason, last_worker)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (run_id) DO UPDATE SET restarts = excluded.restarts, progress = excluded.progress,
           last_restart_at = excluded.last_restart_at, last_restart_ms = excluded.last_restart_ms,
           last_reason = excluded.last_reason, last_worker = excluded.last_worker",
    )?
    .execute(params![
        r.run_id,
        r.restarts,
        r.progress,
        r.last_restart_at.to_string(),
        r.last_restart_ms,
        r.last_reason,
        r.last_worker
    ])?;
    Ok(())
}
