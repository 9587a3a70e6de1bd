//! `Ctx`: what a workflow function reads while rendering. It is a read-only view of the run's
//! persisted state; rendering never does I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{FastMap, LoopState};
use crate::node::{Node, NodeKind};
use crate::output::Output;
use crate::reference::{LoopId, NodeRef};

/// The run state a render reads. Shared with the engine, which updates it after each persisted
/// output.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunSnapshot {
    pub(crate) run_id: String,
    /// node id → iteration → output JSON.
    pub(crate) outputs: FastMap<String, BTreeMap<u32, Value>>,
    /// loop id → loop state.
    pub(crate) loops: HashMap<String, LoopState>,
    /// node id → innermost enclosing loop id, as of the last render.
    pub(crate) node_loop: FastMap<String, String>,
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
    /// The loop ids this render read a counter of, checked against the rendered tree.
    loop_reads: Mutex<Vec<String>>,
    reads: Mutex<Reads>,
    /// The phase and step names this process was told to skip (`--skip-phase`).
    skip_phases: Arc<[String]>,
}

impl<I> Ctx<I> {
    pub(crate) fn new(input: Arc<I>, snap: Arc<RunSnapshot>) -> Self {
        Ctx {
            input,
            snap,
            state_writes: Arc::default(),
            loop_reads: Mutex::default(),
            reads: Mutex::default(),
            skip_phases: Arc::from(Vec::new()),
        }
    }

    /// The names to skip (see [`Ctx::skips`]).
    #[must_use]
    pub(crate) fn with_skip_phases(mut self, names: &[String]) -> Self {
        if !names.is_empty() {
            self.skip_phases = Arc::from(names);
        }
        self
    }

    /// The phase and step names this run is told to skip: `--skip-phase NAME` (repeatable) or
    /// `SMITHERS_SKIP_PHASES=a,b` on a workflow binary, [`EngineOptions::skip_phases`](crate::engine::EngineOptions::skip_phases)
    /// in code. The engine skips every `<Phase>` and `<Step>` of those names itself; read them
    /// here to skip other things by name (`skip_if={ctx.skips("refactor")}` on a task).
    pub fn skip_phases(&self) -> &[String] {
        &self.skip_phases
    }

    /// Whether `name` is one of [`Ctx::skip_phases`].
    pub fn skips(&self, name: &str) -> bool {
        self.skip_phases.iter().any(|s| s == name)
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

    /// The current iteration of a Ralph loop within its current pass: 0 before and during the
    /// first iteration, then 1, 2, ... (a nested loop starts again at 0 at each pass of its
    /// enclosing loop).
    ///
    /// Name the loop with the [`LoopRef`](crate::LoopRef) given to its `<Ralph id=..>` (a
    /// `<Ralph>` without `id` is [`LoopRef::DEFAULT`](crate::LoopRef::DEFAULT), id `ralph`).
    /// A loop that is neither in the rendered tree nor recorded in the run is an error: the
    /// render fails with [`Error::UnknownLoop`] naming the loops the tree has, instead of
    /// reading 0 forever.
    ///
    /// This is not the key of the loop's outputs: those are keyed by a counter that keeps
    /// growing across passes ([`TaskCtx::iteration`](crate::TaskCtx::iteration)); use
    /// [`Ctx::output_maybe`] and [`Ctx::latest`] to read outputs.
    ///
    /// Code written for `ctx.iteration()` (which read only a loop with id `ralph`) now fails to
    /// compile; pass the loop's handle: `ctx.iteration(LoopRef::DEFAULT)` for a loop without id.
    pub fn iteration(&self, loop_ref: impl LoopId) -> u32 {
        let id = loop_ref.loop_id();
        self.loop_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_owned());
        {
            let mut r = self.reads();
            if !r.loops.contains(id) {
                r.loops.insert(id.to_owned());
            }
        }
        self.snap
            .loops
            .get(id)
            .map_or(0, |l| l.iteration - l.pass_start)
    }

    /// The current iteration of the loop with this id.
    #[deprecated(note = "use `ctx.iteration(LOOP)` with the `LoopRef` given to `<Ralph id=LOOP>`")]
    pub fn loop_iteration(&self, loop_id: &str) -> u32 {
        self.iteration(loop_id)
    }

    /// Checks that every loop this render read a counter of exists: rendered in `tree` (mounted
    /// or not) or recorded in the run.
    pub(crate) fn check_loop_reads(&self, tree: &Node) -> Result<()> {
        let reads = std::mem::take(&mut *self.loop_reads.lock().unwrap_or_else(|e| e.into_inner()));
        if reads.is_empty() {
            return Ok(());
        }
        let mut rendered = Vec::new();
        loop_ids(tree, &mut rendered);
        let unknown = reads.iter().find(|id| {
            !rendered.iter().any(|r| r == *id) && !self.snap.loops.contains_key(id.as_str())
        });
        match unknown {
            None => Ok(()),
            Some(id) => Err(Error::UnknownLoop {
                loop_id: id.clone(),
                known: if rendered.is_empty() {
                    "the tree has no `<Ralph>`".to_owned()
                } else {
                    let list: Vec<String> = rendered.iter().map(|r| format!("`{r}`")).collect();
                    format!("the tree's loops are {}", list.join(", "))
                },
            }),
        }
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

/// The ids of every `<Ralph>` in `tree`, mounted or not, in tree order.
fn loop_ids(node: &Node, out: &mut Vec<String>) {
    if let NodeKind::Ralph(r) = &node.kind {
        if !out.contains(&r.id) {
            out.push(r.id.clone());
        }
    }
    for c in &node.children {
        loop_ids(c, out);
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
