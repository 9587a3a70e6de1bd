//! Crash safety: a child process running a workflow is killed with SIGKILL at several points;
//! after resume every node's output exists exactly once and no finished node's work ran again.
//! A second process resuming a run that a live process drives is refused.
//!
//! The child is this test binary itself, re-executed with `SMITHERS_CHILD_ARGS` set.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::child::{append, kill9, run_as_workflow_binary, ChildEnv};

use serde::{Deserialize, Serialize};
use smithers::__private::{Column, ColumnKind};
use smithers_core::node::{Parallel, Ralph, Sequence, Task, Workflow};
use smithers_core::{Ctx, Node, Output, Ref};

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Work {
    node: String,
    n: i64,
}

impl Output for Work {
    const TABLE: &'static str = "work";
    const COLUMNS: &'static [Column] = &[
        Column {
            name: "node",
            kind: ColumnKind::Text,
            nullable: false,
            rust_type: "String",
        },
        Column {
            name: "n",
            kind: ColumnKind::Integer,
            nullable: false,
            rust_type: "i64",
        },
    ];
}

const LOOP_STEP: Ref<Work> = Ref::new("loop-step");

/// A compute task that logs its start and end to the execution log and takes a little time.
fn work(id: &str, n: i64, log: PathBuf, millis: u64) -> Node {
    let node = id.to_owned();
    Task::<Work>::new()
        .id(id)
        .run(move |t| {
            let (node, log) = (node.clone(), log.clone());
            async move {
                append(&log, &format!("start {node} {}", t.iteration()));
                tokio::time::sleep(Duration::from_millis(millis)).await;
                append(&log, &format!("end {node} {}", t.iteration()));
                Ok::<_, String>(Work { node, n })
            }
        })
        .build()
}

fn crash_workflow(log: PathBuf, millis: u64) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    move |ctx| {
        let loops_done = ctx.latest(LOOP_STEP).is_some_and(|w| w.n >= 2);
        let it = ctx.iteration() as i64;
        Workflow::new()
            .name("crash")
            .child(
                Sequence::new()
                    .child(work("first", 0, log.clone(), millis))
                    .child(
                        Parallel::new()
                            .max_concurrency(3)
                            .child((0..6).map(|i| work(&format!("p{i}"), i, log.clone(), millis)))
                            .build(),
                    )
                    .child(
                        Ralph::new()
                            .until(loops_done)
                            .max_iterations(5)
                            .child(work(LOOP_STEP.id(), it, log.clone(), millis))
                            .build(),
                    )
                    .child(work("last", 99, log.clone(), millis))
                    .build(),
            )
            .build()
    }
}

/// Child entry point: when `SMITHERS_CHILD_ARGS` is set, behave as a workflow binary.
#[test]
fn crash_child() {
    run_as_workflow_binary(crash_workflow);
}

fn env() -> ChildEnv {
    ChildEnv::new("crash_child")
}

#[test]
fn sigkill_at_several_points_then_resume_runs_each_node_to_one_output() {
    let env = env();
    // Kill points: mid-task (after a start), between tasks (after an end), inside the parallel
    // group, inside the loop.
    let points: [(&str, usize); 5] = [
        ("start", 1),
        ("end", 3),
        ("start", 6),
        ("end", 8),
        ("start", 10),
    ];
    let mut child = env.spawn("run --run-id crash-run", 40);
    let mut kills = 0;
    for (prefix, n) in points {
        env.wait_for(prefix, n, &mut child);
        kill9(&mut child);
        kills += 1;
        child = env.spawn("resume --run-id crash-run", 40);
    }
    let status = child.wait().expect("final resume");
    assert!(status.success(), "final resume failed: {status:?}");

    let c = env.conn();
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let run_status: String = c
        .query_row(
            "SELECT status FROM _smithers_runs WHERE run_id = 'crash-run'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(run_status, "finished");

    // Every node has exactly one output row per iteration.
    let mut st = c.prepare("SELECT node_id, iteration, COUNT(*) FROM work WHERE run_id = 'crash-run' GROUP BY node_id, iteration ORDER BY node_id, iteration").unwrap();
    let rows: Vec<(String, u32, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut expected: Vec<(String, u32, i64)> =
        ["first", "last", "p0", "p1", "p2", "p3", "p4", "p5"]
            .iter()
            .map(|n| (n.to_string(), 0, 1))
            .collect();
    expected.extend((0..3).map(|i| ("loop-step".to_string(), i, 1)));
    expected.sort();
    assert_eq!(rows, expected);

    // Every execution has an attempt row; only the last attempt of a node finished, so nothing
    // ran after its output was committed.
    let lines = env.log_lines();
    let mut st = c.prepare("SELECT node_id, iteration, attempt, status FROM _smithers_attempts WHERE run_id = 'crash-run' ORDER BY node_id, iteration, attempt").unwrap();
    let attempts: Vec<(String, u32, u32, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut reran = 0;
    for (node, it, _) in &expected {
        let mine: Vec<_> = attempts
            .iter()
            .filter(|a| &a.0 == node && a.1 == *it)
            .collect();
        let starts = lines
            .iter()
            .filter(|l| **l == format!("start {node} {it}"))
            .count();
        // An attempt row is committed before its body starts; a kill in between leaves an
        // abandoned attempt that never executed, never the reverse.
        assert!(
            starts >= 1 && starts <= mine.len(),
            "{starts} executions of {node}#{it} vs its attempt rows: {mine:?}"
        );
        let (last, earlier) = mine.split_last().expect("an attempt");
        assert_eq!(last.3, "finished", "{node}#{it}: {mine:?}");
        assert!(
            earlier.iter().all(|a| a.3 == "abandoned"),
            "{node}#{it}: {mine:?}"
        );
        reran += earlier.len();
    }
    // A kill can only interrupt what was in flight (at most the parallel width of 3).
    assert!(
        reran <= kills * 3,
        "{reran} re-executions for {kills} kills"
    );
}

#[test]
fn second_concurrent_resume_is_refused_naming_the_holder() {
    let env = env();
    let mut first = env.spawn("run --run-id busy", 400);
    env.wait_for("start", 1, &mut first);
    let out = env
        .command("resume --run-id busy", 40)
        .output()
        .expect("second resume");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("E_LEASE_HELD") && stderr.contains("is being driven by another process"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(":{}:", first.id())),
        "the holder (pid {}) is named: {stderr}",
        first.id()
    );
    kill9(&mut first);
    // Once the holder is dead, resume takes over at once and finishes.
    let status = env.spawn("resume --run-id busy", 1).wait().unwrap();
    assert!(status.success());
}

#[test]
fn ctrl_c_cancels_cleanly_and_resume_finishes() {
    let env = env();
    let mut child = env.spawn("run --run-id interrupted", 200);
    env.wait_for("start", 1, &mut child);
    common::child::signal(&child, libc::SIGINT);
    let status = child.wait().expect("child");
    assert_eq!(status.code(), Some(130), "exit code of a cancelled run");
    assert_db_file_alone_holds(&env, "interrupted", "cancelled");
    let c = env.conn();
    let run: String = c
        .query_row(
            "SELECT status FROM _smithers_runs WHERE run_id = 'interrupted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(run, "cancelled");
    let in_progress: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM _smithers_attempts WHERE status = 'in-progress'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(in_progress, 0, "no attempt is left in progress");
    let cancelled: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM _smithers_attempts WHERE status = 'cancelled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(cancelled >= 1);
    let status = env.spawn("resume --run-id interrupted", 1).wait().unwrap();
    assert!(status.success());
    let run: String = c
        .query_row(
            "SELECT status FROM _smithers_runs WHERE run_id = 'interrupted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(run, "finished");
}

/// After the workflow binary exited, its connection was closed: no WAL is left beside the
/// database, and a copy of the `.db` file alone shows the run with `status`.
fn assert_db_file_alone_holds(env: &ChildEnv, run_id: &str, status: &str) {
    let wal = env.db.with_file_name("child.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the WAL was checkpointed and removed: {} bytes left",
        std::fs::metadata(&wal).map_or(0, |m| m.len())
    );
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(&env.db, &copy).unwrap();
    let c = rusqlite::Connection::open(&copy).unwrap();
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let found: String = c
        .query_row(
            "SELECT status FROM _smithers_runs WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(found, status, "the copied .db alone has the last commit");
}

#[test]
fn a_finished_run_leaves_no_wal_and_the_db_file_alone_holds_it() {
    let env = env();
    let status = env.spawn("run --run-id whole", 1).wait().unwrap();
    assert!(status.success());
    assert_db_file_alone_holds(&env, "whole", "finished");
    let c = rusqlite::Connection::open(&env.db).unwrap();
    let outputs: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM work WHERE run_id = 'whole'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outputs, 11);
    drop(c);
    // An exit with an error closes the store too.
    let out = env.command("resume --run-id whole", 1).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().last(),
        Some("error [E_RUN_DONE]: run `whole` already finished; nothing to resume")
    );
    assert_db_file_alone_holds(&env, "whole", "finished");
}
