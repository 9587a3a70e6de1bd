//! The step database in full and time travel, on persisted rows and real git repositories:
//! sequential step ids with parents, pending rows, snapshots of compute steps, the commit a step
//! made, token usage and agent config; rollback deactivating later steps and resume re-running
//! exactly those; rewind to a frame; fork from a frame; refusals that change nothing.
mod common;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::node::{Phase, Step, Task, Workflow};
use smithers_core::store::{RunStatus, Store};
use smithers_core::timetravel;
use smithers_core::{Agent, AgentError, AgentRequest, AgentResponse, Ctx, Node, Usage};

fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    init_repo(d.path(), &[("notes.txt", "start\n")]);
    d
}

fn options(dir: &Path) -> EngineOptions {
    EngineOptions {
        workdir: Some(dir.to_path_buf()),
        ..EngineOptions::default()
    }
}

/// A compute task that appends `line` to `notes.txt` in `dir` and counts its runs.
fn append(id: &str, dir: &Path, line: &str, runs: &Arc<AtomicUsize>) -> Node {
    let (dir, line, runs) = (dir.to_path_buf(), line.to_owned(), runs.clone());
    Task::<Num>::new()
        .id(id)
        .run(move |_t| {
            let (dir, line, runs) = (dir.clone(), line.clone(), runs.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let p = dir.join("notes.txt");
                let mut text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
                text.push_str(&line);
                text.push('\n');
                std::fs::write(&p, text).map_err(|e| e.to_string())?;
                Ok::<_, String>(num(1))
            }
        })
        .build()
}

/// Three steps in one phase, each appending a line: `a`, `b`, `c`.
fn three_steps(dir: PathBuf, runs: [Arc<AtomicUsize>; 3]) -> impl Fn(&Ctx<()>) -> Node + Clone {
    move |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Phase::new()
                    .name("work")
                    .child(
                        Step::new()
                            .name("one")
                            .child(append("a", &dir, "a", &runs[0]))
                            .build(),
                    )
                    .child(
                        Step::new()
                            .name("two")
                            .child(append("b", &dir, "b", &runs[1]))
                            .build(),
                    )
                    .child(
                        Step::new()
                            .name("three")
                            .child(append("c", &dir, "c", &runs[2]))
                            .build(),
                    )
                    .build(),
            )
            .build()
    }
}

fn counters() -> [Arc<AtomicUsize>; 3] {
    [Arc::default(), Arc::default(), Arc::default()]
}

fn runs(c: &[Arc<AtomicUsize>; 3]) -> [usize; 3] {
    [0, 1, 2].map(|i| c[i].load(Ordering::SeqCst))
}

/// `(id, parent, name, status, active)` of every step.
async fn step_rows(store: &dyn Store, run: &str) -> Vec<(i64, Option<i64>, String, String, bool)> {
    store
        .steps(run)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.step_id, s.parent_step_id, s.name, s.status, s.active))
        .collect()
}

fn row(
    id: i64,
    parent: Option<i64>,
    name: &str,
    status: &str,
    active: bool,
) -> (i64, Option<i64>, String, String, bool) {
    (id, parent, name.into(), status.into(), active)
}

#[tokio::test]
async fn compute_steps_are_snapshotted_and_a_task_body_sees_the_pending_steps() {
    let h = Harness::new();
    let r = repo();
    let dir = r.path().to_path_buf();
    let seen: Arc<std::sync::Mutex<Vec<(i64, String)>>> = Arc::default();
    let wf = {
        let (dir, seen) = (dir.clone(), seen.clone());
        move |_ctx: &Ctx<()>| {
            let (dir, seen) = (dir.clone(), seen.clone());
            let look = Task::<Num>::new()
                .id("look")
                .run(move |t| {
                    let seen = seen.clone();
                    async move {
                        let steps = t.steps().expect("a task body has the Steps API");
                        let cur = steps.current_async().await.map_err(|e| e.to_string())?;
                        let all = steps
                            .by_run_async(t.run_id())
                            .await
                            .map_err(|e| e.to_string())?;
                        let mut s = seen.lock().unwrap();
                        s.push((cur.map_or(0, |c| c.step_id), String::new()));
                        s.extend(all.into_iter().map(|r| (r.step_id, r.status)));
                        Ok::<_, String>(num(0))
                    }
                })
                .build();
            let commit = Task::<Num>::new()
                .id("commit")
                .run(move |_t| {
                    let dir = dir.clone();
                    async move {
                        std::fs::write(dir.join("made.bin"), [0u8, 1, 2, 255]).unwrap();
                        git(&dir, &["add", "made.bin"]);
                        git(&dir, &["commit", "-q", "-m", "step two commits"]);
                        Ok::<_, String>(num(2))
                    }
                })
                .build();
            Workflow::new()
                .child(
                    Phase::new()
                        .name("work")
                        .child(Step::new().name("look").child(look).build())
                        .child(Step::new().name("commit").child(commit).build())
                        .build(),
                )
                .build()
        }
    };
    let report = h.engine_with(options(&dir), wf).run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    // While step 1 ran, step 2 already had its pending row.
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (1, String::new()),
            (1, "running".into()),
            (2, "pending".into())
        ]
    );
    let steps = h.store.steps(&report.run_id).await.unwrap();
    assert_eq!(
        step_rows(&*h.store, &report.run_id).await,
        [
            row(1, None, "look", "completed", true),
            row(2, Some(1), "commit", "completed", true)
        ]
    );
    let (one, two) = (&steps[0], &steps[1]);
    assert_eq!(one.vcs_backend.as_deref(), Some("git"));
    let before = two.snapshot_before.as_deref().unwrap();
    let after = two.snapshot_after.as_deref().unwrap();
    assert_eq!(git(&dir, &["cat-file", "-t", before]), "commit");
    assert!(git(&dir, &["ls-tree", "--name-only", before])
        .lines()
        .all(|f| f != "made.bin"));
    assert!(git(&dir, &["ls-tree", "--name-only", after])
        .lines()
        .any(|f| f == "made.bin"));
    let head = git(&dir, &["rev-parse", "HEAD"]);
    assert_eq!(two.commit_created.as_deref(), Some(head.as_str()));
    assert_eq!(one.commit_created, None);
    assert_eq!(two.token_usage_json.as_ref().unwrap()["attempts"], 1);
    assert!(one.created_at <= one.started_at.unwrap());
    assert!(one.duration_ms.is_some());
    // Each snapshot is kept reachable under refs/smithers/.
    let refs = git(
        &dir,
        &["for-each-ref", "--format=%(objectname)", "refs/smithers"],
    );
    assert!(refs.lines().any(|c| c == before) && refs.lines().any(|c| c == after));
    // `smithers diff` shows what step 2 changed.
    let d = timetravel::diff(&*h.store, &report.run_id, 2)
        .await
        .unwrap();
    assert!(d.contains("made.bin"), "{d}");
}

/// An agent that fails its first attempt and answers the second, with usage both times.
struct Metered(AtomicUsize);

#[async_trait::async_trait]
impl Agent for Metered {
    fn name(&self) -> &str {
        "metered"
    }
    fn signature(&self) -> serde_json::Value {
        "metered --fast".into()
    }
    fn model(&self) -> Option<String> {
        Some("m-1".into())
    }
    fn system_prompt(&self) -> Option<String> {
        Some("be brief".into())
    }
    async fn generate(&self, _req: AgentRequest) -> Result<AgentResponse, AgentError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        let usage = Usage {
            input_tokens: Some(100),
            output_tokens: Some(10),
            cost_usd: Some(0.25),
            ..Usage::default()
        };
        Ok(AgentResponse {
            text: if n == 0 {
                "not json".into()
            } else {
                r#"{"n": 7, "note": null}"#.into()
            },
            usage,
            exit_code: Some(if n == 0 { 3 } else { 0 }),
            ..AgentResponse::default()
        })
    }
}

#[tokio::test]
async fn a_step_records_its_agent_config_and_usage_summed_over_attempts() {
    let h = Harness::new();
    let agent = Arc::new(Metered(AtomicUsize::new(0)));
    let wf = move |_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Step::new()
                    .name("ask")
                    .child(
                        Task::<Num>::new()
                            .id("q")
                            .agent(agent.clone())
                            .retries(1)
                            .prompt("?")
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    let report = h.engine(wf).run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    let s = &h.store.steps(&report.run_id).await.unwrap()[0];
    let u = s.token_usage_json.clone().unwrap();
    assert_eq!(
        (
            u["input_tokens"].clone(),
            u["output_tokens"].clone(),
            u["cost_usd"].clone(),
            u["attempts"].clone()
        ),
        (200.into(), 20.into(), 0.5.into(), 2.into())
    );
    assert_eq!(s.exit_code, Some(0));
    let sha = "c4e7f5ba9a6c79e6c4a8bcee1e6b3d2f4b3e9f2a1f8b0a9ad5d1e63e35c1b6a2";
    let cfg = &s.agent_config_json.clone().unwrap()[0];
    assert_eq!(cfg["agent"], "metered");
    assert_eq!(cfg["model"], "m-1");
    assert_eq!(cfg["flags"], "metered --fast");
    assert_eq!(cfg["node_id"], "q");
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"be brief"))
    };
    assert_ne!(expected, sha);
    assert_eq!(cfg["system_prompt_sha256"], expected.as_str());
}

#[tokio::test]
async fn rollback_restores_the_files_deactivates_later_steps_and_resume_reruns_exactly_them() {
    let h = Harness::new();
    let r = repo();
    let dir = r.path().to_path_buf();
    let c = counters();
    let wf = three_steps(dir.clone(), c.clone());
    let report = h
        .engine_with(options(&dir), wf.clone())
        .run(())
        .await
        .unwrap();
    let run = report.run_id.clone();
    assert_eq!(report.status, RunStatus::Finished);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\na\nb\nc\n"
    );
    let head = git(&dir, &["rev-parse", "HEAD"]);

    let done = timetravel::rollback(&*h.store, &run, 2, false)
        .await
        .unwrap();
    assert_eq!(done.report.deactivated_steps, [2, 3]);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\na\n"
    );
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        step_rows(&*h.store, &run).await,
        [
            row(1, None, "one", "completed", true),
            row(2, Some(1), "two", "completed", false),
            row(3, Some(2), "three", "completed", false)
        ]
    );
    assert_eq!(h.run_status(&run).0, "cancelled");
    // The rolled-back outputs are kept for audit but no longer read.
    assert_eq!(h.num_rows(&run).len(), 1);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM _smithers_rolled_back_outputs"),
        2
    );
    assert_eq!(h.node_row(&run, "b", 0).unwrap().0, "pending");

    let again = Engine::new(h.reopen(), wf)
        .with_options(options(&dir))
        .resume(Some(&run))
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::Finished, "{again:?}");
    assert_eq!(
        runs(&c),
        [1, 2, 2],
        "resume re-ran exactly the rolled-back steps"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\na\nb\nc\n"
    );
    assert_eq!(
        step_rows(&*h.store, &run).await,
        [
            row(1, None, "one", "completed", true),
            row(2, Some(1), "two", "completed", false),
            row(3, Some(2), "three", "completed", false),
            row(4, Some(1), "two", "completed", true),
            row(5, Some(4), "three", "completed", true)
        ]
    );
    // Attempt numbering continues; the rolled-back attempts stay for audit.
    assert_eq!(
        h.attempts(&run, "b")
            .iter()
            .map(|a| a.1)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[tokio::test]
async fn rollback_is_refused_while_a_driver_holds_the_run_and_changes_nothing() {
    let h = Harness::new();
    let r = repo();
    let dir = r.path().to_path_buf();
    let report = h
        .engine_with(options(&dir), three_steps(dir.clone(), counters()))
        .run(())
        .await
        .unwrap();
    let run = report.run_id;
    // A live process (this one, under another owner) drives the run.
    let owner = smithers_core::store::lease_owner();
    h.store
        .acquire_lease(&run, &owner, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let e = timetravel::rollback(&*h.store, &run, 2, false)
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "run `{run}` is being driven by another process (`{owner}`"
        )),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\na\nb\nc\n"
    );
    assert!(step_rows(&*h.store, &run).await.iter().all(|s| s.4));
    assert_eq!(h.run_status(&run).0, "finished");
}

#[tokio::test]
async fn rollback_refuses_a_working_copy_changed_after_the_run_unless_forced() {
    let h = Harness::new();
    let r = repo();
    let dir = r.path().to_path_buf();
    let run = h
        .engine_with(options(&dir), three_steps(dir.clone(), counters()))
        .run(())
        .await
        .unwrap()
        .run_id;
    std::fs::write(dir.join("mine.txt"), "the user's own work\n").unwrap();
    let e = timetravel::rollback(&*h.store, &run, 1, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has changes made after run") && e.contains("--force"),
        "{e}"
    );
    assert!(dir.join("mine.txt").exists());
    assert!(step_rows(&*h.store, &run).await.iter().all(|s| s.4));

    let done = timetravel::rollback(&*h.store, &run, 1, true)
        .await
        .unwrap();
    assert!(!dir.join("mine.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\n"
    );
    // Nothing is lost: the user's work is in the snapshot taken first.
    let saved = done.saved.unwrap();
    assert_eq!(
        git(&dir, &["show", &format!("{saved}:mine.txt")]),
        "the user's own work"
    );
    assert_eq!(done.report.deactivated_steps, [1, 2, 3]);
}

#[tokio::test]
async fn bad_rollback_requests_name_what_is_wrong_and_change_nothing() {
    let h = Harness::new();
    let r = repo();
    let dir = r.path().to_path_buf();
    let run = h
        .engine_with(options(&dir), three_steps(dir.clone(), counters()))
        .run(())
        .await
        .unwrap()
        .run_id;
    let msg = |e: smithers_core::Error| e.to_string();
    assert_eq!(
        msg(timetravel::rollback(&*h.store, "nope", 1, false)
            .await
            .unwrap_err()),
        "run `nope` not found in this database; `smithers runs` lists the runs it has"
    );
    assert_eq!(
        msg(timetravel::rollback(&*h.store, &run, 9, false)
            .await
            .unwrap_err()),
        format!("run `{run}` has no step 9; `smithers steps {run}` lists them")
    );
    assert_eq!(
        msg(timetravel::rewind(&*h.store, &run, 7, false)
            .await
            .unwrap_err()),
        format!("run `{run}` has no frame 7; `smithers frames {run} --all` lists them")
    );
    // A snapshot whose commit was garbage-collected.
    let before = h
        .store
        .step(&run, 2)
        .await
        .unwrap()
        .snapshot_before
        .unwrap();
    for r in git(
        &dir,
        &["for-each-ref", "--format=%(refname)", "refs/smithers"],
    )
    .lines()
    {
        git(&dir, &["update-ref", "-d", r]);
    }
    git(&dir, &["reflog", "expire", "--expire=now", "--all"]);
    git(&dir, &["gc", "-q", "--prune=now"]);
    let e = msg(timetravel::rollback(&*h.store, &run, 2, false)
        .await
        .unwrap_err());
    assert!(
        e.contains(&format!("(commit {before}) no longer exists"))
            && e.contains("garbage-collected"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\na\nb\nc\n"
    );
    assert!(step_rows(&*h.store, &run).await.iter().all(|s| s.4));
    assert_eq!(h.run_status(&run).0, "finished");

    // Outside a repository steps have no snapshot.
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("notes.txt"), "start\n").unwrap();
    let h2 = Harness::new();
    let run2 = h2
        .engine_with(
            options(plain.path()),
            three_steps(plain.path().to_path_buf(), counters()),
        )
        .run(())
        .await
        .unwrap()
        .run_id;
    let e = msg(timetravel::rollback(&*h2.store, &run2, 1, false)
        .await
        .unwrap_err());
    assert_eq!(
        e,
        format!("step 1 (`one`) of run `{run2}` has no working-copy snapshot (the run was not inside a git or jj repository, or it never started); nothing was changed")
    );
}

/// `a`, then (a new frame) `b` once `a` has its output.
fn branching(runs: [Arc<AtomicUsize>; 3]) -> impl Fn(&Ctx<serde_json::Value>) -> Node + Clone {
    move |ctx: &Ctx<serde_json::Value>| {
        let count = |i: usize, id: &str| {
            let r = runs[i].clone();
            Task::<Num>::new()
                .id(id)
                .run(move |_t| {
                    r.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, String>(num(1)) }
                })
                .build()
        };
        let mut w = Workflow::new().child(count(0, "a"));
        if ctx.output_maybe::<Num>("a").is_some() {
            w = w.child(count(1, "b"));
        }
        w.build()
    }
}

#[tokio::test]
async fn rewind_to_a_frame_makes_later_nodes_run_again() {
    let h = Harness::new();
    let c = counters();
    let engine = h.engine(branching(c.clone()));
    let run = engine.run(serde_json::json!({})).await.unwrap().run_id;
    assert_eq!(h.store.frames(&run).await.unwrap().len(), 2);
    let done = timetravel::rewind(&*h.store, &run, 1, false).await.unwrap();
    assert_eq!(
        done.report.reset_nodes,
        [("a".to_owned(), 0), ("b".to_owned(), 0)]
    );
    assert_eq!(done.restored, None);
    let again = engine.resume(Some(&run)).await.unwrap();
    assert_eq!(again.status, RunStatus::Finished);
    assert_eq!(runs(&c), [2, 2, 0]);
    assert_eq!(h.event_payloads(&run, "run_rewound").len(), 1);
}

#[tokio::test]
async fn fork_copies_the_history_up_to_a_frame_and_runs_the_rest() {
    let h = Harness::new();
    let c = counters();
    let engine = h.engine(branching(c.clone()));
    let parent = engine
        .run(serde_json::json!({"x": 1}))
        .await
        .unwrap()
        .run_id;
    assert_eq!(runs(&c), [1, 1, 0]);
    // Frame 2 is the tree with `b` mounted, recorded once `a` finished.
    let forked = engine
        .fork(&parent, 2, Some(serde_json::json!({"x": 2})))
        .await
        .unwrap();
    assert_eq!(forked.status, RunStatus::Finished, "{forked:?}");
    assert_ne!(forked.run_id, parent);
    assert_eq!(runs(&c), [1, 2, 0], "the fork kept `a` and ran `b`");
    let rec = h.store.run(&forked.run_id).await.unwrap().unwrap();
    assert_eq!(
        (rec.parent_run_id.as_deref(), rec.parent_frame),
        (Some(parent.as_str()), Some(2))
    );
    assert_eq!(rec.input, serde_json::json!({"x": 2}));
    assert_eq!(h.num_rows(&forked.run_id).len(), 2);
    assert_eq!(h.num_rows(&parent).len(), 2, "the parent is untouched");
    // The parent's frames up to the fork point were copied (a resume records the next one).
    let trees = |run: &str| {
        let store = h.store.clone();
        let run = run.to_owned();
        async move {
            store
                .frames(&run)
                .await
                .unwrap()
                .into_iter()
                .take(2)
                .map(|f| (f.tree, f.structure))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(trees(&forked.run_id).await, trees(&parent).await);

    let runs_before = h.count("SELECT COUNT(*) FROM _smithers_runs");
    let e = engine.fork(&parent, 9, None).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!("run `{parent}` has no frame 9; `smithers frames {parent} --all` lists them")
    );
    let typed = h.engine(|_ctx: &Ctx<u32>| Workflow::new().build());
    let e = typed.fork(&parent, 1, None).await.unwrap_err().to_string();
    assert!(
        e.starts_with(
            "invalid workflow input: the fork's input does not fit this workflow's input type"
        ),
        "{e}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM _smithers_runs"), runs_before);
}

#[tokio::test]
async fn in_a_jj_repository_steps_record_commit_ids_and_rollback_leaves_at_and_bookmarks() {
    let Some(jj) = jj_or_skip(
        "in_a_jj_repository_steps_record_commit_ids_and_rollback_leaves_at_and_bookmarks",
    ) else {
        return;
    };
    let h = Harness::new();
    let r = repo();
    let dir = r.path().to_path_buf();
    let jj_run = |args: &[&str]| vcs(&jj, &dir, args);
    jj_run(&["git", "init", "--colocate", "--quiet"]);
    let at = || {
        jj_run(&[
            "log",
            "--ignore-working-copy",
            "--no-graph",
            "-r",
            "@",
            "-T",
            "change_id",
        ])
    };
    let (change, bookmarks) = (at(), jj_run(&["bookmark", "list"]));
    let c = counters();
    let wf = three_steps(dir.clone(), c.clone());
    let run = h
        .engine_with(options(&dir), wf.clone())
        .run(())
        .await
        .unwrap()
        .run_id;
    let steps = h.store.steps(&run).await.unwrap();
    assert!(steps.iter().all(|s| s.vcs_backend.as_deref() == Some("jj")));
    let before = steps[1].snapshot_before.clone().unwrap();
    assert_ne!(before, change);
    assert_eq!(
        git(&dir, &["show", &format!("{before}:notes.txt")]),
        "start\na"
    );
    timetravel::rollback(&*h.store, &run, 2, false)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\na\n"
    );
    assert_eq!((at(), jj_run(&["bookmark", "list"])), (change, bookmarks));
    let again = Engine::new(h.reopen(), wf)
        .with_options(options(&dir))
        .resume(Some(&run))
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::Finished);
    assert_eq!(runs(&c), [1, 2, 2]);
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\na\nb\nc\n"
    );
}

#[tokio::test]
async fn rolling_back_into_an_earlier_loop_iteration_puts_the_counter_back() {
    use smithers_core::node::Ralph;
    let h = Harness::new();
    let r = repo();
    let dir = r.path().to_path_buf();
    let c = counters();
    let wf = {
        let (dir, c) = (dir.clone(), c.clone());
        move |ctx: &Ctx<()>| {
            let it = ctx.iteration(smithers_core::LoopRef::DEFAULT);
            Workflow::new()
                .child(
                    Ralph::new()
                        .max_iterations(3)
                        .child(
                            Step::new()
                                .name("pass")
                                .child(append("p", &dir, &format!("pass {it}"), &c[0]))
                                .build(),
                        )
                        .build(),
                )
                .build()
        }
    };
    let run = h
        .engine_with(options(&dir), wf.clone())
        .run(())
        .await
        .unwrap()
        .run_id;
    assert_eq!(runs(&c), [3, 0, 0]);
    let rows = step_rows(&*h.store, &run).await;
    assert_eq!(rows.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
    let iterations: Vec<u32> = h
        .store
        .steps(&run)
        .await
        .unwrap()
        .iter()
        .map(|s| s.iteration)
        .collect();
    assert_eq!(iterations, [0, 1, 2]);

    // Back to before the second pass: the loop is at iteration 1 again, not done.
    let done = timetravel::rollback(&*h.store, &run, 2, false)
        .await
        .unwrap();
    assert_eq!(done.report.loops, ["ralph"]);
    assert_eq!(
        h.conn()
            .query_row(
                "SELECT iteration, done FROM _smithers_ralph WHERE run_id = ?1",
                [&run],
                |r| { Ok((r.get::<_, u32>(0)?, r.get::<_, bool>(1)?)) }
            )
            .unwrap(),
        (1, false)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\npass 0\n"
    );
    let again = Engine::new(h.reopen(), wf)
        .with_options(options(&dir))
        .resume(Some(&run))
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::Finished, "{again:?}");
    assert_eq!(
        runs(&c),
        [5, 0, 0],
        "passes 1 and 2 ran again, pass 0 did not"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "start\npass 0\npass 1\npass 2\n"
    );
    let rows = step_rows(&*h.store, &run).await;
    assert_eq!(
        rows[3..],
        [
            row(4, Some(1), "pass", "completed", true),
            row(5, Some(4), "pass", "completed", true)
        ]
    );
}

/// The two steps both Steps API tests record: `implement-feature` completed with its
/// snapshots, and an unnamed second step under it failed.
fn check_manual_steps(rows: &[smithers_core::store::StepRecord]) {
    let got: Vec<_> = rows
        .iter()
        .map(|s| {
            (
                s.step_id,
                s.parent_step_id,
                s.name.as_str(),
                s.status.as_str(),
                s.source.as_str(),
                s.snapshot_before.as_deref(),
                s.commit_created.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                1,
                None,
                "implement-feature",
                "completed",
                "api",
                Some("abc123"),
                Some("ghi789")
            ),
            (2, Some(1), "step-2", "failed", "api", None, None),
        ]
    );
}

#[test]
fn the_steps_api_works_from_plain_synchronous_code_on_stored_rows() {
    use smithers_core::steps::{StepVcsInfo, Steps};
    use smithers_core::store::NewRun;
    let h = Harness::new();
    futures::executor::block_on(h.store.create_run(NewRun {
        run_id: "manual".into(),
        workflow: "w".into(),
        input: serde_json::Value::Null,
        owner: "me".into(),
        lease_ttl: std::time::Duration::from_secs(1),
    }))
    .unwrap();
    let steps = Steps::new(h.store.clone(), "manual");
    let a = steps.start(Some("implement-feature")).unwrap();
    let b = steps.start(None).unwrap();
    assert_eq!((a, b), (1, 2));
    assert_eq!(steps.current().unwrap().map(|s| s.step_id), Some(2));
    steps
        .complete(
            a,
            StepVcsInfo {
                snapshot_before: Some("abc123".into()),
                snapshot_after: Some("def456".into()),
                commit_created: Some("ghi789".into()),
            },
        )
        .unwrap();
    steps.fail(b).unwrap();
    let rows = steps.by_run("manual").unwrap();
    check_manual_steps(&rows);
    assert!(rows
        .iter()
        .all(|s| s.completed_at.is_some() && s.created_at.to_string().contains('T')));
    assert_eq!(steps.current().unwrap(), None);
    assert_eq!(steps.list(1).unwrap(), []);
    // The seed's rows: snake_case fields in JSON.
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(json["snapshot_after"], "def456");
    assert_eq!(
        steps
            .complete(9, StepVcsInfo::default())
            .unwrap_err()
            .to_string(),
        "run `manual` has no step 9; `smithers steps manual` lists them"
    );
    assert_eq!(
        steps.by_run("nope").unwrap_err().to_string(),
        "run `nope` not found in this database; `smithers runs` lists the runs it has"
    );
}

/// The same time travel on PostgreSQL, each test in a fresh schema of the test server (skipped,
/// saying so, when none is reachable; a failure under `SMITHERS_REQUIRE_EXTERNAL=1`): the
/// workflows above, driven by an engine on a `PostgresStore`, resumed from a second store as a
/// new process would open it.
mod on_postgres {
    use super::*;
    use smithers_core::steps::{StepVcsInfo, Steps};
    use smithers_core::store::conformance::PgSchema;
    use smithers_core::store::{PostgresStore, Store};

    struct Pg {
        schema: PgSchema,
        store: Arc<dyn Store>,
        client: tokio_postgres::Client,
    }

    impl Pg {
        async fn new(test: &str) -> Option<Pg> {
            let schema = PgSchema::create(test).await?;
            let store: Arc<dyn Store> =
                Arc::new(PostgresStore::connect(&schema.url).await.unwrap());
            let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            Some(Pg {
                schema,
                store,
                client,
            })
        }

        /// A second store on the same database, as a new process would open it.
        async fn reopen(&self) -> Arc<dyn Store> {
            Arc::new(PostgresStore::connect(&self.schema.url).await.unwrap())
        }

        async fn count(&self, sql: &str) -> i64 {
            self.client.query_one(sql, &[]).await.unwrap().get(0)
        }

        async fn drop(self) {
            drop(self.client);
            self.schema.drop().await;
        }
    }

    #[tokio::test]
    async fn rollback_restores_the_files_and_resume_reruns_exactly_the_later_steps() {
        let Some(pg) = Pg::new("pg_rollback_restores_the_files").await else {
            return;
        };
        let r = repo();
        let dir = r.path().to_path_buf();
        let c = counters();
        let wf = three_steps(dir.clone(), c.clone());
        let report = Engine::new(pg.store.clone(), wf.clone())
            .with_options(options(&dir))
            .run(())
            .await
            .unwrap();
        let run = report.run_id.clone();
        assert_eq!(report.status, RunStatus::Finished, "{report:?}");
        let steps = pg.store.steps(&run).await.unwrap();
        assert!(
            steps
                .iter()
                .all(|s| s.snapshot_before.is_some() && s.snapshot_after.is_some()),
            "every step is snapshotted before and after: {steps:?}"
        );
        assert!(steps.iter().all(|s| s.duration_ms.is_some_and(|d| d >= 0)));
        assert_eq!(pg.store.phases(&run).await.unwrap()[0].status, "completed");

        let done = timetravel::rollback(&*pg.store, &run, 2, false)
            .await
            .unwrap();
        assert_eq!(done.report.deactivated_steps, [2, 3]);
        assert_eq!(
            done.report.reset_nodes,
            [("b".to_owned(), 0), ("c".to_owned(), 0)]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "start\na\n"
        );
        assert_eq!(
            step_rows(&*pg.store, &run).await,
            [
                row(1, None, "one", "completed", true),
                row(2, Some(1), "two", "completed", false),
                row(3, Some(2), "three", "completed", false)
            ]
        );
        let rec = pg.store.run(&run).await.unwrap().unwrap();
        assert_eq!(rec.status, RunStatus::Cancelled);
        assert_eq!(
            rec.error.as_deref(),
            Some("rolled back to before step 2; `resume` re-runs what was cut")
        );
        // The rolled-back outputs are kept for audit but no longer read.
        assert_eq!(
            pg.store
                .load(&run)
                .await
                .unwrap()
                .outputs
                .iter()
                .map(|o| o.0.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        let kept = pg
            .client
            .query(
                "SELECT node_id, output_table, output_json FROM _smithers_rolled_back_outputs ORDER BY node_id",
                &[],
            )
            .await
            .unwrap();
        let kept: Vec<(String, String, serde_json::Value)> = kept
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            kept,
            [
                (
                    "b".into(),
                    "num".into(),
                    serde_json::json!({"n": 1, "note": null})
                ),
                (
                    "c".into(),
                    "num".into(),
                    serde_json::json!({"n": 1, "note": null})
                )
            ]
        );
        let nodes = pg.store.nodes(&run).await.unwrap();
        assert_eq!(
            nodes
                .iter()
                .map(|n| (n.node_id.as_str(), n.status.as_str()))
                .collect::<Vec<_>>(),
            [("a", "finished"), ("b", "pending"), ("c", "pending")]
        );

        let again = Engine::new(pg.reopen().await, wf)
            .with_options(options(&dir))
            .resume(Some(&run))
            .await
            .unwrap();
        assert_eq!(again.status, RunStatus::Finished, "{again:?}");
        assert_eq!(
            runs(&c),
            [1, 2, 2],
            "resume re-ran exactly the rolled-back steps"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "start\na\nb\nc\n"
        );
        assert_eq!(
            step_rows(&*pg.store, &run).await,
            [
                row(1, None, "one", "completed", true),
                row(2, Some(1), "two", "completed", false),
                row(3, Some(2), "three", "completed", false),
                row(4, Some(1), "two", "completed", true),
                row(5, Some(4), "three", "completed", true)
            ]
        );
        // Attempt numbering continues; the rolled-back attempts stay for audit.
        let b: Vec<(i64, bool)> = pg
            .client
            .query(
                "SELECT attempt, rolled_back FROM _smithers_attempts WHERE run_id = $1 AND node_id = 'b' ORDER BY attempt",
                &[&run],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(b, [(1, true), (2, false)]);
        pg.drop().await;
    }

    #[tokio::test]
    async fn rollback_is_refused_while_a_driver_holds_the_run() {
        let Some(pg) = Pg::new("pg_rollback_is_refused").await else {
            return;
        };
        let r = repo();
        let dir = r.path().to_path_buf();
        let run = Engine::new(pg.store.clone(), three_steps(dir.clone(), counters()))
            .with_options(options(&dir))
            .run(())
            .await
            .unwrap()
            .run_id;
        let owner = smithers_core::store::lease_owner();
        pg.store
            .acquire_lease(&run, &owner, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let e = timetravel::rollback(&*pg.store, &run, 2, false)
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "run `{run}` is being driven by another process (`{owner}`"
            )),
            "{e}"
        );
        assert!(step_rows(&*pg.store, &run).await.iter().all(|s| s.4));
        assert_eq!(
            pg.store.run(&run).await.unwrap().unwrap().status,
            RunStatus::Finished
        );
        pg.drop().await;
    }

    #[tokio::test]
    async fn rewind_to_a_frame_and_fork_from_one() {
        let Some(pg) = Pg::new("pg_rewind_to_a_frame_and_fork").await else {
            return;
        };
        let c = counters();
        let engine = Engine::new(pg.store.clone(), branching(c.clone()));
        let run = engine
            .run(serde_json::json!({"x": 1}))
            .await
            .unwrap()
            .run_id;
        assert_eq!(pg.store.frames(&run).await.unwrap().len(), 2);

        // A fork from frame 2 (`b` mounted) keeps `a` and runs `b`; the parent is untouched.
        let forked = engine
            .fork(&run, 2, Some(serde_json::json!({"x": 2})))
            .await
            .unwrap();
        assert_eq!(forked.status, RunStatus::Finished, "{forked:?}");
        assert_eq!(runs(&c), [1, 2, 0], "the fork kept `a` and ran `b`");
        let rec = pg.store.run(&forked.run_id).await.unwrap().unwrap();
        assert_eq!(
            (rec.parent_run_id.as_deref(), rec.parent_frame, rec.input),
            (Some(run.as_str()), Some(2), serde_json::json!({"x": 2}))
        );
        let outputs = |run: String| {
            let store = pg.store.clone();
            async move { store.load(&run).await.unwrap().outputs.len() }
        };
        assert_eq!(outputs(forked.run_id.clone()).await, 2);
        assert_eq!(outputs(run.clone()).await, 2, "the parent is untouched");
        let trees = |run: String| {
            let store = pg.store.clone();
            async move {
                store
                    .frames(&run)
                    .await
                    .unwrap()
                    .into_iter()
                    .take(2)
                    .map(|f| (f.tree, f.structure))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(trees(forked.run_id.clone()).await, trees(run.clone()).await);
        let forked_events = pg.store.events(&forked.run_id, 0).await.unwrap();
        assert!(
            forked_events
                .windows(2)
                .all(|w| w[0].seq < w[1].seq && w[0].event.at <= w[1].event.at),
            "the fork's copied events keep their order"
        );
        let runs_before = pg.count("SELECT COUNT(*) FROM _smithers_runs").await;
        let e = engine.fork(&run, 9, None).await.unwrap_err().to_string();
        assert_eq!(
            e,
            format!("run `{run}` has no frame 9; `smithers frames {run} --all` lists them")
        );
        assert_eq!(
            pg.count("SELECT COUNT(*) FROM _smithers_runs").await,
            runs_before,
            "a refused fork creates nothing"
        );

        // Rewinding the parent to frame 1 makes both nodes run again.
        let done = timetravel::rewind(&*pg.store, &run, 1, false)
            .await
            .unwrap();
        assert_eq!(
            done.report.reset_nodes,
            [("a".to_owned(), 0), ("b".to_owned(), 0)]
        );
        assert_eq!(done.restored, None);
        let again = engine.resume(Some(&run)).await.unwrap();
        assert_eq!(again.status, RunStatus::Finished);
        assert_eq!(runs(&c), [2, 3, 0]);
        let rewound = pg
            .count(&format!(
                "SELECT COUNT(*) FROM _smithers_events WHERE run_id = '{run}' AND kind = 'run_rewound'"
            ))
            .await;
        assert_eq!(rewound, 1);
        pg.drop().await;
    }

    #[tokio::test]
    async fn rolling_back_into_an_earlier_loop_iteration_puts_the_counter_back() {
        use smithers_core::node::Ralph;
        let Some(pg) = Pg::new("pg_rolling_back_into_an_earlier_loop").await else {
            return;
        };
        let r = repo();
        let dir = r.path().to_path_buf();
        let c = counters();
        let wf = {
            let (dir, c) = (dir.clone(), c.clone());
            move |ctx: &Ctx<()>| {
                let it = ctx.iteration(smithers_core::LoopRef::DEFAULT);
                Workflow::new()
                    .child(
                        Ralph::new()
                            .max_iterations(3)
                            .child(
                                Step::new()
                                    .name("pass")
                                    .child(append("p", &dir, &format!("pass {it}"), &c[0]))
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            }
        };
        let run = Engine::new(pg.store.clone(), wf.clone())
            .with_options(options(&dir))
            .run(())
            .await
            .unwrap()
            .run_id;
        assert_eq!(runs(&c), [3, 0, 0]);
        let iterations: Vec<u32> = pg
            .store
            .steps(&run)
            .await
            .unwrap()
            .iter()
            .map(|s| s.iteration)
            .collect();
        assert_eq!(iterations, [0, 1, 2]);

        let done = timetravel::rollback(&*pg.store, &run, 2, false)
            .await
            .unwrap();
        assert_eq!(done.report.loops, ["ralph"]);
        let row = pg
            .client
            .query_one(
                "SELECT iteration, done FROM _smithers_ralph WHERE run_id = $1",
                &[&run],
            )
            .await
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (1, false));
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "start\npass 0\n"
        );
        let again = Engine::new(pg.reopen().await, wf)
            .with_options(options(&dir))
            .resume(Some(&run))
            .await
            .unwrap();
        assert_eq!(again.status, RunStatus::Finished, "{again:?}");
        assert_eq!(
            runs(&c),
            [5, 0, 0],
            "passes 1 and 2 ran again, pass 0 did not"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "start\npass 0\npass 1\npass 2\n"
        );
        assert_eq!(
            step_rows(&*pg.store, &run).await[3..],
            [
                super::row(4, Some(1), "pass", "completed", true),
                super::row(5, Some(4), "pass", "completed", true)
            ]
        );
        pg.drop().await;
    }

    #[tokio::test]
    async fn a_step_records_its_agent_config_and_usage_summed_over_attempts() {
        let Some(pg) = Pg::new("pg_a_step_records_its_agent_config").await else {
            return;
        };
        let agent = Arc::new(Metered(AtomicUsize::new(0)));
        let wf = move |_ctx: &Ctx<()>| {
            Workflow::new()
                .child(
                    Step::new()
                        .name("ask")
                        .child(
                            Task::<Num>::new()
                                .id("q")
                                .agent(agent.clone())
                                .retries(1)
                                .prompt("?")
                                .build(),
                        )
                        .build(),
                )
                .build()
        };
        let report = Engine::new(pg.store.clone(), wf).run(()).await.unwrap();
        assert_eq!(report.status, RunStatus::Finished, "{report:?}");
        let s = &pg.store.steps(&report.run_id).await.unwrap()[0];
        let u = s.token_usage_json.clone().unwrap();
        assert_eq!(
            (
                u["input_tokens"].clone(),
                u["output_tokens"].clone(),
                u["cost_usd"].clone(),
                u["attempts"].clone()
            ),
            (200.into(), 20.into(), 0.5.into(), 2.into())
        );
        assert_eq!(s.exit_code, Some(0));
        let cfg = &s.agent_config_json.clone().unwrap()[0];
        assert_eq!(
            (&cfg["agent"], &cfg["model"], &cfg["node_id"]),
            (&"metered".into(), &"m-1".into(), &"q".into())
        );
        pg.drop().await;
    }

    #[tokio::test]
    async fn the_steps_api_numbers_completes_and_fails_steps() {
        use smithers_core::store::NewRun;
        let Some(pg) = Pg::new("pg_the_steps_api").await else {
            return;
        };
        pg.store
            .create_run(NewRun {
                run_id: "manual".into(),
                workflow: "w".into(),
                input: serde_json::Value::Null,
                owner: "me".into(),
                lease_ttl: std::time::Duration::from_secs(1),
            })
            .await
            .unwrap();
        let steps = Steps::new(pg.store.clone(), "manual");
        let a = steps.start_async(Some("implement-feature")).await.unwrap();
        let b = steps.start_async(None).await.unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(
            steps.current_async().await.unwrap().map(|s| s.step_id),
            Some(2)
        );
        steps
            .complete_async(
                a,
                StepVcsInfo {
                    snapshot_before: Some("abc123".into()),
                    snapshot_after: Some("def456".into()),
                    commit_created: Some("ghi789".into()),
                },
            )
            .await
            .unwrap();
        steps.fail_async(b).await.unwrap();
        let rows = steps.by_run_async("manual").await.unwrap();
        check_manual_steps(&rows);
        assert!(rows.iter().all(|s| s.completed_at.is_some()
            && s.duration_ms.is_some_and(|d| d >= 0)
            && s.token_usage_json.is_some()));
        assert_eq!(
            steps
                .complete_async(9, StepVcsInfo::default())
                .await
                .unwrap_err()
                .to_string(),
            "run `manual` has no step 9; `smithers steps manual` lists them"
        );
        assert!(matches!(
            pg.store.start_step("nope", None).await,
            Err(smithers_core::Error::RunNotFound(_))
        ));
        pg.drop().await;
    }
}
