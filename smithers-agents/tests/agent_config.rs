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
