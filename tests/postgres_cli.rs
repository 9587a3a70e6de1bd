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
