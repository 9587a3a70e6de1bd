//! Runs one smithers agent once and prints what it parsed: a smoke test of the agents against
//! the real CLIs (see `scripts/real-clis.sh`, which points them at a fake model server).
//!
//! `cargo run -p smithers-agents --example cli_smoke -- claude|codex|gemini [model]`
//!
//! The HTTP agents, streaming, can be smoke-tested the same way against the fake server:
//! `anthropic-stream`, `openai-chat-stream` or `openai-responses-stream` (base URLs and keys from
//! `ANTHROPIC_BASE_URL` / `ANTHROPIC_API_KEY` and `OPENAI_BASE_URL` / `OPENAI_API_KEY`).
//!
//! It also sets the options whose flags are not covered by the captures, so that the requests the
//! fake server logs show whether the CLI honoured them: a system prompt containing [`MARKER`]
//! (Claude `--append-system-prompt`, Codex `-c developer_instructions=...`, Gemini
//! `GEMINI_SYSTEM_MD`) and, for Claude, `--disallowedTools WebFetch,WebSearch`.

use std::time::Duration;

use serde_json::json;
use smithers_agents::{
    AnthropicAgent, ClaudeCodeAgent, CodexAgent, GeminiAgent, OpenAiAgent, OpenAiApi,
};
use smithers_core::prompt::{assemble, extract_json};
use smithers_core::{Agent, AgentRequest, ProgressSink};
use tokio_util::sync::CancellationToken;

/// Text put into each agent's system prompt, for the script to look for in the requests.
const MARKER: &str = "SMITHERS-SMOKE-SYSTEM-PROMPT";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "claude".to_owned());
    let model = args.next();
    let agent: Box<dyn Agent> = match which.as_str() {
        "claude" => Box::new(
            model
                .into_iter()
                .fold(ClaudeCodeAgent::new(), |a, m| a.model(m))
                .append_system_prompt(MARKER)
                .disallowed_tools(["WebFetch", "WebSearch"]),
        ),
        "codex" => Box::new(
            model
                .into_iter()
                .fold(CodexAgent::new().ephemeral(true), |a, m| a.model(m))
                .system_prompt(MARKER),
        ),
        "gemini" => Box::new(
            model
                .into_iter()
                .fold(GeminiAgent::new(), |a, m| a.model(m))
                .system_prompt(format!("{MARKER}: you answer with JSON only.")),
        ),
        "anthropic-stream" => Box::new(
            AnthropicAgent::new(model.unwrap_or_else(|| "claude-test".to_owned()))
                .stream(true)
                .stream_idle_timeout(Duration::from_secs(5))
                .max_attempts(2),
        ),
        "openai-chat-stream" | "openai-responses-stream" => Box::new(
            OpenAiAgent::new(model.unwrap_or_else(|| "gpt-test".to_owned()))
                .api(if which == "openai-chat-stream" {
                    OpenAiApi::ChatCompletions
                } else {
                    OpenAiApi::Responses
                })
                .stream(true)
                .stream_idle_timeout(Duration::from_secs(5))
                .max_attempts(2),
        ),
        other => {
            eprintln!("unknown agent `{other}`: use claude, codex or gemini");
            std::process::exit(2);
        }
    };
    let schema = json!({
        "type": "object",
        "properties": {"summary": {"type": "string"}, "severity": {"type": "string"}},
        "required": ["summary", "severity"]
    });
    let task_prompt = "Review the change and summarise it with a severity.";
    let request = AgentRequest {
        prompt: assemble(task_prompt, &schema, None),
        task_prompt: task_prompt.to_owned(),
        output_schema: schema,
        output_type: "Review".to_owned(),
        run_id: "smoke".to_owned(),
        node_id: "review".to_owned(),
        iteration: 0,
        attempt: 1,
        timeout: Some(Duration::from_secs(120)),
        cancel: CancellationToken::new(),
        progress: ProgressSink::new(|stream, line| {
            eprintln!("[{stream}] {}", line.chars().take(160).collect::<String>())
        }),
    };
    match agent.generate(request).await {
        Ok(r) => {
            let parsed = r.json.clone().or_else(|| extract_json(&r.text));
            println!(
                "{}",
                json!({"agent": which, "text": r.text, "json": parsed, "native_json": r.json.is_some(), "usage": r.usage, "session_id": r.session_id,
                       "exit_code": r.exit_code, "model": r.model})
            );
            if parsed.is_none() {
                eprintln!("no JSON object in the reply");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!(
                "{which} failed ({}): {e}",
                if e.error.retryable {
                    "retryable"
                } else {
                    "terminal"
                }
            );
            std::process::exit(1);
        }
    }
}
