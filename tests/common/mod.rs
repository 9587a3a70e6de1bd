//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

pub mod child;
#[path = "../../smithers-core/tests/common/repo.rs"]
mod repo;
#[allow(unused_imports)] // not every test binary uses the repository helpers
pub use repo::*;

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

/// A one-route HTTP server on 127.0.0.1 answering each request with the next Chat Completions
/// reply of `replies`, and keeping the request bodies.
pub async fn chat_server(
    replies: Vec<&'static str>,
) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let seen = bodies.clone();
    tokio::spawn(async move {
        for reply in replies {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read the head, then as much body as Content-Length says.
            let body = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                }
            };
            seen.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let payload = serde_json::json!({
                "id": "x", "object": "chat.completion", "model": "local",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            })
            .to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{payload}",
                payload.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    (url, bodies)
}
