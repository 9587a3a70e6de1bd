//! `ScriptedAgent`: replies in order, records requests, fails clearly when the script runs out.

mod common;

use std::time::Duration;

use common::{assert_mentions, request, Progress};
use serde_json::json;
use smithers_agents::ScriptedAgent;
use smithers_core::{Agent, AgentResponse, TaskError, Usage};

#[tokio::test]
async fn replies_in_order_and_records_requests() {
    let agent = ScriptedAgent::new()
        .named("claude")
        .reply("first")
        .fail_retryable("HTTP 500")
        .reply_json(json!({"a": 1}))
        .fail_terminal("no key");
    let handle = agent.clone();
    let progress = Progress::default();
    let mut req = request("one");
    req.progress = progress.sink();
    assert_eq!(agent.generate(req).await.unwrap().text, "first");
    let e = agent.generate(request("two")).await.unwrap_err();
    assert_eq!(e.error, TaskError::retryable("HTTP 500"));
    assert_eq!(
        agent.generate(request("three")).await.unwrap().text,
        r#"{"a":1}"#
    );
    assert!(
        !agent
            .generate(request("four"))
            .await
            .unwrap_err()
            .error
            .retryable
    );
    let prompts: Vec<String> = handle.requests().into_iter().map(|r| r.prompt).collect();
    assert_eq!(prompts, ["one", "two", "three", "four"]);
    assert_eq!(progress.lines("text"), ["first"]);
    assert_eq!(agent.name(), "claude");
}

#[tokio::test]
async fn full_responses_keep_usage_and_json() {
    let usage = Usage {
        input_tokens: Some(3),
        cost_usd: Some(0.5),
        ..Usage::default()
    };
    let response = AgentResponse {
        text: "t".into(),
        json: Some(json!({"x": 1})),
        usage: usage.clone(),
        ..AgentResponse::default()
    };
    let r = ScriptedAgent::new()
        .respond(response)
        .generate(request("p"))
        .await
        .unwrap();
    assert_eq!((r.json, r.usage), (Some(json!({"x": 1})), usage));
}

#[tokio::test]
async fn exhausted_script_is_a_terminal_error() {
    let agent = ScriptedAgent::new().reply("only");
    agent.generate(request("1")).await.unwrap();
    let e = agent.generate(request("2")).await.unwrap_err();
    assert!(!e.error.retryable);
    assert_mentions(&e, "no scripted reply left for request 2");
    assert_eq!(agent.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn hang_ends_at_the_timeout_and_delays_honour_cancel() {
    let agent = ScriptedAgent::new()
        .hang()
        .reply_after(Duration::from_secs(60), "late");
    let mut req = request("p");
    req.timeout = Some(Duration::from_secs(5));
    let e = agent.generate(req).await.unwrap_err();
    assert!(
        e.error.retryable && e.error.message.contains("timed out after 5.0s"),
        "{}",
        e.error.message
    );

    let req = request("p");
    req.cancel.cancel();
    let e = agent.generate(req).await.unwrap_err();
    assert_mentions(&e, "cancelled");
}
