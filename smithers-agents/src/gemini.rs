//! [`GeminiAgent`]: the Gemini CLI, `gemini -p <prompt> --output-format stream-json`.
//!
//! `init` carries the session id and model, assistant `message` deltas concatenate into the final
//! text, and `result` carries the usage or the error. Gemini reports API errors through its exit
//! code (the HTTP status truncated to 8 bits: 500 exits with 244) and JSON on stderr.

use std::ffi::OsString;
use std::path::PathBuf;

use serde_json::Value;
use smithers_core::prompt::extract_json_with;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, TaskError, Usage};

use crate::cli::{args_json, cli_builder_methods, temp_file, CliOptions};
use crate::process::{self, CliCommand, CliRun, LiveUsage, Watch};
use crate::stream::{
    http_status_in, looks_like_auth_error, parse_line, status_is_retryable, str_of, truncate,
    u64_of,
};

/// Gemini's `--approval-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GeminiApprovalMode {
    /// Only read-only tools in non-interactive mode.
    Default,
    /// Approve file edits automatically.
    AutoEdit,
    /// Approve everything.
    Yolo,
}

impl GeminiApprovalMode {
    fn as_str(self) -> &'static str {
        match self {
            GeminiApprovalMode::Default => "default",
            GeminiApprovalMode::AutoEdit => "auto_edit",
            GeminiApprovalMode::Yolo => "yolo",
        }
    }
}

/// Runs the Gemini CLI (`gemini`) non-interactively with the `stream-json` output format.
///
/// ```no_run
/// use smithers_agents::{GeminiAgent, GeminiApprovalMode};
/// let agent = GeminiAgent::new()
///     .model("gemini-2.5-pro")
///     .approval_mode(GeminiApprovalMode::AutoEdit)
///     .cwd("/path/to/repo");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct GeminiAgent {
    cli: CliOptions,
    approval_mode: Option<GeminiApprovalMode>,
    sandbox: bool,
    skip_trust: bool,
    resume: Option<String>,
    policies: Vec<std::path::PathBuf>,
}

impl Default for GeminiAgent {
    fn default() -> Self {
        Self::new()
    }
}

impl GeminiAgent {
    /// An agent running `gemini` from `PATH`.
    pub fn new() -> Self {
        GeminiAgent {
            cli: CliOptions::new(
                "gemini",
                "install the Gemini CLI with `npm install -g @google/gemini-cli`",
            ),
            approval_mode: None,
            sandbox: false,
            skip_trust: true,
            resume: None,
            policies: Vec::new(),
        }
    }

    cli_builder_methods! {
        binary: "gemini",
        model: "The model (`-m`). Set one: the default `auto` makes an extra routing call first.",
        system_prompt: "Replaces Gemini's system prompt (written to a file named by `GEMINI_SYSTEM_MD`).",
        allowed_tools: "Tools allowed without confirmation (`--allowed-tools`).",
    }

    /// The approval mode (`--approval-mode`).
    pub fn approval_mode(mut self, mode: GeminiApprovalMode) -> Self {
        self.approval_mode = Some(mode);
        self
    }

    /// Continue an earlier session (`--resume <id>`, or `latest`).
    pub fn resume(mut self, session: impl Into<String>) -> Self {
        self.resume = Some(session.into());
        self
    }

    /// A policy file of Gemini's policy engine (`--policy`): the way Gemini 0.61 restricts which
    /// tools may run (`--allowed-tools` is deprecated). In non-interactive mode with the default
    /// approval mode only read-only tools are offered.
    pub fn policy(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.policies.push(path.into());
        self
    }

    /// Run tools in Gemini's sandbox (`--sandbox`).
    pub fn sandbox(mut self, sandbox: bool) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// Pass `--skip-trust` (default true): without it Gemini refuses untrusted folders (exit 55).
    pub fn skip_trust(mut self, skip: bool) -> Self {
        self.skip_trust = skip;
        self
    }

    fn base_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--output-format".into(), "stream-json".into()];
        if self.skip_trust {
            args.push("--skip-trust".into());
        }
        if let Some(model) = &self.cli.model {
            args.extend(["-m".into(), model.into()]);
        }
        if let Some(mode) = self.approval_mode {
            args.extend(["--approval-mode".into(), mode.as_str().into()]);
        }
        for tool in &self.cli.allowed_tools {
            args.extend(["--allowed-tools".into(), tool.into()]);
        }
        if self.sandbox {
            args.push("--sandbox".into());
        }
        for p in &self.policies {
            args.extend(["--policy".into(), p.into()]);
        }
        if let Some(id) = &self.resume {
            args.extend(["--resume".into(), id.into()]);
        }
        args.extend(self.cli.extra_args.iter().cloned());
        args
    }
}

#[async_trait::async_trait]
impl Agent for GeminiAgent {
    fn name(&self) -> &str {
        "gemini"
    }

    fn signature(&self) -> Value {
        serde_json::json!({
            "agent": self.name(),
            "args": args_json(&self.base_args()),
            "system_prompt": self.cli.system_prompt,
        })
    }

    fn model(&self) -> Option<String> {
        self.cli.model.clone()
    }

    fn system_prompt(&self) -> Option<String> {
        self.cli.system_prompt.clone()
    }

    async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
        let mut args = self.base_args();
        let mut env = Vec::new();
        // Kept alive until gemini has exited.
        let system_file = match &self.cli.system_prompt {
            Some(text) => {
                let file = temp_file("smithers-system-", ".md", text, "system prompt")?;
                env.push(("GEMINI_SYSTEM_MD".into(), file.path().into()));
                Some(file)
            }
            None => None,
        };
        args.push("-p".into());
        args.push(process::prompt_arg(&request.prompt));
        let command = CliCommand {
            options: &self.cli,
            args,
            env,
            watch: Watch {
                summarize,
                usage: live_usage,
            },
        };
        let run = process::run(command, &request).await?;
        drop(system_file);
        parse_run(&run)
    }

    fn edits_files(&self) -> bool {
        true
    }

    fn cwd(&self) -> Option<PathBuf> {
        self.cli.cwd.clone()
    }
}

/// A line a person can read for one event: what Gemini is doing (the reply's text deltas are
/// not repeated line by line).
fn summarize(event: &Value) -> Option<String> {
    match str_of(event, "type")? {
        "init" => Some(format!(
            "gemini started (model {}, session {})",
            str_of(event, "model").unwrap_or("?"),
            str_of(event, "session_id").unwrap_or("?")
        )),
        "tool_use" => Some(format!(
            "uses {}: {}",
            str_of(event, "tool_name").unwrap_or("a tool"),
            crate::stream::tool_input(&event["parameters"])
        )),
        "tool_result" if str_of(event, "status") == Some("error") => Some(format!(
            "a tool call failed: {}",
            str_of(&event["error"], "message").unwrap_or("?")
        )),
        "error" => Some(format!(
            "error: {}",
            str_of(event, "message").unwrap_or("?")
        )),
        "result" => Some(format!(
            "gemini {}",
            match str_of(event, "status") {
                Some("success") => "done".to_owned(),
                other => format!(
                    "failed ({}): {}",
                    other.unwrap_or("?"),
                    str_of(&event["error"], "message").unwrap_or("?")
                ),
            }
        )),
        _ => None,
    }
}

/// Gemini reports usage only in its final `result`, with the answer: nothing to report live.
fn live_usage(_: &mut LiveUsage, _: &Value) -> bool {
    false
}

#[derive(Debug, Default)]
struct GeminiStream {
    session_id: Option<String>,
    model: Option<String>,
    text: String,
    result: Option<Value>,
    /// Gemini's own `error` events (`Loop detected, stopping execution`, ...).
    errors: Vec<String>,
}

fn read_stream(lines: &[String]) -> GeminiStream {
    let mut s = GeminiStream::default();
    for event in lines.iter().filter_map(|l| parse_line(l)) {
        match str_of(&event, "type") {
            Some("init") => {
                s.session_id = str_of(&event, "session_id").map(str::to_owned);
                s.model = str_of(&event, "model").map(str::to_owned);
            }
            Some("message") if str_of(&event, "role") == Some("assistant") => {
                let content = str_of(&event, "content").unwrap_or_default();
                let delta = event.get("delta").and_then(Value::as_bool).unwrap_or(false);
                if !delta && !s.text.is_empty() {
                    s.text.push('\n');
                }
                s.text.push_str(content);
            }
            Some("result") => s.result = Some(event),
            Some("error") => {
                let message = str_of(&event, "message")
                    .or_else(|| str_of(&event["error"], "message"))
                    .unwrap_or("error event without a message");
                s.errors.push(message.to_owned());
            }
            // user messages, tool_use, tool_result, kinds added later.
            _ => {}
        }
    }
    s
}

fn usage_of(result: &Value) -> Usage {
    let stats = &result["stats"];
    Usage {
        input_tokens: u64_of(stats, "input_tokens"),
        output_tokens: u64_of(stats, "output_tokens"),
        cache_read_tokens: u64_of(stats, "cached"),
        cache_write_tokens: None,
        cost_usd: None,
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
    let status = stream.result.as_ref().and_then(|r| str_of(r, "status"));
    // A "success" with no text after an error event is gemini giving up (`Loop detected,
    // stopping execution`): the error is the attempt's, not an empty reply.
    if status == Some("success") && stream.text.trim().is_empty() && !stream.errors.is_empty() {
        let message = format!(
            "gemini stopped with an error and no reply: {}",
            crate::process::errors_summary(&stream.errors)
        );
        let error = crate::stream::with_retry_after(TaskError::retryable(message));
        return Err(run.error(error, usage, session));
    }
    match (status, run.exit_code) {
        (Some("success"), Some(0) | None) => Ok(AgentResponse {
            text: stream.text,
            json: None,
            usage,
            session_id: stream.session_id,
            exit_code: run.exit_code,
            transcript: Some(run.transcript()),
            model: stream.model,
        }),
        _ => Err(run.error(
            crate::stream::with_retry_after(failure(run, &stream)),
            usage,
            session,
        )),
    }
}

/// What went wrong, from the `result` error, stderr's JSON error and the exit code.
fn failure(run: &CliRun, stream: &GeminiStream) -> TaskError {
    let result_error = stream
        .result
        .as_ref()
        .and_then(|r| str_of(&r["error"], "message"))
        .map(str::to_owned);
    let stderr_json = extract_json_with(&run.stderr_tail, |v| {
        v.get("error").is_some_and(Value::is_object)
    });
    let stderr_error = stderr_json.as_ref().map(|v| &v["error"]);
    let stderr_message = stderr_error
        .and_then(|e| str_of(e, "message"))
        .map(str::to_owned);
    let stderr_code = stderr_error
        .and_then(|e| u64_of(e, "code"))
        .and_then(|c| u16::try_from(c).ok());
    let message = result_error.or(stderr_message).or_else(|| {
        (!stream.errors.is_empty()).then(|| crate::process::errors_summary(&stream.errors))
    });
    let message = message.unwrap_or_else(|| {
        let stderr = run.stderr_summary();
        if stderr.is_empty() {
            "no result event and nothing on stderr".to_owned()
        } else {
            stderr
        }
    });
    let exit = run.exit_description();
    let mut detail = format!("gemini failed ({exit}): {}", truncate(&message, 2000));
    if !stream.errors.is_empty() && !message.contains(&stream.errors[stream.errors.len() - 1]) {
        detail.push_str(&format!(
            "; it reported: {}",
            crate::process::errors_summary(&stream.errors)
        ));
    }

    // Gemini's own exit codes first, then an HTTP status from the message, the stderr JSON or
    // the exit code (which is the status truncated to 8 bits).
    let hint = match run.exit_code {
        Some(41) => Some("set GEMINI_API_KEY and `security.auth.selectedType` in ~/.gemini/settings.json"),
        Some(42) => Some("the prompt or arguments were rejected"),
        Some(44) => Some("the sandbox could not start"),
        Some(52) => Some("fix the Gemini configuration (~/.gemini/settings.json)"),
        Some(53) => Some("the session hit its turn limit"),
        Some(55) => Some("the folder is not trusted: keep `.skip_trust(true)` or set GEMINI_CLI_TRUST_WORKSPACE=true"),
        _ => None,
    };
    if let Some(hint) = hint {
        return TaskError::terminal(format!("{detail}; {hint}"));
    }
    let status = http_status_in(&message)
        .or(stderr_code.filter(|c| *c >= 400))
        .or_else(|| status_from_exit(run.exit_code));
    if matches!(status, Some(401 | 403)) || looks_like_auth_error(&message) {
        return TaskError::terminal(format!("{detail}; check GEMINI_API_KEY"));
    }
    match status {
        Some(s) if status_is_retryable(s) => TaskError::retryable(format!("{detail} (HTTP {s})")),
        Some(s) => TaskError::terminal(format!("{detail} (HTTP {s})")),
        None if run.exit_code == Some(130) => {
            TaskError::retryable(format!("{detail}; gemini was interrupted"))
        }
        None => TaskError::retryable(detail),
    }
}

/// Gemini exits with `process.exit(error.status)`, so an HTTP status survives modulo 256.
fn status_from_exit(code: Option<i32>) -> Option<u16> {
    let code = u16::try_from(code?).ok()?;
    (400..600)
        .find(|status| status % 256 == code && matches!(status, 400..=404 | 408 | 429 | 500..=504))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_back_to_http_statuses() {
        assert_eq!(status_from_exit(Some(244)), Some(500));
        assert_eq!(status_from_exit(Some(247)), Some(503));
        assert_eq!(status_from_exit(Some(173)), Some(429));
        assert_eq!(status_from_exit(Some(145)), Some(401));
        assert_eq!(status_from_exit(Some(1)), None);
        assert_eq!(status_from_exit(None), None);
    }
}
