//! [`ScriptedAgent`]: an agent for tests that answers from a queue and records what it was asked.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, TaskError};

#[derive(Debug)]
enum Outcome {
    Reply(Box<AgentResponse>),
    Fail(AgentError),
    /// Wait until the request is cancelled or its timeout passes.
    Hang,
}

#[derive(Debug)]
struct Step {
    delay: Duration,
    outcome: Outcome,
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Step>,
    requests: Vec<AgentRequest>,
}

/// An agent that replies from a script, in order, and records every request it got.
///
/// Clones share the script and the record, so a test can keep one clone and hand the other to a
/// workflow. When the script runs out, requests fail with a terminal error.
///
/// ```
/// use smithers_agents::ScriptedAgent;
/// use serde_json::json;
/// let agent = ScriptedAgent::new()
///     .reply("not json at all")
///     .fail_retryable("HTTP 500")
///     .reply_json(json!({"summary": "ok"}));
/// assert_eq!(agent.remaining(), 3);
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ScriptedAgent {
    name: String,
    state: Arc<Mutex<State>>,
}

impl ScriptedAgent {
    /// An agent with an empty script, named `scripted`.
    pub fn new() -> Self {
        ScriptedAgent {
            name: "scripted".to_owned(),
            state: Arc::default(),
        }
    }

    /// Sets the name reported by [`Agent::name`].
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(self, delay: Duration, outcome: Outcome) -> Self {
        self.state().script.push_back(Step { delay, outcome });
        self
    }

    /// Next, reply with this text.
    pub fn reply(self, text: impl Into<String>) -> Self {
        let response = AgentResponse {
            text: text.into(),
            ..AgentResponse::default()
        };
        self.respond(response)
    }

    /// Next, reply with this JSON value as the text (as a model would write it).
    pub fn reply_json(self, value: Value) -> Self {
        self.reply(value.to_string())
    }

    /// Next, return this full response (usage, session id, native `json`...).
    pub fn respond(self, response: AgentResponse) -> Self {
        self.push(Duration::ZERO, Outcome::Reply(Box::new(response)))
    }

    /// Next, wait `delay` (or until cancelled), then reply with this text.
    pub fn reply_after(self, delay: Duration, text: impl Into<String>) -> Self {
        let response = AgentResponse {
            text: text.into(),
            ..AgentResponse::default()
        };
        self.push(delay, Outcome::Reply(Box::new(response)))
    }

    /// Next, fail with this error.
    pub fn fail(self, error: impl Into<AgentError>) -> Self {
        self.push(Duration::ZERO, Outcome::Fail(error.into()))
    }

    /// Next, fail with a retryable error.
    pub fn fail_retryable(self, message: impl Into<String>) -> Self {
        self.fail(TaskError::retryable(message))
    }

    /// Next, fail with a terminal error.
    pub fn fail_terminal(self, message: impl Into<String>) -> Self {
        self.fail(TaskError::terminal(message))
    }

    /// Next, never answer: wait until the request is cancelled or its timeout passes, then fail
    /// with a retryable error.
    pub fn hang(self) -> Self {
        self.push(Duration::ZERO, Outcome::Hang)
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<AgentRequest> {
        self.state().requests.clone()
    }

    /// How many scripted steps are left.
    pub fn remaining(&self) -> usize {
        self.state().script.len()
    }
}

#[async_trait::async_trait]
impl Agent for ScriptedAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
        let (step, count) = {
            let mut state = self.state();
            // The record keeps no live progress sink: a sink held after the attempt would keep
            // the engine's progress writer waiting for it when the run ends.
            let mut recorded = request.clone();
            recorded.progress = smithers_core::ProgressSink::discard();
            state.requests.push(recorded);
            (state.script.pop_front(), state.requests.len())
        };
        let Some(step) = step else {
            return Err(AgentError::terminal(format!(
                "ScriptedAgent `{}` has no scripted reply left for request {count} (node `{}`, attempt {})",
                self.name, request.node_id, request.attempt
            )));
        };
        let cancelled =
            || AgentError::retryable(format!("ScriptedAgent `{}` was cancelled", self.name));
        if !step.delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(step.delay) => {}
                _ = request.cancel.cancelled() => return Err(cancelled()),
            }
        }
        match step.outcome {
            Outcome::Reply(response) => {
                request.progress.line("text", &response.text);
                Ok(*response)
            }
            Outcome::Fail(error) => Err(error),
            Outcome::Hang => {
                let timeout = request.timeout.unwrap_or(Duration::MAX);
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => Err(AgentError::retryable(format!(
                        "ScriptedAgent `{}` timed out after {:.1}s", self.name, timeout.as_secs_f64()
                    ))),
                    _ = request.cancel.cancelled() => Err(cancelled()),
                }
            }
        }
    }
}
