//! Steps and phases on PostgreSQL, the twin of `sqlite/steps.rs`: the rows a render's
//! transitions write, the Steps API, and the time travel that cuts a run's history at a step or
//! frame (`rewind`) or copies it (`fork`).
//!
//! Positions in a run's history are event sequence numbers: a step records the run's highest
//! `seq` when it was created and when it started, loop counters keep a history tagged the same
//! way, and a rewind undoes every node that has an event after the cut. Everything here runs
//! inside the caller's transaction, after the run's lock (`writes::RUN_LOCK`), so a step's id,
//! its `seq` marks and the events around it are decided by one writer of the run at a time.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::{GenericClient, Transaction};
use serde_json::Value;
use tokio_postgres::Row;

use super::output_rows::read_outputs;
use super::writes::{Param, Pipeline, RUN_LOCK};
use super::{json_at, node_from_row, time_at, time_at_opt, u32_at};
use crate::error::{Error, Result};
use crate::model::{GroupKind, GroupStatus, Usage};
use crate::store::sqlite::{check_ident, quote};
use crate::store::{
    FenceToken, ForkRun, GroupUpdate, NodeRecord, PhaseRecord, RewindReport, RewindTo, StepKey,
    StepRecord, StepVcs,
};

macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$(Box::new($p) as Param),*] };
}

/// The run's highest event sequence number so far (`$1` is the run): where "now" is in its
/// history. Sequence numbers of one run grow in commit order (see `writes::RUN_LOCK`), so
/// every later event of the run is above it.
const MARK: &str = "(SELECT COALESCE(MAX(seq), 0) FROM _smithers_events WHERE run_id = $1)";

/// Milliseconds from `started` (a column, or NULL) to `$now` (RFC 3339 text), truncated like
/// SQLite's `CAST(... AS INTEGER)`.
fn duration_ms(now: &str, started: &str) -> String {
    format!(
        "TRUNC(EXTRACT(EPOCH FROM ({now}::TEXT::TIMESTAMPTZ - COALESCE({started}, {now}::TEXT)::TIMESTAMPTZ)) * 1000)::BIGINT"
    )
}

fn terminal(s: GroupStatus) -> bool {
    matches!(
        s,
        GroupStatus::Completed | GroupStatus::Failed | GroupStatus::Skipped
    )
}

/// Queues a render's phase or step transition on `p`. A step that ends has its attempts summed,
/// which reads what the batch wrote before it: the statements queued so far are sent first.
pub(super) async fn write_group(
    p: &mut Pipeline<'_, '_>,
    run_id: &str,
    g: &GroupUpdate,
    now: &str,
) -> Result<()> {
    let done = terminal(g.status);
    let started = !matches!(g.status, GroupStatus::Pending | GroupStatus::Skipped);
    match g.kind {
        GroupKind::Phase => {
            let sql = format!(
                "INSERT INTO _smithers_phases
                   (run_id, phase_id, name, iteration, status, started_at, completed_at, duration_ms, created_at, created_seq)
                 VALUES ($1, (SELECT COALESCE(MAX(phase_id), 0) + 1 FROM _smithers_phases WHERE run_id = $1),
                         $2, $3, $4, CASE WHEN $7::BOOLEAN THEN $5::TEXT END, CASE WHEN $6::BOOLEAN THEN $5::TEXT END,
                         CASE WHEN $6::BOOLEAN THEN 0 END, $5::TEXT, {MARK})
                 ON CONFLICT (run_id, name, iteration) WHERE active DO UPDATE SET
                   status = EXCLUDED.status,
                   started_at = COALESCE(_smithers_phases.started_at, EXCLUDED.started_at),
                   completed_at = CASE WHEN $6::BOOLEAN THEN $5::TEXT END,
                   duration_ms = CASE WHEN $6::BOOLEAN THEN {} END",
                duration_ms("$5", "_smithers_phases.started_at")
            );
            p.push(
                &sql,
                params![
                    run_id.to_owned(),
                    g.name.clone(),
                    i64::from(g.iteration),
                    g.status.as_str(),
                    now.to_owned(),
                    done,
                    started
                ],
            )
            .await?;
        }
        GroupKind::Step => {
            let sql = format!(
                "INSERT INTO _smithers_steps
                   (run_id, step_id, parent_step_id, name, phase_id, phase, iteration, status, task_ids,
                    started_at, completed_at, duration_ms, created_at, created_seq, started_seq, agent_config_json)
                 VALUES ($1, (SELECT COALESCE(MAX(step_id), 0) + 1 FROM _smithers_steps WHERE run_id = $1),
                         (SELECT MAX(step_id) FROM _smithers_steps WHERE run_id = $1 AND active),
                         $2, (SELECT MAX(phase_id) FROM _smithers_phases WHERE run_id = $1 AND name = $3 AND active),
                         $3, $4, $5, $6, CASE WHEN $9::BOOLEAN THEN $7::TEXT END,
                         CASE WHEN $8::BOOLEAN THEN $7::TEXT END, CASE WHEN $8::BOOLEAN THEN 0 END,
                         $7::TEXT, {MARK}, CASE WHEN $9::BOOLEAN THEN {MARK} END, $10)
                 ON CONFLICT (run_id, name, iteration) WHERE active AND source = 'tree' DO UPDATE SET
                   status = EXCLUDED.status, task_ids = EXCLUDED.task_ids,
                   agent_config_json = COALESCE(EXCLUDED.agent_config_json, _smithers_steps.agent_config_json),
                   started_at = COALESCE(_smithers_steps.started_at, EXCLUDED.started_at),
                   started_seq = COALESCE(_smithers_steps.started_seq, EXCLUDED.started_seq),
                   completed_at = CASE WHEN $8::BOOLEAN THEN $7::TEXT END,
                   duration_ms = CASE WHEN $8::BOOLEAN THEN {} END",
                duration_ms("$7", "_smithers_steps.started_at")
            );
            p.push(
                &sql,
                params![
                    run_id.to_owned(),
                    g.name.clone(),
                    g.phase.clone(),
                    i64::from(g.iteration),
                    g.status.as_str(),
                    serde_json::to_value(&g.tasks)?,
                    now.to_owned(),
                    done,
                    started,
                    g.agent_config.clone()
                ],
            )
            .await?;
            if done {
                p.flush().await?;
                let tx = p.tx();
                let id: i64 = tx
                    .query_one(
                        "SELECT step_id FROM _smithers_steps
                         WHERE run_id = $1 AND name = $2 AND iteration = $3 AND active AND source = 'tree'",
                        &[&run_id, &g.name, &i64::from(g.iteration)],
                    )
                    .await?
                    .get(0);
                sum_attempts(tx, run_id, id).await?;
            }
        }
    }
    Ok(())
}

/// Stores a step's token usage (summed over its tasks' attempts in its iteration, cost
/// included), the exit code of its last CLI attempt, and the models its attempts reported.
async fn sum_attempts(c: &impl GenericClient, run_id: &str, step_id: i64) -> Result<()> {
    let row = c
        .query_one(
            "SELECT task_ids, iteration, agent_config_json FROM _smithers_steps WHERE run_id = $1 AND step_id = $2",
            &[&run_id, &step_id],
        )
        .await?;
    let tasks: Vec<String> = json_at(&row, 0, "_smithers_steps", "task_ids")?;
    let iteration: i64 = row.get(1);
    let config: Option<Value> = row.get(2);
    let st = c
        .prepare_cached(
            "SELECT node_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                    exit_code, model
             FROM _smithers_attempts
             WHERE run_id = $1 AND iteration = $2 AND NOT rolled_back AND node_id = ANY($3)
             ORDER BY started_at, attempt",
        )
        .await?;
    let mut usage = Usage::default();
    let mut attempts = 0u32;
    let mut exit_code: Option<i64> = None;
    let mut models: HashMap<String, String> = HashMap::new();
    for r in c.query(&st, &[&run_id, &iteration, &tasks]).await? {
        attempts += 1;
        let get = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.max(0) as u64);
        usage.add(&Usage {
            input_tokens: get(1),
            output_tokens: get(2),
            cache_read_tokens: get(3),
            cache_write_tokens: get(4),
            cost_usd: r.get(5),
        });
        if let Some(code) = r.get::<_, Option<i64>>(6) {
            exit_code = Some(code);
        }
        if let Some(m) = r.get::<_, Option<String>>(7) {
            models.insert(r.get(0), m);
        }
    }
    let mut total = serde_json::to_value(&usage)?;
    total["attempts"] = attempts.into();
    let config = config.map(|mut v| {
        if let Some(list) = v.as_array_mut() {
            for a in list {
                let node = a["node_id"].as_str().unwrap_or_default().to_owned();
                if a["model"].is_null() {
                    if let Some(m) = models.get(&node) {
                        a["model"] = m.clone().into();
                    }
                }
            }
        }
        v
    });
    let st = c
        .prepare_cached(
            "UPDATE _smithers_steps SET token_usage_json = $3, exit_code = $4,
               agent_config_json = COALESCE($5, agent_config_json)
             WHERE run_id = $1 AND step_id = $2",
        )
        .await?;
    c.execute(&st, &[&run_id, &step_id, &total, &exit_code, &config])
        .await?;
    Ok(())
}

/// Queues a step's snapshots on `p`; a `HEAD` that moved between before and after is the
/// commit the step created.
pub(super) async fn write_step_vcs(
    p: &mut Pipeline<'_, '_>,
    run_id: &str,
    v: &StepVcs,
) -> Result<()> {
    let (before, head_before) = v.before.clone().unzip();
    let (after, head_after) = v.after.clone().unzip();
    let set = "UPDATE _smithers_steps SET vcs_repo = COALESCE(NULLIF($3::TEXT, ''), vcs_repo),
           vcs_backend = COALESCE(NULLIF($4::TEXT, ''), vcs_backend),
           snapshot_before = COALESCE($5::TEXT, snapshot_before),
           head_before = CASE WHEN $5::TEXT IS NOT NULL THEN $6::TEXT ELSE head_before END,
           snapshot_after = COALESCE($7::TEXT, snapshot_after),
           commit_created = COALESCE($9::TEXT,
             CASE WHEN $7::TEXT IS NOT NULL AND $8::TEXT IS NOT NULL
                   AND $8::TEXT IS DISTINCT FROM COALESCE($6::TEXT, head_before) THEN $8::TEXT END,
             commit_created)
         WHERE run_id = $1 AND ";
    let common = |key: Param| -> Vec<Param> {
        let mut ps: Vec<Param> = vec![Box::new(run_id.to_owned()), key];
        ps.extend(params![
            v.repo.clone(),
            v.backend.clone(),
            before.clone(),
            head_before.clone().flatten(),
            after.clone(),
            head_after.clone().flatten(),
            v.commit_created.clone()
        ]);
        ps
    };
    match &v.step {
        StepKey::Id(id) => {
            p.push(&format!("{set} step_id = $2"), common(Box::new(*id)))
                .await?
        }
        StepKey::Named { name, iteration } => {
            let mut ps = common(Box::new(name.clone()));
            ps.push(Box::new(i64::from(*iteration)));
            p.push(
                &format!("{set} name = $2 AND iteration = $10 AND active AND source = 'tree'"),
                ps,
            )
            .await?
        }
    }
    Ok(())
}

/// Ends a step started through the Steps API (the statements queued on `p` are sent first).
pub(super) async fn end_step(
    p: &mut Pipeline<'_, '_>,
    run_id: &str,
    step_id: i64,
    status: GroupStatus,
    now: &str,
) -> Result<()> {
    p.flush().await?;
    let tx = p.tx();
    let st = tx
        .prepare_cached(&format!(
            "UPDATE _smithers_steps SET status = $3, completed_at = $4::TEXT, duration_ms = {}
             WHERE run_id = $1 AND step_id = $2",
            duration_ms("$4", "started_at")
        ))
        .await?;
    let n = tx
        .execute(&st, &[&run_id, &step_id, &status.as_str(), &now])
        .await?;
    if n == 0 {
        return Err(no_step(run_id, step_id));
    }
    sum_attempts(tx, run_id, step_id).await
}

fn no_step(run_id: &str, step_id: i64) -> Error {
    Error::StepNotFound {
        run_id: run_id.to_owned(),
        step_id,
    }
}

/// Takes the run's lock (see `writes::RUN_LOCK`) inside `tx`.
async fn lock_run(tx: &Transaction<'_>, run_id: &str) -> Result<()> {
    let st = tx.prepare_cached(RUN_LOCK).await?;
    tx.execute(&st, &[&run_id]).await?;
    Ok(())
}

/// Starts a step through the Steps API, in the run's current (latest running) phase.
pub(super) async fn start_step(
    tx: &Transaction<'_>,
    run_id: &str,
    name: Option<&str>,
    now: &str,
) -> Result<i64> {
    if tx
        .query_opt("SELECT 1 FROM _smithers_runs WHERE run_id = $1", &[&run_id])
        .await?
        .is_none()
    {
        return Err(Error::RunNotFound(run_id.to_owned()));
    }
    lock_run(tx, run_id).await?;
    let phase = tx
        .query_opt(
            "SELECT phase_id, name FROM _smithers_phases
             WHERE run_id = $1 AND active AND status = 'running' ORDER BY phase_id DESC LIMIT 1",
            &[&run_id],
        )
        .await?
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
    let id: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(step_id), 0) + 1 FROM _smithers_steps WHERE run_id = $1",
            &[&run_id],
        )
        .await?
        .get(0);
    let name = name.map_or_else(|| format!("step-{id}"), str::to_owned);
    tx.execute(
        &format!(
            "INSERT INTO _smithers_steps
               (run_id, step_id, parent_step_id, source, name, phase_id, phase, iteration, status, task_ids,
                started_at, created_at, created_seq, started_seq)
             VALUES ($1, $2, (SELECT MAX(step_id) FROM _smithers_steps WHERE run_id = $1 AND active),
                     'api', $3, $4, $5, 0, 'running', '[]'::JSONB, $6, $6, {MARK}, {MARK})"
        ),
        &[
            &run_id,
            &id,
            &name,
            &phase.as_ref().map(|p| p.0),
            &phase.as_ref().map(|p| p.1.clone()),
            &now,
        ],
    )
    .await?;
    Ok(id)
}

const STEP_COLUMNS: &str = "run_id, step_id, parent_step_id, active, source, name, phase_id, phase,
    iteration, status, task_ids, started_at, completed_at, duration_ms, created_at, created_seq,
    started_seq, vcs_repo, vcs_backend, snapshot_before, snapshot_after, head_before, commit_created,
    agent_config_json, token_usage_json, exit_code";

fn step_from_row(r: &Row) -> Result<StepRecord> {
    Ok(StepRecord {
        run_id: r.get(0),
        step_id: r.get(1),
        parent_step_id: r.get(2),
        active: r.get(3),
        source: r.get(4),
        name: r.get(5),
        phase_id: r.get(6),
        phase: r.get(7),
        iteration: u32_at(r, 8),
        status: r.get(9),
        task_ids: json_at(r, 10, "_smithers_steps", "task_ids")?,
        started_at: time_at_opt(r, 11, "_smithers_steps", "started_at")?,
        completed_at: time_at_opt(r, 12, "_smithers_steps", "completed_at")?,
        duration_ms: r.get(13),
        created_at: time_at(r, 14, "_smithers_steps", "created_at")?,
        created_seq: r.get(15),
        started_seq: r.get(16),
        vcs_repo: r.get(17),
        vcs_backend: r.get(18),
        snapshot_before: r.get(19),
        snapshot_after: r.get(20),
        head_before: r.get(21),
        commit_created: r.get(22),
        agent_config_json: r.get(23),
        token_usage_json: r.get(24),
        exit_code: r.get::<_, Option<i64>>(25).map(|v| v as i32),
    })
}

/// The steps of a run, by id.
pub(super) async fn query_steps(c: &impl GenericClient, run_id: &str) -> Result<Vec<StepRecord>> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {STEP_COLUMNS} FROM _smithers_steps WHERE run_id = $1 ORDER BY step_id"
        ))
        .await?;
    c.query(&st, &[&run_id])
        .await?
        .iter()
        .map(step_from_row)
        .collect()
}

/// The phases of a run, by id.
pub(super) async fn query_phases(c: &impl GenericClient, run_id: &str) -> Result<Vec<PhaseRecord>> {
    let st = c
        .prepare_cached(
            "SELECT run_id, phase_id, name, iteration, status, active, started_at, completed_at, duration_ms, created_at
             FROM _smithers_phases WHERE run_id = $1 ORDER BY phase_id",
        )
        .await?;
    c.query(&st, &[&run_id])
        .await?
        .iter()
        .map(|r| {
            Ok(PhaseRecord {
                run_id: r.get(0),
                phase_id: r.get(1),
                name: r.get(2),
                iteration: u32_at(r, 3),
                status: r.get(4),
                active: r.get(5),
                started_at: time_at_opt(r, 6, "_smithers_phases", "started_at")?,
                completed_at: time_at_opt(r, 7, "_smithers_phases", "completed_at")?,
                duration_ms: r.get(8),
                created_at: time_at(r, 9, "_smithers_phases", "created_at")?,
            })
        })
        .collect()
}

/// The caller must hold the run's lease: its token is checked like a fenced batch's, except
/// that an unknown run is `RunNotFound`. Takes the run row's `FOR UPDATE` lock (a takeover or a
/// fenced batch of the run waits for the rewind), then the run's lock.
async fn check_fence(tx: &Transaction<'_>, run_id: &str, fence: &FenceToken) -> Result<()> {
    let Some(row) = tx
        .query_opt(
            "SELECT lease_owner, lease_epoch FROM _smithers_runs WHERE run_id = $1 FOR UPDATE",
            &[&run_id],
        )
        .await?
    else {
        return Err(Error::RunNotFound(run_id.to_owned()));
    };
    fence.check(run_id, Some((row.get::<_, Option<&str>>(0), row.get(1))))?;
    lock_run(tx, run_id).await
}

/// The event sequence number where `to` cuts the run's history, and the first step to
/// deactivate when cutting at a step.
async fn cut_of(tx: &Transaction<'_>, run_id: &str, to: &RewindTo) -> Result<(i64, Option<i64>)> {
    match to {
        RewindTo::Step(id) => {
            let row = tx
                .query_opt(
                    "SELECT name, active, started_seq FROM _smithers_steps WHERE run_id = $1 AND step_id = $2",
                    &[&run_id, id],
                )
                .await?;
            let Some(row) = row else {
                return Err(no_step(run_id, *id));
            };
            let (name, active, started): (String, bool, Option<i64>) =
                (row.get(0), row.get(1), row.get(2));
            if !active {
                return Err(Error::TimeTravelRefused(format!(
                    "step {id} (`{name}`) of run `{run_id}` was already rolled back (it is inactive); roll back to an active step, see `smithers steps {run_id}`"
                )));
            }
            let Some(seq) = started else {
                return Err(Error::TimeTravelRefused(format!(
                    "step {id} (`{name}`) of run `{run_id}` never started: there is nothing to roll back"
                )));
            };
            Ok((seq, Some(*id)))
        }
        RewindTo::Frame(f) => {
            let seq: Option<i64> = tx
                .query_one(
                    "SELECT MAX(seq) FROM _smithers_events WHERE run_id = $1 AND kind = 'frame_rendered'
                       AND payload->>'frame' = $2::BIGINT::TEXT",
                    &[&run_id, &i64::from(*f)],
                )
                .await?
                .get(0);
            match seq {
                Some(s) => Ok((s, None)),
                None => Err(Error::FrameNotFound {
                    run_id: run_id.to_owned(),
                    frame: *f,
                }),
            }
        }
    }
}

/// What [`cut`] does to what it cuts: keep it for audit, or drop it (a fork's copy).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    Audit,
    Drop,
}

/// Cuts a run's history at a step or frame (see `Store::rewind`), inside `tx`, after checking
/// `fence` (the run's lease).
pub(super) async fn rewind(
    tx: &Transaction<'_>,
    run_id: &str,
    to: &RewindTo,
    fence: &FenceToken,
    now: &str,
) -> Result<RewindReport> {
    check_fence(tx, run_id, fence).await?;
    let (seq, first_step) = cut_of(tx, run_id, to).await?;
    cut(tx, run_id, seq, first_step, now, Cut::Audit).await
}

async fn cut(
    tx: &Transaction<'_>,
    run_id: &str,
    seq: i64,
    first_step: Option<i64>,
    now: &str,
    how: Cut,
) -> Result<RewindReport> {
    // Nodes that moved after the cut.
    let mut reset: Vec<(String, u32)> = tx
        .query(
            "SELECT DISTINCT node_id, iteration FROM _smithers_events
             WHERE run_id = $1 AND seq > $2 AND node_id IS NOT NULL AND iteration IS NOT NULL",
            &[&run_id, &seq],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), u32_at(r, 1)))
        .collect();
    reset.sort();
    let ids: Vec<&str> = reset.iter().map(|(n, _)| n.as_str()).collect();
    let its: Vec<i64> = reset.iter().map(|(_, i)| i64::from(*i)).collect();
    // The reset nodes as a relation: `(node_id, iteration) IN (SELECT * FROM unnest($2, $3))`.
    const RESET: &str = "(node_id, iteration) IN (SELECT * FROM unnest($2::TEXT[], $3::BIGINT[]))";
    if !reset.is_empty() {
        let nodes: Vec<NodeRecord> = tx
            .query(
                &format!(
                    "SELECT node_id, iteration, status, attempts, output_table, loop_id, last_error
                     FROM _smithers_nodes WHERE run_id = $1 AND {RESET}"
                ),
                &[&run_id, &ids, &its],
            )
            .await?
            .iter()
            .map(node_from_row)
            .collect::<Result<_>>()?;
        let mut by_table: BTreeMap<String, Vec<NodeRecord>> = BTreeMap::new();
        for n in nodes {
            if let Some(t) = n.output_table.clone() {
                by_table.entry(t).or_default().push(n);
            }
        }
        for (table, nodes) in &by_table {
            check_ident(table)?;
            if how == Cut::Audit {
                let mut out = Vec::new();
                read_outputs(tx, table, run_id, nodes, &mut out).await?;
                out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                for (node, it, v) in out {
                    tx.execute(
                        "INSERT INTO _smithers_rolled_back_outputs
                           (run_id, node_id, iteration, output_table, output_json, rolled_back_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&run_id, &node, &i64::from(it), table, &v, &now],
                    )
                    .await?;
                }
            }
            tx.execute(
                &format!("DELETE FROM {} WHERE run_id = $1 AND {RESET}", quote(table)),
                &[&run_id, &ids, &its],
            )
            .await?;
        }
        tx.execute(
            &format!(
                "UPDATE _smithers_nodes SET status = 'pending', output_table = NULL, last_error = NULL, updated_at = $4
                 WHERE run_id = $1 AND {RESET}"
            ),
            &[&run_id, &ids, &its, &now],
        )
        .await?;
        tx.execute(
            &format!(
                "UPDATE _smithers_attempts SET rolled_back = TRUE WHERE run_id = $1 AND {RESET}"
            ),
            &[&run_id, &ids, &its],
        )
        .await?;
        tx.execute(
            &format!("DELETE FROM _smithers_approvals WHERE run_id = $1 AND {RESET}"),
            &[&run_id, &ids, &its],
        )
        .await?;
    }
    // Loop counters go back to their last value at the cut (a loop that had not moved yet
    // starts over).
    let loop_rows = tx
        .query(
            "SELECT l.loop_id, l.iteration, l.pass_start, l.parent_iteration, l.done,
                    h.iteration, h.pass_start, h.parent_iteration, h.done
             FROM _smithers_ralph l
             LEFT JOIN LATERAL (
               SELECT iteration, pass_start, parent_iteration, done FROM _smithers_ralph_history
               WHERE run_id = l.run_id AND loop_id = l.loop_id AND seq <= $2
               ORDER BY seq DESC, pos DESC LIMIT 1) h ON TRUE
             WHERE l.run_id = $1 ORDER BY l.loop_id",
            &[&run_id, &seq],
        )
        .await?;
    let mut loops = Vec::new();
    for r in &loop_rows {
        let l: String = r.get(0);
        let now_state = (
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, i64>(3),
            r.get::<_, bool>(4),
        );
        let at_cut = r.get::<_, Option<i64>>(5).map(|i| {
            (
                i,
                r.get::<_, i64>(6),
                r.get::<_, i64>(7),
                r.get::<_, bool>(8),
            )
        });
        match at_cut {
            Some(s) if s == now_state => continue,
            Some((i, p, pi, d)) => {
                tx.execute(
                    "UPDATE _smithers_ralph SET iteration = $3, pass_start = $4, parent_iteration = $5, done = $6
                     WHERE run_id = $1 AND loop_id = $2",
                    &[&run_id, &l, &i, &p, &pi, &d],
                )
                .await?;
            }
            None => {
                tx.execute(
                    "DELETE FROM _smithers_ralph WHERE run_id = $1 AND loop_id = $2",
                    &[&run_id, &l],
                )
                .await?;
            }
        }
        loops.push(l);
    }
    // Steps and phases after the cut: inactive (kept for audit), or dropped from a fork.
    let later = "run_id = $1 AND active AND (step_id >= COALESCE($3::BIGINT, 9223372036854775807)
                   OR started_seq > $2 OR (started_seq IS NULL AND created_seq > $2))";
    let (steps_sql, phases_sql) = match how {
        Cut::Audit => (
            format!("UPDATE _smithers_steps SET active = FALSE WHERE {later} RETURNING step_id"),
            "UPDATE _smithers_phases SET active = FALSE WHERE run_id = $1 AND active AND created_seq > $2",
        ),
        Cut::Drop => (
            format!("DELETE FROM _smithers_steps WHERE {later} RETURNING step_id"),
            "DELETE FROM _smithers_phases WHERE run_id = $1 AND created_seq > $2",
        ),
    };
    let mut deactivated: Vec<i64> = tx
        .query(&steps_sql, &[&run_id, &seq, &first_step])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    deactivated.sort_unstable();
    tx.execute(phases_sql, &[&run_id, &seq]).await?;
    Ok(RewindReport {
        seq,
        deactivated_steps: deactivated,
        reset_nodes: reset,
        loops,
    })
}

/// Copies a run's history up to a frame into a new run (see `Store::fork_run`), inside `tx`.
pub(super) async fn fork(tx: &Transaction<'_>, f: &ForkRun, now: &str) -> Result<()> {
    let parent = f.parent_run_id.as_str();
    let new = f.run_id.as_str();
    if tx
        .query_opt("SELECT 1 FROM _smithers_runs WHERE run_id = $1", &[&parent])
        .await?
        .is_none()
    {
        return Err(Error::RunNotFound(parent.to_owned()));
    }
    let (cut_seq, _) = cut_of(tx, parent, &RewindTo::Frame(f.frame)).await?;
    let pair: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&parent, &new];
    tx.execute(
        "INSERT INTO _smithers_runs (run_id, workflow, status, input_json, error, created_at, updated_at,
                                     parent_run_id, parent_frame)
         SELECT $2, workflow, 'cancelled', COALESCE($3, input_json), $5, $4, $4, run_id, $6
         FROM _smithers_runs WHERE run_id = $1",
        &[
            &parent,
            &new,
            &f.input,
            &now,
            &format!(
                "forked from run {parent} at frame {}; `resume` continues it",
                f.frame
            ),
            &i64::from(f.frame),
        ],
    )
    .await?;
    lock_run(tx, new).await?;
    // Events up to the cut, in order, get new sequence numbers; the rest is copied whole and
    // then cut at the copied frame like a rewind that drops instead of keeping.
    tx.execute(
        "INSERT INTO _smithers_events (run_id, at, kind, node_id, iteration, payload)
         SELECT $2, at, kind, node_id, iteration, payload FROM _smithers_events
         WHERE run_id = $1 AND seq <= $3 ORDER BY seq",
        &[&parent, &new, &cut_seq],
    )
    .await?;
    let new_cut: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) FROM _smithers_events WHERE run_id = $1",
            &[&new],
        )
        .await?
        .get(0);
    // Old sequence numbers map onto the copy: up to the cut, to the copy of the last event at or
    // before them; after it, past the copy's cut (all of that is cut below).
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS smithers_fork_map (old BIGINT PRIMARY KEY, new BIGINT NOT NULL)
           ON COMMIT DROP;
         DELETE FROM smithers_fork_map;",
    )
    .await?;
    tx.execute(
        "INSERT INTO smithers_fork_map (old, new)
         SELECT o.seq, n.seq
         FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn FROM _smithers_events
               WHERE run_id = $1 AND seq <= $3) o
         JOIN (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn FROM _smithers_events
               WHERE run_id = $2) n ON o.rn = n.rn",
        &[&parent, &new, &cut_seq],
    )
    .await?;
    let map = |col: &str| {
        format!(
            "CASE WHEN {col} IS NULL THEN NULL WHEN {col} > {cut_seq} THEN {new_cut} + ({col} - {cut_seq})
             ELSE (SELECT COALESCE(MAX(m.new), 0) FROM smithers_fork_map m WHERE m.old <= {col}) END"
        )
    };
    // Later node events of the parent, after the copied ones, so the cut finds the nodes they
    // moved (they are deleted once it has).
    tx.execute(
        "INSERT INTO _smithers_events (run_id, at, kind, node_id, iteration, payload)
         SELECT $2, at, kind, node_id, iteration, payload FROM _smithers_events
         WHERE run_id = $1 AND seq > $3 AND node_id IS NOT NULL ORDER BY seq",
        &[&parent, &new, &cut_seq],
    )
    .await?;
    for sql in [
        "INSERT INTO _smithers_nodes (run_id, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at)
         SELECT $2, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at
         FROM _smithers_nodes WHERE run_id = $1 ORDER BY seq",
        "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, status, owner, agent, started_at,
           finished_at, duration_ms, error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
           cost_usd, session_id, exit_code, model, vcs_repo, vcs_before, vcs_after, rolled_back, cost_source)
         SELECT $2, node_id, iteration, attempt, status, owner, agent, started_at,
           finished_at, duration_ms, error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
           cost_usd, session_id, exit_code, model, vcs_repo, vcs_before, vcs_after, rolled_back, cost_source
         FROM _smithers_attempts WHERE run_id = $1 ORDER BY seq",
        "INSERT INTO _smithers_ralph (run_id, loop_id, iteration, pass_start, parent_iteration, done)
         SELECT $2, loop_id, iteration, pass_start, parent_iteration, done FROM _smithers_ralph WHERE run_id = $1",
        "INSERT INTO _smithers_approvals (run_id, node_id, iteration, status, requested_at, decided_at, note)
         SELECT $2, node_id, iteration, status, requested_at, decided_at, note FROM _smithers_approvals
         WHERE run_id = $1 ORDER BY seq",
    ] {
        tx.execute(sql, &pair).await?;
    }
    tx.execute(
        "INSERT INTO _smithers_frames (run_id, frame_no, tree_hash, tree, structure, created_at)
         SELECT $2, frame_no, tree_hash, tree, structure, created_at FROM _smithers_frames
         WHERE run_id = $1 AND frame_no <= $3",
        &[&parent, &new, &i64::from(f.frame)],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO _smithers_ralph_history (run_id, loop_id, seq, iteration, pass_start, parent_iteration, done)
             SELECT $2, loop_id, {}, iteration, pass_start, parent_iteration, done
             FROM _smithers_ralph_history WHERE run_id = $1 ORDER BY seq, pos",
            map("seq")
        ),
        &pair,
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO _smithers_phases (run_id, phase_id, name, iteration, status, active, started_at,
               completed_at, duration_ms, created_at, created_seq)
             SELECT $2, phase_id, name, iteration, status, active, started_at, completed_at, duration_ms,
               created_at, {}
             FROM _smithers_phases WHERE run_id = $1 AND active",
            map("created_seq")
        ),
        &pair,
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO _smithers_steps ({STEP_COLUMNS})
             SELECT $2, step_id, parent_step_id, active, source, name, phase_id, phase,
               iteration, status, task_ids, started_at, completed_at, duration_ms, created_at,
               {}, {}, vcs_repo, vcs_backend, snapshot_before,
               snapshot_after, head_before, commit_created, agent_config_json, token_usage_json,
               exit_code
             FROM _smithers_steps WHERE run_id = $1 AND active",
            map("created_seq"),
            map("started_seq")
        ),
        &pair,
    )
    .await?;
    // Output rows of every table the parent's nodes wrote.
    let tables: Vec<String> = tx
        .query(
            "SELECT DISTINCT output_table FROM _smithers_nodes WHERE run_id = $1 AND output_table IS NOT NULL",
            &[&parent],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in tables {
        check_ident(&t)?;
        let cols: Vec<String> = tx
            .query(
                "SELECT column_name::TEXT FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 AND column_name <> 'run_id'
                 ORDER BY ordinal_position",
                &[&t],
            )
            .await?
            .iter()
            .map(|r| quote(r.get::<_, &str>(0)))
            .collect();
        let cols = cols.join(", ");
        tx.execute(
            &format!(
                "INSERT INTO {t} (run_id, {cols}) SELECT $2, {cols} FROM {t} WHERE run_id = $1",
                t = quote(&t)
            ),
            &pair,
        )
        .await?;
    }
    cut(tx, new, new_cut, None, now, Cut::Drop).await?;
    tx.execute(
        "DELETE FROM _smithers_events WHERE run_id = $1 AND seq > $2",
        &[&new, &new_cut],
    )
    .await?;
    tx.execute(
        "DELETE FROM _smithers_ralph_history WHERE run_id = $1 AND seq > $2",
        &[&new, &new_cut],
    )
    .await?;
    tx.batch_execute("DROP TABLE smithers_fork_map").await?;
    Ok(())
}
