//! Starting attempts, running their bodies (compute or agent) with timeout and cancellation, and
//! turning their results into persisted outcomes.

use super::*;

/// What an attempt produced.
pub(super) struct AttemptResult {
    pub(super) key: NodeKey,
    pub(super) attempt: u32,
    pub(super) started: Instant,
    pub(super) outcome:
        std::result::Result<AgentResponseOrValue, (TaskError, Option<AgentResponse>)>,
}

pub(super) enum AgentResponseOrValue {
    Value(Value),
    Agent(AgentResponse),
}

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub(super) async fn ensure_table(&self, st: &mut RunState, task: &TaskSpec) -> Result<()> {
        if st.tables.insert(task.output.table) {
            if let Err(e) = self.store.ensure_output_table(task.output).await {
                st.tables.remove(task.output.table);
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) async fn complete_static(
        &self,
        st: &mut RunState,
        b: &mut WriteBatch,
        r: &Runnable,
        v: std::result::Result<Value, String>,
        source: Source,
    ) -> Result<()> {
        let t = &r.task;
        let attempt = st.attempts(&t.id, r.iteration) + 1;
        b.push(Write::AttemptStart {
            node_id: t.id.clone(),
            iteration: r.iteration,
            attempt,
            agent: match source {
                Source::Static => None,
                Source::Cache => Some("cache".to_owned()),
            },
            owner: st.owner.clone(),
        });
        let validated = v.and_then(|v| {
            t.output.check(&v).map_err(|e| match source {
                Source::Static => format!("static value of `{}`: {e}", t.id),
                Source::Cache => format!("cached output of `{}`: {e}", t.id),
            })
        });
        match validated {
            Ok(value) => st.on_success(
                b,
                t,
                r.iteration,
                r.loop_id.clone(),
                attempt,
                value,
                AttemptEnd::default(),
            ),
            Err(e) => st.on_failure(
                b,
                t,
                r.iteration,
                r.loop_id.clone(),
                attempt,
                TaskError::terminal(e),
                AttemptEnd::default(),
            ),
        }
        Ok(())
    }

    pub(super) async fn start(
        &self,
        st: &mut RunState,
        join: &mut JoinSet<AttemptResult>,
        r: Runnable,
        cache_key: Option<String>,
    ) -> Result<()> {
        let t = r.task.clone();
        let attempt = st.attempts(&t.id, r.iteration) + 1;
        let agent_name = match &t.exec {
            TaskExec::Agent(a) => Some(a.name().to_owned()),
            _ => None,
        };
        let mut b = WriteBatch::new(&st.run_id);
        b.push(Write::Node(NodeRecord {
            node_id: t.id.clone(),
            iteration: r.iteration,
            status: NodeStatus::Running,
            attempts: attempt,
            output_table: None,
            loop_id: r.loop_id.clone(),
            last_error: None,
        }));
        b.push(Write::AttemptStart {
            node_id: t.id.clone(),
            iteration: r.iteration,
            attempt,
            agent: agent_name,
            owner: st.owner.clone(),
        });
        b.push(Write::Event(Event::node(
            &st.run_id,
            &t.id,
            r.iteration,
            EventKind::NodeStarted { attempt },
        )));
        self.commit(b).await?;
        let last_error = st
            .node(&t.id, r.iteration)
            .and_then(|n| n.last_error.clone());
        st.set_node(
            &t.id,
            r.iteration,
            NodeState {
                status: NodeStatus::Running,
                attempts: attempt,
                failures: st.node(&t.id, r.iteration).map_or(0, |n| n.failures),
                last_error: last_error.clone(),
            },
        );

        let cancel = self.options.cancel.child_token();
        let key = (t.id.clone(), r.iteration);
        st.running.insert(
            key.clone(),
            Running {
                task: t.clone(),
                loop_id: r.loop_id,
                cancel: cancel.clone(),
                unmounted: false,
                cache_key,
            },
        );
        let progress = self.progress_sink(&st.run_id, &t.id, r.iteration, &st.progress_tx);
        let run_id = st.run_id.clone();
        let vcs = match &t.exec {
            TaskExec::Agent(agent) if self.options.vcs_snapshots && agent.edits_files() => agent
                .cwd()
                .or_else(|| std::env::current_dir().ok())
                .map(|dir| crate::vcs::AttemptSnapshots {
                    store: self.store.clone(),
                    run_id: run_id.clone(),
                    node_id: t.id.clone(),
                    iteration: r.iteration,
                    attempt,
                    dir,
                }),
            _ => None,
        };
        join.spawn(async move {
            let started = Instant::now();
            let input = AttemptInput {
                run_id,
                iteration: r.iteration,
                attempt,
                last_error,
                cancel,
                progress,
                vcs,
            };
            let outcome = run_attempt(&t, input).await;
            AttemptResult {
                key,
                attempt,
                started,
                outcome,
            }
        });
        Ok(())
    }

    pub(super) fn progress_sink(
        &self,
        run_id: &str,
        node_id: &str,
        it: u32,
        progress_tx: &Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    ) -> ProgressSink {
        let (run_id, node_id) = (run_id.to_owned(), node_id.to_owned());
        let listener = self.options.on_event.clone();
        let persist = progress_tx.clone();
        ProgressSink::new(move |stream, line| {
            let e = Event::node(
                &run_id,
                &node_id,
                it,
                EventKind::NodeOutput {
                    stream: stream.into(),
                    line: trim_line(line),
                },
            );
            e.trace();
            if let Some(l) = &listener {
                l(&e);
            }
            if let Some(tx) = &persist {
                let _ = tx.send(e);
            }
        })
    }

    /// Persists the end of an attempt: output + node + attempt + events in one transaction.
    pub(super) async fn complete(&self, st: &mut RunState, res: AttemptResult) -> Result<()> {
        if self.options.cancel.is_cancelled() && res.outcome.is_err() {
            // Ended because the run is being cancelled: `cancel_all` records it as cancelled.
            return Ok(());
        }
        let Some(running) = st.running.remove(&res.key) else {
            return Ok(());
        };
        if running.unmounted {
            let mut b = WriteBatch::new(&st.run_id);
            st.on_cancelled(
                &mut b,
                &res.key,
                running.loop_id,
                "a re-render no longer mounts this task (its branch or loop moved on)",
            );
            return self.commit(b).await;
        }
        let t = running.task;
        let (id, it) = (res.key.0.clone(), res.key.1);
        let mut end = AttemptEnd {
            duration_ms: res.started.elapsed().as_millis() as i64,
            ..AttemptEnd::default()
        };
        let mut b = WriteBatch::new(&st.run_id);
        let (value, transcript) = match res.outcome {
            Ok(AgentResponseOrValue::Value(v)) => (Ok(v), None),
            Ok(AgentResponseOrValue::Agent(resp)) => {
                end.usage = resp.usage.clone();
                end.session_id = resp.session_id.clone();
                end.exit_code = resp.exit_code;
                end.model = resp.model.clone();
                let v = extract_output(&t, &resp);
                (v, resp.transcript)
            }
            Err((e, resp)) => {
                if let Some(r) = &resp {
                    end.usage = r.usage.clone();
                    end.exit_code = r.exit_code;
                }
                (Err(e), resp.and_then(|r| r.transcript))
            }
        };
        if let Some(text) = transcript {
            b.push(Write::Transcript {
                node_id: id.clone(),
                iteration: it,
                attempt: res.attempt,
                text,
            });
        }
        let validated = value.and_then(|v| {
            t.output.check(&v).map_err(|e| {
                TaskError::retryable(format!(
                    "node `{id}` returned output that does not match `{}`: {e}",
                    t.output.short_name()
                ))
            })
        });
        match validated {
            Ok(v) => {
                if let Some(key) = running.cache_key {
                    b.push(Write::CachePut {
                        key,
                        workflow: st.workflow.clone(),
                        node_id: t.id.clone(),
                        table: t.output.table.to_owned(),
                        value: v.clone(),
                    });
                }
                st.on_success(&mut b, &t, it, running.loop_id, res.attempt, v, end)
            }
            Err(e) => st.on_failure(&mut b, &t, it, running.loop_id, res.attempt, e, end),
        }
        self.commit(b).await
    }
}

/// Picks the output out of an agent's reply: its native structured output if it validates,
/// else the last JSON object in the text that validates, else the last one at all.
pub(super) fn extract_output(
    t: &TaskSpec,
    resp: &AgentResponse,
) -> std::result::Result<Value, TaskError> {
    if let Some(v) = &resp.json {
        if (t.output.validate)(v).is_ok() {
            return Ok(v.clone());
        }
    }
    let validate = t.output.validate;
    if let Some(v) = crate::prompt::extract_json_with(&resp.text, |v| validate(v).is_ok()) {
        return Ok(v);
    }
    match resp
        .json
        .clone()
        .or_else(|| crate::prompt::extract_json(&resp.text))
    {
        Some(v) => Ok(v),
        None => Err(TaskError::retryable(format!(
            "node `{}`: the agent's reply has no JSON object for `{}` (reply began: {:?})",
            t.id,
            t.output.short_name(),
            resp.text.chars().take(200).collect::<String>()
        ))),
    }
}

/// Everything one attempt's body needs besides its task.
pub(super) struct AttemptInput {
    pub(super) run_id: String,
    pub(super) iteration: u32,
    pub(super) attempt: u32,
    /// The previous attempt's error, appended to an agent's prompt.
    pub(super) last_error: Option<String>,
    pub(super) cancel: CancellationToken,
    pub(super) progress: ProgressSink,
    /// Working-copy snapshots around a file-editing agent.
    pub(super) vcs: Option<crate::vcs::AttemptSnapshots>,
}

pub(super) async fn run_attempt(
    t: &TaskSpec,
    input: AttemptInput,
) -> std::result::Result<AgentResponseOrValue, (TaskError, Option<AgentResponse>)> {
    let AttemptInput {
        run_id,
        iteration,
        attempt,
        last_error,
        cancel,
        progress,
        vcs,
    } = input;
    let fut = async {
        match &t.exec {
            TaskExec::Compute(f) => {
                let ctx = TaskCtx {
                    run_id: run_id.clone(),
                    node_id: t.id.clone(),
                    iteration,
                    attempt,
                    cancel: cancel.clone(),
                    progress: progress.clone(),
                };
                f(ctx)
                    .await
                    .map(AgentResponseOrValue::Value)
                    .map_err(|e| (e, None))
            }
            TaskExec::Agent(agent) => {
                let schema = (t.output.schema)();
                let req = AgentRequest {
                    prompt: crate::prompt::assemble(&t.prompt, &schema, last_error.as_deref()),
                    task_prompt: t.prompt.clone(),
                    output_schema: schema,
                    output_type: t.output.short_name().to_owned(),
                    run_id: run_id.clone(),
                    node_id: t.id.clone(),
                    iteration,
                    attempt,
                    timeout: t.timeout,
                    cancel: cancel.clone(),
                    progress: progress.clone(),
                };
                if let Some(v) = &vcs {
                    v.take(true).await;
                }
                let result = agent.generate(req).await;
                if let Some(v) = &vcs {
                    v.take(false).await;
                }
                result.map(AgentResponseOrValue::Agent).map_err(|e| {
                    let resp = AgentResponse {
                        usage: e.usage,
                        transcript: e.transcript,
                        exit_code: e.exit_code,
                        ..AgentResponse::default()
                    };
                    (e.error, Some(resp))
                })
            }
            TaskExec::Value(v) => v
                .clone()
                .map(AgentResponseOrValue::Value)
                .map_err(|e| (TaskError::terminal(e), None)),
            TaskExec::Missing => Err((
                TaskError::terminal(format!(
                    "task `{}` has nothing to run: give it `agent=`, `run=` or `value=`",
                    t.id
                )),
                None,
            )),
        }
    };
    let cancelled = cancel.clone();
    tokio::select! {
        r = async {
            match t.timeout {
                Some(d) => match tokio::time::timeout(d, fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        cancel.cancel();
                        Err((TaskError::retryable(format!("timed out after {d:?}")), None))
                    }
                },
                None => fut.await,
            }
        } => r,
        _ = cancelled.cancelled() => Err((TaskError::terminal("cancelled"), None)),
    }
}

/// Progress lines are kept for `logs`, but a tool can print megabytes on one line: keep the head.
const MAX_PROGRESS_LINE: usize = 4000;

fn trim_line(line: &str) -> String {
    if line.len() <= MAX_PROGRESS_LINE {
        return line.to_owned();
    }
    let mut end = MAX_PROGRESS_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &line[..end], line.len())
}

/// Where an output that needs no attempt body comes from.
#[derive(Clone, Copy)]
pub(super) enum Source {
    /// A `value={..}` task.
    Static,
    /// A `<Workflow cache>` hit.
    Cache,
}

/// The cache key of an agent task: what must match for an earlier output to be reused.
pub(super) fn cache_key(workflow: &str, t: &TaskSpec, agent: &dyn crate::agent::Agent) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        workflow,
        &t.id,
        &t.prompt,
        &t.output.signature(),
        &agent.signature(),
    ] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}
