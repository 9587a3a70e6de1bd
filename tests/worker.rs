//! The `worker` command, with real processes: it takes over a run whose driver was killed with
//! SIGKILL (SQLite and PostgreSQL), drives runs queued by `run --detach`, hands its runs back
//! when stopped with SIGTERM, and marks failed a run whose driver dies every time, after the
//! restart limit, counting restarts across worker processes.
//!
//! Drivers and workers are this test binary itself, re-executed as a workflow binary (see
//! `common::child`).

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::child::{
    append, finish, kill9, run_as_workflow_binary, signal, stop_outside_a_transaction, wait_until,
    ChildEnv,
};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use smithers::__private::{Column, ColumnKind};
use smithers_core::node::{Sequence, Task, Workflow};
use smithers_core::{Ctx, Node, Output};

/// What each task returns: its node and the process that executed it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct Stamp {
    node: String,
    pid: i64,
}

impl Output for Stamp {
    const TABLE: &'static str = "stamp";
    const COLUMNS: &'static [Column] = &[
        Column {
            name: "node",
            kind: ColumnKind::Text,
            nullable: false,
            rust_type: "String",
        },
        Column {
            name: "pid",
            kind: ColumnKind::Integer,
            nullable: false,
            rust_type: "i64",
        },
    ];
}

const NODES: [&str; 4] = ["n0", "n1", "n2", "n3"];

/// A sequence of tasks that log `start <node> <pid> <run>` and `end <node> <pid> <run>` around a
/// sleep. The
/// task named by `SMITHERS_CHILD_CRASH` kills its own process instead (as the OOM killer would),
/// every time it runs.
fn worker_workflow(log: PathBuf, millis: u64) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    let crash = std::env::var("SMITHERS_CHILD_CRASH").ok();
    // Another workflow binary, for the runs a worker must leave alone.
    let name = std::env::var("SMITHERS_CHILD_WORKFLOW").unwrap_or_else(|_| "supervised".into());
    move |_ctx| {
        let tasks = NODES.iter().map(|id| {
            let (node, log) = (id.to_string(), log.clone());
            let crashes = crash.as_deref() == Some(*id);
            Task::<Stamp>::new()
                .id(*id)
                .run(move |t| {
                    let (node, log, run) = (node.clone(), log.clone(), t.run_id().to_owned());
                    async move {
                        let pid = std::process::id();
                        append(&log, &format!("start {node} {pid} {run}"));
                        if crashes {
                            // SAFETY: kill(2) of this very process.
                            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        }
                        tokio::time::sleep(Duration::from_millis(millis)).await;
                        append(&log, &format!("end {node} {pid} {run}"));
                        Ok::<_, String>(Stamp {
                            node,
                            pid: i64::from(pid),
                        })
                    }
                })
                .build()
        });
        Workflow::new()
            .name(name.clone())
            .child(Sequence::new().child(tasks).build())
            .build()
    }
}

/// Child entry point: when `SMITHERS_CHILD_ARGS` is set, behave as a workflow binary.
#[test]
fn worker_child() {
    run_as_workflow_binary(worker_workflow);
}

/// Reads the database the children write, whichever backend it is.
trait Db {
    /// `status, error, lease_owner` of a run.
    fn run(&self, run: &str) -> Option<(String, Option<String>, Option<String>)>;
    /// Output rows per node: `(node, count)`, by node.
    fn outputs(&self, run: &str) -> Vec<(String, i64)>;
    /// The process that wrote each node's output.
    fn output_pids(&self, run: &str) -> Vec<(String, i64)>;
    /// `worker_id`s registered.
    fn workers(&self) -> Vec<String>;
    /// The restart count of a run.
    fn restarts(&self, run: &str) -> Option<i64>;
}

impl Db for rusqlite::Connection {
    fn run(&self, run: &str) -> Option<(String, Option<String>, Option<String>)> {
        self.query_row(
            "SELECT status, error, lease_owner FROM _smithers_runs WHERE run_id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .unwrap()
    }

    fn outputs(&self, run: &str) -> Vec<(String, i64)> {
        let mut st = self
            .prepare(
                "SELECT node, COUNT(*) FROM stamp WHERE run_id = ?1 GROUP BY node ORDER BY node",
            )
            .unwrap();
        st.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn output_pids(&self, run: &str) -> Vec<(String, i64)> {
        let mut st = self
            .prepare("SELECT node, pid FROM stamp WHERE run_id = ?1 ORDER BY node")
            .unwrap();
        st.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn workers(&self) -> Vec<String> {
        let mut st = self
            .prepare("SELECT worker_id FROM _smithers_workers ORDER BY worker_id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn restarts(&self, run: &str) -> Option<i64> {
        self.query_row(
            "SELECT restarts FROM _smithers_restarts WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
    }
}

fn sqlite(env: &ChildEnv) -> rusqlite::Connection {
    let c = env.conn();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

fn status_of(db: &dyn Db, run: &str) -> Option<String> {
    db.run(run).map(|r| r.0)
}

fn one_output_per_node() -> Vec<(String, i64)> {
    NODES.iter().map(|n| (n.to_string(), 1)).collect()
}

/// `smithers ARGS --db DB`: its stdout, after checking it succeeded.
fn smithers(db: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smithers"))
        .args(["--db", db])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "smithers {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops a worker with SIGTERM and checks that it exits 0 after saying it stops.
fn stop_worker(worker: Child) -> String {
    signal(&worker, libc::SIGTERM);
    let (code, stderr) = finish(worker);
    assert_eq!(
        code,
        Some(0),
        "a worker stopped by SIGTERM exits 0: {stderr}"
    );
    assert!(
        stderr.contains("stopping: handing back the runs this worker drives"),
        "{stderr}"
    );
    stderr
}

/// A driver killed with SIGKILL mid-run; a worker that is already polling takes the run over
/// and finishes it with one output per node. `db` is the `--db` argument, `read` reads it.
fn killed_driver_is_taken_over(env: &ChildEnv, db: &str, read: &dyn Db) {
    const RUN: &str = "killed";
    // A 3 s lease: the worker must not wait for it, its holder being dead on this host.
    let mut driver = env
        .command_on(
            db,
            &format!("--quiet --lease-ttl-ms 3000 run --run-id {RUN}"),
            300,
        )
        .spawn()
        .unwrap();
    let pid_a = driver.id();
    env.wait_for(&format!("start n1 {pid_a}"), 1, &mut driver);
    let mut worker = env
        .command_on(db, "--quiet --lease-ttl-ms 3000 worker --poll-ms 50", 300)
        .spawn()
        .unwrap();
    let pid_w = worker.id();
    wait_until("the worker's registration", &mut worker, || {
        read.workers()
            .iter()
            .any(|w| w.contains(&format!(":{pid_w}:")))
    });
    // The worker leaves a run with a live driver alone.
    assert!(
        read.run(RUN)
            .unwrap()
            .2
            .unwrap()
            .contains(&format!(":{pid_a}:")),
        "the live driver keeps its run"
    );
    kill9(&mut driver);
    let killed_at = Instant::now();
    wait_until("the takeover", &mut worker, || {
        read.run(RUN)
            .and_then(|r| r.2)
            .is_some_and(|o| o.contains(&format!(":{pid_w}:")))
    });
    let took = killed_at.elapsed();
    eprintln!("taken over {took:?} after the driver was killed (poll 50 ms, lease 3 s)");
    // Its holder is dead on this host: the lease counts for nothing, the next poll takes it.
    assert!(
        took < Duration::from_millis(3000),
        "taken over {took:?} after the kill, before the dead driver's 3 s lease would have run out"
    );
    wait_until("the run to finish", &mut worker, || {
        status_of(read, RUN).as_deref() == Some("finished")
    });
    assert_eq!(read.outputs(RUN), one_output_per_node());
    // n0 was the killed driver's; what was left ran in the worker.
    let pids = read.output_pids(RUN);
    assert_eq!(pids[0], ("n0".to_owned(), i64::from(pid_a)), "{pids:?}");
    for (node, pid) in &pids[1..] {
        assert_eq!(
            *pid,
            i64::from(pid_w),
            "node {node} ran in the worker: {pids:?}"
        );
    }
    assert_eq!(read.restarts(RUN), Some(1), "one restart recorded");
    let last_error = smithers(db, &["state", "get", "supervisor.last_error"]);
    assert!(
        last_error.starts_with(&format!("run `{RUN}`: its driver `"))
            && last_error.contains(&format!(
                "is no longer running on this host; restarted by worker `{}` (restart 1 of at most 5)",
                read.workers()[0]
            )),
        "the supervisor key records the crash: {last_error}"
    );
    let status = smithers(db, &["status", RUN]);
    assert!(
        status.contains("restarts  1 since its last progress; last ")
            && status.contains(&format!("by `{}`: its driver `", read.workers()[0]))
            && status.contains(&format!(":{pid_a}:")),
        "status names the restart and the dead driver: {status}"
    );
    stop_worker(worker);
    assert_eq!(
        read.workers(),
        Vec::<String>::new(),
        "the worker deregistered"
    );
}

#[test]
fn a_driver_killed_with_sigkill_is_taken_over_by_a_worker_and_the_run_finishes() {
    let env = ChildEnv::new("worker_child");
    let db = env.db.display().to_string();
    killed_driver_is_taken_over(&env, &db, &sqlite(&env));
}

#[test]
fn a_hung_driver_is_taken_over_once_its_lease_expires_and_then_commits_nothing() {
    const RUN: &str = "hung";
    let env = ChildEnv::new("worker_child");
    let c = sqlite(&env);
    let mut driver = env.spawn(&format!("--lease-ttl-ms 600 run --run-id {RUN}"), 300);
    let pid_a = driver.id();
    env.wait_for(&format!("start n1 {pid_a}"), 1, &mut driver);
    let mut worker = env.spawn("--lease-ttl-ms 600 worker --poll-ms 50", 300);
    let pid_w = worker.id();
    wait_until("the worker's registration", &mut worker, || {
        !c.workers().is_empty()
    });
    // Hung: alive, holding its lease, renewing nothing.
    stop_outside_a_transaction(&env, &driver);
    let expires: i64 = c
        .query_row(
            "SELECT lease_expires_ms FROM _smithers_runs WHERE run_id = ?1",
            [RUN],
            |r| r.get(0),
        )
        .unwrap();
    let owner = |c: &rusqlite::Connection| c.run(RUN).and_then(|r| r.2).unwrap_or_default();
    wait_until("the takeover", &mut worker, || {
        owner(&c).contains(&format!(":{pid_w}:"))
    });
    let taken_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Its lease was honoured to the end; the worker came within the poll interval after it
    // (the bound allows for a loaded machine scheduling the worker late).
    let late = taken_ms - expires;
    eprintln!("taken over {late} ms after the hung driver's lease expired (poll 50 ms)");
    assert!(late >= 0, "a live lease was taken {} ms early", -late);
    assert!(late < 50 + 2000, "taken over {late} ms after the expiry");
    // Woken up, the hung driver finds the run another's and writes nothing.
    signal(&driver, libc::SIGCONT);
    let (code, stderr) = finish(driver);
    assert_eq!(
        code,
        Some(3),
        "the old driver exits with E_LEASE_LOST: {stderr}"
    );
    wait_until("the run to finish", &mut worker, || {
        status_of(&c, RUN).as_deref() == Some("finished")
    });
    assert_eq!(c.outputs(RUN), one_output_per_node());
    assert_eq!(c.restarts(RUN), Some(1));
    let restart_reason: String = c
        .query_row(
            "SELECT last_reason FROM _smithers_restarts WHERE run_id = ?1",
            [RUN],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        restart_reason.starts_with("the lease of its driver `")
            && restart_reason.contains(&format!(":{pid_a}:"))
            && restart_reason.contains("` expired at "),
        "{restart_reason}"
    );
    stop_worker(worker);
}

#[test]
fn a_worker_drives_at_most_its_concurrency_of_runs_at_once() {
    let env = ChildEnv::new("worker_child");
    let c = sqlite(&env);
    let runs = ["c1", "c2", "c3"];
    for run in runs {
        let out = env
            .command(&format!("run --detach --run-id {run}"), 100)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let mut worker = env.spawn("worker --poll-ms 20 --concurrency 2", 100);
    wait_until("the three runs to finish", &mut worker, || {
        runs.iter()
            .all(|r| status_of(&c, r).as_deref() == Some("finished"))
    });
    stop_worker(worker);
    // Runs in progress, line by line of the execution log: from a run's first start to the
    // end of its last node.
    let (mut active, mut most) = (std::collections::BTreeSet::new(), 0);
    for line in env.log_lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["start", _, _, run] => {
                active.insert(run.to_owned());
            }
            ["end", "n3", _, run] => {
                active.remove(run);
            }
            _ => {}
        }
        most = most.max(active.len());
    }
    assert_eq!(most, 2, "two runs at once, never three");
    for run in runs {
        assert_eq!(c.outputs(run), one_output_per_node(), "{run}");
    }
}

#[test]
fn a_detached_run_is_queued_and_a_worker_finishes_it() {
    let env = ChildEnv::new("worker_child");
    let out = env
        .command("run --detach --run-id detached", 20)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run id alone on its line (after the test harness's own `test worker_child ... `).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("test worker_child ... detached\n"),
        "it prints the run id: {stdout}"
    );
    let c = sqlite(&env);
    assert_eq!(
        c.run("detached"),
        Some(("queued".to_owned(), None, None)),
        "queued, with no lease"
    );
    assert!(
        env.log_lines().is_empty(),
        "nothing ran before a worker came"
    );
    // A run of another workflow, queued in the same database after this one.
    let out = env
        .command("run --detach --run-id foreign", 20)
        .env("SMITHERS_CHILD_WORKFLOW", "other")
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut worker = env.spawn("worker --poll-ms 20", 20);
    wait_until("the detached run to finish", &mut worker, || {
        status_of(&c, "detached").as_deref() == Some("finished")
    });
    // The tick that took `detached` looked at `foreign` too (oldest first, room to spare) and
    // every tick since: it is left alone, queued, with nothing but its `run_queued` event.
    assert_eq!(
        c.run("foreign"),
        Some(("queued".to_owned(), None, None)),
        "another workflow's run is left alone"
    );
    let foreign_events: Vec<String> = c
        .prepare("SELECT kind FROM _smithers_events WHERE run_id = 'foreign' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(foreign_events, ["run_queued"]);
    let workers = smithers(&env.db.display().to_string(), &["workers"]);
    assert!(
        workers.contains(" supervised "),
        "the worker learned its workflow: {workers}"
    );
    assert_eq!(c.outputs("detached"), one_output_per_node());
    let run_events: Vec<String> = c
        .prepare("SELECT kind FROM _smithers_events WHERE run_id = 'detached' AND kind LIKE 'run_%' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        run_events,
        ["run_queued", "run_started", "run_finished"],
        "queued, then started by the worker"
    );
    assert_eq!(
        c.restarts("detached"),
        None,
        "starting a queued run is no restart"
    );
    stop_worker(worker);
    assert_eq!(c.workers(), Vec::<String>::new());
}

/// Sends `worker` SIGTERM and waits for it to exit, at most 60 s (then kills it and fails,
/// saying the worker ignored SIGTERM `state`). Returns its exit code.
fn sigterm_and_wait(worker: &mut Child, state: &str) -> Option<i32> {
    signal(worker, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = worker.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            kill9(worker);
            panic!("the worker ignored SIGTERM for 60 s {state}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker whose stderr is gone (a pipe whose reader closed: a test or supervisor that died)
/// still stops on the first SIGTERM and hands its run back. It used to write its "stopping"
/// line before acting on the signal; that write panicked the signal task on the closed pipe,
/// and the worker ignored every SIGTERM from then on.
#[test]
fn a_worker_whose_stderr_is_gone_still_stops_on_sigterm() {
    let env = ChildEnv::new("worker_child");
    let c = sqlite(&env);
    let out = env
        .command("run --detach --run-id deaf", 60_000)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut worker = env.spawn("worker --poll-ms 20", 60_000);
    let pid = worker.id();
    env.wait_for(&format!("start n0 {pid}"), 1, &mut worker);
    // Close the only reader of its stderr.
    drop(worker.stderr.take());
    let code = sigterm_and_wait(&mut worker, "once its stderr was gone");
    assert_eq!(code, Some(0), "a worker stopped by SIGTERM exits 0");
    assert_eq!(
        c.run("deaf"),
        Some(("queued".to_owned(), None, None)),
        "handed back: queued, lease released"
    );
}

/// A worker that is not `--quiet`, whose stderr is a pipe with its read end closed before it
/// starts (a supervisor that died): every line it says (the run it takes over, progress, its
/// stop) and every log line fails with `EPIPE`, and none may panic it. It drives a detached run
/// to the end and still stops with 0 on SIGTERM. (Its stdout stays null: the child is this test
/// binary, whose harness fails before the test on a closed stdout.)
#[test]
fn a_worker_whose_stderr_is_closed_from_the_start_drives_a_run_to_the_end() {
    let env = ChildEnv::new("worker_child");
    let c = sqlite(&env);
    let out = env
        .command("run --detach --run-id unread", 20)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut worker = env
        .command_on(&env.db.display().to_string(), "worker --poll-ms 20", 20)
        .stderr(writer)
        .spawn()
        .unwrap();
    wait_until("the detached run to finish", &mut worker, || {
        status_of(&c, "unread").as_deref() == Some("finished")
    });
    assert_eq!(c.outputs("unread"), one_output_per_node());
    let code = sigterm_and_wait(&mut worker, "with its stderr closed");
    assert_eq!(code, Some(0), "a worker stopped by SIGTERM exits 0");
    assert_eq!(c.workers(), Vec::<String>::new());
}

#[test]
fn sigterm_hands_the_run_back_queued_and_the_next_worker_finishes_it() {
    let env = ChildEnv::new("worker_child");
    let c = sqlite(&env);
    let out = env
        .command("run --detach --run-id handed", 60_000)
        .output()
        .unwrap();
    assert!(out.status.success());
    // Tasks sleep a minute: the stop must interrupt n0, not wait for it.
    let mut first = env.spawn("worker --poll-ms 20", 60_000);
    let pid_1 = first.id();
    env.wait_for(&format!("start n0 {pid_1}"), 1, &mut first);
    // Who drives what, from the database alone.
    let db = env.db.display().to_string();
    let workers = smithers(&db, &["workers"]);
    let line = workers
        .lines()
        .find(|l| l.contains(&format!(":{pid_1}:")))
        .unwrap_or_else(|| panic!("the worker is listed: {workers}"));
    assert!(
        line.contains("supervised") && line.ends_with(" handed") && line.contains("s ago"),
        "its workflow, the run it drives, its heartbeat: {workers}"
    );
    let status = smithers(&db, &["status", "handed"]);
    assert!(
        status.contains("driver    worker `") && status.contains(&format!(":{pid_1}:")),
        "status names the worker driving the run: {status}"
    );
    let runs = smithers(&db, &["runs"]);
    let row = |runs: &str| {
        runs.lines()
            .find(|l| l.starts_with("handed "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("the run is listed: {runs}"))
    };
    assert!(
        runs.lines().next().is_some_and(|h| h.ends_with(" DRIVER")),
        "{runs}"
    );
    let driving = row(&runs);
    assert!(
        driving.contains(" worker ") && driving.ends_with(&format!(":{pid_1}")),
        "runs names the worker driving the run: {runs}"
    );
    let stopped_at = Instant::now();
    stop_worker(first);
    assert!(
        stopped_at.elapsed() < Duration::from_secs(30),
        "the stop interrupted the minute-long task"
    );
    assert_eq!(
        c.run("handed"),
        Some(("queued".to_owned(), None, None)),
        "handed back: queued, lease released"
    );
    let attempt: (String, Option<String>) = c
        .query_row(
            "SELECT status, error FROM _smithers_attempts WHERE run_id = 'handed' AND node_id = 'n0'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        attempt.0, "cancelled",
        "the interrupted attempt: {attempt:?}"
    );
    let node: String = c
        .query_row(
            "SELECT status FROM _smithers_nodes WHERE run_id = 'handed' AND node_id = 'n0'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(node, "pending");
    assert_eq!(
        c.workers(),
        Vec::<String>::new(),
        "the stopped worker deregistered"
    );
    assert_eq!(smithers(&db, &["workers"]), "no live worker\n");
    assert!(
        row(&smithers(&db, &["runs"])).ends_with(" -"),
        "a handed-back run has no driver"
    );
    assert!(smithers(&db, &["status", "handed"])
        .contains("driver    none yet: a `worker` of this workflow takes the run"));
    let event: String = c
        .query_row(
            "SELECT json_extract(payload, '$.reason') FROM _smithers_events WHERE run_id = 'handed' AND kind = 'run_queued' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(event.contains("the worker driving it stopped"), "{event}");

    // The next worker continues at once (no lease to wait for) and finishes it.
    let mut second = env.spawn("worker --poll-ms 20", 20);
    let pid_2 = second.id();
    wait_until("the second worker to finish the run", &mut second, || {
        status_of(&c, "handed").as_deref() == Some("finished")
    });
    assert_eq!(c.outputs("handed"), one_output_per_node());
    assert!(c
        .output_pids("handed")
        .iter()
        .all(|(_, p)| *p == i64::from(pid_2)));
    assert_eq!(c.restarts("handed"), None, "a handed-back run is no crash");
    stop_worker(second);
}

#[test]
fn a_run_whose_driver_dies_every_time_is_failed_after_the_restart_limit() {
    let env = ChildEnv::new("worker_child");
    let c = sqlite(&env);
    let crashing = |args: &str| {
        let mut cmd = env.command(args, 20);
        cmd.env("SMITHERS_CHILD_CRASH", "n1");
        cmd.spawn().unwrap()
    };
    // The first driver dies in n1.
    let (code, _) = finish(crashing("run --run-id doomed"));
    assert_eq!(code, None, "killed by its own task");
    // Workers die with it too, as a process would under systemd's `Restart=always`: each new
    // worker reads the restart count the last one persisted.
    let worker_args = "worker --poll-ms 20 --restart-limit 2 --restart-backoff-ms 50";
    let mut crashed_workers = 0;
    let last = loop {
        let mut worker = crashing(worker_args);
        let deadline = Instant::now() + Duration::from_secs(60);
        let failed = loop {
            if status_of(&c, "doomed").as_deref() == Some("failed") {
                break true;
            }
            if worker.try_wait().unwrap().is_some() {
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "the worker neither died nor failed the run"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        if failed {
            break worker;
        }
        crashed_workers += 1;
        assert!(crashed_workers <= 2, "restarted more than the limit");
    };
    assert_eq!(crashed_workers, 2, "two restarts, each dying in n1");
    let mut last = last;
    wait_until("the lease of the failed run released", &mut last, || {
        c.run("doomed").is_some_and(|r| r.2.is_none())
    });
    let (status, error, lease) = c.run("doomed").unwrap();
    assert_eq!((status.as_str(), lease), ("failed", None));
    let error = error.unwrap();
    assert!(
        error.starts_with("its driver died 3 time(s) without progress (restarted 2 time(s), the limit of `worker --restart-limit 2`); last: its driver `")
            && error.contains("is no longer running on this host while node `n1` (attempt 3) was in progress; marked failed instead of restarting it again (`resume --run-id doomed` tries once more)"),
        "{error}"
    );
    let last_error: String = c
        .query_row(
            "SELECT value FROM state WHERE key = 'supervisor.last_error'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(last_error, error);
    let sup: String = c
        .query_row(
            "SELECT value FROM state WHERE key = 'supervisor.status'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sup, "error");
    // n0 finished once, by the first driver; n1 was tried three times and never again.
    assert_eq!(c.outputs("doomed"), [("n0".to_owned(), 1)]);
    let n1_starts = env
        .log_lines()
        .iter()
        .filter(|l| l.starts_with("start n1 "))
        .count();
    assert_eq!(n1_starts, 3);
    assert_eq!(c.restarts("doomed"), Some(2));
    // The workers killed with the run left their rows; the last one removed them.
    let registered = c.workers();
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert!(registered[0].contains(&format!(":{}:", last.id())));
    // The worker that gave up is alive and stops cleanly.
    stop_worker(last);
}

/// PostgreSQL, read through a client of the test's own.
struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    fn connect(url: &str) -> Pg {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        });
        Pg { rt, client }
    }

    fn rows(&self, sql: &str, run: Option<&str>) -> Vec<tokio_postgres::Row> {
        self.rt.block_on(async {
            match run {
                Some(r) => self.client.query(sql, &[&r]).await,
                None => self.client.query(sql, &[]).await,
            }
            .unwrap()
        })
    }
}

impl Db for Pg {
    fn run(&self, run: &str) -> Option<(String, Option<String>, Option<String>)> {
        self.rows(
            "SELECT status, error, lease_owner FROM _smithers_runs WHERE run_id = $1",
            Some(run),
        )
        .first()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
    }

    fn outputs(&self, run: &str) -> Vec<(String, i64)> {
        // The output table exists once the first driver ensured it.
        self.rows(
            "SELECT node, COUNT(*) FROM stamp WHERE run_id = $1 GROUP BY node ORDER BY node",
            Some(run),
        )
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    fn output_pids(&self, run: &str) -> Vec<(String, i64)> {
        self.rows(
            "SELECT node, pid FROM stamp WHERE run_id = $1 ORDER BY node",
            Some(run),
        )
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    fn workers(&self) -> Vec<String> {
        self.rows(
            "SELECT worker_id FROM _smithers_workers ORDER BY worker_id",
            None,
        )
        .iter()
        .map(|r| r.get(0))
        .collect()
    }

    fn restarts(&self, run: &str) -> Option<i64> {
        self.rows(
            "SELECT restarts FROM _smithers_restarts WHERE run_id = $1",
            Some(run),
        )
        .first()
        .map(|r| r.get(0))
    }
}

/// Runs `test_body` on a fresh schema of the test server (with its tables created) with a
/// child environment and a client of its own; the schema is dropped even when the body fails.
/// Nothing runs (the schema helper says why) when no server is reachable.
fn on_postgres(test: &str, test_body: impl FnOnce(&ChildEnv, &str, &Pg)) {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let Some(schema) = setup.block_on(smithers_core::store::conformance::PgSchema::create(test))
    else {
        return;
    };
    let env = ChildEnv::new("worker_child");
    // The tables exist before the test's own client reads them.
    setup.block_on(async {
        smithers_core::store::PostgresStore::connect(&schema.url)
            .await
            .unwrap();
    });
    let pg = Pg::connect(&schema.url);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        test_body(&env, &schema.url, &pg)
    }));
    drop(pg);
    setup.block_on(schema.drop());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn on_postgres_a_driver_killed_with_sigkill_is_taken_over_by_a_worker() {
    on_postgres(
        "on_postgres_a_driver_killed_with_sigkill_is_taken_over_by_a_worker",
        |env, db, pg| killed_driver_is_taken_over(env, db, pg),
    );
}

#[test]
fn on_postgres_a_detached_run_is_finished_by_a_worker_that_sigterm_stops() {
    on_postgres(
        "on_postgres_a_detached_run_is_finished_by_a_worker_that_sigterm_stops",
        |env, db, pg| {
            let out = env
                .command_on(db, "--quiet run --detach --run-id pgq", 20)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(pg.run("pgq"), Some(("queued".to_owned(), None, None)));
            let mut worker = env
                .command_on(db, "--quiet worker --poll-ms 20", 20)
                .spawn()
                .unwrap();
            wait_until("the detached run to finish", &mut worker, || {
                status_of(pg, "pgq").as_deref() == Some("finished")
            });
            assert_eq!(pg.outputs("pgq"), one_output_per_node());
            assert_eq!(pg.restarts("pgq"), None);
            stop_worker(worker);
            assert_eq!(
                pg.workers(),
                Vec::<String>::new(),
                "the worker deregistered"
            );
        },
    );
}

/// A test that fails before reaping its children leaves none running: dropping the environment
/// kills the worker it started (and nothing that is not its own).
#[test]
fn children_a_test_left_running_are_killed_with_its_environment() {
    let env = ChildEnv::new("worker_child");
    let mut worker = env.spawn("worker --poll-ms 20", 20);
    let other = ChildEnv::new("worker_child");
    let mut bystander = other.spawn("worker --poll-ms 20", 20);
    std::thread::sleep(Duration::from_millis(200));
    assert!(worker.try_wait().unwrap().is_none(), "the worker runs");
    drop(env);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker still runs after its environment was dropped"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "killed, not exited: {status:?}"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "another environment's worker is left alone"
    );
    stop_worker(bystander);
}
