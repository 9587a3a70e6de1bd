//! The workflow binary's command line: malformed input is a clear error that writes nothing;
//! `run`, `status` and `graph` work against one database.

use smithers::cli::{main_from, parse_input};
use smithers::prelude::*;

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    name: String,
}

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Greeting {
    text: String,
}

fn hello(ctx: &Ctx<Input>) -> Node {
    let text = format!("hello, {}", ctx.input().name);
    workflow! {
        <Workflow name="hello">
            <Task id="greet" output=Greeting value={Greeting { text }} />
        </Workflow>
    }
}

#[test]
fn malformed_input_names_the_source_and_position() {
    let e = parse_input::<Input>(Some("{\"name\": ")).unwrap_err();
    assert!(
        e.starts_with("--input is not valid JSON: EOF while parsing"),
        "{e}"
    );
    assert!(e.contains("line 1, column 9"), "{e}");
    let e = parse_input::<Input>(Some("{\"nom\": 1}")).unwrap_err();
    assert_eq!(
        e,
        "--input does not match the workflow's input type: missing field `name`"
    );
    let e = parse_input::<Input>(Some("@/nonexistent/input.json")).unwrap_err();
    assert!(
        e.starts_with("cannot read input file `/nonexistent/input.json`"),
        "{e}"
    );
    let e = parse_input::<Input>(None).unwrap_err();
    assert!(
        e.contains("this workflow needs an input: pass --input"),
        "{e}"
    );
}

#[tokio::test]
async fn bad_input_exits_2_and_creates_no_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let args = [
        "hello",
        "--quiet",
        "--db",
        db.to_str().unwrap(),
        "run",
        "--input",
        "{oops",
    ];
    let code = main_from(args, hello).await;
    assert_eq!(code, std::process::ExitCode::from(2));
    assert!(!db.exists(), "nothing is written for a rejected input");
}

#[tokio::test]
async fn run_then_status_and_graph_share_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let db = db.to_str().unwrap();
    let code = main_from(
        [
            "hello",
            "--quiet",
            "--db",
            db,
            "run",
            "--run-id",
            "r1",
            "--input",
            r#"{"name":"ada"}"#,
        ],
        hello,
    )
    .await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(
        main_from(["hello", "--db", db, "status", "--json"], hello).await,
        std::process::ExitCode::SUCCESS
    );
    assert_eq!(
        main_from(["hello", "--db", db, "graph"], hello).await,
        std::process::ExitCode::SUCCESS
    );
    let c = rusqlite::Connection::open(db).unwrap();
    let text: String = c
        .query_row("SELECT text FROM greeting WHERE run_id = 'r1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(text, "hello, ada");
    // Resuming a finished run is refused with its own exit code.
    assert_eq!(
        main_from(
            ["hello", "--quiet", "--db", db, "resume", "--run-id", "r1"],
            hello
        )
        .await,
        std::process::ExitCode::from(3)
    );
}

fn branchy(ctx: &Ctx<()>) -> Node {
    let go = ctx.latest::<Greeting>("pick").is_some();
    workflow! {
        <Workflow name="branchy">
            <Task id="pick" output=Greeting value={Greeting { text: "then".into() }} />
            <Branch if={go}>
                <Task id="act" output=Greeting value={Greeting { text: "then-arm".into() }} />
                <Task id="act" output=Greeting value={Greeting { text: "else-arm".into() }} />
            </Branch>
        </Workflow>
    }
}

#[tokio::test]
async fn graph_annotates_only_the_mounted_arm_when_both_arms_share_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let args = [
        "branchy",
        "--quiet",
        "--db",
        db.to_str().unwrap(),
        "run",
        "--run-id",
        "r1",
    ];
    assert_eq!(
        main_from(args, branchy).await,
        std::process::ExitCode::SUCCESS
    );
    let store = smithers::cli::DbArgs {
        db: db.clone(),
        durability: smithers::cli::DurabilityArg::Normal,
    }
    .open()
    .await
    .unwrap();
    let text = smithers::cli::run_graph(store, branchy, "r1")
        .await
        .unwrap();
    assert_eq!(
        text,
        "<Workflow name=\"branchy\">
  <Task id=\"pick\" output=Greeting value [finished#0] />
  <Branch if=true>
    <then>
      <Task id=\"act\" output=Greeting value [finished#0] />
    </then>
    <else unmounted>
      <Task id=\"act\" output=Greeting value />
    </else>
  </Branch>
</Workflow>
"
    );
}

const FIX_LOOP: LoopRef = LoopRef::new("fix");

/// Reads the counter of a loop it never renders (the `<Ralph>` has no `id`).
fn wrong_loop(ctx: &Ctx<()>) -> Node {
    let it = ctx.iteration(FIX_LOOP);
    workflow! {
        <Workflow name="wrong-loop">
            <Ralph max_iterations=2>
                <Task id="fix" output=Greeting value={Greeting { text: format!("fix {it}") }} />
            </Ralph>
        </Workflow>
    }
}

fn twice(_ctx: &Ctx<()>) -> Node {
    workflow! {
        <Workflow name="twice">
            <Parallel>
                <Task id="review" output=Greeting value={Greeting { text: "a".into() }} />
                <Task id="review" output=Greeting value={Greeting { text: "b".into() }} />
            </Parallel>
        </Workflow>
    }
}

#[tokio::test]
async fn graph_reports_the_mistakes_a_run_would_fail_with() {
    let dir = tempfile::tempdir().unwrap();
    let db = smithers::cli::DbArgs {
        db: dir.path().join("s.db"),
        durability: smithers::cli::DurabilityArg::Off,
    };
    // `ctx.iteration(FIX_LOOP)` of a loop the tree does not have: the run's error, not a tree
    // whose counter reads 0 forever.
    let e = smithers::cli::graph(&db, wrong_loop, None, None, &[])
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "`ctx.iteration(\"fix\")` reads a loop that this workflow does not have (the tree's loops are `ralph`); give the loop's `LoopRef` to both `<Ralph id=..>` and `ctx.iteration(..)` (a `<Ralph>` without `id` is `LoopRef::DEFAULT`)"
    );
    let e = smithers::cli::graph(&db, twice, Some("null"), None, &[])
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "duplicate node id `review`: used by a <Task output=Greeting> and by a <Task output=Greeting>; give each node a unique id"
    );
    // The same checks over a run: the workflow may have changed since the run started.
    let code = main_from(
        [
            "branchy",
            "--quiet",
            "--db",
            db.db.to_str().unwrap(),
            "run",
            "--run-id",
            "r1",
        ],
        branchy,
    )
    .await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let e = smithers::cli::graph(&db, twice, None, Some("r1"), &[])
        .await
        .unwrap_err();
    assert!(e.starts_with("duplicate node id `review`"), "{e}");
    let e = smithers::cli::graph(&db, branchy, None, Some("nope"), &[])
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "run `nope` not found in this database; `smithers runs` lists the runs it has"
    );
    // A correct workflow still prints its tree, and the exit code says which happened.
    let tree = smithers::cli::graph(&db, branchy, None, Some("r1"), &[])
        .await
        .unwrap();
    assert!(tree.contains("[finished#0]"), "{tree}");
    let args = [
        "wrong-loop",
        "--db",
        db.db.to_str().unwrap(),
        "graph",
        "--input",
        "null",
    ];
    assert_eq!(
        main_from(args, wrong_loop).await,
        std::process::ExitCode::from(2)
    );
}

fn phased(ctx: &Ctx<()>) -> Node {
    workflow! {
        <Workflow name="phased">
            <Phase name="build">
                <Task id="build:compile" output=Greeting value={Greeting { text: "built".into() }} />
                <Task id="build:refactor" output=Greeting skip_if={ctx.skips("refactor")}
                      value={Greeting { text: "refactored".into() }} />
            </Phase>
            <Phase name="docs">
                <Task id="docs:write" output=Greeting value={Greeting { text: "written".into() }} />
            </Phase>
        </Workflow>
    }
}

#[tokio::test]
async fn skip_phase_skips_phases_and_steps_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let db = db.to_str().unwrap();
    let args = [
        "phased",
        "--quiet",
        "--db",
        db,
        "run",
        "--run-id",
        "r1",
        "--skip-phase",
        "docs,refactor",
    ];
    assert_eq!(
        main_from(args, phased).await,
        std::process::ExitCode::SUCCESS
    );
    let c = rusqlite::Connection::open(db).unwrap();
    let rows = |sql: &str| -> Vec<String> {
        let mut st = c.prepare(sql).unwrap();
        st.query_map([], |r| {
            Ok(format!(
                "{} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    assert_eq!(
        rows("SELECT name, status FROM _smithers_phases WHERE run_id = 'r1' ORDER BY phase_id"),
        ["build completed", "docs skipped"]
    );
    assert_eq!(
        rows("SELECT node_id, status FROM _smithers_nodes WHERE run_id = 'r1' ORDER BY node_id"),
        ["build:compile finished", "build:refactor skipped"]
    );
    // `graph` skips them as the run does.
    let db = smithers::cli::DbArgs {
        db: db.into(),
        durability: smithers::cli::DurabilityArg::Off,
    };
    let tree = smithers::cli::graph(&db, phased, Some("null"), None, &["docs".into()])
        .await
        .unwrap();
    assert!(tree.contains("<Phase name=\"docs\" skip_if>"), "{tree}");
}
