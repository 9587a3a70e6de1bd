//! A multi-megabyte reply arrives whole from a CLI that writes it non-blockingly and exits
//! right after (as Claude Code and Gemini do): the CLIs' stdout goes to a file, not a pipe.

mod common;

use common::{hasty_writer, missing_tool, request};
use smithers_agents::{ClaudeCodeAgent, CodexAgent, GeminiAgent};
use smithers_core::{Agent, AgentResponse};

async fn check(flavor: &str, agent: &dyn Agent, out: &std::path::Path) -> AgentResponse {
    let mut req = request("Review the change");
    req.timeout = Some(std::time::Duration::from_secs(120));
    let r = match agent.generate(req).await {
        Ok(r) => r,
        Err(e) => panic!("{flavor}: expected the whole reply, got: {e}"),
    };
    let sent = std::fs::read_to_string(out).unwrap();
    assert!(
        sent.len() > 5_000_000,
        "{flavor}: the reply is {} bytes",
        sent.len()
    );
    assert_eq!(r.text.len(), sent.len(), "{flavor}: bytes received vs sent");
    assert!(
        r.text == sent,
        "{flavor}: the reply differs from what was sent"
    );
    r
}

#[tokio::test]
async fn a_five_megabyte_reply_arrives_whole_from_a_cli_that_exits_right_after_writing() {
    if missing_tool(
        "a_five_megabyte_reply_arrives_whole_from_a_cli_that_exits_right_after_writing",
        "python3",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sent");

    let claude = ClaudeCodeAgent::new()
        .binary(hasty_writer())
        .env("HASTY_FLAVOR", "claude")
        .env("HASTY_OUT", &out);
    let r = check("claude", &claude, &out).await;
    assert_eq!(r.session_id.as_deref(), Some("big-session"));
    assert_eq!(r.usage.output_tokens, Some(20));
    let transcript = r.transcript.unwrap_or_default();
    assert_eq!(transcript.lines().count(), 2);
    assert!(transcript.len() > 5_000_000);

    let gemini = GeminiAgent::new()
        .binary(hasty_writer())
        .env("HASTY_FLAVOR", "gemini")
        .env("HASTY_OUT", &out);
    check("gemini", &gemini, &out).await;

    let codex = CodexAgent::new()
        .binary(hasty_writer())
        .env("HASTY_FLAVOR", "codex")
        .env("HASTY_OUT", &out);
    check("codex", &codex, &out).await;
}
