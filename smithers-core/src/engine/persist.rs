//! Committing batches, cancelling every attempt (`Command::CancelAll`) and ending a run.

use super::*;

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Carries out `Command::CancelAll`: every attempt is told to stop and given a moment to
    /// end its processes; then what is left is aborted and `b` recorded as well as possible.
    pub(super) async fn cancel_all(
        &self,
        st: &RunState,
        join: &mut JoinSet<AttemptResult>,
        tokens: &mut HashMap<NodeKey, CancellationToken>,
        b: WriteBatch,
    ) {
        for (_, t) in tokens.drain() {
            t.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while join.join_next().await.is_some() {}
        })
        .await;
        join.abort_all();
        if let Err(e) = self.commit(st, b).await {
            tracing::error!(error = %e, "could not record cancelled attempts");
        }
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
