//! The atomic-unit pipeline (seed 004): for each small unit of work, implement → test → review
//! → fix → refactor → final review, inside one Ralph loop. Each implement names the
//! `next_smallest_unit`, which the next iteration works on; the final review is a strict gate
//! that rejects until everything the phase needs is done, so the loop runs as many units as it
//! takes (at most `max_units`).
//!
//! Every step is three files: the component (`implement/mod.rs`), its output schema
//! (`implement/schema.rs`) and its Markdown prompt template (`implement/prompt.md`), checked at
//! compile time. Node ids are prefixed by the phase (`parser:implement`) so several phases can
//! share a loop; `skip_phases` in the input (`["refactor"]`), or `--skip-phase refactor` /
//! `SMITHERS_SKIP_PHASES=refactor` on the command line, skips steps by name, as `SKIP_PHASES`
//! does in Smithers workflows.
//!
//! ```text
//! cargo run --example atomic -- run --input '{"phase": "parser", "goal": "parse INI files",
//!     "first_unit": "parse section headers", "skip_phases": ["refactor"]}'
//! ```
//!
//! Offline by default: the agents are scripted (two units, the first rejected by the final
//! review). `SMITHERS_AGENT=claude` or `SMITHERS_AGENT=codex` uses a real coding agent.

mod final_review;
mod implement;
mod review;
mod step;

use std::sync::Arc;

use smithers::agents::{
    ClaudeCodeAgent, ClaudePermissionMode, CodexAgent, CodexSandbox, ScriptedAgent,
};
use smithers::prelude::*;
use smithers::SharedAgent;

use final_review::{FinalReview, FinalReviewStep};
use implement::{Implement, ImplementStep};
use review::{Review, ReviewStep};
use step::{StepKind, WorkStep};

/// What the pipeline works on.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Input {
    /// The phase: the prefix of every node id.
    pub(crate) phase: String,
    /// What the phase must achieve (the final review's criterion).
    pub(crate) goal: String,
    /// The first unit to implement; later ones come from `next_smallest_unit`.
    pub(crate) first_unit: String,
    /// Steps to skip by name: `test`, `fix`, `refactor`.
    #[serde(default)]
    pub(crate) skip_phases: Vec<String>,
    /// Units at most.
    #[serde(default = "default_max_units")]
    pub(crate) max_units: u32,
}

fn default_max_units() -> u32 {
    4
}

/// The unit an iteration works on (a static task, so the chain is visible in the database).
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
pub(crate) struct Unit {
    /// The unit's description.
    pub(crate) name: String,
}

/// The loop that runs one unit per iteration.
pub(crate) const UNITS: LoopRef = LoopRef::new("units");

/// The agents of each role.
#[derive(Clone)]
pub(crate) struct Agents {
    implementer: SharedAgent,
    tester: SharedAgent,
    reviewer: SharedAgent,
    fixer: SharedAgent,
    refactorer: SharedAgent,
    final_reviewer: SharedAgent,
}

impl Agents {
    /// `SMITHERS_AGENT=claude|codex` picks a real coding agent for every role; otherwise
    /// scripted agents answer as a two-unit run would.
    fn from_env() -> Self {
        match std::env::var("SMITHERS_AGENT").as_deref() {
            Ok("claude") => Self::all(Arc::new(
                ClaudeCodeAgent::new().permission_mode(ClaudePermissionMode::AcceptEdits),
            )),
            Ok("codex") => Self::all(Arc::new(
                CodexAgent::new().sandbox(CodexSandbox::WorkspaceWrite),
            )),
            _ => Self::scripted(),
        }
    }

    fn all(agent: SharedAgent) -> Self {
        Agents {
            implementer: agent.clone(),
            tester: agent.clone(),
            reviewer: agent.clone(),
            fixer: agent.clone(),
            refactorer: agent.clone(),
            final_reviewer: agent,
        }
    }

    /// Two units: the first one's review asks for a fix and its final review rejects (the
    /// phase is not done); the second is approved at once and passes the gate.
    fn scripted() -> Self {
        let a = |name: &str| ScriptedAgent::new().named(name);
        Agents {
            implementer: Arc::new(
                a("implementer")
                    .reply(r#"{"files_changed": ["src/ini.rs"], "commit_message": "feat(parser): parse section headers", "what_was_done": "section headers", "next_smallest_unit": "parse key = value pairs"}"#)
                    .reply(r#"{"files_changed": ["src/ini.rs"], "commit_message": "feat(parser): parse key/value pairs", "what_was_done": "key/value pairs", "next_smallest_unit": null}"#),
            ),
            tester: Arc::new(
                a("tester")
                    .reply(r#"{"summary": "3 tests added, all pass", "ok": true}"#)
                    .reply(r#"{"summary": "5 tests added, all pass", "ok": true}"#),
            ),
            reviewer: Arc::new(
                a("reviewer")
                    .reply(r#"{"approved": false, "issues": ["an empty header `[]` is accepted"]}"#)
                    .reply(r#"{"approved": true, "issues": []}"#),
            ),
            fixer: Arc::new(a("fixer").reply(r#"{"summary": "reject empty headers", "ok": true}"#)),
            refactorer: Arc::new(
                a("refactorer")
                    .reply(r#"{"summary": "extract the header parser", "ok": true}"#)
                    .reply(r#"{"summary": "nothing to refactor", "ok": true}"#),
            ),
            final_reviewer: Arc::new(
                a("final-reviewer")
                    .reply(r#"{"ready_to_move_on": false, "reasons": ["key/value pairs are not parsed yet"]}"#)
                    .reply(r#"{"ready_to_move_on": true, "reasons": []}"#),
            ),
        }
    }
}

/// The node id of `step` in `phase` (`parser:implement`).
pub(crate) fn node_id(phase: &str, step: &str) -> String {
    format!("{phase}:{step}")
}

/// The pipeline.
pub(crate) fn atomic(ctx: &Ctx<Input>, agents: &Agents) -> Node {
    let input = ctx.input();
    let phase = input.phase.as_str();
    let it = ctx.iteration(UNITS);
    // The strict gate: only the final review decides that the phase is done.
    let done = ctx
        .latest::<FinalReview>(node_id(phase, "final-review"))
        .is_some_and(|r| r.ready_to_move_on);
    // nextSmallestUnit chaining: this iteration's unit is what the previous implement named.
    let implements = ctx.outputs::<Implement>(node_id(phase, "implement"));
    let unit = match it
        .checked_sub(1)
        .and_then(|prev| implements.get(prev as usize))
    {
        Some(prev) => prev
            .next_smallest_unit
            .clone()
            .unwrap_or_else(|| "finish the phase".to_owned()),
        None => input.first_unit.clone(),
    };
    let review = ctx.output_maybe::<Review>(node_id(phase, "review"));
    let approved = review.as_ref().is_some_and(|r| r.approved);
    let issues = review.map(|r| r.issues).unwrap_or_default();
    // Skipped by the input, or by `--skip-phase NAME` / `SMITHERS_SKIP_PHASES` (`ctx.skips`).
    let skip = |step: &str| input.skip_phases.iter().any(|s| s == step) || ctx.skips(step);
    workflow! {
        <Workflow name="atomic">
            <Ralph id=UNITS until={done} max_iterations={input.max_units} on_max_reached=Fail>
                <Task id={node_id(phase, "unit")} output=Unit value={Unit { name: unit.clone() }} />
                <ImplementStep phase={phase} goal={&input.goal} unit={&unit} iteration={it} agent={agents.implementer.clone()} />
                <WorkStep phase={phase} kind={StepKind::Test} unit={&unit} issues={&[][..]} skip={skip("test")} agent={agents.tester.clone()} />
                <ReviewStep phase={phase} unit={&unit} agent={agents.reviewer.clone()} />
                <WorkStep phase={phase} kind={StepKind::Fix} unit={&unit} issues={&issues[..]} skip={skip("fix") || approved} agent={agents.fixer.clone()} />
                <WorkStep phase={phase} kind={StepKind::Refactor} unit={&unit} issues={&[][..]} skip={skip("refactor")} agent={agents.refactorer.clone()} />
                <FinalReviewStep phase={phase} goal={&input.goal} agent={agents.final_reviewer.clone()} />
            </Ralph>
        </Workflow>
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let agents = Agents::from_env();
    smithers::cli::main(move |ctx: &Ctx<Input>| atomic(ctx, &agents)).await
}
