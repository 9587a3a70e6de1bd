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
