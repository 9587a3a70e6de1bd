//! What the store keeps about a run: supervisor keys, events identical to the ones delivered to
//! `on_event`, frames, and `ctx.state()` writes.
mod common;
use std::time::Duration;

use common::*;
use smithers_core::engine::EngineOptions;
use smithers_core::events::EventKind;
use smithers_core::node::{Parallel, Task, Workflow};
use smithers_core::Ctx;
use smithers_core::RunStatus;

#[tokio::test]
async fn supervisor_keys_are_written_by_the_engine() {
    let h = Harness::new();
    let engine = h.engine_with(
        EngineOptions {
            heartbeat: Duration::from_millis(20),
            ..EngineOptions::default()
        },
        |_ctx: &Ctx<()>| {
            Workflow::new()
                .child(
                    Task::<Num>::new()
                        .id("slow")
                        .run(|_t| async {
                            tokio::time::sleep(Duration::from_millis(120)).await;
                            Ok::<_, String>(num(1))
                        })
                        .build(),
                )
                .child(Task::<Num>::new().id("b").value(num(2)).build())
                .build()
        },
    );
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(h.state("supervisor.status").as_deref(), Some("done"));
    assert_eq!(
        h.state("supervisor.summary").as_deref(),
        Some("Run finished: 2 node(s)")
    );
    let beat = h.state("supervisor.heartbeat").expect("a heartbeat");
    assert!(beat.ends_with('Z') && beat.contains('T'), "{beat}");
    assert_eq!(h.state("supervisor.last_error"), None);

    let failing = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("bad")
                    .run(|_t| async { Err::<Num, _>("disk full".to_owned()) })
                    .build(),
            )
            .build()
    });
    let report = failing.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(h.state("supervisor.status").as_deref(), Some("error"));
    let expected = "node `bad` failed after 1 attempt(s): disk full";
    assert_eq!(h.state("supervisor.last_error").as_deref(), Some(expected));
    assert_eq!(
        h.state("supervisor.summary"),
        Some(format!("Run failed: {expected}"))
    );
}

#[tokio::test]
async fn events_delivered_to_on_event_match_the_persisted_events() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let extra = ctx
            .output_maybe::<Num>("a")
            .map(|a| Task::<Num>::new().id("c").value(num(a.n + 1)).build());
        Workflow::new()
            .child(
                Parallel::new()
                    .child(
                        Task::<Num>::new()
                            .id("a")
                            .run(|_t| async { Ok::<_, String>(num(1)) })
                            .build(),
                    )
                    .child(
                        Task::<Num>::new()
                            .id("b")
                            .retries(1)
                            .run(|t| async move {
                                if t.attempt() == 1 {
                                    Err("again".to_owned())
                                } else {
                                    Ok(num(2))
                                }
                            })
                            .build(),
                    )
                    .child(extra)
                    .child(
                        Task::<Num>::new()
                            .id("s")
                            .skip_if(true)
                            .value(num(0))
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let persisted: Vec<_> = h
        .store
        .events(&report.run_id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    let delivered: Vec<_> = h
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::NodeOutput { .. }))
        .cloned()
        .collect();
    assert_eq!(delivered, persisted);
    let kinds: Vec<&str> = persisted.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    for k in [
        "frame_rendered",
        "node_retrying",
        "node_skipped",
        "node_finished",
    ] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    // Sequence numbers are strictly increasing.
    let seqs: Vec<i64> = h
        .store
        .events(&report.run_id, 0)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn state_written_while_rendering_is_persisted_and_visible_next_render() {
    let h = Harness::new();
    let engine = h.engine(|ctx: &Ctx<()>| {
        let seen = ctx.state().get("greeting").map(str::to_owned);
        ctx.state().set("greeting", "hello");
        Workflow::new()
            .child(Task::<Num>::new().id("a").value(num(1)).build())
            .child(
                Task::<Num>::new()
                    .id("b")
                    .value(Num { n: 2, note: seen })
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(h.state("greeting").as_deref(), Some("hello"));
    let note: Option<String> = h
        .conn()
        .query_row(
            "SELECT note FROM num WHERE run_id = ?1 AND node_id = 'b'",
            [&report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(note.as_deref(), Some("hello"));
}

#[tokio::test]
async fn progress_lines_are_persisted_as_node_output_events_trimmed() {
    use smithers_core::node::{Task, Workflow};
    let h = Harness::new();
    let engine = h.engine(|_ctx: &smithers_core::Ctx<()>| {
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("talker")
                    .run(|t| async move {
                        t.progress("reading the code");
                        t.progress(&"x".repeat(10_000));
                        Ok::<_, String>(num(1))
                    })
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    let lines: Vec<String> = h
        .event_payloads(&report.run_id, "node_output")
        .into_iter()
        .map(|p| p["line"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "reading the code");
    assert!(
        lines[1].starts_with("xxxx") && lines[1].ends_with("… (10000 bytes)"),
        "{}",
        &lines[1][3990..]
    );
    assert!(lines[1].len() < 4100);
}

#[tokio::test]
async fn a_stored_time_that_is_not_rfc3339_is_an_error_naming_table_column_and_value() {
    let h = Harness::new();
    run_r_with_approval(&*h.store).await;
    let c = h.conn();
    c.execute(
        "UPDATE _smithers_runs SET created_at = 'yesterday' WHERE run_id = 'r'",
        [],
    )
    .unwrap();
    c.execute(
        "UPDATE _smithers_approvals SET decided_at = '2026-11-25 06:08:03' WHERE run_id = 'r'",
        [],
    )
    .unwrap();
    check_bad_times(&*h.store).await;
}

#[tokio::test]
async fn a_stored_status_or_input_no_smithers_writes_is_an_error_never_a_default() {
    use smithers_core::store::{ListedRun, NodeStatus, RunRecord};
    let h = Harness::new();
    good_and_r(&*h.store, |_| {}).await;
    let good = h.store.run("good").await.unwrap().unwrap();
    let good_nodes = h.store.nodes("good").await.unwrap();
    let events = h.store.events("r", 0).await.unwrap();
    let c = h.conn();
    c.execute_batch(
        "UPDATE _smithers_runs SET status = 'done' WHERE run_id = 'r';
         UPDATE _smithers_nodes SET status = 'ok' WHERE run_id = 'r'",
    )
    .unwrap();
    let run_err = check_bad_statuses(&*h.store).await;
    // A resume's load, a cancel and the strict listing stop on it too; the cancel writes nothing.
    for e in [
        h.store.load("r").await.unwrap_err(),
        h.store.request_cancel("r").await.unwrap_err(),
        h.store.runs().await.unwrap_err(),
    ] {
        assert_eq!(e.code(), "E_INVALID_RECORD", "{e}");
    }
    let cancel: i64 = c
        .query_row(
            "SELECT cancel_requested FROM _smithers_runs WHERE run_id = 'r'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cancel, 0, "a cancel of a damaged run writes nothing");

    // The listing shows the damaged run as damaged, with the error, and the others as they are.
    let listed = h.store.run_list().await.unwrap();
    assert_eq!(
        listed,
        [
            ListedRun::Damaged {
                run_id: "r".into(),
                error: run_err.to_string(),
            },
            ListedRun::Run(good.clone()),
        ]
    );

    // Input JSON that does not parse is an error too, not `null`.
    c.execute_batch(
        "UPDATE _smithers_runs SET status = 'running', input_json = '{topic: r' WHERE run_id = 'r'",
    )
    .unwrap();
    let input_err = h.store.run("r").await.unwrap_err();
    assert_eq!(input_err.code(), "E_INVALID_RECORD", "{input_err}");
    assert!(
        input_err.to_string().starts_with(
            "`_smithers_runs.input_json` holds `{topic: r`, which is not the JSON this column holds (key must be a string"
        ),
        "{input_err}"
    );
    assert!(
        input_err
            .to_string()
            .ends_with("; the database was edited or is damaged: correct the value or restore the database from a copy"),
        "{input_err}"
    );

    // Nothing was written or lost: the damaged values are still there to correct, the other
    // run reads as before, and correcting the values gives the run back.
    let stored: (String, String) = c
        .query_row(
            "SELECT status, input_json FROM _smithers_runs WHERE run_id = 'r'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stored, ("running".to_owned(), "{topic: r".to_owned()));
    assert_eq!(h.store.run("good").await.unwrap().unwrap(), good);
    assert_eq!(h.store.nodes("good").await.unwrap(), good_nodes);
    assert_eq!(h.store.events("r", 0).await.unwrap(), events);
    c.execute_batch(
        "UPDATE _smithers_runs SET input_json = '{\"topic\":\"r\"}' WHERE run_id = 'r';
         UPDATE _smithers_nodes SET status = 'finished' WHERE run_id = 'r'",
    )
    .unwrap();
    let r: RunRecord = h.store.run("r").await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.input),
        (RunStatus::Running, serde_json::json!({"topic": "r"}))
    );
    assert_eq!(
        h.store.nodes("r").await.unwrap()[0].status,
        NodeStatus::Finished
    );
}
