//! Committing batches, stopping every attempt (`Command::StopAll`) and ending a run.

use super::*;

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Carries out `Command::StopAll`: every attempt is told to stop and given a moment to end
    /// its processes and return what it produced; what is left is aborted, with a result made
    /// up from its real duration.
    pub(super) async fn stop_all(
        &self,
        join: &mut JoinSet<AttemptResult>,
        handles: &mut HashMap<NodeKey, AttemptHandle>,
    ) -> Vec<AttemptResult> {
        for h in handles.values() {
            h.cancel.cancel();
        }
        let mut results = Vec::new();
        let _ = tokio::time::timeout(attempt::STOP_GRACE + Duration::from_secs(1), async {
            while let Some(done) = join.join_next().await {
                if let Ok(r) = done {
                    handles.remove(&r.key);
                    results.push(r);
                }
            }
        })
        .await;
        join.abort_all();
        for (key, h) in handles.drain() {
            results.push(AttemptResult {
                key,
                attempt: h.attempt,
                duration_ms: h.started.elapsed().as_millis() as i64,
                outcome: Err((
                    TaskError::terminal(format!(
                        "did not stop within {:?} of being told to; its task was aborted",
                        attempt::STOP_GRACE
                    )),
                    None,
                )),
            });
        }
        results
    }

    pub(super) async fn finish(
        &self,
        st: &mut RunState,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<RunReport> {
        self.commit(st, st.end_batch(status, error.as_deref()))
            .await?;
        Ok(RunReport {
            run_id: st.run_id.clone(),
            status,
            error,
            finished_nodes: st.finished,
        })
    }

    /// Commits `b` under the driver's fencing token: refused with `LeaseLost`, writing nothing,
    /// once another process took the run over.
    pub(super) async fn commit(&self, st: &RunState, b: WriteBatch) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        self.store.write(b.clone().fenced(&st.fence)).await?;
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
