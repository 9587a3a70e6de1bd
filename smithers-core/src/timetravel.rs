//! Time travel: roll a run back to before a step, rewind it to a frame, fork it from a frame,
//! and show what a step changed — the working copy and the run's history together.
//!
//! A rollback restores the working copy to the step's `snapshot_before` and cuts the run's
//! history there ([`Store::rewind`]): that step and every later one become inactive (kept for
//! audit, no longer read by `Ctx`), the nodes that moved since are pending again, loop counters
//! go back, and the run is left `cancelled` so `resume` re-runs what was cut. Everything is
//! checked before anything changes: an unknown run or step, a step without a snapshot, a
//! snapshot commit that was garbage-collected, a run a live process is driving, or a working
//! copy with changes made after the run (unless `force`) is an error that names it, with the
//! database and the files as they were. The working copy as it was is always snapshotted first
//! (`refs/smithers/<run>/rollback-...`), so even a forced rollback loses nothing.

use std::path::Path;

use crate::error::{Error, Result};
use crate::store::{RewindReport, RewindTo, StepRecord, Store};
use crate::vcs::Repo;

/// What [`rollback`] or [`rewind`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollback {
    /// The history cut.
    pub report: RewindReport,
    /// The repository restored, and the snapshot its working copy now matches (`None` when no
    /// step had a snapshot to go back to).
    pub restored: Option<(std::path::PathBuf, String)>,
    /// The snapshot of the working copy as it was just before (to undo the rollback's files).
    pub saved: Option<String>,
}

fn short(c: &str) -> &str {
    &c[..12.min(c.len())]
}

/// The repository of a step's snapshot, checked to still hold `commit`.
async fn repo_of(run_id: &str, step: &StepRecord, commit: &str) -> Result<Repo> {
    let dir = step.vcs_repo.as_deref().unwrap_or(".");
    let repo = Repo::find(Path::new(dir)).await.ok_or_else(|| {
        Error::TimeTravelRefused(format!(
            "step {} of run `{run_id}` was snapshotted in `{dir}`, which is no longer a repository; nothing was changed",
            step.step_id
        ))
    })?;
    if !repo.has_commit(commit).await {
        return Err(Error::TimeTravelRefused(format!(
            "the snapshot of step {} of run `{run_id}` (commit {commit}) no longer exists in `{}`: it was garbage-collected (were refs under refs/smithers/ deleted?); nothing was changed",
            step.step_id,
            repo.root.display()
        )));
    }
    Ok(repo)
}

/// The last snapshot the run recorded, to tell whether the working copy changed since.
fn last_snapshot(steps: &[StepRecord]) -> Option<(&StepRecord, &str)> {
    steps
        .iter()
        .filter_map(|s| {
            let c = s
                .snapshot_after
                .as_deref()
                .or(s.snapshot_before.as_deref())?;
            Some((s, c, s.started_seq.unwrap_or(s.created_seq)))
        })
        .max_by_key(|(s, _, seq)| (*seq, s.step_id, s.snapshot_after.is_some()))
        .map(|(s, c, _)| (s, c))
}

/// Restores the working copy to `target` and cuts the history with `to`, after every check.
async fn travel(
    store: &dyn Store,
    run_id: &str,
    to: RewindTo,
    target: Option<(&StepRecord, String)>,
    force: bool,
) -> Result<Rollback> {
    // Holding the run's lease keeps a driver off it while the files and the history change; a
    // live driver holding it refuses the rollback before anything changes.
    let owner = crate::store::lease_owner();
    let fence = store
        .acquire_lease(run_id, &owner, std::time::Duration::from_secs(120))
        .await?;
    let result = travel_leased(store, run_id, to, target, force, &fence).await;
    if let Err(e) = store.release_lease(run_id, &fence).await {
        tracing::warn!(error = %e, "could not release the run's lease after a rollback");
    }
    result
}

async fn travel_leased(
    store: &dyn Store,
    run_id: &str,
    to: RewindTo,
    target: Option<(&StepRecord, String)>,
    force: bool,
    fence: &crate::store::FenceToken,
) -> Result<Rollback> {
    let steps = store.steps(run_id).await?;
    let mut repo = None;
    if let Some((step, commit)) = &target {
        let r = repo_of(run_id, step, commit).await?;
        if !force {
            if let Some((last, last_commit)) = last_snapshot(&steps) {
                if r.has_commit(last_commit).await {
                    let now = r.working_tree().await.map_err(vcs_err)?;
                    let then = r.tree_of(last_commit).await.map_err(vcs_err)?;
                    if now != then {
                        return Err(Error::TimeTravelRefused(format!(
                            "the working copy of `{}` has changes made after run `{run_id}` (its last snapshot is {} of step {}); commit or stash them, or pass --force (the current files are then snapshotted under refs/smithers/ first); nothing was changed",
                            r.root.display(),
                            short(last_commit),
                            last.step_id
                        )));
                    }
                }
            }
        }
        repo = Some(r);
    }
    let mut saved = None;
    if let (Some(r), Some((_, commit))) = (&repo, &target) {
        let name = format!(
            "{}/rollback-{}",
            crate::vcs::ref_component(run_id),
            uuid::Uuid::new_v4().simple()
        );
        let snap = r
            .snapshot(
                &name,
                &format!("smithers: working copy before a rollback of run {run_id}"),
            )
            .await
            .map_err(vcs_err)?;
        saved = Some(snap.commit.clone());
        r.restore(commit).await.map_err(vcs_err)?;
    }
    let report = match store.rewind(run_id, to, fence).await {
        Ok(r) => r,
        Err(e) => {
            // The history stays as it was: so do the files.
            if let (Some(r), Some(s)) = (&repo, &saved) {
                if let Err(e2) = r.restore(s).await {
                    tracing::error!(error = %e2, snapshot = %s, "could not put the working copy back after a refused rollback");
                }
            }
            return Err(e);
        }
    };
    Ok(Rollback {
        report,
        restored: repo.zip(target).map(|(r, (_, commit))| (r.root, commit)),
        saved,
    })
}

fn vcs_err(e: crate::vcs::VcsError) -> Error {
    Error::TimeTravelRefused(format!("{e}; nothing was changed"))
}

/// Rolls run `run_id` back to before step `step_id` (see the module docs).
pub async fn rollback(
    store: &dyn Store,
    run_id: &str,
    step_id: i64,
    force: bool,
) -> Result<Rollback> {
    if store.run(run_id).await?.is_none() {
        return Err(Error::RunNotFound(run_id.to_owned()));
    }
    let step = store.step(run_id, step_id).await?;
    let Some(before) = step.snapshot_before.clone() else {
        return Err(Error::NoSnapshot(format!(
            "step {step_id} (`{}`) of run `{run_id}` has no working-copy snapshot (the run was not inside a git or jj repository, or it never started); nothing was changed",
            step.name
        )));
    };
    travel(
        store,
        run_id,
        RewindTo::Step(step_id),
        Some((&step, before)),
        force,
    )
    .await
}

/// Rewinds run `run_id` to just after frame `frame` was rendered: the working copy goes back to
/// the snapshot before the first step that started after it (when there is one).
pub async fn rewind(store: &dyn Store, run_id: &str, frame: u32, force: bool) -> Result<Rollback> {
    if store.run(run_id).await?.is_none() {
        return Err(Error::RunNotFound(run_id.to_owned()));
    }
    if store.frame(run_id, Some(frame)).await?.is_none() {
        return Err(Error::FrameNotFound {
            run_id: run_id.to_owned(),
            frame,
        });
    }
    let seq = frame_seq(store, run_id, frame).await?;
    let steps = store.steps(run_id).await?;
    let target = steps
        .iter()
        .filter(|s| s.active && s.started_seq.is_some_and(|q| q > seq))
        .min_by_key(|s| s.started_seq)
        .and_then(|s| s.snapshot_before.clone().map(|c| (s, c)));
    travel(store, run_id, RewindTo::Frame(frame), target, force).await
}

async fn frame_seq(store: &dyn Store, run_id: &str, frame: u32) -> Result<i64> {
    store
        .events(run_id, 0)
        .await?
        .into_iter()
        .filter(|e| {
            matches!(e.event.kind, crate::events::EventKind::FrameRendered { frame: f } if f == frame)
        })
        .map(|e| e.seq)
        .max()
        .ok_or_else(|| Error::FrameNotFound {
            run_id: run_id.to_owned(),
            frame,
        })
}

/// What step `step_id` changed in the working copy: the diff between its two snapshots.
pub async fn diff(store: &dyn Store, run_id: &str, step_id: i64) -> Result<String> {
    if store.run(run_id).await?.is_none() {
        return Err(Error::RunNotFound(run_id.to_owned()));
    }
    let step = store.step(run_id, step_id).await?;
    let (Some(before), Some(after)) = (&step.snapshot_before, &step.snapshot_after) else {
        return Err(Error::NoSnapshot(format!(
            "step {step_id} (`{}`) of run `{run_id}` has no {} snapshot (it ran outside a git or jj repository, or has not ended); there is nothing to diff",
            step.name,
            if step.snapshot_before.is_none() { "`before`" } else { "`after`" }
        )));
    };
    let repo = repo_of(run_id, &step, before).await?;
    if !repo.has_commit(after).await {
        return Err(Error::TimeTravelRefused(format!(
            "the `after` snapshot of step {step_id} of run `{run_id}` (commit {after}) no longer exists: it was garbage-collected"
        )));
    }
    Ok(repo.diff(before, after).await?)
}
