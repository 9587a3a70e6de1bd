//! The node tree a workflow function renders, and the typed builders `workflow!` expands to.
//!
//! Every built-in tag is a builder here: `<Task id=A retries=2>"..."</Task>` becomes
//! `Task::<_>::new().id(A).retries(2).prompt("...").build()`. Rendering builds a fresh tree each
//! time; the tree is plain data with no I/O.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::agent::{IntoAgent, SharedAgent};
use crate::error::TaskError;
use crate::output::{Output, OutputInfo};
use crate::reference::Ref;
use crate::task_ctx::TaskCtx;

/// One node of a rendered workflow tree.
#[derive(Clone)]
pub struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) children: Vec<Node>,
}

/// What a node is, with its props.
#[derive(Clone)]
#[non_exhaustive]
pub enum NodeKind {
    /// `<Workflow>`: the root; children run in sequence.
    Workflow(WorkflowProps),
    /// `<Sequence>`: children in order.
    Sequence(GroupProps),
    /// `<Parallel>`: children at once, bounded by `max_concurrency`.
    Parallel(GroupProps),
    /// `<Ralph>`: children repeated until `until` or `max_iterations`.
    Ralph(RalphProps),
    /// `<Branch if={c}>`: only the chosen child is mounted (children: then, else).
    Branch(BranchProps),
    /// `<Phase name>`: a named group of steps; phases run in declaration order.
    Phase(NamedProps),
    /// `<Step name>`: a named group of tasks, run in order.
    Step(NamedProps),
    /// `<Task>`: one unit of work with a typed output.
    Task(Arc<TaskSpec>),
    /// Several nodes spliced in place (a component returning many nodes).
    Fragment,
}

/// Props of `<Workflow>`.
#[derive(Clone, Debug, Default)]
pub struct WorkflowProps {
    /// Workflow name.
    pub name: String,
    /// Reuse outputs from earlier runs when inputs match.
    pub cache: bool,
    /// Run-wide limit of tasks running at once.
    pub max_concurrency: Option<usize>,
    /// How long tasks without their own `retry_policy` wait between attempts.
    pub retry_policy: Option<crate::retry::RetryPolicy>,
    /// What the whole run may spend.
    pub budget: crate::budget::Budget,
    /// What happens when a budget (the run's or a task's) is exceeded.
    pub on_budget: crate::budget::OnBudget,
}

/// Props of `<Sequence>` and `<Parallel>`.
#[derive(Clone, Debug, Default)]
pub struct GroupProps {
    /// Skip the whole group.
    pub skip_if: bool,
    /// Tasks of this group running at once (Parallel only).
    pub max_concurrency: Option<usize>,
    /// Display label.
    pub label: Option<String>,
}

/// What a Ralph loop does when it reaches `max_iterations` with `until` still false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnMaxReached {
    /// The loop completes; the last iteration's outputs stand.
    #[default]
    ReturnLast,
    /// The run fails.
    Fail,
}

/// Props of `<Ralph>`.
#[derive(Clone, Debug)]
pub struct RalphProps {
    /// Loop id (its counter is persisted under it). Defaults to `ralph`.
    pub id: String,
    /// Stop condition, evaluated at each render.
    pub until: bool,
    /// Maximum iterations of one pass of the loop.
    pub max_iterations: u32,
    /// What to do when the limit is reached.
    pub on_max_reached: OnMaxReached,
    /// Skip the loop.
    pub skip_if: bool,
}

/// Props of `<Branch>`.
#[derive(Clone, Debug, Default)]
pub struct BranchProps {
    /// The condition: `true` mounts the first child, `false` the second (if any).
    pub cond: bool,
}

/// Props of `<Phase>` and `<Step>`.
#[derive(Clone, Debug, Default)]
pub struct NamedProps {
    /// Name, unique within the workflow.
    pub name: String,
    /// Skip it.
    pub skip_if: bool,
    /// Called once when it starts, and once when it completes.
    pub hooks: GroupHooks,
}

/// What a phase or step hook can do: read where it is and set `state` keys, which are persisted
/// in the same transaction that records the transition.
pub struct HookCtx<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) state: Vec<(String, String)>,
}

impl HookCtx<'_> {
    /// The run.
    pub fn run_id(&self) -> &str {
        self.run_id
    }
    /// The phase or step name.
    pub fn name(&self) -> &str {
        self.name
    }
    /// Sets a key of the `state` table.
    pub fn set_state(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.state.push((key.into(), value.into()));
    }
}

/// A phase or step hook.
pub type Hook = Arc<dyn Fn(&mut HookCtx<'_>) + Send + Sync>;

/// The `on_start` and `on_complete` hooks of a phase or step. Hooks run in the engine, once per
/// transition (not again on resume), never during a render.
#[derive(Clone, Default)]
pub struct GroupHooks {
    /// Called when it starts.
    pub on_start: Option<Hook>,
    /// Called when it completes.
    pub on_complete: Option<Hook>,
}

impl fmt::Debug for GroupHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupHooks")
            .field("on_start", &self.on_start.is_some())
            .field("on_complete", &self.on_complete.is_some())
            .finish()
    }
}

/// A compute task's body.
pub type ComputeFn =
    Arc<dyn Fn(TaskCtx) -> BoxFuture<'static, Result<Value, TaskError>> + Send + Sync>;

/// A static output value, serialised when its task runs (not at every render).
#[derive(Clone)]
pub struct StaticValue(Arc<dyn Fn() -> Result<Value, String> + Send + Sync>);

impl StaticValue {
    /// A value of any serialisable type.
    pub fn new<T: serde::Serialize + Send + Sync + 'static>(value: T) -> Self {
        StaticValue(Arc::new(move || {
            serde_json::to_value(&value).map_err(|e| e.to_string())
        }))
    }

    /// The value as JSON, or why it cannot be serialised.
    pub fn to_json(&self) -> Result<Value, String> {
        (self.0)()
    }
}

/// How a task produces its output.
#[derive(Clone)]
pub enum TaskExec {
    /// An agent answers the prompt.
    Agent(SharedAgent),
    /// A Rust closure computes the output.
    Compute(ComputeFn),
    /// A static value, serialised when the task runs.
    Value(StaticValue),
    /// Nothing given: an error at run time naming the task.
    Missing,
}

/// A task as the engine sees it.
#[derive(Clone)]
pub struct TaskSpec {
    /// Unique id within the frame: borrowed for a literal or `Ref` id (no allocation per render),
    /// owned for a computed one.
    pub id: Cow<'static, str>,
    /// Output type.
    pub output: OutputInfo,
    /// How it runs.
    pub exec: TaskExec,
    /// The prompt (children text), for agent tasks.
    pub prompt: String,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// How long to wait between attempts (else the workflow's, else the engine's default).
    pub retry_policy: Option<crate::retry::RetryPolicy>,
    /// What the task may spend over all its attempts.
    pub budget: crate::budget::Budget,
    /// Skip it (recorded as skipped).
    pub skip_if: bool,
    /// A failure does not fail the run.
    pub continue_on_fail: bool,
    /// Wait for a human decision before running.
    pub needs_approval: bool,
    /// Display label.
    pub label: Option<String>,
    /// Free-form metadata.
    pub meta: Option<Value>,
}

impl Node {
    /// The node's kind and props.
    pub fn kind(&self) -> &NodeKind {
        &self.kind
    }

    /// Its children.
    pub fn children(&self) -> &[Node] {
        &self.children
    }

    /// Nodes spliced as one (what a component returns when it has several roots).
    pub fn fragment(children: impl IntoNodes) -> Node {
        let mut v = Vec::new();
        children.push_into(&mut v);
        Node {
            kind: NodeKind::Fragment,
            children: v,
        }
    }

    /// The tag name as written in `workflow!`.
    pub fn tag(&self) -> &'static str {
        match &self.kind {
            NodeKind::Workflow(_) => "Workflow",
            NodeKind::Sequence(_) => "Sequence",
            NodeKind::Parallel(_) => "Parallel",
            NodeKind::Ralph(_) => "Ralph",
            NodeKind::Branch(_) => "Branch",
            NodeKind::Phase(_) => "Phase",
            NodeKind::Step(_) => "Step",
            NodeKind::Task(_) => "Task",
            NodeKind::Fragment => "Fragment",
        }
    }

    /// The children the render mounts: a `Branch` holds both arms but mounts only the chosen
    /// one (`then` when its condition is true, `else` otherwise); every other node mounts all.
    /// The one place this rule lives: the planner, the id check and frames all ask here.
    pub fn mounted_children(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Branch(b) => {
                let i = usize::from(!b.cond);
                self.children.get(i..=i).unwrap_or(&[])
            }
            _ => &self.children,
        }
    }

    /// The tree as a frame: its structure as data.
    pub fn frame(&self) -> FrameNode {
        FrameNode::of(self)
    }

    /// Renders the tree as indented text, one node per line (what `graph` prints), from its
    /// [`FrameNode`].
    pub fn to_tree_string(&self) -> String {
        self.frame().to_text()
    }

    /// Like [`Node::to_tree_string`], with a state annotation per task (`[finished]`).
    ///
    /// A task in an unmounted branch arm is annotated only when no mounted task shares its id:
    /// the state recorded under a shared id belongs to the mounted one.
    pub fn to_tree_string_with(&self, state: &dyn Fn(&TaskSpec) -> Option<String>) -> String {
        self.frame().to_text_with(&frame::task_state(self, state))
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_tree_string())
    }
}

/// Children that can be spliced into a container: a [`Node`], an `Option<Node>`, or any iterator
/// of nodes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a child node of a workflow container",
    label = "expected a `Node`, an `Option<Node>` or an iterator of `Node`s",
    note = "build nodes with `workflow! {{ ... }}`; text is only allowed as the prompt of a `<Task>`"
)]
pub trait IntoNodes {
    /// Pushes the nodes onto `out`.
    fn push_into(self, out: &mut Vec<Node>);
}

impl IntoNodes for Node {
    fn push_into(self, out: &mut Vec<Node>) {
        out.push(self)
    }
}

impl<I: IntoIterator<Item = Node>> IntoNodes for I {
    fn push_into(self, out: &mut Vec<Node>) {
        out.extend(self)
    }
}

/// Anything usable as a task's `id` for output type `T`: a `Ref<T>` or a string.
///
/// A `Ref<T>` borrows its `&'static str`; a `String`, `&String` or `&str` is copied into an owned
/// id (a `&str` of unknown lifetime cannot be kept). A string literal borrows through
/// [`Task::id_static`], which `workflow!` uses for `id="..."`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the id of a task whose output is `{T}`",
    label = "this id's output type disagrees with the task's `output`",
    note = "a `Ref<A>` names a task with `output=A`: change `output=` or use a `Ref` of the right type"
)]
pub trait TaskId<T> {
    /// The id string, borrowed when it is `'static`.
    fn into_id(self) -> Cow<'static, str>;
}

impl<T: Output> TaskId<T> for Ref<T> {
    fn into_id(self) -> Cow<'static, str> {
        Cow::Borrowed(self.id())
    }
}
impl<T: Output> TaskId<T> for &str {
    fn into_id(self) -> Cow<'static, str> {
        Cow::Owned(self.to_owned())
    }
}
impl<T: Output> TaskId<T> for String {
    fn into_id(self) -> Cow<'static, str> {
        Cow::Owned(self)
    }
}
impl<T: Output> TaskId<T> for &String {
    fn into_id(self) -> Cow<'static, str> {
        Cow::Owned(self.clone())
    }
}

mod builders;
mod frame;

pub use crate::frame::{FrameLine, FrameNode};
pub use builders::{Branch, Parallel, Phase, Ralph, Sequence, Step, Task, Workflow};
pub(crate) use frame::shape_hash;
