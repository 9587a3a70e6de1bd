//! Events as readable lines: what a workflow binary prints while it runs, and what `smithers logs`
//! prints (and follows) from the database, written to the writer the binary passes.

use std::io::Write;
use std::time::Duration;

use clap::ValueEnum;
use smithers_core::clock::{Clock, SystemClock};
use smithers_core::events::{Event, EventKind};
use smithers_core::store::{RunStatus, Store};
use smithers_core::{Result, Timestamp};

use super::inspect::pick_run;
use super::{show_time, Out};

/// How much `logs` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Level {
    /// Run and node transitions, failures, and the agents' progress lines.
    #[default]
    Info,
    /// Also frames (the tree changed shape) and loop passes.
    Debug,
}

impl Level {
    /// The level an event is shown from.
    pub fn of(kind: &EventKind) -> Level {
        match kind {
            EventKind::FrameRendered { .. } | EventKind::LoopFinished { .. } => Level::Debug,
            _ => Level::Info,
        }
    }
}

/// One line describing an event (no timestamp).
pub fn describe(e: &Event) -> String {
    let node = e.node_id.as_deref().unwrap_or("");
    let it = e.iteration.unwrap_or(0);
    match &e.kind {
        EventKind::RunStarted { workflow } => format!("run {} started ({workflow})", e.run_id),
        EventKind::RunResumed { abandoned } => format!(
            "run {} resumed ({abandoned} interrupted attempt(s) to retry)",
            e.run_id
        ),
        EventKind::NodeStarted { attempt } => format!("  ▶ {node}#{it} attempt {attempt}"),
        EventKind::NodeFinished { .. } => format!("  ✔ {node}#{it}"),
        EventKind::NodeRetrying { error, .. } => format!("  ↻ {node}#{it}: {error}"),
        EventKind::NodeFailed { error, .. } => format!("  ✘ {node}#{it}: {error}"),
        EventKind::NodeSkipped => format!("  ⤼ {node}#{it} skipped"),
        EventKind::NodeOutput { line, .. } => format!("    │ {node}: {line}"),
        EventKind::LoopIterated { loop_id, iteration } => {
            format!("  ⟳ loop {loop_id} → iteration {iteration}")
        }
        EventKind::LoopFinished {
            loop_id,
            iteration,
            max_reached,
        } => format!(
            "  ⟳ loop {loop_id} done at iteration {iteration}{}",
            if *max_reached {
                " (max_iterations reached)"
            } else {
                ""
            }
        ),
        EventKind::FrameRendered { frame } => format!("  ▦ frame {frame} (the tree changed shape)"),
        EventKind::RunFinished => format!("run {} finished", e.run_id),
        EventKind::RunFailed { error } => format!("run {} failed: {error}", e.run_id),
        EventKind::RunCancelled => format!("run {} cancelled; `resume` continues it", e.run_id),
        EventKind::RunWaiting { reason } => format!("run {} is {reason}", e.run_id),
        EventKind::RunQueued { reason } => format!("run {} queued: {reason}", e.run_id),
        EventKind::ApprovalRequested => format!("  ⏸ {node}#{it} waits for approval"),
        EventKind::ApprovalDecided { approved: true, .. } => format!("  ✔ {node}#{it} approved"),
        EventKind::ApprovalDecided {
            approved: false,
            note,
        } => format!(
            "  ✘ {node}#{it} denied{}",
            note.as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        ),
        EventKind::StepChanged {
            kind,
            name,
            iteration,
            status,
        } => {
            format!(
                "  ◆ {} {name}#{iteration} {}",
                kind.as_str(),
                status.as_str()
            )
        }
        other => format!("  {} {node}#{it}", other.name()),
    }
}

/// The time of day of `at` (`06:08:03`), cut from [`show_time`]'s text.
fn clock(at: &Timestamp) -> String {
    let text = show_time(*at);
    text.get(11..19).map_or_else(|| text.clone(), str::to_owned)
}

/// What `logs` prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogOptions {
    /// Keep polling for new events until the run reaches a final status.
    pub follow: bool,
    /// How much to show.
    pub level: Level,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// How often `follow` polls the database.
    pub poll: Duration,
}

/// Where `logs` stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct LogsStopped {
    /// The run's status when it stopped writing.
    pub status: RunStatus,
    /// Why following stopped before the run reached a final status (it waits for an approval, or
    /// nothing drives it), for the caller to show apart from the events (the binary: stderr).
    pub note: Option<String>,
}

/// Writes a run's events as lines to `out` (following them if asked); returns where it stopped.
pub async fn logs(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: Option<&str>,
    opts: LogOptions,
) -> Result<LogsStopped> {
    let out = &mut Out(out);
    let run = pick_run(store, run_id).await?;
    let stopped = |status, note| Ok(LogsStopped { status, note });
    let mut after = 0;
    loop {
        // Status before events: every event committed before a final status is printed.
        let now = store.run(&run.run_id).await?;
        let status = now.as_ref().map_or(run.status, |r| r.status);
        // A running run whose lease ran out has no live driver: nothing more will come.
        let driverless = now.as_ref().is_some_and(|r| {
            r.status == RunStatus::Running
                && r.lease_expires_ms
                    .is_none_or(|e| e < SystemClock.now().as_millis())
        });
        for rec in store.events(&run.run_id, after).await? {
            after = rec.seq;
            if Level::of(&rec.event.kind) > opts.level {
                continue;
            }
            if opts.json {
                writeln!(out, "{}", serde_json::to_string(&rec)?)?;
            } else {
                writeln!(out, "{} {}", clock(&rec.event.at), describe(&rec.event))?;
            }
        }
        if !opts.follow || status.is_final() {
            return stopped(status, None);
        }
        if status == RunStatus::WaitingApproval {
            return stopped(
                status,
                Some(format!(
                    "run {} waits for approval: `smithers approve` then `resume` continue it",
                    run.run_id
                )),
            );
        }
        if driverless {
            return stopped(
                status,
                Some(format!(
                    "no process is driving run {} (its lease expired: the process stopped); `resume` continues it",
                    run.run_id
                )),
            );
        }
        tokio::time::sleep(opts.poll).await;
    }
}
