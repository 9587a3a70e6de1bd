//! [`ClaudeCodeAgent`]: the Claude Code CLI, `claude -p <prompt> --output-format stream-json --verbose`.
//!
//! The last `result` event carries the final text, usage, cost and session id. Claude reports
//! errors there too, with `subtype: "success"` but `is_error: true`; those become agent errors.

use std::ffi::OsString;
use std::path::PathBuf;

use serde_json::Value;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, TaskError, Usage};

use crate::cli::{args_json, cli_builder_methods, CliOptions};
use crate::process::{self, CliCommand, CliRun, LiveUsage, Watch};
use crate::stream::{
    http_status_in, looks_like_auth_error, parse_line, status_is_retryable, str_of, truncate,
    u64_of,
};

/// Claude Code's `--permission-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaudePermissionMode {
    /// Ask before anything that is not read-only (in `-p` mode: refuse).
    Default,
    /// Edit files without asking.
    AcceptEdits,
    /// Plan only; no edits.
    Plan,
    /// Never ask and refuse what is not pre-approved.
    DontAsk,
    /// Skip every permission check. Claude refuses this as root unless `IS_SANDBOX=1` is set.
    BypassPermissions,
}

impl ClaudePermissionMode {
    fn as_str(self) -> &'static str {
        match self {
            ClaudePermissionMode::Default => "default",
            ClaudePermissionMode::AcceptEdits => "acceptEdits",
            ClaudePermissionMode::Plan => "plan",
            ClaudePermissionMode::DontAsk => "dontAsk",
            ClaudePermissionMode::BypassPermissions => "bypassPermissions",
        }
    }
}

/// Runs the Claude Code CLI (`claude`) in print mode with the `stream-json` output format.
///
/// ```no_run
/// use smithers_agents::{ClaudeCodeAgent, ClaudePermissionMode};
/// let agent = ClaudeCodeAgent::new()
///     .model("claude-sonnet-4-5")
///     .permission_mode(ClaudePermissionMode::AcceptEdits)
///     .allowed_tools(["Read", "Edit", "Bash(cargo test:*)"])
///     .cwd("/path/to/repo");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ClaudeCodeAgent {
    cli: CliOptions,
    append_system_prompt: Option<String>,
    permission_mode: Option<ClaudePermissionMode>,
    disallowed_tools: Vec<String>,
    tools: Option<Vec<String>>,
    max_turns: Option<u32>,
    resume: Option<String>,
    fork_session: bool,
    session_id: Option<String>,
}

impl Default for ClaudeCodeAgent {
    fn default() -> Self {
        Self::new()
    }
}

impl ClaudeCodeAgent {
    /// An agent running `claude` from `PATH` with its default model and settings.
    pub fn new() -> Self {
        ClaudeCodeAgent {
            cli: CliOptions::new(
                "claude",
                "install Claude Code with `npm install -g @anthropic-ai/claude-code`",
            ),
            append_system_prompt: None,
            permission_mode: None,
            disallowed_tools: Vec::new(),
            tools: None,
            max_turns: None,
            resume: None,
            fork_session: false,
            session_id: None,
        }
    }

    cli_builder_methods! {
        binary: "claude",
        model: "The model (`--model`): an alias such as `sonnet` or a full model name.",
        system_prompt: "Replaces Claude Code's system prompt (`--system-prompt`).",
        allowed_tools: "Tools allowed without asking (`--allowedTools`), e.g. `Read`, `Edit`, `Bash(git diff:*)`.",
        native_schema: "Whether to pass the output schema as `--json-schema` (default true): Claude then \
            returns `structured_output`, which smithers still validates.",
    }

    /// Appends to Claude Code's system prompt (`--append-system-prompt`).
    pub fn append_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.append_system_prompt = Some(prompt.into());
        self
    }

    /// The permission mode (`--permission-mode`).
    pub fn permission_mode(mut self, mode: ClaudePermissionMode) -> Self {
        self.permission_mode = Some(mode);
        self
    }

    /// Tools that may not be used (`--disallowedTools`).
    pub fn disallowed_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.disallowed_tools
            .extend(tools.into_iter().map(Into::into));
        self
    }

    /// The only tools Claude may use (`--tools`), from its built-in set: `["Read", "Grep"]`; an
    /// empty list offers none. Unlike `allowed_tools`, which only pre-approves, the others are
    /// not offered to the model at all.
    pub fn tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// Continue an earlier session (`--resume <id>`; the id is the `session_id` of an attempt).
    pub fn resume(mut self, session_id: impl Into<String>) -> Self {
        self.resume = Some(session_id.into());
        self
    }

    /// With `resume`, continue in a new session id, leaving the original as it was
    /// (`--fork-session`).
    pub fn fork_session(mut self, fork: bool) -> Self {
        self.fork_session = fork;
        self
    }

    /// Start the session with this UUID (`--session-id`).
    pub fn session_id(mut self, uuid: impl Into<String>) -> Self {
        self.session_id = Some(uuid.into());
        self
    }

    /// Limit on agentic turns (`--max-turns`).
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.max_turns = Some(turns);
        self
    }

    /// Every argument except the prompt and the schema: also the cache signature.
    fn base_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["--output-format", "stream-json", "--verbose"]
            .iter()
            .map(OsString::from)
            .collect();
        let mut push = |flag: &str, value: &str| {
            args.push(flag.into());
            args.push(value.into());
        };
        if let Some(model) = &self.cli.model {
            push("--model", model);
        }
        if let Some(p) = &self.cli.system_prompt {
            push("--system-prompt", p);
        }
        if let Some(p) = &self.append_system_prompt {
            push("--append-system-prompt", p);
        }
        if let Some(mode) = self.permission_mode {
            push("--permission-mode", mode.as_str());
        }
        if !self.cli.allowed_tools.is_empty() {
            push("--allowedTools", &self.cli.allowed_tools.join(","));
        }
        if !self.disallowed_tools.is_empty() {
            push("--disallowedTools", &self.disallowed_tools.join(","));
        }
        if let Some(tools) = &self.tools {
            push("--tools", &tools.join(","));
        }
        if let Some(turns) = self.max_turns {
            push("--max-turns", &turns.to_string());
        }
        if let Some(id) = &self.resume {
            push("--resume", id);
        }
        if let Some(id) = &self.session_id {
            push("--session-id", id);
        }
        if self.fork_session {
            args.push("--fork-session".into());
        }
        args.extend(self.cli.extra_args.iter().cloned());
        args
    }
}

#[async_trait::async_trait]
impl Agent for ClaudeCodeAgent {
    fn name(&self) -> &str {
        "claude-code"
    }

    fn signature(&self) -> Value {
        serde_json::json!({ "agent": self.name(), "args": args_json(&self.base_args()) })
    }

    fn model(&self) -> Option<String> {
        self.cli.model.clone()
    }

    fn system_prompt(&self) -> Option<String> {
        match (&self.cli.system_prompt, &self.append_system_prompt) {
            (None, None) => None,
            (a, b) => Some(
                [a.as_deref(), b.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }

    async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
        let mut args = self.base_args();
        if let Some(schema) = self.cli.native_schema(&request.output_schema) {
            args.push("--json-schema".into());
            args.push(schema.to_string().into());
        }
        args.push("-p".into());
        args.push(process::prompt_arg(&request.prompt));
        let command = CliCommand {
            options: &self.cli,
            args,
            env: Vec::new(),
            watch: Watch {
                summarize,
                usage: live_usage,
            },
        };
        let run = process::run(command, &request).await?;
        parse_run(&run)
    }

    fn edits_files(&self) -> bool {
        true
    }

    fn cwd(&self) -> Option<PathBuf> {
        self.cli.cwd.clone()
    }
}

/// What a Claude stream said.
#[derive(Debug, Default)]
struct ClaudeStream {
    session_id: Option<String>,
    model: Option<String>,
    assistant_text: Vec<String>,
    result: Option<Value>,
    saw_json: bool,
    /// Errors Claude printed before its result: `api_retry` events and synthetic assistant
    /// messages carrying an `error`.
    errors: Vec<String>,
}

fn read_stream(lines: &[String]) -> ClaudeStream {
    let mut s = ClaudeStream::default();
    for event in lines.iter().filter_map(|l| parse_line(l)) {
        s.saw_json = true;
        if let Some(id) = str_of(&event, "session_id") {
            s.session_id = Some(id.to_owned());
        }
        match str_of(&event, "type") {
            Some("system") if str_of(&event, "subtype") == Some("init") => {
                s.model = str_of(&event, "model").map(str::to_owned);
            }
            Some("system") if str_of(&event, "subtype") == Some("api_retry") => {
                let status = u64_of(&event, "error_status")
                    .map_or_else(String::new, |s| format!("HTTP {s} "));
                s.errors.push(format!(
                    "API retry {}/{}: {status}{}",
                    u64_of(&event, "attempt").unwrap_or_default(),
                    u64_of(&event, "max_retries").unwrap_or_default(),
                    str_of(&event, "error").unwrap_or("error"),
                ));
            }
            Some("error") => {
                let message = str_of(&event, "message")
                    .or_else(|| str_of(&event, "error"))
                    .unwrap_or("error event");
                s.errors.push(message.to_owned());
            }
            Some("assistant") => {
                let message = &event["message"];
                if let Some(error) = str_of(&event, "error") {
                    let text = message
                        .get("content")
                        .and_then(Value::as_array)
                        .and_then(|c| c.iter().find_map(|b| str_of(b, "text")))
                        .unwrap_or(error);
                    s.errors.push(text.to_owned());
                }
                if let Some(model) = str_of(message, "model").filter(|m| *m != "<synthetic>") {
                    s.model = Some(model.to_owned());
                }
                let blocks = message
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten();
                for block in blocks.filter(|b| str_of(b, "type") == Some("text")) {
                    if let Some(text) = str_of(block, "text") {
                        s.assistant_text.push(text.to_owned());
                    }
                }
            }
            Some("result") => s.result = Some(event),
            // `user` (tool results), `stream_event`, `api_retry`, `status` and kinds added
            // later: kept in the transcript only.
            _ => {}
        }
    }
    s
}

/// A line a person can read for one stream event: what Claude is doing.
fn summarize(event: &Value) -> Option<String> {
    match str_of(event, "type")? {
        "system" => match str_of(event, "subtype")? {
            "init" => Some(format!(
                "claude started (model {}, session {})",
                str_of(event, "model").unwrap_or("?"),
                str_of(event, "session_id").unwrap_or("?")
            )),
            "api_retry" => Some(format!(
                "API error {} ({}), retry {} of {}",
                u64_of(event, "error_status").map_or_else(|| "?".to_owned(), |s| s.to_string()),
                str_of(event, "error").unwrap_or("error"),
                u64_of(event, "attempt").unwrap_or_default(),
                u64_of(event, "max_retries").unwrap_or_default()
            )),
            _ => None,
        },
        "assistant" => {
            let blocks = event["message"]["content"].as_array()?;
            let parts: Vec<String> = blocks
                .iter()
                .filter_map(|b| match str_of(b, "type")? {
                    "text" => Some(format!(
                        "says: {}",
                        crate::stream::first_line(str_of(b, "text")?)
                    )),
                    "tool_use" => Some(format!(
                        "uses {}: {}",
                        str_of(b, "name").unwrap_or("a tool"),
                        crate::stream::tool_input(&b["input"])
                    )),
                    "thinking" => Some("thinks".to_owned()),
                    _ => None,
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        "user" => {
            let blocks = event["message"]["content"].as_array()?;
            let failed = blocks.iter().any(|b| {
                str_of(b, "type") == Some("tool_result")
                    && b.get("is_error").and_then(Value::as_bool) == Some(true)
            });
            failed.then(|| "a tool call failed".to_owned())
        }
        "result" => Some(if result_is_error(event) {
            format!(
                "claude failed: {}",
                crate::stream::first_line(str_of(event, "result").unwrap_or_default())
            )
        } else {
            format!(
                "claude done: {} turn(s), cost ${:.4}",
                u64_of(event, "num_turns").unwrap_or_default(),
                event
                    .get("total_cost_usd")
                    .and_then(Value::as_f64)
                    .unwrap_or_default()
            )
        }),
        _ => None,
    }
}

fn result_is_error(result: &Value) -> bool {
    result
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || str_of(result, "subtype").is_some_and(|s| s != "success")
}

/// The usage so far from a stream event: each model message's own usage (its output count is
/// the one from `message_start`, a lower bound). The `result`'s totals are not reported live:
/// they come with the answer, which the engine accounts for when the attempt ends (stopping an
/// attempt that already answered would waste what it spent).
fn live_usage(live: &mut LiveUsage, event: &Value) -> bool {
    match str_of(event, "type") {
        Some("system") if str_of(event, "subtype") == Some("init") => {
            live.model = str_of(event, "model").map(str::to_owned);
            false
        }
        Some("assistant") => {
            let message = &event["message"];
            let (Some(id), Some(u)) = (str_of(message, "id"), message.get("usage")) else {
                return false;
            };
            if let Some(m) = str_of(message, "model").filter(|m| *m != "<synthetic>") {
                live.model = Some(m.to_owned());
            }
            live.message(
                id,
                Usage {
                    input_tokens: u64_of(u, "input_tokens"),
                    output_tokens: u64_of(u, "output_tokens"),
                    cache_read_tokens: u64_of(u, "cache_read_input_tokens"),
                    cache_write_tokens: u64_of(u, "cache_creation_input_tokens"),
                    cost_usd: None,
                },
            );
            true
        }
        _ => false,
    }
}

/// The usage of a `result` event: `usage` holds the main loop's totals (the `assistant`
/// events' `output_tokens` are from `message_start` and wrong).
fn usage_of(result: &Value) -> Usage {
    let u = &result["usage"];
    Usage {
        input_tokens: u64_of(u, "input_tokens"),
        output_tokens: u64_of(u, "output_tokens"),
        cache_read_tokens: u64_of(u, "cache_read_input_tokens"),
        cache_write_tokens: u64_of(u, "cache_creation_input_tokens"),
        cost_usd: result.get("total_cost_usd").and_then(Value::as_f64),
    }
}

/// Turns a finished run into a response or a classified error.
pub(crate) fn parse_run(run: &CliRun) -> Result<AgentResponse, AgentError> {
    let stream = read_stream(&run.stdout_lines);
    let usage = stream.result.as_ref().map(usage_of).unwrap_or_default();
    let session = stream.session_id.clone();
    if let Some(error) = run.interrupted(usage.clone(), session.clone(), &stream.errors) {
        return Err(error);
    }
    let Some(result) = &stream.result else {
        return Err(run.error(no_result_error(run, &stream), usage, session));
    };
    let text = str_of(result, "result").unwrap_or_default().to_owned();
    let subtype = str_of(result, "subtype").unwrap_or("success");
    let is_error = result
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if is_error || subtype != "success" {
        let status = result
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        let error = crate::stream::with_retry_after(result_error(&text, subtype, status));
        return Err(run.error(error, usage, session));
    }
    Ok(AgentResponse {
        text,
        json: result
            .get("structured_output")
            .filter(|v| !v.is_null())
            .cloned(),
        usage,
        session_id: stream.session_id,
        exit_code: run.exit_code,
        transcript: Some(run.transcript()),
        model: stream.model,
    })
}

/// Classifies a `result` event with `is_error: true` (whatever its `subtype` says).
fn result_error(text: &str, subtype: &str, status: Option<u16>) -> TaskError {
    let status = status.or_else(|| http_status_in(text));
    let detail = if text.is_empty() {
        subtype.to_owned()
    } else {
        truncate(text, 2000)
    };
    if text.contains("Not logged in") {
        return TaskError::terminal(format!(
            "claude is not logged in ({detail}): set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) for the \
             agent, or run `claude` once and `/login`"
        ));
    }
    if matches!(status, Some(401 | 403)) || looks_like_auth_error(text) {
        return TaskError::terminal(format!(
            "claude's API key was rejected ({detail}): check ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN"
        ));
    }
    let message = format!("claude reported an error: {detail}");
    match (subtype, status) {
        ("error_max_turns", _) => {
            TaskError::terminal(format!("{message} (raise `.max_turns(..)`)"))
        }
        (_, Some(s)) if status_is_retryable(s) => TaskError::retryable(message),
        (_, Some(_)) => TaskError::terminal(message),
        // Timeouts and connection errors carry no status.
        (_, None) => TaskError::retryable(message),
    }
}

/// Classifies a run that printed no `result` event.
fn no_result_error(run: &CliRun, stream: &ClaudeStream) -> TaskError {
    let stderr = run.stderr_summary();
    let exit = run.exit_description();
    if stderr.contains("cannot be used with root/sudo") {
        return TaskError::terminal(format!(
            "claude refused to skip permissions as root ({exit}): {stderr}. Use another permission mode, \
             or set IS_SANDBOX=1 with `.env(..)` if this is a disposable sandbox"
        ));
    }
    if looks_like_auth_error(&stderr) {
        return TaskError::terminal(format!("claude could not authenticate ({exit}): {stderr}"));
    }
    let mut message = format!("claude ended ({exit}) without a result event");
    if !stream.errors.is_empty() {
        message.push_str(&format!(
            "; it reported: {}",
            crate::process::errors_summary(&stream.errors)
        ));
    }
    if let Some(last) = stream.assistant_text.last() {
        message.push_str(&format!("; last assistant text: {}", truncate(last, 300)));
    }
    if !stderr.is_empty() {
        message.push_str(&format!("; stderr: {stderr}"));
    }
    // A clean usage error (bad flag, bad config) prints no JSON at all and will fail again.
    if !stream.saw_json && run.exit_code.is_some_and(|c| c != 0) {
        TaskError::terminal(message)
    } else {
        TaskError::retryable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_results_are_classified() {
        let check = |text: &str, subtype: &str, status: Option<u16>, retryable: bool| {
            let e = result_error(text, subtype, status);
            assert_eq!(
                e.retryable, retryable,
                "{text} / {subtype} / {status:?}: {}",
                e.message
            );
        };
        check("API Error: 500 boom", "success", Some(500), true);
        check("API Error: 529 overloaded", "success", None, true);
        check("API Error: 429 rate limited", "success", Some(429), true);
        check("Request timed out", "success", None, true);
        check(
            "Not logged in \u{b7} Please run /login",
            "success",
            None,
            false,
        );
        check(
            "API Error: 401 invalid x-api-key",
            "success",
            Some(401),
            false,
        );
        check(
            "API Error: 400 prompt is too long",
            "success",
            Some(400),
            false,
        );
        check("", "error_max_turns", None, false);
        check("", "error_during_execution", None, true);
    }
}
