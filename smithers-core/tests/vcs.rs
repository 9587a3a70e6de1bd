//! Working-copy snapshots around agent attempts and `revert`: an agent that edits a git
//! repository gets a snapshot before and after each attempt, recorded on the attempt row, and
//! revert restores the working tree without touching HEAD or the index.
mod common;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use smithers_core::node::{Task, Workflow};
use smithers_core::RunStatus;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, Ctx};

/// An agent that rewrites `src.txt` and creates `added.txt` in its repository.
struct Editor(PathBuf);

#[async_trait::async_trait]
impl Agent for Editor {
    fn name(&self) -> &str {
        "editor"
    }
    fn cwd(&self) -> Option<PathBuf> {
        Some(self.0.clone())
    }
    fn edits_files(&self) -> bool {
        true
    }
    async fn generate(&self, _req: AgentRequest) -> Result<AgentResponse, AgentError> {
        std::fs::write(self.0.join("src.txt"), "edited by the agent").unwrap();
        std::fs::write(self.0.join("added.txt"), "new").unwrap();
        Ok(AgentResponse {
            text: r#"{"n": 1, "note": "edited"}"#.into(),
            ..AgentResponse::default()
        })
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn agent_attempts_are_snapshotted_and_revert_restores_the_working_tree() {
    let h = Harness::new();
    let repo = tempfile::tempdir().unwrap();
    let r = repo.path().to_path_buf();
    git(&r, &["init", "-q"]);
    std::fs::write(r.join("src.txt"), "original").unwrap();
    git(&r, &["add", "src.txt"]);
    git(
        &r,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    let head = git(&r, &["rev-parse", "HEAD"]);

    let agent_dir = r.clone();
    let engine = h.engine(move |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("edit")
                    .agent(Editor(agent_dir.clone()))
                    .prompt("Edit.")
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(
        std::fs::read_to_string(r.join("src.txt")).unwrap(),
        "edited by the agent"
    );

    let attempts = h.store.attempts(&report.run_id).await.unwrap();
    let a = &attempts[0];
    let (before, after) = (a.vcs_before.clone().unwrap(), a.vcs_after.clone().unwrap());
    assert_eq!(
        std::fs::canonicalize(a.vcs_repo.as_deref().unwrap()).unwrap(),
        std::fs::canonicalize(&r).unwrap()
    );
    assert_eq!(git(&r, &["show", &format!("{before}:src.txt")]), "original");
    assert_eq!(
        git(&r, &["show", &format!("{after}:src.txt")]),
        "edited by the agent"
    );
    assert_eq!(
        git(
            &r,
            &["for-each-ref", "--format=%(refname)", "refs/smithers"]
        )
        .lines()
        .count(),
        2
    );

    let reverted = smithers_core::vcs::revert(&*h.store, &report.run_id, "edit", None, None)
        .await
        .unwrap();
    assert_eq!(
        (
            reverted.iteration,
            reverted.attempt,
            reverted.snapshot.as_str()
        ),
        (0, 1, before.as_str())
    );
    assert_eq!(
        std::fs::read_to_string(r.join("src.txt")).unwrap(),
        "original"
    );
    assert!(!r.join("added.txt").exists());
    assert_eq!(git(&r, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&r, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn revert_of_a_node_without_snapshots_names_it() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(Task::<Num>::new().id("calc").value(num(1)).build())
            .build()
    });
    let run = engine.run(()).await.unwrap().run_id;
    let e = smithers_core::vcs::revert(&*h.store, &run, "calc", None, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "node `calc` of run `{run}` has no working-copy snapshot"
        )),
        "{e}"
    );
}
