//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use smithers::{Agent, AgentError, AgentRequest, AgentResponse};

/// An agent that is never asked anything: trees are only rendered in these tests.
pub struct NamedAgent(pub &'static str);

#[async_trait::async_trait]
impl Agent for NamedAgent {
    fn name(&self) -> &str {
        self.0
    }

    async fn generate(&self, _request: AgentRequest) -> Result<AgentResponse, AgentError> {
        Err(AgentError::terminal("NamedAgent does not answer"))
    }
}

/// A Claude-like agent for trees.
pub fn claude() -> NamedAgent {
    NamedAgent("claude")
}

/// A Codex-like agent for trees.
pub fn codex() -> NamedAgent {
    NamedAgent("codex")
}
