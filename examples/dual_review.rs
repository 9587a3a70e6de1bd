//! Dual-model review (seed 004): two reviewers (Claude and Codex) review the same change in
//! parallel with `continue_on_fail`, so one reviewer failing does not block the other; the fix
//! step is skipped when every reviewer that answered approved; a summary records who answered.
//!
//! ```text
//! cargo run --example dual_review -- run --input '{"change": "add retry backoff to the HTTP agent"}'
//! ```
//!
//! Offline by default: scripted reviewers, of which Codex fails (as a CLI that exits 1 would)
//! and Claude approves. `SMITHERS_AGENT=real` uses the real Claude Code and Codex CLIs.

use std::sync::Arc;

use smithers::agents::{ClaudeCodeAgent, CodexAgent, CodexSandbox, ScriptedAgent};
use smithers::prelude::*;
use smithers::SharedAgent;

/// The change to review.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    change: String,
}

/// One reviewer's verdict.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Review {
    /// Whether the change can land as it is.
    approved: bool,
    /// What must change (empty when approved).
    issues: Vec<String>,
}

/// What the fix step did.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Fix {
    summary: String,
}

/// Who answered and what they decided.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct ReviewSummary {
    /// Reviewers that returned a verdict.
    answered: Vec<String>,
    /// Reviewers that approved.
    approved: Vec<String>,
    /// Whether the fix step runs.
    needs_fix: bool,
}

const CLAUDE_REVIEW: Ref<Review> = Ref::new("review:claude");
const CODEX_REVIEW: Ref<Review> = Ref::new("review:codex");
const FIX: Ref<Fix> = Ref::new("review-fix");
const SUMMARY: Ref<ReviewSummary> = Ref::new("review-summary");

struct Reviewers {
    claude: SharedAgent,
    codex: SharedAgent,
    fixer: SharedAgent,
}

impl Reviewers {
    fn from_env() -> Self {
        if std::env::var("SMITHERS_AGENT").as_deref() == Ok("real") {
            return Reviewers {
                claude: Arc::new(ClaudeCodeAgent::new()),
                codex: Arc::new(CodexAgent::new().sandbox(CodexSandbox::ReadOnly)),
                fixer: Arc::new(CodexAgent::new().sandbox(CodexSandbox::WorkspaceWrite)),
            };
        }
        Reviewers {
            claude: Arc::new(
                ScriptedAgent::new()
                    .named("claude-code")
                    .reply(r#"{"approved": true, "issues": []}"#),
            ),
            codex: Arc::new(ScriptedAgent::new().named("codex").fail_terminal(
                "codex exited with status 1: stream disconnected before completion",
            )),
            fixer: Arc::new(ScriptedAgent::new().named("fixer")),
        }
    }
}

fn dual_review(ctx: &Ctx<Input>, r: &Reviewers) -> Node {
    let change = &ctx.input().change;
    let verdicts = [
        ("claude", ctx.output_maybe(CLAUDE_REVIEW)),
        ("codex", ctx.output_maybe(CODEX_REVIEW)),
    ];
    let answered: Vec<String> = verdicts
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| n.to_string())
        .collect();
    let approved: Vec<String> = verdicts
        .iter()
        .filter(|(_, v)| v.as_ref().is_some_and(|v| v.approved))
        .map(|(n, _)| n.to_string())
        .collect();
    // ReviewFix skip: nothing to fix when every reviewer that answered approved.
    let needs_fix = approved.len() < answered.len() || answered.is_empty();
    let issues: Vec<String> = verdicts
        .iter()
        .flat_map(|(_, v)| v.iter().flat_map(|v| v.issues.clone()))
        .collect();
    workflow! {
        <Workflow name="dual-review">
            <Parallel>
                <Task id=CLAUDE_REVIEW agent={r.claude.clone()} continue_on_fail>
                    "Review this change for correctness and tests: " {change}
                </Task>
                <Task id=CODEX_REVIEW agent={r.codex.clone()} continue_on_fail>
                    "Review this change for correctness and tests: " {change}
                </Task>
            </Parallel>
            <Task id=FIX agent={r.fixer.clone()} skip_if={!needs_fix}>
                "Fix these review issues: " {issues.join("; ")}
            </Task>
            <Task id=SUMMARY value={ReviewSummary { answered, approved, needs_fix }} />
        </Workflow>
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let reviewers = Reviewers::from_env();
    smithers::cli::main(move |ctx: &Ctx<Input>| dual_review(ctx, &reviewers)).await
}
