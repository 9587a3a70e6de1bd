//! What an agent's reply means for its task: which JSON is the output, and the `<Workflow cache>`
//! key under which an output may be reused. Pure functions of the task, the reply and the agent's
//! signature.

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
    let mut h = Sha256::new();
    for part in [
        workflow,
        &t.id,
        &t.prompt,
        &t.output.signature(),
        &agent.signature(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}
