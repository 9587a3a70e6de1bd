//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

pub mod child;

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

/// Runs `program` (git or jj) in `dir` as the user `u <u@u>`; a failure fails the test, naming
/// the command and its stderr. Returns its stdout, trimmed.
pub fn vcs(program: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "u")
        .env("GIT_AUTHOR_EMAIL", "u@u")
        .env("GIT_COMMITTER_NAME", "u")
        .env("GIT_COMMITTER_EMAIL", "u@u")
        .env("JJ_USER", "u")
        .env("JJ_EMAIL", "u@u")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// [`vcs`] with git.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    vcs(std::path::Path::new("git"), dir, args)
}

/// Makes `dir` a git repository on branch `main` whose one commit, `init`, holds `files`
/// (name, text).
pub fn init_repo(dir: &std::path::Path, files: &[(&str, &str)]) {
    git(dir, &["init", "-q", "-b", "main"]);
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "init"]);
}

/// jj, or `None` after saying `skipped:` (a failure under `SMITHERS_REQUIRE_EXTERNAL=1`).
pub fn jj_or_skip(test: &str) -> Option<std::path::PathBuf> {
    if let Some(p) = smithers_core::vcs::jj_program().filter(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok()
    }) {
        return Some(p);
    }
    smithers_core::store::conformance::external_missing(
        test,
        "jj is not installed (run scripts/install-jj.sh and set SMITHERS_JJ, or put jj on PATH)",
    );
    None
}
