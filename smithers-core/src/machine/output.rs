//! What an agent's reply means for its task: which JSON is the output, and the `<Workflow cache>`
//! key under which an output may be reused. Pure functions of the task, the reply and the agent's
//! signature.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::agent::{Agent, AgentResponse};
use crate::error::TaskError;
use crate::node::TaskSpec;
use crate::prompt::{extract_json, extract_json_with};

/// Picks the output out of an agent's reply: its native structured output if it validates,
/// else the last JSON object in the text that validates, else the last one at all.
pub(super) fn extract_output(t: &TaskSpec, resp: &AgentResponse) -> Result<Value, TaskError> {
    if let Some(v) = &resp.json {
        if (t.output.validate)(v).is_ok() {
            return Ok(v.clone());
        }
    }
    let validate = t.output.validate;
    if let Some(v) = extract_json_with(&resp.text, |v| validate(v).is_ok()) {
        return Ok(v);
    }
    match resp.json.clone().or_else(|| extract_json(&resp.text)) {
        Some(v) => Ok(v),
        None => Err(TaskError::retryable(format!(
            "node `{}`: the agent's reply has no JSON object for `{}` (reply began: {:?})",
            t.id,
            t.output.short_name(),
            resp.text.chars().take(200).collect::<String>()
        ))),
    }
}

/// The cache key of an agent task: what must match for an earlier output to be reused.
pub(super) fn cache_key(workflow: &str, t: &TaskSpec, agent: &dyn Agent) -> String {
    CacheKey {
        workflow,
        node_id: &t.id,
        prompt: &t.prompt,
        output: &t.output.signature(),
        agent: agent.signature(),
    }
    .hash()
}

/// The parts of a cache key, in the one serialisation that is hashed: JSON of these fields in
/// this order, the agent's configuration as its [`Agent::signature`] (explicit JSON fields,
/// object keys sorted), never a `Debug` rendering, so a key stays the same across versions of
/// Rust and of smithers for the same workflow, task and agent.
#[derive(Serialize)]
struct CacheKey<'a> {
    workflow: &'a str,
    node_id: &'a str,
    prompt: &'a str,
    /// The output type's schema signature ([`crate::output::OutputInfo::signature`]).
    output: &'a str,
    agent: Value,
}

impl CacheKey<'_> {
    /// SHA-256 of the JSON text, in hex.
    fn hash(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::CacheKey;

    #[test]
    fn a_cache_key_is_the_sha256_of_its_parts_as_fixed_json() {
        let key = CacheKey {
            workflow: "review",
            node_id: "fix",
            prompt: "Fix the build.",
            output: "0123456789abcdef01234567",
            agent: serde_json::json!({
                "agent": "claude-code",
                "args": ["--output-format", "stream-json", "--model", "sonnet"],
            }),
        };
        let text = serde_json::to_string(&key).unwrap();
        assert_eq!(
            text,
            r#"{"workflow":"review","node_id":"fix","prompt":"Fix the build.","output":"0123456789abcdef01234567","agent":{"agent":"claude-code","args":["--output-format","stream-json","--model","sonnet"]}}"#
        );
        // `printf %s "$text" | sha256sum`, computed outside Rust.
        assert_eq!(
            key.hash(),
            "e6356b3388773c5ff30e89ddd386d633ee0f992a2d19eb6a92e125b8b6e78028"
        );
    }
}
