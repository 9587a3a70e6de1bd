//! Fan-out over an LLM HTTP API: one review per file, in parallel, then a summary computed from
//! the persisted reviews. Works with any OpenAI-compatible server: a local Ollama by default,
//! OpenAI with `OPENAI_API_KEY`, or anything else with `OPENAI_BASE_URL` (vLLM, OpenRouter...).
//!
//! ```text
//! ollama serve & ollama pull llama3.2
//! cargo run --example review_http -- run --input '{"files": ["src/lib.rs", "README.md"]}'
//! SMITHERS_MODEL=gpt-5.5 OPENAI_API_KEY=... cargo run --example review_http -- run --input @files.json
//! ```
//! Without a server, each review fails with an error naming the URL it tried; `resume` retries
//! them once the server is up, and reviews that finished are not asked again.

use std::sync::Arc;

use smithers::agents::OpenAiAgent;
use smithers::prelude::*;

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    files: Vec<String>,
}

/// One file's review.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct FileReview {
    /// What the file does, in one or two sentences.
    summary: String,
    /// Concrete problems, most important first (empty when there are none).
    issues: Vec<String>,
}

/// A file's text, read by a task (rendering never does I/O).
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct FileText {
    text: String,
}

/// The roll-up.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Summary {
    files: i64,
    issues: i64,
}

fn review_id(file: &str) -> String {
    format!("review:{file}")
}

fn read_id(file: &str) -> String {
    format!("read:{file}")
}

fn agent() -> Arc<OpenAiAgent> {
    let model = std::env::var("SMITHERS_MODEL").unwrap_or_else(|_| "llama3.2".into());
    let have_key = std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.is_empty());
    let have_url = std::env::var("OPENAI_BASE_URL").is_ok_and(|u| !u.is_empty());
    Arc::new(match (have_key, have_url) {
        (true, _) => OpenAiAgent::new(model),
        (false, true) => OpenAiAgent::new(model).no_api_key(),
        (false, false) => OpenAiAgent::ollama(model),
    })
}

fn review(ctx: &Ctx<Input>) -> Node {
    let agent = agent();
    let files = &ctx.input().files;
    let reviews: Vec<FileReview> = files
        .iter()
        .filter_map(|f| ctx.output_maybe::<FileReview>(review_id(f)))
        .collect();
    let all_done = reviews.len() == files.len();
    let summary = Summary {
        files: reviews.len() as i64,
        issues: reviews.iter().map(|r| r.issues.len() as i64).sum(),
    };

    workflow! {
        <Workflow name="review-http">
            <Parallel max_concurrency=4>
                { files.iter().map(|file| {
                    let path = file.clone();
                    let text = ctx.output_maybe::<FileText>(read_id(file)).map(|f| f.text).unwrap_or_default();
                    workflow! {
                        <Sequence>
                            <Task id={read_id(file)} output=FileText run={move |_t: TaskCtx| {
                                let path = path.clone();
                                async move {
                                    let text = tokio::fs::read_to_string(&path)
                                        .await
                                        .map_err(|e| TaskError::terminal(format!("cannot read `{path}`: {e}")))?;
                                    Ok::<_, TaskError>(FileText { text })
                                }
                            }} />
                            <Task id={review_id(file)} output=FileReview agent={agent.clone()} retries=1
                                  timeout={Duration::from_secs(300)}>
                                "Review this file for bugs and unclear code. File `" {file} "`:\n\n" {text}
                            </Task>
                        </Sequence>
                    }
                }) }
            </Parallel>
            <Branch if={all_done}>
                <Task id="summary" output=Summary value={summary} />
            </Branch>
        </Workflow>
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::main(review).await
}
