//! What an agent attempt leaves behind when it times out, is cancelled or is retried, with the
//! engine driving fake CLI executables and a 127.0.0.1 server: the attempt rows, the prompts the
//! retries sent, and the process tree afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[allow(unused_imports)]
#[path = "../smithers-agents/tests/common/mod.rs"]
mod fake;

use fake::{FakeHttp, Reply};
use serde_json::json;
use smithers::agents::{ClaudeCodeAgent, OpenAiAgent};
use smithers::prelude::*;
use smithers::SharedAgent;
use smithers_core::engine::{CancellationToken, Engine, EngineOptions};
use smithers_core::store::{Durability, RunStatus, SqliteStore, Store};

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Verdict {
    summary: String,
    severity: String,
}

const VERDICT: Ref<Verdict> = Ref::new("verdict");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smithers-agents/tests/fixtures")
}

/// A fake `claude` that prints its `init` line (with a session id) and then stalls on a `sleep`
/// grandchild, writing both pids to `dir/pids`.
fn stalling_claude(dir: &Path) -> ClaudeCodeAgent {
    ClaudeCodeAgent::new()
        .binary(fixtures().join("fake-cli.sh"))
        .env("FAKE_SCENARIO", "claude/stall")
        .env("FAKE_STALL", "1")
        .env("FAKE_PID_FILE", dir.join("pids"))
}

const STALL_SESSION: &str = "70a1c709-a759-4725-b9f3-0182f290c4fc";

struct Setup {
    dir: tempfile::TempDir,
    db: PathBuf,
    engine: Engine<()>,
}

fn setup(
    agent: SharedAgent,
    retries: u32,
    timeout: Option<Duration>,
    cancel: CancellationToken,
) -> Setup {
    setup_with(agent, retries, timeout, cancel, None)
}

fn setup_with(
    agent: SharedAgent,
    retries: u32,
    timeout: Option<Duration>,
    cancel: CancellationToken,
    policy: Option<RetryPolicy>,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, Durability::Normal).unwrap());
    let engine = Engine::new(store, move |_ctx: &Ctx<()>| {
        let mut task = Task::<Verdict>::new()
            .id(VERDICT)
            .agent(agent.clone())
            .retries(retries)
            .prompt("Review the change.");
        if let Some(t) = timeout {
            task = task.timeout(t);
        }
        if let Some(p) = &policy {
            task = task.retry_policy(p.clone());
        }
        Workflow::new().name("attempts").child(task.build()).build()
    })
    .with_options(EngineOptions {
        vcs_snapshots: false,
        cancel,
        ..EngineOptions::default()
    });
    Setup { dir, db, engine }
}

/// An attempt row: (attempt, status, error, duration_ms, session_id, exit_code).
type Row = (
    u32,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i32>,
);

fn rows(db: &Path) -> Vec<Row> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT attempt, status, error, duration_ms, session_id, exit_code
             FROM _smithers_attempts ORDER BY attempt",
        )
        .unwrap();
    st.query_map([], |x| {
        Ok((
            x.get(0)?,
            x.get(1)?,
            x.get(2)?,
            x.get(3)?,
            x.get(4)?,
            x.get(5)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn transcript(db: &Path, attempt: u32) -> Option<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT transcript FROM _smithers_transcripts WHERE attempt = ?1",
        [attempt],
        |x| x.get(0),
    )
    .ok()
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

async fn pids(file: &Path) -> (i32, i32) {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(file) {
            let mut it = text.split_whitespace().filter_map(|p| p.parse().ok());
            if let (Some(a), Some(b)) = (it.next(), it.next()) {
                return (a, b);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the fake CLI never wrote {}", file.display());
}

async fn assert_gone(pid: i32) {
    for _ in 0..250 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} is still alive");
}

#[tokio::test]
async fn a_timed_out_attempt_keeps_the_agents_message_session_exit_status_and_transcript() {
    let scratch = tempfile::tempdir().unwrap();
    let agent = Arc::new(stalling_claude(scratch.path()));
    let s = setup(
        agent,
        0,
        Some(Duration::from_millis(700)),
        CancellationToken::new(),
    );
    let report = s.engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let rows = rows(&s.db);
    assert_eq!(rows.len(), 1);
    let (attempt, status, error, duration, session, exit) = rows[0].clone();
    assert_eq!((attempt, status.as_str()), (1, "failed"));
    let error = error.unwrap_or_default();
    // The agent's own deadline fired (the engine's comes later) and said what it saw.
    assert!(
        error.contains("timed out after 0.7s; its process group was killed; last output: {\"type\":\"system\",\"subtype\":\"init\""),
        "{error}"
    );
    assert!(duration.unwrap_or(0) >= 700, "duration {duration:?}");
    assert_eq!(session.as_deref(), Some(STALL_SESSION));
    assert_eq!(exit, Some(137), "128 + SIGKILL");
    assert!(transcript(&s.db, 1)
        .unwrap_or_default()
        .contains(STALL_SESSION));
    let (script, sleep) = pids(&scratch.path().join("pids")).await;
    assert_gone(script).await;
    assert_gone(sleep).await;
    drop(s.dir);
}

#[tokio::test]
async fn a_cancelled_attempt_row_has_its_real_duration_transcript_and_session() {
    let scratch = tempfile::tempdir().unwrap();
    let agent = Arc::new(stalling_claude(scratch.path()));
    let cancel = CancellationToken::new();
    let s = setup(agent, 2, None, cancel.clone());
    let pid_file = scratch.path().join("pids");
    let run = async {
        let (script, sleep) = pids(&pid_file).await;
        assert!(alive(script) && alive(sleep));
        tokio::time::sleep(Duration::from_millis(400)).await;
        cancel.cancel();
        (script, sleep)
    };
    let (report, (script, sleep)) = tokio::join!(s.engine.run(()), run);
    assert_eq!(report.unwrap().status, RunStatus::Cancelled);
    let rows = rows(&s.db);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (_, status, error, duration, session, exit) = rows[0].clone();
    assert_eq!(status, "cancelled");
    let error = error.unwrap_or_default();
    assert!(
        error.starts_with("the run was cancelled; `")
            && error.contains("` was cancelled; its process group was killed"),
        "{error}"
    );
    assert!(duration.unwrap_or(0) >= 400, "duration {duration:?}");
    assert_eq!(session.as_deref(), Some(STALL_SESSION));
    assert_eq!(exit, Some(137));
    assert!(transcript(&s.db, 1)
        .unwrap_or_default()
        .contains("\"subtype\":\"init\""));
    assert_gone(script).await;
    assert_gone(sleep).await;
}

/// A Chat Completions reply with `content`.
fn chat(content: &str) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "x", "object": "chat.completion", "model": "local",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }),
    )
}

/// The user prompt of each Chat Completions request the server received.
fn prompts(server: &FakeHttp) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| {
            let body = r.json();
            body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// One HTTP call per engine attempt, so the engine sees each failure.
fn single_shot(server: &FakeHttp) -> SharedAgent {
    Arc::new(
        OpenAiAgent::new("gpt-test")
            .base_url(format!("{}/v1", server.base))
            .api_key("sk-test")
            .max_attempts(1),
    )
}

#[tokio::test]
async fn a_transport_error_retries_the_original_prompt_and_an_invalid_reply_is_quoted_back() {
    let server = FakeHttp::start(vec![
        Reply::json(500, json!({"error": {"message": "upstream exploded"}})),
        chat("I think it is fine, severity low."),
        chat("```json\n{\"summary\": \"fine\", \"severity\": \"low\"}\n```"),
    ])
    .await;
    let s = setup_with(
        single_shot(&server),
        2,
        None,
        CancellationToken::new(),
        Some(RetryPolicy::immediate()),
    );
    let report = s.engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished);
    let rows = rows(&s.db);
    let statuses: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(statuses, ["failed", "failed", "finished"]);
    assert!(rows[0]
        .2
        .as_deref()
        .unwrap_or_default()
        .contains("HTTP 500: upstream exploded"));
    let p = prompts(&server);
    assert_eq!(p.len(), 3);
    assert_eq!(
        p[1], p[0],
        "after an HTTP 500 the original prompt is sent again"
    );
    assert!(!p[1].contains(smithers_core::prompt::PREVIOUS_ERROR_HEADING));
    assert!(
        !p[1].contains("upstream exploded"),
        "the transport error is not fed back"
    );
    assert!(
        p[2].starts_with(&p[0]),
        "the retry after an invalid reply extends the original"
    );
    let tail = &p[2][p[0].len()..];
    assert_eq!(
        tail,
        "\n## YOUR PREVIOUS REPLY WAS REJECTED\n\nYour previous reply was:\n\n````text\n\
         I think it is fine, severity low.\n````\n\nIt did not match the schema: node `verdict`: \
         the agent's reply has no JSON object for `Verdict` (reply began: \"I think it is fine, \
         severity low.\")\n\nFix this and reply again with a JSON object that matches the schema.\n"
    );
}

#[tokio::test]
async fn a_rate_limited_attempt_waits_the_reset_the_server_gave_before_the_next() {
    let server = FakeHttp::start(vec![
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "1"),
        chat("{\"summary\": \"fine\", \"severity\": \"low\"}"),
    ])
    .await;
    // The task's own policy would retry at once: the server's reset wins.
    let s = setup_with(
        single_shot(&server),
        1,
        None,
        CancellationToken::new(),
        Some(RetryPolicy::immediate()),
    );
    let started = std::time::Instant::now();
    let report = s.engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let c = rusqlite::Connection::open(&s.db).unwrap();
    let retrying: String = c
        .query_row(
            "SELECT payload FROM _smithers_events WHERE kind = 'node_retrying'",
            [],
            |x| x.get(0),
        )
        .unwrap();
    assert!(
        retrying.contains("HTTP 429: slow down; it will be tried again in 1.0s (attempt 2 of 2)"),
        "{retrying}"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn backoff_grows_between_attempts_and_a_terminal_error_is_not_retried() {
    let server = FakeHttp::start(vec![
        Reply::json(503, json!({"error": {"message": "busy"}})),
        Reply::json(503, json!({"error": {"message": "busy"}})),
        Reply::json(401, json!({"error": {"message": "bad key"}})),
    ])
    .await;
    let policy = RetryPolicy::exponential(Duration::from_millis(300)).jitter(0.0);
    let s = setup_with(
        single_shot(&server),
        5,
        None,
        CancellationToken::new(),
        Some(policy),
    );
    let started = std::time::Instant::now();
    let report = s.engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    // 0.3 s then 0.6 s of backoff; the 401 ends it although retries are left.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let rows = rows(&s.db);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[2]
        .2
        .as_deref()
        .unwrap_or_default()
        .contains("rejected the API key"));
    let c = rusqlite::Connection::open(&s.db).unwrap();
    let mut st = c
        .prepare("SELECT payload FROM _smithers_events WHERE kind = 'node_retrying' ORDER BY seq")
        .unwrap();
    let events: Vec<String> = st
        .query_map([], |x| x.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 2);
    assert!(
        events[0].contains("tried again in 0.3s (attempt 2 of 6)"),
        "{}",
        events[0]
    );
    assert!(
        events[1].contains("tried again in 0.6s (attempt 3 of 6)"),
        "{}",
        events[1]
    );
}

#[tokio::test]
async fn a_fallback_chain_asks_the_next_agent_only_when_the_first_failed_for_its_own_reasons() {
    use smithers::agents::GeminiAgent;
    let scratch = tempfile::tempdir().unwrap();
    let counter = scratch.path().join("gemini-runs");
    let gemini: SharedAgent = Arc::new(
        GeminiAgent::new()
            .binary(fixtures().join("fake-cli.sh"))
            .env("FAKE_SCENARIO", "gemini/ok")
            .env("FAKE_COUNTER", &counter),
    );
    // A missing binary is not the reply's fault: the next agent answers.
    let missing: SharedAgent = Arc::new(ClaudeCodeAgent::new().binary("/nonexistent/claude"));
    let chain = smithers::IntoAgent::into_agent(vec![missing, gemini.clone()]);
    let s = setup(chain, 0, None, CancellationToken::new());
    let report = s.engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "1");
    let c = rusqlite::Connection::open(&s.db).unwrap();
    let agent: String = c
        .query_row("SELECT agent FROM _smithers_attempts", [], |x| x.get(0))
        .unwrap();
    assert_eq!(agent, "claude-code|gemini");
    let said: String = c
        .query_row(
            "SELECT payload FROM _smithers_events WHERE kind = 'node_output' AND payload LIKE '%trying the next agent%'",
            [],
            |x| x.get(0),
        )
        .unwrap();
    assert!(
        said.contains("claude-code failed (agent CLI `/nonexistent/claude` was not found"),
        "{said}"
    );

    // An invalid reply is the reply's fault: retried from the first agent, never passed on.
    std::fs::remove_file(&counter).unwrap();
    let prose: SharedAgent = Arc::new(
        ClaudeCodeAgent::new()
            .binary(fixtures().join("fake-cli.sh"))
            .env("FAKE_SCENARIO", "claude/not-json"),
    );
    let chain = smithers::IntoAgent::into_agent(vec![prose, gemini]);
    let s = setup_with(
        chain,
        1,
        None,
        CancellationToken::new(),
        Some(RetryPolicy::immediate()),
    );
    let report = s.engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(rows(&s.db).len(), 2);
    assert!(!counter.exists(), "the second agent was never asked");
}

#[tokio::test]
async fn a_cli_rate_limited_then_ok_is_retried_after_the_default_backoff() {
    use smithers::agents::CodexAgent;
    let scratch = tempfile::tempdir().unwrap();
    // The first run prints what Codex 0.169 printed on a 429 (captured by scripts/real-clis.sh).
    let codex: SharedAgent = Arc::new(
        CodexAgent::new()
            .binary(fixtures().join("fake-cli.sh"))
            .env("FAKE_SCENARIO", "codex/ok")
            .env("FAKE_COUNTER", scratch.path().join("count"))
            .env("FAKE_FAIL_FIRST", "1")
            .env("FAKE_FAIL_SCENARIO", "codex/error429"),
    );
    // No policy on the task: the engine's default for agent tasks (1 s ± 20 %, doubling).
    let s = setup(codex, 2, None, CancellationToken::new());
    let started = std::time::Instant::now();
    let report = s.engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let rows = rows(&s.db);
    let statuses: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(statuses, ["failed", "finished"]);
    assert_eq!(
        rows[0].2.as_deref(),
        Some("codex turn failed: exceeded retry limit, last status: 429 Too Many Requests")
    );
    let c = rusqlite::Connection::open(&s.db).unwrap();
    let retrying: String = c
        .query_row(
            "SELECT payload FROM _smithers_events WHERE kind = 'node_retrying'",
            [],
            |x| x.get(0),
        )
        .unwrap();
    assert!(
        retrying.contains("; it will be tried again in "),
        "{retrying}"
    );
    assert!(retrying.contains("s (attempt 2 of 3)"), "{retrying}");
}
