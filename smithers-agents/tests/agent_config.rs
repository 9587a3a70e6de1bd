//! What a step records about each agent (`smithers_core::agent::agent_config`): kind, model,
//! flags and the SHA-256 of the system prompt, from each agent's own configuration.
use smithers_agents::{AnthropicAgent, ClaudeCodeAgent, CodexAgent, GeminiAgent, OpenAiAgent};
use smithers_core::agent::agent_config;
use smithers_core::Agent;

fn check(agent: &dyn Agent, kind: &str, model: &str, prompt_hash: Option<&str>) {
    let c = agent_config("n", agent);
    assert_eq!(c["agent"], kind, "{c}");
    assert_eq!(c["model"], model, "{c}");
    assert_eq!(c["flags"], agent.signature(), "{c}");
    assert_eq!(c["system_prompt_sha256"].as_str(), prompt_hash, "{c}");
}

/// SHA-256 of `text` as coreutils' `sha256sum` computes it (an independent implementation).
fn sha(text: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn each_agent_reports_its_model_and_system_prompt_for_the_step_record() {
    let terse = sha("Be terse.");
    check(
        &AnthropicAgent::new("claude-x").system_prompt("Be terse."),
        AnthropicAgent::new("m").name(),
        "claude-x",
        Some(&terse),
    );
    check(
        &OpenAiAgent::new("gpt-x").system_prompt("Be terse."),
        OpenAiAgent::new("m").name(),
        "gpt-x",
        Some(&terse),
    );
    check(
        &ClaudeCodeAgent::new()
            .model("sonnet")
            .system_prompt("Be terse."),
        ClaudeCodeAgent::new().name(),
        "sonnet",
        Some(&terse),
    );
    check(
        &CodexAgent::new().model("gpt-5"),
        CodexAgent::new().name(),
        "gpt-5",
        None,
    );
    check(
        &GeminiAgent::new()
            .model("gemini-2.5-pro")
            .system_prompt("Be terse."),
        GeminiAgent::new().name(),
        "gemini-2.5-pro",
        Some(&terse),
    );
}

/// The part of a `<Workflow cache>` key an agent contributes (and the step record's `flags`):
/// its configuration as explicit JSON fields, the same text on every version of Rust and of
/// smithers, never a `Debug` rendering.
#[test]
fn each_agent_signature_is_fixed_json_of_its_configuration() {
    let text = |agent: &dyn Agent| serde_json::to_string(&agent.signature()).unwrap();
    assert_eq!(
        text(
            &ClaudeCodeAgent::new()
                .model("sonnet")
                .system_prompt("Be terse.")
        ),
        r#"{"agent":"claude-code","args":["--output-format","stream-json","--verbose","--model","sonnet","--system-prompt","Be terse."]}"#
    );
    assert_eq!(
        text(&CodexAgent::new().model("gpt-5")),
        r#"{"agent":"codex","args":["exec","--json","--skip-git-repo-check","--model","gpt-5"]}"#
    );
    assert_eq!(
        text(
            &GeminiAgent::new()
                .model("gemini-2.5-pro")
                .system_prompt("Be terse.")
        ),
        r#"{"agent":"gemini","args":["--output-format","stream-json","--skip-trust","-m","gemini-2.5-pro"],"system_prompt":"Be terse."}"#
    );
    assert_eq!(
        text(&AnthropicAgent::new("claude-x").system_prompt("Be terse.")),
        r#"{"agent":"anthropic","max_tokens":8192,"model":"claude-x","native_schema":true,"system_prompt":"Be terse.","temperature":null}"#
    );
    assert_eq!(
        text(&OpenAiAgent::new("gpt-x").base_url("http://127.0.0.1:1/v1")),
        r#"{"agent":"openai","api":"chat_completions","base_url":"http://127.0.0.1:1/v1","max_tokens":null,"model":"gpt-x","native_schema":false,"system_prompt":null,"temperature":null}"#
    );
    // A fallback chain is the list of its agents' signatures.
    let chain = smithers_core::Fallback::new([
        std::sync::Arc::new(CodexAgent::new()) as smithers_core::SharedAgent,
        std::sync::Arc::new(AnthropicAgent::new("claude-x")),
    ]);
    assert_eq!(
        text(&chain),
        r#"{"fallback":[{"agent":"codex","args":["exec","--json","--skip-git-repo-check"]},{"agent":"anthropic","max_tokens":8192,"model":"claude-x","native_schema":true,"system_prompt":null,"temperature":null}]}"#
    );
}
