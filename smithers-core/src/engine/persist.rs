//! Committing batches and stopping every attempt (`Command::StopAll`).

use std::collections::HashMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinSet;

use super::attempt::{self, AttemptHandle};
use super::Engine;
use crate::error::{Result, TaskError};
use crate::events::Event;
use crate::machine::AttemptResult;
use crate::model::NodeKey;
use crate::store::{FenceToken, WriteBatch};

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
                // Only attempts still this driver's: the wait of one left to the workers
                // (`leave_remote`) may have ended before it was dropped.
                if let Ok(r) = done {
                    if handles.remove(&r.key).is_some() {
                        results.push(r);
                    }
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
        self.deliver(&events);
        Ok(())
    }

    /// Hands committed events to the trace and the listener.
    pub(super) fn deliver(&self, events: &[Event]) {
        for e in events {
            e.trace();
            if let Some(l) = &self.options.on_event {
                l(e);
            }
        }
    }
}
