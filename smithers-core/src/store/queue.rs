//! The attempt queue of pool mode: records shared by the drivers that queue attempts and the
//! workers that claim and execute them (DESIGN.md section 9).
//!
//! A driver in pool mode commits an attempt's row as *queued* ([`Write::AttemptQueued`], in the
//! same transaction as the machine's `AttemptStart`) with what a worker needs
//! ([`QueuedAttempt`]). Workers of the run's workflow claim queued attempts
//! ([`Store::claim_attempts`], `FOR UPDATE SKIP LOCKED` on PostgreSQL), hold the claim by
//! renewing it, and record the attempt's raw outcome ([`RemoteOutcome`]) fenced by the claim: a
//! worker whose claim expired or was taken commits nothing. The driver reads recorded outcomes
//! ([`Store::recorded_outcomes`]) and feeds each to the machine as the attempt's end, which then
//! commits output, node state and attempt under the run's lease, as for a local attempt.
//!
//! [`Write::AttemptQueued`]: super::Write::AttemptQueued
//! [`Store::claim_attempts`]: super::Store::claim_attempts
//! [`Store::recorded_outcomes`]: super::Store::recorded_outcomes

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Usage;

/// What a worker needs to execute a queued attempt besides the task itself (which it finds by
/// rendering the run from persisted state): stored as JSON in the attempt's row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueuedAttempt {
    /// The prompt of an agent task as the driver assembled it (the task's prompt, the output
    /// schema and its instruction, a rejected reply quoted back); `None` for compute tasks.
    pub prompt: Option<String>,
    /// The output type's short name.
    pub output_type: String,
}

/// Who holds a claim on a queued attempt, in which term: the claim's fencing token. Every claim
/// of an attempt increments its epoch, so a worker that stalled past its claim while another
/// claimed the attempt holds a stale token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimToken {
    /// The worker (`host:pid:nonce`, as lease owners).
    pub owner: String,
    /// The claim epoch of the attempt.
    pub epoch: i64,
}

/// A worker's claim on one queued attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// The run.
    pub run_id: String,
    /// The run's workflow.
    pub workflow: String,
    /// The task's node id.
    pub node_id: String,
    /// Its iteration.
    pub iteration: u32,
    /// The attempt number.
    pub attempt: u32,
    /// The claim's fencing token.
    pub token: ClaimToken,
    /// What the driver queued for the worker.
    pub payload: QueuedAttempt,
    /// The attempt's position among the run's attempts ([`Store::queue_position`]): a render
    /// over a snapshot loaded after the run's position reached it sees everything the driver saw
    /// when it queued the attempt (one driver commits a run's batches one after the other).
    ///
    /// [`Store::queue_position`]: super::Store::queue_position
    pub position: i64,
}

/// An agent's reply, as a worker recorded it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteReply {
    /// The final reply text.
    pub text: String,
    /// Structured output, when the tool returned it natively.
    pub json: Option<Value>,
    /// Token usage and cost.
    pub usage: Usage,
    /// The tool's session id.
    pub session_id: Option<String>,
    /// Exit status of a CLI process.
    pub exit_code: Option<i32>,
    /// Raw transcript (JSONL).
    pub transcript: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
}

/// A failed attempt's error, as a worker recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// What happened.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// A rate limit's wait, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

/// The raw outcome of an attempt a worker executed: what its body returned, before the machine
/// decides what it means (validation, retries, budgets, cache are the driver's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteOutcome {
    /// How long the body ran.
    pub duration_ms: i64,
    /// A compute task's value.
    pub value: Option<Value>,
    /// An agent's reply (also kept on failure: its usage, transcript, exit code).
    pub reply: Option<RemoteReply>,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<RemoteError>,
}

/// An outcome recorded on an attempt that its driver has not consumed yet.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedOutcome {
    /// The task's node id.
    pub node_id: String,
    /// Its iteration.
    pub iteration: u32,
    /// The attempt number.
    pub attempt: u32,
    /// Who executed it.
    pub worker: Option<String>,
    /// What it produced.
    pub outcome: RemoteOutcome,
}

/// A worker holding claims on attempts of a workflow's runs ([`Store::claim_holders`]), with
/// what tells whether it is alive.
///
/// [`Store::claim_holders`]: super::Store::claim_holders
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimHolder {
    /// The claims' owner (`host:pid:nonce`, the worker's id in the registry).
    pub owner: String,
    /// When its row in the worker registry goes stale without a heartbeat (epoch ms, the
    /// worker's [`WorkerRecord::expires_ms`]); `None` when it has no row.
    ///
    /// [`WorkerRecord::expires_ms`]: super::WorkerRecord::expires_ms
    pub heartbeat_expires_ms: Option<i64>,
}

/// The usage a worker reported so far for an attempt it executes ([`Store::report_usage`]),
/// as its driver reads it ([`Store::usage_reports`]) to check the budgets mid-attempt.
///
/// [`Store::report_usage`]: super::Store::report_usage
/// [`Store::usage_reports`]: super::Store::usage_reports
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The task's node id.
    pub node_id: String,
    /// Its iteration.
    pub iteration: u32,
    /// The attempt number.
    pub attempt: u32,
    /// Token usage and cost so far, as the agent streamed it.
    pub usage: Usage,
    /// The model, when the agent said.
    pub model: Option<String>,
}

/// What renewing a claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimRenewal {
    /// The driver asked for the attempt to stop (its task was unmounted, the run is cancelled).
    pub stop_requested: bool,
}

/// A queued attempt of a run still in progress, as the driver that takes the run over finds it
/// (adopted instead of abandoned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRecord {
    /// The task's node id.
    pub node_id: String,
    /// Its iteration.
    pub iteration: u32,
    /// The attempt number.
    pub attempt: u32,
}

/// The notification channel a workflow's queue is announced on: workers of `workflow` listen
/// to it to wake up when attempts are queued. A fixed-width name (PostgreSQL channel names are
/// identifiers of at most 63 bytes), hashed so any workflow name fits.
pub(crate) fn queue_channel(workflow: &str) -> String {
    format!("smithers_q_{:016x}", fnv1a(workflow.as_bytes()))
}

/// The notification channel of a run: its driver listens to it to wake up when a worker
/// recorded an outcome.
pub(crate) fn run_channel(run_id: &str) -> String {
    format!("smithers_r_{:016x}", fnv1a(run_id.as_bytes()))
}

/// The notification channel of a worker's stop requests: the worker that claimed attempts
/// (`owner`, as its claims record it) listens to it, so a driver's stop reaches the attempt at
/// once instead of at the claim's next renewal.
pub(crate) fn stop_channel(owner: &str) -> String {
    format!("smithers_s_{:016x}", fnv1a(owner.as_bytes()))
}

/// FNV-1a over explicit bytes: the same channel names on every platform and version.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The error of a store that has no attempt queue (SQLite): pool mode needs PostgreSQL.
pub(crate) fn pool_unsupported(what: &str) -> crate::Error {
    crate::Error::Unsupported(format!(
        "{what}: pool mode (workers sharing a run's attempts) needs a PostgreSQL database; open one with `--db postgres://USER@HOST:PORT/DATABASE` (or SMITHERS_DB), or drive the run in one process without pool mode"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_short_identifiers_that_depend_on_the_name() {
        let a = queue_channel("a very long workflow name with spaces and ünïcode");
        assert!(a.len() <= 63 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_ne!(queue_channel("a"), queue_channel("b"));
        assert_ne!(queue_channel("a"), run_channel("a"));
        assert_ne!(run_channel("a"), stop_channel("a"));
    }
}
