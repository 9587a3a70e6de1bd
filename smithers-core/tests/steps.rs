//! Phases and steps: recorded in `_smithers_steps` with sequential ids per run as the render
//! mounts them, with their status, phase, tasks and timings.
mod common;
use common::*;
use smithers_core::node::{Phase, Step, Task, Workflow};
use smithers_core::Ctx;
use smithers_core::RunStatus;

fn value(id: &str, n: i64) -> smithers_core::Node {
    Task::<Num>::new().id(id).value(num(n)).build()
}

#[tokio::test]
async fn phases_and_steps_get_sequential_ids_and_final_statuses() {
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        Workflow::new()
            .child(
                Phase::new()
                    .name("build")
                    .child(Step::new().name("compile").child(value("a", 1)).build())
                    .child(Step::new().name("test").child(value("b", 2)).build())
                    .build(),
            )
            .child(
                Phase::new()
                    .name("ship")
                    .child(Step::new().name("deploy").child(value("c", 3)).build())
                    .build(),
            )
            .child(
                Phase::new()
                    .name("docs")
                    .skip_if(true)
                    .child(Step::new().name("write").child(value("d", 4)).build())
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished);
    let steps = h.store.steps(&report.run_id).await.unwrap();
    type Row<'a> = (
        i64,
        Option<i64>,
        &'a str,
        Option<&'a str>,
        Option<i64>,
        &'a str,
    );
    let rows: Vec<Row> = steps
        .iter()
        .map(|s| {
            (
                s.step_id,
                s.parent_step_id,
                s.name.as_str(),
                s.phase.as_deref(),
                s.phase_id,
                s.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, None, "compile", Some("build"), Some(1), "completed"),
            (2, Some(1), "test", Some("build"), Some(1), "completed"),
            (3, Some(2), "deploy", Some("ship"), Some(2), "completed"),
        ]
    );
    let phases = h.store.phases(&report.run_id).await.unwrap();
    let rows: Vec<(i64, &str, &str)> = phases
        .iter()
        .map(|p| (p.phase_id, p.name.as_str(), p.status.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            (1, "build", "completed"),
            (2, "ship", "completed"),
            (3, "docs", "skipped")
        ]
    );
    assert!(steps.iter().all(|s| s.active && s.source == "tree"));
    assert_eq!(steps[1].task_ids, ["b"]);
    assert!(steps
        .iter()
        .all(|s| s.completed_at.is_some() && s.duration_ms.is_some_and(|d| d >= 0)));
    let changes = h.event_payloads(&report.run_id, "step_changed");
    assert_eq!(
        changes.first().map(|c| c["name"].clone()),
        Some("build".into())
    );
    assert_eq!(
        h.num_rows(&report.run_id).len(),
        3,
        "the skipped phase's task never ran"
    );
}

#[tokio::test]
async fn phase_hooks_fire_once_per_transition_and_not_again_on_resume() {
    let h = Harness::new();
    let (starts, completes) = (Counter::default(), Counter::default());
    let gate = h.dir.path().join("gate");
    let wf = {
        let (starts, completes, gate) = (starts.clone(), completes.clone(), gate.clone());
        move |_ctx: &Ctx<()>| {
            let (starts, completes, gate) = (starts.clone(), completes.clone(), gate.clone());
            Workflow::new()
                .child(
                    Phase::new()
                        .name("build")
                        .on_start(move |hook| {
                            starts.hit();
                            hook.set_state("phase", hook.name().to_owned());
                        })
                        .on_complete(move |hook| {
                            completes.hit();
                            hook.set_state("build_done", "yes");
                        })
                        .child(
                            Task::<Num>::new()
                                .id("compile")
                                .run(move |_t| {
                                    let open = gate.exists();
                                    async move {
                                        if open {
                                            Ok(num(1))
                                        } else {
                                            Err(smithers_core::TaskError::terminal("gate closed"))
                                        }
                                    }
                                })
                                .build(),
                        )
                        .build(),
                )
                .build()
        }
    };
    let first = h.engine(wf.clone()).run(()).await.unwrap();
    assert_eq!(first.status, RunStatus::Failed);
    assert_eq!((starts.get(), completes.get()), (1, 0));
    assert_eq!(h.state("phase").as_deref(), Some("build"));
    std::fs::write(&gate, "open").unwrap();
    let second = smithers_core::engine::Engine::new(h.reopen(), wf)
        .resume(Some(&first.run_id))
        .await
        .unwrap();
    assert_eq!(second.status, RunStatus::Finished, "{second:?}");
    assert_eq!((starts.get(), completes.get()), (1, 1));
    assert_eq!(h.state("build_done").as_deref(), Some("yes"));
}

#[tokio::test]
async fn a_step_waiting_for_room_in_a_parallel_starts_when_its_task_does() {
    use smithers_core::node::Parallel;
    let h = Harness::new();
    let engine = h.engine(|_ctx: &Ctx<()>| {
        let slow = |id: &str| {
            Task::<Num>::new()
                .id(id)
                .run(|_t| async {
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    Ok::<_, String>(num(1))
                })
                .build()
        };
        Workflow::new()
            .child(
                Parallel::new()
                    .max_concurrency(1)
                    .child(Step::new().name("first").child(slow("a")).build())
                    .child(Step::new().name("second").child(slow("b")).build())
                    .build(),
            )
            .build()
    });
    let report = engine.run(()).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished);
    let steps = h.store.steps(&report.run_id).await.unwrap();
    let second = steps.iter().find(|s| s.name == "second").unwrap();
    let first = steps.iter().find(|s| s.name == "first").unwrap();
    assert!(
        second.started_at >= first.completed_at,
        "the second step started when its task could: {first:?} {second:?}"
    );
}
