//! A three-phase feature workflow over a scratch repository — research, implement, test — that
//! loops back to implement while the tests fail. Every task is plain Rust (compute tasks), yet
//! each `<Step>` is recorded with working-copy snapshots before and after it, so a run can be
//! rolled back to any step and resumed from there (seeds 000, 001 and 003).
//!
//! The "project" is `add.sh`, which should print the sum of its two arguments; its test runs it.
//! The first implementation is wrong (it subtracts), the test says so, and the second pass reads
//! the failure and fixes it.
//!
//! ```text
//! mkdir /tmp/feat && cd /tmp/feat && git init -q && echo '# add' > README.md && git add -A && git commit -qm init
//! cargo run --example feature -- --workdir /tmp/feat run --input '{"repo": "/tmp/feat"}'
//! cargo run --bin smithers -- steps                      # 5 steps: survey, implement, run-tests, implement, run-tests
//! cargo run --bin smithers -- diff RUN 4                 # what the second implement changed
//! cargo run --bin smithers -- step rollback RUN 4        # add.sh is back to the buggy version; steps 4, 5 inactive
//! cargo run --example feature -- --workdir /tmp/feat resume --run-id RUN   # re-runs exactly those (as steps 6, 7)
//! ```

use std::path::PathBuf;

use smithers::prelude::*;

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    /// The repository the feature is built in.
    repo: PathBuf,
}

/// What the research found.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Survey {
    /// Files in the repository.
    files: Vec<String>,
    /// Where the notes were written.
    notes: String,
}

/// What an implementation pass changed.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Change {
    /// The file written.
    file: String,
    /// What it does now.
    summary: String,
}

/// The tests' verdict.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct TestReport {
    /// Whether every test passed.
    passed: bool,
    /// What the failing test saw.
    detail: String,
}

const SURVEY: Ref<Survey> = Ref::new("survey");
const IMPLEMENT: Ref<Change> = Ref::new("implement");
const TESTS: Ref<TestReport> = Ref::new("run-tests");

fn feature(ctx: &Ctx<Input>) -> Node {
    let repo = ctx.input().repo.clone();
    let passed = ctx.latest(TESTS).is_some_and(|t| t.passed);
    // The last failure, for the next implementation pass to fix.
    let feedback = ctx.latest(TESTS).filter(|t| !t.passed).map(|t| t.detail);
    let first_pass = ctx.loop_iteration("feature") == 0;
    let (r1, r2, r3) = (repo.clone(), repo.clone(), repo);

    workflow! {
        <Workflow name="feature">
            <Ralph id="feature" until={passed} max_iterations=3>
                <Phase name="research" skip_if={!first_pass}>
                    <Step name="survey">
                        <Task id=SURVEY run={move |_t: TaskCtx| research(r1.clone())} />
                    </Step>
                </Phase>
                <Phase name="implement">
                    <Step name="implement">
                        <Task id=IMPLEMENT run={move |_t: TaskCtx| implement(r2.clone(), feedback.clone())} />
                    </Step>
                </Phase>
                <Phase name="test">
                    <Step name="run-tests">
                        <Task id=TESTS run={move |_t: TaskCtx| run_tests(r3.clone())} />
                    </Step>
                </Phase>
            </Ralph>
        </Workflow>
    }
}

fn io(e: std::io::Error) -> TaskError {
    TaskError::terminal(e.to_string())
}

/// Lists the repository and writes research notes into it.
async fn research(repo: PathBuf) -> Result<Survey, TaskError> {
    let mut files = Vec::new();
    let mut dir = tokio::fs::read_dir(&repo).await.map_err(io)?;
    while let Some(e) = dir.next_entry().await.map_err(io)? {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            files.push(name);
        }
    }
    files.sort();
    let notes = "RESEARCH.md";
    let text = format!(
        "# Research\n\nFiles: {}\n\nThe feature: `add.sh A B` prints A + B.\n",
        files.join(", ")
    );
    tokio::fs::write(repo.join(notes), text).await.map_err(io)?;
    Ok(Survey {
        files,
        notes: notes.into(),
    })
}

/// Writes `add.sh`; without feedback the first attempt gets the operator wrong.
async fn implement(repo: PathBuf, feedback: Option<String>) -> Result<Change, TaskError> {
    let (op, summary) = match &feedback {
        None => ("-", "first implementation of add.sh".to_owned()),
        Some(f) => ("+", format!("fixed add.sh after the tests said: {f}")),
    };
    let script =
        format!("#!/bin/sh\n# Prints the sum of its two arguments.\necho $(( $1 {op} $2 ))\n");
    tokio::fs::write(repo.join("add.sh"), script)
        .await
        .map_err(io)?;
    Ok(Change {
        file: "add.sh".into(),
        summary,
    })
}

/// Runs `sh add.sh 2 3` in the repository and expects `5`.
async fn run_tests(repo: PathBuf) -> Result<TestReport, TaskError> {
    let out = tokio::process::Command::new("sh")
        .arg("add.sh")
        .args(["2", "3"])
        .current_dir(&repo)
        .output()
        .await
        .map_err(io)?;
    let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(TestReport {
        passed: out.status.success() && got == "5",
        detail: format!("`sh add.sh 2 3` printed {got:?}, expected \"5\""),
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::main(feature).await
}
