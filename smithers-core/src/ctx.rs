//! `Ctx`: what a workflow function reads while rendering. It is a read-only view of the run's
//! persisted state; rendering never does I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::LoopState;
use crate::output::Output;
use crate::reference::NodeRef;

/// The run state a render reads. Shared with the engine, which updates it after each persisted
/// output.
#[derive(Clone, Debug, Default)]
pub struct RunSnapshot {
    pub(crate) run_id: String,
    /// node id → iteration → output JSON.
    pub(crate) outputs: HashMap<String, BTreeMap<u32, Value>>,
    /// loop id → loop state.
    pub(crate) loops: HashMap<String, LoopState>,
    /// node id → innermost enclosing loop id, as of the last render.
    pub(crate) node_loop: HashMap<String, String>,
    /// The `state` table.
    pub(crate) state: HashMap<String, String>,
}

impl RunSnapshot {
    /// The iteration a node's output is keyed by now: its innermost loop's counter.
    pub(crate) fn current_iteration(&self, node_id: &str) -> u32 {
        self.node_loop
            .get(node_id)
            .and_then(|l| self.loops.get(l))
            .map_or(0, |l| l.iteration)
    }
}

/// What one render read, so the engine knows which changes can alter the tree: an output that
/// lands where the render did not look leaves the tree as it was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    /// `(node, iteration)` outputs read (present or not) through `output`/`output_maybe`.
    pub(crate) outputs: HashSet<(String, u32)>,
    /// Nodes read in every iteration: `latest`, `outputs`, `iteration_count`.
    pub(crate) all_iterations: HashSet<String>,
    /// Loop counters read.
    pub(crate) loops: HashSet<String>,
    /// `state` keys read.
    pub(crate) state: HashSet<String>,
}

impl Reads {
    /// Whether the output of `(node, iteration)` was read by the render.
    pub(crate) fn read_output(&self, node: &str, iteration: u32) -> bool {
        self.all_iterations.contains(node) || self.outputs.contains(&(node.to_owned(), iteration))
    }
}

/// The context of a render: the workflow input and read access to persisted outputs.
pub struct Ctx<I> {
    input: Arc<I>,
    snap: Arc<RunSnapshot>,
    state_writes: Arc<Mutex<Vec<(String, String)>>>,
    reads: Mutex<Reads>,
}

impl<I> Ctx<I> {
    pub(crate) fn new(input: Arc<I>, snap: Arc<RunSnapshot>) -> Self {
        Ctx {
            input,
            snap,
            state_writes: Arc::default(),
            reads: Mutex::default(),
        }
    }

    /// A context over no persisted state (for `graph` before a run, and for tests).
    pub fn empty(input: I) -> Self {
        Ctx::new(Arc::new(input), Arc::new(RunSnapshot::default()))
    }

    pub(crate) fn take_state_writes(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.state_writes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// What the render read so far.
    pub(crate) fn take_reads(&self) -> Reads {
        std::mem::take(&mut *self.reads())
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, Reads> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a read of `(id, it)` and of the loop counter that decided `it`.
    fn note_output(&self, id: &str, it: u32) {
        let mut r = self.reads();
        if let Some(l) = self.snap.node_loop.get(id) {
            if !r.loops.contains(l) {
                r.loops.insert(l.clone());
            }
        }
        if !r.outputs.contains(&(id.to_owned(), it)) {
            r.outputs.insert((id.to_owned(), it));
        }
    }

    fn note_all(&self, id: &str) {
        let mut r = self.reads();
        if !r.all_iterations.contains(id) {
            r.all_iterations.insert(id.to_owned());
        }
    }

    /// The workflow input.
    pub fn input(&self) -> &I {
        &self.input
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.snap.run_id
    }

    /// The output of `node` in its current iteration; an error if it has none yet.
    pub fn output<T: Output>(&self, node: impl NodeRef<T>) -> Result<T> {
        let id = node.node_id();
        let it = self.snap.current_iteration(id);
        self.note_output(id, it);
        self.read(id, it)?.ok_or_else(|| Error::MissingOutput {
            node: id.to_owned(),
            iteration: it,
        })
    }

    /// The output of `node` in its current iteration, if any. A stored output that cannot be read
    /// as `T` is treated as absent (and logged); use [`Ctx::output`] to see the error.
    pub fn output_maybe<T: Output>(&self, node: impl NodeRef<T>) -> Option<T> {
        let id = node.node_id();
        let it = self.snap.current_iteration(id);
        self.note_output(id, it);
        self.read_lenient(id, it)
    }

    /// The output of `node` in its highest iteration that has one.
    pub fn latest<T: Output>(&self, node: impl NodeRef<T>) -> Option<T> {
        let id = node.node_id();
        self.note_all(id);
        let (&it, _) = self.snap.outputs.get(id)?.iter().next_back()?;
        self.read_lenient(id, it)
    }

    /// All outputs of `node`, by iteration, lowest first.
    pub fn outputs<T: Output>(&self, node: impl NodeRef<T>) -> Vec<T> {
        let id = node.node_id();
        self.note_all(id);
        self.snap
            .outputs
            .get(id)
            .map(|m| {
                m.keys()
                    .filter_map(|&it| self.read_lenient(id, it))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many iterations `node` has an output for.
    pub fn iteration_count<T: Output>(&self, node: impl NodeRef<T>) -> u32 {
        self.note_all(node.node_id());
        self.snap
            .outputs
            .get(node.node_id())
            .map_or(0, |m| m.len() as u32)
    }

    /// The current iteration of the loop with id `ralph` (the default loop id), or 0.
    pub fn iteration(&self) -> u32 {
        self.loop_iteration("ralph")
    }

    /// The current iteration of the loop with this id, or 0 before it started.
    pub fn loop_iteration(&self, loop_id: &str) -> u32 {
        {
            let mut r = self.reads();
            if !r.loops.contains(loop_id) {
                r.loops.insert(loop_id.to_owned());
            }
        }
        self.snap
            .loops
            .get(loop_id)
            .map_or(0, |l| l.iteration - l.pass_start)
    }

    /// The run's key-value `state` table.
    pub fn state(&self) -> StateView<'_> {
        StateView {
            snap: &self.snap,
            writes: &self.state_writes,
            reads: &self.reads,
        }
    }

    fn read<T: Output>(&self, id: &str, it: u32) -> Result<Option<T>> {
        match self.snap.outputs.get(id).and_then(|m| m.get(&it)) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| Error::OutputType {
                    node: id.to_owned(),
                    iteration: it,
                    type_name: std::any::type_name::<T>().to_owned(),
                    message: e.to_string(),
                }),
        }
    }

    fn read_lenient<T: Output>(&self, id: &str, it: u32) -> Option<T> {
        match self.read(id, it) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "output read as the wrong type");
                None
            }
        }
    }
}

/// Read access to the `state` table during a render; writes are persisted after the render.
pub struct StateView<'a> {
    snap: &'a RunSnapshot,
    writes: &'a Mutex<Vec<(String, String)>>,
    reads: &'a Mutex<Reads>,
}

impl StateView<'_> {
    /// The value of `key`, as of the start of this render.
    pub fn get(&self, key: &str) -> Option<&str> {
        {
            let mut r = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            if !r.state.contains(key) {
                r.state.insert(key.to_owned());
            }
        }
        self.snap.state.get(key).map(String::as_str)
    }

    /// Sets `key`; persisted after this render, visible from the next one.
    pub fn set(&self, key: impl Into<String>, value: impl Into<String>) {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.into(), value.into()));
    }
}
