//! The supervisor's judgments, without I/O: whether an active run has a live driver, and what
//! to do with one whose driver is gone (restart it now, wait out its backoff, or give up and
//! mark it failed). The worker loop reads the store, asks these, and carries out the answer.

use std::time::Duration;

use crate::model::{RunStatus, Timestamp};
use crate::store::{ClaimHolder, RestartRecord, RunRecord};

/// How a worker restarts runs whose driver keeps dying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed without progress; the next time the driver is found gone, the run is
    /// marked failed instead (`worker --restart-limit`). A finished node counts as progress and
    /// starts the count again.
    pub limit: u32,
    /// The wait before the second restart; it doubles before each later one
    /// (`worker --restart-backoff-ms`). The first restart is immediate.
    pub backoff: Duration,
    /// The longest wait between two restarts.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            limit: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl RestartPolicy {
    /// The wait after the `restarts`-th restart before the next one: none after none, then
    /// `backoff`, doubling, at most `max_backoff`.
    pub fn delay(&self, restarts: u32) -> Duration {
        if restarts == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(restarts - 1).unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// Why a worker may drive an active run now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Vacant {
    /// It waits for a worker (`run --detach`, or handed back): starting it is no restart.
    Queued,
    /// It is `running` but its driver is gone, for this reason: taking it over is a restart.
    DriverGone(String),
}

/// Whether `run` is free for a worker at `now`, and why; `None` while a live driver holds its
/// lease (or it is not active). `holder_is_dead` says whether a lease holder is a process of
/// this host that no longer exists (its lease is then stale whatever its expiry).
pub(crate) fn vacancy(
    run: &RunRecord,
    now: Timestamp,
    holder_is_dead: impl Fn(&str) -> bool,
) -> Option<Vacant> {
    let gone = match (&run.lease_owner, run.lease_expires_ms) {
        (Some(owner), Some(expires)) if expires >= now.as_millis() => {
            if !holder_is_dead(owner) {
                return None;
            }
            format!("its driver `{owner}` is no longer running on this host")
        }
        (Some(owner), Some(expires)) => format!(
            "the lease of its driver `{owner}` expired at {}",
            Timestamp::from_millis(expires)
        ),
        _ => "it is `running` with no lease: its driver stopped without recording an end".into(),
    };
    match run.status {
        RunStatus::Queued => Some(Vacant::Queued),
        RunStatus::Running => Some(Vacant::DriverGone(gone)),
        _ => None,
    }
}

/// What to do with a run whose driver is gone.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Restart {
    /// Take it over now, recording this bookkeeping first (so a crash of the new driver still
    /// counts).
    Now(RestartRecord),
    /// Its backoff runs until then.
    Wait(Timestamp),
    /// It was restarted `restarts` times without progress: mark it failed.
    GiveUp {
        /// Restarts made.
        restarts: u32,
    },
}

/// Decides a restart of `run_id` at `now`: `previous` is its bookkeeping, `progress` its
/// finished nodes now, `reason` why its driver is gone, `worker` who would restart it.
pub(crate) fn decide(
    policy: &RestartPolicy,
    previous: Option<&RestartRecord>,
    progress: u32,
    now: Timestamp,
    reason: &str,
    worker: &str,
    run_id: &str,
) -> Restart {
    // A node finished since the last restart: the run moves, count from the start again.
    let (restarts, last) = match previous {
        Some(p) if progress <= p.progress => (p.restarts, Some(p.last_restart_ms)),
        _ => (0, None),
    };
    if restarts >= policy.limit {
        return Restart::GiveUp { restarts };
    }
    if let Some(last) = last {
        let due = Timestamp::from_millis(last).plus(policy.delay(restarts));
        if now < due {
            return Restart::Wait(due);
        }
    }
    Restart::Now(RestartRecord {
        run_id: run_id.to_owned(),
        restarts: restarts + 1,
        progress,
        last_restart_at: now,
        last_restart_ms: now.as_millis(),
        last_reason: reason.to_owned(),
        last_worker: worker.to_owned(),
    })
}

/// The error a run is failed with after `restarts` restarts without progress: how often, the
/// limit, what the driver was doing when it was last found gone, and how to try again.
pub(crate) fn give_up_error(
    run_id: &str,
    restarts: u32,
    limit: u32,
    reason: &str,
    in_progress: &[(String, u32)],
) -> String {
    let doing = match in_progress {
        [] => String::new(),
        nodes => format!(
            " while {} in progress",
            nodes
                .iter()
                .map(|(n, a)| format!("node `{n}` (attempt {a})"))
                .collect::<Vec<_>>()
                .join(", ")
                + if nodes.len() > 1 { " were" } else { " was" }
        ),
    };
    format!(
        "its driver died {n} time(s) without progress (restarted {restarts} time(s), the limit of `worker --restart-limit {limit}`); last: {reason}{doing}; marked failed instead of restarting it again (`resume --run-id {run_id}` tries once more)",
        n = restarts + 1
    )
}

/// The holders of live claims known dead at `now`, each with why: a process of this host that
/// no longer exists (`holder_is_dead`, the rule for a driver's lease), or a registered worker
/// whose heartbeat expired (gone or hung). `me` never is. A holder on another host with no row
/// in the registry (an `Engine::serve_attempts` outside a `worker`) keeps its claims until
/// they expire.
pub(crate) fn dead_holders(
    holders: &[ClaimHolder],
    me: &str,
    now: Timestamp,
    holder_is_dead: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    holders
        .iter()
        .filter(|h| h.owner != me)
        .filter_map(|h| {
            let why = if holder_is_dead(&h.owner) {
                "its process is no longer running on this host".to_owned()
            } else {
                match h.heartbeat_expires_ms {
                    Some(expires) if expires < now.as_millis() => format!(
                        "its heartbeat expired at {}",
                        Timestamp::from_millis(expires)
                    ),
                    _ => return None,
                }
            };
            Some((h.owner.clone(), why))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, owner: Option<&str>, expires: Option<i64>) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            workflow: "w".into(),
            status,
            input: serde_json::Value::Null,
            error: None,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
            lease_owner: owner.map(str::to_owned),
            lease_expires_ms: expires,
            parent_run_id: None,
            parent_frame: None,
            lease_epoch: 1,
        }
    }

    const NOW: Timestamp = Timestamp::from_millis(10_000);

    #[test]
    fn a_live_lease_is_left_alone_and_a_gone_driver_is_named() {
        let alive = |_: &str| false;
        let live = run(RunStatus::Running, Some("h:1:a"), Some(10_001));
        assert_eq!(vacancy(&live, NOW, alive), None);
        assert_eq!(
            vacancy(&live, NOW, |_| true),
            Some(Vacant::DriverGone(
                "its driver `h:1:a` is no longer running on this host".into()
            ))
        );
        let expired = run(RunStatus::Running, Some("h:1:a"), Some(9_999));
        assert!(matches!(
            vacancy(&expired, NOW, alive),
            Some(Vacant::DriverGone(r)) if r.starts_with("the lease of its driver `h:1:a` expired at 1970-01-01T00:00:09.999Z")
        ));
        let unleased = run(RunStatus::Running, None, None);
        assert!(matches!(
            vacancy(&unleased, NOW, alive),
            Some(Vacant::DriverGone(_))
        ));
        assert_eq!(
            vacancy(&run(RunStatus::Queued, None, None), NOW, alive),
            Some(Vacant::Queued)
        );
        // Being queued by a live process (`run --detach` between its two writes): not yet.
        assert_eq!(
            vacancy(
                &run(RunStatus::Queued, Some("h:1:a"), Some(20_000)),
                NOW,
                alive
            ),
            None
        );
        for stopped in [
            RunStatus::Finished,
            RunStatus::Failed,
            RunStatus::WaitingApproval,
        ] {
            assert_eq!(vacancy(&run(stopped, None, None), NOW, alive), None);
        }
    }

    #[test]
    fn claims_of_a_dead_process_or_a_stale_heartbeat_are_freed_and_others_kept() {
        let holder = |owner: &str, expires: Option<i64>| ClaimHolder {
            owner: owner.into(),
            heartbeat_expires_ms: expires,
        };
        let holders = [
            holder("h:1:dead", Some(20_000)),
            holder("h:2:live", Some(20_000)),
            holder("other:3:stale", Some(9_999)),
            holder("other:4:unregistered", None),
            holder("h:5:me", Some(1)),
        ];
        let dead = dead_holders(&holders, "h:5:me", NOW, |o| o == "h:1:dead");
        assert_eq!(
            dead,
            [
                (
                    "h:1:dead".to_owned(),
                    "its process is no longer running on this host".to_owned()
                ),
                (
                    "other:3:stale".to_owned(),
                    "its heartbeat expired at 1970-01-01T00:00:09.999Z".to_owned()
                ),
            ]
        );
        // A heartbeat expiring at `now` itself still holds (as a lease does).
        assert!(dead_holders(&[holder("o:1:x", Some(10_000))], "me", NOW, |_| false).is_empty());
    }

    #[test]
    fn the_backoff_doubles_from_the_second_restart_up_to_its_cap() {
        let p = RestartPolicy {
            limit: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (0..6).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 500, 500]);
        assert_eq!(p.delay(200), Duration::from_millis(500));
    }

    fn record(restarts: u32, progress: u32, at: i64) -> RestartRecord {
        RestartRecord {
            run_id: "r".into(),
            restarts,
            progress,
            last_restart_at: Timestamp::from_millis(at),
            last_restart_ms: at,
            last_reason: "gone".into(),
            last_worker: "w0".into(),
        }
    }

    #[test]
    fn restarts_wait_their_backoff_and_stop_at_the_limit_unless_the_run_progressed() {
        let p = RestartPolicy {
            limit: 2,
            backoff: Duration::from_millis(1_000),
            max_backoff: Duration::from_secs(60),
        };
        let decide = |prev: Option<&RestartRecord>, progress, now| {
            decide(&p, prev, progress, now, "gone", "w1", "r")
        };
        // The first restart is immediate and recorded as restart 1.
        match decide(None, 3, NOW) {
            Restart::Now(r) => {
                assert_eq!((r.restarts, r.progress, r.last_restart_ms), (1, 3, 10_000))
            }
            other => panic!("{other:?}"),
        }
        // The second waits a backoff after the first.
        let first = record(1, 3, 9_500);
        assert_eq!(
            decide(Some(&first), 3, NOW),
            Restart::Wait(Timestamp::from_millis(10_500))
        );
        assert!(
            matches!(decide(Some(&first), 3, Timestamp::from_millis(10_500)), Restart::Now(r) if r.restarts == 2)
        );
        // At the limit without progress: give up.
        assert_eq!(
            decide(Some(&record(2, 3, 0)), 3, NOW),
            Restart::GiveUp { restarts: 2 }
        );
        // With progress since: count from the start again, at once.
        assert!(
            matches!(decide(Some(&record(2, 3, 9_999)), 4, NOW), Restart::Now(r) if r.restarts == 1)
        );
        // A limit of 0 never restarts.
        let never = RestartPolicy {
            limit: 0,
            ..p.clone()
        };
        assert_eq!(
            super::decide(&never, None, 0, NOW, "gone", "w1", "r"),
            Restart::GiveUp { restarts: 0 }
        );
    }

    #[test]
    fn the_give_up_error_says_how_often_what_was_running_and_how_to_retry() {
        assert_eq!(
            give_up_error("r1", 2, 2, "its driver `h:9:x` is no longer running on this host", &[("boom".into(), 3)]),
            "its driver died 3 time(s) without progress (restarted 2 time(s), the limit of `worker --restart-limit 2`); last: its driver `h:9:x` is no longer running on this host while node `boom` (attempt 3) was in progress; marked failed instead of restarting it again (`resume --run-id r1` tries once more)"
        );
    }
}
