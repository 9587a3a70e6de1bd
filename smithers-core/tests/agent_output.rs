//! Agent output validation: a reply that does not deserialise into the output type is retried
//! with the validation error in the next prompt, and fails naming the node and the type.
mod common;
use std::sync::{Arc, Mutex};

use common::*;
use smithers_core::node::{Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, Ctx};

/// Answers with the scripted replies in order (the last one repeats) and keeps every request.
struct Scripted {
    replies: Vec<&'static str>,
    requests: Mutex<Vec<AgentRequest>>,
}

impl Scripted {
    fn new(replies: &[&'static str]) -> Arc<Self> {
        Arc::new(Scripted {
            replies: replies.to_vec(),
            requests: Mutex::default(),
        })
    }

    fn prompts(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        requests.iter().map(|r| r.prompt.clone()).collect()
    }
}

#[async_trait::async_trait]
impl Agent for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn generate(&self, req: AgentRequest) -> Result<AgentResponse, AgentError> {
        let mut requests = self.requests.lock().unwrap();
        let text = self.replies[requests.len().min(self.replies.len() - 1)];
        requests.push(req);
        Ok(AgentResponse {
            text: text.to_owned(),
            ..AgentResponse::default()
        })
    }
}

fn workflow(agent: Arc<Scripted>, retries: u32) -> impl Fn(&Ctx<()>) -> smithers_core::Node {
    move |_ctx| {
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("count")
                    .agent(agent.clone())
                    .retries(retries)
                    .prompt("Count the files.")
                    .build(),
            )
            .build()
    }
}

#[tokio::test]
async fn invalid_output_is_retried_with_the_error_appended_to_the_prompt() {
    let h = Harness::new();
    let agent = Scripted::new(&[
        r#"Here: {"n": "five", "note": null}"#,
        "```json\n{\"n\": 5, \"note\": \"fixed\"}\n```",
    ]);
    let engine = h.engine(workflow(agent.clone(), 1));
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let run = &report.run_id;
    let prompts = agent.prompts();
    assert_eq!(prompts.len(), 2);
    assert!(prompts[0].starts_with("Count the files.\n\n## REQUIRED OUTPUT"));
    assert!(!prompts[0].contains(smithers_core::prompt::PREVIOUS_ERROR_HEADING));
    assert!(
        prompts[1].contains(smithers_core::prompt::PREVIOUS_ERROR_HEADING),
        "{}",
        prompts[1]
    );
    assert!(
        prompts[1].contains("node `count` returned output that does not match `Num`: invalid type: string \"five\", expected i64"),
        "{}",
        prompts[1]
    );
    assert_eq!(h.num_rows(run), vec![("count".into(), 0, 5)]);
    let attempts = h.attempts(run, "count");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].2, "failed");
    assert!(attempts[0]
        .3
        .as_deref()
        .unwrap()
        .contains("does not match `Num`"));
    assert_eq!(attempts[1], (0, 2, "finished".into(), None));
    let agent_col: String = h
        .conn()
        .query_row(
            "SELECT agent FROM _smithers_attempts WHERE run_id = ?1 AND attempt = 1",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(agent_col, "scripted");
}

#[tokio::test]
async fn output_invalid_on_every_attempt_fails_naming_node_and_type() {
    let h = Harness::new();
    let agent = Scripted::new(&[r#"{"n": true}"#]);
    let engine = h.engine(workflow(agent.clone(), 1));
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed, "{report:?}");
    assert_eq!(agent.prompts().len(), 2);
    let err = report.error.unwrap();
    assert!(
        err.starts_with("node `count` failed after 2 attempt(s): node `count` returned output that does not match `Num`: invalid type: boolean `true`, expected i64"),
        "{err}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM num"), 0);
    assert_eq!(
        h.node_row(&report.run_id, "count", 0).map(|r| r.0),
        Some("failed".into())
    );
}

#[tokio::test]
async fn reply_without_json_is_retried_and_says_so() {
    let h = Harness::new();
    let agent = Scripted::new(&["I could not do it.", r#"{"n": 3}"#]);
    let engine = h.engine(workflow(agent.clone(), 2));
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let prompts = agent.prompts();
    assert!(
        prompts[1].contains("the agent's reply has no JSON object for `Num`"),
        "{}",
        prompts[1]
    );
    assert_eq!(h.num_rows(&report.run_id), vec![("count".into(), 0, 3)]);
}
