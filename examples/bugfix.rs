//! A bug-fix workflow driven by a real coding agent on your repository: analyse the bug, then
//! loop fix → review until the reviewer approves (at most three rounds).
//!
//! ```text
//! cd /path/to/your/repo
//! cargo run --manifest-path /path/to/smithers-rs/Cargo.toml --example bugfix -- \
//!     run --input '{"description": "cargo test fails in parser::tests::empty_input"}'
//! ```
//!
//! The agent is Claude Code by default; `SMITHERS_AGENT=codex` or `SMITHERS_AGENT=gemini` picks
//! another CLI. When the CLI is not installed (or has no credentials) the first task fails with
//! an error naming the missing binary or environment variable, and `resume` retries once it is
//! fixed. `scripts/real-clis.sh` runs this example against a local fake model server.

use smithers::agents::{
    ClaudeCodeAgent, ClaudePermissionMode, CodexAgent, CodexSandbox, GeminiAgent,
    GeminiApprovalMode,
};
use smithers::prelude::*;
use smithers::SharedAgent;

/// The bug to fix.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct BugReport {
    description: String,
}

/// What the analysis must return.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Analysis {
    /// What is wrong and where, in a few sentences.
    summary: String,
    /// low, medium or high.
    severity: String,
}

/// What a fix round must return.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Patch {
    /// What was changed and why.
    summary: String,
    /// Files edited in this round.
    #[serde(default)]
    files_changed: Vec<String>,
}

/// What a review must return.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Review {
    /// The review in a few sentences.
    summary: String,
    /// Whether the fix is complete and correct.
    #[serde(default)]
    approved: bool,
}

const ANALYZE: Ref<Analysis> = Ref::new("analyze");
const FIX: Ref<Patch> = Ref::new("fix");
const REVIEW: Ref<Review> = Ref::new("review");

/// The agent named by `SMITHERS_AGENT` (claude | codex | gemini), allowed to edit files.
fn agent() -> SharedAgent {
    match std::env::var("SMITHERS_AGENT").as_deref() {
        Ok("codex") => std::sync::Arc::new(CodexAgent::new().sandbox(CodexSandbox::WorkspaceWrite)),
        Ok("gemini") => {
            std::sync::Arc::new(GeminiAgent::new().approval_mode(GeminiApprovalMode::AutoEdit))
        }
        _ => std::sync::Arc::new(
            ClaudeCodeAgent::new().permission_mode(ClaudePermissionMode::AcceptEdits),
        ),
    }
}

fn bugfix(ctx: &Ctx<BugReport>) -> Node {
    let agent = agent();
    let analysis = ctx.output_maybe(ANALYZE);
    let last_review = ctx.latest(REVIEW);
    let approved = last_review.as_ref().is_some_and(|r| r.approved);
    let feedback = last_review.map(|r| r.summary).unwrap_or_default();
    let analysis_text = analysis.map(|a| format!("{} (severity {})", a.summary, a.severity));

    workflow! {
        <Workflow name="bugfix">
            <Task id=ANALYZE agent={agent.clone()} retries=2 timeout={Duration::from_secs(900)}>
                "Analyze this bug in the repository in the current directory. Read the relevant "
                "code; do not edit anything yet.\n\nBug: " { &ctx.input().description }
            </Task>
            <Ralph id="fix-review" until={approved} max_iterations=3 on_max_reached=ReturnLast>
                <Task id=FIX agent={agent.clone()} retries=1 timeout={Duration::from_secs(1800)}>
                    "Fix this bug with the smallest correct change, and run the tests.\n\nAnalysis: "
                    { analysis_text.clone().unwrap_or_default() }
                    { if feedback.is_empty() { String::new() } else { format!("\n\nReviewer feedback on the previous round: {feedback}") } }
                </Task>
                <Task id=REVIEW agent={agent.clone()} retries=1 timeout={Duration::from_secs(900)}>
                    "Review the uncommitted changes in the current directory as a fix for: "
                    { &ctx.input().description }
                    "\nApprove only if the fix is complete, minimal and the tests pass."
                </Task>
            </Ralph>
        </Workflow>
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::main(bugfix).await
}
