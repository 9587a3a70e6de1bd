//! `--db postgres://...` (or `SMITHERS_DB`) selects the PostgreSQL store for workflow binaries and
//! for the `smithers` binary; connection errors name host, port and database. Each test uses its
//! own schema of the test server (skipped, saying so, when none is reachable; a failure under
//! `SMITHERS_REQUIRE_EXTERNAL=1`).

use std::process::{Command, ExitCode, Output};

use smithers::cli::main_from;
use smithers::prelude::*;
use smithers_core::store::conformance::{test_postgres_url, PgSchema};

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Greeting {
    text: String,
    tags: Vec<String>,
}

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Count {
    n: i64,
}

fn hello(ctx: &Ctx<()>) -> Node {
    let greeted = ctx.output_maybe::<Greeting>("greet").is_some();
    workflow! {
        <Workflow name="hello">
            <Task id="greet" output=Greeting value={Greeting { text: "hello".into(), tags: vec!["a".into()] }} />
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

fn smithers(args: &[&str], env_db: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smithers"));
    cmd.env_remove("SMITHERS_DB");
    if let Some(db) = env_db {
        cmd.env("SMITHERS_DB", db);
    }
    cmd.args(args).output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_run_on_postgres_is_read_back_by_the_smithers_binary() {
    let Some(schema) = PgSchema::create("a_run_on_postgres_is_read_back").await else {
        return;
    };
    let code = main_from(
        [
            "hello",
            "--quiet",
            "--db",
            &schema.url,
            "run",
            "--run-id",
            "r1",
        ],
        hello,
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS);

    let runs = json(&smithers(&["--db", &schema.url, "runs", "--json"], None));
    assert_eq!(
        (&runs[0]["run_id"], &runs[0]["status"]),
        (&"r1".into(), &"finished".into())
    );
    // SMITHERS_DB selects it too.
    let status = json(&smithers(&["status", "r1", "--json"], Some(&schema.url)));
    let nodes: Vec<(&str, u64)> = status["nodes"]
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

    // The outputs are typed columns: TEXT and JSONB.
    let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT text, tags, pg_typeof(tags)::TEXT FROM greeting WHERE run_id = 'r1'",
            &[],
        )
        .await
        .unwrap();
    let (text, tags, kind): (String, serde_json::Value, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (text.as_str(), tags, kind.as_str()),
        ("hello", serde_json::json!(["a"]), "jsonb")
    );
    drop(client);
    schema.drop().await;
}

#[test]
fn an_unreachable_server_is_named_by_both_binaries() {
    let url = "postgres://postgres@127.0.0.1:1/smithers";
    let o = smithers(&["--db", url, "runs"], None);
    assert!(!o.status.success());
    let expected = "cannot use PostgreSQL database `smithers` at 127.0.0.1:1 (user `postgres`): the server cannot be reached (";
    assert!(stderr(&o).contains(expected), "{}", stderr(&o));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(main_from(["hello", "--quiet", "--db", url, "run"], hello));
    assert_ne!(code, ExitCode::SUCCESS);
}

#[test]
fn an_unparsable_url_is_refused_with_the_expected_form() {
    let o = smithers(&["--db", "postgres://u:pw@127.0.0.1:port/x", "runs"], None);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(
            "cannot use PostgreSQL URL `postgres://u:***@127.0.0.1:port/x`: the URL does not parse"
        ) && e.contains("expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
            && !e.contains("pw"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_database_is_named_by_the_smithers_binary() {
    let Some(schema) = PgSchema::create("a_missing_database_is_named").await else {
        return;
    };
    schema.drop().await;
    let server = test_postgres_url();
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let o = smithers(&["--db", &format!("{base}/smithers_absent"), "runs"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("PostgreSQL database `smithers_absent` at ")
            && stderr(&o).contains("the database does not exist"),
        "{}",
        stderr(&o)
    );
}

/// Each line of `o`'s stdout as JSON (a listing, or one event per line).
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{o:?}");
    if let Ok(whole) = serde_json::from_slice(&o.stdout) {
        return vec![whole];
    }
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn db_copy_moves_a_whole_sqlite_database_into_postgres() {
    let Some(schema) = PgSchema::create("db_copy_moves_a_whole_sqlite_database").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let db = path.to_str().unwrap();
    let code = main_from(
        ["hello", "--quiet", "--db", db, "run", "--run-id", "r1"],
        hello,
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(smithers(&["--db", db, "state", "set", "k", "v"], None)
        .status
        .success());

    let o = smithers(&["db", "copy", "--from", db, "--to", &schema.url], None);
    assert!(o.status.success(), "{o:?}");
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        report.contains("_smithers_runs")
            && report.contains("greeting")
            && report.contains("count"),
        "{report}"
    );

    // Both databases now tell the same story, command by command.
    let listings: [&[&str]; 4] = [
        &["runs", "--json"],
        &["status", "r1", "--json"],
        &["attempts", "r1", "--json"],
        &["events", "r1", "--json"],
    ];
    for args in listings {
        let from = json_lines(&smithers(&[&["--db", db][..], args].concat(), None));
        let to = json_lines(&smithers(
            &[&["--db", &schema.url][..], args].concat(),
            None,
        ));
        assert!(!from.is_empty(), "{args:?}");
        assert_eq!(
            from,
            to,
            "`smithers {}` differs after the copy",
            args.join(" ")
        );
    }
    let frames = |d: &str| smithers(&["--db", d, "frames", "r1", "--all"], None).stdout;
    assert_eq!(frames(db), frames(&schema.url));
    let v = smithers(&["--db", &schema.url, "state", "get", "k"], None);
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "v");

    // The outputs arrived in typed columns.
    let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT g.text, g.tags, c.n FROM greeting g JOIN count c USING (run_id) WHERE run_id = 'r1'",
            &[],
        )
        .await
        .unwrap();
    let (text, tags, n): (String, serde_json::Value, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (text.as_str(), tags, n),
        ("hello", serde_json::json!(["a"]), 3)
    );

    // A second copy would duplicate `r1`: refused by name, nothing written.
    let events_before: i64 = client
        .query_one("SELECT COUNT(*) FROM _smithers_events", &[])
        .await
        .unwrap()
        .get(0);
    let o = smithers(&["db", "copy", "--from", db, "--to", &schema.url], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already has run(s) `r1`; nothing was copied"),
        "{}",
        stderr(&o)
    );
    let events_after: i64 = client
        .query_one("SELECT COUNT(*) FROM _smithers_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events_before, events_after);
    drop(client);
    schema.drop().await;
}

/// Time travel from the `smithers` binary on PostgreSQL: `rewind` cuts a run at a frame and
/// the workflow binary's `resume` re-runs what was cut; `fork` copies a run up to a frame into
/// a new run that `resume --run-id NEW` finishes, leaving the parent as it was.
#[tokio::test]
async fn rewind_and_fork_work_from_the_smithers_binary_on_postgres() {
    let Some(schema) = PgSchema::create("rewind_and_fork_work_from_the_smithers").await else {
        return;
    };
    let db = schema.url.as_str();
    let hello_cmd = |args: &[&str]| {
        let args: Vec<String> = ["hello", "--quiet", "--db", db]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        main_from(args, hello)
    };
    assert_eq!(
        hello_cmd(&["run", "--run-id", "r1"]).await,
        ExitCode::SUCCESS
    );
    let attempts = |run: &str| -> Vec<(String, u64)> {
        let v = json(&smithers(&["--db", db, "status", run, "--json"], None));
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["node_id"].as_str().unwrap().to_owned(),
                    n["attempts"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let status = |run: &str| {
        json(&smithers(&["--db", db, "status", run, "--json"], None))["run"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(attempts("r1"), [("greet".into(), 1), ("count".into(), 2)]);

    // Fork at frame 2 (`count` mounted, `greet` done): the fork runs only `count`.
    let o = smithers(&["--db", db, "fork", "r1", "--frame", "2"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let fork = out
        .strip_prefix("run ")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {out}"))
        .to_owned();
    assert!(out.contains("forked from run r1 at frame 2"), "{out}");
    assert_eq!(status(&fork), "cancelled");
    assert_eq!(
        hello_cmd(&["resume", "--run-id", &fork]).await,
        ExitCode::SUCCESS
    );
    assert_eq!(status(&fork), "finished");
    let forked = attempts(&fork);
    assert_eq!(
        forked.iter().find(|n| n.0 == "greet").map(|n| n.1),
        Some(1),
        "the fork kept `greet` from its parent: {forked:?}"
    );

    // Rewind the parent to frame 1 (before `greet` ran): both nodes run again on resume.
    let o = smithers(&["--db", db, "rewind", "r1", "--frame", "1"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("steps now inactive: none; nodes to re-run: 2"),
        "{out}"
    );
    assert_eq!(status("r1"), "cancelled");
    let events = json_lines(&smithers(&["--db", db, "events", "r1", "--json"], None));
    assert!(
        events.iter().any(|e| e.to_string().contains("run_rewound")),
        "{events:?}"
    );
    assert_eq!(
        hello_cmd(&["resume", "--run-id", "r1"]).await,
        ExitCode::SUCCESS
    );
    assert_eq!(status("r1"), "finished");
    assert_eq!(attempts("r1"), [("greet".into(), 2), ("count".into(), 3)]);

    // A frame the run never had is refused by name.
    let o = smithers(&["--db", db, "rewind", "r1", "--frame", "9"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("run `r1` has no frame 9"),
        "{}",
        stderr(&o)
    );
    schema.drop().await;
}
