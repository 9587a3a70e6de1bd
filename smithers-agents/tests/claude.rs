//! `ClaudeCodeAgent` against a fake `claude` replaying captured stream-json output.

mod common;

use common::{
    assert_mentions, err, fail_first, fake_cli, ok, read_args, request, schema, stall, Progress,
};
use serde_json::json;
use smithers_agents::{ClaudeCodeAgent, ClaudePermissionMode};
use smithers_core::prompt::extract_json;
use smithers_core::{Agent, Usage};

fn agent(scenario: &str) -> ClaudeCodeAgent {
    ClaudeCodeAgent::new()
        .binary(fake_cli())
        .env("FAKE_SCENARIO", format!("claude/{scenario}"))
}

fn captured_usage() -> Usage {
    Usage {
        input_tokens: Some(1234),
        output_tokens: Some(56),
        cache_read_tokens: Some(7),
        cache_write_tokens: Some(8),
        cost_usd: Some(0.0076235),
    }
}

#[tokio::test]
async fn success_gives_text_usage_cost_and_session() {
    let progress = Progress::default();
    let mut req = request("Review the change");
    req.progress = progress.sink();
    let r = agent("ok").generate(req).await.unwrap();
    assert_eq!(r.text, r#"{"summary":"ok","severity":"low"}"#);
    assert_eq!(
        extract_json(&r.text),
        Some(json!({"summary": "ok", "severity": "low"}))
    );
    assert_eq!(
        r.usage,
        captured_usage(),
        "result.usage, not the assistant event's output_tokens=1"
    );
    assert_eq!(
        r.session_id.as_deref(),
        Some("70a1c709-a759-4725-b9f3-0182f290c4fc")
    );
    assert_eq!(r.model.as_deref(), Some("claude-opus-4-8"));
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.transcript.as_deref().map(|t| t.lines().count()), Some(3));
    // Progress a person can read; the raw lines are in the transcript.
    assert_eq!(
        progress.lines("agent"),
        [
            "claude started (model claude-opus-4-8[1m], session 70a1c709-a759-4725-b9f3-0182f290c4fc)",
            "says: {\"summary\":\"ok\",\"severity\":\"low\"}",
            "claude done: 1 turn(s), cost $0.0076",
        ]
    );
    assert!(progress.lines("stdout").is_empty());
    let usage = progress.lines("usage");
    assert_eq!(usage.len(), 1, "one model message: {usage:?}");
    assert!(
        usage[0].contains("\"input_tokens\":1234"),
        "the message's usage is reported while it works: {usage:?}"
    );
}

#[tokio::test]
async fn passes_flags_prompt_and_native_schema() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let agent = agent("schema-ok")
        .env("FAKE_ARGS_FILE", &args_file)
        .model("claude-sonnet-4-5")
        .append_system_prompt("Be brief.")
        .permission_mode(ClaudePermissionMode::AcceptEdits)
        .allowed_tools(["Read", "Edit"])
        .arg("--no-session-persistence")
        .cwd(dir.path());
    let r = ok(&agent).await;
    assert_eq!(
        r.json,
        Some(json!({"summary": "ok", "severity": "low"})),
        "structured_output"
    );
    assert_eq!(Agent::cwd(&agent).as_deref(), Some(dir.path()));
    let args = read_args(&args_file);
    let expected = [
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "claude-sonnet-4-5",
        "--append-system-prompt",
        "Be brief.",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        "Read,Edit",
        "--no-session-persistence",
        "--json-schema",
    ];
    assert_eq!(&args[..expected.len()], expected);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&args[expected.len()]).unwrap(),
        schema()
    );
    assert_eq!(&args[expected.len() + 1..], ["-p", "Review the change"]);
}

#[tokio::test]
async fn json_schema_drops_the_draft_uri_claude_would_ignore() {
    // Claude Code 2.1.197 silently offers no StructuredOutput tool for a draft 2020-12 `$schema`.
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let agent = agent("schema-ok").env("FAKE_ARGS_FILE", &args_file);
    let mut req = request("Review the change");
    req.output_schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    agent.generate(req).await.unwrap();
    let args = read_args(&args_file);
    let i = args.iter().position(|a| a == "--json-schema").unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&args[i + 1]).unwrap(),
        schema()
    );
}

#[tokio::test]
async fn error_500_is_a_retryable_error_with_the_server_message() {
    let e = err(&agent("error500")).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "API Error: 500 fake server injected 500");
    assert_eq!(e.exit_code, Some(1));
    assert!(e.transcript.unwrap_or_default().contains("api_retry"));
    assert_eq!(e.usage.cost_usd, Some(0.0));
}

#[tokio::test]
async fn retry_then_success_with_a_counter_file() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("ok").envs(fail_first(dir.path(), 1, "claude/error500"));
    let first = err(&agent).await;
    assert!(first.error.retryable);
    let second = ok(&agent).await;
    assert_eq!(second.usage, captured_usage());
}

#[tokio::test]
async fn not_logged_in_is_terminal_and_names_the_env_var() {
    let e = err(&agent("no-api-key")).await;
    assert!(!e.error.retryable);
    assert_mentions(&e, "ANTHROPIC_API_KEY");
    assert_mentions(&e, "Not logged in");
}

#[tokio::test]
async fn root_refusal_on_stderr_is_terminal_and_explained() {
    let e = err(&agent("root").permission_mode(ClaudePermissionMode::BypassPermissions)).await;
    assert!(!e.error.retryable);
    assert_mentions(&e, "IS_SANDBOX=1");
}

#[tokio::test]
async fn non_json_reply_is_returned_as_text_for_the_engine_to_reject() {
    let r = ok(&agent("not-json")).await;
    assert_eq!(r.text, "I could not review the change: the diff is empty.");
    assert_eq!(r.json, None);
    assert_eq!(extract_json(&r.text), None);
}

#[tokio::test]
async fn prose_around_json_yields_the_last_object() {
    let r = ok(&agent("prose")).await;
    assert!(r.text.starts_with("I reviewed the change."));
    assert_eq!(
        extract_json(&r.text),
        Some(json!({"summary": "ok", "severity": "low"}))
    );
}

#[tokio::test]
async fn unknown_events_and_garbage_lines_do_not_abort() {
    let r = ok(&agent("unknown-event")).await;
    assert_eq!(r.text, r#"{"summary":"ok","severity":"low"}"#);
    let transcript = r.transcript.unwrap_or_default();
    assert!(transcript.contains("telemetry_v9") && transcript.contains("not json at all"));
}

#[tokio::test]
async fn stall_past_timeout_is_killed_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("stall").envs(stall(dir.path(), "1"));
    let mut req = request("Review the change");
    req.timeout = Some(std::time::Duration::from_millis(700));
    let started = std::time::Instant::now();
    let e = agent.generate(req).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(e.error.retryable);
    assert_mentions(&e, "timed out after 0.7s");
    assert_mentions(&e, "process group was killed");
    assert!(e
        .transcript
        .unwrap_or_default()
        .contains("\"subtype\":\"init\""));
    // What the attempt produced is kept: the session id claude printed and how it ended.
    assert_eq!(
        e.session_id.as_deref(),
        Some("70a1c709-a759-4725-b9f3-0182f290c4fc")
    );
    assert_eq!(e.exit_code, Some(137), "128 + SIGKILL");
}

#[tokio::test]
async fn an_api_error_result_carries_claudes_retry_events_and_session() {
    let e = err(&agent("error500")).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "API Error: 500 fake server injected 500");
    assert_eq!(
        e.session_id.as_deref(),
        Some("6fd71eff-f83c-4834-8961-463c6af29287")
    );
}

#[tokio::test]
async fn claudes_error_events_are_in_the_error_when_no_result_comes() {
    let e = err(&agent("retries-then-exit")).await;
    assert_mentions(
        &e,
        "it reported: API retry 1/2: HTTP 429 rate_limit_error | API retry 2/2: HTTP 429 rate_limit_error",
    );
    assert_mentions(&e, "claude ended (exit code 1) without a result event");
}

#[tokio::test]
async fn missing_binary_is_terminal_and_names_it() {
    let agent = ClaudeCodeAgent::new().binary("/nonexistent/bin/claude");
    let e = err(&agent).await;
    assert!(!e.error.retryable);
    assert_mentions(&e, "`/nonexistent/bin/claude` was not found");
    assert_mentions(&e, "npm install -g @anthropic-ai/claude-code");
}

#[test]
fn signature_reflects_the_configuration() {
    let a = ClaudeCodeAgent::new().model("opus");
    let b = ClaudeCodeAgent::new().model("sonnet");
    assert_ne!(a.signature(), b.signature());
    assert_eq!(a.name(), "claude-code");
}

#[tokio::test]
async fn restricts_tools_and_resumes_or_forks_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let agent = agent("ok")
        .env("FAKE_ARGS_FILE", &args_file)
        .tools(["Read", "Grep"])
        .resume("70a1c709-a759-4725-b9f3-0182f290c4fc")
        .fork_session(true);
    ok(&agent).await;
    let args = read_args(&args_file);
    let joined = args.join(" ");
    assert!(joined.contains("--tools Read,Grep"), "{joined}");
    assert!(
        joined.contains("--resume 70a1c709-a759-4725-b9f3-0182f290c4fc --fork-session"),
        "{joined}"
    );
}
