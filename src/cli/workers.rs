//! `smithers workers` and what `status` says about who drives a run: the registry of `worker`
//! processes (`_smithers_workers`) matched with runs' leases.

use std::io::Write;

use smithers_core::clock::{Clock, SystemClock};
use smithers_core::model::Timestamp;
use smithers_core::store::{RestartRecord, RunRecord, Store, WorkerRecord};
use smithers_core::text::truncate;
use smithers_core::Result;

use super::{show_time, Out};

/// How long ago `at` was, from `now`: `3s ago`, `2m ago`, `5h ago`.
fn ago(at: Timestamp, now: Timestamp) -> String {
    let s = (now.as_millis() - at.as_millis()).max(0) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

/// The `host:pid` of a lease owner or worker id (`host:pid:nonce`).
fn process_of(owner: &str) -> &str {
    match owner.rmatch_indices(':').next() {
        Some((i, _)) => &owner[..i],
        None => owner,
    }
}

/// The registered worker whose process holds `owner`'s lease, if any.
pub fn worker_of<'a>(workers: &'a [WorkerRecord], owner: &str) -> Option<&'a WorkerRecord> {
    let process = process_of(owner);
    workers.iter().find(|w| process_of(&w.worker_id) == process)
}

/// `smithers workers`: live workers (stale ones too with `all`), with what they drive and their
/// last heartbeat.
pub async fn workers(
    out: &mut (dyn Write + Send),
    store: &dyn Store,
    all: bool,
    json: bool,
) -> Result<()> {
    let out = &mut Out(out);
    let now = SystemClock.now();
    let workers = store.workers().await?;
    let (shown, stale): (Vec<&WorkerRecord>, Vec<&WorkerRecord>) = workers
        .iter()
        .partition(|w| all || !w.is_stale(now.as_millis()));
    if json {
        let rows: Vec<serde_json::Value> = shown
            .iter()
            .map(|w| {
                let mut v = serde_json::to_value(w).unwrap_or_default();
                v["stale"] = w.is_stale(now.as_millis()).into();
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if shown.is_empty() {
        writeln!(out, "no live worker")?;
    } else {
        writeln!(
            out,
            "{:<28} {:<16} {:>7} {:<16} {:>4} {:<12} DRIVING",
            "WORKER", "HOST", "PID", "WORKFLOW", "MAX", "HEARTBEAT"
        )?;
    }
    for w in &shown {
        let heartbeat = if w.is_stale(now.as_millis()) {
            format!("stale, {}", ago(w.heartbeat_at, now))
        } else {
            ago(w.heartbeat_at, now)
        };
        writeln!(
            out,
            "{:<28} {:<16} {:>7} {:<16} {:>4} {:<12} {}",
            truncate(&w.worker_id, 28),
            truncate(&w.host, 16),
            w.pid,
            truncate(w.workflow.as_deref().unwrap_or("-"), 16),
            w.concurrency,
            heartbeat,
            if w.driving.is_empty() {
                "-".to_owned()
            } else {
                w.driving.join(", ")
            }
        )?;
    }
    if !stale.is_empty() {
        writeln!(
            out,
            "{} stale worker(s) not shown (no heartbeat: killed or hung); `smithers workers --all` lists them",
            stale.len()
        )?;
    }
    Ok(())
}

/// What `status` says drives a run: the worker or process holding its lease and whether it is
/// alive, or that nobody does.
pub fn driver_line(run: &RunRecord, workers: &[WorkerRecord], now: Timestamp) -> Option<String> {
    let owner = run.lease_owner.as_deref()?;
    let expired = run.lease_expires_ms.is_some_and(|e| e < now.as_millis());
    let holder = match worker_of(workers, owner) {
        Some(w) if w.is_stale(now.as_millis()) => format!(
            "worker `{}` (stale: last heartbeat {})",
            w.worker_id,
            ago(w.heartbeat_at, now)
        ),
        Some(w) => format!(
            "worker `{}` (heartbeat {})",
            w.worker_id,
            ago(w.heartbeat_at, now)
        ),
        None => format!("process `{}`", process_of(owner)),
    };
    Some(if expired {
        format!("{holder}, lease `{owner}` expired: a worker takes the run over")
    } else {
        format!("{holder}, lease `{owner}`")
    })
}

/// The DRIVER cell of `smithers runs`: the process holding the run's lease (`worker host:pid`
/// for a registered worker), `(lease expired)` once its lease ran out, `-` for a run nobody
/// holds.
pub fn driver_cell(run: &RunRecord, workers: &[WorkerRecord], now: Timestamp) -> String {
    let Some(owner) = run.lease_owner.as_deref() else {
        return "-".to_owned();
    };
    let process = process_of(owner);
    let holder = match worker_of(workers, owner) {
        Some(_) => format!("worker {process}"),
        None => process.to_owned(),
    };
    if run.lease_expires_ms.is_some_and(|e| e < now.as_millis()) {
        format!("{holder} (lease expired)")
    } else {
        holder
    }
}

/// What `status` says about a run's restarts by workers.
pub fn restarts_line(r: &RestartRecord) -> String {
    format!(
        "{} since its last progress; last {} by `{}`: {}",
        r.restarts,
        show_time(r.last_restart_at),
        r.last_worker,
        truncate(&r.last_reason, 160)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worker `box:42:aaaa` (heartbeat at 00:00:10, stale after 00:00:25), run `r` whose lease
    /// `box:42:bbbb` runs one second past `now`, and `now` (00:00:13).
    fn fixture() -> (WorkerRecord, RunRecord, Timestamp) {
        let w = WorkerRecord {
            worker_id: "box:42:aaaa".into(),
            host: "box".into(),
            pid: 42,
            workflow: Some("wf".into()),
            concurrency: 4,
            driving: vec!["r".into()],
            started_at: Timestamp::parse("2026-12-01T00:00:00Z").unwrap(),
            heartbeat_at: Timestamp::parse("2026-12-01T00:00:10Z").unwrap(),
            expires_ms: Timestamp::parse("2026-12-01T00:00:25Z")
                .unwrap()
                .as_millis(),
        };
        let now = Timestamp::parse("2026-12-01T00:00:13Z").unwrap();
        let run = RunRecord {
            run_id: "r".into(),
            workflow: "wf".into(),
            status: smithers_core::RunStatus::Running,
            input: serde_json::Value::Null,
            error: None,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
            lease_owner: Some("box:42:bbbb".into()),
            lease_expires_ms: Some(now.as_millis() + 1000),
            parent_run_id: None,
            parent_frame: None,
            lease_epoch: 2,
        };
        (w, run, now)
    }

    #[test]
    fn a_lease_names_the_worker_of_its_process_and_says_when_it_expired() {
        let (w, mut run, now) = fixture();
        assert_eq!(
            driver_line(&run, std::slice::from_ref(&w), now).unwrap(),
            "worker `box:42:aaaa` (heartbeat 3s ago), lease `box:42:bbbb`"
        );
        run.lease_owner = Some("box:7:cccc".into());
        run.lease_expires_ms = Some(now.as_millis() - 1);
        assert_eq!(
            driver_line(&run, &[w], now).unwrap(),
            "process `box:7`, lease `box:7:cccc` expired: a worker takes the run over"
        );
        run.lease_owner = None;
        assert_eq!(driver_line(&run, &[], now), None);
    }

    #[test]
    fn the_driver_cell_names_the_process_and_whether_it_is_a_worker() {
        let (mut w, mut run, now) = fixture();
        w.expires_ms = 0;
        let workers = std::slice::from_ref(&w);
        assert_eq!(driver_cell(&run, workers, now), "worker box:42");
        run.lease_owner = Some("box:7:cccc".into());
        assert_eq!(driver_cell(&run, workers, now), "box:7");
        run.lease_expires_ms = Some(now.as_millis() - 1);
        assert_eq!(driver_cell(&run, workers, now), "box:7 (lease expired)");
        run.lease_owner = None;
        assert_eq!(driver_cell(&run, workers, now), "-");
    }
}
