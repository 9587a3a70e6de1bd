//! `needs_approval`: the run parks with status waiting-approval, a human decides from another
//! handle on the database, and resume continues without re-running earlier nodes.
mod common;
use common::*;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::node::{Task, Workflow};
use smithers_core::store::{ApprovalStatus, RunStatus};
use smithers_core::{Ctx, Node};

fn deploy_workflow(
    before: Counter,
    deploys: Counter,
    continue_on_fail: bool,
) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + Clone + 'static {
    move |_ctx| {
        let (before, deploys) = (before.clone(), deploys.clone());
        Workflow::new()
            .child(
                Task::<Num>::new()
                    .id("build")
                    .run(move |_t| {
                        before.hit();
                        async { Ok::<_, String>(num(1)) }
                    })
                    .build(),
            )
            .child(
                Task::<Num>::new()
                    .id("deploy")
                    .needs_approval(true)
                    .continue_on_fail(continue_on_fail)
                    .run(move |_t| {
                        deploys.hit();
                        async { Ok::<_, String>(num(2)) }
                    })
                    .build(),
            )
            .build()
    }
}

#[tokio::test]
async fn run_parks_for_approval_then_resume_runs_the_approved_task_once() {
    let h = Harness::new();
    let (builds, deploys) = (Counter::default(), Counter::default());
    let wf = deploy_workflow(builds.clone(), deploys.clone(), false);
    let report = h.engine(wf.clone()).run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::WaitingApproval, "{report:?}");
    assert_eq!(
        report.error.as_deref(),
        Some("waiting for approval of `deploy`")
    );
    let run = report.run_id.clone();
    assert_eq!(h.run_status(&run), ("waiting-approval".into(), None));
    assert_eq!((builds.get(), deploys.get()), (1, 0));
    let approvals = h.store.approvals(&run).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(
        (approvals[0].node_id.as_str(), approvals[0].status),
        ("deploy", ApprovalStatus::Pending)
    );
    let log = h.event_log(&run);
    assert!(
        log.contains(&"approval_requested:deploy@0".to_owned())
            && log.contains(&"run_waiting".to_owned()),
        "{log:?}"
    );

    // Resuming before a decision parks again without asking twice or re-running anything.
    let again = Engine::new(h.reopen(), wf.clone())
        .resume(Some(&run))
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::WaitingApproval);
    assert_eq!(h.store.approvals(&run).await.unwrap().len(), 1);

    let decided = h
        .reopen()
        .decide_approval(&run, "deploy", None, true, Some("ship it"))
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    let done = Engine::new(h.reopen(), wf)
        .resume(Some(&run))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Finished, "{done:?}");
    assert_eq!((builds.get(), deploys.get()), (1, 1));
    assert_eq!(
        h.num_rows(&run),
        vec![("build".into(), 0, 1), ("deploy".into(), 0, 2)]
    );
    assert!(h
        .event_log(&run)
        .contains(&"approval_decided:deploy@0".to_owned()));
}

#[tokio::test]
async fn a_denied_task_fails_the_run_unless_it_may_fail() {
    for continue_on_fail in [false, true] {
        let h = Harness::new();
        let (builds, deploys) = (Counter::default(), Counter::default());
        let wf = deploy_workflow(builds.clone(), deploys.clone(), continue_on_fail);
        let run = h.engine(wf.clone()).run(()).await.unwrap().run_id;
        h.store
            .decide_approval(&run, "deploy", Some(0), false, Some("not on a Friday"))
            .await
            .unwrap();
        let report = Engine::new(h.reopen(), wf)
            .resume(Some(&run))
            .await
            .unwrap();
        let expected = if continue_on_fail {
            RunStatus::Finished
        } else {
            RunStatus::Failed
        };
        assert_eq!(report.status, expected, "{report:?}");
        assert_eq!(deploys.get(), 0, "a denied task never runs");
        let row = h.node_row(&run, "deploy", 0).unwrap();
        assert_eq!(
            (row.0.as_str(), row.2.as_deref()),
            ("failed", Some("approval denied: not on a Friday"))
        );
        if !continue_on_fail {
            assert!(report
                .error
                .unwrap()
                .contains("approval denied: not on a Friday"));
        }
    }
}

#[tokio::test]
async fn with_wait_for_approval_the_run_continues_when_another_handle_decides() {
    let h = Harness::new();
    let (builds, deploys) = (Counter::default(), Counter::default());
    let options = EngineOptions {
        wait_for_approval: true,
        approval_poll: std::time::Duration::from_millis(10),
        ..EngineOptions::default()
    };
    let engine = h.engine_with(options, deploy_workflow(builds, deploys.clone(), false));
    let other = h.reopen();
    let decider = tokio::spawn(async move {
        loop {
            let runs = other.runs().await.unwrap();
            if let Some(run) = runs.first() {
                if other
                    .decide_approval(&run.run_id, "deploy", None, true, None)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let report = engine.run(()).await.unwrap();
    decider.await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(deploys.get(), 1);
}

#[tokio::test]
async fn deciding_a_node_with_nothing_pending_is_a_clear_error() {
    let h = Harness::new();
    let wf = deploy_workflow(Counter::default(), Counter::default(), false);
    let run = h.engine(wf).run(()).await.unwrap().run_id;
    let e = h
        .store
        .decide_approval(&run, "build", None, true, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("node `build` of run `{run}` has no pending approval; `smithers status {run}` shows what the run waits for")
    );
}
