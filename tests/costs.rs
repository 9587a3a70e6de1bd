//! Cost per attempt, `reported` by the agent or `estimated` from the price catalog, with the
//! engine driving fake CLI executables; `smithers attempts` and `status` show both and say
//! "no price" for a model the catalog does not know.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use smithers::agents::{ClaudeCodeAgent, CodexAgent, GeminiAgent};
use smithers::prelude::*;
use smithers::SharedAgent;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::store::{Durability, RunStatus, SqliteStore, Store};

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Verdict {
    summary: String,
    severity: String,
}

fn fake(scenario: &str) -> (PathBuf, String) {
    (
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("smithers-agents/tests/fixtures/fake-cli.sh"),
        scenario.to_owned(),
    )
}

/// Runs three tasks: Claude (reports its cost), Gemini on gemini-2.5-pro (estimated) and Codex
/// with its default model (unknown: no price); returns the database and the run id.
async fn run(dir: &Path, prices: smithers::PriceCatalog) -> (PathBuf, String) {
    let db = dir.join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db, Durability::Normal).unwrap());
    let (bin, _) = fake("");
    let claude: SharedAgent = Arc::new(
        ClaudeCodeAgent::new()
            .binary(&bin)
            .env("FAKE_SCENARIO", "claude/ok"),
    );
    let gemini: SharedAgent = Arc::new(
        GeminiAgent::new()
            .binary(&bin)
            .env("FAKE_SCENARIO", "gemini/ok"),
    );
    let codex: SharedAgent = Arc::new(
        CodexAgent::new()
            .binary(&bin)
            .env("FAKE_SCENARIO", "codex/ok"),
    );
    let engine = Engine::new(store, move |_ctx: &Ctx<()>| {
        workflow! {
            <Workflow name="costs">
                <Sequence>
                    <Task id="claude" output=Verdict agent={claude.clone()}> "Review." </Task>
                    <Task id="gemini" output=Verdict agent={gemini.clone()}> "Review." </Task>
                    <Task id="codex" output=Verdict agent={codex.clone()}> "Review." </Task>
                </Sequence>
            </Workflow>
        }
    })
    .with_options(EngineOptions {
        vcs_snapshots: false,
        prices: Arc::new(prices),
        ..EngineOptions::default()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    (db, report.run_id)
}

/// (node, model, cost_usd, cost_source) of each attempt.
type CostRow = (String, Option<String>, Option<f64>, Option<String>);

fn costs(db: &Path) -> Vec<CostRow> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT node_id, model, cost_usd, cost_source FROM _smithers_attempts ORDER BY ord",
        )
        .unwrap();
    st.query_map([], |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn smithers(db: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test]
async fn each_attempt_says_whether_its_cost_was_reported_or_estimated() {
    let dir = tempfile::tempdir().unwrap();
    let (db, run_id) = run(dir.path(), smithers::PriceCatalog::builtin()).await;
    let rows = costs(&db);
    // Claude Code reported $0.0076235 itself.
    assert_eq!(rows[0].0, "claude");
    assert_eq!(
        (rows[0].2, rows[0].3.as_deref()),
        (Some(0.0076235), Some("reported"))
    );
    // Gemini: 1234 input tokens of which 7 cached, 56 output, on gemini-2.5-pro at $1.25 /
    // $10 / $0.31 per million: 1227 × 1.25 + 56 × 10 + 7 × 0.31 = 2095.92 micro-dollars.
    assert_eq!(rows[1].1.as_deref(), Some("gemini-2.5-pro"));
    assert_eq!(rows[1].3.as_deref(), Some("estimated"));
    assert!(
        (rows[1].2.unwrap() - 0.002_095_92).abs() < 1e-12,
        "{:?}",
        rows[1]
    );
    // Codex with its default model: no price, never a silent zero.
    assert_eq!((rows[2].2, rows[2].3.as_deref()), (None, None));

    let attempts = smithers(&db, &["attempts", &run_id]);
    let line = |node: &str| {
        attempts
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no `{node}` line in:\n{attempts}"))
            .to_owned()
    };
    assert!(line("claude").ends_with(" 0.0076"), "{attempts}");
    assert!(line("gemini").ends_with(" ~0.0021"), "{attempts}");
    assert!(line("codex").ends_with(" no price"), "{attempts}");
    assert!(
        attempts.contains(
            "cost: $0.0097 (reported $0.0076, estimated $0.0021); 1 attempt(s) with no price"
        ),
        "{attempts}"
    );
    let status = smithers(&db, &["status", &run_id]);
    assert!(
        status.contains(
            "cost $0.0097 (reported $0.0076, estimated $0.0021); 1 attempt(s) with no price"
        ),
        "{status}"
    );
}

#[tokio::test]
async fn a_price_file_prices_the_unknown_model_and_a_malformed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.toml");
    // A file overrides the built-in price of gemini-2.5-pro; a bad file names itself.
    std::fs::write(
        &file,
        "as_of = \"2026-12-01\"\n[models.\"gemini-2.5-pro\"]\ninput = 2.0\noutput = 12.0\ncache_read = 0.5\n",
    )
    .unwrap();
    let prices = smithers::PriceCatalog::load_toml(&file).unwrap();
    assert_eq!(prices.as_of(), "2026-12-01");
    let (db, _) = run(dir.path(), prices).await;
    // 1227 × 2 + 56 × 12 + 7 × 0.5 = 3129.5 micro-dollars.
    let gemini = &costs(&db)[1];
    assert!(
        (gemini.2.unwrap() - 0.003_129_5).abs() < 1e-12,
        "{gemini:?}"
    );

    std::fs::write(&file, "[models.\"gpt-5\"]\ninput = 1.25\n").unwrap();
    let e = smithers::PriceCatalog::load_toml(&file)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("prices.toml") && e.contains("missing field `output`"),
        "{e}"
    );
}
