//! Prompt templates (`#[prompt]`) as a workflow uses them, and the workflow testing helper: the
//! rendered Markdown is the task's prompt, and the engine still appends the output schema and
//! the `REQUIRED OUTPUT` instruction after it.

use smithers::agents::ScriptedAgent;
use smithers::prelude::*;
use smithers::testing::{RunStatus, WorkflowTest};

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");
const ROUNDS: LoopRef = LoopRef::new("rounds");

/// `prompt_template.md`, beside this file.
#[prompt(path = "prompt_template.md")]
struct ReviewPrompt<'a> {
    file: &'a str,
    feedback: Option<&'a str>,
    rules: &'a [&'a str],
}

fn workflow(agent: ScriptedAgent) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    move |ctx| {
        let approved = ctx.latest(REVIEW).is_some_and(|r| r.approved);
        let feedback = (ctx.iteration(ROUNDS) > 0).then_some("tests for the empty case");
        let prompt = ReviewPrompt {
            file: "src/ini.rs",
            feedback,
            rules: &["no unwrap", "one commit per change"],
        };
        workflow! {
            <Workflow name="templated">
                <Ralph id=ROUNDS until={approved} max_iterations=3>
                    <Task id=REVIEW agent={agent.clone()}>{prompt}</Task>
                </Ralph>
            </Workflow>
        }
    }
}

#[tokio::test]
async fn a_template_renders_from_its_struct_and_the_engine_appends_the_schema() {
    let agent = ScriptedAgent::new()
        .reply(r#"{"approved": false}"#)
        .reply(r#"{"approved": true}"#);
    let test = WorkflowTest::new(workflow(agent.clone()));
    let run = test.run(()).await.unwrap();
    assert_eq!(run.status(), RunStatus::Finished, "{:?}", run.error());
    assert_eq!(
        run.outputs(REVIEW).await,
        vec![
            (0, Review { approved: false }),
            (1, Review { approved: true })
        ]
    );
    let prompts: Vec<String> = agent.requests().into_iter().map(|r| r.prompt).collect();
    let first = "# Review src/ini.rs\n\n- no unwrap\n- one commit per change\n";
    let second = "# Review src/ini.rs\n\nLast time you asked for: tests for the empty case.\n\n\
                  - no unwrap\n- one commit per change\n";
    for (prompt, rendered) in prompts.iter().zip([first, second]) {
        assert!(prompt.starts_with(rendered), "{prompt}");
        let rest = &prompt[rendered.len()..];
        let required = rest
            .find("## REQUIRED OUTPUT")
            .expect("REQUIRED OUTPUT after the template");
        assert!(
            rest[required..].contains("\"approved\""),
            "the schema follows: {rest}"
        );
    }
    assert_eq!(prompts.len(), 2);
    // The helper's reads: node states, events, rows.
    assert_eq!(
        run.node_status("review", 1).await,
        Some(smithers::testing::NodeStatus::Finished)
    );
    let log = run.event_log().await;
    assert_eq!(
        log.iter()
            .filter(|e| e.starts_with("node_started") || e.starts_with("node_finished"))
            .collect::<Vec<_>>(),
        [
            "node_started:review@0",
            "node_finished:review@0",
            "node_started:review@1",
            "node_finished:review@1"
        ]
    );
    assert_eq!(
        run.query_i64("SELECT COUNT(*) FROM review WHERE run_id = ?1 AND approved = 1"),
        1
    );
}

#[tokio::test]
async fn the_testing_helper_reports_a_failed_run_with_its_error() {
    let agent = ScriptedAgent::new().fail_terminal("the model refused");
    let run = WorkflowTest::new(workflow(agent)).run(()).await.unwrap();
    assert_eq!(run.status(), RunStatus::Failed);
    assert_eq!(
        run.error(),
        Some("node `review` failed after 1 attempt(s): the model refused")
    );
    assert_eq!(run.latest(REVIEW).await, None);
    assert_eq!(
        run.node_status("review", 0).await,
        Some(smithers::testing::NodeStatus::Failed)
    );
}
