//! Behaviour of `workflow!`, `#[component]` and `#[derive(Output)]` as a user sees it: the tree
//! a workflow renders, and the tables outputs map to.
#![allow(missing_docs)]

mod common;

use common::{claude, codex};
use smithers::output::ColumnKind;
use smithers::prelude::*;

/// What the analysis step returns.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Analysis {
    /// One-paragraph summary of the bug.
    summary: String,
    /// How bad it is.
    #[output(json)]
    severity: Severity,
    files: Vec<String>,
    confidence: Option<f64>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug)]
enum Severity {
    Low,
    High,
}

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Review {
    approved: bool,
    feedback: String,
}

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Patch {
    diff: String,
}

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[output(table = "lint_counts")]
#[serde(rename_all = "camelCase")]
struct LintCount {
    error_count: u32,
    #[serde(rename = "warnings")]
    warning_count: i64,
}

const ANALYZE: Ref<Analysis> = Ref::new("analyze");
const REVIEW: Ref<Review> = Ref::new("review");

struct BugReport {
    description: String,
}

fn bugfix(ctx: &Ctx<BugReport>, approved: bool) -> Node {
    workflow! {
        <Workflow name="bugfix">
            <Task id=ANALYZE agent={claude()} retries=2>
                "Analyze the bug: " { &ctx.input().description }
            </Task>
            <Ralph until={approved} max_iterations=3 on_max_reached=Fail>
                <Task id="fix" output=Patch agent={codex()}> "Fix it." </Task>
                <Task id=REVIEW agent={claude()} continue_on_fail> "Review the patch." </Task>
            </Ralph>
        </Workflow>
    }
}

fn report() -> Ctx<BugReport> {
    Ctx::empty(BugReport {
        description: "it crashes".into(),
    })
}

#[test]
fn bugfix_workflow_renders_typed_tasks_and_loop() {
    let tree = bugfix(&report(), false);
    insta::assert_snapshot!(tree.to_tree_string());
}

#[test]
fn ref_ids_infer_the_output_type() {
    let tree = bugfix(&report(), true);
    let analyze = &tree.children()[0];
    let smithers::node::NodeKind::Task(spec) = analyze.kind() else {
        panic!("expected a task")
    };
    assert_eq!(spec.id, "analyze");
    assert_eq!(spec.output.table, "analysis");
    assert_eq!(spec.prompt, "Analyze the bug: it crashes");
    assert_eq!(spec.retries, 2);
}

/// Every task of a tree, depth first.
fn task_specs(node: &Node, out: &mut Vec<std::sync::Arc<smithers::node::TaskSpec>>) {
    if let smithers::node::NodeKind::Task(spec) = node.kind() {
        out.push(spec.clone());
    }
    for child in node.children() {
        task_specs(child, out);
    }
}

#[test]
fn literal_and_ref_ids_are_borrowed_and_computed_ids_owned() {
    use std::borrow::Cow;
    let n = 7;
    let borrowed_name = String::from("lint-by-name");
    let name: &str = &borrowed_name;
    let tree = workflow! {
        <Workflow name="ids">
            <Task id=ANALYZE agent={claude()}> "Analyze." </Task>
            <Task id="fix" output=Patch agent={codex()}> "Fix it." </Task>
            <Task id={format!("lint-{n}")} output=LintCount value={LintCount::default()} />
            <Task id={name} output=LintCount value={LintCount::default()} />
        </Workflow>
    };
    let mut specs = Vec::new();
    task_specs(&tree, &mut specs);
    let ids: Vec<(&str, bool)> = specs
        .iter()
        .map(|s| (s.id.as_ref(), matches!(s.id, Cow::Borrowed(_))))
        .collect();
    assert_eq!(
        ids,
        [
            ("analyze", true),
            ("fix", true),
            ("lint-7", false),
            ("lint-by-name", false)
        ]
    );
    // The borrowed ids point at the program's own strings, not at copies.
    assert!(std::ptr::eq(specs[0].id.as_ptr(), ANALYZE.id().as_ptr()));

    // The builders, as `workflow!` expands to them and as hand-written code calls them.
    let built = Task::<Patch>::new().id_static("by-hand").build();
    let smithers::node::NodeKind::Task(spec) = built.kind() else {
        panic!("expected a task")
    };
    assert!(matches!(spec.id, Cow::Borrowed("by-hand")));
    let built = Task::<Patch>::new().id("by-hand").build();
    let smithers::node::NodeKind::Task(spec) = built.kind() else {
        panic!("expected a task")
    };
    assert!(matches!(&spec.id, Cow::Owned(s) if s == "by-hand"));
}

#[test]
fn compute_tasks_and_props_of_every_container() {
    let tree = workflow! {
        <Workflow name="all" cache max_concurrency=4>
            <Sequence skip_if={false} label="seq">
                <Task id="count" output=LintCount value={LintCount { error_count: 1, warning_count: 2 }} />
                <Task id="again" output=LintCount run={|_t| async move { Ok::<_, TaskError>(LintCount::default()) }}
                      timeout={Duration::from_secs(30)} needs_approval skip_if />
            </Sequence>
            <Parallel max_concurrency=2>
                <Phase name="build"><Step name="compile" skip_if /></Phase>
            </Parallel>
            <Branch if={true}>
                <Task id=REVIEW value={Review { approved: true, feedback: String::new() }} />
                <Task id="nope" output=Patch value={Patch { diff: String::new() }} />
            </Branch>
            <Ralph id="loop" until max_iterations=2 on_max_reached=ReturnLast />
        </Workflow>
    };
    insta::assert_snapshot!(tree.to_tree_string());
}

#[test]
fn options_and_iterators_splice_as_children() {
    let files = ["a.rs", "b.rs"];
    let maybe: Option<Node> = None;
    let tree = workflow! {
        <Parallel>
            { files.iter().map(|f| workflow! {
                <Task id={format!("lint-{f}")} output=LintCount value={LintCount::default()}>
                    "Lint " {f}
                </Task>
            }) }
            { maybe }
            { Some(workflow! { <Sequence /> }) }
        </Parallel>
    };
    insta::assert_snapshot!(tree.to_tree_string());
}

#[test]
fn branch_then_and_else_props_choose_children() {
    let tree = workflow! {
        <Branch if={false} then={workflow! { <Step name="yes" /> }} else={workflow! { <Step name="no" /> }} />
    };
    insta::assert_snapshot!(tree.to_tree_string());
}

/// Reviews the files matching `glob` (a component with a generic input).
#[component]
fn CodeReview<I>(ctx: &Ctx<I>, glob: &str, rounds: u32) -> Node {
    let _ = ctx.input();
    workflow! {
        <Ralph id={format!("review-{glob}")} max_iterations={rounds}>
            <Task id=REVIEW agent={claude()}> "Review " {glob} </Task>
        </Ralph>
    }
}

/// Wraps its children in a named phase.
#[component]
fn Stage(name: String, children: Node) -> Node {
    workflow! { <Phase name={name}>{children}</Phase> }
}

#[test]
fn components_take_typed_props_in_any_order() {
    let ctx = report();
    let tree = workflow! {
        <Workflow name="with-components">
            <CodeReview rounds=2 ctx={&ctx} glob="src" />
            <Stage name={"ship".to_string()}>
                <Task id="deploy" output=Patch value={Patch { diff: "d".into() }} />
                <Sequence />
            </Stage>
        </Workflow>
    };
    insta::assert_snapshot!(tree.to_tree_string());
    // The function stays callable as written.
    let direct = CodeReview(&ctx, "src", 2);
    assert_eq!(direct.to_tree_string(), tree.children()[0].to_tree_string());
}

#[test]
fn several_roots_render_as_a_fragment() {
    let tree = workflow! { <Step name="a" /> <Step name="b" /> };
    assert_eq!(
        tree.to_tree_string(),
        "<Step name=\"a\" />\n<Step name=\"b\" />\n"
    );
}

fn check_columns<T: Output>(table: &str, expected: &[(&str, ColumnKind, bool, &str)]) {
    assert_eq!(T::TABLE, table);
    let got: Vec<_> = T::COLUMNS
        .iter()
        .map(|c| (c.name, c.kind, c.nullable, c.rust_type))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn derive_output_maps_fields_to_columns() {
    check_columns::<Analysis>(
        "analysis",
        &[
            ("summary", ColumnKind::Text, false, "String"),
            ("severity", ColumnKind::Json, false, "Severity"),
            ("files", ColumnKind::Json, false, "Vec<String>"),
            ("confidence", ColumnKind::Real, true, "Option<f64>"),
        ],
    );
    check_columns::<LintCount>(
        "lint_counts",
        &[
            ("errorCount", ColumnKind::Integer, false, "u32"),
            ("warnings", ColumnKind::Integer, false, "i64"),
        ],
    );
}

#[test]
fn derive_output_schema_has_doc_comments_as_descriptions() {
    let schema = Analysis::output_schema();
    assert_eq!(schema["description"], "What the analysis step returns.");
    assert_eq!(
        schema["properties"]["summary"]["description"],
        "One-paragraph summary of the bug."
    );
    insta::assert_snapshot!(serde_json::to_string_pretty(&schema).unwrap());
}

#[test]
fn phase_hooks_are_props() {
    let tree = workflow! {
        <Phase name="build" on_start={|h| h.set_state("phase", "build")} on_complete={|h| h.set_state("done", h.name().to_owned())}>
            <Step name="compile" />
        </Phase>
    };
    let smithers::node::NodeKind::Phase(p) = tree.kind() else {
        panic!("expected a phase")
    };
    assert!(p.hooks.on_start.is_some() && p.hooks.on_complete.is_some());
}

const FIX_LOOP: LoopRef = LoopRef::new("fix");

#[test]
fn ralph_id_takes_the_loop_handle_that_ctx_iteration_reads() {
    let ctx = Ctx::empty(());
    let it = ctx.iteration(FIX_LOOP);
    let tree = workflow! {
        <Workflow name="typed-loop">
            <Ralph id=FIX_LOOP max_iterations=2>
                <Task id="fix" output=Patch value={Patch { diff: format!("pass {it}") }} />
            </Ralph>
        </Workflow>
    };
    assert_eq!(
        tree.to_tree_string(),
        "<Workflow name=\"typed-loop\">\n  <Ralph id=\"fix\" until=false max_iterations=2 on_max_reached=ReturnLast>\n    <Task id=\"fix\" output=Patch value />\n  </Ralph>\n</Workflow>\n"
    );
}
/// A row id: a type alias, stored as what it stands for.
type RowId = i64;

/// Kinds decided by the type checker: aliases, pointers, explicit JSON, fields serde may omit.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct TypedRow {
    id: RowId,
    parent: Option<RowId>,
    label: Box<str>,
    #[output(json)]
    severity: Severity,
    #[output(json)]
    previous: Option<Severity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    files: Vec<String>,
}

#[test]
fn derive_output_takes_column_kinds_from_the_field_types() {
    check_columns::<TypedRow>(
        "typed_row",
        &[
            ("id", ColumnKind::Integer, false, "RowId"),
            ("parent", ColumnKind::Integer, true, "Option<RowId>"),
            ("label", ColumnKind::Text, false, "Box<str>"),
            ("severity", ColumnKind::Json, false, "Severity"),
            ("previous", ColumnKind::Json, true, "Option<Severity>"),
            ("note", ColumnKind::Text, true, "Option<String>"),
            ("files", ColumnKind::Json, true, "Vec<String>"),
        ],
    );
}

#[tokio::test]
async fn an_aliased_integer_is_persisted_in_an_integer_column() {
    use smithers_core::engine::{Engine, EngineOptions};
    use smithers_core::store::{Durability, RunStatus, SqliteStore, Store};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, Durability::Normal).unwrap());
    let row = TypedRow {
        id: 7,
        parent: None,
        label: "seven".into(),
        severity: Severity::High,
        previous: None,
        note: None,
        files: Vec::new(),
    };
    let engine = Engine::new(store, move |_ctx: &Ctx<()>| {
        let row = row.clone();
        workflow! {
            <Workflow name="typed">
                <Task id="row" output=TypedRow value={row} />
            </Workflow>
        }
    })
    .with_options(EngineOptions {
        vcs_snapshots: false,
        ..EngineOptions::default()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished);

    let c = rusqlite::Connection::open(&db).unwrap();
    let mut st = c
        .prepare("SELECT name, type, \"notnull\" FROM pragma_table_info('typed_row') WHERE name NOT IN ('run_id', 'node_id', 'iteration') ORDER BY cid")
        .unwrap();
    let declared: Vec<(String, String, bool)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let declared: Vec<(&str, &str, bool)> = declared
        .iter()
        .map(|(n, t, nn)| (n.as_str(), t.as_str(), *nn))
        .collect();
    assert_eq!(
        declared,
        [
            ("id", "INTEGER", true),
            ("parent", "INTEGER", false),
            ("label", "TEXT", true),
            ("severity", "TEXT", true),
            ("previous", "TEXT", false),
            ("note", "TEXT", false),
            ("files", "TEXT", false),
        ]
    );
    let stored: (i64, String, String, String, Option<String>, Option<String>) = c
        .query_row(
            "SELECT id, typeof(id), label, severity, note, files FROM typed_row WHERE run_id = ?1",
            [&report.run_id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        stored,
        (
            7,
            "integer".into(),
            "seven".into(),
            "\"High\"".into(),
            None,
            None
        )
    );
}

/// Column names must be the keys serde writes, for every `rename_all` rule whose names are
/// column names (kebab-case ones are not: `error-count` is rejected by the derive).
macro_rules! renamed_output {
    ($($name:ident: $rule:literal),* $(,)?) => {$(
        #[derive(Output, Serialize, Deserialize, JsonSchema, Default)]
        #[serde(rename_all = $rule)]
        struct $name {
            error_count: u32,
            _private_note: String,
            #[serde(rename(serialize = "kept", deserialize = "kept_in"))]
            kept_as_is: bool,
        }
    )*};
}

renamed_output!(
    RenameLower: "lowercase",
    RenameUpper: "UPPERCASE",
    RenamePascal: "PascalCase",
    RenameCamel: "camelCase",
    RenameSnake: "snake_case",
    RenameScreamingSnake: "SCREAMING_SNAKE_CASE",
);

fn check_names_are_serde_keys<T: Output + Default>(expected: &[&str]) {
    let names: Vec<&str> = T::COLUMNS.iter().map(|c| c.name).collect();
    let value = serde_json::to_value(T::default()).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, keys, "{}", std::any::type_name::<T>());
    assert_eq!(names, expected, "{}", std::any::type_name::<T>());
}

#[test]
fn derive_output_column_names_are_the_keys_serde_writes_for_every_rename_rule() {
    check_names_are_serde_keys::<RenameLower>(&["error_count", "_private_note", "kept"]);
    check_names_are_serde_keys::<RenameUpper>(&["ERROR_COUNT", "_PRIVATE_NOTE", "kept"]);
    check_names_are_serde_keys::<RenamePascal>(&["ErrorCount", "PrivateNote", "kept"]);
    check_names_are_serde_keys::<RenameCamel>(&["errorCount", "privateNote", "kept"]);
    check_names_are_serde_keys::<RenameSnake>(&["error_count", "_private_note", "kept"]);
    check_names_are_serde_keys::<RenameScreamingSnake>(&["ERROR_COUNT", "_PRIVATE_NOTE", "kept"]);
}
