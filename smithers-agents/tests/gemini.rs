//! `GeminiAgent` against a fake `gemini` replaying captured stream-json output.

mod common;

use common::{assert_mentions, err, fail_first, fake_cli, ok, read_args, request, stall};
use serde_json::json;
use smithers_agents::{GeminiAgent, GeminiApprovalMode};
use smithers_core::prompt::extract_json;
use smithers_core::{Agent, Usage};

fn agent(scenario: &str) -> GeminiAgent {
    GeminiAgent::new()
        .binary(fake_cli())
        .env("FAKE_SCENARIO", format!("gemini/{scenario}"))
}

#[tokio::test]
async fn success_concatenates_deltas_and_reports_usage() {
    let r = ok(&agent("ok")).await;
    assert_eq!(r.text, r#"{"summary":"ok","severity":"low"}"#);
    assert_eq!(
        extract_json(&r.text),
        Some(json!({"summary": "ok", "severity": "low"}))
    );
    let usage = Usage {
        input_tokens: Some(1234),
        output_tokens: Some(56),
        cache_read_tokens: Some(7),
        cache_write_tokens: None,
        cost_usd: None,
    };
    assert_eq!(r.usage, usage);
    assert_eq!(
        r.session_id.as_deref(),
        Some("e6c682ea-d2c4-44ba-92a5-dc4bfd60d986")
    );
    assert_eq!(r.model.as_deref(), Some("gemini-2.5-pro"));
}

#[tokio::test]
async fn passes_flags_and_system_prompt_file() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let agent = agent("ok")
        .env("FAKE_ARGS_FILE", &args_file)
        .model("gemini-2.5-pro")
        .approval_mode(GeminiApprovalMode::Yolo)
        .allowed_tools(["ReadFile"])
        .system_prompt("You are terse.");
    let mut req = request("- starts with a dash");
    req.prompt = "- starts with a dash".into();
    agent.generate(req).await.unwrap();
    let args = read_args(&args_file);
    let expected = [
        "--output-format",
        "stream-json",
        "--skip-trust",
        "-m",
        "gemini-2.5-pro",
        "--approval-mode",
        "yolo",
        "--allowed-tools",
        "ReadFile",
        "-p",
        " - starts with a dash",
    ];
    assert_eq!(args, expected);
}

#[tokio::test]
async fn error_500_exit_244_is_retryable_with_the_server_message() {
    let e = err(&agent("error500")).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "exit code 244");
    assert_mentions(&e, "fake server injected 500 (request #2)");
    assert_mentions(&e, "HTTP 500");
    assert_eq!(e.usage.input_tokens, Some(0));
}

#[tokio::test]
async fn retry_then_success_with_a_counter_file() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("ok").envs(fail_first(dir.path(), 1, "gemini/error500"));
    assert!(err(&agent).await.error.retryable);
    assert_eq!(
        ok(&agent).await.text,
        r#"{"summary":"ok","severity":"low"}"#
    );
}

#[tokio::test]
async fn auth_error_json_on_stderr_is_terminal() {
    let e = err(&agent("no-auth-type")).await;
    assert!(!e.error.retryable);
    assert_mentions(&e, "Invalid auth method selected.");
    assert_mentions(&e, "GEMINI_API_KEY");
}

#[tokio::test]
async fn stall_past_idle_timeout_is_killed_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("stall")
        .envs(stall(dir.path(), "1"))
        .idle_timeout(std::time::Duration::from_millis(400));
    let e = err(&agent).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "printed nothing for 0.4s");
}

#[tokio::test]
async fn an_error_event_before_an_empty_success_is_the_attempts_error() {
    let e = err(&agent("loop-detected")).await;
    assert_eq!(
        e.error.message,
        "gemini stopped with an error and no reply: Loop detected, stopping execution"
    );
    assert!(e.error.retryable);
    assert_eq!(
        e.session_id.as_deref(),
        Some("e6c682ea-d2c4-44ba-92a5-dc4bfd60d986")
    );
}

#[tokio::test]
async fn a_rate_limit_error_carries_the_delay_gemini_was_given() {
    let e = err(&agent("error429")).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "(HTTP 429)");
    assert_eq!(
        e.error.retry_after,
        Some(std::time::Duration::from_secs(17))
    );
}

#[tokio::test]
async fn non_json_reply_is_returned_as_text() {
    let r = ok(&agent("not-json")).await;
    assert_eq!(r.text, "I could not review the change: the diff is empty.");
    assert_eq!(extract_json(&r.text), None);
}

#[tokio::test]
async fn prose_around_json_yields_the_last_object() {
    let r = ok(&agent("prose")).await;
    assert!(r.text.starts_with("I checked the diff."), "{}", r.text);
    assert_eq!(
        extract_json(&r.text),
        Some(json!({"summary": "ok", "severity": "low"}))
    );
}
