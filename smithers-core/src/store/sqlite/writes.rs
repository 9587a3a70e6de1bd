//! Applying a [`WriteBatch`]: one SQL statement (prepared and cached) per [`Write`].

use rusqlite::{params, Connection};

use super::fence::check_fence;
use super::output_rows::insert_output;
use crate::error::Result;
use crate::model::Timestamp;
use crate::store::{Write, WriteBatch};

/// Applies `batch`, stamping its rows with `now`.
pub(super) fn apply(c: &Connection, batch: &WriteBatch, now: Timestamp) -> Result<()> {
    let run_id = batch.run_id.as_str();
    // Fencing first: a stale writer's batch writes nothing (the caller's savepoint is undone).
    if let Some(fence) = &batch.fence {
        check_fence(c, run_id, fence)?;
    }
    let now = now.to_string();
    for w in &batch.writes {
        match w {
            Write::RunStatus { status, error } => {
                let finished = status.is_final();
                // A final status answers any pending cancellation request.
                c.prepare_cached(
                    "UPDATE _smithers_runs SET status = ?2, error = ?3, updated_at = ?4,
                     finished_at = CASE WHEN ?5 THEN ?4 ELSE NULL END,
                     cancel_requested = CASE WHEN ?5 THEN 0 ELSE cancel_requested END
                     WHERE run_id = ?1",
                )?
                .execute(params![
                    run_id,
                    status.as_str(),
                    error,
                    now,
                    finished
                ])?;
            }
            Write::Node(n) => {
                c.prepare_cached(
                    "INSERT INTO _smithers_nodes
                       (run_id, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at, ord)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, smithers_ord())
                     ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET
                       status = excluded.status, attempts = excluded.attempts, output_table = excluded.output_table,
                       loop_id = excluded.loop_id, last_error = excluded.last_error, updated_at = excluded.updated_at",
                )?
                .execute(params![
                    run_id,
                    n.node_id,
                    n.iteration,
                    n.status.as_str(),
                    n.attempts,
                    n.output_table,
                    n.loop_id,
                    n.last_error,
                    now
                ])?;
            }
            Write::AttemptStart {
                node_id,
                iteration,
                attempt,
                agent,
                owner,
            } => {
                c.prepare_cached(
                    "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, status, owner, agent, started_at, ord)
                     VALUES (?1, ?2, ?3, ?4, 'in-progress', ?5, ?6, ?7, smithers_ord())",
                )?
                .execute(params![run_id, node_id, iteration, attempt, owner, agent, now])?;
            }
            Write::AttemptEnd {
                node_id,
                iteration,
                attempt,
                end,
            } => {
                let u = &end.usage;
                c.prepare_cached(
                    "UPDATE _smithers_attempts SET status = ?5, finished_at = ?6, duration_ms = ?7, error = ?8,
                       input_tokens = ?9, output_tokens = ?10, cache_read_tokens = ?11, cache_write_tokens = ?12,
                       cost_usd = ?13, session_id = ?14, exit_code = ?15, model = ?16, cost_source = ?17
                     WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 AND attempt = ?4",
                )?
                .execute(params![
                    run_id,
                    node_id,
                    iteration,
                    attempt,
                    end.status,
                    now,
                    end.duration_ms,
                    end.error,
                    u.input_tokens.map(|v| v as i64),
                    u.output_tokens.map(|v| v as i64),
                    u.cache_read_tokens.map(|v| v as i64),
                    u.cache_write_tokens.map(|v| v as i64),
                    u.cost_usd,
                    end.session_id,
                    end.exit_code,
                    end.model,
                    end.cost_source.map(|c| c.as_str())
                ])?;
            }
            Write::Output {
                info,
                node_id,
                iteration,
                value,
            } => insert_output(c, info, run_id, node_id, *iteration, value)?,
            Write::Transcript {
                node_id,
                iteration,
                attempt,
                text,
            } => {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO _smithers_transcripts (run_id, node_id, iteration, attempt, transcript)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![run_id, node_id, iteration, attempt, text])?;
            }
            Write::Loop { loop_id, state } => {
                c.prepare_cached(
                    "INSERT INTO _smithers_ralph (run_id, loop_id, iteration, pass_start, parent_iteration, done)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (run_id, loop_id) DO UPDATE SET iteration = excluded.iteration,
                       pass_start = excluded.pass_start, parent_iteration = excluded.parent_iteration, done = excluded.done",
                )?
                .execute(params![run_id, loop_id, state.iteration, state.pass_start, state.parent_iteration, state.done])?;
                // The counter's history, so a rollback can put it back.
                c.prepare_cached(
                    "INSERT INTO _smithers_ralph_history (run_id, loop_id, seq, iteration, pass_start, parent_iteration, done)
                     VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) FROM _smithers_events), ?3, ?4, ?5, ?6)",
                )?
                .execute(params![run_id, loop_id, state.iteration, state.pass_start, state.parent_iteration, state.done])?;
            }
            Write::Frame {
                frame_no,
                hash,
                tree,
            } => {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO _smithers_frames (run_id, frame_no, tree_hash, tree, structure, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![run_id, frame_no, hash, tree.to_text(), serde_json::to_string(tree)?, now])?;
            }
            Write::State { key, value } => {
                c.prepare_cached(
                    "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )?
                .execute(params![key, value, now])?;
            }
            Write::Group(g) => super::steps::write_group(c, run_id, g, &now)?,
            Write::AttemptQueued { node_id, .. } => {
                return Err(crate::store::pool_unsupported(&format!(
                    "queueing `{node_id}` of run `{run_id}`"
                )))
            }
            Write::StepVcs(v) => super::steps::write_step_vcs(c, run_id, v)?,
            Write::StepEnd { step_id, status } => {
                super::steps::end_step(c, run_id, *step_id, *status, &now)?
            }
            Write::AttemptVcs {
                node_id,
                iteration,
                attempt,
                repo,
                before,
                after,
            } => {
                c.prepare_cached(
                    "UPDATE _smithers_attempts SET vcs_repo = ?5, vcs_before = COALESCE(?6, vcs_before),
                       vcs_after = COALESCE(?7, vcs_after)
                     WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3 AND attempt = ?4",
                )?
                .execute(params![run_id, node_id, iteration, attempt, repo, before, after])?;
            }
            Write::CachePut {
                key,
                workflow,
                node_id,
                table,
                value,
            } => {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO _smithers_cache
                       (cache_key, workflow, node_id, output_table, output_json, run_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    key,
                    workflow,
                    node_id,
                    table,
                    value.to_string(),
                    run_id,
                    now
                ])?;
            }
            Write::ApprovalRequest { node_id, iteration } => {
                c.prepare_cached(
                    "INSERT OR IGNORE INTO _smithers_approvals (run_id, node_id, iteration, status, requested_at)
                     VALUES (?1, ?2, ?3, 'pending', ?4)",
                )?
                .execute(params![run_id, node_id, iteration, now])?;
            }
            Write::Event(e) => {
                c.prepare_cached(
                    "INSERT INTO _smithers_events (run_id, at, kind, node_id, iteration, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    run_id,
                    e.at.to_string(),
                    e.kind.name(),
                    e.node_id,
                    e.iteration,
                    serde_json::to_string(&e.kind)?
                ])?;
            }
        }
    }
    Ok(())
}
