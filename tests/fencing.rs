//! Fencing: a driver paused (SIGSTOP) past its lease while a second process takes the run over
//! commits nothing once continued — no output, node state, attempt, event or run status — and
//! exits with `E_LEASE_LOST`; the run finishes with exactly one output per node.
//!
//! The drivers are this test binary itself, re-executed as a workflow binary (see
//! `common::child`), with a lease of a fraction of a second so the takeover comes quickly.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::child::{
    append, finish, run_as_workflow_binary, signal, stop_outside_a_transaction, wait_until,
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

const NODES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];
const RUN: &str = "fenced";

/// A sequence of tasks that log `start <node> <pid>` and `end <node> <pid>` around a sleep.
fn fence_workflow(log: PathBuf, millis: u64) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    move |_ctx| {
        let tasks = NODES.iter().map(|id| {
            let (node, log) = (id.to_string(), log.clone());
            Task::<Stamp>::new()
                .id(*id)
                .run(move |_t| {
                    let (node, log) = (node.clone(), log.clone());
                    async move {
                        let pid = std::process::id();
                        append(&log, &format!("start {node} {pid}"));
                        tokio::time::sleep(Duration::from_millis(millis)).await;
                        append(&log, &format!("end {node} {pid}"));
                        Ok::<_, String>(Stamp {
                            node,
                            pid: i64::from(pid),
                        })
                    }
                })
                .build()
        });
        Workflow::new()
            .name("fence")
            .child(Sequence::new().child(tasks).build())
            .build()
    }
}

/// Child entry point: when `SMITHERS_CHILD_ARGS` is set, behave as a workflow binary.
#[test]
fn fence_child() {
    run_as_workflow_binary(fence_workflow);
}

/// How the paused driver's lease runs out.
#[derive(Clone, Copy, Debug)]
enum Expiry {
    /// A 600 ms lease runs out while the driver is stopped. Its renewal timer is overdue when
    /// it is continued, so it may hear of the loss from the renewal before its attempt's end.
    WhilePaused,
    /// A 60 s lease whose expiry the test moves into the past while the driver is stopped (the
    /// state a longer pause leaves). Its next renewal is far off, so the first thing it does
    /// when continued is commit the end of the attempt it was in: the late commit the store
    /// must refuse.
    RenewalFarOff,
}

/// When the paused driver is continued, counted from the takeover.
#[derive(Clone, Copy, Debug)]
enum Continue {
    /// As soon as the second driver holds the lease.
    Immediately,
    /// While the second driver runs the node the first was running.
    MidAttempt,
    /// After the second driver committed that node's output.
    AfterItCommittedTheSameNode,
}

/// Everything in the database a driver with owner `host:<pid>:nonce` can be told apart by.
#[derive(Debug, PartialEq)]
struct Rows {
    /// Output rows executed by the process (node).
    outputs: Vec<String>,
    /// Its attempts: node, attempt, status.
    attempts: Vec<(String, u32, String)>,
}

fn rows_of(c: &rusqlite::Connection, pid: u32) -> Rows {
    let mut st = c
        .prepare("SELECT node FROM stamp WHERE run_id = ?1 AND pid = ?2 ORDER BY node")
        .unwrap();
    let outputs = st
        .query_map(rusqlite::params![RUN, pid], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut st = c
        .prepare(
            "SELECT node_id, attempt, status FROM _smithers_attempts
             WHERE run_id = ?1 AND owner LIKE ?2 ORDER BY node_id, attempt",
        )
        .unwrap();
    let attempts = st
        .query_map(rusqlite::params![RUN, format!("%:{pid}:%")], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    Rows { outputs, attempts }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn paused_driver_commits_nothing_after_the_takeover(expiry_by: Expiry, when: Continue) {
    let env = ChildEnv::new("fence_child");
    // The first driver renews its lease every third of its period, until it is stopped.
    let ttl = match expiry_by {
        Expiry::WhilePaused => 600,
        Expiry::RenewalFarOff => 60_000,
    };
    let mut first = env.spawn(&format!("--lease-ttl-ms {ttl} run --run-id {RUN}"), 400);
    let pid_a = first.id();
    env.wait_for(&format!("start n1 {pid_a}"), 1, &mut first);
    stop_outside_a_transaction(&env, &first);
    let c = env.conn();
    c.busy_timeout(Duration::from_secs(10)).unwrap();

    // What the first driver committed before it was paused: n0, and n1 in progress.
    let before = rows_of(&c, pid_a);
    let running: Vec<&(String, u32, String)> = before
        .attempts
        .iter()
        .filter(|a| a.2 == "in-progress")
        .collect();
    assert_eq!(
        running.len(),
        1,
        "the paused driver is inside one attempt: {before:?}"
    );
    let paused_node = running[0].0.clone();
    let last_seq_before: i64 = c
        .query_row("SELECT MAX(seq) FROM _smithers_events", [], |r| r.get(0))
        .unwrap();

    // Its lease runs out while it is stopped.
    let expiry = |c: &rusqlite::Connection| -> i64 {
        c.query_row(
            "SELECT lease_expires_ms FROM _smithers_runs WHERE run_id = ?1",
            [RUN],
            |r| r.get(0),
        )
        .unwrap()
    };
    if let Expiry::RenewalFarOff = expiry_by {
        c.execute(
            "UPDATE _smithers_runs SET lease_expires_ms = ?2 WHERE run_id = ?1",
            rusqlite::params![RUN, now_ms() - 1],
        )
        .unwrap();
    }
    while expiry(&c) >= now_ms() {
        std::thread::sleep(Duration::from_millis(10));
    }

    // A second driver takes the run over.
    let mut second = env.spawn(&format!("resume --run-id {RUN}"), 400);
    let pid_b = second.id();
    let holder = |c: &rusqlite::Connection| -> (Option<String>, i64) {
        c.query_row(
            "SELECT lease_owner, lease_epoch FROM _smithers_runs WHERE run_id = ?1",
            [RUN],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    wait_until("the takeover", &mut second, || {
        holder(&c)
            .0
            .is_some_and(|o| o.contains(&format!(":{pid_b}:")))
    });
    assert_eq!(holder(&c).1, 2, "the takeover is lease epoch 2");
    match when {
        Continue::Immediately => {}
        Continue::MidAttempt => {
            env.wait_for(&format!("start {paused_node} {pid_b}"), 1, &mut second)
        }
        Continue::AfterItCommittedTheSameNode => {
            wait_until("the second driver's output", &mut second, || {
                c.query_row(
                    "SELECT pid FROM stamp WHERE run_id = ?1 AND node = ?2",
                    [RUN, &paused_node],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .unwrap()
                .is_some()
            })
        }
    }
    signal(&first, libc::SIGCONT);

    let (code, stderr) = finish(first);
    let says = |text: &str| stderr.contains(text);
    assert!(
        says("error [E_LEASE_LOST]: lost the lease of run `fenced`: `")
            && says(&format!(":{pid_b}:"))
            && says("` took the run over (lease epoch 2, this process `")
            && says(&format!(":{pid_a}:"))
            && says("` held epoch 1); this process stops without writing anything more, so that two processes never drive one run"),
        "{expiry_by:?}/{when:?}: the paused driver says it lost the lease to the second: {stderr}"
    );
    assert_eq!(
        code,
        Some(3),
        "{expiry_by:?}/{when:?}: exit code of a lost lease: {stderr}"
    );
    let (code, stderr) = finish(second);
    assert_eq!(
        code,
        Some(0),
        "{expiry_by:?}/{when:?}: the second driver finishes: {stderr}"
    );

    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    // The first driver committed no row after the takeover: its outputs are what they were,
    // and its attempts too, except that the takeover abandoned the one it was in.
    let after = rows_of(&c, pid_a);
    let expected = Rows {
        outputs: before.outputs.clone(),
        attempts: before
            .attempts
            .iter()
            .map(|(n, a, s)| {
                let s = if s == "in-progress" { "abandoned" } else { s };
                (n.clone(), *a, s.to_owned())
            })
            .collect(),
    };
    assert_eq!(
        after, expected,
        "{expiry_by:?}/{when:?}: rows of the paused driver"
    );
    assert_eq!(before.outputs, ["n0"], "{expiry_by:?}/{when:?}");

    // Exactly one output per node; every node finished by its last attempt.
    let mut st = c
        .prepare("SELECT node_id, COUNT(*) FROM stamp WHERE run_id = ?1 GROUP BY node_id ORDER BY node_id")
        .unwrap();
    let outputs: Vec<(String, i64)> = st
        .query_map([RUN], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let one_each: Vec<(String, i64)> = NODES.iter().map(|n| (n.to_string(), 1)).collect();
    assert_eq!(outputs, one_each, "{expiry_by:?}/{when:?}");
    let mut st = c
        .prepare(
            "SELECT n.node_id, n.status, n.attempts, (SELECT MAX(attempt) FROM _smithers_attempts a
               WHERE a.run_id = n.run_id AND a.node_id = n.node_id)
             FROM _smithers_nodes n WHERE run_id = ?1 ORDER BY node_id",
        )
        .unwrap();
    let nodes: Vec<(String, String, u32, u32)> = st
        .query_map([RUN], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (node, status, attempts, max_attempt) in &nodes {
        assert_eq!(
            (status.as_str(), attempts),
            ("finished", max_attempt),
            "{expiry_by:?}/{when:?}: node {node}: {nodes:?}"
        );
    }

    // Every event after the pause is the second driver's: it starts with its `run_resumed`,
    // each node event names an attempt the second driver owns, and the run ends once, finished.
    let mut st = c
        .prepare(
            "SELECT kind, node_id, json_extract(payload, '$.attempt') FROM _smithers_events
             WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .unwrap();
    let events: Vec<(String, Option<String>, Option<u32>)> = st
        .query_map(rusqlite::params![RUN, last_seq_before], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events.first().map(|e| e.0.as_str()),
        Some("run_resumed"),
        "{expiry_by:?}/{when:?}: {events:?}"
    );
    let owner_of = |node: &str, attempt: u32| -> String {
        c.query_row(
            "SELECT owner FROM _smithers_attempts WHERE run_id = ?1 AND node_id = ?2 AND attempt = ?3",
            rusqlite::params![RUN, node, attempt],
            |r| r.get(0),
        )
        .unwrap()
    };
    for (kind, node, attempt) in &events {
        if let (Some(node), Some(attempt)) = (node, attempt) {
            assert!(
                owner_of(node, *attempt).contains(&format!(":{pid_b}:")),
                "{expiry_by:?}/{when:?}: event {kind} of {node} attempt {attempt} is the second driver's"
            );
        }
    }
    let ends: Vec<&str> = events
        .iter()
        .map(|e| e.0.as_str())
        .filter(|k| k.starts_with("run_") && *k != "run_resumed")
        .collect();
    assert_eq!(ends, ["run_finished"], "{expiry_by:?}/{when:?}: {events:?}");
    let run: (String, Option<String>, i64) = c
        .query_row(
            "SELECT status, error, lease_epoch FROM _smithers_runs WHERE run_id = ?1",
            [RUN],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        run,
        ("finished".to_owned(), None, 2),
        "{expiry_by:?}/{when:?}"
    );
    let last_error: Option<String> = c
        .query_row(
            "SELECT value FROM state WHERE key = 'supervisor.last_error'",
            [],
            |r| r.get(0),
        )
        .optional()
        .unwrap();
    assert_eq!(
        last_error, None,
        "{expiry_by:?}/{when:?}: no failure was recorded"
    );
}

#[test]
fn a_paused_driver_continued_right_after_the_takeover_commits_nothing() {
    paused_driver_commits_nothing_after_the_takeover(Expiry::WhilePaused, Continue::Immediately);
    paused_driver_commits_nothing_after_the_takeover(Expiry::RenewalFarOff, Continue::Immediately);
}

#[test]
fn a_paused_driver_continued_while_the_new_driver_reruns_its_node_commits_nothing() {
    paused_driver_commits_nothing_after_the_takeover(Expiry::WhilePaused, Continue::MidAttempt);
    paused_driver_commits_nothing_after_the_takeover(Expiry::RenewalFarOff, Continue::MidAttempt);
}

#[test]
fn a_paused_driver_continued_after_the_new_driver_committed_its_node_commits_nothing() {
    use Continue::AfterItCommittedTheSameNode as After;
    paused_driver_commits_nothing_after_the_takeover(Expiry::WhilePaused, After);
    paused_driver_commits_nothing_after_the_takeover(Expiry::RenewalFarOff, After);
}
