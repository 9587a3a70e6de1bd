//! The engine driving the real CLI agents (against a fake CLI that replays captured output):
//! the persisted output row, the attempt's usage, error text and retry count.

use std::path::PathBuf;
use std::sync::Arc;

mod common;

use common::chat_server;
use smithers::agents::{ClaudeCodeAgent, CodexAgent, GeminiAgent};
use smithers::prelude::*;
use smithers::SharedAgent;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::store::{Durability, RunStatus, SqliteStore, Store};

/// What the captured replies contain.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Verdict {
    summary: String,
    severity: String,
}

const VERDICT: Ref<Verdict> = Ref::new("verdict");

fn fake_cli() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smithers-agents/tests/fixtures/fake-cli.sh")
}

struct Run {
    _dir: tempfile::TempDir,
    db: PathBuf,
    run_id: String,
    status: RunStatus,
}

async fn run_with(agent: SharedAgent, retries: u32) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, Durability::Normal).unwrap());
    let engine = Engine::new(store, move |_ctx: &Ctx<()>| {
        workflow! {
            <Workflow name="agents">
                <Task id=VERDICT agent={agent.clone()} retries={retries}> "Review the change." </Task>
            </Workflow>
        }
    })
    // The fake CLI edits nothing, and the tests run inside this project's own repository.
    .with_options(EngineOptions { vcs_snapshots: false, ..EngineOptions::default() });
    let report = engine.run(()).await.unwrap();
    Run {
        _dir: dir,
        db,
        run_id: report.run_id,
        status: report.status,
    }
}

type AttemptRow = (
    u32,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<String>,
);

fn attempts(r: &Run) -> Vec<AttemptRow> {
    let c = rusqlite::Connection::open(&r.db).unwrap();
    let mut st = c
        .prepare(
            "SELECT attempt, status, error, input_tokens, output_tokens, cost_usd, session_id
             FROM _smithers_attempts WHERE run_id = ?1 ORDER BY attempt",
        )
        .unwrap();
    st.query_map([&r.run_id], |x| {
        Ok((
            x.get(0)?,
            x.get(1)?,
            x.get(2)?,
            x.get(3)?,
            x.get(4)?,
            x.get(5)?,
            x.get(6)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn verdict_rows(r: &Run) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open(&r.db).unwrap();
    let mut st = c
        .prepare("SELECT summary, severity FROM verdict WHERE run_id = ?1")
        .unwrap();
    st.query_map([&r.run_id], |x| Ok((x.get(0)?, x.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn count(r: &Run, sql: &str) -> i64 {
    rusqlite::Connection::open(&r.db)
        .unwrap()
        .query_row(sql, [&r.run_id], |x| x.get(0))
        .unwrap()
}

#[tokio::test]
async fn each_cli_agent_persists_its_output_and_usage() {
    let agents: Vec<(&str, SharedAgent)> = vec![
        (
            "claude",
            Arc::new(
                ClaudeCodeAgent::new()
                    .binary(fake_cli())
                    .env("FAKE_SCENARIO", "claude/ok"),
            ),
        ),
        (
            "codex",
            Arc::new(
                CodexAgent::new()
                    .binary(fake_cli())
                    .env("FAKE_SCENARIO", "codex/ok"),
            ),
        ),
        (
            "gemini",
            Arc::new(
                GeminiAgent::new()
                    .binary(fake_cli())
                    .env("FAKE_SCENARIO", "gemini/ok"),
            ),
        ),
    ];
    for (name, agent) in agents {
        let r = run_with(agent, 0).await;
        assert_eq!(r.status, RunStatus::Finished, "{name}");
        assert_eq!(
            verdict_rows(&r),
            [("ok".to_owned(), "low".to_owned())],
            "{name}"
        );
        let a = attempts(&r);
        assert_eq!(a.len(), 1, "{name}: {a:?}");
        assert_eq!(a[0].1, "finished", "{name}");
        assert!(
            a[0].3.is_some_and(|t| t > 0) && a[0].4.is_some_and(|t| t > 0),
            "{name} token usage: {a:?}"
        );
        assert!(a[0].6.is_some(), "{name} session id: {a:?}");
        assert_eq!(
            count(
                &r,
                "SELECT COUNT(*) FROM _smithers_transcripts WHERE run_id = ?1"
            ),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn claude_usage_and_cost_land_on_the_attempt_row() {
    let agent = Arc::new(
        ClaudeCodeAgent::new()
            .binary(fake_cli())
            .env("FAKE_SCENARIO", "claude/ok"),
    );
    let r = run_with(agent, 0).await;
    let a = attempts(&r);
    assert_eq!(
        (a[0].3, a[0].4, a[0].5),
        (Some(1234), Some(56), Some(0.0076235))
    );
}

#[tokio::test]
async fn error_500_then_success_is_retried_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Arc::new(
        ClaudeCodeAgent::new()
            .binary(fake_cli())
            .env("FAKE_SCENARIO", "claude/ok")
            .env(
                "FAKE_COUNTER",
                dir.path().join("count").display().to_string(),
            )
            .env("FAKE_FAIL_FIRST", "1")
            .env("FAKE_FAIL_SCENARIO", "claude/error500"),
    );
    let r = run_with(agent, 2).await;
    assert_eq!(r.status, RunStatus::Finished);
    let a = attempts(&r);
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0].1, "failed");
    assert!(
        a[0].2.as_deref().is_some_and(|e| e.contains("500")),
        "{a:?}"
    );
    assert_eq!(a[1].1, "finished");
    assert_eq!(verdict_rows(&r).len(), 1);
    assert_eq!(
        count(&r, "SELECT attempts FROM _smithers_nodes WHERE run_id = ?1"),
        2
    );
    assert_eq!(
        count(
            &r,
            "SELECT COUNT(*) FROM _smithers_events WHERE run_id = ?1 AND kind = 'node_retrying'"
        ),
        1
    );
}

#[tokio::test]
async fn a_reply_without_json_exhausts_retries_and_fails_the_node_clearly() {
    let agent = Arc::new(
        ClaudeCodeAgent::new()
            .binary(fake_cli())
            .env("FAKE_SCENARIO", "claude/not-json"),
    );
    let r = run_with(agent, 1).await;
    assert_eq!(r.status, RunStatus::Failed);
    let a = attempts(&r);
    assert_eq!(
        a.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
        ["failed", "failed"]
    );
    assert!(
        a[1].2
            .as_deref()
            .is_some_and(|e| e.contains("no JSON object for `Verdict`")),
        "{a:?}"
    );
    assert!(verdict_rows(&r).is_empty());
    let ok: String = rusqlite::Connection::open(&r.db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |x| x.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[tokio::test]
async fn http_agent_invalid_output_is_repaired_by_the_engine_retry() {
    use smithers::agents::OpenAiAgent;
    let (url, bodies) = chat_server(vec![
        "I think it is fine, severity low.",
        "```json\n{\"summary\": \"fine\", \"severity\": \"low\"}\n```",
    ])
    .await;
    let agent = Arc::new(OpenAiAgent::new("local").base_url(url).no_api_key());
    let r = run_with(agent, 1).await;
    assert_eq!(r.status, RunStatus::Finished);
    assert_eq!(verdict_rows(&r), [("fine".to_owned(), "low".to_owned())]);
    let a = attempts(&r);
    assert_eq!(
        a.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
        ["failed", "finished"]
    );
    assert_eq!((a[1].3, a[1].4), (Some(10), Some(5)));
    let bodies = bodies.lock().unwrap();
    let second_prompt = bodies[1]["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        second_prompt.contains(smithers_core::prompt::PREVIOUS_ERROR_HEADING),
        "{second_prompt}"
    );
    assert!(
        second_prompt.contains("no JSON object for `Verdict`"),
        "{second_prompt}"
    );
}
