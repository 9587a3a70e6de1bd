//! [`CodexAgent`]: the OpenAI Codex CLI, `codex exec --json`.
//!
//! `thread.started` carries the session id, the last `agent_message` item the final text, and
//! `turn.completed` the usage. A fatal error is `turn.failed`; for an HTTP 5xx codex hides the
//! server's message behind a generic "high demand" text, which we say in the error.

use std::ffi::OsString;
use std::path::PathBuf;

use serde_json::Value;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, TaskError, Usage};

use crate::cli::{args_json, cli_builder_methods, temp_file, CliOptions};
use crate::process::{self, CliCommand, CliRun, LiveUsage, Watch};
use crate::stream::{add, looks_like_auth_error, parse_line, str_of, truncate, u64_of};

/// Codex's `--sandbox` policy for the commands the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodexSandbox {
    /// Commands may read but not write (codex's default for `exec`).
    ReadOnly,
    /// Commands may write inside the working directory.
    WorkspaceWrite,
    /// No sandbox at all.
    DangerFullAccess,
}

impl CodexSandbox {
    fn as_str(self) -> &'static str {
        match self {
            CodexSandbox::ReadOnly => "read-only",
            CodexSandbox::WorkspaceWrite => "workspace-write",
            CodexSandbox::DangerFullAccess => "danger-full-access",
        }
    }
}

/// Runs the Codex CLI (`codex exec --json`).
///
/// ```no_run
/// use smithers_agents::{CodexAgent, CodexSandbox};
/// let agent = CodexAgent::new()
///     .model("gpt-5.5")
///     .sandbox(CodexSandbox::WorkspaceWrite)
///     .config("model_reasoning_effort", "\"high\"")
///     .cwd("/path/to/repo");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct CodexAgent {
    cli: CliOptions,
    sandbox: Option<CodexSandbox>,
    config: Vec<(String, String)>,
    skip_git_repo_check: bool,
    ephemeral: bool,
    resume: Option<String>,
}

impl Default for CodexAgent {
    fn default() -> Self {
        Self::new()
    }
}

impl CodexAgent {
    /// An agent running `codex` from `PATH` with its default model and settings.
    pub fn new() -> Self {
        CodexAgent {
            cli: CliOptions::new("codex", "install Codex with `npm install -g @openai/codex`"),
            sandbox: None,
            config: Vec::new(),
            skip_git_repo_check: true,
            ephemeral: false,
            resume: None,
        }
    }

    cli_builder_methods! {
        binary: "codex",
        model: "The model (`--model`).",
        system_prompt: "Instructions added to Codex's own (`-c developer_instructions=...`, sent as a \
            `developer` message): codex has no flag to replace its system prompt.",
        native_schema: "Whether to pass the output schema as `--output-schema` (default true). Codex \
            sends it in OpenAI's strict mode, so smithers rewrites it first: every property \
            required, optional ones nullable, no other properties (smithers validates the reply \
            against the full schema either way).",
    }

    /// The sandbox policy (`--sandbox`).
    pub fn sandbox(mut self, sandbox: CodexSandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// A config override (`-c key=value`); `value` is TOML (`"\"high\""`, `false`, `{...}`).
    pub fn config(mut self, key: impl Into<String>, toml_value: impl Into<String>) -> Self {
        self.config.push((key.into(), toml_value.into()));
        self
    }

    /// Pass `--skip-git-repo-check` (default true): without it codex refuses to run outside a
    /// git repository or trusted directory.
    pub fn skip_git_repo_check(mut self, skip: bool) -> Self {
        self.skip_git_repo_check = skip;
        self
    }

    /// Continue an earlier session (`codex exec resume <id>`; the id is the `session_id` of an
    /// attempt). The sandbox is passed as `-c sandbox_mode=..`, which `resume` accepts.
    pub fn resume(mut self, session_id: impl Into<String>) -> Self {
        self.resume = Some(session_id.into());
        self
    }

    /// Pass `--ephemeral`: do not write session files under `$CODEX_HOME`.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    fn base_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["exec".into()];
        if self.resume.is_some() {
            args.push("resume".into());
        }
        args.push("--json".into());
        if self.skip_git_repo_check {
            args.push("--skip-git-repo-check".into());
        }
        if self.ephemeral {
            args.push("--ephemeral".into());
        }
        if let Some(model) = &self.cli.model {
            args.extend(["--model".into(), model.into()]);
        }
        match (self.sandbox, &self.resume) {
            (Some(sandbox), None) => args.extend(["--sandbox".into(), sandbox.as_str().into()]),
            (Some(sandbox), Some(_)) => args.extend([
                "-c".into(),
                format!("sandbox_mode=\"{}\"", sandbox.as_str()).into(),
            ]),
            (None, _) => {}
        }
        if let Some(text) = &self.cli.system_prompt {
            // A JSON string is a valid TOML basic string.
            let value = serde_json::to_string(text).unwrap_or_default();
            args.extend([
                "-c".into(),
                format!("developer_instructions={value}").into(),
            ]);
        }
        for (key, value) in &self.config {
            args.extend(["-c".into(), format!("{key}={value}").into()]);
        }
        args.extend(self.cli.extra_args.iter().cloned());
        args
    }
}

#[async_trait::async_trait]
impl Agent for CodexAgent {
    fn name(&self) -> &str {
        "codex"
    }

    fn signature(&self) -> Value {
        serde_json::json!({ "agent": self.name(), "args": args_json(&self.base_args()) })
    }

    fn model(&self) -> Option<String> {
        self.cli.model.clone()
    }

    fn system_prompt(&self) -> Option<String> {
        self.cli.system_prompt.clone()
    }

    async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
        let mut args = self.base_args();
        // Kept alive until codex has exited.
        let schema_file = match self.cli.strict_native_schema(&request.output_schema) {
            Some(schema) => {
                let file = temp_file(
                    "smithers-schema-",
                    ".json",
                    &schema.to_string(),
                    "output schema",
                )?;
                args.extend(["--output-schema".into(), file.path().into()]);
                Some(file)
            }
            None => None,
        };
        args.push("--".into());
        if let Some(id) = &self.resume {
            args.push(id.into());
        }
        args.push(request.prompt.clone().into());
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
        drop(schema_file);
        let mut response = parse_run(&run, self.cli.native_schema)?;
        response.model = self.cli.model.clone();
        Ok(response)
    }

    fn edits_files(&self) -> bool {
        true
    }

    fn cwd(&self) -> Option<PathBuf> {
        self.cli.cwd.clone()
    }
}

/// A line a person can read for one event: what Codex is doing.
fn summarize(event: &Value) -> Option<String> {
    match str_of(event, "type")? {
        "thread.started" => Some(format!(
            "codex started (session {})",
            str_of(event, "thread_id").unwrap_or("?")
        )),
        "item.started" | "item.completed" => {
            let item = &event["item"];
            let done = str_of(event, "type") == Some("item.completed");
            match str_of(item, "type")? {
                "agent_message" if done => Some(format!(
                    "says: {}",
                    crate::stream::first_line(str_of(item, "text").unwrap_or_default())
                )),
                "reasoning" if done => Some("thinks".to_owned()),
                "command_execution" => Some(
                    match (done, item.get("exit_code").and_then(Value::as_i64)) {
                        (true, Some(code)) => format!(
                            "ran `{}` (exit {code})",
                            truncate(str_of(item, "command").unwrap_or("?"), 160)
                        ),
                        _ => format!(
                            "runs `{}`",
                            truncate(str_of(item, "command").unwrap_or("?"), 160)
                        ),
                    },
                ),
                "file_change" if done => {
                    let paths: Vec<&str> = item["changes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| str_of(c, "path"))
                        .collect();
                    Some(format!("edited {}", paths.join(", ")))
                }
                "mcp_tool_call" if done => Some(format!(
                    "used {}.{}",
                    str_of(item, "server").unwrap_or("?"),
                    str_of(item, "tool").unwrap_or("?")
                )),
                "web_search" if done => Some(format!(
                    "searched the web: {}",
                    str_of(item, "query").unwrap_or("?")
                )),
                "error" => Some(format!(
                    "warning: {}",
                    str_of(item, "message").unwrap_or("?")
                )),
                _ => None,
            }
        }
        "turn.completed" => Some("codex done".to_owned()),
        "turn.failed" => Some(format!(
            "codex failed: {}",
            str_of(&event["error"], "message").unwrap_or("?")
        )),
        "error" => Some(format!(
            "error: {}",
            str_of(event, "message").unwrap_or("?")
        )),
        _ => None,
    }
}

/// `codex exec` reports usage only in `turn.completed`, with the answer: nothing to report live.
fn live_usage(_: &mut LiveUsage, _: &Value) -> bool {
    false
}

#[derive(Debug, Default)]
struct CodexStream {
    session_id: Option<String>,
    text: Option<String>,
    usage: Usage,
    completed: bool,
    failed: Option<String>,
    last_error: Option<String>,
    /// Every `error` event and error item, in order.
    errors: Vec<String>,
    saw_json: bool,
}

fn read_stream(lines: &[String]) -> CodexStream {
    let mut s = CodexStream::default();
    for event in lines.iter().filter_map(|l| parse_line(l)) {
        s.saw_json = true;
        match str_of(&event, "type") {
            Some("thread.started") => s.session_id = str_of(&event, "thread_id").map(str::to_owned),
            Some("item.completed") => {
                let item = &event["item"];
                match str_of(item, "type") {
                    Some("agent_message") => s.text = str_of(item, "text").map(str::to_owned),
                    Some("error") => {
                        s.last_error = str_of(item, "message").map(str::to_owned);
                        s.errors.extend(s.last_error.clone());
                    }
                    _ => {}
                }
            }
            Some("turn.completed") => {
                s.completed = true;
                let u = &event["usage"];
                s.usage.input_tokens = add(s.usage.input_tokens, u64_of(u, "input_tokens"));
                s.usage.output_tokens = add(s.usage.output_tokens, u64_of(u, "output_tokens"));
                s.usage.cache_read_tokens =
                    add(s.usage.cache_read_tokens, u64_of(u, "cached_input_tokens"));
                s.usage.cache_write_tokens = add(
                    s.usage.cache_write_tokens,
                    u64_of(u, "cache_write_input_tokens"),
                );
            }
            Some("turn.failed") => {
                s.failed = Some(
                    str_of(&event["error"], "message")
                        .unwrap_or("turn failed")
                        .to_owned(),
                );
            }
            Some("error") => {
                s.last_error = str_of(&event, "message").map(str::to_owned);
                s.errors.extend(s.last_error.clone());
            }
            // turn.started, item.started/updated, and kinds added later.
            _ => {}
        }
    }
    s
}

/// Turns a finished run into a response or a classified error.
pub(crate) fn parse_run(run: &CliRun, schema_passed: bool) -> Result<AgentResponse, AgentError> {
    let stream = read_stream(&run.stdout_lines);
    let session = stream.session_id.clone();
    if let Some(error) = run.interrupted(stream.usage.clone(), session.clone(), &stream.errors) {
        return Err(error);
    }
    if let Some(message) = &stream.failed {
        let error = crate::stream::with_retry_after(turn_failed_error(message));
        return Err(run.error(error, stream.usage, session));
    }
    if !stream.completed {
        return Err(run.error(no_turn_error(run, &stream), stream.usage, session));
    }
    let Some(text) = stream.text else {
        let mut message = "codex completed the turn without an agent message".to_owned();
        if let Some(e) = &stream.last_error {
            message.push_str(&format!("; last error: {e}"));
        }
        return Err(run.error(TaskError::retryable(message), stream.usage, session));
    };
    let json = if schema_passed {
        serde_json::from_str::<Value>(text.trim())
            .ok()
            .filter(Value::is_object)
    } else {
        None
    };
    Ok(AgentResponse {
        text,
        json,
        usage: stream.usage,
        session_id: stream.session_id,
        exit_code: run.exit_code,
        transcript: Some(run.transcript()),
        model: None,
    })
}

fn turn_failed_error(message: &str) -> TaskError {
    if let Some(var) = message.strip_prefix("Missing environment variable: ") {
        let var = var.trim_end_matches('.').trim_matches('`');
        return TaskError::terminal(format!(
            "codex needs the environment variable `{var}` (the API key of its model provider): set it, \
             e.g. with `.env(\"{var}\", ..)`"
        ));
    }
    if looks_like_auth_error(message) {
        return TaskError::terminal(format!(
            "codex could not authenticate: {message}; set OPENAI_API_KEY / CODEX_API_KEY or run `codex login`"
        ));
    }
    if message.contains("high demand") {
        return TaskError::retryable(format!(
            "codex turn failed: {message} (codex shows this for any HTTP 5xx from the model API and hides \
             the server's own message)"
        ));
    }
    TaskError::retryable(format!("codex turn failed: {}", truncate(message, 2000)))
}

fn no_turn_error(run: &CliRun, stream: &CodexStream) -> TaskError {
    let stderr = run.stderr_summary();
    let exit = run.exit_description();
    let mut message = format!("codex ended ({exit}) without turn.completed");
    if let Some(e) = &stream.last_error {
        message.push_str(&format!("; last error: {e}"));
    }
    if !stderr.is_empty() {
        message.push_str(&format!("; stderr: {stderr}"));
    }
    let config_error = [
        "Error loading config",
        "Not inside a trusted directory",
        "error: unexpected argument",
    ]
    .iter()
    .any(|needle| stderr.contains(needle));
    if config_error || (!stream.saw_json && run.exit_code.is_some_and(|c| c != 0)) {
        TaskError::terminal(message)
    } else {
        TaskError::retryable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_failures_are_classified() {
        let check = |message: &str, retryable: bool, needle: &str| {
            let e = turn_failed_error(message);
            assert_eq!(e.retryable, retryable, "{message}");
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        };
        check(
            "Missing environment variable: `OPENAI_API_KEY`.",
            false,
            "`OPENAI_API_KEY`",
        );
        check(
            "unexpected status 401 Unauthorized: invalid key",
            false,
            "codex login",
        );
        check(
            "We\u{2019}re currently experiencing high demand, which may cause temporary errors.",
            true,
            "HTTP 5xx",
        );
        check(
            "stream disconnected before completion: idle timeout waiting for SSE",
            true,
            "idle timeout",
        );
    }
}
