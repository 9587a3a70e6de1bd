//! Steps and phases in SQLite: the rows a render's transitions write, the Steps API, and the
//! time travel that cuts a run's history at a step or frame (`rewind`) or copies it (`fork`).
//!
//! Positions in a run's history are event sequence numbers: a step records the highest `seq`
//! when it was created and when it started, loop counters keep a history tagged the same way,
//! and a rewind undoes every node that has an event after the cut.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::output_rows::{quote, read_outputs};
use super::{json_at, json_at_opt, time_at, time_at_opt};
use crate::error::{Error, Result};
use crate::model::Usage;
use crate::model::{GroupKind, GroupStatus};
use crate::store::{
    stored_json, FenceToken, ForkRun, GroupUpdate, NodeRecord, PhaseRecord, RewindReport, RewindTo,
    StepKey, StepRecord, StepVcs,
};

/// The highest event sequence number so far: where "now" is in every run's history.
pub(super) fn mark(c: &Connection) -> Result<i64> {
    Ok(c.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM _smithers_events",
        [],
        |r| r.get(0),
    )?)
}

fn terminal(s: GroupStatus) -> bool {
    matches!(
        s,
        GroupStatus::Completed | GroupStatus::Failed | GroupStatus::Skipped
    )
}

/// A render's phase or step transition.
pub(super) fn write_group(c: &Connection, run_id: &str, g: &GroupUpdate, now: &str) -> Result<()> {
    let done = terminal(g.status);
    let started = !matches!(g.status, GroupStatus::Pending | GroupStatus::Skipped);
    let seq = mark(c)?;
    match g.kind {
        GroupKind::Phase => {
            c.prepare_cached(
                "INSERT INTO _smithers_phases
                   (run_id, phase_id, name, iteration, status, started_at, completed_at, duration_ms, created_at, created_seq)
                 VALUES (?1, (SELECT COALESCE(MAX(phase_id), 0) + 1 FROM _smithers_phases WHERE run_id = ?1),
                         ?2, ?3, ?4, CASE WHEN ?7 THEN ?5 END, CASE WHEN ?6 THEN ?5 END, CASE WHEN ?6 THEN 0 END, ?5, ?8)
                 ON CONFLICT (run_id, name, iteration) WHERE active = 1 DO UPDATE SET
                   status = excluded.status,
                   started_at = COALESCE(started_at, excluded.started_at),
                   completed_at = CASE WHEN ?6 THEN ?5 END,
                   duration_ms = CASE WHEN ?6
                     THEN CAST((julianday(?5) - julianday(COALESCE(started_at, ?5))) * 86400000 AS INTEGER) END",
            )?
            .execute(params![run_id, g.name, g.iteration, g.status.as_str(), now, done, started, seq])?;
        }
        GroupKind::Step => {
            let agents = g.agent_config.as_ref().map(Value::to_string);
            c.prepare_cached(
                "INSERT INTO _smithers_steps
                   (run_id, step_id, parent_step_id, name, phase_id, phase, iteration, status, task_ids,
                    started_at, completed_at, duration_ms, created_at, created_seq, started_seq, agent_config_json)
                 VALUES (?1, (SELECT COALESCE(MAX(step_id), 0) + 1 FROM _smithers_steps WHERE run_id = ?1),
                         (SELECT MAX(step_id) FROM _smithers_steps WHERE run_id = ?1 AND active = 1),
                         ?2, (SELECT MAX(phase_id) FROM _smithers_phases WHERE run_id = ?1 AND name = ?3 AND active = 1),
                         ?3, ?4, ?5, ?6, CASE WHEN ?9 THEN ?7 END, CASE WHEN ?8 THEN ?7 END, CASE WHEN ?8 THEN 0 END,
                         ?7, ?10, CASE WHEN ?9 THEN ?10 END, ?11)
                 ON CONFLICT (run_id, name, iteration) WHERE active = 1 AND source = 'tree' DO UPDATE SET
                   status = excluded.status, task_ids = excluded.task_ids,
                   agent_config_json = COALESCE(excluded.agent_config_json, agent_config_json),
                   started_at = COALESCE(started_at, excluded.started_at),
                   started_seq = COALESCE(started_seq, excluded.started_seq),
                   completed_at = CASE WHEN ?8 THEN ?7 END,
                   duration_ms = CASE WHEN ?8
                     THEN CAST((julianday(?7) - julianday(COALESCE(started_at, ?7))) * 86400000 AS INTEGER) END",
            )?
            .execute(params![
                run_id,
                g.name,
                g.phase,
                g.iteration,
                g.status.as_str(),
                serde_json::to_string(&g.tasks)?,
                now,
                done,
                started,
                seq,
                agents
            ])?;
            if done {
                let id: i64 = c.query_row(
                    "SELECT step_id FROM _smithers_steps
                     WHERE run_id = ?1 AND name = ?2 AND iteration = ?3 AND active = 1 AND source = 'tree'",
                    params![run_id, g.name, g.iteration],
                    |r| r.get(0),
                )?;
                sum_attempts(c, run_id, id)?;
            }
        }
    }
    Ok(())
}

/// Stores a step's token usage (summed over its tasks' attempts in its iteration, cost
/// included), the exit code of its last CLI attempt, and the models its attempts reported.
fn sum_attempts(c: &Connection, run_id: &str, step_id: i64) -> Result<()> {
    let (tasks, iteration, config): (String, u32, Option<String>) = c.query_row(
        "SELECT task_ids, iteration, agent_config_json FROM _smithers_steps WHERE run_id = ?1 AND step_id = ?2",
        params![run_id, step_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut st = c.prepare_cached(
        "SELECT node_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,
                exit_code, model
         FROM _smithers_attempts
         WHERE run_id = ?1 AND iteration = ?2 AND rolled_back = 0
           AND node_id IN (SELECT value FROM json_each(?3))
         ORDER BY started_at, attempt",
    )?;
    let mut usage = Usage::default();
    let mut attempts = 0u32;
    let mut exit_code: Option<i32> = None;
    let mut models: std::collections::HashMap<String, String> = Default::default();
    let mut rows = st.query(params![run_id, iteration, tasks])?;
    while let Some(r) = rows.next()? {
        attempts += 1;
        let get = |i: usize| -> rusqlite::Result<Option<u64>> {
            Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(0) as u64))
        };
        usage.add(&Usage {
            input_tokens: get(1)?,
            output_tokens: get(2)?,
            cache_read_tokens: get(3)?,
            cache_write_tokens: get(4)?,
            cost_usd: r.get(5)?,
        });
        if let Some(code) = r.get::<_, Option<i32>>(6)? {
            exit_code = Some(code);
        }
        if let Some(m) = r.get::<_, Option<String>>(7)? {
            models.insert(r.get(0)?, m);
        }
    }
    let mut total = serde_json::to_value(&usage)?;
    total["attempts"] = attempts.into();
    let config = config
        .map(|c| stored_json::<Value>("_smithers_steps", "agent_config_json", &c))
        .transpose()?
        .map(|mut v| {
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
            v.to_string()
        });
    c.prepare_cached(
        "UPDATE _smithers_steps SET token_usage_json = ?3, exit_code = ?4,
           agent_config_json = COALESCE(?5, agent_config_json)
         WHERE run_id = ?1 AND step_id = ?2",
    )?
    .execute(params![
        run_id,
        step_id,
        total.to_string(),
        exit_code,
        config
    ])?;
    Ok(())
}

/// Records a step's snapshots; a `HEAD` that moved between before and after is the commit the
/// step created.
pub(super) fn write_step_vcs(c: &Connection, run_id: &str, v: &StepVcs) -> Result<()> {
    let (before, head_before) = v.before.clone().unzip();
    let (after, head_after) = v.after.clone().unzip();
    let sql = "UPDATE _smithers_steps SET vcs_repo = COALESCE(NULLIF(?3, ''), vcs_repo),
           vcs_backend = COALESCE(NULLIF(?4, ''), vcs_backend),
           snapshot_before = COALESCE(?5, snapshot_before),
           head_before = CASE WHEN ?5 IS NOT NULL THEN ?6 ELSE head_before END,
           snapshot_after = COALESCE(?7, snapshot_after),
           commit_created = COALESCE(?9,
             CASE WHEN ?7 IS NOT NULL AND ?8 IS NOT NULL AND ?8 IS NOT COALESCE(?6, head_before) THEN ?8 END,
             commit_created)
         WHERE run_id = ?1 AND ";
    let p = params![
        run_id,
        match &v.step {
            StepKey::Id(id) => id.to_string(),
            StepKey::Named { name, .. } => name.clone(),
        },
        v.repo,
        v.backend,
        before,
        head_before.flatten(),
        after,
        head_after.flatten(),
        v.commit_created,
        match &v.step {
            StepKey::Id(_) => 0,
            StepKey::Named { iteration, .. } => *iteration,
        },
    ];
    match &v.step {
        StepKey::Id(_) => c
            .prepare_cached(&format!("{sql} step_id = CAST(?2 AS INTEGER) AND ?10 = 0"))?
            .execute(p)?,
        StepKey::Named { .. } => c
            .prepare_cached(&format!(
                "{sql} name = ?2 AND iteration = ?10 AND active = 1 AND source = 'tree'"
            ))?
            .execute(p)?,
    };
    Ok(())
}

/// Ends a step started through the Steps API.
pub(super) fn end_step(
    c: &Connection,
    run_id: &str,
    step_id: i64,
    status: GroupStatus,
    now: &str,
) -> Result<()> {
    let n = c
        .prepare_cached(
            "UPDATE _smithers_steps SET status = ?3, completed_at = ?4,
               duration_ms = CAST((julianday(?4) - julianday(COALESCE(started_at, ?4))) * 86400000 AS INTEGER)
             WHERE run_id = ?1 AND step_id = ?2",
        )?
        .execute(params![run_id, step_id, status.as_str(), now])?;
    if n == 0 {
        return Err(no_step(run_id, step_id));
    }
    sum_attempts(c, run_id, step_id)
}

fn no_step(run_id: &str, step_id: i64) -> Error {
    Error::StepNotFound {
        run_id: run_id.to_owned(),
        step_id,
    }
}

/// Starts a step through the Steps API, in the run's current (latest running) phase.
pub(super) fn start_step(
    c: &Connection,
    run_id: &str,
    name: Option<&str>,
    now: &str,
) -> Result<i64> {
    let exists: Option<i64> = c
        .query_row(
            "SELECT 1 FROM _smithers_runs WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Err(Error::RunNotFound(run_id.to_owned()));
    }
    let phase: Option<(i64, String)> = c
        .query_row(
            "SELECT phase_id, name FROM _smithers_phases
             WHERE run_id = ?1 AND active = 1 AND status = 'running' ORDER BY phase_id DESC LIMIT 1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let id: i64 = c.query_row(
        "SELECT COALESCE(MAX(step_id), 0) + 1 FROM _smithers_steps WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let name = name.map_or_else(|| format!("step-{id}"), str::to_owned);
    let seq = mark(c)?;
    c.prepare_cached(
        "INSERT INTO _smithers_steps
           (run_id, step_id, parent_step_id, source, name, phase_id, phase, iteration, status, task_ids,
            started_at, created_at, created_seq, started_seq)
         VALUES (?1, ?2, (SELECT MAX(step_id) FROM _smithers_steps WHERE run_id = ?1 AND active = 1),
                 'api', ?3, ?4, ?5, 0, 'running', '[]', ?6, ?6, ?7, ?7)",
    )?
    .execute(params![
        run_id,
        id,
        name,
        phase.as_ref().map(|p| p.0),
        phase.as_ref().map(|p| p.1.clone()),
        now,
        seq
    ])?;
    Ok(id)
}

const STEP_COLUMNS: &str = "run_id, step_id, parent_step_id, active, source, name, phase_id, phase,
    iteration, status, task_ids, started_at, completed_at, duration_ms, created_at, created_seq,
    started_seq, vcs_repo, vcs_backend, snapshot_before, snapshot_after, head_before, commit_created,
    agent_config_json, token_usage_json, exit_code";

fn step_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRecord> {
    Ok(StepRecord {
        run_id: r.get(0)?,
        step_id: r.get(1)?,
        parent_step_id: r.get(2)?,
        active: r.get(3)?,
        source: r.get(4)?,
        name: r.get(5)?,
        phase_id: r.get(6)?,
        phase: r.get(7)?,
        iteration: r.get(8)?,
        status: r.get(9)?,
        task_ids: json_at(r, 10, "_smithers_steps", "task_ids")?,
        started_at: time_at_opt(r, 11, "_smithers_steps", "started_at")?,
        completed_at: time_at_opt(r, 12, "_smithers_steps", "completed_at")?,
        duration_ms: r.get(13)?,
        created_at: time_at(r, 14, "_smithers_steps", "created_at")?,
        created_seq: r.get(15)?,
        started_seq: r.get(16)?,
        vcs_repo: r.get(17)?,
        vcs_backend: r.get(18)?,
        snapshot_before: r.get(19)?,
        snapshot_after: r.get(20)?,
        head_before: r.get(21)?,
        commit_created: r.get(22)?,
        agent_config_json: json_at_opt(r, 23, "_smithers_steps", "agent_config_json")?,
        token_usage_json: json_at_opt(r, 24, "_smithers_steps", "token_usage_json")?,
        exit_code: r.get(25)?,
    })
}

/// The steps of a run, by id.
pub(super) fn query_steps(c: &Connection, run_id: &str) -> Result<Vec<StepRecord>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM _smithers_steps WHERE run_id = ?1 ORDER BY step_id"
    ))?;
    let rows = st
        .query_map([run_id], step_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The phases of a run, by id.
pub(super) fn query_phases(c: &Connection, run_id: &str) -> Result<Vec<PhaseRecord>> {
    let mut st = c.prepare_cached(
        "SELECT run_id, phase_id, name, iteration, status, active, started_at, completed_at, duration_ms, created_at
         FROM _smithers_phases WHERE run_id = ?1 ORDER BY phase_id",
    )?;
    let rows = st
        .query_map([run_id], |r| {
            Ok(PhaseRecord {
                run_id: r.get(0)?,
                phase_id: r.get(1)?,
                name: r.get(2)?,
                iteration: r.get(3)?,
                status: r.get(4)?,
                active: r.get(5)?,
                started_at: time_at_opt(r, 6, "_smithers_phases", "started_at")?,
                completed_at: time_at_opt(r, 7, "_smithers_phases", "completed_at")?,
                duration_ms: r.get(8)?,
                created_at: time_at(r, 9, "_smithers_phases", "created_at")?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The caller must hold the run's lease: its token is checked like a fenced batch's, except
/// that an unknown run is `RunNotFound`.
fn check_fence(c: &Connection, run_id: &str, fence: &FenceToken) -> Result<()> {
    let Some((owner, epoch)) = super::fence::current_lease(c, run_id)? else {
        return Err(Error::RunNotFound(run_id.to_owned()));
    };
    fence.check(run_id, Some((owner.as_deref(), epoch)))
}

/// The event sequence number where `to` cuts the run's history, and the first step to
/// deactivate when cutting at a step.
fn cut_of(c: &Connection, run_id: &str, to: &RewindTo) -> Result<(i64, Option<i64>)> {
    match to {
        RewindTo::Step(id) => {
            let row: Option<(String, bool, Option<i64>)> = c
                .query_row(
                    "SELECT name, active, started_seq FROM _smithers_steps WHERE run_id = ?1 AND step_id = ?2",
                    params![run_id, id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((name, active, started)) = row else {
                return Err(no_step(run_id, *id));
            };
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
            let seq: Option<i64> = c
                .query_row(
                    "SELECT MAX(seq) FROM _smithers_events WHERE run_id = ?1 AND kind = 'frame_rendered'
                       AND json_extract(payload, '$.frame') = ?2",
                    params![run_id, f],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
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

/// What [`rewind`] does to what it cuts: keep it for audit, or drop it (a fork's copy).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    Audit,
    Drop,
}

/// Cuts a run's history at a step or frame (see `Store::rewind`).
pub(super) fn rewind(
    c: &Connection,
    run_id: &str,
    to: &RewindTo,
    fence: &FenceToken,
    now: &str,
) -> Result<RewindReport> {
    check_fence(c, run_id, fence)?;
    let (seq, first_step) = cut_of(c, run_id, to)?;
    cut(c, run_id, seq, first_step, now, Cut::Audit)
}

fn cut(
    c: &Connection,
    run_id: &str,
    seq: i64,
    first_step: Option<i64>,
    now: &str,
    how: Cut,
) -> Result<RewindReport> {
    // Nodes that moved after the cut.
    let mut st = c.prepare(
        "SELECT DISTINCT e.node_id, e.iteration FROM _smithers_events e
         WHERE e.run_id = ?1 AND e.seq > ?2 AND e.node_id IS NOT NULL AND e.iteration IS NOT NULL",
    )?;
    let mut reset: Vec<(String, u32)> = st
        .query_map(params![run_id, seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    reset.sort();
    for (node, it) in &reset {
        let row: Option<NodeRecord> = c
            .query_row(
                "SELECT node_id, iteration, status, attempts, output_table, loop_id, last_error
                 FROM _smithers_nodes WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
                params![run_id, node, it],
                super::node_from_row,
            )
            .optional()?;
        if let Some(table) = row.as_ref().and_then(|n| n.output_table.clone()) {
            if how == Cut::Audit {
                let mut out = Vec::new();
                read_outputs(
                    c,
                    &table,
                    run_id,
                    std::slice::from_ref(row.as_ref().unwrap_or_else(|| unreachable!())),
                    &mut out,
                )?;
                for (_, _, v) in out {
                    c.execute(
                        "INSERT INTO _smithers_rolled_back_outputs
                           (run_id, node_id, iteration, output_table, output_json, rolled_back_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![run_id, node, it, table, v.to_string(), now],
                    )?;
                }
            }
            c.execute(
                &format!(
                    "DELETE FROM {} WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
                    quote(&table)
                ),
                params![run_id, node, it],
            )?;
        }
        c.execute(
            "UPDATE _smithers_nodes SET status = 'pending', output_table = NULL, last_error = NULL, updated_at = ?4
             WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            params![run_id, node, it, now],
        )?;
        c.execute(
            "UPDATE _smithers_attempts SET rolled_back = 1 WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            params![run_id, node, it],
        )?;
        c.execute(
            "DELETE FROM _smithers_approvals WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            params![run_id, node, it],
        )?;
    }
    // Loop counters go back to their last value at the cut (a loop that had not moved yet
    // starts over).
    let mut st = c.prepare("SELECT loop_id FROM _smithers_ralph WHERE run_id = ?1")?;
    let loop_ids: Vec<String> = st
        .query_map([run_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut loops = Vec::new();
    for l in loop_ids {
        let at_cut: Option<(u32, u32, u32, bool)> = c
            .query_row(
                "SELECT iteration, pass_start, parent_iteration, done FROM _smithers_ralph_history
                 WHERE run_id = ?1 AND loop_id = ?2 AND seq <= ?3 ORDER BY seq DESC, rowid DESC LIMIT 1",
                params![run_id, l, seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let now_state: (u32, u32, u32, bool) = c.query_row(
            "SELECT iteration, pass_start, parent_iteration, done FROM _smithers_ralph WHERE run_id = ?1 AND loop_id = ?2",
            params![run_id, l],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        match at_cut {
            Some(s) if s == now_state => continue,
            Some((i, p, pi, d)) => {
                c.execute(
                    "UPDATE _smithers_ralph SET iteration = ?3, pass_start = ?4, parent_iteration = ?5, done = ?6
                     WHERE run_id = ?1 AND loop_id = ?2",
                    params![run_id, l, i, p, pi, d],
                )?;
            }
            None => {
                c.execute(
                    "DELETE FROM _smithers_ralph WHERE run_id = ?1 AND loop_id = ?2",
                    params![run_id, l],
                )?;
            }
        }
        loops.push(l);
    }
    // Steps and phases after the cut: inactive (kept for audit), or dropped from a fork.
    let later = "run_id = ?1 AND active = 1 AND (step_id >= COALESCE(?3, 9223372036854775807)
                   OR started_seq > ?2 OR (started_seq IS NULL AND created_seq > ?2))";
    let mut st = c.prepare(&format!(
        "SELECT step_id FROM _smithers_steps WHERE {later} ORDER BY step_id"
    ))?;
    let deactivated: Vec<i64> = st
        .query_map(params![run_id, seq, first_step], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    match how {
        Cut::Audit => {
            c.execute(
                &format!("UPDATE _smithers_steps SET active = 0 WHERE {later}"),
                params![run_id, seq, first_step],
            )?;
            c.execute(
                "UPDATE _smithers_phases SET active = 0 WHERE run_id = ?1 AND active = 1 AND created_seq > ?2",
                params![run_id, seq],
            )?;
        }
        Cut::Drop => {
            c.execute(
                &format!("DELETE FROM _smithers_steps WHERE {later}"),
                params![run_id, seq, first_step],
            )?;
            c.execute(
                "DELETE FROM _smithers_phases WHERE run_id = ?1 AND created_seq > ?2",
                params![run_id, seq],
            )?;
        }
    }
    Ok(RewindReport {
        seq,
        deactivated_steps: deactivated,
        reset_nodes: reset,
        loops,
    })
}

/// Copies a run's history up to a frame into a new run (see `Store::fork_run`).
pub(super) fn fork(c: &Connection, f: &ForkRun, now: &str) -> Result<()> {
    let parent = &f.parent_run_id;
    let new = &f.run_id;
    let exists: Option<i64> = c
        .query_row(
            "SELECT 1 FROM _smithers_runs WHERE run_id = ?1",
            [parent],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Err(Error::RunNotFound(parent.clone()));
    }
    let (cut_seq, _) = cut_of(c, parent, &RewindTo::Frame(f.frame))?;
    let input = f.input.as_ref().map(Value::to_string);
    c.execute(
        "INSERT INTO _smithers_runs (run_id, workflow, status, input_json, error, created_at, updated_at,
                                     parent_run_id, parent_frame)
         SELECT ?2, workflow, 'cancelled', COALESCE(?3, input_json), ?5, ?4, ?4, run_id, ?6
         FROM _smithers_runs WHERE run_id = ?1",
        params![
            parent,
            new,
            input,
            now,
            format!("forked from run {parent} at frame {}; `resume` continues it", f.frame),
            f.frame
        ],
    )?;
    // Events up to the cut, in order, get new sequence numbers; the rest is copied whole and
    // then cut at the copied frame like a rewind that drops instead of keeping.
    c.execute(
        "INSERT INTO _smithers_events (run_id, at, kind, node_id, iteration, payload)
         SELECT ?2, at, kind, node_id, iteration, payload FROM _smithers_events
         WHERE run_id = ?1 AND seq <= ?3 ORDER BY seq",
        params![parent, new, cut_seq],
    )?;
    let new_cut: i64 = c.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM _smithers_events WHERE run_id = ?1",
        [new],
        |r| r.get(0),
    )?;
    // Old sequence numbers map onto the copy: up to the cut, to the copy of the last event at or
    // before them; after it, past the copy's cut (all of that is cut below).
    c.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS smithers_fork_map (old INTEGER PRIMARY KEY, new INTEGER NOT NULL);
         DELETE FROM temp.smithers_fork_map;",
    )?;
    c.execute(
        "INSERT INTO temp.smithers_fork_map (old, new)
         SELECT o.seq, n.seq
         FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn FROM _smithers_events
               WHERE run_id = ?1 AND seq <= ?3) o
         JOIN (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn FROM _smithers_events
               WHERE run_id = ?2) n ON o.rn = n.rn",
        params![parent, new, cut_seq],
    )?;
    let map = |col: &str| {
        format!(
            "CASE WHEN {col} IS NULL THEN NULL WHEN {col} > {cut_seq} THEN {new_cut} + ({col} - {cut_seq})
             ELSE (SELECT COALESCE(MAX(m.new), 0) FROM temp.smithers_fork_map m WHERE m.old <= {col}) END"
        )
    };
    // Later node events of the parent, after the copied ones, so the cut finds the nodes they
    // moved (they are deleted once it has).
    c.execute(
        "INSERT INTO _smithers_events (run_id, at, kind, node_id, iteration, payload)
         SELECT ?2, at, kind, node_id, iteration, payload FROM _smithers_events
         WHERE run_id = ?1 AND seq > ?3 AND node_id IS NOT NULL ORDER BY seq",
        params![parent, new, cut_seq],
    )?;
    for sql in [
        "INSERT INTO _smithers_nodes (run_id, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at, ord)
         SELECT ?2, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at, ord
         FROM _smithers_nodes WHERE run_id = ?1",
        "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, status, owner, agent, started_at,
           finished_at, duration_ms, error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
           cost_usd, session_id, exit_code, model, vcs_repo, vcs_before, vcs_after, rolled_back, cost_source, ord)
         SELECT ?2, node_id, iteration, attempt, status, owner, agent, started_at,
           finished_at, duration_ms, error, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
           cost_usd, session_id, exit_code, model, vcs_repo, vcs_before, vcs_after, rolled_back, cost_source, ord
         FROM _smithers_attempts WHERE run_id = ?1",
        "INSERT INTO _smithers_ralph (run_id, loop_id, iteration, pass_start, parent_iteration, done)
         SELECT ?2, loop_id, iteration, pass_start, parent_iteration, done FROM _smithers_ralph WHERE run_id = ?1",
        "INSERT INTO _smithers_approvals (run_id, node_id, iteration, status, requested_at, decided_at, note)
         SELECT ?2, node_id, iteration, status, requested_at, decided_at, note FROM _smithers_approvals WHERE run_id = ?1",
        "INSERT INTO _smithers_frames (run_id, frame_no, tree_hash, tree, structure, created_at)
         SELECT ?2, frame_no, tree_hash, tree, structure, created_at FROM _smithers_frames WHERE run_id = ?1 AND frame_no <= ?3",
    ] {
        let frame_param = if sql.contains("_smithers_frames") {
            i64::from(f.frame)
        } else {
            0
        };
        if sql.contains("?3") {
            c.execute(sql, params![parent, new, frame_param])?;
        } else {
            c.execute(sql, params![parent, new])?;
        }
    }
    c.execute(
        &format!(
            "INSERT INTO _smithers_ralph_history (run_id, loop_id, seq, iteration, pass_start, parent_iteration, done)
             SELECT ?2, loop_id, {}, iteration, pass_start, parent_iteration, done
             FROM _smithers_ralph_history WHERE run_id = ?1",
            map("seq")
        ),
        params![parent, new],
    )?;
    c.execute(
        &format!(
            "INSERT INTO _smithers_phases (run_id, phase_id, name, iteration, status, active, started_at,
               completed_at, duration_ms, created_at, created_seq)
             SELECT ?2, phase_id, name, iteration, status, active, started_at, completed_at, duration_ms,
               created_at, {}
             FROM _smithers_phases WHERE run_id = ?1 AND active = 1",
            map("created_seq")
        ),
        params![parent, new],
    )?;
    c.execute(
        &format!(
            "INSERT INTO _smithers_steps ({STEP_COLUMNS})
             SELECT ?2, step_id, parent_step_id, active, source, name, phase_id, phase,
               iteration, status, task_ids, started_at, completed_at, duration_ms, created_at,
               {}, {}, vcs_repo, vcs_backend, snapshot_before,
               snapshot_after, head_before, commit_created, agent_config_json, token_usage_json,
               exit_code
             FROM _smithers_steps WHERE run_id = ?1 AND active = 1",
            map("created_seq"),
            map("started_seq")
        ),
        params![parent, new],
    )?;
    // Output rows of every table the parent's nodes wrote.
    let mut st = c.prepare(
        "SELECT DISTINCT output_table FROM _smithers_nodes WHERE run_id = ?1 AND output_table IS NOT NULL",
    )?;
    let tables: Vec<String> = st
        .query_map([parent], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for t in tables {
        super::output_rows::check_ident(&t)?;
        let mut cols = Vec::new();
        let mut info = c.prepare(&format!("PRAGMA table_info({})", quote(&t)))?;
        let mut rows = info.query([])?;
        while let Some(r) = rows.next()? {
            let name: String = r.get(1)?;
            if name != "run_id" {
                cols.push(quote(&name));
            }
        }
        let cols = cols.join(", ");
        c.execute(
            &format!(
                "INSERT INTO {t} (run_id, {cols}) SELECT ?2, {cols} FROM {t} WHERE run_id = ?1",
                t = quote(&t)
            ),
            params![parent, new],
        )?;
    }
    cut(c, new, new_cut, None, now, Cut::Drop)?;
    c.execute(
        "DELETE FROM _smithers_events WHERE run_id = ?1 AND seq > ?2",
        params![new, new_cut],
    )?;
    c.execute(
        "DELETE FROM _smithers_ralph_history WHERE run_id = ?1 AND seq > ?2",
        params![new, new_cut],
    )?;
    c.execute_batch("DROP TABLE temp.smithers_fork_map")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::super::connection::{database_before, migrate};
    use super::{query_phases, query_steps};

    /// A database made before the step records (migrations up to `steps`), with phase and step
    /// rows in the old shared table, keeps them when it is opened: phases move to their own
    /// table, steps get ids from 1 with their parents and phases.
    #[test]
    fn old_phase_and_step_rows_survive_the_step_records_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut c = database_before(&path, "step_records");
        c.execute(
            "INSERT INTO _smithers_runs (run_id, workflow, status, input_json, created_at, updated_at)
             VALUES ('r', 'w', 'finished', 'null', 't0', 't0')",
            [],
        )
        .unwrap();
        for (id, kind, name, phase) in [
            (1, "phase", "build", None),
            (2, "step", "compile", Some("build")),
            (3, "step", "test", Some("build")),
            (4, "phase", "ship", None),
            (5, "step", "deploy", Some("ship")),
        ] {
            c.execute(
                "INSERT INTO _smithers_steps (run_id, step_id, kind, name, phase, iteration, status, task_ids,
                   started_at, completed_at, duration_ms)
                 VALUES ('r', ?1, ?2, ?3, ?4, 0, 'completed', '[\"t\"]', '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 1000)",
                params![id, kind, name, phase],
            )
            .unwrap();
        }
        migrate(&mut c, &path).unwrap();
        let steps: Vec<_> = query_steps(&c, "r")
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.step_id,
                    s.parent_step_id,
                    s.name,
                    s.phase_id,
                    s.active,
                    s.duration_ms,
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                (1, None, "compile".to_owned(), Some(1), true, Some(1000)),
                (2, Some(1), "test".to_owned(), Some(1), true, Some(1000)),
                (3, Some(2), "deploy".to_owned(), Some(2), true, Some(1000)),
            ]
        );
        let phases: Vec<_> = query_phases(&c, "r")
            .unwrap()
            .into_iter()
            .map(|p| (p.phase_id, p.name, p.status))
            .collect();
        assert_eq!(
            phases,
            [
                (1, "build".to_owned(), "completed".to_owned()),
                (2, "ship".to_owned(), "completed".to_owned())
            ]
        );
    }
}
