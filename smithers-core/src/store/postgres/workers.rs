//! The SQL of supervision on PostgreSQL: active runs, the worker registry (`_smithers_workers`)
//! and runs' restart bookkeeping (`_smithers_restarts`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{json_at, run_from_row, time_at, RUN_COLUMNS};
use crate::error::Result;
use crate::store::{RestartRecord, RunRecord, WorkerRecord};

pub(super) async fn active_runs(c: &impl GenericClient) -> Result<Vec<RunRecord>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM _smithers_runs WHERE status IN ('running', 'queued')
             ORDER BY created_at, seq"
        ))
        .await?;
    c.query(&st, &[]).await?.iter().map(run_from_row).collect()
}

pub(super) async fn put_worker(c: &impl GenericClient, w: &WorkerRecord) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO _smithers_workers
               (worker_id, host, pid, workflow, concurrency, driving_json, started_at, heartbeat_at, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (worker_id) DO UPDATE SET workflow = EXCLUDED.workflow,
               concurrency = EXCLUDED.concurrency, driving_json = EXCLUDED.driving_json,
               heartbeat_at = EXCLUDED.heartbeat_at, expires_ms = EXCLUDED.expires_ms",
        )
        .await?;
    let driving = serde_json::to_value(&w.driving)?;
    let (started_at, heartbeat_at) = (w.started_at.to_string(), w.heartbeat_at.to_string());
    c.execute(
        &st,
        &[
            &w.worker_id,
            &w.host,
            &w.pid,
            &w.workflow,
            &w.concurrency,
            &driving,
            &started_at,
            &heartbeat_at,
            &w.expires_ms,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn remove_worker(c: &impl GenericClient, worker_id: &str) -> Result<()> {
    c.execute(
        "DELETE FROM _smithers_workers WHERE worker_id = $1",
        &[&worker_id],
    )
    .await?;
    Ok(())
}

fn worker_from_row(r: &Row) -> Result<WorkerRecord> {
    Ok(WorkerRecord {
        worker_id: r.get(0),
        host: r.get(1),
        pid: r.get(2),
        workflow: r.get(3),
        concurrency: r.get(4),
        driving: json_at(r, 5, "_smithers_workers", "driving")?,
        started_at: time_at(r, 6, "_smithers_workers", "started_at")?,
        heartbeat_at: time_at(r, 7, "_smithers_workers", "heartbeat_at")?,
        expires_ms: r.get(8),
    })
}

pub(super) async fn workers(c: &impl GenericClient) -> Result<Vec<WorkerRecord>> {
    let st = c
        .prepare_cached(
            "SELECT worker_id, host, pid, workflow, concurrency, driving_json, started_at, heartbeat_at, expires_ms
             FROM _smithers_workers ORDER BY started_at, worker_id",
        )
        .await?;
    c.query(&st, &[])
        .await?
        .iter()
        .map(worker_from_row)
        .collect()
}

pub(super) async fn restarts(
    c: &impl GenericClient,
    run_id: &str,
) -> Result<Option<RestartRecord>> {
    let st = c
        .prepare_cached(
            "SELECT run_id, restarts, progress, last_restart_at, last_restart_ms, last_reason, last_worker
             FROM _smithers_restarts WHERE run_id = $1",
        )
        .await?;
    c.query_opt(&st, &[&run_id])
        .await?
        .map(|r| {
            Ok(RestartRecord {
                run_id: r.get(0),
                restarts: r.get::<_, i64>(1) as u32,
                progress: r.get::<_, i64>(2) as u32,
                last_restart_at: time_at(&r, 3, "_smithers_restarts", "last_restart_at")?,
                last_restart_ms: r.get(4),
                last_reason: r.get(5),
                last_worker: r.get(6),
            })
        })
        .transpose()
}

pub(super) async fn put_restarts(c: &impl GenericClient, r: &RestartRecord) -> Result<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO _smithers_restarts
               (run_id, restarts, progress, last_restart_at, last_restart_ms, last_reason, last_worker)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (run_id) DO UPDATE SET restarts = EXCLUDED.restarts, progress = EXCLUDED.progress,
               last_restart_at = EXCLUDED.last_restart_at, last_restart_ms = EXCLUDED.last_restart_ms,
               last_reason = EXCLUDED.last_reason, last_worker = EXCLUDED.last_worker",
        )
        .await?;
    c.execute(
        &st,
        &[
            &r.run_id,
            &i64::from(r.restarts),
            &i64::from(r.progress),
            &r.last_restart_at.to_string(),
            &r.last_restart_ms,
            &r.last_reason,
            &r.last_worker,
        ],
    )
    .await?;
    Ok(())
}
