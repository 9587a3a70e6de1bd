//! Process hygiene of the CLI agents: the whole process tree is gone after a timeout, a cancel,
//! a dropped future, or a leader that exits leaving children behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{alive, assert_mentions, fake_cli, request, stall, Progress};
use smithers_agents::{ClaudeCodeAgent, CodexAgent};
use smithers_core::Agent;

/// The pids of the fake CLI and of its `sleep` grandchild, once it has written them.
async fn pids(file: &Path) -> (i32, i32) {
    for _ in 0..200 {
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
    // SIGKILL is delivered asynchronously; the grandchild's new parent reaps it.
    for _ in 0..100 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} is still alive");
}

fn stalling(dir: &Path, mode: &str) -> ClaudeCodeAgent {
    ClaudeCodeAgent::new()
        .binary(fake_cli())
        .env("FAKE_SCENARIO", "claude/stall")
        .envs(stall(dir, mode))
}

#[tokio::test]
async fn timed_out_cli_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request("Review the change");
    req.timeout = Some(Duration::from_millis(600));
    let e = stalling(dir.path(), "1").generate(req).await.unwrap_err();
    assert_mentions(&e, "timed out");
    let (script, sleep) = pids(&dir.path().join("pids")).await;
    // The leader is reaped by us (no zombie), the grandchild killed with the group.
    assert!(
        !Path::new(&format!("/proc/{script}")).exists(),
        "leader {script} not reaped"
    );
    assert_gone(sleep).await;
}

#[tokio::test]
async fn cancel_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let req = request("Review the change");
    let cancel = req.cancel.clone();
    let pid_file = dir.path().join("pids");
    let agent = stalling(dir.path(), "1");
    let task = tokio::spawn(async move { agent.generate(req).await });
    let (script, sleep) = pids(&pid_file).await;
    assert!(alive(script) && alive(sleep));
    cancel.cancel();
    let e = task.await.unwrap().unwrap_err();
    assert_mentions(&e, "was cancelled");
    assert_gone(script).await;
    assert_gone(sleep).await;
}

#[tokio::test]
async fn dropping_the_future_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let agent = stalling(dir.path(), "1");
    let task = tokio::spawn(async move { agent.generate(request("Review the change")).await });
    let (script, sleep) = pids(&pid_file).await;
    task.abort();
    let _ = task.await;
    assert_gone(script).await;
    assert_gone(sleep).await;
}

#[tokio::test]
async fn leader_exit_does_not_wait_for_children_holding_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let agent = stalling(dir.path(), "orphan").env("FAKE_SCENARIO", "claude/ok");
    let started = Instant::now();
    let r = agent.generate(request("Review the change")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.text, r#"{"summary":"ok","severity":"low"}"#);
    let (_, sleep) = pids(&dir.path().join("pids")).await;
    assert_gone(sleep).await;
}

#[tokio::test]
async fn stderr_lines_reach_progress_and_errors() {
    let progress = Progress::default();
    let mut req = request("Review the change");
    req.progress = progress.sink();
    let agent = CodexAgent::new()
        .binary(fake_cli())
        .env("FAKE_SCENARIO", "codex/config-error");
    let e = agent.generate(req).await.unwrap_err();
    assert_eq!(
        progress.lines("stderr"),
        ["Error loading config.toml: `wire_api = \"chat\"` is no longer supported"]
    );
    assert_mentions(&e, "stderr: Error loading config.toml");
}

#[tokio::test]
async fn missing_working_directory_is_reported_as_such() {
    let agent = ClaudeCodeAgent::new()
        .binary(fake_cli())
        .cwd("/nonexistent/repo");
    let e = agent.generate(request("x")).await.unwrap_err();
    assert!(!e.error.retryable);
    assert_mentions(&e, "working directory `/nonexistent/repo` does not exist");
}
