//! `AnthropicAgent` and `OpenAiAgent` with `.stream(true)` against a scripted SSE server on
//! 127.0.0.1: a complete stream gives text and usage, a stream that stalls mid-way fails as a
//! retryable timeout (and is retried), a stream cut short is retried.

mod common;

use std::time::{Duration, Instant};

use common::{assert_mentions, err, ok, request, tokens, FakeHttp, Progress, Reply};
use serde_json::{json, Value};
use smithers_agents::{AnthropicAgent, OpenAiAgent, OpenAiApi};
use smithers_core::{Agent, Usage};

const IDLE: Duration = Duration::from_millis(300);
const STALL: Duration = Duration::from_secs(5);

fn anthropic(server: &FakeHttp) -> AnthropicAgent {
    common::anthropic(server)
        .stream(true)
        .stream_idle_timeout(IDLE)
}

fn openai(server: &FakeHttp, api: OpenAiApi) -> OpenAiAgent {
    common::openai(server, api)
        .stream(true)
        .stream_idle_timeout(IDLE)
}

/// A Messages stream: text in three deltas (with a line break), usage split between
/// `message_start` and `message_delta`, a ping in between.
fn anthropic_events() -> Vec<(Option<&'static str>, Value)> {
    let delta = |text: &str| {
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        )
    };
    vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
                "model": "claude-test", "content": [], "stop_reason": null,
                "usage": {"input_tokens": 1234, "output_tokens": 1, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 8}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        delta("Looked at it.\n{\"summary\":"),
        (Some("ping"), json!({"type": "ping"})),
        delta("\"ok\",\"severity\":"),
        delta("\"low\"}"),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 56}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ]
}

const ANTHROPIC_TEXT: &str = "Looked at it.\n{\"summary\":\"ok\",\"severity\":\"low\"}";

#[tokio::test]
async fn anthropic_stream_gives_text_usage_and_progress_lines() {
    let server = FakeHttp::start(vec![Reply::sse(anthropic_events())]).await;
    let progress = Progress::default();
    let mut req = request("Review the change");
    req.progress = progress.sink();
    let r = anthropic(&server).generate(req).await.unwrap();
    assert_eq!(r.text, ANTHROPIC_TEXT);
    let usage = Usage {
        input_tokens: Some(1234),
        output_tokens: Some(56),
        cache_read_tokens: Some(7),
        cache_write_tokens: Some(8),
        cost_usd: None,
    };
    assert_eq!(r.usage, usage, "message_delta's output_tokens win");
    assert_eq!(r.session_id.as_deref(), Some("msg_s"));
    assert_eq!(r.model.as_deref(), Some("claude-test"));
    assert_eq!(
        progress.lines("text"),
        ["Looked at it.", "{\"summary\":\"ok\",\"severity\":\"low\"}"]
    );
    assert_eq!(server.requests()[0].json()["stream"], true);
}

#[tokio::test]
async fn anthropic_streamed_tool_input_becomes_json() {
    let events = vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": "msg_t", "model": "claude-test", "content": [],
                "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "StructuredOutput", "input": {}}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"summary\": \"ok\", "}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"severity\": \"low\"}"}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ];
    let server = FakeHttp::start(vec![Reply::sse(events)]).await;
    let r = ok(&anthropic(&server)).await;
    assert_eq!(r.json, Some(json!({"summary": "ok", "severity": "low"})));
    assert_eq!(r.usage.output_tokens, Some(5));
}

#[tokio::test]
async fn anthropic_stream_stalling_midway_is_a_retryable_timeout() {
    let stalled = Reply::sse(anthropic_events()).stall_before(3, STALL);
    let server = FakeHttp::start(vec![stalled]).await;
    let started = Instant::now();
    let e = err(&anthropic(&server).max_attempts(2)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the idle timeout, not the stall, ends it: {:?}",
        started.elapsed()
    );
    assert!(e.error.retryable);
    assert_mentions(&e, "the stream stalled: no data for 0.3s");
    assert_mentions(&e, "after 2 attempt(s)");
    assert_eq!(server.requests().len(), 2, "a stalled stream is retried");
}

#[tokio::test]
async fn anthropic_stalled_stream_then_complete_stream_succeeds() {
    let server = FakeHttp::start(vec![
        Reply::sse(anthropic_events()).stall_before(2, STALL),
        Reply::sse(anthropic_events()),
    ])
    .await;
    let r = ok(&anthropic(&server)).await;
    assert_eq!(r.text, ANTHROPIC_TEXT);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn anthropic_stream_cut_short_or_reporting_an_error_is_retried() {
    let mut cut = anthropic_events();
    cut.truncate(5);
    let error = vec![(
        Some("error"),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )];
    let server = FakeHttp::start(vec![Reply::sse(cut), Reply::sse(error)]).await;
    let e = err(&anthropic(&server).max_attempts(2)).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "the stream reported an error: Overloaded");
    assert_eq!(server.requests().len(), 2);

    let server = FakeHttp::start(vec![Reply::sse(anthropic_events()[..5].to_vec())]).await;
    let e = err(&anthropic(&server).max_attempts(1)).await;
    assert!(e.error.retryable);
    assert_mentions(&e, "the stream ended before message_stop");
}

#[tokio::test]
async fn anthropic_stream_mode_still_retries_http_errors() {
    let server = FakeHttp::start(vec![
        Reply::json(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
        )
        .header("retry-after-ms", "20"),
        Reply::sse(anthropic_events()),
    ])
    .await;
    let r = ok(&anthropic(&server)).await;
    assert_eq!(r.text, ANTHROPIC_TEXT);
}

fn chat_events() -> Vec<(Option<&'static str>, Value)> {
    let chunk = |delta: Value, finish: Value| {
        (
            None,
            json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-test",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null}),
        )
    };
    vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "{\"summary\":\"ok\","}), Value::Null),
        chunk(json!({"content": "\"severity\":\"low\"}"}), Value::Null),
        chunk(json!({}), json!("stop")),
        (
            None,
            json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-test", "choices": [],
                "usage": {"prompt_tokens": 1234, "completion_tokens": 56, "prompt_tokens_details": {"cached_tokens": 7}}}),
        ),
        (None, Value::Null),
    ]
}

const REPLY: &str = r#"{"summary":"ok","severity":"low"}"#;

#[tokio::test]
async fn openai_chat_stream_gives_text_and_usage() {
    let server = FakeHttp::start(vec![Reply::sse(chat_events())]).await;
    let r = ok(&openai(&server, OpenAiApi::ChatCompletions)).await;
    assert_eq!(r.text, REPLY);
    assert_eq!(r.json, Some(json!({"summary": "ok", "severity": "low"})));
    assert_eq!(tokens(&r.usage), (Some(1234), Some(56), Some(7)));
    assert_eq!(r.session_id.as_deref(), Some("chatcmpl-s"));
    let body = server.requests()[0].json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn openai_chat_stream_stalling_midway_is_a_retryable_timeout() {
    let server = FakeHttp::start(vec![Reply::sse(chat_events()).stall_before(2, STALL)]).await;
    let started = Instant::now();
    let e = err(&openai(&server, OpenAiApi::ChatCompletions).max_attempts(2)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(e.error.retryable);
    assert_mentions(&e, "the stream stalled: no data for 0.3s");
    assert_eq!(server.requests().len(), 2);
}

fn responses_events() -> Vec<(Option<&'static str>, Value)> {
    vec![
        (
            Some("response.created"),
            json!({"type": "response.created", "response": {"id": "resp_s", "status": "in_progress", "output": []}}),
        ),
        (
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "{\"summary\":\"ok\","}),
        ),
        (
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "\"severity\":\"low\"}"}),
        ),
        (
            Some("response.completed"),
            json!({"type": "response.completed", "response": {
                "id": "resp_s", "object": "response", "status": "completed", "model": "gpt-test", "error": null,
                "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                            "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}],
                "usage": {"input_tokens": 1234, "output_tokens": 56, "input_tokens_details": {"cached_tokens": 7}}}}),
        ),
    ]
}

#[tokio::test]
async fn openai_responses_stream_gives_text_and_usage() {
    let server = FakeHttp::start(vec![Reply::sse(responses_events())]).await;
    let progress = Progress::default();
    let mut req = request("x");
    req.progress = progress.sink();
    let r = openai(&server, OpenAiApi::Responses)
        .generate(req)
        .await
        .unwrap();
    assert_eq!(r.text, REPLY);
    assert_eq!(tokens(&r.usage), (Some(1234), Some(56), Some(7)));
    assert_eq!(r.session_id.as_deref(), Some("resp_s"));
    assert_eq!(progress.lines("text"), [REPLY]);
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(sent.json()["stream"], true);
}

#[tokio::test]
async fn openai_responses_stream_stalling_or_cut_short_is_retryable() {
    let server = FakeHttp::start(vec![
        Reply::sse(responses_events()).stall_before(1, STALL),
        Reply::sse(responses_events()[..3].to_vec()),
    ])
    .await;
    let started = Instant::now();
    let e = err(&openai(&server, OpenAiApi::Responses).max_attempts(2)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(e.error.retryable);
    assert_mentions(&e, "the stream ended before response.completed");
    assert_eq!(server.requests().len(), 2);
}
