//! The records of supervision: the registry of live `worker` processes (`_smithers_workers`) and
//! the restart bookkeeping of runs a worker took over (`_smithers_restarts`). Backend-neutral:
//! each store reads and writes them with its own SQL.

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// A row of `_smithers_workers`: a `worker` process, as it last reported itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Its id: `host:pid:nonce`, the form of lease owners.
    pub worker_id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: i64,
    /// The workflow whose runs it drives, once it has seen one (a worker learns it from the
    /// first run its workflow binary renders).
    pub workflow: Option<String>,
    /// Runs it drives at once at most (`worker --concurrency`).
    pub concurrency: i64,
    /// The runs it drives now.
    pub driving: Vec<String>,
    /// When it registered.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub heartbeat_at: Timestamp,
    /// When it is stale without another heartbeat (epoch milliseconds): a worker killed with
    /// SIGKILL never deregisters, and is known dead by this.
    pub expires_ms: i64,
}

impl WorkerRecord {
    /// Whether its last heartbeat is too old at `now_ms`: the process is gone or hung.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        self.expires_ms < now_ms
    }
}

/// A row of `_smithers_restarts`: how often workers took a run over from a driver that was gone
/// since the run last made progress. Persisted, so the count survives the worker restarting
/// (a task that aborts the process kills the worker driving it too).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// The run.
    pub run_id: String,
    /// Takeovers since the run last made progress (a finished node resets it to the first).
    pub restarts: u32,
    /// Finished nodes when it was last taken over: more at the next takeover is progress.
    pub progress: u32,
    /// When it was last taken over.
    pub last_restart_at: Timestamp,
    /// The same, epoch milliseconds (the backoff counts from it).
    pub last_restart_ms: i64,
    /// Why its last driver was judged gone.
    pub last_reason: String,
    /// The worker that took it over last.
    pub last_worker: String,
}
