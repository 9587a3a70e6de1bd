//! Storage: the [`Store`] trait the engine writes through, and its SQLite implementation.
//!
//! The engine never writes SQL. It hands the store a [`WriteBatch`] (output row, node state,
//! attempt, events...) that is applied in one transaction; parallel siblings' batches share a
//! commit. The trait is shaped by what the engine needs, so a Postgres backend can implement it.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::events::Event;
use crate::frame::FrameNode;
pub use crate::model::{ApprovalStatus, NodeStatus, RunStatus};
use crate::model::{LoopState, Timestamp, Usage};
use crate::output::OutputInfo;

#[cfg(feature = "conformance")]
pub mod conformance;
mod owner;
#[cfg(feature = "postgres")]
mod postgres;
mod queue;
mod sqlite;
mod workers;
pub(crate) use owner::holder_is_dead;
pub use owner::lease_owner;
#[cfg(feature = "postgres")]
pub use postgres::{CopyReport, PostgresStore};
pub(crate) use queue::{pool_unsupported, queue_channel, run_channel, stop_channel};
pub use queue::{
    Claim, ClaimHolder, ClaimRenewal, ClaimToken, QueuedAttempt, QueuedRecord, RecordedOutcome,
    RemoteError, RemoteOutcome, RemoteReply, UsageReport,
};
pub use sqlite::{Durability, SqliteStore};
pub use workers::{RestartRecord, WorkerRecord};

// `is_postgres_url` and `redact_url` serve the facade's `--db` handling (`smithers::cli`): public
// for it, not part of the API.

/// Whether `db` names a PostgreSQL database (`postgres://...` or `postgresql://...`) rather than
/// a SQLite file.
#[doc(hidden)]
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A database URL with any password replaced by `***`, for messages.
#[doc(hidden)]
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A stored value a row mapping cannot read (a timestamp that is not RFC 3339, a status no
/// smithers writes, JSON that does not parse): names the table, column and value, what the
/// column should hold, and what to do. Converted to [`Error::InvalidRecord`]; a row mapping
/// returns it instead of a default, so a damaged record is never read as another one.
///
/// [`Error::InvalidRecord`]: crate::error::Error::InvalidRecord
#[derive(Debug)]
pub(crate) struct BadStoredValue {
    pub(crate) table: Cow<'static, str>,
    pub(crate) column: Cow<'static, str>,
    pub(crate) value: String,
    /// What the column should hold, as "not ..." completes it.
    pub(crate) expected: String,
}

/// The longest stored value a [`BadStoredValue`] quotes in full; a longer one is cut there.
const SHOWN_VALUE_CHARS: usize = 120;

impl BadStoredValue {
    pub(crate) fn new(
        table: impl Into<Cow<'static, str>>,
        column: impl Into<Cow<'static, str>>,
        value: &str,
        expected: impl Into<String>,
    ) -> Self {
        let value = match value.char_indices().nth(SHOWN_VALUE_CHARS) {
            Some((cut, _)) => format!("{}...", &value[..cut]),
            None => value.to_owned(),
        };
        BadStoredValue {
            table: table.into(),
            column: column.into(),
            value,
            expected: expected.into(),
        }
    }
}

impl std::fmt::Display for BadStoredValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}.{}` holds `{}`, which is not {}; the database was edited or is damaged: correct \
             the value or restore the database from a copy",
            self.table, self.column, self.value, self.expected
        )
    }
}

impl std::error::Error for BadStoredValue {}

/// A timestamp column read back: both backends store RFC 3339 text, parsed once, in the row
/// mapping. A value that does not parse is an error naming the table, column and value, never
/// a panic or a made-up time.
pub(crate) fn stored_time(
    table: &'static str,
    column: &'static str,
    value: &str,
) -> std::result::Result<Timestamp, BadStoredValue> {
    Timestamp::parse(value).ok_or_else(|| {
        BadStoredValue::new(
            table,
            column,
            value,
            "an RFC 3339 UTC timestamp like 2026-11-25T06:08:03.123Z",
        )
    })
}

/// A column holding one of the stored names of `T` (a status, a cost source, a column kind)
/// read back; any other text is an error listing the names it may hold.
pub(crate) fn stored_name<T: crate::model::StoredName>(
    table: impl Into<Cow<'static, str>>,
    column: impl Into<Cow<'static, str>>,
    value: &str,
) -> std::result::Result<T, BadStoredValue> {
    T::parse_stored(value).ok_or_else(|| {
        let names: Vec<String> = T::stored_names().map(|n| format!("`{n}`")).collect();
        BadStoredValue::new(table, column, value, format!("one of {}", names.join(", ")))
    })
}

/// A JSON text column read back as a `T`; text that does not parse, or JSON of another shape,
/// is an error saying why.
pub(crate) fn stored_json<T: serde::de::DeserializeOwned>(
    table: impl Into<Cow<'static, str>>,
    column: impl Into<Cow<'static, str>>,
    value: &str,
) -> std::result::Result<T, BadStoredValue> {
    serde_json::from_str(value).map_err(|e| {
        BadStoredValue::new(
            table,
            column,
            value,
            format!("the JSON this column holds ({e})"),
        )
    })
}

/// [`stored_json`] of a column the backend keeps as JSON already (PostgreSQL `JSONB`): only
/// its shape can be wrong.
#[cfg(feature = "postgres")]
pub(crate) fn stored_json_value<T: serde::de::DeserializeOwned>(
    table: impl Into<Cow<'static, str>>,
    column: impl Into<Cow<'static, str>>,
    value: serde_json::Value,
) -> std::result::Result<T, BadStoredValue> {
    serde_json::from_value(value.clone()).map_err(|e| {
        BadStoredValue::new(
            table,
            column,
            &value.to_string(),
            format!("the JSON this column holds ({e})"),
        )
    })
}

impl From<BadStoredValue> for crate::error::Error {
    fn from(e: BadStoredValue) -> Self {
        crate::error::Error::InvalidRecord(e.to_string())
    }
}

/// Which iteration of `node_id` a decision on its approval applies to: `iteration` when it is
/// pending, the only pending one when none is named; an error naming the run and node otherwise.
/// Both backends decide it here.
pub(crate) fn pending_iteration(
    run_id: &str,
    node_id: &str,
    iteration: Option<u32>,
    pending: &[u32],
) -> Result<u32> {
    match (iteration, pending) {
        (Some(it), p) if p.contains(&it) => Ok(it),
        (None, [it]) => Ok(*it),
        (None, []) | (Some(_), _) => Err(crate::error::Error::NoPendingApproval {
            run_id: run_id.to_owned(),
            node_id: node_id.to_owned(),
            iteration,
        }),
        (None, many) => Err(crate::error::Error::AmbiguousApproval {
            node_id: node_id.to_owned(),
            iterations: many.to_vec(),
        }),
    }
}

/// A run of a listing ([`Store::run_list`]): its record, or, when its row does not read, its id
/// and why, so that one damaged run does not hide the others.
#[derive(Clone, Debug, PartialEq)]
pub enum ListedRun {
    /// A run whose row reads.
    Run(RunRecord),
    /// A run whose row holds a value no smithers writes.
    Damaged {
        /// The run.
        run_id: String,
        /// What is wrong and what to do, as the `E_INVALID_RECORD` error reading it gives.
        error: String,
    },
}

/// A row of `_smithers_runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Status.
    pub status: RunStatus,
    /// The input, as JSON.
    pub input: Value,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Who holds the lease.
    pub lease_owner: Option<String>,
    /// Lease expiry, epoch milliseconds.
    pub lease_expires_ms: Option<i64>,
    /// The run it was forked from.
    #[serde(default)]
    pub parent_run_id: Option<String>,
    /// The parent's frame it was forked at.
    #[serde(default)]
    pub parent_frame: Option<u32>,
    /// Lease epoch: incremented at every acquisition (see [`FenceToken`]).
    #[serde(default)]
    pub lease_epoch: i64,
}

/// A row of `_smithers_approvals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Node id.
    pub node_id: String,
    /// Iteration.
    pub iteration: u32,
    /// Decision so far.
    pub status: ApprovalStatus,
    /// When the engine asked.
    pub requested_at: Timestamp,
    /// When it was decided.
    pub decided_at: Option<Timestamp>,
    /// The decider's note.
    pub note: Option<String>,
}

/// A row of `_smithers_steps`: a step of a run, as seeds 000 and 003 describe it. Field names are
/// the columns' (snake_case in JSON too); times are RFC 3339 (ISO 8601) in the database and JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The run.
    pub run_id: String,
    /// Sequential id within the run, from 1.
    pub step_id: i64,
    /// The most recent active step before this one, when it was created.
    pub parent_step_id: Option<i64>,
    /// False once a rollback took the step back (kept for audit, no longer read by `Ctx`).
    pub active: bool,
    /// `tree` for a `<Step>` of the workflow, `api` for one started through [`crate::steps::Steps`].
    pub source: String,
    /// Its name.
    pub name: String,
    /// The phase it belongs to (`_smithers_phases.phase_id`).
    pub phase_id: Option<i64>,
    /// The phase's name.
    pub phase: Option<String>,
    /// Loop iteration.
    pub iteration: u32,
    /// `pending`, `running`, `completed`, `failed`, `skipped`.
    pub status: String,
    /// Tasks inside it.
    pub task_ids: Vec<String>,
    /// When it started running.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
    /// How long it ran.
    pub duration_ms: Option<i64>,
    /// When its row was created (a pending step's row exists before it starts).
    pub created_at: Timestamp,
    /// Event sequence number when the row was created.
    pub created_seq: i64,
    /// Event sequence number when it started: where a rollback to this step cuts the history.
    pub started_seq: Option<i64>,
    /// The repository of its snapshots.
    pub vcs_repo: Option<String>,
    /// `git` or `jj`.
    pub vcs_backend: Option<String>,
    /// The working copy before it: a git commit, or a jj commit id (never a change id).
    pub snapshot_before: Option<String>,
    /// The working copy after it.
    pub snapshot_after: Option<String>,
    /// `HEAD` when it started.
    pub head_before: Option<String>,
    /// The commit `HEAD` moved to during the step (an agent committed), if it moved.
    pub commit_created: Option<String>,
    /// The agents of its tasks: kind, model, flags, system prompt hash.
    pub agent_config_json: Option<Value>,
    /// Token usage summed over its attempts, cost included.
    pub token_usage_json: Option<Value>,
    /// Exit code of its last CLI agent attempt.
    pub exit_code: Option<i32>,
}

impl StepRecord {
    /// Whether `attempt` belongs to this step: one of its tasks, in its iteration.
    pub fn contains(&self, attempt: &AttemptRecord) -> bool {
        attempt.iteration == self.iteration && self.task_ids.contains(&attempt.node_id)
    }
}

/// A row of `_smithers_phases`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// The run.
    pub run_id: String,
    /// Sequential id within the run, from 1.
    pub phase_id: i64,
    /// Its name.
    pub name: String,
    /// Loop iteration.
    pub iteration: u32,
    /// `pending`, `running`, `completed`, `failed`, `skipped`.
    pub status: String,
    /// False once a rollback took it back.
    pub active: bool,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
    /// How long it ran.
    pub duration_ms: Option<i64>,
    /// When its row was created.
    pub created_at: Timestamp,
}

/// A phase or step as a render reports it: what [`Write::Group`] records.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupUpdate {
    /// Phase or step.
    pub kind: crate::model::GroupKind,
    /// Its name.
    pub name: String,
    /// The enclosing phase of a step.
    pub phase: Option<String>,
    /// The iteration of its innermost loop.
    pub iteration: u32,
    /// Where it stands.
    pub status: crate::model::GroupStatus,
    /// The ids of the tasks inside it.
    pub tasks: Vec<String>,
    /// The agents of its tasks (a JSON array), when it has any.
    pub agent_config: Option<Value>,
}

/// Working-copy snapshots of a step: which one, and what was taken.
#[derive(Clone, Debug, PartialEq)]
pub struct StepVcs {
    /// The step: by id (Steps API), or by name and iteration (an active `<Step>`).
    pub step: StepKey,
    /// The repository root.
    pub repo: String,
    /// `git` or `jj`.
    pub backend: String,
    /// The snapshot before it and `HEAD` then.
    pub before: Option<(String, Option<String>)>,
    /// The snapshot after it and `HEAD` then (a moved `HEAD` is the commit it created).
    pub after: Option<(String, Option<String>)>,
    /// A commit named by the caller (Steps API `commit_created`).
    pub commit_created: Option<String>,
}

/// How a write names a step.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKey {
    /// By id.
    Id(i64),
    /// The active `<Step>` of this name and iteration.
    Named {
        /// Its name.
        name: String,
        /// Its iteration.
        iteration: u32,
    },
}

/// Where [`Store::rewind`] cuts a run's history.
#[derive(Clone, Debug, PartialEq)]
pub enum RewindTo {
    /// To just before this step started: it and every later step become inactive.
    Step(i64),
    /// To just after this frame was rendered.
    Frame(u32),
}

/// What [`Store::rewind`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewindReport {
    /// The event sequence number the history was cut at (later events are kept, for audit).
    pub seq: i64,
    /// Steps made inactive.
    pub deactivated_steps: Vec<i64>,
    /// Nodes (id, iteration) made pending again; their outputs moved to
    /// `_smithers_rolled_back_outputs`.
    pub reset_nodes: Vec<(String, u32)>,
    /// Loops whose counters were put back.
    pub loops: Vec<String>,
}

/// A new run copied from another's history up to a frame ([`Store::fork_run`]).
#[derive(Clone, Debug)]
pub struct ForkRun {
    /// The run to copy.
    pub parent_run_id: String,
    /// Its frame to copy up to.
    pub frame: u32,
    /// The new run's id.
    pub run_id: String,
    /// The new run's input (the parent's when `None`).
    pub input: Option<Value>,
}

/// A row of `_smithers_nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub node_id: String,
    /// Iteration.
    pub iteration: u32,
    /// Status.
    pub status: NodeStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// Output table.
    pub output_table: Option<String>,
    /// Innermost loop.
    pub loop_id: Option<String>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
}

/// A row of `_smithers_attempts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Node id.
    pub node_id: String,
    /// Iteration.
    pub iteration: u32,
    /// Attempt number from 1.
    pub attempt: u32,
    /// `in-progress`, `finished`, `failed`, `abandoned`, `cancelled`.
    pub status: String,
    /// Agent name, for agent tasks.
    pub agent: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// Error text.
    pub error: Option<String>,
    /// Usage.
    pub usage: Usage,
    /// Agent session id.
    pub session_id: Option<String>,
    /// CLI exit code.
    pub exit_code: Option<i32>,
    /// Model.
    pub model: Option<String>,
    /// Where `usage.cost_usd` comes from: `reported` by the agent or `estimated` from the price
    /// catalog; `None` with no cost when the model has no price.
    #[serde(default)]
    pub cost_source: Option<crate::price::CostSource>,
    /// Repository of the working-copy snapshots.
    #[serde(default)]
    pub vcs_repo: Option<String>,
    /// Snapshot before the attempt (a git commit).
    #[serde(default)]
    pub vcs_before: Option<String>,
    /// Snapshot after it.
    #[serde(default)]
    pub vcs_after: Option<String>,
    /// Pool mode: `queued` (waiting for a worker), `claimed` (a worker runs it), `recorded` (its
    /// outcome waits for the driver); `None` for an attempt its driver ran itself.
    #[serde(default)]
    pub queue: Option<String>,
    /// Pool mode: the worker that claimed it last (`host:pid:nonce`).
    #[serde(default)]
    pub claim_owner: Option<String>,
}

/// A persisted event with its sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Global sequence number.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// What [`Store::request_cancel`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The flag is set; the process holding the lease stops the run at its next check.
    Requested {
        /// The lease holder that will act on it.
        owner: String,
    },
    /// No live process held the run: it is now cancelled (`resume` continues it).
    Cancelled,
    /// The run had already stopped with this status; nothing changed.
    AlreadyFinal(RunStatus),
}

/// A row of `_smithers_frames`: the tree as rendered when its shape changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Frame number from 1.
    pub frame_no: u32,
    /// Structural hash of the tree.
    pub tree_hash: String,
    /// The tree as indented text (what `graph` prints), rendered from `structure`.
    pub tree: String,
    /// The tree as data. A frame recorded before frames were stored as data is read back from
    /// its text (props not recovered).
    pub structure: FrameNode,
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// Everything the engine needs to continue a run.
#[derive(Clone, Debug, Default)]
pub struct LoadedRun {
    /// Node states.
    pub nodes: Vec<NodeRecord>,
    /// Outputs: node id, iteration, JSON.
    pub outputs: Vec<(String, u32, Value)>,
    /// Loop counters.
    pub loops: Vec<(String, LoopState)>,
    /// The `state` table.
    pub state: Vec<(String, String)>,
    /// Highest frame number recorded.
    pub last_frame: u32,
    /// The shape hash of that frame, as stored (`None` without frames): a resumed run whose
    /// tree has the same shape records no new frame.
    pub last_frame_hash: Option<String>,
    /// Approval requests and decisions.
    pub approvals: Vec<ApprovalRecord>,
    /// Failed attempts per node and iteration (what `retries` counts).
    pub failures: Vec<(String, u32, u32)>,
}

/// How an attempt ended.
#[derive(Clone, Debug, Default)]
pub struct AttemptEnd {
    /// `finished`, `failed`, `cancelled`.
    pub status: &'static str,
    /// Error text.
    pub error: Option<String>,
    /// Duration.
    pub duration_ms: i64,
    /// Usage.
    pub usage: Usage,
    /// Agent session id.
    pub session_id: Option<String>,
    /// CLI exit code.
    pub exit_code: Option<i32>,
    /// Model.
    pub model: Option<String>,
    /// Where `usage.cost_usd` comes from.
    pub cost_source: Option<crate::price::CostSource>,
}

/// One change, applied with the others of its batch in one transaction.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Write {
    /// Set the run's status (and error).
    RunStatus {
        /// New status.
        status: RunStatus,
        /// Error, for failed.
        error: Option<String>,
    },
    /// Upsert a node's state.
    Node(NodeRecord),
    /// Insert an in-progress attempt.
    AttemptStart {
        /// Node id.
        node_id: String,
        /// Iteration.
        iteration: u32,
        /// Attempt number.
        attempt: u32,
        /// Agent name.
        agent: Option<String>,
        /// Lease owner driving it.
        owner: String,
    },
    /// Close an attempt.
    AttemptEnd {
        /// Node id.
        node_id: String,
        /// Iteration.
        iteration: u32,
        /// Attempt number.
        attempt: u32,
        /// How it ended.
        end: AttemptEnd,
    },
    /// Insert an output row.
    Output {
        /// Output type.
        info: OutputInfo,
        /// Node id.
        node_id: String,
        /// Iteration.
        iteration: u32,
        /// The validated output.
        value: Value,
    },
    /// Keep an attempt's transcript.
    Transcript {
        /// Node id.
        node_id: String,
        /// Iteration.
        iteration: u32,
        /// Attempt number.
        attempt: u32,
        /// JSONL text.
        text: String,
    },
    /// Upsert a loop counter.
    Loop {
        /// Loop id.
        loop_id: String,
        /// New state.
        state: LoopState,
    },
    /// Record a new frame (the tree changed shape): its structure, and the text view rendered
    /// from it.
    Frame {
        /// Frame number.
        frame_no: u32,
        /// Structural hash.
        hash: String,
        /// The tree as data.
        tree: FrameNode,
    },
    /// Set a `state` key.
    State {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Upsert a phase or step (a new one gets the next sequential id of the run; a step
    /// ending sums its attempts' usage into its row).
    Group(GroupUpdate),
    /// Record working-copy snapshots of a step.
    StepVcs(StepVcs),
    /// End a step started through the Steps API (`completed` or `failed`).
    StepEnd {
        /// The step.
        step_id: i64,
        /// `completed` or `failed`.
        status: crate::model::GroupStatus,
    },
    /// Record a working-copy snapshot of an attempt.
    AttemptVcs {
        /// Node id.
        node_id: String,
        /// Iteration.
        iteration: u32,
        /// Attempt number.
        attempt: u32,
        /// The repository root.
        repo: String,
        /// Snapshot before the attempt.
        before: Option<String>,
        /// Snapshot after it.
        after: Option<String>,
    },
    /// Keep an output for reuse by `<Workflow cache>`.
    CachePut {
        /// The cache key.
        key: String,
        /// Workflow name.
        workflow: String,
        /// Node id.
        node_id: String,
        /// Output table.
        table: String,
        /// The output.
        value: Value,
    },
    /// Ask for a human decision on a `needs_approval` task (kept if already asked).
    ApprovalRequest {
        /// Node id.
        node_id: String,
        /// Iteration.
        iteration: u32,
    },
    /// Pool mode: queue an attempt started in this batch (its `AttemptStart` before it) for the
    /// workers of `workflow`, with what they need; they are woken when the batch commits.
    AttemptQueued {
        /// The run's workflow.
        workflow: String,
        /// Node id.
        node_id: String,
        /// Iteration.
        iteration: u32,
        /// Attempt number.
        attempt: u32,
        /// What a worker needs.
        payload: QueuedAttempt,
    },
    /// Append an event.
    Event(Event),
}

/// Who may write to a run: the holder of its lease, in the term it acquired.
///
/// `owner` is the lease owner (`host:pid:nonce`); `epoch` is the run's lease epoch, which the
/// store increments at every acquisition ([`Store::create_run`] starts it at 1,
/// [`Store::acquire_lease`] bumps it). A process that stalled past its lease while another took
/// the run over still holds its old token, and every write it makes is refused with
/// [`Error::LeaseLost`](crate::Error::LeaseLost) (DESIGN.md section 6, fencing).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FenceToken {
    /// The lease owner.
    pub owner: String,
    /// The lease epoch of the owner's term.
    pub epoch: i64,
}

impl FenceToken {
    /// A token for `owner` in `epoch`.
    pub fn new(owner: impl Into<String>, epoch: i64) -> Self {
        FenceToken {
            owner: owner.into(),
            epoch,
        }
    }

    /// The backend-neutral rule: the token is valid while the run's current lease holder and
    /// epoch are the token's. `current` is what the store read inside the writing transaction
    /// (`None` for a run that does not exist); a mismatch is `LeaseLost`, naming what changed.
    pub fn check(&self, run_id: &str, current: Option<(Option<&str>, i64)>) -> Result<()> {
        let detail = match current {
            Some((Some(owner), epoch)) if owner == self.owner && epoch == self.epoch => {
                return Ok(())
            }
            None => "the run no longer exists".to_owned(),
            Some((None, _)) => {
                "the lease was released: the run was cancelled, or another process drove it and let it go".to_owned()
            }
            Some((Some(owner), epoch)) => format!(
                "`{owner}` took the run over (lease epoch {epoch}, this process `{}` held epoch {})",
                self.owner, self.epoch
            ),
        };
        Err(crate::Error::LeaseLost {
            run_id: run_id.to_owned(),
            detail,
        })
    }
}

/// Changes to one run, applied atomically.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// The run.
    pub run_id: String,
    /// The writer's token. The engine sets it on every batch it commits, and the store refuses
    /// the whole batch when it no longer matches the run's lease (see [`Store::write`]). `None`
    /// only for writes made outside any driver (an operator's `smithers state set`): those are
    /// not fenced.
    pub fence: Option<FenceToken>,
    /// The changes, in order.
    pub writes: Vec<Write>,
}

impl WriteBatch {
    /// An empty, unfenced batch for `run_id`.
    pub fn new(run_id: &str) -> Self {
        WriteBatch {
            run_id: run_id.to_owned(),
            fence: None,
            writes: Vec::new(),
        }
    }

    /// The batch, to be committed only while `fence` holds the run's lease.
    #[must_use]
    pub fn fenced(mut self, fence: &FenceToken) -> Self {
        self.fence = Some(fence.clone());
        self
    }

    /// Adds a change.
    pub fn push(&mut self, w: Write) {
        self.writes.push(w)
    }

    /// Whether it has no changes.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The events it carries, delivered to listeners after commit.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.writes.iter().filter_map(|w| match w {
            Write::Event(e) => Some(e),
            _ => None,
        })
    }
}

/// A new run.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Run id.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Input JSON.
    pub input: Value,
    /// Lease owner.
    pub owner: String,
    /// Lease duration.
    pub lease_ttl: Duration,
}

/// Durable storage of runs. One implementation per backend; all pass the same test suite
/// (`store::conformance`).
///
/// **Fencing** (DESIGN.md section 6). A run's lease has an owner and an epoch; together they are
/// the writer's [`FenceToken`]. [`Store::create_run`] and [`Store::acquire_lease`] return the
/// token of the new term (acquiring always increments the epoch). Every write a driver makes
/// carries its token — [`WriteBatch::fence`], and the token argument of
/// [`Store::renew_lease`], [`Store::release_lease`] and [`Store::reset_for_resume`] — and the
/// store checks it against the run's current owner and epoch *inside the same transaction* as
/// the write ([`FenceToken::check`], in one function per backend). On a mismatch nothing of the
/// write is committed and the call fails with [`Error::LeaseLost`](crate::Error::LeaseLost):
/// a process paused past its lease while another took the run over writes nothing after the
/// takeover.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a run (status running) holding the lease for `run.owner` in epoch 1; returns
    /// that token.
    async fn create_run(&self, run: NewRun) -> Result<FenceToken> {
        let first = WriteBatch::new(&run.run_id);
        self.create_run_with(run, first).await
    }
    /// Creates a run as [`Store::create_run`] does and commits `first` (writes of that run,
    /// its start record) in the same transaction, under the new run's token: both or, on any
    /// error, neither. One commit where `create_run` and `write` take two.
    async fn create_run_with(&self, run: NewRun, first: WriteBatch) -> Result<FenceToken>;
    /// A run by id.
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// The most recently created run.
    async fn latest_run(&self) -> Result<Option<RunRecord>>;
    /// All runs, newest first; fails with `E_INVALID_RECORD` when a run's row does not read.
    async fn runs(&self) -> Result<Vec<RunRecord>>;
    /// All runs, newest first, as a listing shows them: a run whose row does not read is
    /// [`ListedRun::Damaged`] (with the error reading it gives), the others as [`Store::runs`].
    async fn run_list(&self) -> Result<Vec<ListedRun>>;
    /// Takes the run's lease for `owner` (free, expired, or held by a dead process on this
    /// host), incrementing its epoch, and returns the new token; fails with `LeaseHeld` naming
    /// a live holder.
    async fn acquire_lease(&self, run_id: &str, owner: &str, ttl: Duration) -> Result<FenceToken>;
    /// Extends the lease; fails with `LeaseLost` when `fence` no longer holds it.
    async fn renew_lease(&self, run_id: &str, fence: &FenceToken, ttl: Duration) -> Result<()>;
    /// Gives the lease up; does nothing when `fence` no longer holds it.
    async fn release_lease(&self, run_id: &str, fence: &FenceToken) -> Result<()>;
    /// Marks attempts left in progress by a dead process as abandoned, their nodes pending, and
    /// failed nodes pending again; returns how many attempts were abandoned. Fenced: fails with
    /// `LeaseLost`, changing nothing, when `fence` no longer holds the lease.
    async fn reset_for_resume(&self, run_id: &str, fence: &FenceToken) -> Result<u32>;
    /// Loads what the engine needs to continue the run.
    async fn load(&self, run_id: &str) -> Result<LoadedRun>;
    /// Creates or checks the output table of `info`.
    async fn ensure_output_table(&self, info: OutputInfo) -> Result<()>;
    /// Applies a batch in one transaction, all or nothing. A batch with a [`WriteBatch::fence`]
    /// commits only while that token holds the run's lease, checked in the same transaction;
    /// otherwise nothing of it is written and the call fails with `LeaseLost`.
    async fn write(&self, batch: WriteBatch) -> Result<()>;
    /// Node states of a run.
    async fn nodes(&self, run_id: &str) -> Result<Vec<NodeRecord>>;
    /// Attempts of a run.
    async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRecord>>;
    /// The usage of every attempt of a run that used something (node id and usage, oldest
    /// first): what a resumed run has spent against its budgets. Attempts that used nothing
    /// (static values, compute tasks) are left out, so a run of many such tasks loads nothing
    /// here.
    async fn attempt_usage(&self, run_id: &str) -> Result<Vec<(String, Usage)>> {
        Ok(self
            .attempts(run_id)
            .await?
            .into_iter()
            .filter(|a| a.usage != Usage::default())
            .map(|a| (a.node_id, a.usage))
            .collect())
    }
    /// Events of a run after `after_seq`.
    async fn events(&self, run_id: &str, after_seq: i64) -> Result<Vec<EventRecord>>;
    /// Steps of a run, by id (inactive ones included).
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>>;
    /// Phases of a run, by id (inactive ones included).
    async fn phases(&self, run_id: &str) -> Result<Vec<PhaseRecord>>;
    /// Starts a step through the Steps API in the run's current phase: a `running` row with the
    /// next id. Returns its id.
    async fn start_step(&self, run_id: &str, name: Option<&str>) -> Result<i64>;
    /// Cuts a run's history at a step or frame, in one transaction: later steps become
    /// inactive, nodes that moved after the cut are pending again (their outputs kept aside for
    /// audit), loop counters go back to what they were, and the run becomes `cancelled` so
    /// `resume` re-runs what was cut. The caller holds the run's lease (`fence`): without it, it
    /// fails with `LeaseLost` and changes nothing.
    async fn rewind(&self, run_id: &str, to: RewindTo, fence: &FenceToken) -> Result<RewindReport>;
    /// Creates a run whose history is another's up to a frame (outputs, node states, loop
    /// counters, steps, phases, frames and events copied), status `cancelled` so `resume`
    /// continues it, with its parent run and frame recorded.
    async fn fork_run(&self, fork: ForkRun) -> Result<RunRecord>;
    /// One step by id; an error names the run and says how to list its steps.
    async fn step(&self, run_id: &str, step_id: i64) -> Result<StepRecord> {
        self.steps(run_id)
            .await?
            .into_iter()
            .find(|s| s.step_id == step_id)
            .ok_or_else(|| crate::Error::StepNotFound {
                run_id: run_id.to_owned(),
                step_id,
            })
    }
    /// A cached output by key.
    async fn cache_get(&self, key: &str) -> Result<Option<Value>>;
    /// Approval requests of a run.
    async fn approvals(&self, run_id: &str) -> Result<Vec<ApprovalRecord>>;
    /// Decides a pending approval (the only pending iteration of `node_id` when `iteration` is
    /// `None`), recording an `approval_decided` event; an error names the node when nothing is
    /// pending.
    async fn decide_approval(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: Option<u32>,
        approve: bool,
        note: Option<&str>,
    ) -> Result<ApprovalRecord>;
    /// Frames of a run, oldest first.
    async fn frames(&self, run_id: &str) -> Result<Vec<FrameRecord>>;
    /// One frame of a run: `frame_no`, or the latest when `None`.
    async fn frame(&self, run_id: &str, frame_no: Option<u32>) -> Result<Option<FrameRecord>>;
    /// Cancels a run from another process (`smithers cancel`). While a live process holds the
    /// run's lease, sets the run's `cancel_requested` flag for that process to act on; with no
    /// live holder (its process died, or the run is parked), marks the run cancelled at once with
    /// a `run_cancelled` event, its in-progress attempts abandoned, their nodes pending, and its
    /// lease cleared (so a paused holder's later writes are fenced out). A final run is left
    /// alone. Fails with `RunNotFound` for an
    /// unknown run. The flag is cleared when the run reaches a final status and by
    /// [`Store::reset_for_resume`].
    async fn request_cancel(&self, run_id: &str) -> Result<CancelOutcome>;
    /// Whether a cancellation was requested for the run (polled by the engine driving it).
    async fn cancel_requested(&self, run_id: &str) -> Result<bool>;
    /// Adds an allowance to the budget of a run (`node_id` `None`) or of one of its tasks
    /// (`smithers budget RUN --add 5`); an error names an unknown run.
    async fn raise_budget(&self, run_id: &str, raise: crate::budget::BudgetRaise) -> Result<()> {
        let _ = raise;
        Err(crate::Error::Unsupported(format!(
            "this store cannot raise the budget of run `{run_id}` (it does not implement `raise_budget`)"
        )))
    }
    /// The allowances added to a run's budgets, oldest first.
    async fn budget_raises(&self, run_id: &str) -> Result<Vec<crate::budget::BudgetRaise>> {
        let _ = run_id;
        Ok(Vec::new())
    }
    /// Runs that have not stopped: `running` (driven, or their driver is gone: see their
    /// lease) and `queued` (waiting for a worker), oldest first. What a `worker` looks over.
    async fn active_runs(&self) -> Result<Vec<RunRecord>>;
    /// Registers a `worker` process or updates its row (heartbeat, what it drives), keyed by
    /// [`WorkerRecord::worker_id`].
    async fn put_worker(&self, worker: &WorkerRecord) -> Result<()>;
    /// Removes a worker's row (it stopped); nothing happens for an unknown id.
    async fn remove_worker(&self, worker_id: &str) -> Result<()>;
    /// Registered workers, stale ones included, oldest first.
    async fn workers(&self) -> Result<Vec<WorkerRecord>>;
    /// The restart bookkeeping of a run, if a worker ever took it over.
    async fn restarts(&self, run_id: &str) -> Result<Option<RestartRecord>>;
    /// Writes a run's restart bookkeeping, replacing what was there, fenced by the lease of the
    /// worker that took the run over (`LeaseLost`, nothing written, once another process holds
    /// it): one takeover, one restart, however many workers raced for it.
    async fn put_restarts(&self, record: &RestartRecord, fence: &FenceToken) -> Result<()>;
    /// Whether this store has the attempt queue of pool mode ([`Store::claim_attempts`] and the
    /// rest); a store without it refuses them with an error saying pool mode needs PostgreSQL.
    fn supports_pool(&self) -> bool {
        false
    }
    /// Claims up to `limit` queued attempts of active runs of `workflow` for `owner`, oldest
    /// first (an attempt whose claim expired, or was freed by [`Store::free_claims`], is queued
    /// again), each held for `ttl` unless renewed. Active: `running`, or `queued` (handed back
    /// by a stopping worker: its attempts go on until the next driver adopts them). Two workers
    /// claiming at once never get the same attempt (`FOR UPDATE SKIP LOCKED`). Every claim
    /// increments the attempt's claim epoch.
    async fn claim_attempts(
        &self,
        workflow: &str,
        owner: &str,
        limit: usize,
        ttl: std::time::Duration,
    ) -> Result<Vec<Claim>> {
        let _ = (owner, limit, ttl);
        Err(pool_unsupported(&format!(
            "claiming attempts of workflow `{workflow}`"
        )))
    }
    /// Extends a claim for `ttl` and says whether the driver asked for the attempt to stop;
    /// fails with `ClaimLost` when the claim expired or another worker holds it.
    async fn renew_claim(&self, claim: &Claim, ttl: std::time::Duration) -> Result<ClaimRenewal> {
        let _ = ttl;
        Err(pool_unsupported(&format!(
            "renewing the claim on `{}` of run `{}`",
            claim.node_id, claim.run_id
        )))
    }
    /// Records the outcome of a claimed attempt and wakes its driver, in one transaction fenced
    /// by the claim: when the claim expired or was taken, nothing is written and the call fails
    /// with `ClaimLost`.
    async fn record_outcome(&self, claim: &Claim, outcome: &RemoteOutcome) -> Result<()> {
        let _ = outcome;
        Err(pool_unsupported(&format!(
            "recording the outcome of `{}` of run `{}`",
            claim.node_id, claim.run_id
        )))
    }
    /// Appends events of a claimed attempt (its progress lines), fenced by the claim like
    /// [`Store::record_outcome`].
    async fn write_claimed(&self, claim: &Claim, events: Vec<Event>) -> Result<()> {
        let _ = events;
        Err(pool_unsupported(&format!(
            "writing progress of `{}` of run `{}`",
            claim.node_id, claim.run_id
        )))
    }
    /// Records the working-copy snapshots a worker took around a claimed attempt — the
    /// attempt's own (`Write::AttemptVcs`) and those of the steps it belongs to
    /// (`Write::StepVcs`) — fenced by the claim like [`Store::record_outcome`]. Any other write
    /// is refused.
    async fn write_claimed_vcs(&self, claim: &Claim, writes: Vec<Write>) -> Result<()> {
        let _ = writes;
        Err(pool_unsupported(&format!(
            "recording snapshots of `{}` of run `{}`",
            claim.node_id, claim.run_id
        )))
    }
    /// Records the usage so far of a claimed attempt (what its agent streamed), replacing the
    /// last report, and wakes its driver, which checks the budgets with it; fenced by the claim
    /// (`ClaimLost`, nothing written, once it expired or was taken). Says whether the driver
    /// asked for the attempt to stop, as a renewal does.
    async fn report_usage(
        &self,
        claim: &Claim,
        usage: &Usage,
        model: Option<&str>,
    ) -> Result<ClaimRenewal> {
        let _ = (usage, model);
        Err(pool_unsupported(&format!(
            "reporting the usage of `{}` of run `{}`",
            claim.node_id, claim.run_id
        )))
    }
    /// The latest usage reports of the run's attempts that workers are executing now.
    async fn usage_reports(&self, run_id: &str) -> Result<Vec<UsageReport>> {
        let _ = run_id;
        Ok(Vec::new())
    }
    /// Gives a claim up (a worker stopping): the attempt is queued again for another worker. Does
    /// nothing when the claim is no longer held.
    async fn release_claim(&self, claim: &Claim) -> Result<()> {
        Err(pool_unsupported(&format!(
            "releasing the claim on `{}` of run `{}`",
            claim.node_id, claim.run_id
        )))
    }
    /// Who holds live claims (claimed, not expired) on attempts of `workflow`'s runs, each
    /// with its worker's heartbeat expiry: what a worker looks at to free the claims of workers
    /// known dead ([`Store::free_claims`]). Empty on a store without the attempt queue.
    async fn claim_holders(&self, workflow: &str) -> Result<Vec<ClaimHolder>> {
        let _ = workflow;
        Ok(Vec::new())
    }
    /// Frees the claims `owners` hold on attempts of `workflow`'s runs, for workers known dead
    /// (their process is gone from this host, or their heartbeat expired) whose claims would
    /// otherwise block their attempts until they expire: each attempt is queued again for any
    /// worker, its claim epoch incremented so the old claim is fenced out at once (a renewal
    /// or an outcome under it is `ClaimLost`, writes nothing), and the workflow's workers are
    /// woken. Returns how many claims were freed.
    async fn free_claims(&self, workflow: &str, owners: &[String]) -> Result<u64> {
        let _ = owners;
        Err(pool_unsupported(&format!(
            "freeing the claims of dead workers of workflow `{workflow}`"
        )))
    }
    /// Outcomes recorded on attempts of the run that are still in progress (not yet ended by
    /// the driver).
    async fn recorded_outcomes(&self, run_id: &str) -> Result<Vec<RecordedOutcome>> {
        Err(pool_unsupported(&format!(
            "reading the outcomes of run `{run_id}`"
        )))
    }
    /// The position of the run's latest attempt ([`Claim::position`]), read before loading the
    /// run: a snapshot loaded afterwards holds what the driver saw when it queued any attempt at
    /// or before this position.
    async fn queue_position(&self, run_id: &str) -> Result<i64> {
        Err(pool_unsupported(&format!(
            "reading the queue position of run `{run_id}`"
        )))
    }
    /// Queued attempts of the run that are still in progress (queued, claimed or recorded): what
    /// a driver taking the run over adopts instead of abandoning.
    async fn queued_attempts(&self, run_id: &str) -> Result<Vec<QueuedRecord>> {
        let _ = run_id;
        Ok(Vec::new())
    }
    /// Asks a queued attempt to stop, fenced by the driver's lease. An attempt no worker holds
    /// is recorded at once as cancelled (returns `true`: no worker will start it); a claimed
    /// one gets a flag, announced on its worker's stop channel ([`stop_channel`]) and seen by
    /// polling workers at their next renewal (returns `false`).
    async fn stop_queued_attempt(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: u32,
        attempt: u32,
        fence: &FenceToken,
    ) -> Result<bool> {
        let _ = (iteration, attempt, fence);
        Err(pool_unsupported(&format!(
            "stopping `{node_id}` of run `{run_id}`"
        )))
    }
    /// Wake-ups on a notification `channel` (named by the engine: a workflow's attempt queue, a
    /// run's recorded outcomes; `store/queue.rs`), when the store
    /// has notifications (PostgreSQL LISTEN/NOTIFY); `None` when it has not: poll instead.
    async fn listen(
        &self,
        channel: &str,
    ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<()>>> {
        let _ = channel;
        Ok(None)
    }
    /// A `state` key.
    async fn state_get(&self, key: &str) -> Result<Option<String>>;
    /// Sets a `state` key.
    async fn state_set(&self, key: &str, value: &str) -> Result<()>;
}
