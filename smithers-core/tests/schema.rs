//! Output tables across runs: a retyped field is an error naming table, field and both types; an
//! added field becomes a new column.
mod common;
use common::*;
use serde::{Deserialize, Serialize};
use smithers_core::node::{Task, Workflow};
use smithers_core::output::{Column, ColumnKind, Output};
use smithers_core::Ctx;
use smithers_core::RunStatus;

/// `Num` with `n` retyped to text.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct NumText {
    n: String,
    note: Option<String>,
}

impl Output for NumText {
    const TABLE: &'static str = "num";
    const COLUMNS: &'static [Column] = &[
        Column {
            name: "n",
            kind: ColumnKind::Text,
            nullable: false,
            rust_type: "String",
        },
        Column {
            name: "note",
            kind: ColumnKind::Text,
            nullable: true,
            rust_type: "Option<String>",
        },
    ];
}

/// `Num` with an added field.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
struct NumPlus {
    n: i64,
    note: Option<String>,
    score: Option<f64>,
}

impl Output for NumPlus {
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
        Column {
            name: "score",
            kind: ColumnKind::Real,
            nullable: true,
            rust_type: "Option<f64>",
        },
    ];
}

async fn first_run(h: &Harness) -> String {
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(Task::<Num>::new().id("a").value(num(1)).build())
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    report.run_id
}

#[tokio::test]
async fn retyped_field_fails_the_run_naming_table_field_and_both_types() {
    let h = Harness::new();
    first_run(&h).await;
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Task::<NumText>::new()
                    .id("a")
                    .run(|_t| async {
                        Ok::<_, String>(NumText {
                            n: "one".into(),
                            note: None,
                        })
                    })
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    let expected = "output table `num` no longer matches `NumText`: field `n` changed type from `i64` (integer) to `String` (text). Rename the table with #[output(table = \"...\")] or migrate the existing rows";
    assert_eq!(report.error.as_deref(), Some(expected));
    assert_eq!(
        h.run_status(&report.run_id),
        ("failed".into(), Some(expected.into()))
    );
    // The earlier run's rows are untouched and the task never ran.
    assert_eq!(h.count("SELECT COUNT(*) FROM num"), 1);
    assert!(h.attempts(&report.run_id, "a").is_empty());
    h.integrity_ok();
}

#[tokio::test]
async fn added_field_becomes_a_new_nullable_column() {
    let h = Harness::new();
    let first = first_run(&h).await;
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Task::<NumPlus>::new()
                    .id("a")
                    .value(NumPlus {
                        n: 2,
                        note: None,
                        score: Some(0.5),
                    })
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let c = h.conn();
    let mut st = c
        .prepare("SELECT name, type FROM pragma_table_info('num')")
        .unwrap();
    let cols: Vec<(String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(cols.last(), Some(&("score".into(), "REAL".into())));
    let score = |run: &str| -> Option<f64> {
        c.query_row("SELECT score FROM num WHERE run_id = ?1", [run], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(score(&first), None);
    assert_eq!(score(&report.run_id), Some(0.5));
    h.integrity_ok();
}

/// An output type stored in `$table`, with one integer column `n`.
macro_rules! output_in {
    ($ty:ident, $table:literal) => {
        #[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
        struct $ty {
            n: i64,
        }

        impl Output for $ty {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static [Column] = &[Column {
                name: "n",
                kind: ColumnKind::Integer,
                nullable: false,
                rust_type: "i64",
            }];
        }
    };
}

output_in!(EventsUpper, "_SMITHERS_EVENTS");
output_in!(RunsUpper, "_SMITHERS_RUNS");
output_in!(StateTitle, "State");
output_in!(SqliteMaster, "sqlite_master");
output_in!(SqliteUpper, "SQLITE_SEQUENCE");

/// A run whose only task writes to `T`'s table: it fails with the reserved-name error before
/// any row is written, and the database stays readable.
async fn reserved_table_is_refused<T>(value: T)
where
    T: Output + Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let h = Harness::new();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        let v = value.clone();
        Workflow::new()
            .child(
                Task::<T>::new()
                    .id("forge")
                    .run(move |_t| {
                        let v = v.clone();
                        async move { Ok::<_, String>(v) }
                    })
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    let expected = format!(
        "output table `{}` is reserved: smithers keeps its own tables in `_smithers_*` and `state`, and SQLite in `sqlite_*` (names are compared case-insensitively); name the table otherwise with #[output(table = \"...\")]",
        T::TABLE
    );
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert_eq!(report.error.as_deref(), Some(expected.as_str()));
    assert_eq!(
        h.run_status(&report.run_id),
        ("failed".into(), Some(expected.clone()))
    );
    // Nothing was registered, created or forged, and the task never ran.
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_output_tables"), 0);
    assert!(h.attempts(&report.run_id, "forge").is_empty());
    assert_eq!(
        h.count("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'State'"),
        0
    );
    let events = h
        .store
        .events(&report.run_id, 0)
        .await
        .expect("events read back");
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.name()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_failed"));
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM _smithers_events WHERE run_id IS NULL OR payload NOT LIKE '{%'"
        ),
        0,
        "no forged event rows"
    );
    h.integrity_ok();
}

#[tokio::test]
async fn smithers_table_names_are_reserved_in_any_case() {
    reserved_table_is_refused(EventsUpper { n: 1 }).await;
    reserved_table_is_refused(RunsUpper { n: 1 }).await;
}

#[tokio::test]
async fn the_state_table_name_is_reserved_in_any_case() {
    reserved_table_is_refused(StateTitle { n: 1 }).await;
}

#[tokio::test]
async fn sqlite_table_names_are_reserved_in_any_case() {
    reserved_table_is_refused(SqliteMaster { n: 1 }).await;
    reserved_table_is_refused(SqliteUpper { n: 1 }).await;
}
