//! Shared helpers for the engine behaviour tests: a store in a temp dir, an event recorder, a
//! hand-written `Output` type (the derive lives in the facade), and row queries.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::events::Event;
use smithers_core::output::{Column, ColumnKind, Output};
use smithers_core::store::{Durability, SqliteStore, Store};
use smithers_core::{Ctx, Node};

/// A small output: a number and a note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Num {
    pub n: i64,
    pub note: Option<String>,
}

impl Output for Num {
    const TABLE: &'static str = "num";
    const COLUMNS: &'static [Column] = &[
        Column {
            name: "n",
            kind: ColumnKind::Integer,
            nullable: false,
            rust_type: "i64",
        },
        Column {
            name: "note",
            kind: ColumnKind::Text,
            nullable: true,
            rust_type: "Option<String>",
        },
    ];
}

pub fn num(n: i64) -> Num {
    Num { n, note: None }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub db: std::path::PathBuf,
    pub store: Arc<dyn Store>,
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("smithers.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, Durability::Normal).unwrap());
        Harness {
            dir,
            db,
            store,
            events: Arc::default(),
        }
    }

    pub fn engine<I>(&self, f: impl Fn(&Ctx<I>) -> Node + Send + Sync + 'static) -> Engine<I>
    where
        I: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let events = self.events.clone();
        Engine::new(self.store.clone(), f).with_options(EngineOptions {
            on_event: Some(Arc::new(move |e: &Event| {
                events.lock().unwrap().push(e.clone())
            })),
            ..EngineOptions::default()
        })
    }

    /// Opens a plain connection for assertions on persisted rows.
    pub fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }

    /// `(node_id, iteration, n)` of every row of the `num` table, in insertion order.
    pub fn num_rows(&self, run_id: &str) -> Vec<(String, u32, i64)> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT node_id, iteration, n FROM num WHERE run_id = ?1 ORDER BY rowid")
            .unwrap();
        st.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Event kinds (`node_started:a`...) of a run, from the database.
    pub fn event_log(&self, run_id: &str) -> Vec<String> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT kind, COALESCE(node_id, ''), COALESCE(iteration, -1) FROM _smithers_events WHERE run_id = ?1 ORDER BY seq")
            .unwrap();
        st.query_map([run_id], |r| {
            let (k, n, i): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok(if n.is_empty() {
                k
            } else {
                format!("{k}:{n}@{i}")
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// `(status, attempts)` of a node.
    pub fn node_row(
        &self,
        run_id: &str,
        node: &str,
        it: u32,
    ) -> Option<(String, u32, Option<String>)> {
        let c = self.conn();
        c.query_row(
            "SELECT status, attempts, last_error FROM _smithers_nodes WHERE run_id = ?1 AND node_id = ?2 AND iteration = ?3",
            rusqlite::params![run_id, node, it],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .ok()
    }

    pub fn run_status(&self, run_id: &str) -> (String, Option<String>) {
        self.conn()
            .query_row(
                "SELECT status, error FROM _smithers_runs WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    pub fn integrity_ok(&self) {
        let s: String = self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(s, "ok");
    }
}
