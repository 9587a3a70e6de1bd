//! Helpers shared by the agent tests: requests, progress capture, the fake CLI script, and a tiny
//! scripted HTTP server on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use smithers_agents::{AnthropicAgent, OpenAiAgent, OpenAiApi};
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, ProgressSink, Usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The output schema used by the tests (the captured replies are `{"summary":"ok","severity":"low"}`).
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"summary": {"type": "string"}, "severity": {"type": "string"}},
        "required": ["summary", "severity"]
    })
}

/// A request with the test schema and a generous timeout.
pub fn request(prompt: &str) -> AgentRequest {
    AgentRequest {
        prompt: prompt.to_owned(),
        task_prompt: prompt.to_owned(),
        output_schema: schema(),
        output_type: "Review".to_owned(),
        run_id: "run-1".to_owned(),
        node_id: "review".to_owned(),
        iteration: 0,
        attempt: 1,
        timeout: Some(Duration::from_secs(30)),
        cancel: CancellationToken::new(),
        progress: ProgressSink::discard(),
    }
}

/// Runs `agent` on `request("Review the change")` and expects a response.
pub async fn ok(agent: &impl Agent) -> AgentResponse {
    match agent.generate(request("Review the change")).await {
        Ok(r) => r,
        Err(e) => panic!(
            "expected success, got {e} (retryable: {})",
            e.error.retryable
        ),
    }
}

/// Runs `agent` on `request("Review the change")` and expects an error.
pub async fn err(agent: &impl Agent) -> AgentError {
    match agent.generate(request("Review the change")).await {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e,
    }
}

/// Asserts that the error message mentions `needle`, showing the message when it does not.
#[track_caller]
pub fn assert_mentions(e: &AgentError, needle: &str) {
    assert!(
        e.error.message.contains(needle),
        "{:?} not in: {}",
        needle,
        e.error.message
    );
}

/// Input, output and cache-read tokens: what the OpenAI tests compare.
pub fn tokens(usage: &Usage) -> (Option<u64>, Option<u64>, Option<u64>) {
    (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
    )
}

/// An Anthropic agent talking to `server`, with a key and short backoff.
pub fn anthropic(server: &FakeHttp) -> AnthropicAgent {
    AnthropicAgent::new("claude-test")
        .base_url(&server.base)
        .api_key("sk-test")
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// An OpenAI-compatible agent on `api` talking to `server`, with a key and short backoff.
pub fn openai(server: &FakeHttp, api: OpenAiApi) -> OpenAiAgent {
    OpenAiAgent::new("gpt-test")
        .api(api)
        .base_url(format!("{}/v1", server.base))
        .api_key("sk-test")
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// Progress lines an agent reported, as `(stream, line)`.
#[derive(Clone, Default)]
pub struct Progress(Arc<Mutex<Vec<(String, String)>>>);

impl Progress {
    pub fn sink(&self) -> ProgressSink {
        let lines = self.0.clone();
        ProgressSink::new(move |stream, line| {
            lines
                .lock()
                .unwrap()
                .push((stream.to_owned(), line.to_owned()));
        })
    }

    pub fn lines(&self, stream: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

/// The fake CLI script that replays captured output.
pub fn fake_cli() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-cli.sh")
}

/// Environment for the fake CLI: the first `n` runs replay `scenario` (e.g. `claude/error500`)
/// instead of `FAKE_SCENARIO`, counted in a file in `dir`.
pub fn fail_first(dir: &Path, n: u32, scenario: &str) -> Vec<(&'static str, OsString)> {
    vec![
        ("FAKE_COUNTER", dir.join("count").into()),
        ("FAKE_FAIL_FIRST", n.to_string().into()),
        ("FAKE_FAIL_SCENARIO", scenario.into()),
    ]
}

/// Environment for the fake CLI: after its output it stalls on a `sleep` grandchild (`mode` 1),
/// or exits leaving the grandchild holding its stdout (`mode` `orphan`); the pids go to
/// `dir/pids`.
pub fn stall(dir: &Path, mode: &str) -> Vec<(&'static str, OsString)> {
    vec![
        ("FAKE_STALL", mode.into()),
        ("FAKE_PID_FILE", dir.join("pids").into()),
    ]
}

/// The arguments the fake CLI received (written NUL-separated to `FAKE_ARGS_FILE`).
pub fn read_args(path: &std::path::Path) -> Vec<String> {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    raw.split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a process is still alive (a zombie counts as dead: it runs no code and holds no
/// pipes; a grandchild's zombie is its new parent's to reap).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

/// One scripted HTTP reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    /// A streamed body: written piece by piece, without a content-length.
    pub chunks: Option<Vec<String>>,
    /// Silence before the chunk at this index (a stalled stream).
    pub stall: Option<(usize, Duration)>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
            chunks: None,
            stall: None,
        }
    }

    /// A 200 `text/event-stream` reply, one chunk per event: `(Some(name), data)` is written as
    /// `event: name` + `data: <json>`, and `(None, Value::Null)` as `data: [DONE]`.
    pub fn sse(events: Vec<(Option<&str>, Value)>) -> Self {
        let chunks = events
            .into_iter()
            .map(|(name, data)| {
                let event = name.map(|n| format!("event: {n}\n")).unwrap_or_default();
                let data = if data.is_null() {
                    "[DONE]".to_owned()
                } else {
                    data.to_string()
                };
                format!("{event}data: {data}\n\n")
            })
            .collect();
        Reply {
            status: 200,
            headers: vec![("content-type".to_owned(), "text/event-stream".to_owned())],
            body: String::new(),
            delay: Duration::ZERO,
            chunks: Some(chunks),
            stall: None,
        }
    }

    /// Goes silent for `pause` before chunk `index`.
    pub fn stall_before(mut self, index: usize, pause: Duration) -> Self {
        self.stall = Some((index, pause));
        self
    }

    pub fn raw(status: u16, body: &str) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
            chunks: None,
            stall: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A hand-rolled HTTP/1.1 server on 127.0.0.1 answering with scripted replies in order (the last
/// one repeats), one request per connection.
pub struct FakeHttp {
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeHttp {
    pub async fn start(replies: Vec<Reply>) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(replies);
        let next = Arc::new(AtomicUsize::new(0));
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (replies, next, recorded) = (replies.clone(), next.clone(), recorded.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(socket).await else {
                        return;
                    };
                    let (mut socket, request) = request;
                    recorded.lock().unwrap().push(request);
                    let i = next.fetch_add(1, Ordering::SeqCst).min(replies.len() - 1);
                    let reply = &replies[i];
                    tokio::time::sleep(reply.delay).await;
                    if let Some(chunks) = &reply.chunks {
                        write_stream(&mut socket, reply, chunks).await;
                        return;
                    }
                    let mut head = format!(
                        "HTTP/1.1 {} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(reply.body.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeHttp { base, requests }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// A streamed reply: the body is written chunk by chunk and ends when the connection closes.
async fn write_stream(socket: &mut TcpStream, reply: &Reply, chunks: &[String]) {
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nconnection: close\r\n",
        reply.status
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if let Some((_, pause)) = reply.stall.filter(|(at, _)| *at == i) {
            tokio::time::sleep(pause).await;
        }
        if socket.write_all(chunk.as_bytes()).await.is_err() || socket.flush().await.is_err() {
            return;
        }
    }
    let _ = socket.shutdown().await;
}

async fn read_request(mut socket: TcpStream) -> Option<(TcpStream, Recorded)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Some((
        socket,
        Recorded {
            method,
            path,
            headers,
            body,
        },
    ))
}

/// Whether an external tool the test needs is missing. When it is, prints
/// `skipped: <test>: <why>` to stderr (not captured by the harness) and the test should return;
/// with `SMITHERS_REQUIRE_EXTERNAL=1` (CI) a missing tool fails the test instead.
pub fn missing_tool(test: &str, tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return false;
    }
    let why = format!("`{tool}` is not on PATH");
    if std::env::var("SMITHERS_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("{test}: {why} (SMITHERS_REQUIRE_EXTERNAL=1)");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
    true
}

/// The fake CLI that writes a multi-megabyte reply non-blockingly and exits at once, as Node
/// and Bun do (`tests/fixtures/hasty-writer.py`).
pub fn hasty_writer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hasty-writer.py")
}
