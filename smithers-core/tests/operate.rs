//! What operators read and ask from another process: recorded frames, and the
//! `cancel_requested` flag that `smithers cancel` sets and the driving engine polls.
mod common;
use std::time::Duration;

use common::*;
use smithers_core::node::{Branch, FrameNode, Sequence, Task, Workflow};
use smithers_core::store::lease_owner;
use smithers_core::store::{
    CancelOutcome, NewRun, NodeRecord, NodeStatus, RunStatus, Write, WriteBatch,
};
use smithers_core::{Ctx, Error};

/// A run whose lease is held by a live process (this one) for `lease_ttl`.
fn new_run(run_id: &str, lease_ttl: Duration) -> NewRun {
    NewRun {
        run_id: run_id.into(),
        workflow: "w".into(),
        input: serde_json::Value::Null,
        owner: lease_owner(),
        lease_ttl,
    }
}

const LIVE: Duration = Duration::from_secs(30);

fn set_status(run_id: &str, status: RunStatus) -> WriteBatch {
    let mut b = WriteBatch::new(run_id);
    b.push(Write::RunStatus {
        status,
        error: None,
    });
    b
}

#[tokio::test]
async fn frames_are_read_back_in_order_and_the_latest_by_default() {
    let h = Harness::new();
    // `b` appears once `a` has its output: two shapes, two frames.
    let engine = h.engine(|ctx: &Ctx<()>| {
        let mut seq = Sequence::new().child(Task::<Num>::new().id("a").value(num(1)).build());
        if ctx.output_maybe::<Num>("a").is_some() {
            seq = seq.child(Task::<Num>::new().id("b").value(num(2)).build());
        }
        Workflow::new().name("grow").child(seq.build()).build()
    });
    let report = engine.run_with_id("r1", ()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished);

    let frames = h.store.frames("r1").await.unwrap();
    let numbers: Vec<u32> = frames.iter().map(|f| f.frame_no).collect();
    assert_eq!(numbers, [1, 2]);
    assert!(!frames[0].tree.contains("id=\"b\""), "{}", frames[0].tree);
    assert!(frames[1].tree.contains("id=\"b\""), "{}", frames[1].tree);

    let latest = h.store.frame("r1", None).await.unwrap().unwrap();
    assert_eq!(latest, frames[1]);
    let first = h.store.frame("r1", Some(1)).await.unwrap().unwrap();
    assert_eq!(first, frames[0]);
    assert_eq!(h.store.frame("r1", Some(9)).await.unwrap(), None);
    assert!(h.store.frames("nope").await.unwrap().is_empty());
}

#[tokio::test]
async fn frames_are_stored_as_data_and_their_text_is_rendered_from_it() {
    let h = Harness::new();
    let engine = h.engine(|_: &Ctx<()>| {
        Workflow::new()
            .name("shapes")
            .child(
                Branch::new()
                    .cond(false)
                    .then(Task::<Num>::new().id("yes").value(num(1)).build())
                    .otherwise(Task::<Num>::new().id("no").value(num(2)).build())
                    .build(),
            )
            .build()
    });
    engine.run_with_id("r1", ()).await.unwrap();
    let (text, json): (String, String) = h
        .conn()
        .query_row(
            "SELECT tree, structure FROM _smithers_frames WHERE run_id = 'r1' AND frame_no = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let structure: FrameNode = serde_json::from_str(&json).unwrap();
    assert_eq!(structure.to_text(), text);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["tag"], "Workflow");
    assert_eq!(v["label"], "shapes");
    let branch = &v["children"][0];
    assert_eq!(branch["tag"], "Branch");
    assert_eq!(
        (
            branch["children"][0]["tag"].as_str(),
            branch["children"][0]["mounted"].as_bool()
        ),
        (Some("then"), Some(false))
    );
    assert_eq!(branch["children"][0]["children"][0]["id"], "yes");
    assert_eq!(branch["children"][0]["children"][0]["mounted"], false);
    assert_eq!(branch["children"][1]["children"][0]["id"], "no");
    assert_eq!(branch["children"][1]["children"][0]["mounted"], true);
    let frame = h.store.frame("r1", Some(1)).await.unwrap().unwrap();
    assert_eq!(frame.structure, structure);
    assert_eq!(frame.tree, text);
}

#[tokio::test]
async fn a_frame_recorded_as_text_by_an_older_version_is_read_from_its_text() {
    let h = Harness::new();
    h.store.create_run(new_run("old", LIVE)).await.unwrap();
    let text = "<Workflow name=\"w\">\n  <Task id=\"a\" output=Num agent=claude />\n</Workflow>\n";
    h.conn()
        .execute(
            "INSERT INTO _smithers_frames (run_id, frame_no, tree_hash, tree, created_at)
             VALUES ('old', 1, '00000000000000aa', ?1, '2026-11-25T06:08:03.123Z')",
            [text],
        )
        .unwrap();
    let frame = h.store.frame("old", None).await.unwrap().unwrap();
    assert_eq!(frame.tree, text);
    let lines: Vec<_> = frame
        .structure
        .lines()
        .iter()
        .map(|l| {
            (
                l.depth,
                l.node.tag.clone(),
                l.node.display_label().map(str::to_owned),
                l.node.agent.clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (0, "Workflow".to_owned(), Some("w".to_owned()), None),
            (
                1,
                "Task".to_owned(),
                Some("a".to_owned()),
                Some("claude".to_owned())
            ),
        ]
    );
}

#[tokio::test]
async fn cancel_request_sets_the_flag_until_the_run_is_final_or_resumed() {
    let h = Harness::new();
    h.store.create_run(new_run("r1", LIVE)).await.unwrap();
    assert!(!h.store.cancel_requested("r1").await.unwrap());

    // Another process (a second store on the same file) asks; the driver sees it.
    let other = h.reopen();
    let outcome = other.request_cancel("r1").await.unwrap();
    assert!(
        matches!(&outcome, CancelOutcome::Requested { owner } if owner.contains(':')),
        "{outcome:?}"
    );
    assert!(h.store.cancel_requested("r1").await.unwrap());

    // Reaching a final status answers the request.
    h.store
        .write(set_status("r1", RunStatus::Cancelled))
        .await
        .unwrap();
    assert!(!h.store.cancel_requested("r1").await.unwrap());

    // A final run is left alone: the status says why nothing was set.
    assert_eq!(
        other.request_cancel("r1").await.unwrap(),
        CancelOutcome::AlreadyFinal(RunStatus::Cancelled)
    );
    assert!(!h.store.cancel_requested("r1").await.unwrap());

    // A request left behind does not cancel the run's resume at once.
    let fence = h.store.create_run(new_run("r2", LIVE)).await.unwrap();
    other.request_cancel("r2").await.unwrap();
    h.store.reset_for_resume("r2", &fence).await.unwrap();
    assert!(!h.store.cancel_requested("r2").await.unwrap());
}

#[tokio::test]
async fn cancel_of_a_run_nobody_drives_marks_it_cancelled_at_once() {
    let h = Harness::new();
    // The lease expired: its process is gone (or hung past its lease).
    h.store
        .create_run(new_run("r1", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        h.store.request_cancel("r1").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(h.run_status("r1").0, "cancelled");
    assert!(!h.store.cancel_requested("r1").await.unwrap());
    assert_eq!(h.event_log("r1"), ["run_cancelled"]);
}

#[tokio::test]
async fn cancel_of_an_unknown_run_names_it() {
    let h = Harness::new();
    let e = h.store.request_cancel("ghost").await.unwrap_err();
    assert!(matches!(&e, Error::RunNotFound(id) if id == "ghost"), "{e}");
    let e = h.store.cancel_requested("ghost").await.unwrap_err();
    assert!(matches!(&e, Error::RunNotFound(id) if id == "ghost"), "{e}");
}

#[tokio::test]
async fn a_database_from_before_the_flag_gains_it_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    {
        // What version 0.1 of the store left: migration 1 only, and a run.
        let sql = include_str!("../migrations/0001_init.sql");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE _smithers_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
               checksum TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .unwrap();
        c.execute_batch(sql).unwrap();
        use sha2::Digest;
        let sum = hex::encode(&sha2::Sha256::digest(sql.as_bytes())[..16]);
        c.execute(
            "INSERT INTO _smithers_migrations VALUES (1, 'init', ?1, '2025-01-01T00:00:00Z')",
            [sum],
        )
        .unwrap();
        c.execute(
            "INSERT INTO _smithers_runs (run_id, workflow, status, input_json, created_at, updated_at)
             VALUES ('old', 'w', 'running', 'null', 'x', 'x')",
            [],
        )
        .unwrap();
    }
    let store =
        smithers_core::store::SqliteStore::open(&db, smithers_core::store::Durability::Normal)
            .unwrap();
    use smithers_core::store::Store;
    assert!(!store.cancel_requested("old").await.unwrap());
    // Its run has no lease: cancelled at once, through the new column too.
    assert_eq!(
        store.request_cancel("old").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(!store.cancel_requested("old").await.unwrap());
}

#[tokio::test]
async fn a_cancel_requested_from_another_handle_stops_the_driving_engine() {
    use smithers_core::engine::EngineOptions;
    use smithers_core::node::{Task, Workflow};
    use smithers_core::store::{CancelOutcome, RunStatus};
    let h = Harness::new();
    let engine = h.engine_with(
        EngineOptions {
            cancel_poll: std::time::Duration::from_millis(20),
            ..EngineOptions::default()
        },
        |_ctx: &smithers_core::Ctx<()>| {
            Workflow::new()
                .child(
                    Task::<Num>::new()
                        .id("forever")
                        .run(|t| async move {
                            t.cancelled().cancelled().await;
                            Err::<Num, _>("stopped")
                        })
                        .build(),
                )
                .build()
        },
    );
    let other = h.reopen();
    let canceller = tokio::spawn(async move {
        loop {
            if let Some(run) = other.runs().await.unwrap().first() {
                if matches!(
                    other.request_cancel(&run.run_id).await.unwrap(),
                    CancelOutcome::Requested { .. }
                ) {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let report = tokio::time::timeout(std::time::Duration::from_secs(10), engine.run(()))
        .await
        .expect("the run stopped")
        .unwrap();
    canceller.await.unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(h.run_status(&report.run_id), ("cancelled".into(), None));
    assert!(
        !h.store.cancel_requested(&report.run_id).await.unwrap(),
        "a final status clears the flag"
    );
    assert_eq!(h.attempts(&report.run_id, "forever")[0].2, "cancelled");
}

#[tokio::test]
async fn cancel_of_a_run_whose_driver_died_settles_its_attempts_and_clears_the_lease() {
    let h = Harness::new();
    // A driver started an attempt, then its lease ran out (it died, or hangs past its lease).
    let dead = h
        .store
        .create_run(new_run("r1", Duration::ZERO))
        .await
        .unwrap();
    let mut b = WriteBatch::new("r1");
    b.push(Write::Node(NodeRecord {
        node_id: "a".into(),
        iteration: 0,
        status: NodeStatus::Running,
        attempts: 1,
        output_table: None,
        loop_id: None,
        last_error: None,
    }));
    b.push(Write::AttemptStart {
        node_id: "a".into(),
        iteration: 0,
        attempt: 1,
        agent: None,
        owner: dead.owner.clone(),
    });
    h.store.write(b.fenced(&dead)).await.unwrap();

    assert_eq!(
        h.store.request_cancel("r1").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(h.run_status("r1"), ("cancelled".into(), None));
    assert_eq!(
        h.attempts("r1", "a"),
        [(
            0,
            1,
            "abandoned".into(),
            Some(
                "the process driving this attempt stopped before it ended; the run was cancelled"
                    .into()
            )
        )]
    );
    let nodes = h.store.nodes("r1").await.unwrap();
    assert_eq!(
        (nodes[0].node_id.as_str(), nodes[0].status),
        ("a", NodeStatus::Pending)
    );
    let run = h.store.run("r1").await.unwrap().unwrap();
    assert_eq!((run.lease_owner, run.lease_expires_ms), (None, None));
    assert_eq!(h.event_log("r1"), ["run_cancelled"]);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM _smithers_attempts WHERE status = 'in-progress'"),
        0
    );
    h.integrity_ok();
    // The driver, had it only been paused, is fenced out by the cleared lease.
    let mut late = WriteBatch::new("r1");
    late.push(Write::RunStatus {
        status: RunStatus::Failed,
        error: Some("late".into()),
    });
    let e = h.store.write(late.fenced(&dead)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "lost the lease of run `r1`: the lease was released: the run was cancelled, or another process drove it and let it go; this process stops without writing anything more, so that two processes never drive one run"
    );
    assert_eq!(h.run_status("r1"), ("cancelled".into(), None));
}
