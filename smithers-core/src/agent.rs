//! The `Agent` trait: what the engine asks of anything that turns a prompt into an output.
//!
//! Implementations live in `smithers-agents`; the core never depends on them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::TaskError;
use crate::model::Usage;

/// A request to an agent for one attempt of one task.
#[derive(Clone, Debug)]
pub struct AgentRequest {
    /// The full prompt: the task's prompt, the output schema and the REQUIRED OUTPUT instruction
    /// (and, on a retry after invalid output, the validation error).
    pub prompt: String,
    /// The task's own prompt, without the schema instruction.
    pub task_prompt: String,
    /// The JSON schema the reply must satisfy.
    pub output_schema: Value,
    /// Short name of the output type.
    pub output_type: String,
    /// The run, node, iteration and attempt this request belongs to.
    pub run_id: String,
    /// Node id.
    pub node_id: String,
    /// Loop iteration.
    pub iteration: u32,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Timeout of this attempt, if the task has one. The engine enforces it too.
    pub timeout: Option<Duration>,
    /// Cancelled when the run is cancelled or the attempt times out.
    pub cancel: CancellationToken,
    /// Sink for progress lines, shown to a user watching the run as `NodeOutput` events.
    pub progress: ProgressSink,
}

/// The callback behind a [`ProgressSink`]: `f(stream, line)`.
type ProgressFn = dyn Fn(&str, &str) + Send + Sync;

/// Where an agent sends progress lines (`NodeOutput` events).
#[derive(Clone)]
pub struct ProgressSink(Arc<ProgressFn>);

impl ProgressSink {
    /// A sink calling `f(stream, line)`.
    pub fn new(f: impl Fn(&str, &str) + Send + Sync + 'static) -> Self {
        ProgressSink(Arc::new(f))
    }

    /// A sink that drops everything.
    pub fn discard() -> Self {
        ProgressSink(Arc::new(|_, _| {}))
    }

    /// Reports one line on `stream` (`stdout`, `stderr`, `text`, `tool`...).
    pub fn line(&self, stream: &str, line: &str) {
        (self.0)(stream, line)
    }

    /// Reports the usage of the attempt so far (cumulative), while the agent works: the engine
    /// checks the task's and the run's budgets against it and stops an attempt that exceeds one.
    /// `model` prices it when the agent reports no cost.
    pub fn usage(&self, usage: &Usage, model: Option<&str>) {
        let line = serde_json::json!({"usage": usage, "model": model}).to_string();
        (self.0)(USAGE_STREAM, &line)
    }
}

/// The progress stream that carries [`ProgressSink::usage`] reports (JSON), not shown as output.
pub const USAGE_STREAM: &str = "usage";

impl ProgressSink {}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// What an agent returns for one attempt.
#[derive(Clone, Debug, Default)]
pub struct AgentResponse {
    /// The final reply text.
    pub text: String,
    /// Structured output, when the tool returned it natively (it is still validated).
    pub json: Option<Value>,
    /// Token usage and cost.
    pub usage: Usage,
    /// The tool's session id.
    pub session_id: Option<String>,
    /// Exit status of a CLI process.
    pub exit_code: Option<i32>,
    /// Raw transcript (JSONL), kept per attempt outside the hot tables.
    pub transcript: Option<String>,
    /// The model that answered, when known.
    pub model: Option<String>,
}

/// An error of an agent, with what usage was spent before it happened.
#[derive(Clone, Debug)]
pub struct AgentError {
    /// The error.
    pub error: TaskError,
    /// Usage spent anyway.
    pub usage: Usage,
    /// Transcript so far.
    pub transcript: Option<String>,
    /// Exit status of a CLI process.
    pub exit_code: Option<i32>,
    /// The tool's session id, when it printed one before failing (to resume or inspect it).
    pub session_id: Option<String>,
}

impl AgentError {
    /// A retryable error with no usage.
    pub fn retryable(message: impl Into<String>) -> Self {
        TaskError::retryable(message).into()
    }

    /// A terminal error with no usage.
    pub fn terminal(message: impl Into<String>) -> Self {
        TaskError::terminal(message).into()
    }
}

impl From<TaskError> for AgentError {
    fn from(error: TaskError) -> Self {
        AgentError {
            error,
            usage: Usage::default(),
            transcript: None,
            exit_code: None,
            session_id: None,
        }
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AgentError {}

/// Something that turns a prompt into a reply: a coding-agent CLI, an LLM API, or a test script.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an agent",
    label = "expected something that implements `Agent`",
    note = "use one of smithers' agents (`ClaudeCodeAgent`, `CodexAgent`, ...) or implement `Agent` for `{Self}`"
)]
#[async_trait::async_trait]
pub trait Agent: Send + Sync + 'static {
    /// A short name for logs and the cache key (`claude-code`, `codex`, ...).
    fn name(&self) -> &str;

    /// The agent's configuration (model, flags, system prompt...) as JSON: part of the
    /// `<Workflow cache>` key, so two agents with the same signature may share cached outputs,
    /// and recorded as `flags` in a step's agent config.
    ///
    /// Build it from explicit fields (`json!({"agent": self.name(), "model": ...})`), never
    /// from `Debug` output, which is not stable across versions: a changed signature only
    /// means a cache miss, but an unstable one means a miss on every upgrade.
    fn signature(&self) -> serde_json::Value {
        serde_json::json!({ "agent": self.name() })
    }

    /// Runs one attempt.
    async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError>;

    /// The working directory the agent edits, if any (for VCS snapshots; the process's current
    /// directory when `None`).
    fn cwd(&self) -> Option<PathBuf> {
        None
    }

    /// Whether the agent may change files in its working directory (coding-agent CLIs do): the
    /// engine then snapshots the working copy around each attempt so it can be reverted.
    fn edits_files(&self) -> bool {
        false
    }

    /// The model it asks for, when it names one (recorded in the step's agent config; the
    /// model an attempt reports is on its attempt row).
    fn model(&self) -> Option<String> {
        None
    }

    /// Its system prompt, when it has one: the step's agent config records its SHA-256.
    fn system_prompt(&self) -> Option<String> {
        None
    }
}

/// What a step records about the agent of one of its tasks: kind, model, flags (the agent's
/// [`Agent::signature`]) and the SHA-256 of its system prompt.
pub fn agent_config(node_id: &str, agent: &dyn Agent) -> serde_json::Value {
    use sha2::Digest;
    serde_json::json!({
        "node_id": node_id,
        "agent": agent.name(),
        "model": agent.model(),
        "flags": agent.signature(),
        "system_prompt_sha256": agent
            .system_prompt()
            .map(|p| hex::encode(sha2::Sha256::digest(p.as_bytes()))),
    })
}

/// A shared agent, as stored in a task.
pub type SharedAgent = Arc<dyn Agent>;

/// Conversion into a [`SharedAgent`]: implemented for every `Agent` and for `Arc`s of them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an agent",
    label = "expected an agent here",
    note = "`agent=` takes a value implementing `Agent`, or an `Arc` of one"
)]
pub trait IntoAgent {
    /// Converts.
    fn into_agent(self) -> SharedAgent;
}

impl<A: Agent> IntoAgent for A {
    fn into_agent(self) -> SharedAgent {
        Arc::new(self)
    }
}

impl<A: Agent> IntoAgent for Arc<A> {
    fn into_agent(self) -> SharedAgent {
        self
    }
}

impl IntoAgent for Arc<dyn Agent> {
    fn into_agent(self) -> SharedAgent {
        self
    }
}

/// A chain of agents: the first answers, and on a failure that is not its reply's fault (a
/// missing binary, a rejected key, an outage, a timeout) the next one is asked the same prompt.
/// An invalid reply is judged by the engine and retried as usual (from the first agent); a
/// cancelled request does not fall through.
///
/// `agent={Fallback::new([claude, codex])}`, or `agent={vec![claude, codex]}` (any `Vec` or array
/// of [`SharedAgent`]s).
pub struct Fallback {
    agents: Vec<SharedAgent>,
    name: String,
}

impl Fallback {
    /// The chain, first agent first.
    pub fn new(agents: impl IntoIterator<Item = SharedAgent>) -> Self {
        let agents: Vec<SharedAgent> = agents.into_iter().collect();
        let name = agents
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join("|");
        Fallback { agents, name }
    }
}

#[async_trait::async_trait]
impl Agent for Fallback {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> serde_json::Value {
        let chain: Vec<serde_json::Value> = self.agents.iter().map(|a| a.signature()).collect();
        serde_json::json!({ "fallback": chain })
    }

    async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
        let Some((last, firsts)) = self.agents.split_last() else {
            return Err(AgentError::terminal(
                "a fallback chain needs at least one agent",
            ));
        };
        let mut failures = Vec::new();
        for agent in firsts {
            match agent.generate(request.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) if request.cancel.is_cancelled() => return Err(e),
                Err(e) => {
                    request.progress.line(
                        "agent",
                        &format!(
                            "{} failed ({}); trying the next agent",
                            agent.name(),
                            e.error
                        ),
                    );
                    failures.push(format!("{}: {}", agent.name(), e.error));
                }
            }
        }
        last.generate(request).await.map_err(|mut e| {
            if !failures.is_empty() {
                failures.push(format!("{}: {}", last.name(), e.error));
                e.error.message =
                    format!("every agent of the chain failed: {}", failures.join("; "));
            }
            e
        })
    }

    fn cwd(&self) -> Option<PathBuf> {
        self.agents.first().and_then(|a| a.cwd())
    }

    fn edits_files(&self) -> bool {
        self.agents.iter().any(|a| a.edits_files())
    }
}

impl IntoAgent for Vec<SharedAgent> {
    fn into_agent(self) -> SharedAgent {
        Arc::new(Fallback::new(self))
    }
}

impl<const N: usize> IntoAgent for [SharedAgent; N] {
    fn into_agent(self) -> SharedAgent {
        Arc::new(Fallback::new(self))
    }
}
