//! The write batches of the engine: success, failure, cancellation and the end of a run.

use super::*;

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    pub(super) async fn cancel_all(&self, st: &mut RunState, join: &mut JoinSet<AttemptResult>) {
        for r in st.running.values() {
            r.cancel.cancel();
        }
        // Give attempts a moment to stop their processes, then abort what is left.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while join.join_next().await.is_some() {}
        })
        .await;
        join.abort_all();
        let mut b = WriteBatch::new(&st.run_id);
        let running: Vec<_> = st.running.drain().collect();
        for (key, r) in running {
            st.on_cancelled(&mut b, &key, r.loop_id, "the run was cancelled");
        }
        if let Err(e) = self.commit(b).await {
            tracing::error!(error = %e, "could not record cancelled attempts");
        }
    }

    pub(super) async fn finish(
        &self,
        st: &mut RunState,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<RunReport> {
        let mut b = WriteBatch::new(&st.run_id);
        if status == RunStatus::WaitingApproval {
            // A run parked for approval is not in error: `error` carries what it waits for.
            let reason = error.clone().unwrap_or_default();
            b.push(Write::RunStatus {
                status,
                error: None,
            });
            b.push(Write::Event(Event::run(
                &st.run_id,
                EventKind::RunWaiting {
                    reason: reason.clone(),
                },
            )));
            supervisor(
                &mut b,
                "idle",
                &format!("Run {reason}; `resume` continues after a decision"),
            );
            self.commit(b).await?;
            return Ok(RunReport {
                run_id: st.run_id.clone(),
                status,
                error,
                finished_nodes: st.finished,
            });
        }
        b.push(Write::RunStatus {
            status,
            error: error.clone(),
        });
        let (kind, sup, summary) = match status {
            RunStatus::Finished => (
                EventKind::RunFinished,
                "done",
                format!("Run finished: {} node(s)", st.finished),
            ),
            RunStatus::Cancelled => (
                EventKind::RunCancelled,
                "idle",
                "Run cancelled; resume continues it".to_owned(),
            ),
            _ => (
                EventKind::RunFailed {
                    error: error.clone().unwrap_or_default(),
                },
                "error",
                format!("Run failed: {}", error.as_deref().unwrap_or("")),
            ),
        };
        b.push(Write::Event(Event::run(&st.run_id, kind)));
        supervisor(&mut b, sup, &summary);
        if let Some(e) = &error {
            b.push(Write::State {
                key: "supervisor.last_error".into(),
                value: e.clone(),
            });
        }
        self.commit(b).await?;
        Ok(RunReport {
            run_id: st.run_id.clone(),
            status,
            error,
            finished_nodes: st.finished,
        })
    }

    pub(super) async fn commit(&self, b: WriteBatch) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        self.store.write(b.clone()).await?;
        self.deliver(&b);
        Ok(())
    }

    pub(super) fn deliver(&self, b: &WriteBatch) {
        for e in b.events() {
            e.trace();
            if let Some(l) = &self.options.on_event {
                l(e);
            }
        }
    }
}
