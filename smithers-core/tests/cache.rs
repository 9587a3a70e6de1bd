//! `<Workflow cache>`: an agent task whose workflow, id, prompt, output schema and agent match
//! an earlier output reuses it instead of asking the agent again.
mod common;
use common::*;
use smithers_core::node::{Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, Ctx, Node};

#[derive(Clone, Default)]
struct CountingAgent(Counter);

#[async_trait::async_trait]
impl Agent for CountingAgent {
    fn name(&self) -> &str {
        "counting"
    }
    async fn generate(&self, _req: AgentRequest) -> Result<AgentResponse, AgentError> {
        let n = self.0.hit();
        Ok(AgentResponse {
            text: format!(r#"{{"n": {n}, "note": null}}"#),
            ..AgentResponse::default()
        })
    }
}

fn wf(
    agent: CountingAgent,
    cache: bool,
    prompt: &'static str,
) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    move |_ctx| {
        Workflow::new()
            .name("cached")
            .cache(cache)
            .child(
                Task::<Num>::new()
                    .id("ask")
                    .agent(agent.clone())
                    .prompt(prompt)
                    .build(),
            )
            .build()
    }
}

#[tokio::test]
async fn a_matching_agent_task_reuses_the_earlier_output() {
    let h = Harness::new();
    let agent = CountingAgent::default();
    let first = h
        .engine(wf(agent.clone(), true, "Count."))
        .run(())
        .await
        .unwrap();
    let second = h
        .engine(wf(agent.clone(), true, "Count."))
        .run(())
        .await
        .unwrap();
    assert_eq!(
        (first.status, second.status),
        (RunStatus::Finished, RunStatus::Finished)
    );
    assert_eq!(agent.0.get(), 1, "the agent was asked once");
    assert_eq!(h.num_rows(&second.run_id), vec![("ask".into(), 0, 1)]);
    let agent_col: Option<String> = h
        .conn()
        .query_row(
            "SELECT agent FROM _smithers_attempts WHERE run_id = ?1",
            [&second.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(agent_col.as_deref(), Some("cache"));

    // A different prompt is a different key.
    let third = h
        .engine(wf(agent.clone(), true, "Count again."))
        .run(())
        .await
        .unwrap();
    assert_eq!(agent.0.get(), 2);
    assert_eq!(h.num_rows(&third.run_id), vec![("ask".into(), 0, 2)]);
}

#[tokio::test]
async fn without_cache_every_run_asks_the_agent() {
    let h = Harness::new();
    let agent = CountingAgent::default();
    h.engine(wf(agent.clone(), false, "Count."))
        .run(())
        .await
        .unwrap();
    h.engine(wf(agent.clone(), false, "Count."))
        .run(())
        .await
        .unwrap();
    assert_eq!(agent.0.get(), 2);
}
