//! Agents of smithers-rs: the Claude Code, Codex and Gemini CLIs, the Anthropic Messages and
//! OpenAI-compatible HTTP APIs, and a scripted agent for tests.
//!
//! Every agent implements [`smithers_core::Agent`]. The engine assembles the prompt (with
//! [`smithers_core::prompt::assemble`]) and validates the reply; agents run the tool, stream its
//! progress, and report text, structured JSON, usage, session id and classified errors
//! (retryable or terminal).
//!
//! CLI agents share one process runner: stdin is `/dev/null`, the child runs in its own process
//! group, and our timeout or the request's cancellation kills the whole group.

// `AgentError` is the `Agent` trait's error type, returned by value throughout.
#![allow(clippy::result_large_err)]

mod anthropic;
mod claude;
mod cli;
mod codex;
mod gemini;
mod http;
mod openai;
mod process;
mod schema;
mod scripted;
mod stream;

pub use anthropic::AnthropicAgent;
pub use claude::{ClaudeCodeAgent, ClaudePermissionMode};
pub use codex::{CodexAgent, CodexSandbox};
pub use gemini::{GeminiAgent, GeminiApprovalMode};
pub use openai::{OpenAiAgent, OpenAiApi};
pub use scripted::ScriptedAgent;
