//! How an attempt ends: success (output, node, attempt, events), failure (retry within the
//! budget of failed attempts, or fail), cancellation (node pending again, budget kept).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::TaskError;
use crate::events::{Event, EventKind};
use crate::model::{NodeKey, NodeState, NodeStatus, RunStatus, Usage};
use crate::node::{TaskExec, TaskSpec};
use crate::price::CostSource;
use crate::retry::RetryPolicy;
use crate::store::{AttemptEnd, NodeRecord, Write, WriteBatch};

use super::{AttemptOutput, AttemptResult, Command, RunState};

impl RunState {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_success(
        &mut self,
        b: &mut WriteBatch,
        t: &TaskSpec,
        it: u32,
        loop_id: Option<String>,
        attempt: u32,
        value: Value,
        mut end: AttemptEnd,
    ) {
        end.status = "finished";
        self.price(&mut end);
        self.spend(&t.id, &end.usage);
        let usage = (end.usage != Usage::default()).then(|| end.usage.clone());
        b.push(Write::Output {
            info: t.output,
            node_id: t.id.to_string(),
            iteration: it,
            value: value.clone(),
        });
        b.push(Write::Node(NodeRecord {
            node_id: t.id.to_string(),
            iteration: it,
            status: NodeStatus::Finished,
            attempts: attempt,
            output_table: Some(t.output.table.to_owned()),
            loop_id,
            last_error: None,
        }));
        b.push(Write::AttemptEnd {
            node_id: t.id.to_string(),
            iteration: it,
            attempt,
            end,
        });
        b.push(Write::Event(Event::node(
            &self.run_id,
            &t.id,
            it,
            self.now,
            EventKind::NodeFinished { attempt, usage },
        )));
        self.finished += 1;
        supervisor(
            b,
            "running",
            &format!("{} node(s) finished; last: `{}`", self.finished, t.id),
        );
        self.set_node(
            &t.id,
            it,
            NodeState {
                status: NodeStatus::Finished,
                attempts: attempt,
                failures: self.node(&t.id, it).map_or(0, |n| n.failures),
                last_error: None,
            },
        );
        if self.reads.read_output(&t.id, it) {
            // The last render looked here: it sees the output at once.
            self.stale = true;
        }
        Arc::make_mut(&mut self.snap)
            .outputs
            .entry(t.id.to_string())
            .or_default()
            .insert(it, value);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_failure(
        &mut self,
        b: &mut WriteBatch,
        t: &TaskSpec,
        it: u32,
        loop_id: Option<String>,
        attempt: u32,
        e: TaskError,
        mut end: AttemptEnd,
    ) {
        // `retries` counts failed attempts only: one cancelled by the user or abandoned by a
        // dead process does not use up a retry.
        let failures = self.node(&t.id, it).map_or(0, |n| n.failures) + 1;
        let retry = e.retryable && failures <= t.retries;
        let delay = if retry {
            let policy = self.retry_policy(t);
            let seed = crate::retry::seed(&self.run_id, &t.id, it, failures);
            policy.delay(failures, seed, e.retry_after)
        } else {
            Duration::ZERO
        };
        if !delay.is_zero() {
            let key = (t.id.to_string(), it);
            self.backing_off.insert(key.clone());
            self.new_backoffs.push((key, delay));
        }
        let msg = if retry {
            let when = if delay.is_zero() {
                String::new()
            } else {
                format!(" in {:.1}s", delay.as_secs_f64())
            };
            format!(
                "{}; it will be tried again{when} (attempt {} of {})",
                e.message,
                failures + 1,
                t.retries + 1
            )
        } else {
            e.message.clone()
        };
        end.status = "failed";
        end.error = Some(e.message.clone());
        self.price(&mut end);
        self.spend(&t.id, &end.usage);
        let status = if retry {
            NodeStatus::Pending
        } else {
            NodeStatus::Failed
        };
        b.push(Write::Node(NodeRecord {
            node_id: t.id.to_string(),
            iteration: it,
            status,
            attempts: attempt,
            output_table: None,
            loop_id,
            last_error: Some(e.message.clone()),
        }));
        b.push(Write::AttemptEnd {
            node_id: t.id.to_string(),
            iteration: it,
            attempt,
            end,
        });
        let kind = if retry {
            EventKind::NodeRetrying {
                attempt,
                error: msg,
            }
        } else {
            EventKind::NodeFailed {
                attempt,
                error: e.message.clone(),
            }
        };
        b.push(Write::Event(Event::node(
            &self.run_id,
            &t.id,
            it,
            self.now,
            kind,
        )));
        if !retry {
            b.push(Write::State {
                key: "supervisor.last_error".into(),
                value: format!("node `{}`: {}", t.id, e.message),
            });
        }
        self.set_node(
            &t.id,
            it,
            NodeState {
                status,
                attempts: attempt,
                failures,
                last_error: Some(e.message),
            },
        );
    }

    /// Marks where the attempt's cost comes from: reported by the agent, else estimated from its
    /// tokens and model with the price catalog, else none (a model with no price).
    pub(super) fn price(&self, end: &mut AttemptEnd) {
        if end.usage.cost_usd.is_some() {
            end.cost_source = Some(CostSource::Reported);
            return;
        }
        let estimate = end
            .model
            .as_deref()
            .and_then(|m| self.prices.estimate(m, &end.usage));
        if let Some(cost) = estimate {
            end.usage.cost_usd = Some(cost);
            end.cost_source = Some(CostSource::Estimated);
        }
    }

    /// Counts a recorded attempt's usage toward its task's and the run's budgets.
    pub(crate) fn spend(&mut self, node_id: &str, usage: &Usage) {
        // An attempt that used nothing counts for nothing (`Spent::add`): no entry for it.
        if *usage == Usage::default() {
            return;
        }
        self.run_spent.add(usage);
        self.task_spent
            .entry(node_id.to_owned())
            .or_default()
            .add(usage);
    }

    /// The retry policy of `t`: its own, else the workflow's, else the engine's for agent tasks;
    /// compute tasks retry at once by default.
    pub(super) fn retry_policy(&self, t: &TaskSpec) -> RetryPolicy {
        t.retry_policy
            .clone()
            .or_else(|| self.workflow_retry_policy.clone())
            .unwrap_or_else(|| match t.exec {
                TaskExec::Agent(_) => self.agent_retry_policy.clone(),
                _ => RetryPolicy::immediate(),
            })
    }

    /// Records a stopped attempt: the attempt `cancelled` with `reason` and what it produced
    /// before it stopped (`result`: its real duration, transcript, session id, exit status and
    /// usage, and its own account of the stop), its node pending again (a later render that
    /// mounts it starts a new attempt).
    pub(super) fn on_cancelled(
        &mut self,
        b: &mut WriteBatch,
        (id, it): &NodeKey,
        loop_id: Option<String>,
        reason: &str,
        result: Option<AttemptResult>,
    ) {
        let (attempts, failures) = self
            .node(id, *it)
            .map_or((1, 0), |n| (n.attempts, n.failures));
        b.push(Write::Node(NodeRecord {
            node_id: id.clone(),
            iteration: *it,
            status: NodeStatus::Pending,
            attempts,
            output_table: None,
            loop_id,
            last_error: Some("cancelled".into()),
        }));
        let mut end = AttemptEnd {
            status: "cancelled",
            error: Some(reason.to_owned()),
            ..AttemptEnd::default()
        };
        let mut attempt = attempts;
        if let Some(r) = result {
            attempt = r.attempt;
            end.duration_ms = r.duration_ms;
            let (detail, resp) = match r.outcome {
                Err((e, resp)) => (Some(e.message), resp),
                Ok(AttemptOutput::Agent(resp)) => (None, Some(resp)),
                Ok(AttemptOutput::Value(_)) => (None, None),
            };
            if let Some(detail) = detail.filter(|d| d != "cancelled" && !d.is_empty()) {
                end.error = Some(format!("{reason}; {detail}"));
            }
            if let Some(resp) = resp {
                end.usage = resp.usage;
                end.session_id = resp.session_id;
                end.exit_code = resp.exit_code;
                end.model = resp.model;
                if let Some(text) = resp.transcript {
                    b.push(Write::Transcript {
                        node_id: id.clone(),
                        iteration: *it,
                        attempt,
                        text,
                    });
                }
            }
        }
        self.price(&mut end);
        self.spend(id, &end.usage);
        b.push(Write::AttemptEnd {
            node_id: id.clone(),
            iteration: *it,
            attempt,
            end,
        });
        self.set_node(
            id,
            *it,
            NodeState {
                status: NodeStatus::Pending,
                attempts,
                failures,
                last_error: Some("cancelled".into()),
            },
        );
    }

    /// The command that ends the run with `status`, carrying its writes.
    pub(super) fn finish(&self, status: RunStatus, error: Option<String>) -> Command {
        Command::Finish {
            batch: self.end_batch(status, error.as_deref()),
            status,
            error,
        }
    }

    /// The writes that end the run with `status`: the run row, its event, the supervisor keys.
    /// For `waiting-approval`, `error` says what the run waits for and is not stored as an error.
    pub(super) fn end_batch(&self, status: RunStatus, error: Option<&str>) -> WriteBatch {
        let mut b = WriteBatch::new(&self.run_id);
        if matches!(
            status,
            RunStatus::WaitingApproval | RunStatus::WaitingBudget
        ) {
            // A run parked for approval or a budget is not in error: `error` carries what it
            // waits for.
            let reason = error.unwrap_or_default().to_owned();
            // A budget's reason stays on the run row for `smithers status`.
            b.push(Write::RunStatus {
                status,
                error: (status == RunStatus::WaitingBudget).then(|| reason.clone()),
            });
            b.push(Write::Event(Event::run(
                &self.run_id,
                self.now,
                EventKind::RunWaiting {
                    reason: reason.clone(),
                },
            )));
            supervisor(
                &mut b,
                "idle",
                &if status == RunStatus::WaitingBudget {
                    format!("Run waiting for a budget raise: {reason}")
                } else {
                    format!("Run {reason}; `resume` continues after a decision")
                },
            );
            return b;
        }
        if status == RunStatus::Queued {
            // Waiting for a worker is no error: `error` says why it is queued.
            let reason = error.unwrap_or_default().to_owned();
            b.push(Write::RunStatus {
                status,
                error: None,
            });
            b.push(Write::Event(Event::run(
                &self.run_id,
                self.now,
                EventKind::RunQueued {
                    reason: reason.clone(),
                },
            )));
            supervisor(
                &mut b,
                "idle",
                &format!("Run queued for a worker: {reason}"),
            );
            return b;
        }
        b.push(Write::RunStatus {
            status,
            error: error.map(str::to_owned),
        });
        let (kind, sup, summary) = match status {
            RunStatus::Finished => (
                EventKind::RunFinished,
                "done",
                format!("Run finished: {} node(s)", self.finished),
            ),
            RunStatus::Cancelled => (
                EventKind::RunCancelled,
                "idle",
                "Run cancelled; resume continues it".to_owned(),
            ),
            _ => (
                EventKind::RunFailed {
                    error: error.unwrap_or_default().to_owned(),
                },
                "error",
                format!("Run failed: {}", error.unwrap_or("")),
            ),
        };
        b.push(Write::Event(Event::run(&self.run_id, self.now, kind)));
        supervisor(&mut b, sup, &summary);
        if let Some(e) = error {
            b.push(Write::State {
                key: "supervisor.last_error".into(),
                value: e.to_owned(),
            });
        }
        b
    }
}

/// The `supervisor.status` and `supervisor.summary` state keys (seed 002's contract).
pub(super) fn supervisor(b: &mut WriteBatch, status: &str, summary: &str) {
    b.push(Write::State {
        key: "supervisor.status".into(),
        value: status.into(),
    });
    b.push(Write::State {
        key: "supervisor.summary".into(),
        value: summary.into(),
    });
}
