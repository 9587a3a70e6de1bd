//! The engine on PostgreSQL: a workflow runs to the end and resumes in a new process without
//! re-running finished nodes; connecting names host, port and database in every error and leaves
//! nothing half-migrated. Each test uses its own schema of the test server (skipped, saying so,
//! when none is reachable; a failure under `SMITHERS_REQUIRE_EXTERNAL=1`).
mod common;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::node::{Parallel, Sequence, Task, Workflow};
use smithers_core::store::conformance::{test_postgres_url, PgSchema};
use smithers_core::store::{PostgresStore, RunStatus, Store};
use smithers_core::{Ctx, Error, Node};
use tokio_util::sync::CancellationToken;

fn counted(id: &str, n: i64, hits: &Counter) -> Node {
    let hits = hits.clone();
    Task::<Num>::new()
        .id(id)
        .run(move |_t| {
            hits.hit();
            async move { Ok::<_, String>(num(n)) }
        })
        .build()
}

/// `a`, then `b`, `c`, `d` in parallel, then `e`, which blocks while `block` is set.
fn tree(
    hits: &Counter,
    block: &Arc<AtomicBool>,
    cancel: &CancellationToken,
) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    let (hits, block, cancel) = (hits.clone(), block.clone(), cancel.clone());
    move |_ctx| {
        let (block, cancel) = (block.clone(), cancel.clone());
        let e = Task::<Num>::new()
            .id("e")
            .run(move |_t| {
                let (block, cancel) = (block.clone(), cancel.clone());
                async move {
                    if block.load(Ordering::SeqCst) {
                        cancel.cancel();
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, String>(num(5))
                }
            })
            .build();
        Workflow::new()
            .name("pg")
            .child(
                Sequence::new()
                    .child(counted("a", 1, &hits))
                    .child(
                        Parallel::new()
                            .child(counted("b", 2, &hits))
                            .child(counted("c", 3, &hits))
                            .child(counted("d", 4, &hits))
                            .build(),
                    )
                    .child(e)
                    .build(),
            )
            .build()
    }
}

fn outputs(loaded: &smithers_core::store::LoadedRun) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = loaded
        .outputs
        .iter()
        .map(|(id, _, v)| (id.clone(), v["n"].as_i64().unwrap_or(-1)))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_cancelled_run_resumes_on_postgres_without_rerunning_finished_nodes() {
    let Some(schema) = PgSchema::create("a_cancelled_run_resumes_on_postgres").await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let (hits, block, cancel) = (
        Counter::default(),
        Arc::new(AtomicBool::new(true)),
        CancellationToken::new(),
    );
    let engine =
        Engine::new(store.clone(), tree(&hits, &block, &cancel)).with_options(EngineOptions {
            cancel: cancel.clone(),
            ..EngineOptions::default()
        });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Cancelled, "{report:?}");
    let run = report.run_id;
    assert_eq!(hits.get(), 4);
    assert_eq!(
        outputs(&store.load(&run).await.unwrap()),
        [
            ("a".into(), 1),
            ("b".into(), 2),
            ("c".into(), 3),
            ("d".into(), 4)
        ]
    );

    // A new process: a new pool on the same database, a new engine.
    block.store(false, Ordering::SeqCst);
    let store2: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
    let report = Engine::new(
        store2.clone(),
        tree(&hits, &block, &CancellationToken::new()),
    )
    .resume(Some(&run))
    .await
    .unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(hits.get(), 4, "finished nodes never run again");
    let loaded = store2.load(&run).await.unwrap();
    assert_eq!(outputs(&loaded).len(), 5);
    let e: Vec<(u32, String)> = store2
        .attempts(&run)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.node_id == "e")
        .map(|a| (a.attempt, a.status))
        .collect();
    assert_eq!(e, [(1, "cancelled".into()), (2, "finished".into())]);
    let kinds: Vec<String> = store2
        .events(&run, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind.name().to_owned())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_finished"));
    assert_eq!(
        store2.run(&run).await.unwrap().unwrap().status,
        RunStatus::Finished
    );
    drop((store, store2));
    schema.drop().await;
}

/// Connecting to `url` fails with a [`Error::Connect`]; its text.
async fn connect_error(url: &str) -> String {
    match PostgresStore::connect(url).await {
        Err(e @ Error::Connect { .. }) => e.to_string(),
        Err(other) => panic!("expected a connection error for {url}, got {other:?}"),
        Ok(_) => panic!("connecting to {url} must fail"),
    }
}

/// Whether the test server answers; says why not (a skip, or a failure when required).
async fn server_or_skip(test: &str) -> bool {
    match PgSchema::create(test).await {
        Some(s) => {
            s.drop().await;
            true
        }
        None => false,
    }
}

#[tokio::test]
async fn an_unreachable_server_is_named_with_host_port_and_database() {
    // Port 1 on the loopback: nothing listens there, on any machine.
    let e = connect_error("postgres://postgres@127.0.0.1:1/smithers").await;
    assert!(
        e.starts_with(
            "cannot use PostgreSQL database `smithers` at 127.0.0.1:1 (user `postgres`): the server cannot be reached ("
        ),
        "{e}"
    );
    assert!(
        e.ends_with("is PostgreSQL running and listening on that host and port?"),
        "{e}"
    );
}

#[tokio::test]
async fn an_unparsable_url_says_what_is_expected() {
    let e = connect_error("postgres://u:secret@127.0.0.1:notaport/db").await;
    assert!(
        e.starts_with("cannot use PostgreSQL URL `postgres://u:***@127.0.0.1:notaport/db`: the URL does not parse ("),
        "the password is hidden: {e}"
    );
    assert!(
        e.ends_with("expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, e.g. postgres://postgres@127.0.0.1:5432/smithers"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_database_is_named() {
    if !server_or_skip("a_missing_database_is_named").await {
        return;
    }
    let server = test_postgres_url();
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    let e = connect_error(&format!("{base}/smithers_no_such_db")).await;
    assert!(
        e.contains("PostgreSQL database `smithers_no_such_db` at ")
            && e.contains(": the database does not exist (database \"smithers_no_such_db\" does not exist); create it"),
        "{e}"
    );
}

#[tokio::test]
async fn a_refused_login_is_named() {
    if !server_or_skip("a_refused_login_is_named").await {
        return;
    }
    // A role that does not exist: refused even under trust authentication.
    let server = test_postgres_url();
    let (_, rest) = server.split_once("://").expect("a URL");
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let e = connect_error(&format!("postgres://smithers_no_such_role@{host_and_db}")).await;
    assert!(
        e.contains("(user `smithers_no_such_role`): the server refused authentication (role \"smithers_no_such_role\" does not exist); check the user and password"),
        "{e}"
    );
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_and_left_unchanged() {
    let Some(schema) = PgSchema::create("a_schema_newer_than_the_binary").await else {
        return;
    };
    drop(PostgresStore::connect(&schema.url).await.unwrap());
    // A newer smithers recorded a migration this binary does not have.
    let admin = PostgresStore::connect(&schema.url).await.unwrap();
    admin.state_set("marker", "kept").await.unwrap();
    drop(admin);
    let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let known: i64 = client
        .query_one("SELECT MAX(version) FROM _smithers_migrations", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(
            "INSERT INTO _smithers_migrations VALUES (999, 'from_the_future', 'x', 'now')",
        )
        .await
        .unwrap();
    let e = match PostgresStore::connect(&schema.url).await {
        Err(e @ Error::SchemaNewer { .. }) => e.to_string(),
        other => panic!("a newer schema must be refused, got {other:?}"),
    };
    assert!(
        e.contains(&format!(
            "schema `{}`, has schema version 999, but this binary knows versions up to {known};",
            schema.schema
        )),
        "{e}"
    );
    let rows = client
        .query(
            "SELECT version FROM _smithers_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut expected: Vec<i64> = (1..=known).collect();
    expected.push(999);
    assert_eq!(versions, expected, "nothing was migrated or removed");
    let marker: String = client
        .query_one("SELECT value FROM state WHERE key = 'marker'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(marker, "kept");
    drop(client);
    schema.drop().await;
}

#[tokio::test]
async fn a_failed_migration_leaves_no_table_behind() {
    let Some(schema) = PgSchema::create("a_failed_migration_leaves_no_table").await else {
        return;
    };
    // A table in the way of the first migration: it fails half-way through its statements.
    let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE _smithers_ralph (blocking INT)")
        .await
        .unwrap();
    let e = PostgresStore::connect(&schema.url)
        .await
        .expect_err("the migration must fail");
    assert!(
        e.to_string()
            .contains("relation \"_smithers_ralph\" already exists"),
        "{e}"
    );
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&schema.schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        ["_smithers_ralph"],
        "the migration was undone whole"
    );
    drop(client);
    schema.drop().await;
}

#[tokio::test]
async fn budget_raises_persist_on_postgres_and_name_an_unknown_run() {
    let Some(schema) = PgSchema::create("budget_raises_persist_on_postgres").await else {
        return;
    };
    let store = PostgresStore::connect(&schema.url).await.unwrap();
    store
        .create_run(smithers_core::store::NewRun {
            run_id: "r".into(),
            workflow: "w".into(),
            input: serde_json::json!({}),
            owner: "me".into(),
            lease_ttl: std::time::Duration::from_secs(60),
        })
        .await
        .unwrap();
    let raise = |node: Option<&str>, usd: f64, tokens: u64| smithers_core::budget::BudgetRaise {
        node_id: node.map(str::to_owned),
        add_usd: usd,
        add_tokens: tokens,
    };
    store.raise_budget("r", raise(None, 5.0, 0)).await.unwrap();
    store
        .raise_budget("r", raise(Some("fix"), 0.5, 1000))
        .await
        .unwrap();
    assert_eq!(
        store.budget_raises("r").await.unwrap(),
        [raise(None, 5.0, 0), raise(Some("fix"), 0.5, 1000)]
    );
    assert!(matches!(
        store.raise_budget("nope", raise(None, 1.0, 0)).await,
        Err(Error::RunNotFound(r)) if r == "nope"
    ));
    drop(store);
    schema.drop().await;
}

#[tokio::test]
async fn a_stored_time_that_is_not_rfc3339_is_an_error_naming_table_column_and_value() {
    let Some(schema) = PgSchema::create("a_stored_time_that_is_not_rfc3339").await else {
        return;
    };
    let store = PostgresStore::connect(&schema.url).await.unwrap();
    run_r_with_approval(&store).await;
    let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "UPDATE _smithers_runs SET created_at = 'yesterday' WHERE run_id = 'r';
             UPDATE _smithers_approvals SET decided_at = '2026-11-25 06:08:03' WHERE run_id = 'r'",
        )
        .await
        .unwrap();
    check_bad_times(&store).await;
    drop((client, store));
    schema.drop().await;
}

#[tokio::test]
async fn a_stored_status_or_structure_no_smithers_writes_is_an_error_never_a_default() {
    use smithers_core::node::FrameNode;
    use smithers_core::store::{ListedRun, NodeStatus, Write};
    let Some(schema) = PgSchema::create("a_stored_status_no_smithers_writes").await else {
        return;
    };
    let store = PostgresStore::connect(&schema.url).await.unwrap();
    good_and_r(&store, |b| {
        b.push(Write::Frame {
            frame_no: 0,
            hash: "h".into(),
            tree: FrameNode::from_legacy_text("Workflow w\n  Task a"),
        })
    })
    .await;
    let good = store.run("good").await.unwrap().unwrap();
    let good_nodes = store.nodes("good").await.unwrap();
    let events = store.events("r", 0).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "UPDATE _smithers_runs SET status = 'done' WHERE run_id = 'r';
             UPDATE _smithers_nodes SET status = 'ok' WHERE run_id = 'r';
             UPDATE _smithers_frames SET structure = '{\"kind\": ' WHERE run_id = 'r'",
        )
        .await
        .unwrap();
    let tail = "; the database was edited or is damaged: correct the value or restore the database from a copy";
    let run_err = check_bad_statuses(&store).await;
    let frames_err = store.frames("r").await.unwrap_err();
    assert_eq!(frames_err.code(), "E_INVALID_RECORD", "{frames_err}");
    assert!(
        frames_err.to_string().starts_with(
            "`_smithers_frames.structure` holds `{\"kind\": `, which is not the JSON this column holds ("
        ) && frames_err.to_string().ends_with(tail),
        "{frames_err}"
    );
    for e in [
        store.load("r").await.unwrap_err(),
        store.request_cancel("r").await.unwrap_err(),
        store.runs().await.unwrap_err(),
    ] {
        assert_eq!(e.code(), "E_INVALID_RECORD", "{e}");
    }
    let cancel: bool = client
        .query_one(
            "SELECT cancel_requested FROM _smithers_runs WHERE run_id = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!cancel, "a cancel of a damaged run writes nothing");

    // The listing shows the damaged run as damaged, with the error, and the others as they are.
    assert_eq!(
        store.run_list().await.unwrap(),
        [
            ListedRun::Damaged {
                run_id: "r".into(),
                error: run_err.to_string(),
            },
            ListedRun::Run(good.clone()),
        ]
    );

    // The input is JSONB: PostgreSQL itself refuses text that is not JSON, so no row holds it.
    let refused = client
        .batch_execute("UPDATE _smithers_runs SET input_json = '{topic: r' WHERE run_id = 'r'")
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("invalid input syntax for type json")
            || format!("{refused:?}").contains("invalid input syntax for type json"),
        "{refused:?}"
    );

    // Nothing was written or lost: the damaged values are still there to correct, the other
    // run reads as before, and correcting the values gives the run back.
    let row = client
        .query_one(
            "SELECT status, input_json FROM _smithers_runs WHERE run_id = 'r'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "done");
    assert_eq!(
        row.get::<_, serde_json::Value>(1),
        serde_json::json!({"topic": "r"})
    );
    assert_eq!(store.run("good").await.unwrap().unwrap(), good);
    assert_eq!(store.nodes("good").await.unwrap(), good_nodes);
    assert_eq!(store.events("r", 0).await.unwrap(), events);
    client
        .batch_execute(
            "UPDATE _smithers_runs SET status = 'running' WHERE run_id = 'r';
             UPDATE _smithers_nodes SET status = 'finished' WHERE run_id = 'r';
             UPDATE _smithers_frames SET structure = NULL WHERE run_id = 'r'",
        )
        .await
        .unwrap();
    assert_eq!(
        store.run("r").await.unwrap().unwrap().status,
        RunStatus::Running
    );
    assert_eq!(
        store.nodes("r").await.unwrap()[0].status,
        NodeStatus::Finished
    );
    // A frame with no structure (recorded before frames were data) reads from its text.
    assert_eq!(store.frames("r").await.unwrap().len(), 1);
    drop((client, store));
    schema.drop().await;
}
