//! Carrying out the machine's `Prepare` and `Start` commands: ensuring output tables, looking up
//! the cache, spawning attempts and running their bodies (compute or agent) with timeout and
//! cancellation. What a result means is decided in `machine`.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::remote::Remote;
use super::{panic_message, Engine};
use crate::agent::{AgentRequest, AgentResponse, ProgressSink};
/// What the executor keeps of a running attempt: how to stop it, and what to record if it
/// does not end when told to.
pub(super) struct AttemptHandle {
    pub(super) cancel: CancellationToken,
    pub(super) attempt: u32,
    pub(super) started: Instant,
    /// An attempt queued for workers (pool mode): the task that waits for its outcome, which a
    /// driver handing the run back drops without stopping the attempt (the next driver adopts
    /// it).
    pub(super) remote: Option<tokio::task::AbortHandle>,
}

/// Hands back (`Input::HandBack`): the attempts queued for workers carry on without this
/// driver. Their waits end here without asking their workers to stop, and they are no longer
/// this driver's to stop or record; returns them.
pub(super) fn leave_remote(handles: &mut HashMap<NodeKey, AttemptHandle>) -> Vec<NodeKey> {
    let mut left = Vec::new();
    handles.retain(|key, h| match &h.remote {
        Some(wait) => {
            wait.abort();
            left.push(key.clone());
            false
        }
        None => true,
    });
    left
}

use crate::error::{Error, Result, TaskError};
use crate::events::{Event, EventKind};
use crate::machine::{AttemptOutput, AttemptResult, Preparation, Prepared, RunState, StartAttempt};
use crate::model::NodeKey;
use crate::model::Usage;
use crate::node::{TaskExec, TaskSpec};
use crate::store::{QueuedAttempt, Write};
use crate::task_ctx::TaskCtx;

/// The sending end of the attempts' usage reports: (attempt, usage so far, model), fed to the
/// machine as `Input::UsageReported`.
pub(super) type UsageSender = UnboundedSender<(NodeKey, Usage, Option<String>)>;

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    async fn ensure_table(
        &self,
        tables: &mut HashSet<&'static str>,
        task: &TaskSpec,
    ) -> Result<()> {
        if tables.insert(task.output.table) {
            if let Err(e) = self.store.ensure_output_table(task.output).await {
                tables.remove(task.output.table);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Carries out `Command::Prepare`: each task's output table is ensured in order (stopping
    /// at the first one its type does not fit), then the cache is looked up.
    pub(super) async fn prepare(
        &self,
        tables: &mut HashSet<&'static str>,
        items: Vec<Preparation>,
    ) -> Result<Vec<Prepared>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match self.ensure_table(tables, &item.task).await {
                Ok(()) => {}
                Err(
                    e @ (Error::SchemaChanged { .. }
                    | Error::InvalidIdentifier(_)
                    | Error::ReservedTable(_)),
                ) => {
                    out.push(Prepared::TableError(e));
                    break;
                }
                Err(e) => return Err(e),
            }
            let cached = match &item.cache_key {
                Some(k) => self.store.cache_get(k).await?,
                None => None,
            };
            out.push(Prepared::Ready { cached });
        }
        Ok(out)
    }

    /// Carries out `Command::Start`: spawns the attempt's body, stoppable through its token;
    /// with `remote` (pool mode, or an adopted attempt), spawns the wait for the outcome a
    /// worker records instead.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn_attempt(
        &self,
        st: &RunState,
        persist: &UnboundedSender<Event>,
        usage: &UsageSender,
        join: &mut JoinSet<AttemptResult>,
        tokens: &mut HashMap<NodeKey, AttemptHandle>,
        remote: Option<&Remote>,
        s: StartAttempt,
    ) {
        let StartAttempt {
            task: t,
            iteration,
            attempt,
            rejected,
            adopted: _,
        } = s;
        let cancel = self.options.cancel.child_token();
        let key = (t.id.to_string(), iteration);
        if let Some(remote) = remote {
            let wait = join.spawn(remote.wait(
                self.store.clone(),
                st.run_id.clone(),
                st.fence.clone(),
                key.clone(),
                attempt,
                cancel.clone(),
            ));
            tokens.insert(
                key,
                AttemptHandle {
                    cancel,
                    attempt,
                    started: Instant::now(),
                    remote: Some(wait),
                },
            );
            return;
        }
        tokens.insert(
            key.clone(),
            AttemptHandle {
                cancel: cancel.clone(),
                attempt,
                started: Instant::now(),
                remote: None,
            },
        );
        let progress = self.progress_sink(&st.run_id, &t.id, iteration, persist, usage.clone());
        let run_id = st.run_id.clone();
        let vcs = match &t.exec {
            TaskExec::Agent(agent) if self.options.vcs_snapshots && agent.edits_files() => agent
                .cwd()
                .or_else(|| std::env::current_dir().ok())
                .map(|dir| crate::vcs::AttemptSnapshots {
                    store: self.store.clone(),
                    run_id: run_id.clone(),
                    fence: st.fence.clone(),
                    node_id: t.id.to_string(),
                    iteration,
                    attempt,
                    dir,
                }),
            _ => None,
        };
        let steps = crate::steps::Steps::new(self.store.clone(), run_id.clone());
        join.spawn(async move {
            let started = Instant::now();
            let input = AttemptInput {
                run_id,
                iteration,
                attempt,
                rejected,
                prompt: None,
                cancel,
                progress,
                vcs,
                steps,
            };
            // A body that panics fails its attempt (terminally) instead of taking the task down
            // with it: the engine must always hear that an attempt ended.
            let outcome = match AssertUnwindSafe(run_attempt(&t, input))
                .catch_unwind()
                .await
            {
                Ok(outcome) => outcome,
                Err(panic) => Err((
                    TaskError::terminal(format!("the task panicked: {}", panic_message(&*panic))),
                    None,
                )),
            };
            AttemptResult {
                key,
                attempt,
                duration_ms: started.elapsed().as_millis() as i64,
                outcome,
            }
        });
    }

    fn progress_sink(
        &self,
        run_id: &str,
        node_id: &str,
        it: u32,
        persist: &UnboundedSender<Event>,
        usage_tx: UsageSender,
    ) -> ProgressSink {
        let key: NodeKey = (node_id.to_owned(), it);
        let (run_id, node_id) = (run_id.to_owned(), node_id.to_owned());
        let listener = self.options.on_event.clone();
        let clock = self.options.clock.clone();
        let persist = persist.clone();
        ProgressSink::new(move |stream, line| {
            if stream == crate::agent::USAGE_STREAM {
                // Usage so far, for the budgets: to the machine, not to the output.
                if let Some((usage, model)) = usage_line(line) {
                    let _ = usage_tx.send((key.clone(), usage, model));
                }
                return;
            }
            let e = Event::node(
                &run_id,
                &node_id,
                it,
                clock.now(),
                EventKind::NodeOutput {
                    stream: stream.into(),
                    line: trim_line(line),
                },
            );
            e.trace();
            if let Some(l) = &listener {
                l(&e);
            }
            let _ = persist.send(e);
        })
    }
}

/// A line of the usage stream (`agent::USAGE_STREAM`): the usage so far and the model.
pub(super) fn usage_line(line: &str) -> Option<(Usage, Option<String>)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let usage: Usage = serde_json::from_value(v["usage"].clone()).ok()?;
    Some((usage, v["model"].as_str().map(str::to_owned)))
}

/// Everything one attempt's body needs besides its task.
pub(super) struct AttemptInput {
    pub(super) run_id: String,
    pub(super) iteration: u32,
    pub(super) attempt: u32,
    /// The previous attempt's rejected reply, quoted in an agent's prompt.
    pub(super) rejected: Option<crate::prompt::RejectedReply>,
    /// An agent's prompt as assembled already (by the driver that queued the attempt).
    pub(super) prompt: Option<String>,
    pub(super) cancel: CancellationToken,
    pub(super) progress: ProgressSink,
    /// Working-copy snapshots around a file-editing agent.
    pub(super) vcs: Option<crate::vcs::AttemptSnapshots>,
    /// The run's Steps API, for a compute task's body.
    pub(super) steps: crate::steps::Steps,
}

/// The prompt an agent task's attempt sends: the task's prompt with the output schema and its
/// instruction, and the previous reply quoted back when it was rejected.
fn agent_prompt(
    t: &TaskSpec,
    schema: &Value,
    rejected: Option<&crate::prompt::RejectedReply>,
) -> String {
    match rejected {
        Some(r) => crate::prompt::assemble_after_invalid_reply(&t.prompt, schema, r),
        None => crate::prompt::assemble(&t.prompt, schema, None),
    }
}

/// Pool mode: the write that queues a started attempt for the workers of `workflow`, with what
/// they need (an agent task's assembled prompt).
pub(super) fn queued(workflow: &str, s: &StartAttempt) -> Write {
    let prompt = match &s.task.exec {
        TaskExec::Agent(_) => {
            let schema = (s.task.output.schema)();
            Some(agent_prompt(&s.task, &schema, s.rejected.as_ref()))
        }
        _ => None,
    };
    Write::AttemptQueued {
        workflow: workflow.to_owned(),
        node_id: s.task.id.to_string(),
        iteration: s.iteration,
        attempt: s.attempt,
        payload: QueuedAttempt {
            prompt,
            output_type: s.task.output.short_name().to_owned(),
        },
    }
}

pub(super) async fn run_attempt(
    t: &TaskSpec,
    input: AttemptInput,
) -> std::result::Result<AttemptOutput, (TaskError, Option<AgentResponse>)> {
    let AttemptInput {
        run_id,
        iteration,
        attempt,
        rejected,
        prompt,
        cancel,
        progress,
        vcs,
        steps,
    } = input;
    let fut = async {
        match &t.exec {
            TaskExec::Compute(f) => {
                let ctx = TaskCtx {
                    run_id: run_id.clone(),
                    node_id: t.id.to_string(),
                    iteration,
                    attempt,
                    cancel: cancel.clone(),
                    progress: progress.clone(),
                    steps: Some(steps.clone()),
                };
                f(ctx)
                    .await
                    .map(AttemptOutput::Value)
                    .map_err(|e| (e, None))
            }
            TaskExec::Agent(agent) => {
                let schema = (t.output.schema)();
                let req = AgentRequest {
                    prompt: match &prompt {
                        Some(p) => p.clone(),
                        None => agent_prompt(t, &schema, rejected.as_ref()),
                    },
                    task_prompt: t.prompt.clone(),
                    output_schema: schema,
                    output_type: t.output.short_name().to_owned(),
                    run_id: run_id.clone(),
                    node_id: t.id.to_string(),
                    iteration,
                    attempt,
                    timeout: t.timeout,
                    cancel: cancel.clone(),
                    progress: progress.clone(),
                };
                if let Some(v) = &vcs {
                    v.take(true).await;
                }
                let result = agent.generate(req).await;
                if let Some(v) = &vcs {
                    v.take(false).await;
                }
                result.map(AttemptOutput::Agent).map_err(|e| {
                    let resp = AgentResponse {
                        usage: e.usage,
                        transcript: e.transcript,
                        exit_code: e.exit_code,
                        session_id: e.session_id,
                        ..AgentResponse::default()
                    };
                    (e.error, Some(resp))
                })
            }
            TaskExec::Value(v) => v
                .to_json()
                .map(AttemptOutput::Value)
                .map_err(|e| (TaskError::terminal(e), None)),
            TaskExec::Missing => Err((
                TaskError::terminal(format!(
                    "task `{}` has nothing to run: give it `agent=`, `run=` or `value=`",
                    t.id
                )),
                None,
            )),
        }
    };
    // The agent enforces the task's timeout itself and reports what the attempt produced (its
    // transcript, session id, exit status, its own message): our deadline comes a grace period
    // later, for agents that do not. A compute body is stopped at its timeout.
    let deadline = t.timeout.map(|d| match &t.exec {
        TaskExec::Agent(_) => (d, d + AGENT_DEADLINE_GRACE),
        _ => (d, d),
    });
    let mut fut = std::pin::pin!(fut);
    let timed_out = tokio::select! {
        r = &mut fut => return r,
        _ = tokio::time::sleep(deadline.map_or(Duration::MAX, |d| d.1)), if deadline.is_some() => true,
        _ = cancel.cancelled() => false,
    };
    // Stopped. An agent sees the cancellation and gets a moment to return what it produced (its
    // transcript, session id, exit status); a compute body is dropped, which is how a future is
    // cancelled and loses nothing it could report.
    cancel.cancel();
    let limit = deadline.map_or(Duration::ZERO, |d| d.0);
    let grace = match &t.exec {
        TaskExec::Agent(_) => STOP_GRACE,
        _ => Duration::ZERO,
    };
    match tokio::time::timeout(grace, fut).await {
        Ok(Err((e, resp))) if timed_out => Err((
            TaskError::retryable(format!("timed out after {limit:?}: {}", e.message)),
            resp,
        )),
        Ok(r) => r,
        Err(_) if timed_out => Err((
            TaskError::retryable(format!("timed out after {limit:?}")),
            None,
        )),
        Err(_) => Err((TaskError::terminal("cancelled"), None)),
    }
}

/// How long past a task's timeout the engine waits for an agent to enforce it itself.
const AGENT_DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// How long a stopped attempt (timed out, cancelled, unmounted) gets to return what it produced.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Progress lines are kept for `logs`, but a tool can print megabytes on one line: keep the head.
const MAX_PROGRESS_LINE: usize = 4000;

pub(super) fn trim_line(line: &str) -> String {
    if line.len() <= MAX_PROGRESS_LINE {
        return line.to_owned();
    }
    let mut end = MAX_PROGRESS_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &line[..end], line.len())
}
