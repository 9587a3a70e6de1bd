//! The `smithers` binary against a database a workflow binary produced: listings in text and JSON,
//! logs (followed until the run stops), frames, attempts, `state`, `cancel`, and errors that name
//! the missing database or run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use smithers::cli::main_from;
use smithers::prelude::*;
use smithers_core::clock::{Clock, SystemClock};
use smithers_core::events::{Event, EventKind};
use smithers_core::model::Timestamp;
use smithers_core::store::lease_owner;
use smithers_core::store::{Durability, NewRun, RunStatus, SqliteStore, Store, Write, WriteBatch};

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Greeting {
    text: String,
}

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Count {
    n: i64,
}

fn hello(ctx: &Ctx<()>) -> Node {
    let greeted = ctx.output_maybe::<Greeting>("greet").is_some();
    workflow! {
        <Workflow name="hello">
            <Task id="greet" output=Greeting value={Greeting { text: "hello".into() }} />
            {greeted.then(|| workflow! {
                <Task id="count" output=Count retries=1 run={|t: TaskCtx| async move {
                    if t.attempt() == 1 {
                        return Err(TaskError::retryable("disk busy"));
                    }
                    Ok(Count { n: 3 })
                }} />
            })}
        </Workflow>
    }
}

/// A database holding one finished run `r1` of `hello`.
async fn finished_run() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let code = main_from(
        [
            "hello",
            "--quiet",
            "--durability",
            "off",
            "--db",
            db.to_str().unwrap(),
            "run",
            "--run-id",
            "r1",
        ],
        hello,
    )
    .await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    (dir, db)
}

fn smithers(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap()
}

/// Replaces the clock that starts every `logs` line and the time of a frame header.
fn redact(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("# frame ") {
                l.split(" recorded ").next().unwrap().to_owned() + " recorded [at]"
            } else if l.as_bytes().get(2) == Some(&b':') && l.as_bytes().get(5) == Some(&b':') {
                format!("[time]{}", &l[8..])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn store(db: &Path) -> SqliteStore {
    SqliteStore::open(db, Durability::Off).unwrap()
}

#[tokio::test]
async fn listings_in_json_describe_the_run() {
    let (_dir, db) = finished_run().await;
    let runs = json(&smithers(&db, &["runs", "--json"]));
    assert_eq!(runs[0]["run_id"], "r1");
    assert_eq!(runs[0]["workflow"], "hello");
    assert_eq!(runs[0]["status"], "finished");

    let status = json(&smithers(&db, &["status", "r1", "--json"]));
    assert_eq!(status["run"]["status"], "finished");
    let nodes: Vec<_> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap(),
                n["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(nodes, [("greet", 1), ("count", 2)]);

    let attempts = json(&smithers(&db, &["attempts", "r1", "--json"]));
    let attempts: Vec<_> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["node_id"].as_str().unwrap(),
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("greet", 1, "finished"),
            ("count", 1, "failed"),
            ("count", 2, "finished")
        ]
    );

    let frames = json(&smithers(&db, &["frames", "r1", "--all", "--json"]));
    assert_eq!(frames.as_array().unwrap().len(), 2, "{frames}");
    let latest = json(&smithers(&db, &["frames", "r1", "--json"]));
    assert_eq!(latest["frame_no"], 2);

    let text = stdout(&smithers(&db, &["logs", "r1", "--json"]));
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["seq"].is_i64(), "{v}");
            v["kind"]["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_finished"));
    assert!(!kinds.iter().any(|k| k == "frame_rendered"), "{kinds:?}");
}

#[tokio::test]
async fn logs_read_as_lines_and_debug_adds_frames() {
    let (_dir, db) = finished_run().await;
    let logs = stdout(&smithers(&db, &["logs", "r1"]));
    insta::assert_snapshot!(redact(&logs));
    let debug = stdout(&smithers(&db, &["logs", "r1", "--level", "debug"]));
    assert_eq!(debug.matches("▦ frame").count(), 2, "{debug}");
    // The latest run is the default.
    assert_eq!(stdout(&smithers(&db, &["logs"])), logs);
}

#[tokio::test]
async fn frames_show_the_tree_the_run_rendered() {
    let (_dir, db) = finished_run().await;
    let latest = stdout(&smithers(&db, &["frames", "r1"]));
    insta::assert_snapshot!(redact(&latest));
    let all = stdout(&smithers(&db, &["frames", "r1", "--all"]));
    assert!(all.starts_with("# frame 1 "), "{all}");
    assert!(all.ends_with(&latest), "{all}");
}

/// The operator views write to the writer they are given, not to the process's stdout: rendered
/// into a `Vec<u8>` here, they hold the text the `smithers` binary prints.
#[tokio::test]
async fn operator_views_write_their_text_into_the_writer_they_are_given() {
    use smithers::cli::{inspect, workers};
    use smithers::WorkerRecord;

    let (_dir, db) = finished_run().await;
    let s = store(&db);
    let mut out = Vec::new();
    inspect::status(&mut out, &s, Some("r1"), false)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        ["run       r1", "workflow  hello", "status    finished"],
        "{text}"
    );
    assert!(lines[3].starts_with("created   20"), "{text}");
    assert_eq!(
        lines[4..],
        [
            "",
            "NODE                             ITER STATUS     ATTEMPTS     TOKENS     COST $",
            "greet                               0 finished          1          -          -",
            "count                               0 finished          2          -          -",
            "",
            "total: 0 input + 0 output tokens, 0 cache read, 0 cache write, cost not reported",
        ],
        "{text}"
    );
    // The binary passes its stdout: the same text.
    assert_eq!(stdout(&smithers(&db, &["status", "r1"])), text);

    // `logs` too: its lines into the writer, and where it stopped returned, not printed.
    let mut out = Vec::new();
    let opts = smithers::cli::logs::LogOptions {
        poll: Duration::from_millis(10),
        ..Default::default()
    };
    let stopped = smithers::cli::logs::logs(&mut out, &s, Some("r1"), opts)
        .await
        .unwrap();
    assert_eq!(
        stopped,
        smithers::cli::logs::LogsStopped {
            status: RunStatus::Finished,
            note: None
        }
    );
    let logs = String::from_utf8(out).unwrap();
    assert!(
        logs.lines()
            .next()
            .unwrap()
            .ends_with(" run r1 started (hello)"),
        "{logs}"
    );
    assert_eq!(stdout(&smithers(&db, &["logs", "r1"])), logs);

    // A finished run is not cancelled, and the view writes nothing (the binary says why on
    // stderr).
    let mut out = Vec::new();
    let refused = inspect::cancel(&mut out, &s, "r1").await.unwrap();
    assert_eq!((refused, out.len()), (Some(RunStatus::Finished), 0));

    let mut out = Vec::new();
    workers::workers(&mut out, &s, false, false).await.unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "no live worker\n");
    // A worker whose last heartbeat was three and a half hours ago and that is not stale yet.
    let now = SystemClock.now();
    s.put_worker(&WorkerRecord {
        worker_id: "box:42:aaaa".into(),
        host: "box".into(),
        pid: 42,
        workflow: Some("hello".into()),
        concurrency: 2,
        driving: vec!["r1".into()],
        started_at: now,
        heartbeat_at: Timestamp::from_millis(now.as_millis() - 12_600_000),
        expires_ms: now.as_millis() + 3_600_000,
    })
    .await
    .unwrap();
    let mut out = Vec::new();
    workers::workers(&mut out, &s, false, false).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "WORKER                       HOST                 PID WORKFLOW          MAX HEARTBEAT    DRIVING\n\
         box:42:aaaa                  box                   42 hello               2 3h ago       r1\n"
    );
}

#[tokio::test]
async fn state_set_then_get() {
    let (_dir, db) = finished_run().await;
    assert!(smithers(&db, &["state", "set", "owner", "ada"])
        .status
        .success());
    assert_eq!(stdout(&smithers(&db, &["state", "get", "owner"])), "ada\n");
    let missing = smithers(&db, &["state", "get", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("state key `nope` is not set"));
}

#[tokio::test]
async fn cancel_flags_a_driven_run_and_refuses_a_finished_one() {
    let (_dir, db) = finished_run().await;
    // A run driven by a live process: this test's.
    let s = store(&db);
    s.create_run(NewRun {
        run_id: "live".into(),
        workflow: "hello".into(),
        input: serde_json::Value::Null,
        owner: lease_owner(),
        lease_ttl: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let out = smithers(&db, &["cancel", "live"]);
    assert!(
        stdout(&out).contains("cancellation of run live requested"),
        "{out:?}"
    );
    assert!(s.cancel_requested("live").await.unwrap());

    let done = smithers(&db, &["cancel", "r1"]);
    assert_eq!(done.status.code(), Some(1));
    assert!(stderr(&done).contains("run r1 already finished; nothing to cancel"));
}

#[tokio::test]
async fn follow_prints_until_the_run_stops_and_exits_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let s = store(&db);
    s.create_run(NewRun {
        run_id: "r".into(),
        workflow: "w".into(),
        input: serde_json::Value::Null,
        owner: lease_owner(),
        lease_ttl: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("--db")
        .arg(&db)
        .args(["logs", "r", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut b = WriteBatch::new("r");
    b.push(Write::Event(Event::node(
        "r",
        "fix",
        0,
        SystemClock.now(),
        EventKind::NodeOutput {
            stream: "stdout".into(),
            line: "editing main.rs".into(),
        },
    )));
    s.write(b).await.unwrap();
    // No sleeping: the follower's first line says it has read the event; only then does the
    // run end.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut text).unwrap();
    assert!(text.contains("editing main.rs"), "{text:?}");
    let mut b = WriteBatch::new("r");
    b.push(Write::RunStatus {
        status: RunStatus::Failed,
        error: Some("boom".into()),
    });
    b.push(Write::Event(Event::run(
        "r",
        SystemClock.now(),
        EventKind::RunFailed {
            error: "boom".into(),
        },
    )));
    s.write(b).await.unwrap();
    std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status:?} {text:?}");
    assert_eq!(
        redact(&text),
        "[time]     │ fix: editing main.rs\n[time] run r failed: boom"
    );
}

#[tokio::test]
async fn errors_name_the_missing_database_or_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.db");
    let out = smithers(&missing, &["runs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("no database at `{}`", missing.display())),
        "{out:?}"
    );
    assert!(!missing.exists(), "inspecting never creates a database");

    // A database with no run yet.
    let empty = dir.path().join("empty.db");
    SqliteStore::open(&empty, Durability::Off).unwrap();
    let out = smithers(&empty, &["logs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no run in this database yet"),
        "{out:?}"
    );

    let (_dir, db) = finished_run().await;
    for args in [
        &["status", "ghost"][..],
        &["logs", "ghost"],
        &["frames", "ghost"],
        &["attempts", "ghost"],
        &["events", "ghost"],
        &["cancel", "ghost"],
    ] {
        let out = smithers(&db, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr(&out).contains("run `ghost` not found in this database"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

fn gated(_ctx: &Ctx<()>) -> Node {
    workflow! {
        <Workflow name="gated">
            <Phase name="build">
                <Step name="compile">
                    <Task id="compile" output=Count value={Count { n: 1 }} />
                </Step>
            </Phase>
            <Phase name="ship">
                <Step name="deploy">
                    <Task id="deploy" output=Count needs_approval value={Count { n: 2 }} />
                </Step>
            </Phase>
        </Workflow>
    }
}

async fn gated_cli(db: &Path, args: &[&str]) -> std::process::ExitCode {
    let workdir = db.parent().unwrap().to_str().unwrap();
    let mut argv = vec![
        "gated",
        "--workdir",
        workdir,
        "--quiet",
        "--durability",
        "off",
        "--db",
        db.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    main_from(argv, gated).await
}

#[tokio::test]
async fn approve_lets_a_parked_run_finish_and_steps_list_its_phases() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    assert_eq!(
        gated_cli(&db, &["run", "--run-id", "g1"]).await,
        std::process::ExitCode::SUCCESS
    );
    let status = json(&smithers(&db, &["status", "g1", "--json"]));
    assert_eq!(status["run"]["status"], "waiting-approval");

    // Nothing pending for `compile`: a clear error naming it.
    let wrong = smithers(&db, &["approve", "g1", "compile"]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("node `compile` of run `g1` has no pending approval"),
        "{}",
        stderr(&wrong)
    );

    let ok = smithers(&db, &["approve", "g1", "deploy", "--note", "ship it"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("node `deploy` (iteration 0) of run g1 approved"));
    assert_eq!(
        gated_cli(&db, &["resume", "--run-id", "g1"]).await,
        std::process::ExitCode::SUCCESS
    );
    let status = json(&smithers(&db, &["status", "g1", "--json"]));
    assert_eq!(status["run"]["status"], "finished");

    let steps = json(&smithers(&db, &["steps", "g1", "--json"]));
    let names: Vec<(i64, String, String, String, bool)> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step_id"].as_i64().unwrap(),
                s["phase"].as_str().unwrap().to_owned(),
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
                s["active"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected = [
        (1, "build", "compile", "completed", true),
        (2, "ship", "deploy", "completed", true),
    ];
    assert_eq!(
        names,
        expected.map(|(i, p, n, s, a)| (i, p.to_owned(), n.to_owned(), s.to_owned(), a))
    );
    assert!(steps[1]["created_at"].as_str().unwrap().contains('T'));
    let info = smithers(&db, &["step", "info", "g1", "2", "--json"]);
    assert_eq!(
        json(&info)["step"]["task_ids"],
        serde_json::json!(["deploy"])
    );
    let info = smithers(&db, &["step", "info", "g1", "2"]);
    assert!(
        stdout(&info).contains("tasks           deploy"),
        "{}",
        stdout(&info)
    );
    // Outside a repository no step has a snapshot: rolling back says so.
    let rollback = smithers(&db, &["step", "rollback", "g1", "2"]);
    assert!(!rollback.status.success());
    assert!(
        stderr(&rollback).contains("has no working-copy snapshot"),
        "{}",
        stderr(&rollback)
    );
}

#[tokio::test]
async fn deny_fails_the_task_with_the_note() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    gated_cli(&db, &["run", "--run-id", "g2"]).await;
    assert!(
        smithers(&db, &["deny", "g2", "deploy", "--note", "not on Friday"])
            .status
            .success()
    );
    assert_eq!(
        gated_cli(&db, &["resume", "--run-id", "g2"]).await,
        std::process::ExitCode::FAILURE
    );
    let status = json(&smithers(&db, &["status", "g2", "--json"]));
    assert_eq!(status["run"]["status"], "failed");
    assert!(status["run"]["error"]
        .as_str()
        .unwrap()
        .contains("approval denied: not on Friday"));
}

#[tokio::test]
async fn follow_stops_when_no_process_drives_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let s = store(&db);
    s.create_run(NewRun {
        run_id: "orphan".into(),
        workflow: "w".into(),
        input: serde_json::Value::Null,
        owner: lease_owner(),
        lease_ttl: Duration::from_millis(1),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = std::time::Instant::now();
    let out = smithers(&db, &["logs", "orphan", "--follow"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = stderr(&out);
    assert!(err.contains("no process is driving run orphan"), "{err}");
}

#[tokio::test]
async fn a_damaged_run_is_listed_as_damaged_and_the_others_as_they_are() {
    let (_dir, db) = finished_run().await;
    {
        let s = store(&db);
        s.create_run(NewRun {
            run_id: "r2".into(),
            workflow: "hello".into(),
            input: serde_json::Value::Null,
            owner: lease_owner(),
            lease_ttl: Duration::from_secs(30),
        })
        .await
        .unwrap();
    }
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE _smithers_runs SET input_json = 'not json' WHERE run_id = 'r2'",
            [],
        )
        .unwrap();

    let listing = stdout(&smithers(&db, &["runs"]));
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].starts_with("RUN "), "{listing}");
    assert!(
        lines[1].starts_with("r2 ") && lines[1].split_whitespace().nth(2) == Some("damaged"),
        "{listing}"
    );
    assert!(
        lines[2].starts_with("r1 ") && lines[2].split_whitespace().nth(2) == Some("finished"),
        "{listing}"
    );
    let note = lines
        .iter()
        .find(|l| l.starts_with("run `r2` is damaged"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        note.starts_with(
            "run `r2` is damaged (E_INVALID_RECORD): `_smithers_runs.input_json` holds `not json`, which is not the JSON this column holds ("
        ),
        "{note}"
    );
    assert!(note.ends_with("restore the database from a copy"), "{note}");

    let runs = json(&smithers(&db, &["runs", "--json"]));
    assert_eq!(runs[0]["run_id"], "r2");
    assert_eq!(runs[0]["damaged"]["code"], "E_INVALID_RECORD");
    assert!(
        runs[0]["damaged"]["message"]
            .as_str()
            .unwrap()
            .starts_with("`_smithers_runs.input_json` holds `not json`"),
        "{runs}"
    );
    assert_eq!(runs[1]["run_id"], "r1");
    assert_eq!(runs[1]["status"], "finished");

    // The run itself is an error naming what to correct, not a run with no input.
    let status = smithers(&db, &["status", "r2"]);
    assert!(!status.status.success(), "{status:?}");
    assert!(
        stderr(&status).contains("`_smithers_runs.input_json` holds `not json`"),
        "{status:?}"
    );
}
