//! The PostgreSQL store, for runs that outgrow one machine: the same [`Store`] trait and the same
//! conformance suite as SQLite, on tokio-postgres with a deadpool pool. Each batch is one
//! transaction from the pool, its statements prepared once per connection and pipelined; several
//! processes (drivers, `smithers` commands) share one database safely.
//!
//! Select it with `--db postgres://USER@HOST:PORT/DATABASE` (or `SMITHERS_DB`). Tables live in the
//! connection's current schema (`public` unless the URL sets `options=-csearch_path=...`, or
//! [`PostgresStore::connect_in_schema`] is used).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use serde_json::Value;
use tokio_postgres::{IsolationLevel, NoTls, Row};

use super::{
    pending_iteration, stored_json, stored_name, stored_time, ApprovalRecord, AttemptRecord,
    CancelOutcome, Claim, ClaimHolder, ClaimRenewal, EventRecord, FenceToken, ForkRun, FrameRecord,
    ListedRun, LoadedRun, NewRun, NodeRecord, PhaseRecord, QueuedRecord, RecordedOutcome,
    RemoteOutcome, RestartRecord, RewindReport, RewindTo, RunRecord, StepRecord, Store,
    UsageReport, WorkerRecord, Write, WriteBatch,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::model::{ApprovalStatus, LoopState, RunStatus, Timestamp, Usage};
use crate::output::OutputInfo;
use crate::store::sqlite::{check_ident, holder_is_dead};

mod connect;
mod copy;
mod error;
mod output_rows;
mod queue;
mod steps;
mod workers;
mod writes;

use connect::{connect_error, describe, migrate, parse, pool_error};
pub use copy::CopyReport;
#[cfg(feature = "conformance")]
pub(crate) use error::postgres_message;
use output_rows::{ensure_output_table, read_outputs};
use writes::{apply, check_fence};

/// Connections the pool keeps at most.
const POOL_SIZE: usize = 16;

/// The PostgreSQL [`Store`].
pub struct PostgresStore {
    pool: Pool,
    target: String,
    /// For connections of their own (LISTEN).
    config: tokio_postgres::Config,
    /// Where row timestamps and lease expiry read the time. Claim expiry in the pool queue reads
    /// the server's clock instead (see `queue.rs`).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`) and
    /// applies pending migrations. Errors name host, port and database and say whether the server
    /// could not be reached, refused the login, or has no such database; a schema written by a
    /// newer smithers is refused. After any of them nothing was changed.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(url, None).await
    }

    /// Like [`PostgresStore::connect`], with every table in `schema` (created if missing): for
    /// tests, or several independent smithers databases in one PostgreSQL database. `schema` is
    /// a lowercase identifier.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self> {
        Self::open(url, Some(schema)).await
    }

    async fn open(url: &str, schema: Option<&str>) -> Result<Self> {
        let mut config = parse(url)?;
        let mut target = describe(&config);
        if let Some(schema) = schema {
            check_ident(schema)?;
            if schema.to_ascii_lowercase() != schema {
                return Err(Error::InvalidIdentifier(format!(
                    "{schema} (a schema name must be lowercase)"
                )));
            }
            let options = match config.get_options() {
                Some(o) => format!("{o} -csearch_path={schema}"),
                None => format!("-csearch_path={schema}"),
            };
            config.options(&options);
            target = format!("{target}, schema `{schema}`");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| Error::Connect {
                target: target.clone(),
                message: format!("cannot build the connection pool: {e}"),
            })?;
        let store = PostgresStore {
            pool,
            target,
            config,
            clock: Arc::new(SystemClock),
        };
        let mut client = store.client().await?;
        if let Some(schema) = schema {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await
                .map_err(|e| connect_error(&store.target, &e))?;
        }
        migrate(&mut client, &store.target).await?;
        drop(client);
        Ok(store)
    }

    /// Reads the time from `clock` (a [`crate::clock::TestClock`] in tests) instead of the
    /// system clock: row timestamps and lease expiry follow it, as with
    /// [`crate::store::SqliteStore::with_clock`].
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// What this store is connected to: `PostgreSQL database `x` at host:port (user `u`)`.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn client(&self) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_error(&self.target, e))
    }
}

const RUN_COLUMNS: &str =
    "run_id, workflow, status, input_json, error, created_at, updated_at, lease_owner, lease_expires_ms, lease_epoch, parent_run_id, parent_frame";

fn u32_at(r: &Row, i: usize) -> u32 {
    r.get::<_, i64>(i) as u32
}

/// Column `idx` of a `table` row, RFC 3339 text, as a [`Timestamp`]; an error naming the
/// table, column and value when it does not parse.
fn time_at(r: &Row, idx: usize, table: &'static str, column: &'static str) -> Result<Timestamp> {
    Ok(stored_time(table, column, r.get::<_, &str>(idx))?)
}

/// Column `idx` of a `table` row, one of the stored names of `T` (a status, a cost source);
/// an error naming the table, column and value for any other text.
fn name_at<T: crate::model::StoredName>(
    r: &Row,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> Result<T> {
    Ok(stored_name(table, column, r.get::<_, &str>(idx))?)
}

/// [`name_at`] of a nullable column (NULL: none).
fn name_at_opt<T: crate::model::StoredName>(
    r: &Row,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> Result<Option<T>> {
    r.get::<_, Option<&str>>(idx)
        .map(|v| Ok(stored_name(table, column, v)?))
        .transpose()
}

/// Column `idx` of a `table` row, `JSONB`, as a `T`; an error naming the table, column and
/// value when it is JSON of another shape.
pub(super) fn json_at<T: serde::de::DeserializeOwned>(
    r: &Row,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> Result<T> {
    Ok(super::stored_json_value(
        table,
        column,
        r.get::<_, Value>(idx),
    )?)
}

/// [`time_at`] of a nullable column.
fn time_at_opt(
    r: &Row,
    idx: usize,
    table: &'static str,
    column: &'static str,
) -> Result<Option<Timestamp>> {
    r.get::<_, Option<&str>>(idx)
        .map(|v| Ok(stored_time(table, column, v)?))
        .transpose()
}

fn run_from_row(r: &Row) -> Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0),
        workflow: r.get(1),
        status: name_at(r, 2, "_smithers_runs", "status")?,
        input: r.get(3),
        error: r.get(4),
        created_at: time_at(r, 5, "_smithers_runs", "created_at")?,
        updated_at: time_at(r, 6, "_smithers_runs", "updated_at")?,
        lease_owner: r.get(7),
        lease_expires_ms: r.get(8),
        lease_epoch: r.get(9),
        parent_run_id: r.get(10),
        parent_frame: r.get::<_, Option<i64>>(11).map(|f| f as u32),
    })
}

fn node_from_row(r: &Row) -> Result<NodeRecord> {
    Ok(NodeRecord {
        node_id: r.get(0),
        iteration: u32_at(r, 1),
        status: name_at(r, 2, "_smithers_nodes", "status")?,
        attempts: u32_at(r, 3),
        output_table: r.get(4),
        loop_id: r.get(5),
        last_error: r.get(6),
    })
}

fn frame_from_row(r: &Row) -> Result<FrameRecord> {
    let tree: String = r.get(2);
    // A frame recorded before frames were data (no structure) is read from its text; a
    // structure that does not read is a damaged frame.
    let structure = match r.get::<_, Option<&str>>(4) {
        Some(s) => stored_json("_smithers_frames", "structure", s)?,
        None => crate::frame::FrameNode::from_legacy_text(&tree),
    };
    Ok(FrameRecord {
        frame_no: u32_at(r, 0),
        tree_hash: r.get(1),
        tree,
        structure,
        created_at: time_at(r, 3, "_smithers_frames", "created_at")?,
    })
}

fn approval_from_row(r: &Row) -> Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        node_id: r.get(0),
        iteration: u32_at(r, 1),
        status: name_at(r, 2, "_smithers_approvals", "status")?,
        requested_at: time_at(r, 3, "_smithers_approvals", "requested_at")?,
        decided_at: time_at_opt(r, 4, "_smithers_approvals", "decided_at")?,
        note: r.get(5),
    })
}

const NODES_SQL: &str =
    "SELECT node_id, iteration, status, attempts, output_table, loop_id, last_error
     FROM _smithers_nodes WHERE run_id = $1 ORDER BY seq";
const APPROVALS_SQL: &str = "SELECT node_id, iteration, status, requested_at, decided_at, note
     FROM _smithers_approvals WHERE run_id = $1 ORDER BY seq";

async fn query_nodes(c: &impl GenericClient, run_id: &str) -> Result<Vec<NodeRecord>> {
    let st = c.prepare_cached(NODES_SQL).await?;
    c.query(&st, &[&run_id])
        .await?
        .iter()
        .map(node_from_row)
        .collect()
}

async fn query_approvals(c: &impl GenericClient, run_id: &str) -> Result<Vec<ApprovalRecord>> {
    let st = c.prepare_cached(APPROVALS_SQL).await?;
    c.query(&st, &[&run_id])
        .await?
        .iter()
        .map(approval_from_row)
        .collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_run_with(&self, run: NewRun, first: WriteBatch) -> Result<FenceToken> {
        let mut c = self.client().await?;
        let c = c.transaction().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO _smithers_runs
                   (run_id, workflow, status, input_json, created_at, updated_at, lease_owner, lease_expires_ms, lease_epoch)
                 VALUES ($1, $2, 'running', $3, $4, $4, $5, $6, 1)",
            )
            .await?;
        let now = self.now();
        let expires = now.as_millis() + run.lease_ttl.as_millis() as i64;
        c.execute(
            &st,
            &[
                &run.run_id,
                &run.workflow,
                &run.input,
                &now.to_string(),
                &run.owner,
                &expires,
            ],
        )
        .await?;
        let fence = FenceToken::new(run.owner, 1);
        if !first.is_empty() {
            apply(&c, &first.fenced(&fence), now).await?;
        }
        c.commit().await?;
        Ok(fence)
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM _smithers_runs WHERE run_id = $1"
            ))
            .await?;
        c.query_opt(&st, &[&run_id])
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn latest_run(&self) -> Result<Option<RunRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM _smithers_runs ORDER BY created_at DESC, seq DESC LIMIT 1"
            ))
            .await?;
        c.query_opt(&st, &[])
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn runs(&self) -> Result<Vec<RunRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM _smithers_runs ORDER BY created_at DESC, seq DESC"
            ))
            .await?;
        c.query(&st, &[]).await?.iter().map(run_from_row).collect()
    }

    async fn run_list(&self) -> Result<Vec<ListedRun>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM _smithers_runs ORDER BY created_at DESC, seq DESC"
            ))
            .await?;
        c.query(&st, &[])
            .await?
            .iter()
            .map(|r| match run_from_row(r) {
                Ok(run) => Ok(ListedRun::Run(run)),
                Err(Error::InvalidRecord(error)) => Ok(ListedRun::Damaged {
                    run_id: r.get(0),
                    error,
                }),
                Err(e) => Err(e),
            })
            .collect()
    }

    async fn acquire_lease(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<FenceToken> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT lease_owner, lease_expires_ms FROM _smithers_runs WHERE run_id = $1 FOR UPDATE",
                &[&run_id],
            )
            .await?;
        let Some(row) = row else {
            return Err(Error::RunNotFound(run_id.to_owned()));
        };
        let (holder, expires): (Option<String>, Option<i64>) = (row.get(0), row.get(1));
        let now = self.now().as_millis();
        if let (Some(holder), Some(expires)) = (holder, expires) {
            if holder != owner && expires > now && !holder_is_dead(&holder) {
                return Err(Error::LeaseHeld {
                    run_id: run_id.to_owned(),
                    owner: holder,
                    expires_at: Timestamp::from_millis(expires).to_string(),
                });
            }
        }
        // A new term: whoever held the lease before now holds a stale token. The row lock taken
        // above waits for fenced batches in flight (they hold FOR KEY SHARE) to commit first.
        let epoch: i64 = tx
            .query_one(
                "UPDATE _smithers_runs SET lease_owner = $2, lease_expires_ms = $3, lease_epoch = lease_epoch + 1
                 WHERE run_id = $1 RETURNING lease_epoch",
                &[&run_id, &owner, &(now + ttl.as_millis() as i64)],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(FenceToken::new(owner, epoch))
    }

    async fn renew_lease(&self, run_id: &str, fence: &FenceToken, ttl: Duration) -> Result<()> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE _smithers_runs SET lease_expires_ms = $4
                 WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
            )
            .await?;
        let expires = self.now().as_millis() + ttl.as_millis() as i64;
        let n = c
            .execute(&st, &[&run_id, &fence.owner, &fence.epoch, &expires])
            .await?;
        if n == 0 {
            // Not ours any more: say who holds it now.
            check_fence(&c, run_id, fence, "").await?;
        }
        Ok(())
    }

    async fn release_lease(&self, run_id: &str, fence: &FenceToken) -> Result<()> {
        // Not ours any more: nothing to give up.
        let c = self.client().await?;
        c.execute(
            "UPDATE _smithers_runs SET lease_owner = NULL, lease_expires_ms = NULL
             WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
            &[&run_id, &fence.owner, &fence.epoch],
        )
        .await?;
        Ok(())
    }

    async fn reset_for_resume(&self, run_id: &str, fence: &FenceToken) -> Result<u32> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        check_fence(&tx, run_id, fence, "FOR UPDATE").await?;
        let now = self.now().to_string();
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&run_id, &now];
        // Three statements, one round trip. Attempts queued for workers (pool mode) are not
        // abandoned: the new driver adopts them (`Store::queued_attempts`), and their nodes stay
        // running.
        let abandoned = tx.execute(
            "UPDATE _smithers_attempts SET status = 'abandoned', finished_at = $2,
               error = COALESCE(error, 'the process driving this attempt stopped before it ended')
             WHERE run_id = $1 AND status = 'in-progress' AND queue IS NULL",
            &args,
        );
        let nodes = tx.execute(
            "UPDATE _smithers_nodes n SET status = 'pending', updated_at = $2
             WHERE n.run_id = $1 AND n.status IN ('running', 'failed')
               AND NOT EXISTS (SELECT 1 FROM _smithers_attempts a
                 WHERE a.run_id = n.run_id AND a.node_id = n.node_id AND a.iteration = n.iteration
                   AND a.status = 'in-progress' AND a.queue IS NOT NULL)",
            &args,
        );
        let run = tx.execute(
            "UPDATE _smithers_runs SET status = 'running', error = NULL, finished_at = NULL, updated_at = $2,
               cancel_requested = FALSE WHERE run_id = $1",
            &args,
        );
        let (n, _, _) = tokio::try_join!(abandoned, nodes, run)?;
        tx.commit().await?;
        Ok(n as u32)
    }

    async fn load(&self, run_id: &str) -> Result<LoadedRun> {
        let mut c = self.client().await?;
        // One snapshot, so a load never mixes two commits of a concurrent writer.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let loops_st = tx
            .prepare_cached(
                "SELECT loop_id, iteration, pass_start, parent_iteration, done FROM _smithers_ralph WHERE run_id = $1",
            )
            .await?;
        let state_st = tx.prepare_cached("SELECT key, value FROM state").await?;
        let frame_st = tx
            .prepare_cached(
                "SELECT frame_no, tree_hash FROM _smithers_frames WHERE run_id = $1 ORDER BY frame_no DESC LIMIT 1",
            )
            .await?;
        let failures_st = tx
            .prepare_cached(
                "SELECT node_id, iteration, COUNT(*) FROM _smithers_attempts
                 WHERE run_id = $1 AND status = 'failed' AND NOT rolled_back GROUP BY node_id, iteration",
            )
            .await?;
        let (nodes, loops, state, frame, failures, approvals) = tokio::try_join!(
            query_nodes(&tx, run_id),
            async { Ok::<_, Error>(tx.query(&loops_st, &[&run_id]).await?) },
            async { Ok(tx.query(&state_st, &[]).await?) },
            async { Ok(tx.query_opt(&frame_st, &[&run_id]).await?) },
            async { Ok(tx.query(&failures_st, &[&run_id]).await?) },
            query_approvals(&tx, run_id),
        )?;
        let tables: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.output_table.clone())
            .collect();
        let mut outputs = Vec::new();
        for t in tables {
            read_outputs(&tx, &t, run_id, &nodes, &mut outputs).await?;
        }
        tx.commit().await?;
        Ok(LoadedRun {
            loops: loops
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        LoopState {
                            iteration: u32_at(r, 1),
                            pass_start: u32_at(r, 2),
                            parent_iteration: u32_at(r, 3),
                            done: r.get(4),
                        },
                    )
                })
                .collect(),
            state: state.iter().map(|r| (r.get(0), r.get(1))).collect(),
            last_frame: frame.as_ref().map_or(0, |r| u32_at(r, 0)),
            last_frame_hash: frame.as_ref().map(|r| r.get(1)),
            failures: failures
                .iter()
                .map(|r| (r.get(0), u32_at(r, 1), u32_at(r, 2)))
                .collect(),
            approvals,
            nodes,
            outputs,
        })
    }

    async fn ensure_output_table(&self, info: OutputInfo) -> Result<()> {
        let mut c = self.client().await?;
        ensure_output_table(&mut c, &info, self.now()).await
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        apply(&tx, &batch, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn nodes(&self, run_id: &str) -> Result<Vec<NodeRecord>> {
        let c = self.client().await?;
        query_nodes(&c, run_id).await
    }

    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT node_id, iteration, attempt, status, agent, started_at, duration_ms, error,
                   input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, session_id,
                   exit_code, model, vcs_repo, vcs_before, vcs_after, cost_source, queue, claim_owner
                 FROM _smithers_attempts WHERE run_id = $1 ORDER BY seq",
            )
            .await?;
        let tokens = |r: &Row, i: usize| r.get::<_, Option<i64>>(i).map(|v| v as u64);
        c.query(&st, &[&run_id])
            .await?
            .iter()
            .map(|r| {
                Ok(AttemptRecord {
                    node_id: r.get(0),
                    iteration: u32_at(r, 1),
                    attempt: u32_at(r, 2),
                    status: r.get(3),
                    agent: r.get(4),
                    started_at: time_at(r, 5, "_smithers_attempts", "started_at")?,
                    duration_ms: r.get(6),
                    error: r.get(7),
                    usage: Usage {
                        input_tokens: tokens(r, 8),
                        output_tokens: tokens(r, 9),
                        cache_read_tokens: tokens(r, 10),
                        cache_write_tokens: tokens(r, 11),
                        cost_usd: r.get(12),
                    },
                    session_id: r.get(13),
                    exit_code: r.get::<_, Option<i64>>(14).map(|v| v as i32),
                    model: r.get(15),
                    vcs_repo: r.get(16),
                    vcs_before: r.get(17),
                    vcs_after: r.get(18),
                    cost_source: name_at_opt(r, 19, "_smithers_attempts", "cost_source")?,
                    queue: r.get(20),
                    claim_owner: r.get(21),
                })
            })
            .collect()
    }

    async fn events(&self, run_id: &str, after_seq: i64) -> Result<Vec<EventRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT seq, at, node_id, iteration, payload FROM _smithers_events
                 WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            )
            .await?;
        c.query(&st, &[&run_id, &after_seq])
            .await?
            .iter()
            .map(|r| {
                Ok(EventRecord {
                    seq: r.get(0),
                    event: Event {
                        run_id: run_id.to_owned(),
                        at: {
                            let at: String = r.get(1);
                            crate::model::Timestamp::parse(&at).ok_or_else(|| {
                                crate::Error::InvalidRecord(format!(
                                    "an event of run `{run_id}` has the timestamp `{at}`, which is not RFC 3339 UTC; the database was edited or is damaged"
                                ))
                            })?
                        },
                        node_id: r.get(2),
                        iteration: r.get::<_, Option<i64>>(3).map(|v| v as u32),
                        kind: json_at(r, 4, "_smithers_events", "payload")?,
                    },
                })
            })
            .collect()
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        let c = self.client().await?;
        steps::query_steps(&c, run_id).await
    }

    async fn phases(&self, run_id: &str) -> Result<Vec<PhaseRecord>> {
        let c = self.client().await?;
        steps::query_phases(&c, run_id).await
    }

    async fn start_step(&self, run_id: &str, name: Option<&str>) -> Result<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let id = steps::start_step(&tx, run_id, name, &self.now().to_string()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn rewind(&self, run_id: &str, to: RewindTo, fence: &FenceToken) -> Result<RewindReport> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let at = self.now();
        let now = at.to_string();
        let report = steps::rewind(&tx, run_id, &to, fence, &now).await?;
        let what = match &to {
            RewindTo::Step(id) => format!("rolled back to before step {id}"),
            RewindTo::Frame(f) => format!("rewound to frame {f}"),
        };
        tx.execute(
            "UPDATE _smithers_runs SET status = 'cancelled', error = $2, finished_at = NULL,
               cancel_requested = FALSE, updated_at = $3 WHERE run_id = $1",
            &[
                &run_id,
                &format!("{what}; `resume` re-runs what was cut"),
                &now,
            ],
        )
        .await?;
        let mut b = WriteBatch::new(run_id);
        b.push(Write::Event(Event::run(
            run_id,
            at,
            EventKind::RunRewound {
                to: what,
                seq: report.seq,
                steps: report.deactivated_steps.clone(),
                nodes: report.reset_nodes.len() as u32,
            },
        )));
        apply(&tx, &b, at).await?;
        tx.commit().await?;
        Ok(report)
    }

    async fn fork_run(&self, fork: ForkRun) -> Result<RunRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let at = self.now();
        steps::fork(&tx, &fork, &at.to_string()).await?;
        let mut b = WriteBatch::new(&fork.run_id);
        b.push(Write::Event(Event::run(
            &fork.run_id,
            at,
            EventKind::RunForked {
                parent_run_id: fork.parent_run_id.clone(),
                frame: fork.frame,
            },
        )));
        apply(&tx, &b, at).await?;
        let row = tx
            .query_one(
                &format!("SELECT {RUN_COLUMNS} FROM _smithers_runs WHERE run_id = $1"),
                &[&fork.run_id],
            )
            .await?;
        tx.commit().await?;
        run_from_row(&row)
    }

    async fn cache_get(&self, key: &str) -> Result<Option<Value>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT output_json FROM _smithers_cache WHERE cache_key = $1")
            .await?;
        Ok(c.query_opt(&st, &[&key]).await?.map(|r| r.get(0)))
    }

    async fn approvals(&self, run_id: &str) -> Result<Vec<ApprovalRecord>> {
        let c = self.client().await?;
        query_approvals(&c, run_id).await
    }

    async fn decide_approval(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: Option<u32>,
        approve: bool,
        note: Option<&str>,
    ) -> Result<ApprovalRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let pending: Vec<u32> = tx
            .query(
                "SELECT iteration FROM _smithers_approvals
                 WHERE run_id = $1 AND node_id = $2 AND status = 'pending' ORDER BY iteration FOR UPDATE",
                &[&run_id, &node_id],
            )
            .await?
            .iter()
            .map(|r| u32_at(r, 0))
            .collect();
        let iteration = pending_iteration(run_id, node_id, iteration, &pending)?;
        let status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        let at = self.now();
        let row = tx
            .query_one(
                "UPDATE _smithers_approvals SET status = $4, decided_at = $5, note = $6
                 WHERE run_id = $1 AND node_id = $2 AND iteration = $3 RETURNING requested_at",
                &[
                    &run_id,
                    &node_id,
                    &i64::from(iteration),
                    &status.as_str(),
                    &at.to_string(),
                    &note,
                ],
            )
            .await?;
        let requested_at = time_at(&row, 0, "_smithers_approvals", "requested_at")?;
        let mut b = WriteBatch::new(run_id);
        b.push(Write::Event(Event::node(
            run_id,
            node_id,
            iteration,
            at,
            EventKind::ApprovalDecided {
                approved: approve,
                note: note.map(str::to_owned),
            },
        )));
        apply(&tx, &b, at).await?;
        tx.commit().await?;
        Ok(ApprovalRecord {
            node_id: node_id.to_owned(),
            iteration,
            status,
            requested_at,
            decided_at: Some(at),
            note: note.map(str::to_owned),
        })
    }

    async fn frames(&self, run_id: &str) -> Result<Vec<FrameRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT frame_no, tree_hash, tree, created_at, structure FROM _smithers_frames
                 WHERE run_id = $1 ORDER BY frame_no",
            )
            .await?;
        c.query(&st, &[&run_id])
            .await?
            .iter()
            .map(frame_from_row)
            .collect()
    }

    async fn frame(&self, run_id: &str, frame_no: Option<u32>) -> Result<Option<FrameRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT frame_no, tree_hash, tree, created_at, structure FROM _smithers_frames
                 WHERE run_id = $1 AND ($2::BIGINT IS NULL OR frame_no = $2) ORDER BY frame_no DESC LIMIT 1",
            )
            .await?;
        let frame_no = frame_no.map(i64::from);
        c.query_opt(&st, &[&run_id, &frame_no])
            .await?
            .as_ref()
            .map(frame_from_row)
            .transpose()
    }

    async fn request_cancel(&self, run_id: &str) -> Result<CancelOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT status, lease_owner, lease_expires_ms FROM _smithers_runs WHERE run_id = $1 FOR UPDATE",
                &[&run_id],
            )
            .await?
        else {
            return Err(Error::RunNotFound(run_id.to_owned()));
        };
        let status: RunStatus = name_at(&row, 0, "_smithers_runs", "status")?;
        if status.is_final() {
            return Ok(CancelOutcome::AlreadyFinal(status));
        }
        let (holder, expires): (Option<String>, Option<i64>) = (row.get(1), row.get(2));
        let now = self.now();
        if let (Some(owner), Some(expires)) = (holder, expires) {
            if expires > now.as_millis() && !holder_is_dead(&owner) {
                tx.execute(
                    "UPDATE _smithers_runs SET cancel_requested = TRUE, updated_at = $2 WHERE run_id = $1",
                    &[&run_id, &now.to_string()],
                )
                .await?;
                tx.commit().await?;
                return Ok(CancelOutcome::Requested { owner });
            }
        }
        // Nobody drives it: cancel it here, as the engine would have.
        let mut b = WriteBatch::new(run_id);
        b.push(Write::RunStatus {
            status: RunStatus::Cancelled,
            error: None,
        });
        b.push(Write::Event(Event::run(
            run_id,
            now,
            EventKind::RunCancelled,
        )));
        apply(&tx, &b, now).await?;
        tx.commit().await?;
        Ok(CancelOutcome::Cancelled)
    }

    async fn cancel_requested(&self, run_id: &str) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT cancel_requested FROM _smithers_runs WHERE run_id = $1")
            .await?;
        c.query_opt(&st, &[&run_id])
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| Error::RunNotFound(run_id.to_owned()))
    }

    async fn raise_budget(&self, run_id: &str, raise: crate::budget::BudgetRaise) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO _smithers_budget_raises (run_id, node_id, add_usd, add_tokens, raised_at)
                 SELECT run_id, $2, $3, $4, $5 FROM _smithers_runs WHERE run_id = $1",
                &[
                    &run_id,
                    &raise.node_id,
                    &raise.add_usd,
                    &(raise.add_tokens as i64),
                    &self.now().to_string(),
                ],
            )
            .await?;
        if n == 0 {
            return Err(Error::RunNotFound(run_id.to_owned()));
        }
        Ok(())
    }

    async fn budget_raises(&self, run_id: &str) -> Result<Vec<crate::budget::BudgetRaise>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT node_id, add_usd, add_tokens FROM _smithers_budget_raises
                 WHERE run_id = $1 ORDER BY seq",
            )
            .await?;
        Ok(c.query(&st, &[&run_id])
            .await?
            .iter()
            .map(|r| crate::budget::BudgetRaise {
                node_id: r.get(0),
                add_usd: r.get(1),
                add_tokens: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
    }

    async fn active_runs(&self) -> Result<Vec<RunRecord>> {
        workers::active_runs(&self.client().await?).await
    }

    async fn put_worker(&self, worker: &WorkerRecord) -> Result<()> {
        workers::put_worker(&self.client().await?, worker).await
    }

    async fn remove_worker(&self, worker_id: &str) -> Result<()> {
        workers::remove_worker(&self.client().await?, worker_id).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        workers::workers(&self.client().await?).await
    }

    async fn restarts(&self, run_id: &str) -> Result<Option<RestartRecord>> {
        workers::restarts(&self.client().await?, run_id).await
    }

    async fn put_restarts(&self, record: &RestartRecord, fence: &FenceToken) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        check_fence(&tx, &record.run_id, fence, "FOR KEY SHARE").await?;
        workers::put_restarts(&tx, record).await?;
        tx.commit().await?;
        Ok(())
    }

    fn supports_pool(&self) -> bool {
        true
    }

    async fn claim_attempts(
        &self,
        workflow: &str,
        owner: &str,
        limit: usize,
        ttl: Duration,
    ) -> Result<Vec<Claim>> {
        self.claim(workflow, owner, limit, ttl).await
    }

    async fn renew_claim(&self, claim: &Claim, ttl: Duration) -> Result<ClaimRenewal> {
        self.renew(claim, ttl).await
    }

    async fn record_outcome(&self, claim: &Claim, outcome: &RemoteOutcome) -> Result<()> {
        self.record(claim, outcome).await
    }

    async fn write_claimed(&self, claim: &Claim, events: Vec<Event>) -> Result<()> {
        self.write_under_claim(claim, events.into_iter().map(Write::Event).collect())
            .await
    }

    async fn write_claimed_vcs(&self, claim: &Claim, writes: Vec<Write>) -> Result<()> {
        for w in &writes {
            let ours = match w {
                Write::AttemptVcs {
                    node_id,
                    iteration,
                    attempt,
                    ..
                } => {
                    (node_id, *iteration, *attempt)
                        == (&claim.node_id, claim.iteration, claim.attempt)
                }
                Write::StepVcs(_) => true,
                _ => false,
            };
            if !ours {
                return Err(Error::InvalidInput(format!(
                    "the worker of `{}` (attempt {}) of run `{}` may record only the snapshots of that attempt and its steps under its claim",
                    claim.node_id, claim.attempt, claim.run_id
                )));
            }
        }
        self.write_under_claim(claim, writes).await
    }

    async fn release_claim(&self, claim: &Claim) -> Result<()> {
        self.release(claim).await
    }

    async fn report_usage(
        &self,
        claim: &Claim,
        usage: &Usage,
        model: Option<&str>,
    ) -> Result<ClaimRenewal> {
        self.report(claim, usage, model).await
    }

    async fn usage_reports(&self, run_id: &str) -> Result<Vec<UsageReport>> {
        self.reports(run_id).await
    }

    async fn claim_holders(&self, workflow: &str) -> Result<Vec<ClaimHolder>> {
        self.holders(workflow).await
    }

    async fn free_claims(&self, workflow: &str, owners: &[String]) -> Result<u64> {
        self.free(workflow, owners).await
    }

    async fn recorded_outcomes(&self, run_id: &str) -> Result<Vec<RecordedOutcome>> {
        self.recorded(run_id).await
    }

    async fn queued_attempts(&self, run_id: &str) -> Result<Vec<QueuedRecord>> {
        self.queued(run_id).await
    }

    async fn queue_position(&self, run_id: &str) -> Result<i64> {
        self.position(run_id).await
    }

    async fn stop_queued_attempt(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: u32,
        attempt: u32,
        fence: &FenceToken,
    ) -> Result<bool> {
        self.stop_queued(run_id, node_id, iteration, attempt, fence)
            .await
    }

    async fn listen(
        &self,
        channel: &str,
    ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<()>>> {
        self.listen_on(channel).await.map(Some)
    }

    async fn state_get(&self, key: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT value FROM state WHERE key = $1")
            .await?;
        Ok(c.query_opt(&st, &[&key]).await?.map(|r| r.get(0)))
    }

    async fn state_set(&self, key: &str, value: &str) -> Result<()> {
        let mut b = WriteBatch::new("");
        b.push(Write::State {
            key: key.to_owned(),
            value: value.to_owned(),
        });
        self.write(b).await
    }
}
