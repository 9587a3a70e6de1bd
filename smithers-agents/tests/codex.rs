//! `CodexAgent` against a fake `codex` replaying captured `exec --json` output.

mod common;

use common::{assert_mentions, err, fail_first, fake_cli, ok, read_args, request, schema, stall};
use serde_json::json;
use smithers_agents::{CodexAgent, CodexSandbox};
use smithers_core::{Agent, Usage};

fn agent(scenario: &str) -> CodexAgent {
    CodexAgent::new()
        .binary(fake_cli())
        .env("FAKE_SCENARIO", format!("codex/{scenario}"))
}

#[tokio::test]
async fn success_gives_text_json_usage_and_thread_id() {
    // The fake reads stdin to EOF like real codex: this only returns because stdin is /dev/null.
    let r = ok(&agent("ok").env("FAKE_READ_STDIN", "1")).await;
    assert_eq!(r.text, r#"{"summary":"ok","severity":"low"}"#);
    assert_eq!(
        r.json,
        Some(json!({"summary": "ok", "severity": "low"})),
        "--output-schema reply"
    );
    let usage = Usage {
        input_tokens: Some(1234),
        output_tokens: Some(56),
        cache_read_tokens: Some(7),
        cache_write_tokens: Some(0),
        cost_usd: None,
    };
    assert_eq!(r.usage, usage);
    assert_eq!(
        r.session_id.as_deref(),
        Some("01a203d5-ef91-7562-b0a2-42e0243c970e")
    );
    assert_eq!(r.exit_code, Some(0));
}

#[tokio::test]
async fn passes_flags_schema_file_and_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let agent = agent("ok")
        .env("FAKE_ARGS_FILE", &args_file)
        .model("gpt-5.5")
        .sandbox(CodexSandbox::WorkspaceWrite)
        .system_prompt("Say \"hi\"")
        .config("model_provider", "\"fake\"")
        .ephemeral(true);
    ok(&agent).await;
    let args = read_args(&args_file);
    let expected = [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--ephemeral",
        "--model",
        "gpt-5.5",
        "--sandbox",
        "workspace-write",
        "-c",
        r#"developer_instructions="Say \"hi\"""#,
        "-c",
        "model_provider=\"fake\"",
        "--output-schema",
    ];
    assert_eq!(&args[..expected.len()], expected);
    assert!(args[expected.len()].ends_with(".json"));
    assert_eq!(&args[expected.len() + 1..], ["--", "Review the change"]);
    // The schema file lives only as long as the attempt.
    assert!(!std::path::Path::new(&args[expected.len()]).exists());
}

#[tokio::test]
async fn native_schema_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let r = ok(&agent("ok")
        .env("FAKE_ARGS_FILE", &args_file)
        .native_schema(false))
    .await;
    assert!(!read_args(&args_file).iter().any(|a| a == "--output-schema"));
    assert_eq!(r.json, None);
    let _ = schema();
}

#[tokio::test]
async fn error_500_is_retryable_and_says_codex_hides_the_message() {
    let e = err(&agent("error500")).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "high demand");
    assert_mentions(&e, "HTTP 5xx");
    assert_eq!(e.exit_code, Some(1));
}

#[tokio::test]
async fn retry_then_success_with_a_counter_file() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("ok").envs(fail_first(dir.path(), 2, "codex/error500"));
    assert!(err(&agent).await.error.retryable);
    assert!(err(&agent).await.error.retryable);
    assert_eq!(ok(&agent).await.usage.input_tokens, Some(1234));
}

#[tokio::test]
async fn missing_api_key_env_is_terminal_and_names_it() {
    let e = err(&agent("missing-key")).await;
    assert!(!e.error.retryable);
    assert_mentions(&e, "`FAKE_OPENAI_API_KEY`");
}

#[tokio::test]
async fn config_error_on_stderr_is_terminal() {
    let e = err(&agent("config-error")).await;
    assert!(!e.error.retryable);
    assert_mentions(&e, "wire_api");
}

#[tokio::test]
async fn stall_past_timeout_is_killed_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent("stall").envs(stall(dir.path(), "1"));
    let mut req = request("Review the change");
    req.timeout = Some(std::time::Duration::from_millis(500));
    let e = agent.generate(req).await.unwrap_err();
    assert!(e.error.retryable);
    assert_mentions(&e, "timed out");
    assert!(
        e.error.message.contains("turn.started"),
        "last output is quoted: {}",
        e.error.message
    );
}

#[tokio::test]
async fn non_json_reply_is_returned_as_text() {
    let r = ok(&agent("not-json")).await;
    assert_eq!(r.text, "I could not review the change: the diff is empty.");
    assert_eq!(r.json, None);
}

#[tokio::test]
async fn prose_around_json_yields_the_last_object() {
    let r = ok(&agent("prose")).await;
    assert_eq!(r.json, None, "the text is not a bare JSON object");
    let found = smithers_core::prompt::extract_json(&r.text);
    assert_eq!(found, Some(json!({"summary": "ok", "severity": "low"})));
}

#[tokio::test]
async fn resume_runs_exec_resume_with_the_sandbox_as_config() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    let agent = smithers_agents::CodexAgent::new()
        .binary(common::fake_cli())
        .env("FAKE_SCENARIO", "codex/ok")
        .env("FAKE_ARGS_FILE", &args_file)
        .sandbox(smithers_agents::CodexSandbox::ReadOnly)
        .resume("01a203d5-1111-7000-8000-000000000000");
    common::ok(&agent).await;
    let args = common::read_args(&args_file);
    assert_eq!(&args[..3], ["exec", "resume", "--json"]);
    assert!(
        args.contains(&"sandbox_mode=\"read-only\"".to_owned()),
        "{args:?}"
    );
    assert!(!args.contains(&"--sandbox".to_owned()), "{args:?}");
    let n = args.len();
    assert_eq!(
        &args[n - 3..n - 1],
        ["--", "01a203d5-1111-7000-8000-000000000000"]
    );
}
