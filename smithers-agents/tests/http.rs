//! `AnthropicAgent` and `OpenAiAgent` against a scripted HTTP server on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{anthropic, assert_mentions, openai, request, schema, tokens, FakeHttp, Reply};
use serde_json::{json, Value};
use smithers_agents::{AnthropicAgent, OpenAiAgent, OpenAiApi};
use smithers_core::prompt::{assemble, extract_json};
use smithers_core::{Agent, Usage};

const REPLY: &str = r#"{"summary":"ok","severity":"low"}"#;

fn anthropic_ok() -> Reply {
    Reply::json(
        200,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": REPLY}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1234, "output_tokens": 56, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 8}
        }),
    )
}

fn chat_ok(content: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1234, "completion_tokens": 56, "prompt_tokens_details": {"cached_tokens": 7}}
        }),
    )
}

fn responses_ok() -> Reply {
    Reply::json(
        200,
        json!({
            "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-test", "error": null,
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "id": "msg_1", "role": "assistant",
                 "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}
            ],
            "usage": {"input_tokens": 1234, "output_tokens": 56, "input_tokens_details": {"cached_tokens": 7}}
        }),
    )
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": "api_error", "message": message}}),
    )
}

#[tokio::test]
async fn anthropic_success_sends_key_version_and_schema_tool() {
    let server = FakeHttp::start(vec![anthropic_ok()]).await;
    let agent = anthropic(&server)
        .system_prompt("Be terse.")
        .max_tokens(1000);
    let r = agent.generate(request("Review the change")).await.unwrap();
    assert_eq!(r.text, REPLY);
    assert_eq!(
        extract_json(&r.text),
        Some(json!({"summary": "ok", "severity": "low"}))
    );
    let usage = Usage {
        input_tokens: Some(1234),
        output_tokens: Some(56),
        cache_read_tokens: Some(7),
        cache_write_tokens: Some(8),
        cost_usd: None,
    };
    assert_eq!(r.usage, usage);
    assert_eq!(r.session_id.as_deref(), Some("msg_1"));
    assert_eq!(r.model.as_deref(), Some("claude-test"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(sent.header("x-api-key"), Some("sk-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    let body = sent.json();
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["max_tokens"], 1000);
    assert_eq!(body["system"], "Be terse.");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Review the change"}])
    );
    assert_eq!(body["tools"][0]["input_schema"], schema());
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "StructuredOutput"})
    );
}

#[tokio::test]
async fn anthropic_structured_output_tool_becomes_json() {
    let reply = Reply::json(
        200,
        json!({
            "id": "msg_2", "model": "claude-test",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "StructuredOutput", "input": {"summary": "ok", "severity": "low"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5}
        }),
    );
    let server = FakeHttp::start(vec![reply]).await;
    let r = anthropic(&server).generate(request("x")).await.unwrap();
    assert_eq!(r.json, Some(json!({"summary": "ok", "severity": "low"})));
    assert_eq!(
        serde_json::from_str::<Value>(&r.text).unwrap(),
        json!({"summary": "ok", "severity": "low"})
    );
}

#[tokio::test]
async fn anthropic_429_with_retry_after_then_success() {
    let server = FakeHttp::start(vec![
        error(429, "rate limited").header("retry-after", "1"),
        anthropic_ok(),
    ])
    .await;
    let started = Instant::now();
    let r = anthropic(&server).generate(request("x")).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "retry-after honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(r.text, REPLY);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn anthropic_500_exhausts_bounded_retries() {
    let server = FakeHttp::start(vec![error(500, "boom")]).await;
    let e = anthropic(&server)
        .max_attempts(3)
        .generate(request("x"))
        .await
        .unwrap_err();
    assert!(e.error.retryable);
    assert_mentions(&e, "after 3 attempt(s)");
    assert_mentions(&e, "HTTP 500: boom");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn anthropic_timeout_is_retryable() {
    let server = FakeHttp::start(vec![anthropic_ok().delayed(Duration::from_secs(5))]).await;
    let mut req = request("x");
    req.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let e = anthropic(&server).generate(req).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(e.error.retryable);
    assert_mentions(&e, "timed out after 0.3s");
}

#[tokio::test]
async fn anthropic_invalid_json_reply_is_retried_then_reported() {
    let server = FakeHttp::start(vec![Reply::raw(200, "<html>oops</html>"), anthropic_ok()]).await;
    assert_eq!(
        anthropic(&server)
            .generate(request("x"))
            .await
            .unwrap()
            .text,
        REPLY
    );

    let server = FakeHttp::start(vec![Reply::raw(200, "{\"truncated\": ")]).await;
    let e = anthropic(&server)
        .max_attempts(2)
        .generate(request("x"))
        .await
        .unwrap_err();
    assert!(e.error.retryable);
    assert_mentions(&e, "not valid JSON");
}

#[tokio::test]
async fn anthropic_auth_errors_are_terminal_and_name_the_env_var() {
    let server = FakeHttp::start(vec![error(401, "invalid x-api-key")]).await;
    let e = anthropic(&server).generate(request("x")).await.unwrap_err();
    assert!(!e.error.retryable);
    assert_mentions(&e, "ANTHROPIC_API_KEY");
    assert_eq!(server.requests().len(), 1, "no retry on 401");

    let agent = AnthropicAgent::new("m")
        .base_url(&server.base)
        .api_key_env("SMITHERS_TEST_UNSET_KEY_7F3A");
    let e = agent.generate(request("x")).await.unwrap_err();
    assert!(!e.error.retryable);
    assert_mentions(
        &e,
        "set the environment variable SMITHERS_TEST_UNSET_KEY_7F3A",
    );
}

#[tokio::test]
async fn anthropic_bad_request_is_terminal() {
    let server = FakeHttp::start(vec![error(400, "max_tokens: too large")]).await;
    let e = anthropic(&server).generate(request("x")).await.unwrap_err();
    assert!(!e.error.retryable);
    assert_mentions(&e, "max_tokens: too large");
}

#[tokio::test]
async fn openai_chat_success_with_usage_and_bearer_key() {
    let server = FakeHttp::start(vec![chat_ok(REPLY)]).await;
    let agent = openai(&server, OpenAiApi::ChatCompletions)
        .system_prompt("sys")
        .native_schema(true);
    let r = agent.generate(request("Review the change")).await.unwrap();
    assert_eq!(r.text, REPLY);
    assert_eq!(r.json, Some(json!({"summary": "ok", "severity": "low"})));
    assert_eq!(tokens(&r.usage), (Some(1234), Some(56), Some(7)));
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test"));
    let body = sent.json();
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "sys"})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Review the change"})
    );
    assert_eq!(body["response_format"]["json_schema"]["schema"], schema());
    assert_eq!(body["response_format"]["json_schema"]["name"], "Review");
}

#[tokio::test]
async fn openai_responses_success() {
    let server = FakeHttp::start(vec![responses_ok()]).await;
    let agent = openai(&server, OpenAiApi::Responses).system_prompt("sys");
    let r = agent.generate(request("Review the change")).await.unwrap();
    assert_eq!(r.text, REPLY);
    assert_eq!(r.usage.cache_read_tokens, Some(7));
    assert_eq!(r.session_id.as_deref(), Some("resp_1"));
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/responses");
    let body = sent.json();
    assert_eq!(
        (body["input"].as_str(), body["instructions"].as_str()),
        (Some("Review the change"), Some("sys"))
    );
    assert!(
        body.get("text").is_none(),
        "native schema is opt-in for compatible servers"
    );
}

#[tokio::test]
async fn openai_429_with_retry_after_then_success() {
    let server = FakeHttp::start(vec![
        error(429, "slow down").header("retry-after-ms", "400"),
        error(503, "overloaded").header("retry-after", "0"),
        responses_ok(),
    ])
    .await;
    let started = Instant::now();
    let r = openai(&server, OpenAiApi::Responses)
        .generate(request("x"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(380),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.text, REPLY);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn openai_500_exhausts_retries() {
    let server = FakeHttp::start(vec![Reply::raw(502, "bad gateway")]).await;
    let e = openai(&server, OpenAiApi::ChatCompletions)
        .max_attempts(2)
        .generate(request("x"))
        .await
        .unwrap_err();
    assert!(e.error.retryable);
    assert_mentions(&e, "HTTP 502: bad gateway");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn openai_timeout_per_request_then_retry_succeeds() {
    let server = FakeHttp::start(vec![
        chat_ok(REPLY).delayed(Duration::from_secs(5)),
        chat_ok(REPLY),
    ])
    .await;
    let agent =
        openai(&server, OpenAiApi::ChatCompletions).request_timeout(Duration::from_millis(300));
    let r = agent.generate(request("x")).await.unwrap();
    assert_eq!(r.text, REPLY);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn openai_local_server_without_key_sends_no_authorization() {
    let server = FakeHttp::start(vec![chat_ok(REPLY)]).await;
    let agent = OpenAiAgent::new("llama")
        .base_url(&server.base)
        .api_key_env("SMITHERS_TEST_UNSET_KEY_7F3A")
        .no_api_key();
    agent.generate(request("x")).await.unwrap();
    assert_eq!(server.requests()[0].header("authorization"), None);
    assert_eq!(server.requests()[0].path, "/chat/completions");
}

/// The engine's repair loop: invalid output, then the same agent asked again with the error.
#[tokio::test]
async fn invalid_output_then_success_after_a_repair_retry() {
    let server = FakeHttp::start(vec![
        chat_ok("Sorry, I think the severity is low."),
        chat_ok(&format!("Here:\n```json\n{REPLY}\n```")),
    ])
    .await;
    let agent = openai(&server, OpenAiApi::ChatCompletions);
    let first = agent
        .generate(request(&assemble("Review the change", &schema(), None)))
        .await
        .unwrap();
    assert_eq!(extract_json(&first.text), None);
    let error = "the reply contained no JSON object";
    let second = agent
        .generate(request(&assemble(
            "Review the change",
            &schema(),
            Some(error),
        )))
        .await
        .unwrap();
    assert_eq!(
        extract_json(&second.text),
        Some(json!({"summary": "ok", "severity": "low"}))
    );
    let retried = server.requests()[1].json();
    let prompt = retried["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        prompt.contains("## REQUIRED OUTPUT") && prompt.contains(error),
        "{prompt}"
    );
}
