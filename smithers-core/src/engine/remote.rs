//! Pool mode on the driver's side: attempts queued for workers instead of run here. The
//! machine's `Start` becomes a queued attempt (its row and `Write::AttemptQueued` in one
//! commit); a watcher wakes on the run's notification channel (or polls with backoff), reads the
//! outcomes workers recorded and hands each to the waiting attempt, whose end the machine then
//! decides as for a local one. The usage workers report while an attempt runs goes to the drive's
//! usage channel, so the machine checks the budgets mid-attempt as for a local attempt. Stopping
//! a remote attempt asks the store to stop it: at once when no worker holds it, otherwise by a
//! notification on its worker's stop channel (its next renewal or usage report when the worker
//! cannot listen).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::AgentResponse;
use crate::error::TaskError;
use crate::machine::{AttemptOutput, AttemptResult};
use crate::model::NodeKey;
use crate::model::Usage;
use crate::store::{
    run_channel, FenceToken, RecordedOutcome, RemoteError, RemoteOutcome, RemoteReply, Store,
    UsageReport,
};

use super::attempt::UsageSender;

/// An attempt waiting for its outcome: (node, iteration), attempt.
type Waiters = Arc<Mutex<HashMap<(NodeKey, u32), oneshot::Sender<RemoteOutcome>>>>;

/// The shortest wait between two looks at the recorded outcomes when no notification came.
const FIRST_POLL: Duration = Duration::from_millis(25);

/// How long a stopped remote attempt gets for its worker to see the stop (notified at once, or
/// at its next claim renewal when the worker cannot listen) and record what it produced.
pub(super) const REMOTE_STOP_GRACE: Duration = Duration::from_secs(5);

/// The driver's view of its remote attempts.
pub(super) struct Remote {
    waiters: Waiters,
    poke: Arc<Notify>,
    watcher: JoinHandle<()>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Remote {
    /// Starts the watcher of run `run_id`: notifications on its channel when the store has them,
    /// polling every `poll` at most otherwise (from 25 ms, doubling while nothing comes). The
    /// usage workers report for the attempts waited for goes to `usage`, each report once.
    pub(super) async fn start(
        store: Arc<dyn Store>,
        run_id: &str,
        poll: Duration,
        usage: UsageSender,
    ) -> Remote {
        let waiters: Waiters = Arc::default();
        let poke = Arc::new(Notify::new());
        let mut wake = match store.listen(&run_channel(run_id)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, run_id, "cannot listen for recorded outcomes; polling instead");
                None
            }
        };
        let (w, p, run_id) = (waiters.clone(), poke.clone(), run_id.to_owned());
        let watcher = tokio::spawn(async move {
            let mut pause = FIRST_POLL;
            // The last usage passed on per attempt, so an unchanged report is not sent again.
            let mut passed: HashMap<(NodeKey, u32), (Usage, Option<String>)> = HashMap::new();
            loop {
                let woken = tokio::select! {
                    n = async { wake.as_mut()?.recv().await }, if wake.is_some() => {
                        if n.is_none() {
                            // The listening connection ended: poll from now on.
                            wake = None;
                        }
                        true
                    }
                    _ = p.notified() => true,
                    _ = tokio::time::sleep(pause) => false,
                };
                let waiting = w.lock().map(|m| !m.is_empty()).unwrap_or(false);
                if !waiting {
                    pause = poll;
                    continue;
                }
                let found = match store.recorded_outcomes(&run_id).await {
                    Ok(list) => deliver(&w, list),
                    Err(e) => {
                        tracing::warn!(error = %e, run_id, "cannot read recorded outcomes; trying again");
                        0
                    }
                };
                match store.usage_reports(&run_id).await {
                    Ok(list) => pass_usage(&w, &mut passed, list, &usage),
                    Err(e) => {
                        tracing::warn!(error = %e, run_id, "cannot read usage reports; trying again")
                    }
                }
                pause = if found > 0 || woken {
                    FIRST_POLL
                } else {
                    (pause * 2).min(poll)
                };
            }
        });
        Remote {
            waiters,
            poke,
            watcher,
        }
    }

    /// The future of one remote attempt: its recorded outcome as the attempt's result. When
    /// `cancel` fires first, the attempt is asked to stop (fenced by the driver's lease) and
    /// given [`REMOTE_STOP_GRACE`] to end with what it produced.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wait(
        &self,
        store: Arc<dyn Store>,
        run_id: String,
        fence: FenceToken,
        key: NodeKey,
        attempt: u32,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = AttemptResult> + Send + 'static {
        let (tx, mut rx) = oneshot::channel();
        if let Ok(mut m) = self.waiters.lock() {
            m.insert((key.clone(), attempt), tx);
        }
        // An outcome recorded already (an adopted attempt) is read at once.
        self.poke.notify_one();
        let poke = self.poke.clone();
        async move {
            let started = Instant::now();
            let result = |outcome: Option<RemoteOutcome>, otherwise: TaskError| AttemptResult {
                key: key.clone(),
                attempt,
                duration_ms: outcome
                    .as_ref()
                    .map_or(started.elapsed().as_millis() as i64, |o| o.duration_ms),
                outcome: match outcome {
                    Some(o) => from_remote(o),
                    None => Err((otherwise, None)),
                },
            };
            tokio::select! {
                biased;
                o = &mut rx => return result(o.ok(), TaskError::terminal("the driver stopped watching for outcomes")),
                _ = cancel.cancelled() => {}
            }
            if let Err(e) = store
                .stop_queued_attempt(&run_id, &key.0, key.1, attempt, &fence)
                .await
            {
                // Lost the lease (the run is another driver's) or the store failed: what the
                // worker records is for whoever drives the run now.
                return result(None, TaskError::terminal(format!("could not stop it: {e}")));
            }
            poke.notify_one();
            match tokio::time::timeout(REMOTE_STOP_GRACE, rx).await {
                Ok(Ok(o)) => result(Some(o), TaskError::terminal("cancelled")),
                _ => result(
                    None,
                    TaskError::terminal(format!(
                        "its worker did not stop within {REMOTE_STOP_GRACE:?} of being told to"
                    )),
                ),
            }
        }
    }
}

/// Hands each recorded outcome to the attempt waiting for it; returns how many were delivered.
fn deliver(waiters: &Waiters, list: Vec<RecordedOutcome>) -> usize {
    let Ok(mut m) = waiters.lock() else {
        return 0;
    };
    let mut n = 0;
    for r in list {
        if let Some(tx) = m.remove(&((r.node_id, r.iteration), r.attempt)) {
            let _ = tx.send(r.outcome);
            n += 1;
        }
    }
    n
}

/// Passes each new usage report of an attempt still waited for to the drive's usage channel
/// (`Input::UsageReported` for the machine's budget checks).
fn pass_usage(
    waiters: &Waiters,
    passed: &mut HashMap<(NodeKey, u32), (Usage, Option<String>)>,
    list: Vec<UsageReport>,
    usage: &UsageSender,
) {
    let Ok(m) = waiters.lock() else {
        return;
    };
    passed.retain(|k, _| m.contains_key(k));
    for r in list {
        let at = ((r.node_id, r.iteration), r.attempt);
        if !m.contains_key(&at) {
            continue;
        }
        let report = (r.usage, r.model);
        if passed.get(&at) == Some(&report) {
            continue;
        }
        let _ = usage.send((at.0.clone(), report.0.clone(), report.1.clone()));
        passed.insert(at, report);
    }
}

/// A recorded outcome as an attempt's outcome, for the machine (its type is the machine's).
#[allow(clippy::result_large_err)]
pub(super) fn from_remote(
    o: RemoteOutcome,
) -> std::result::Result<AttemptOutput, (TaskError, Option<AgentResponse>)> {
    let reply = o.reply.map(|r| AgentResponse {
        text: r.text,
        json: r.json,
        usage: r.usage,
        session_id: r.session_id,
        exit_code: r.exit_code,
        transcript: r.transcript,
        model: r.model,
    });
    match (o.error, o.value, reply) {
        (Some(e), _, reply) => Err((
            TaskError {
                message: e.message,
                retryable: e.retryable,
                retry_after: e.retry_after_ms.map(Duration::from_millis),
            },
            reply,
        )),
        (None, Some(v), _) => Ok(AttemptOutput::Value(v)),
        (None, None, Some(reply)) => Ok(AttemptOutput::Agent(reply)),
        (None, None, None) => Err((
            TaskError::terminal("its worker recorded neither a value, a reply nor an error"),
            None,
        )),
    }
}

/// An attempt's outcome as a worker records it.
pub(super) fn to_remote(result: &AttemptResult) -> RemoteOutcome {
    let reply = |r: &AgentResponse| RemoteReply {
        text: r.text.clone(),
        json: r.json.clone(),
        usage: r.usage.clone(),
        session_id: r.session_id.clone(),
        exit_code: r.exit_code,
        transcript: r.transcript.clone(),
        model: r.model.clone(),
    };
    let (value, reply, error) = match &result.outcome {
        Ok(AttemptOutput::Value(v)) => (Some(v.clone()), None, None),
        Ok(AttemptOutput::Agent(r)) => (None, Some(reply(r)), None),
        Err((e, r)) => (
            None,
            r.as_ref().map(reply),
            Some(RemoteError {
                message: e.message.clone(),
                retryable: e.retryable,
                retry_after_ms: e.retry_after.map(|d| d.as_millis() as u64),
            }),
        ),
    };
    RemoteOutcome {
        duration_ms: result.duration_ms,
        value,
        reply,
        error,
    }
}
