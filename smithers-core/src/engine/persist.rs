//! Committing batches and cancelling every attempt (`Command::CancelAll`).

use std::collections::HashMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::error::Result;
use crate::events::Event;
use crate::machine::AttemptResult;
use crate::model::NodeKey;
use crate::store::{FenceToken, WriteBatch};

impl<I> Engine<I>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Carries out `Command::CancelAll`: every attempt is told to stop and given a moment to
    /// end its processes; then what is left is aborted and `b` recorded as well as possible.
    pub(super) async fn cancel_all(
        &self,
        fence: &FenceToken,
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
        if let Err(e) = self.commit(fence, b).await {
            tracing::error!(error = %e, "could not record cancelled attempts");
        }
    }

    /// Commits `b` in one transaction under the driver's fencing token (refused with
    /// `LeaseLost`, writing nothing, once another process took the run over), then delivers its
    /// events. The batch moves to the store whole (outputs and transcripts are never copied);
    /// only its events are kept back for the listeners.
    pub(super) async fn commit(&self, fence: &FenceToken, b: WriteBatch) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let events: Vec<Event> = b.events().cloned().collect();
        self.store.write(b.fenced(fence)).await?;
        for e in &events {
            e.trace();
            if let Some(l) = &self.options.on_event {
                l(e);
            }
        }
        Ok(())
    }
}
