//! Crash safety: a child process running a workflow is killed with SIGKILL at several points;
//! after resume every node's output exists exactly once and no finished node's work ran again.
//! A second process resuming a run that a live process drives is refused.
//!
//! The child is this test binary itself, re-executed with `SMITHERS_CRASH_CHILD` set.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smithers::__private::{Column, ColumnKind};
use smithers_core::node::{Parallel, Ralph, Sequence, Task, Workflow};
use smithers_core::{Ctx, LoopRef, Node, Output, Ref};

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

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    writeln!(f, "{line}").expect("write log");
    f.sync_data().expect("sync log");
}

fn crash_workflow(log: PathBuf, millis: u64) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    move |ctx| {
        let loops_done = ctx.latest(LOOP_STEP).is_some_and(|w| w.n >= 2);
        let it = ctx.iteration(LoopRef::DEFAULT) as i64;
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

/// Child entry point: when `SMITHERS_CRASH_CHILD` is set, behave as a workflow binary.
#[test]
fn crash_child() {
    let Ok(args) = std::env::var("SMITHERS_CRASH_CHILD") else {
        return;
    };
    let log = PathBuf::from(std::env::var("SMITHERS_CRASH_LOG").expect("log path"));
    let millis: u64 =
        std::env::var("SMITHERS_CRASH_MILLIS").map_or(40, |m| m.parse().expect("millis"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let argv = std::iter::once("crash".to_owned()).chain(args.split(' ').map(str::to_owned));
    let code = rt.block_on(smithers::cli::main_from(argv, crash_workflow(log, millis)));
    // `ExitCode` cannot be read back: map the codes the CLI uses.
    let raw = [0u8, 2, 3, 130]
        .into_iter()
        .find(|c| code == std::process::ExitCode::from(*c))
        .unwrap_or(1);
    std::process::exit(i32::from(raw));
}

struct Env {
    _dir: tempfile::TempDir,
    db: PathBuf,
    log: PathBuf,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Env {
            db: dir.path().join("crash.db"),
            log: dir.path().join("exec.log"),
            _dir: dir,
        }
    }

    fn spawn(&self, args: &str, millis: u64) -> Child {
        Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(
                "SMITHERS_CRASH_CHILD",
                format!("--quiet --db {} {args}", self.db.display()),
            )
            .env("SMITHERS_CRASH_LOG", &self.log)
            .env("SMITHERS_CRASH_MILLIS", millis.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child")
    }

    fn log_lines(&self) -> Vec<String> {
        match std::fs::File::open(&self.log) {
            Ok(f) => std::io::BufReader::new(f)
                .lines()
                .map(Result::unwrap)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until the log has at least `n` lines starting with `prefix`.
    fn wait_for(&self, prefix: &str, n: usize, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .log_lines()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
            < n
        {
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "child exited before {n} `{prefix}` lines"
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} `{prefix}` lines"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).expect("open db")
    }
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) with a pid we spawned and own.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().expect("reap child");
}

#[test]
fn sigkill_at_several_points_then_resume_runs_each_node_to_one_output() {
    let env = Env::new();
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
    let env = Env::new();
    let mut first = env.spawn("run --run-id busy", 400);
    env.wait_for("start", 1, &mut first);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(
            "SMITHERS_CRASH_CHILD",
            format!("--quiet --db {} resume --run-id busy", env.db.display()),
        )
        .env("SMITHERS_CRASH_LOG", &env.log)
        .stdin(Stdio::null())
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
    let env = Env::new();
    let mut child = env.spawn("run --run-id interrupted", 200);
    env.wait_for("start", 1, &mut child);
    // SAFETY: kill(2) with a pid we spawned and own.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("child");
    assert_eq!(status.code(), Some(130), "exit code of a cancelled run");
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
