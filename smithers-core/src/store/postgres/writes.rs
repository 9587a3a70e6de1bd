//! Applying a [`WriteBatch`] on PostgreSQL: one prepared (cached) statement per [`Write`], sent
//! pipelined so a batch costs one round trip between `BEGIN` and `COMMIT`.
//!
//! Event sequence numbers come from an identity column, which hands out numbers when rows are
//! inserted, not when they commit: two writers of one run could commit seq 11 before seq 10, and
//! a reader following `events(run, after_seq)` that saw 11 would never see 10. So every batch
//! that writes an event (or anything that reads the run's latest `seq`: loop history, steps)
//! first takes the run's lock, [`RUN_LOCK`], held until it commits: a run's sequence numbers
//! are then handed out and committed in the same order.

use deadpool_postgres::{GenericClient, Transaction};
use futures::future::join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::output_rows::insert_output;
use crate::error::Result;
use crate::model::Timestamp;
use crate::store::{FenceToken, Write, WriteBatch};

/// An owned statement parameter.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$(Box::new($p) as Param),*] };
}

/// Statements of one transaction, sent together: tokio-postgres writes each request when its
/// future is first polled, so polling them in order sends them in order, and the server answers
/// them in order without waiting for the client between statements.
pub(super) struct Pipeline<'a, 't> {
    tx: &'a Transaction<'t>,
    /// The fencing check sent ahead of the writes: its statement, the run, the writer's token.
    fence: Option<(Statement, &'a str, &'a FenceToken)>,
    ops: Vec<(Statement, Vec<Param>)>,
}

/// The fencing check of the PostgreSQL store, the one place it is made: inside the caller's
/// transaction, the run's current lease owner and epoch must be `fence`'s. `lock` is the row lock
/// to take (`FOR KEY SHARE` for a batch, so a takeover waits for batches in flight; `FOR UPDATE`
/// before changing the lease; empty to only read).
pub(super) async fn check_fence(
    c: &impl GenericClient,
    run_id: &str,
    fence: &FenceToken,
    lock: &str,
) -> Result<()> {
    let st = c.prepare_cached(&fence_sql(lock)).await?;
    let row = c.query_opt(&st, &[&run_id]).await?;
    fence_outcome(run_id, fence, row.as_ref())
}

fn fence_sql(lock: &str) -> String {
    format!("SELECT lease_owner, lease_epoch FROM _smithers_runs WHERE run_id = $1 {lock}")
}

fn fence_outcome(
    run_id: &str,
    fence: &FenceToken,
    row: Option<&tokio_postgres::Row>,
) -> Result<()> {
    fence.check(
        run_id,
        row.map(|r| (r.get::<_, Option<&str>>(0), r.get::<_, i64>(1))),
    )
}

/// The run's lock (`$1` is the run id): a transaction-scoped advisory lock, taken before a
/// transaction hands out the run's next event sequence number, a step id, or reads the run's
/// latest `seq`, and held until it commits. Works for a run whose row does not exist (yet), and
/// never blocks a reader. Lock order: the run row first (fence, lease), then this.
pub(super) const RUN_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('smithers.run.' || $1::TEXT, 0))";

/// At most this many statements in flight, so a large batch never buffers without bound.
const IN_FLIGHT: usize = 30;

impl<'a, 't> Pipeline<'a, 't> {
    pub(super) fn new(tx: &'a Transaction<'t>) -> Self {
        Pipeline {
            tx,
            fence: None,
            ops: Vec::new(),
        }
    }

    /// Sends the fencing check of `run_id` ahead of the writes; [`Pipeline::run`] fails with
    /// `LeaseLost` when it does not hold, whatever the writes did (they are never committed).
    pub(super) async fn fence(&mut self, run_id: &'a str, token: &'a FenceToken) -> Result<()> {
        let st = self.tx.prepare_cached(&fence_sql("FOR KEY SHARE")).await?;
        self.fence = Some((st, run_id, token));
        Ok(())
    }

    /// Queues `sql` (prepared once per connection, then cached).
    pub(super) async fn push(&mut self, sql: &str, params: Vec<Param>) -> Result<()> {
        let st = self.tx.prepare_cached(sql).await?;
        self.ops.push((st, params));
        Ok(())
    }

    /// The transaction, for a write that must read what the statements before it wrote (after
    /// [`Pipeline::flush`]).
    pub(super) fn tx(&self) -> &'a Transaction<'t> {
        self.tx
    }

    /// Executes the queued statements in order, the fencing check first, and commits nothing;
    /// the queue is empty afterwards. Errors as [`Pipeline::run`].
    pub(super) async fn flush(&mut self) -> Result<()> {
        let tx = self.tx;
        let ops = std::mem::take(&mut self.ops);
        let mut chunks = ops.chunks(IN_FLIGHT);
        let first = chunks.next().unwrap_or_default();
        let fence = self.fence.take();
        let (fenced, results) = futures::join!(
            async move {
                match fence {
                    Some((st, run_id, token)) => {
                        let row = tx.query_opt(&st, &[&run_id]).await?;
                        fence_outcome(run_id, token, row.as_ref())
                    }
                    None => Ok(()),
                }
            },
            send(tx, first)
        );
        fenced?;
        for r in results {
            r?;
        }
        for chunk in chunks {
            for r in send(tx, chunk).await {
                r?;
            }
        }
        Ok(())
    }

    /// Executes the queued statements in order, the fencing check first; a stale token is
    /// reported before any statement's failure, else the first failure (the transaction is then
    /// aborted and must be rolled back).
    pub(super) async fn run(mut self) -> Result<()> {
        self.flush().await
    }
}

/// Executes `chunk` in `tx`, pipelined: `join_all` polls a list in order on its first poll, and
/// tokio-postgres writes a request when its future is first polled, so they go in queue order.
async fn send(
    tx: &Transaction<'_>,
    chunk: &[(Statement, Vec<Param>)],
) -> Vec<std::result::Result<u64, tokio_postgres::Error>> {
    join_all(chunk.iter().map(|(st, params)| async move {
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        tx.execute(st, &refs).await
    }))
    .await
}

/// Applies every write of `batch` inside `tx`, stamping its rows with `now` (the store's
/// clock). The one place batches are written.
pub(super) async fn apply(tx: &Transaction<'_>, batch: &WriteBatch, now: Timestamp) -> Result<()> {
    let run_id = batch.run_id.as_str();
    let now = now.to_string();
    let mut p = Pipeline::new(tx);
    // Fencing first: a stale writer's batch writes nothing (it is never committed).
    if let Some(fence) = &batch.fence {
        p.fence(run_id, fence).await?;
    }
    let ordered = batch.writes.iter().any(|w| {
        matches!(
            w,
            Write::Event(_) | Write::Loop { .. } | Write::Group(_) | Write::StepEnd { .. }
        )
    });
    if ordered {
        // Sequence numbers and step ids of the run, in commit order (see `RUN_LOCK`).
        p.push(RUN_LOCK, params![run_id.to_owned()]).await?;
    }
    let mut notified = std::collections::HashSet::new();
    for w in &batch.writes {
        match w {
            Write::RunStatus { status, error } => {
                let finished = status.is_final();
                // A final status answers any pending cancellation request.
                p.push(
                    "UPDATE _smithers_runs SET status = $2, error = $3, updated_at = $4,
                     finished_at = CASE WHEN $5 THEN $4 ELSE NULL END,
                     cancel_requested = CASE WHEN $5 THEN FALSE ELSE cancel_requested END
                     WHERE run_id = $1",
                    params![
                        run_id.to_owned(),
                        status.as_str(),
                        error.clone(),
                        now.clone(),
                        finished
                    ],
                )
                .await?;
            }
            Write::Node(n) => {
                p.push(
                    "INSERT INTO _smithers_nodes
                       (run_id, node_id, iteration, status, attempts, output_table, loop_id, last_error, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET
                       status = EXCLUDED.status, attempts = EXCLUDED.attempts, output_table = EXCLUDED.output_table,
                       loop_id = EXCLUDED.loop_id, last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at",
                    params![
                        run_id.to_owned(),
                        n.node_id.clone(),
                        i64::from(n.iteration),
                        n.status.as_str(),
                        i64::from(n.attempts),
                        n.output_table.clone(),
                        n.loop_id.clone(),
                        n.last_error.clone(),
                        now.clone()
                    ],
                )
                .await?;
            }
            Write::AttemptStart {
                node_id,
                iteration,
                attempt,
                agent,
                owner,
            } => {
                p.push(
                    "INSERT INTO _smithers_attempts (run_id, node_id, iteration, attempt, status, owner, agent, started_at)
                     VALUES ($1, $2, $3, $4, 'in-progress', $5, $6, $7)",
                    params![
                        run_id.to_owned(),
                        node_id.clone(),
                        i64::from(*iteration),
                        i64::from(*attempt),
                        owner.clone(),
                        agent.clone(),
                        now.clone()
                    ],
                )
                .await?;
            }
            Write::AttemptEnd {
                node_id,
                iteration,
                attempt,
                end,
            } => {
                let u = &end.usage;
                p.push(
                    "UPDATE _smithers_attempts SET status = $5, finished_at = $6, duration_ms = $7, error = $8,
                       input_tokens = $9, output_tokens = $10, cache_read_tokens = $11, cache_write_tokens = $12,
                       cost_usd = $13, session_id = $14, exit_code = $15, model = $16, cost_source = $17
                     WHERE run_id = $1 AND node_id = $2 AND iteration = $3 AND attempt = $4",
                    params![
                        run_id.to_owned(),
                        node_id.clone(),
                        i64::from(*iteration),
                        i64::from(*attempt),
                        end.status,
                        now.clone(),
                        end.duration_ms,
                        end.error.clone(),
                        u.input_tokens.map(|v| v as i64),
                        u.output_tokens.map(|v| v as i64),
                        u.cache_read_tokens.map(|v| v as i64),
                        u.cache_write_tokens.map(|v| v as i64),
                        u.cost_usd,
                        end.session_id.clone(),
                        end.exit_code.map(i64::from),
                        end.model.clone(),
                        end.cost_source.map(|c| c.as_str())
                    ],
                )
                .await?;
            }
            Write::Output {
                info,
                node_id,
                iteration,
                value,
            } => {
                let (sql, params) = insert_output(info, run_id, node_id, *iteration, value)?;
                p.push(&sql, params).await?;
            }
            Write::Transcript {
                node_id,
                iteration,
                attempt,
                text,
            } => {
                p.push(
                    "INSERT INTO _smithers_transcripts (run_id, node_id, iteration, attempt, transcript)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (run_id, node_id, iteration, attempt) DO UPDATE SET transcript = EXCLUDED.transcript",
                    params![
                        run_id.to_owned(),
                        node_id.clone(),
                        i64::from(*iteration),
                        i64::from(*attempt),
                        text.clone()
                    ],
                )
                .await?;
            }
            Write::Loop { loop_id, state } => {
                p.push(
                    "INSERT INTO _smithers_ralph (run_id, loop_id, iteration, pass_start, parent_iteration, done)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (run_id, loop_id) DO UPDATE SET iteration = EXCLUDED.iteration,
                       pass_start = EXCLUDED.pass_start, parent_iteration = EXCLUDED.parent_iteration, done = EXCLUDED.done",
                    params![
                        run_id.to_owned(),
                        loop_id.clone(),
                        i64::from(state.iteration),
                        i64::from(state.pass_start),
                        i64::from(state.parent_iteration),
                        state.done
                    ],
                )
                .await?;
                // The counter's history, so a rollback can put it back.
                p.push(
                    "INSERT INTO _smithers_ralph_history (run_id, loop_id, seq, iteration, pass_start, parent_iteration, done)
                     VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) FROM _smithers_events WHERE run_id = $1),
                             $3, $4, $5, $6)",
                    params![
                        run_id.to_owned(),
                        loop_id.clone(),
                        i64::from(state.iteration),
                        i64::from(state.pass_start),
                        i64::from(state.parent_iteration),
                        state.done
                    ],
                )
                .await?;
            }
            Write::Frame {
                frame_no,
                hash,
                tree,
            } => {
                p.push(
                    "INSERT INTO _smithers_frames (run_id, frame_no, tree_hash, tree, structure, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (run_id, frame_no) DO UPDATE SET
                       tree_hash = EXCLUDED.tree_hash, tree = EXCLUDED.tree,
                       structure = EXCLUDED.structure, created_at = EXCLUDED.created_at",
                    params![
                        run_id.to_owned(),
                        i64::from(*frame_no),
                        hash.clone(),
                        tree.to_text(),
                        serde_json::to_string(tree)?,
                        now.clone()
                    ],
                )
                .await?;
            }
            Write::State { key, value } => {
                p.push(
                    "INSERT INTO state (key, value, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                    params![key.clone(), value.clone(), now.clone()],
                )
                .await?;
            }
            Write::Group(g) => super::steps::write_group(&mut p, run_id, g, &now).await?,
            Write::StepVcs(v) => super::steps::write_step_vcs(&mut p, run_id, v).await?,
            Write::StepEnd { step_id, status } => {
                super::steps::end_step(&mut p, run_id, *step_id, *status, &now).await?
            }
            Write::AttemptVcs {
                node_id,
                iteration,
                attempt,
                repo,
                before,
                after,
            } => {
                p.push(
                    "UPDATE _smithers_attempts SET vcs_repo = $5, vcs_before = COALESCE($6, vcs_before),
                       vcs_after = COALESCE($7, vcs_after)
                     WHERE run_id = $1 AND node_id = $2 AND iteration = $3 AND attempt = $4",
                    params![
                        run_id.to_owned(),
                        node_id.clone(),
                        i64::from(*iteration),
                        i64::from(*attempt),
                        repo.clone(),
                        before.clone(),
                        after.clone()
                    ],
                )
                .await?;
            }
            Write::CachePut {
                key,
                workflow,
                node_id,
                table,
                value,
            } => {
                p.push(
                    "INSERT INTO _smithers_cache
                       (cache_key, workflow, node_id, output_table, output_json, run_id, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (cache_key) DO UPDATE SET workflow = EXCLUDED.workflow, node_id = EXCLUDED.node_id,
                       output_table = EXCLUDED.output_table, output_json = EXCLUDED.output_json,
                       run_id = EXCLUDED.run_id, created_at = EXCLUDED.created_at",
                    params![
                        key.clone(),
                        workflow.clone(),
                        node_id.clone(),
                        table.clone(),
                        value.clone(),
                        run_id.to_owned(),
                        now.clone()
                    ],
                )
                .await?;
            }
            Write::ApprovalRequest { node_id, iteration } => {
                p.push(
                    "INSERT INTO _smithers_approvals (run_id, node_id, iteration, status, requested_at)
                     VALUES ($1, $2, $3, 'pending', $4)
                     ON CONFLICT (run_id, node_id, iteration) DO NOTHING",
                    params![
                        run_id.to_owned(),
                        node_id.clone(),
                        i64::from(*iteration),
                        now.clone()
                    ],
                )
                .await?;
            }
            Write::AttemptQueued {
                workflow,
                node_id,
                iteration,
                attempt,
                payload,
            } => {
                p.push(
                    "UPDATE _smithers_attempts SET queue = 'queued', payload = $5, claim_owner = NULL,
                       claim_expires_ms = NULL, stop_requested = FALSE, outcome = NULL
                     WHERE run_id = $1 AND node_id = $2 AND iteration = $3 AND attempt = $4",
                    params![
                        run_id.to_owned(),
                        node_id.clone(),
                        i64::from(*iteration),
                        i64::from(*attempt),
                        serde_json::to_value(payload)?
                    ],
                )
                .await?;
                // Delivered when the batch commits: the workers of the workflow wake up (once
                // per batch and workflow, however many attempts it queues).
                if notified.insert(workflow.as_str()) {
                    p.push(
                        "SELECT pg_notify($1, '')",
                        params![crate::store::queue_channel(workflow)],
                    )
                    .await?;
                }
            }
            Write::Event(e) => {
                p.push(
                    "INSERT INTO _smithers_events (run_id, at, kind, node_id, iteration, payload)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    params![
                        run_id.to_owned(),
                        e.at.to_string(),
                        e.kind.name(),
                        e.node_id.clone(),
                        e.iteration.map(i64::from),
                        serde_json::to_value(&e.kind)?
                    ],
                )
                .await?;
            }
        }
    }
    p.run().await
}
