//! Views of runs, shared by workflow binaries and the `smithers` binary, and `cancel`: the one
//! operator command that asks something of a run. Each view writes to the writer it is given
//! (the binaries pass stdout), never to the process's stdout itself.

use std::collections::BTreeMap;
use std::io::Write;

use smithers_core::price::CostSource;
use smithers_core::store::{AttemptRecord, CancelOutcome, ListedRun, RunRecord, RunStatus, Store};
use smithers_core::text::truncate;
use smithers_core::{Error, Result, Usage};

use super::{show_time, Out};

/// Costs of some attempts, kept apart by where they come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostSummary {
    /// Sum of the costs the agents reported.
    pub reported_usd: f64,
    /// Sum of the costs estimated from the price catalog.
    pub estimated_usd: f64,
    /// Attempts that used tokens but have no cost (their model has no price).
    pub unpriced: usize,
    /// Whether any attempt had a reported cost.
    pub any_reported: bool,
    /// Whether any attempt had an estimated cost.
    pub any_estimated: bool,
}

impl CostSummary {
    /// The summary of `attempts`.
    pub fn of<'a>(attempts: impl IntoIterator<Item = &'a AttemptRecord>) -> Self {
        let mut s = CostSummary::default();
        for a in attempts {
            match (a.usage.cost_usd, a.cost_source) {
                (Some(c), Some(CostSource::Estimated)) => {
                    s.estimated_usd += c;
                    s.any_estimated = true;
                }
                (Some(c), _) => {
                    s.reported_usd += c;
                    s.any_reported = true;
                }
                (None, _) if has_tokens(&a.usage) => s.unpriced += 1,
                (None, _) => {}
            }
        }
        s
    }

    /// The column form: `0.0123` reported, `~0.0123` estimated (in part), `no price`, `-`.
    pub fn cell(&self) -> String {
        let total = self.reported_usd + self.estimated_usd;
        match (self.any_reported || self.any_estimated, self.unpriced) {
            (false, 0) => "-".into(),
            (false, _) => "no price".into(),
            (true, _) if self.any_estimated => format!("~{total:.4}"),
            (true, _) => format!("{total:.4}"),
        }
    }

    /// The sentence form for totals: `$0.0229 (reported $0.0100, estimated $0.0129); 1 attempt
    /// with no price`.
    pub fn sentence(&self) -> String {
        let mut out = match (self.any_reported, self.any_estimated) {
            (false, false) => "not reported".to_owned(),
            (true, false) => format!("${:.4} (reported)", self.reported_usd),
            (false, true) => format!("${:.4} (estimated)", self.estimated_usd),
            (true, true) => format!(
                "${:.4} (reported ${:.4}, estimated ${:.4})",
                self.reported_usd + self.estimated_usd,
                self.reported_usd,
                self.estimated_usd
            ),
        };
        if self.unpriced > 0 {
            out.push_str(&format!(
                "; {} attempt(s) with no price (their model is not in the price catalog: add it \
                 with a SMITHERS_PRICES file)",
                self.unpriced
            ));
        }
        out
    }
}

fn has_tokens(u: &Usage) -> bool {
    u.input_tokens.unwrap_or(0) + u.output_tokens.unwrap_or(0) > 0
}

/// Usage summed over attempts.
pub fn total_usage<'a>(attempts: impl IntoIterator<Item = &'a AttemptRecord>) -> Usage {
    let mut total = Usage::default();
    for a in attempts {
        total.add(&a.usage);
    }
    total
}

/// The run `run_id`, or the latest run.
pub(crate) async fn pick_run(store: &dyn Store, run_id: Option<&str>) -> Result<RunRecord> {
    match run_id {
        Some(id) => store
            .run(id)
            .await?
            .ok_or_else(|| Error::RunNotFound(id.to_owned())),
        None => store.latest_run().await?.ok_or(Error::NoRunToResume),
    }
}

/// Prints a run's status, nodes and usage.
pub async fn status(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: Option<&str>,
    json: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let run = pick_run(store, run_id).await?;
    let nodes = store.nodes(&run.run_id).await?;
    let attempts = store.attempts(&run.run_id).await?;
    let usage = total_usage(&attempts);
    let approvals = store.approvals(&run.run_id).await?;
    let workers = store.workers().await?;
    let restarts = store.restarts(&run.run_id).await?;
    if json {
        let driver = run
            .lease_owner
            .as_deref()
            .and_then(|o| super::workers::worker_of(&workers, o));
        let v = serde_json::json!({
            "run": run, "nodes": nodes, "attempts": attempts, "usage": usage, "approvals": approvals,
            "worker": driver, "restarts": restarts
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "run       {}", run.run_id)?;
    writeln!(out, "workflow  {}", run.workflow)?;
    writeln!(out, "status    {}", run.status)?;
    if let Some(e) = &run.error {
        writeln!(out, "error     {e}")?;
    }
    writeln!(out, "created   {}", show_time(run.created_at))?;
    for a in approvals
        .iter()
        .filter(|a| a.status == smithers_core::ApprovalStatus::Pending)
    {
        writeln!(
            out,
            "waiting   approval of `{}` (iteration {}): `smithers approve {} {}` or `deny`",
            a.node_id, a.iteration, run.run_id, a.node_id
        )?;
    }
    let now = smithers_core::clock::Clock::now(&smithers_core::clock::SystemClock);
    if let Some(driver) = super::workers::driver_line(&run, &workers, now) {
        writeln!(out, "driver    {driver}")?;
    } else if run.status == RunStatus::Queued {
        writeln!(
            out,
            "driver    none yet: a `worker` of this workflow takes the run"
        )?;
    }
    if let Some(r) = &restarts {
        writeln!(out, "restarts  {}", super::workers::restarts_line(r))?;
    }
    let mut per_node: BTreeMap<(String, u32), Usage> = BTreeMap::new();
    let mut per_node_attempts: BTreeMap<(String, u32), Vec<&AttemptRecord>> = BTreeMap::new();
    for a in &attempts {
        let u = per_node
            .entry((a.node_id.clone(), a.iteration))
            .or_default();
        u.add(&a.usage);
        per_node_attempts
            .entry((a.node_id.clone(), a.iteration))
            .or_default()
            .push(a);
    }
    writeln!(
        out,
        "\n{:<32} {:>4} {:<10} {:>8} {:>10} {:>10}",
        "NODE", "ITER", "STATUS", "ATTEMPTS", "TOKENS", "COST $"
    )?;
    for n in &nodes {
        let u = per_node
            .get(&(n.node_id.clone(), n.iteration))
            .cloned()
            .unwrap_or_default();
        let tokens = u.input_tokens.unwrap_or(0) + u.output_tokens.unwrap_or(0);
        let cost = per_node_attempts
            .get(&(n.node_id.clone(), n.iteration))
            .map_or_else(
                || "-".to_owned(),
                |a| CostSummary::of(a.iter().copied()).cell(),
            );
        writeln!(
            out,
            "{:<32} {:>4} {:<10} {:>8} {:>10} {:>10}",
            truncate(&n.node_id, 32),
            n.iteration,
            n.status.as_str(),
            n.attempts,
            if tokens > 0 {
                tokens.to_string()
            } else {
                "-".into()
            },
            cost
        )?;
        if let Some(e) = &n.last_error {
            writeln!(out, "    last error: {}", truncate(e, 200))?;
        }
        // Pool mode: which worker runs (or ran) the node's latest attempt.
        let latest = per_node_attempts
            .get(&(n.node_id.clone(), n.iteration))
            .and_then(|a| a.last());
        if let Some(a) = latest.filter(|a| a.queue.is_some()) {
            match (a.status.as_str(), a.queue.as_deref(), &a.claim_owner) {
                ("in-progress", Some("queued"), _) => {
                    writeln!(out, "    worker: queued, not claimed yet")?
                }
                ("in-progress", Some("claimed"), Some(w)) => {
                    writeln!(out, "    worker: {w} (running)")?
                }
                ("in-progress", Some("recorded"), Some(w)) => writeln!(
                    out,
                    "    worker: {w} (outcome recorded, waiting for the driver)"
                )?,
                (_, _, Some(w)) => writeln!(out, "    worker: {w}")?,
                _ => {}
            }
        }
    }
    writeln!(
        out,
        "\ntotal: {} input + {} output tokens, {} cache read, {} cache write, cost {}",
        usage.input_tokens.unwrap_or(0),
        usage.output_tokens.unwrap_or(0),
        usage.cache_read_tokens.unwrap_or(0),
        usage.cache_write_tokens.unwrap_or(0),
        CostSummary::of(&attempts).sentence()
    )?;
    Ok(())
}

/// Prints the runs of a database, each with who drives it (the process holding its lease, and
/// whether that is a registered `worker`). A run whose row does not read is listed as
/// `damaged`, with the error reading it gives under the table (in `--json`, as a `damaged`
/// object): one damaged run does not hide the others, nor is it left out.
pub async fn runs(out: &mut (dyn Write + Send), store: &dyn Store, json: bool) -> Result<()> {
    let out = &mut Out(out);
    let runs = store.run_list().await?;
    let workers = store.workers().await?;
    if json {
        // Each run as its record, with the registered worker holding its lease (as `status
        // --json` has it); a damaged one as its id and the error.
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|listed| match listed {
                ListedRun::Run(r) => {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    v["worker"] = serde_json::to_value(
                        r.lease_owner
                            .as_deref()
                            .and_then(|o| super::workers::worker_of(&workers, o)),
                    )
                    .unwrap_or_default();
                    v
                }
                ListedRun::Damaged { run_id, error } => serde_json::json!({
                    "run_id": run_id,
                    "damaged": { "code": "E_INVALID_RECORD", "message": error },
                }),
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let now = smithers_core::clock::Clock::now(&smithers_core::clock::SystemClock);
    writeln!(
        out,
        "{:<34} {:<20} {:<17} {:<24} DRIVER",
        "RUN", "WORKFLOW", "STATUS", "CREATED"
    )?;
    let mut damaged = Vec::new();
    for listed in &runs {
        match listed {
            ListedRun::Run(r) => writeln!(
                out,
                "{:<34} {:<20} {:<17} {:<24} {}",
                r.run_id,
                truncate(&r.workflow, 20),
                r.status.as_str(),
                show_time(r.created_at),
                super::workers::driver_cell(r, &workers, now)
            )?,
            ListedRun::Damaged { run_id, error } => {
                writeln!(
                    out,
                    "{:<34} {:<20} {:<17} {:<24} -",
                    run_id, "?", "damaged", "?"
                )?;
                damaged.push((run_id, error));
            }
        }
    }
    for (run_id, error) in damaged {
        writeln!(
            out,
            "\nrun `{run_id}` is damaged (E_INVALID_RECORD): {error}"
        )?;
    }
    Ok(())
}

/// Prints a run's events.
pub async fn events(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: Option<&str>,
    json: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let run = pick_run(store, run_id).await?;
    for e in store.events(&run.run_id, 0).await? {
        if json {
            writeln!(out, "{}", serde_json::to_string(&e)?)?;
        } else {
            let node = match (&e.event.node_id, e.event.iteration) {
                (Some(n), Some(i)) => format!(" {n}#{i}"),
                _ => String::new(),
            };
            let payload = serde_json::to_value(&e.event.kind)?;
            writeln!(
                out,
                "{:>6} {} {}{node} {}",
                e.seq,
                show_time(e.event.at),
                e.event.kind.name(),
                compact(&payload)
            )?;
        }
    }
    Ok(())
}

/// Prints a run's frames: the latest, or all of them oldest first.
pub async fn frames(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: Option<&str>,
    all: bool,
    json: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let run = pick_run(store, run_id).await?;
    let frames = if all {
        store.frames(&run.run_id).await?
    } else {
        store.frame(&run.run_id, None).await?.into_iter().collect()
    };
    if json {
        let v = if all {
            serde_json::to_value(&frames)?
        } else {
            serde_json::to_value(frames.first())?
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if frames.is_empty() {
        writeln!(out, "# run `{}` has no recorded frame yet", run.run_id)?;
    }
    for f in &frames {
        writeln!(
            out,
            "# frame {} recorded {}",
            f.frame_no,
            show_time(f.created_at)
        )?;
        write!(out, "{}", f.tree)?;
        if !f.tree.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Prints every attempt of a run: agent, duration, usage and error.
pub async fn attempts(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: Option<&str>,
    json: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let run = pick_run(store, run_id).await?;
    let attempts = store.attempts(&run.run_id).await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&attempts)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:>4} {:>7} {:<11} {:<12} {:>9} {:>9} {:>9}",
        "NODE", "ITER", "ATTEMPT", "STATUS", "AGENT", "SECONDS", "TOKENS", "COST $"
    )?;
    for a in &attempts {
        let tokens = a.usage.input_tokens.unwrap_or(0) + a.usage.output_tokens.unwrap_or(0);
        writeln!(
            out,
            "{:<28} {:>4} {:>7} {:<11} {:<12} {:>9} {:>9} {:>9}",
            truncate(&a.node_id, 28),
            a.iteration,
            a.attempt,
            a.status,
            truncate(a.agent.as_deref().unwrap_or("-"), 12),
            a.duration_ms
                .map_or("-".into(), |d| format!("{:.1}", d as f64 / 1000.0)),
            if tokens > 0 {
                tokens.to_string()
            } else {
                "-".into()
            },
            CostSummary::of([a]).cell()
        )?;
        if let Some(e) = &a.error {
            writeln!(out, "    error: {}", truncate(e, 200))?;
        }
    }
    let summary = CostSummary::of(&attempts);
    writeln!(out, "\ncost: {}", summary.sentence())?;
    if summary.any_estimated {
        writeln!(
            out,
            "      ~ = estimated from the tokens and the price catalog"
        )?;
    }
    Ok(())
}

/// Raises the budget of a run (or of its task `task`) by `usd` and `tokens`, for `resume`.
pub async fn raise_budget(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    task: Option<String>,
    usd: f64,
    tokens: u64,
) -> Result<()> {
    let out = &mut Out(out);
    if !(usd.is_finite() && usd >= 0.0) || (usd == 0.0 && tokens == 0) {
        return Err(Error::InvalidArgument(
            "say how much to add: `--add USD` (a positive number) and/or `--add-tokens N`".into(),
        ));
    }
    let run = pick_run(store, Some(run_id)).await?;
    let scope = task.as_deref().map_or_else(
        || "the run's budget".to_owned(),
        |t| format!("the budget of task `{t}`"),
    );
    store
        .raise_budget(
            &run.run_id,
            smithers_core::budget::BudgetRaise {
                node_id: task,
                add_usd: usd,
                add_tokens: tokens,
            },
        )
        .await?;
    let mut what = Vec::new();
    if usd > 0.0 {
        what.push(format!("${usd:.2}"));
    }
    if tokens > 0 {
        what.push(format!("{tokens} tokens"));
    }
    writeln!(
        out,
        "raised {scope} of run {} by {}; `resume` continues it",
        run.run_id,
        what.join(" and ")
    )?;
    Ok(())
}

/// Cancels a run from another process; returns the status the run had when it was already final
/// (and writes nothing then: the caller says so where errors go).
pub async fn cancel(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
) -> Result<Option<RunStatus>> {
    let out = &mut Out(out);
    match store.request_cancel(run_id).await? {
        CancelOutcome::Requested { owner } => {
            writeln!(
                out,
                "cancellation of run {run_id} requested; its process ({owner}) stops it at its next check"
            )?;
            Ok(None)
        }
        CancelOutcome::Cancelled => {
            writeln!(
                out,
                "run {run_id} cancelled (no live process was driving it); `resume` continues it"
            )?;
            Ok(None)
        }
        CancelOutcome::AlreadyFinal(status) => Ok(Some(status)),
        other => Err(Error::Internal(format!(
            "this binary does not know the cancellation outcome {other:?}"
        ))),
    }
}

fn compact(v: &serde_json::Value) -> String {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("type");
        if o.is_empty() {
            return String::new();
        }
    }
    v.to_string()
}

/// Approves or denies a pending `needs_approval` task.
pub async fn decide(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    node_id: &str,
    iteration: Option<u32>,
    approve: bool,
    note: Option<&str>,
) -> Result<()> {
    let out = &mut Out(out);
    let d = store
        .decide_approval(run_id, node_id, iteration, approve, note)
        .await?;
    let verb = if approve { "approved" } else { "denied" };
    writeln!(
        out,
        "node `{}` (iteration {}) of run {run_id} {verb}; `resume --run-id {run_id}` continues the run (a run started with --wait-approval continues by itself)",
        d.node_id, d.iteration
    )?;
    Ok(())
}

/// Restores the working copy to before a node's agent attempts.
pub async fn revert(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    node_id: &str,
    iteration: Option<u32>,
    attempt: Option<u32>,
) -> Result<()> {
    let out = &mut Out(out);
    let r = smithers_core::vcs::revert(store, run_id, node_id, iteration, attempt).await?;
    writeln!(
        out,
        "restored {} to snapshot {} (before attempt {} of `{node_id}`, iteration {}); HEAD and the index are unchanged",
        r.repo.display(),
        &r.snapshot[..12.min(r.snapshot.len())],
        r.attempt,
        r.iteration
    )?;
    Ok(())
}

/// Lists the steps of a run (with `--json`, the stored rows: snake_case fields, ISO times).
pub async fn steps(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: Option<&str>,
    json: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let run = pick_run(store, run_id).await?;
    let steps = store.steps(&run.run_id).await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&steps)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>4} {:>6} {:<32} {:<10} {:>8} {:>9} {:>10} {:<12}",
        "ID", "PARENT", "PHASE / STEP", "STATUS", "ACTIVE", "SECONDS", "TOKENS", "BEFORE"
    )?;
    for s in &steps {
        let tokens = s
            .token_usage_json
            .as_ref()
            .map(|u| {
                u["input_tokens"].as_u64().unwrap_or(0) + u["output_tokens"].as_u64().unwrap_or(0)
            })
            .unwrap_or(0);
        let name = match &s.phase {
            Some(p) => format!("{p} / {}", s.name),
            None => s.name.clone(),
        };
        let name = if s.iteration > 0 {
            format!("{name} #{}", s.iteration)
        } else {
            name
        };
        writeln!(
            out,
            "{:>4} {:>6} {:<32} {:<10} {:>8} {:>9} {:>10} {:<12}",
            s.step_id,
            s.parent_step_id.map_or("-".into(), |p| p.to_string()),
            truncate(&name, 32),
            s.status,
            if s.active { "yes" } else { "no" },
            s.duration_ms
                .map_or("-".into(), |d| format!("{:.1}", d as f64 / 1000.0)),
            if tokens > 0 {
                tokens.to_string()
            } else {
                "-".into()
            },
            s.snapshot_before
                .as_deref()
                .map_or("-", |c| &c[..12.min(c.len())])
        )?;
    }
    Ok(())
}

/// Shows one step: its row, and its tasks' attempts.
pub async fn step_info(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    step_id: i64,
    json: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let step = &store.step(run_id, step_id).await?;
    let attempts = store.attempts(run_id).await?;
    let mine: Vec<&AttemptRecord> = attempts.iter().filter(|a| step.contains(a)).collect();
    if json {
        let v = serde_json::json!({ "step": step, "attempts": mine });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "step            {} `{}`", step.step_id, step.name)?;
    if let Some(p) = &step.phase {
        writeln!(out, "phase           {p}")?;
    }
    writeln!(out, "iteration       {}", step.iteration)?;
    writeln!(
        out,
        "status          {}{}",
        step.status,
        if step.active {
            ""
        } else {
            " (inactive: rolled back)"
        }
    )?;
    if let Some(p) = step.parent_step_id {
        writeln!(out, "parent step     {p}")?;
    }
    writeln!(out, "created         {}", show_time(step.created_at))?;
    if let Some(s) = step.started_at {
        writeln!(out, "started         {}", show_time(s))?;
    }
    if let Some(c) = step.completed_at {
        writeln!(out, "completed       {}", show_time(c))?;
    }
    writeln!(out, "tasks           {}", step.task_ids.join(", "))?;
    for (label, v) in [
        ("snapshot before", &step.snapshot_before),
        ("snapshot after ", &step.snapshot_after),
        ("commit created ", &step.commit_created),
    ] {
        if let Some(v) = v {
            writeln!(out, "{label} {v}")?;
        }
    }
    if let Some(b) = &step.vcs_backend {
        writeln!(
            out,
            "repository      {} ({b})",
            step.vcs_repo.as_deref().unwrap_or("?")
        )?;
    }
    if let Some(c) = &step.agent_config_json {
        writeln!(out, "agents          {c}")?;
    }
    if let Some(u) = &step.token_usage_json {
        writeln!(out, "usage           {u}")?;
    }
    if let Some(x) = step.exit_code {
        writeln!(out, "exit code       {x}")?;
    }
    for a in &mine {
        writeln!(
            out,
            "  {}#{} attempt {} {} {}{}",
            a.node_id,
            a.iteration,
            a.attempt,
            a.status,
            a.agent.as_deref().unwrap_or("compute"),
            a.error
                .as_deref()
                .map(|e| format!(": {}", truncate(e, 120)))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "cost            {}",
        CostSummary::of(mine.iter().copied()).sentence()
    )?;
    Ok(())
}

fn print_rollback(
    out: &mut Out<'_>,
    run_id: &str,
    what: &str,
    r: &smithers_core::timetravel::Rollback,
) -> Result<()> {
    match &r.restored {
        Some((repo, snap)) => writeln!(
            out,
            "restored {} to snapshot {} ({what}); HEAD, branches and bookmarks are unchanged",
            repo.display(),
            &snap[..12.min(snap.len())]
        )?,
        None => writeln!(
            out,
            "no step had a snapshot to restore: the working copy is unchanged"
        )?,
    }
    if let Some(s) = &r.saved {
        writeln!(
            out,
            "the working copy as it was is kept as snapshot {s} (under refs/smithers/)"
        )?;
    }
    writeln!(
        out,
        "steps now inactive: {}; nodes to re-run: {}; `resume --run-id {run_id}` re-runs them",
        if r.report.deactivated_steps.is_empty() {
            "none".to_owned()
        } else {
            r.report
                .deactivated_steps
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
        r.report.reset_nodes.len()
    )
}

/// Rolls a run back to before a step: files restored, that step and later ones inactive.
pub async fn step_rollback(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    step_id: i64,
    force: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let r = smithers_core::timetravel::rollback(store, run_id, step_id, force).await?;
    print_rollback(out, run_id, &format!("before step {step_id}"), &r)
}

/// Rewinds a run to a frame.
pub async fn rewind(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    frame: u32,
    force: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let r = smithers_core::timetravel::rewind(store, run_id, frame, force).await?;
    print_rollback(out, run_id, &format!("frame {frame}"), &r)
}

/// Prints what a step changed in the working copy.
pub async fn diff(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    step_id: i64,
) -> Result<()> {
    let out = &mut Out(out);
    let d = smithers_core::timetravel::diff(store, run_id, step_id).await?;
    writeln!(out, "{d}")?;
    Ok(())
}

/// Forks a run from a frame into a new run (the workflow binary's `resume` continues it).
pub async fn fork(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    run_id: &str,
    frame: u32,
    input: Option<&str>,
) -> Result<smithers_core::store::RunRecord> {
    let out = &mut Out(out);
    let input = match input {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| {
            smithers_core::Error::InvalidInput(format!(
                "--input is not JSON: {e}; nothing was created"
            ))
        })?),
        None => None,
    };
    let rec = store
        .fork_run(smithers_core::store::ForkRun {
            parent_run_id: run_id.to_owned(),
            frame,
            run_id: smithers_core::engine::new_run_id(),
            input,
        })
        .await?;
    writeln!(
        out,
        "run {} forked from run {run_id} at frame {frame}; the workflow binary's `resume --run-id {}` runs the rest (its `fork` checks the input against the workflow)",
        rec.run_id, rec.run_id
    )?;
    Ok(rec)
}
