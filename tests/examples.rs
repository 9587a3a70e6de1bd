//! The examples run as a user runs them: each binary against a fresh database, then `status`.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; cargo builds examples beside it.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "example binary {} is missing; `cargo test` builds examples",
        path.display()
    );
    path
}

fn run(name: &str, db: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(example(name))
        .args(["--quiet", "--durability", "off", "--db"])
        .arg(db)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // Step snapshots go to a scratch directory, never to this repository.
        .env("SMITHERS_WORKDIR", db.parent().unwrap())
        .output()
        .unwrap()
}

fn json_status(name: &str, db: &std::path::Path) -> serde_json::Value {
    let out = run(name, db, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get::<_, String>(0))
        .unwrap()
}

#[test]
fn quickstart_scans_this_repository_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let root = dir.path().join("repo");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("src/lib.rs"),
        "fn a() {}\n#[test]\nfn t() {}\n// TO".to_owned() + "DO: more\n",
    )
    .unwrap();
    let input = format!(r#"{{"root": "{}"}}"#, root.display());
    let out = run("quickstart", &db, &["run", "--input", &input]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json_status("quickstart", &db);
    assert_eq!(status["run"]["status"], "finished");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(sqlite(&db, "SELECT files FROM scan"), r#"["src/lib.rs"]"#);
    let report = sqlite(&db, "SELECT path FROM report");
    let text = std::fs::read_to_string(report).unwrap();
    assert!(
        text.contains("1 Rust files, 4 lines") && text.contains("src/lib.rs:4"),
        "{text}"
    );
}

#[test]
fn ralph_converge_stops_when_the_estimate_is_within_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let out = run(
        "ralph_converge",
        &db,
        &["run", "--input", r#"{"square": 2.0}"#],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: f64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT value FROM estimate ORDER BY iteration DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((value - std::f64::consts::SQRT_2).abs() < 1e-12, "{value}");
    let iterations: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM estimate", [], |r| r.get(0))
        .unwrap();
    assert!((3..10).contains(&iterations), "{iterations}");
}

#[test]
fn component_example_measures_each_extension() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let root = dir.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.rs"), "12345").unwrap();
    std::fs::write(root.join("b.md"), "1").unwrap();
    let input = format!(
        r#"{{"root": "{}", "extensions": ["rs", "md"]}}"#,
        root.display()
    );
    let out = run("component", &db, &["run", "--input", &input]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sqlite(&db, "SELECT extension FROM biggest"), "rs");
}

#[test]
fn bugfix_without_the_cli_fails_naming_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let out = Command::new(example("bugfix"))
        .args(["--quiet", "--durability", "off", "--db"])
        .arg(&db)
        .args(["run", "--input", r#"{"description": "x"}"#])
        .env("PATH", "/nonexistent")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent CLI `claude` was not found"),
        "{stderr}"
    );
}

#[test]
fn release_waits_for_approval_then_publishes_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rel.db");
    let out = run(
        "release",
        &db,
        &[
            "run",
            "--run-id",
            "rel",
            "--input",
            r#"{"version": "1.2.0"}"#,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_status("release", &db)["run"]["status"],
        "waiting-approval"
    );
    assert_eq!(
        sqlite(&db, "SELECT value FROM state WHERE key = 'release.phase'"),
        "build"
    );
    let approve = Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("--db")
        .arg(&db)
        .args(["approve", "rel", "publish", "--note", "ok"])
        .output()
        .unwrap();
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    let out = run("release", &db, &["resume", "--run-id", "rel"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_status("release", &db)["run"]["status"], "finished");
    assert!(sqlite(&db, "SELECT location FROM published").starts_with("releases/1.2.0"));
    assert_eq!(
        sqlite(&db, "SELECT value FROM state WHERE key = 'release.phase'"),
        "shipped"
    );
    let build_attempts = sqlite(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM _smithers_attempts WHERE node_id = 'build'",
    );
    assert_eq!(build_attempts, "1", "nothing finished ran again");
}

#[tokio::test]
async fn review_http_fans_out_one_review_per_file_then_sums_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rv.db");
    let (a, b) = (dir.path().join("a.rs"), dir.path().join("b.rs"));
    std::fs::write(&a, "fn a() {}").unwrap();
    std::fs::write(&b, "fn b() { panic!() }").unwrap();
    let (url, bodies) = common::chat_server(vec![
        r#"{"summary": "defines a", "issues": []}"#,
        r#"{"summary": "defines b", "issues": ["panics"]}"#,
    ])
    .await;
    let input = format!(r#"{{"files": ["{}", "{}"]}}"#, a.display(), b.display());
    let out = tokio::process::Command::new(example("review_http"))
        .args(["--quiet", "--durability", "off", "--db"])
        .arg(&db)
        .args(["run", "--max-concurrency", "1", "--input", &input])
        .env("OPENAI_BASE_URL", &url)
        .env_remove("OPENAI_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sqlite(&db, "SELECT CAST(issues AS TEXT) FROM summary"), "1");
    let prompts: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["messages"].to_string())
        .collect();
    assert!(
        prompts.iter().any(|p| p.contains("fn b() { panic!() }")),
        "the file text is in the prompt: {prompts:?}"
    );
}

fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "u")
        .env("GIT_AUTHOR_EMAIL", "u@u")
        .env("GIT_COMMITTER_NAME", "u")
        .env("GIT_COMMITTER_EMAIL", "u@u")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn smithers_cli(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn feature_loops_back_to_implement_and_a_rollback_resumes_from_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git_in(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "# add\n").unwrap();
    git_in(&repo, &["add", "-A"]);
    git_in(&repo, &["commit", "-q", "-m", "init"]);
    let head = git_in(&repo, &["rev-parse", "HEAD"]);
    let feature = |args: &[&str]| {
        Command::new(example("feature"))
            .args(["--quiet", "--durability", "off", "--db"])
            .arg(&db)
            .arg("--workdir")
            .arg(&repo)
            .args(args)
            .output()
            .unwrap()
    };
    let input = format!(r#"{{"repo": "{}"}}"#, repo.display());
    let out = feature(&["run", "--run-id", "f1", "--input", &input]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let add = || std::fs::read_to_string(repo.join("add.sh")).unwrap();
    assert!(add().contains("$1 + $2"), "{}", add());

    let steps = |db: &std::path::Path| -> Vec<(i64, Option<i64>, String, u32, bool)> {
        let out = smithers_cli(db, &["steps", "f1", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step_id"].as_i64().unwrap(),
                    s["parent_step_id"].as_i64(),
                    s["name"].as_str().unwrap().to_owned(),
                    s["iteration"].as_u64().unwrap() as u32,
                    s["active"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let r = |id, parent, name: &str, it, active| (id, parent, name.to_owned(), it, active);
    assert_eq!(
        steps(&db),
        [
            r(1, None, "survey", 0, true),
            r(2, Some(1), "implement", 0, true),
            r(3, Some(2), "run-tests", 0, true),
            r(4, Some(3), "implement", 1, true),
            r(5, Some(4), "run-tests", 1, true),
        ]
    );
    let diff = smithers_cli(&db, &["diff", "f1", "4"]);
    let diff = String::from_utf8_lossy(&diff.stdout).into_owned();
    assert!(
        diff.contains("-echo $(( $1 - $2 ))") && diff.contains("+echo $(( $1 + $2 ))"),
        "{diff}"
    );

    let back = smithers_cli(&db, &["step", "rollback", "f1", "4"]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert!(
        add().contains("$1 - $2"),
        "the working copy is back to before step 4: {}",
        add()
    );
    assert_eq!(git_in(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(json_status("feature", &db)["run"]["status"], "cancelled");

    let out = feature(&["resume", "--run-id", "f1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(add().contains("$1 + $2"));
    let after = steps(&db);
    assert_eq!(
        after[3..],
        [
            r(4, Some(3), "implement", 1, false),
            r(5, Some(4), "run-tests", 1, false),
            r(6, Some(3), "implement", 1, true),
            r(7, Some(6), "run-tests", 1, true),
        ]
    );
    // Research ran once: the rollback kept it.
    assert_eq!(
        sqlite(&db, "SELECT CAST(COUNT(*) AS TEXT) FROM survey"),
        "1"
    );
}

/// Every value of a query's rows, as text (NULL as `NULL`).
fn rows(db: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(_) => "<blob>".to_owned(),
                })
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn atomic_pipeline_chains_units_through_the_final_review_gate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let input = r#"{"phase": "parser", "goal": "parse INI files", "first_unit": "parse section headers", "skip_phases": ["refactor"]}"#;
    let out = run("atomic", &db, &["run", "--input", input]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sqlite(&db, "SELECT status FROM _smithers_runs"), "finished");
    // next_smallest_unit chaining: iteration 1 works on what iteration 0's implement named.
    assert_eq!(
        rows(&db, "SELECT iteration, name FROM unit ORDER BY iteration"),
        [
            ["0", "parse section headers"],
            ["1", "parse key = value pairs"]
        ]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT node_id, iteration, next_smallest_unit FROM implement ORDER BY iteration"
        ),
        [
            ["parser:implement", "0", "parse key = value pairs"],
            ["parser:implement", "1", "NULL"]
        ]
    );
    // The strict gate rejected the first unit and passed the second.
    assert_eq!(
        rows(
            &db,
            "SELECT iteration, ready_to_move_on, reasons FROM final_review ORDER BY iteration"
        ),
        [
            ["0", "0", r#"["key/value pairs are not parsed yet"]"#],
            ["1", "1", "[]"]
        ]
    );
    // Fix ran only where the review asked for it; refactor was skipped by skip_phases.
    assert_eq!(
        rows(
            &db,
            "SELECT node_id, iteration, status FROM _smithers_nodes \
             WHERE node_id IN ('parser:fix', 'parser:refactor') ORDER BY node_id, iteration"
        ),
        [
            ["parser:fix", "0", "finished"],
            ["parser:fix", "1", "skipped"],
            ["parser:refactor", "0", "skipped"],
            ["parser:refactor", "1", "skipped"]
        ]
    );
    assert_eq!(
        rows(&db, "SELECT loop_id, iteration, done FROM _smithers_ralph"),
        [["units", "1", "1"]]
    );
}

#[test]
fn dual_review_finishes_when_one_reviewer_fails() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let out = run(
        "dual_review",
        &db,
        &["run", "--input", r#"{"change": "add retry backoff"}"#],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sqlite(&db, "SELECT status FROM _smithers_runs"), "finished");
    assert_eq!(
        rows(
            &db,
            "SELECT node_id, status, last_error FROM _smithers_nodes ORDER BY node_id"
        ),
        [
            ["review-fix", "skipped", "NULL"],
            ["review-summary", "finished", "NULL"],
            ["review:claude", "finished", "NULL"],
            [
                "review:codex",
                "failed",
                "codex exited with status 1: stream disconnected before completion"
            ]
        ]
    );
    assert_eq!(
        rows(
            &db,
            "SELECT answered, approved, needs_fix FROM review_summary"
        ),
        [[r#"["claude"]"#, r#"["claude"]"#, "0"]]
    );
    assert_eq!(
        rows(&db, "SELECT node_id, approved FROM review"),
        [["review:claude", "1"]]
    );
}

/// A workflow binary whose output nobody reads any more (a supervisor that died, `| head`) still
/// runs to the end: stdout and stderr are pipes whose read ends are closed before it starts, so
/// every progress line, the final message and any log line fail with `EPIPE`, and none of them
/// may panic the drive.
#[test]
fn a_run_whose_stdout_and_stderr_are_closed_pipes_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    // Not `--quiet`: a progress line for every event, and info logs.
    let status = Command::new(example("ralph_converge"))
        .args(["--durability", "off", "--db"])
        .arg(&db)
        .args(["run", "--input", r#"{"square": 2.0}"#])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SMITHERS_WORKDIR", dir.path())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(closed())
        .stderr(closed())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(sqlite(&db, "SELECT status FROM _smithers_runs"), "finished");
    let value: f64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT value FROM estimate ORDER BY iteration DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((value - std::f64::consts::SQRT_2).abs() < 1e-12, "{value}");
}
