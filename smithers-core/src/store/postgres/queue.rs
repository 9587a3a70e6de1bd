//! The attempt queue of pool mode on PostgreSQL (see [`crate::store::Claim`]): workers claim
//! queued attempts with `FOR UPDATE SKIP LOCKED`, renew and release claims, and record outcomes
//! fenced by their claim; drivers read recorded outcomes, adopt queued attempts when they take a
//! run over, and stop queued attempts; LISTEN/NOTIFY wakes both sides.
//!
//! Claim expiry is the server's clock (`clock_timestamp()`), so workers on machines whose clocks
//! disagree still agree on when a claim expired.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::connect::connect_error;
use super::writes::{apply, check_fence};
use super::PostgresStore;
use crate::error::{Error, Result};
use crate::model::Usage;
use crate::store::{
    queue_channel, run_channel, stop_channel, Claim, ClaimHolder, ClaimRenewal, ClaimToken,
    FenceToken, QueuedAttempt, QueuedRecord, RecordedOutcome, RemoteError, RemoteOutcome,
    UsageReport, Write, WriteBatch,
};

/// The server's time in epoch milliseconds, as claims measure it. Deliberately not the store's
/// [`Clock`](crate::clock::Clock): workers on several hosts claim from one queue, and measuring
/// every claim's expiry on the server's one clock keeps their clocks' skew out of it.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// The attempt a statement names: `$1..$4` are run, node, iteration, attempt.
const ATTEMPT: &str = "run_id = $1 AND node_id = $2 AND iteration = $3 AND attempt = $4";

/// The parameters `$1..$6` of a statement fenced by a claim: the claimed attempt (see
/// [`ATTEMPT`]), then the claim's owner and epoch. The statement's own follow from `$7`.
struct Fenced<'a> {
    claim: &'a Claim,
    iteration: i64,
    attempt: i64,
}

impl<'a> Fenced<'a> {
    fn new(claim: &'a Claim) -> Self {
        Fenced {
            claim,
            iteration: i64::from(claim.iteration),
            attempt: i64::from(claim.attempt),
        }
    }

    /// `$1..$6`, then `rest`.
    fn params<'b>(&'b self, rest: &[&'b (dyn ToSql + Sync)]) -> Vec<&'b (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &self.claim.run_id,
            &self.claim.node_id,
            &self.iteration,
            &self.attempt,
            &self.claim.token.owner,
            &self.claim.token.epoch,
        ];
        params.extend_from_slice(rest);
        params
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

fn claim_from_row(workflow: &str, owner: &str, r: &Row) -> Result<Claim> {
    let payload: Option<Value> = r.get(5);
    let position: i64 = r.get(6);
    Ok(Claim {
        run_id: r.get(0),
        workflow: workflow.to_owned(),
        node_id: r.get(1),
        iteration: r.get::<_, i64>(2) as u32,
        attempt: r.get::<_, i64>(3) as u32,
        token: ClaimToken {
            owner: owner.to_owned(),
            epoch: r.get(4),
        },
        payload: match payload {
            Some(p) => crate::store::stored_json_value("_smithers_attempts", "payload", p)?,
            None => QueuedAttempt::default(),
        },
        position,
    })
}

impl PostgresStore {
    pub(super) async fn claim(
        &self,
        workflow: &str,
        owner: &str,
        limit: usize,
        ttl: Duration,
    ) -> Result<Vec<Claim>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "WITH picked AS (
                   SELECT a.run_id, a.node_id, a.iteration, a.attempt
                   FROM _smithers_attempts a JOIN _smithers_runs r ON r.run_id = a.run_id
                   WHERE a.queue IN ('queued', 'claimed') AND a.status = 'in-progress'
                     AND (a.queue = 'queued' OR a.claim_expires_ms < {NOW_MS})
                     AND r.workflow = $1 AND r.status IN ('running', 'queued')
                   ORDER BY a.seq
                   LIMIT $2
                   FOR UPDATE OF a SKIP LOCKED
                 )
                 UPDATE _smithers_attempts a SET queue = 'claimed', claim_owner = $3,
                   claim_epoch = a.claim_epoch + 1, claim_expires_ms = {NOW_MS} + $4
                 FROM picked p
                 WHERE a.run_id = p.run_id AND a.node_id = p.node_id AND a.iteration = p.iteration
                   AND a.attempt = p.attempt
                 RETURNING a.run_id, a.node_id, a.iteration, a.attempt, a.claim_epoch, a.payload, a.seq"
            ))
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        c.query(&st, &[&workflow, &limit, &owner, &ttl_ms(ttl)])
            .await?
            .iter()
            .map(|r| claim_from_row(workflow, owner, r))
            .collect()
    }

    /// `ClaimLost` for `claim`, saying what happened to it (read outside any transaction: the
    /// refusal is already decided).
    async fn claim_lost(&self, claim: &Claim) -> Error {
        let detail = match self.client().await {
            Ok(c) => match c
                .query_opt(
                    &format!(
                        "SELECT queue, claim_owner, claim_epoch, claim_expires_ms < {NOW_MS}, status
                         FROM _smithers_attempts WHERE {ATTEMPT}"
                    ),
                    &[
                        &claim.run_id,
                        &claim.node_id,
                        &i64::from(claim.iteration),
                        &i64::from(claim.attempt),
                    ],
                )
                .await
            {
                Ok(Some(r)) => {
                    let (queue, owner, epoch, expired, status): (
                        Option<String>,
                        Option<String>,
                        i64,
                        Option<bool>,
                        String,
                    ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                    if status != "in-progress" {
                        format!("the attempt already ended ({status})")
                    } else if owner.is_none()
                        && queue.as_deref() == Some("queued")
                        && epoch > claim.token.epoch
                    {
                        format!(
                            "its claim was freed for another worker (this worker `{}` was judged dead: its process gone from its host, or its heartbeat expired)",
                            claim.token.owner
                        )
                    } else if epoch != claim.token.epoch
                        || owner.as_deref() != Some(&claim.token.owner)
                    {
                        format!(
                            "`{}` claimed it (claim epoch {epoch}, this worker `{}` held epoch {})",
                            owner.as_deref().unwrap_or("nobody"),
                            claim.token.owner,
                            claim.token.epoch
                        )
                    } else if queue.as_deref() != Some("claimed") {
                        format!(
                            "it is no longer claimed (now {})",
                            queue.as_deref().unwrap_or("run by its driver")
                        )
                    } else if expired == Some(true) {
                        "the claim expired before it was renewed".to_owned()
                    } else {
                        "the claim changed".to_owned()
                    }
                }
                Ok(None) => "the attempt no longer exists".to_owned(),
                Err(e) => format!(
                    "(could not read why: {})",
                    super::error::postgres_message(&e)
                ),
            },
            Err(e) => format!("(could not read why: {e})"),
        };
        Error::ClaimLost {
            run_id: claim.run_id.clone(),
            node_id: claim.node_id.clone(),
            attempt: claim.attempt,
            detail,
        }
    }

    pub(super) async fn renew(&self, claim: &Claim, ttl: Duration) -> Result<ClaimRenewal> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE _smithers_attempts SET claim_expires_ms = {NOW_MS} + $7
                 WHERE {ATTEMPT} AND queue = 'claimed' AND status = 'in-progress'
                   AND claim_owner = $5 AND claim_epoch = $6 AND claim_expires_ms >= {NOW_MS}
                 RETURNING stop_requested"
            ))
            .await?;
        let row = c
            .query_opt(&st, &Fenced::new(claim).params(&[&ttl_ms(ttl)]))
            .await?;
        drop(c);
        match row {
            Some(r) => Ok(ClaimRenewal {
                stop_requested: r.get(0),
            }),
            None => Err(self.claim_lost(claim).await),
        }
    }

    pub(super) async fn record(&self, claim: &Claim, outcome: &RemoteOutcome) -> Result<()> {
        let c = self.client().await?;
        // One statement, one round trip: the fenced update and the driver's wake-up commit
        // together (the notification is sent only when the update matched).
        let st = c
            .prepare_cached(&format!(
                "WITH recorded AS (
                   UPDATE _smithers_attempts SET queue = 'recorded', outcome = $7, claim_expires_ms = NULL
                   WHERE {ATTEMPT} AND queue = 'claimed' AND status = 'in-progress'
                     AND claim_owner = $5 AND claim_epoch = $6 AND claim_expires_ms >= {NOW_MS}
                   RETURNING 1
                 )
                 SELECT pg_notify($8, '') FROM recorded"
            ))
            .await?;
        let n = c
            .query(
                &st,
                &Fenced::new(claim)
                    .params(&[&serde_json::to_value(outcome)?, &run_channel(&claim.run_id)]),
            )
            .await?
            .len();
        drop(c);
        if n == 0 {
            return Err(self.claim_lost(claim).await);
        }
        Ok(())
    }

    pub(super) async fn report(
        &self,
        claim: &Claim,
        usage: &Usage,
        model: Option<&str>,
    ) -> Result<ClaimRenewal> {
        let c = self.client().await?;
        // One statement: the fenced update and the driver's wake-up commit together.
        let st = c
            .prepare_cached(&format!(
                "WITH reported AS (
                   UPDATE _smithers_attempts SET usage_report = $7
                   WHERE {ATTEMPT} AND queue = 'claimed' AND status = 'in-progress'
                     AND claim_owner = $5 AND claim_epoch = $6 AND claim_expires_ms >= {NOW_MS}
                   RETURNING stop_requested
                 )
                 SELECT stop_requested, pg_notify($8, '') FROM reported"
            ))
            .await?;
        let report = serde_json::json!({ "usage": usage, "model": model });
        let row = c
            .query_opt(
                &st,
                &Fenced::new(claim).params(&[&report, &run_channel(&claim.run_id)]),
            )
            .await?;
        drop(c);
        match row {
            Some(r) => Ok(ClaimRenewal {
                stop_requested: r.get(0),
            }),
            None => Err(self.claim_lost(claim).await),
        }
    }

    pub(super) async fn reports(&self, run_id: &str) -> Result<Vec<UsageReport>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT node_id, iteration, attempt, usage_report FROM _smithers_attempts
                 WHERE run_id = $1 AND queue = 'claimed' AND status = 'in-progress'
                   AND usage_report IS NOT NULL
                 ORDER BY seq",
            )
            .await?;
        c.query(&st, &[&run_id])
            .await?
            .iter()
            .map(|r| {
                let report: Value = r.get(3);
                Ok(UsageReport {
                    node_id: r.get(0),
                    iteration: r.get::<_, i64>(1) as u32,
                    attempt: r.get::<_, i64>(2) as u32,
                    usage: serde_json::from_value(report["usage"].clone())?,
                    model: report["model"].as_str().map(str::to_owned),
                })
            })
            .collect()
    }

    pub(super) async fn write_under_claim(&self, claim: &Claim, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The run's lock first, as every batch takes it (run row, run lock, then attempt rows):
        // taken after the attempt's row lock it could deadlock with a driver's batch that holds
        // the run lock and ends this attempt.
        tx.execute(super::writes::RUN_LOCK, &[&claim.run_id])
            .await?;
        // The row lock (FOR SHARE) keeps another worker from claiming the attempt until these
        // events commit: a claim taken after them fences out the next ones.
        let held = tx
            .query_opt(
                &format!(
                    "SELECT 1 FROM _smithers_attempts
                     WHERE {ATTEMPT} AND queue = 'claimed' AND status = 'in-progress'
                       AND claim_owner = $5 AND claim_epoch = $6 AND claim_expires_ms >= {NOW_MS}
                     FOR SHARE"
                ),
                &Fenced::new(claim).params(&[]),
            )
            .await?;
        if held.is_none() {
            drop(tx);
            drop(c);
            return Err(self.claim_lost(claim).await);
        }
        let mut b = WriteBatch::new(&claim.run_id);
        b.writes = writes;
        apply(&tx, &b, self.now()).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn release(&self, claim: &Claim) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE _smithers_attempts SET queue = 'queued', claim_owner = NULL, claim_expires_ms = NULL
                     WHERE {ATTEMPT} AND queue = 'claimed' AND claim_owner = $5 AND claim_epoch = $6"
                ),
                &Fenced::new(claim).params(&[]),
            )
            .await?;
        if n > 0 {
            tx.execute(
                "SELECT pg_notify($1, '')",
                &[&queue_channel(&claim.workflow)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn holders(&self, workflow: &str) -> Result<Vec<ClaimHolder>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT DISTINCT a.claim_owner, w.expires_ms
                 FROM _smithers_attempts a JOIN _smithers_runs r ON r.run_id = a.run_id
                   LEFT JOIN _smithers_workers w ON w.worker_id = a.claim_owner
                 WHERE a.queue = 'claimed' AND a.status = 'in-progress'
                   AND a.claim_expires_ms >= {NOW_MS} AND r.workflow = $1
                 ORDER BY a.claim_owner"
            ))
            .await?;
        Ok(c.query(&st, &[&workflow])
            .await?
            .iter()
            .filter_map(|r| {
                Some(ClaimHolder {
                    owner: r.get::<_, Option<String>>(0)?,
                    heartbeat_expires_ms: r.get(1),
                })
            })
            .collect())
    }

    pub(super) async fn free(&self, workflow: &str, owners: &[String]) -> Result<u64> {
        if owners.is_empty() {
            return Ok(0);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The epoch moves on here, not only at the next claim: the dead owner's token is
        // stale from this commit on.
        let n = tx
            .execute(
                "UPDATE _smithers_attempts a SET queue = 'queued', claim_owner = NULL,
                   claim_expires_ms = NULL, claim_epoch = a.claim_epoch + 1
                 FROM _smithers_runs r
                 WHERE r.run_id = a.run_id AND r.workflow = $1
                   AND a.queue = 'claimed' AND a.status = 'in-progress'
                   AND a.claim_owner = ANY($2)",
                &[&workflow, &owners],
            )
            .await?;
        if n > 0 {
            tx.execute("SELECT pg_notify($1, '')", &[&queue_channel(workflow)])
                .await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    pub(super) async fn recorded(&self, run_id: &str) -> Result<Vec<RecordedOutcome>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT node_id, iteration, attempt, claim_owner, outcome FROM _smithers_attempts
                 WHERE run_id = $1 AND queue = 'recorded' AND status = 'in-progress' ORDER BY seq",
            )
            .await?;
        c.query(&st, &[&run_id])
            .await?
            .iter()
            .map(|r| {
                let outcome: Value = r.get(4);
                Ok(RecordedOutcome {
                    node_id: r.get(0),
                    iteration: r.get::<_, i64>(1) as u32,
                    attempt: r.get::<_, i64>(2) as u32,
                    worker: r.get(3),
                    outcome: serde_json::from_value(outcome)?,
                })
            })
            .collect()
    }

    pub(super) async fn position(&self, run_id: &str) -> Result<i64> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM _smithers_attempts WHERE run_id = $1",
            )
            .await?;
        Ok(c.query_one(&st, &[&run_id]).await?.get(0))
    }

    pub(super) async fn queued(&self, run_id: &str) -> Result<Vec<QueuedRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT node_id, iteration, attempt FROM _smithers_attempts
                 WHERE run_id = $1 AND queue IS NOT NULL AND status = 'in-progress' ORDER BY seq",
            )
            .await?;
        Ok(c.query(&st, &[&run_id])
            .await?
            .iter()
            .map(|r| QueuedRecord {
                node_id: r.get(0),
                iteration: r.get::<_, i64>(1) as u32,
                attempt: r.get::<_, i64>(2) as u32,
            })
            .collect())
    }

    pub(super) async fn stop_queued(
        &self,
        run_id: &str,
        node_id: &str,
        iteration: u32,
        attempt: u32,
        fence: &FenceToken,
    ) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        check_fence(&tx, run_id, fence, "FOR KEY SHARE").await?;
        let cancelled = RemoteOutcome {
            duration_ms: 0,
            value: None,
            reply: None,
            error: Some(RemoteError {
                message: "cancelled before a worker started it".into(),
                retryable: false,
                retry_after_ms: None,
            }),
        };
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &run_id,
            &node_id,
            &i64::from(iteration),
            &i64::from(attempt),
        ];
        // Nobody runs it (queued, or its worker's claim expired): it ends here.
        let outcome = serde_json::to_value(&cancelled)?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE _smithers_attempts SET queue = 'recorded', outcome = $5, claim_expires_ms = NULL
                     WHERE {ATTEMPT} AND status = 'in-progress'
                       AND (queue = 'queued' OR (queue = 'claimed' AND claim_expires_ms < {NOW_MS}))"
                ),
                &[key[0], key[1], key[2], key[3], &outcome],
            )
            .await?;
        if n > 0 {
            tx.execute("SELECT pg_notify($1, '')", &[&run_channel(run_id)])
                .await?;
        } else {
            // Its worker listens on its stop channel: told at commit, not at its next renewal.
            let holders = tx
                .query(
                    &format!(
                        "UPDATE _smithers_attempts SET stop_requested = TRUE
                         WHERE {ATTEMPT} AND status = 'in-progress' AND queue = 'claimed'
                         RETURNING claim_owner"
                    ),
                    &key,
                )
                .await?;
            for owner in holders.iter().filter_map(|r| r.get::<_, Option<String>>(0)) {
                tx.execute("SELECT pg_notify($1, '')", &[&stop_channel(&owner)])
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    pub(super) async fn listen_on(
        &self,
        channel: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<()>> {
        // `channel` is one of ours (`smithers_[qr]_<hex>`): an identifier as it is.
        if channel.is_empty()
            || !channel
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return Err(Error::InvalidIdentifier(format!(
                "{channel} (a notification channel)"
            )));
        }
        // A connection of its own: the pool's connections drop notifications.
        let (client, mut conn) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| connect_error(&self.target, &e))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (client_tx, mut client_rx) = tokio::sync::oneshot::channel::<tokio_postgres::Client>();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
            // The client lives as long as this task, so the connection does.
            let mut client = None;
            loop {
                tokio::select! {
                    // The receiver is gone: close the connection.
                    _ = tx.closed() => break,
                    c = &mut client_rx, if client.is_none() => match c {
                        Ok(c) => client = Some(c),
                        // LISTEN failed.
                        Err(_) => break,
                    },
                    m = messages.next() => match m {
                        Some(Ok(AsyncMessage::Notification(_))) => {
                            if tx.send(()).is_err() {
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        // The connection ended: the receiver sees the end and polls instead.
                        Some(Err(_)) | None => break,
                    },
                }
            }
            drop(client);
        });
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        let _ = client_tx.send(client);
        Ok(rx)
    }
}
