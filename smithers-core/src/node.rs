//! The node tree a workflow function renders, and the typed builders `workflow!` expands to.
//!
//! Every built-in tag is a builder here: `<Task id=A retries=2>"..."</Task>` becomes
//! `Task::<_>::new().id(A).retries(2).prompt("...").build()`. Rendering builds a fresh tree each
//! time; the tree is plain data with no I/O.

use std::fmt::{self, Display, Write as _};
use std::future::Future;
use std::marker::PhantomData;
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

/// How a task produces its output.
#[derive(Clone)]
pub enum TaskExec {
    /// An agent answers the prompt.
    Agent(SharedAgent),
    /// A Rust closure computes the output.
    Compute(ComputeFn),
    /// A static value (serialised output, or why it could not be serialised).
    Value(Result<Value, String>),
    /// Nothing given: an error at run time naming the task.
    Missing,
}

/// A task as the engine sees it.
#[derive(Clone)]
pub struct TaskSpec {
    /// Unique id within the frame.
    pub id: String,
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

    /// Renders the tree as indented text, one node per line (what `graph` prints).
    pub fn to_tree_string(&self) -> String {
        let mut s = String::new();
        self.write_tree(&mut s, 0, &|_| None);
        s
    }

    /// Like [`Node::to_tree_string`], with a state annotation per task (`[finished]`).
    pub fn to_tree_string_with(&self, state: &dyn Fn(&TaskSpec) -> Option<String>) -> String {
        let mut s = String::new();
        self.write_tree(&mut s, 0, state);
        s
    }

    fn write_tree(
        &self,
        s: &mut String,
        depth: usize,
        state: &dyn Fn(&TaskSpec) -> Option<String>,
    ) {
        if let NodeKind::Fragment = self.kind {
            for c in &self.children {
                c.write_tree(s, depth, state);
            }
            return;
        }
        let _ = write!(s, "{:indent$}<{}", "", self.tag(), indent = depth * 2);
        match &self.kind {
            NodeKind::Workflow(p) => {
                let _ = write!(s, " name={:?}", p.name);
                if p.cache {
                    s.push_str(" cache");
                }
                if let Some(m) = p.max_concurrency {
                    let _ = write!(s, " max_concurrency={m}");
                }
            }
            NodeKind::Sequence(p) | NodeKind::Parallel(p) => {
                if let Some(m) = p.max_concurrency {
                    let _ = write!(s, " max_concurrency={m}");
                }
                if p.skip_if {
                    s.push_str(" skip_if");
                }
            }
            NodeKind::Ralph(p) => {
                let _ = write!(
                    s,
                    " id={:?} until={} max_iterations={} on_max_reached={:?}",
                    p.id, p.until, p.max_iterations, p.on_max_reached
                );
            }
            NodeKind::Branch(p) => {
                let _ = write!(s, " if={}", p.cond);
            }
            NodeKind::Phase(p) | NodeKind::Step(p) => {
                let _ = write!(s, " name={:?}", p.name);
                if p.skip_if {
                    s.push_str(" skip_if");
                }
            }
            NodeKind::Task(t) => {
                let kind = match &t.exec {
                    TaskExec::Agent(a) => format!("agent={}", a.name()),
                    TaskExec::Compute(_) => "run".to_owned(),
                    TaskExec::Value(_) => "value".to_owned(),
                    TaskExec::Missing => "no-exec".to_owned(),
                };
                let _ = write!(s, " id={:?} output={} {kind}", t.id, t.output.short_name());
                if t.retries > 0 {
                    let _ = write!(s, " retries={}", t.retries);
                }
                if let Some(d) = t.timeout {
                    let _ = write!(s, " timeout={d:?}");
                }
                if t.skip_if {
                    s.push_str(" skip_if");
                }
                if t.continue_on_fail {
                    s.push_str(" continue_on_fail");
                }
                if t.needs_approval {
                    s.push_str(" needs_approval");
                }
                if let Some(st) = state(t) {
                    let _ = write!(s, " [{st}]");
                }
            }
            NodeKind::Fragment => {}
        }
        if self.children.is_empty() {
            s.push_str(" />\n");
        } else {
            s.push_str(">\n");
            for c in &self.children {
                c.write_tree(s, depth + 1, state);
            }
            let _ = writeln!(s, "{:indent$}</{}>", "", self.tag(), indent = depth * 2);
        }
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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the id of a task whose output is `{T}`",
    label = "this id's output type disagrees with the task's `output`",
    note = "a `Ref<A>` names a task with `output=A`: change `output=` or use a `Ref` of the right type"
)]
pub trait TaskId<T> {
    /// The id string.
    fn into_id(self) -> String;
}

impl<T: Output> TaskId<T> for Ref<T> {
    fn into_id(self) -> String {
        self.id().to_owned()
    }
}
impl<T: Output> TaskId<T> for &str {
    fn into_id(self) -> String {
        self.to_owned()
    }
}
impl<T: Output> TaskId<T> for String {
    fn into_id(self) -> String {
        self
    }
}
impl<T: Output> TaskId<T> for &String {
    fn into_id(self) -> String {
        self.clone()
    }
}

/// Builder of `<Task>`.
#[must_use = "call `.build()` to get a Node"]
pub struct Task<T> {
    id: Option<String>,
    exec: TaskExec,
    prompt: String,
    retries: u32,
    timeout: Option<Duration>,
    skip_if: bool,
    continue_on_fail: bool,
    needs_approval: bool,
    label: Option<String>,
    meta: Option<Value>,
    _t: PhantomData<fn() -> T>,
}

impl<T: Output> Default for Task<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Output> Task<T> {
    /// An empty task builder.
    pub fn new() -> Self {
        Task {
            id: None,
            exec: TaskExec::Missing,
            prompt: String::new(),
            retries: 0,
            timeout: None,
            skip_if: false,
            continue_on_fail: false,
            needs_approval: false,
            label: None,
            meta: None,
            _t: PhantomData,
        }
    }

    /// The task id (`Ref<T>` or string).
    pub fn id(mut self, id: impl TaskId<T>) -> Self {
        self.id = Some(id.into_id());
        self
    }

    /// The agent answering the prompt.
    pub fn agent(mut self, agent: impl IntoAgent) -> Self {
        self.exec = TaskExec::Agent(agent.into_agent());
        self
    }

    /// A compute body: `run={|t| async move { Ok(Out { .. }) }}`.
    pub fn run<F, Fut, E>(mut self, f: F) -> Self
    where
        F: Fn(TaskCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<TaskError>,
    {
        let f = Arc::new(f);
        self.exec = TaskExec::Compute(Arc::new(move |ctx| {
            let fut = f(ctx);
            Box::pin(async move {
                let out = fut.await.map_err(Into::into)?;
                serde_json::to_value(&out)
                    .map_err(|e| TaskError::terminal(format!("output cannot be serialised: {e}")))
            })
        }));
        self
    }

    /// A static output value.
    pub fn value(mut self, value: T) -> Self {
        self.exec = TaskExec::Value(serde_json::to_value(&value).map_err(|e| e.to_string()));
        self
    }

    /// Appends to the prompt (text and `{expr}` children).
    pub fn prompt(mut self, part: impl Display) -> Self {
        let _ = write!(self.prompt, "{part}");
        self
    }

    /// Extra attempts after a failure or invalid output.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Skip the task (recorded as skipped).
    pub fn skip_if(mut self, skip: bool) -> Self {
        self.skip_if = skip;
        self
    }

    /// A failure does not fail the run.
    pub fn continue_on_fail(mut self, yes: bool) -> Self {
        self.continue_on_fail = yes;
        self
    }

    /// Wait for a human decision before running.
    pub fn needs_approval(mut self, yes: bool) -> Self {
        self.needs_approval = yes;
        self
    }

    /// Display label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Free-form metadata.
    pub fn meta(mut self, meta: impl serde::Serialize) -> Self {
        self.meta = serde_json::to_value(meta).ok();
        self
    }

    /// Finishes the task. A task without `id` gets the id `""`, which the engine rejects with an
    /// error naming the task's output type.
    pub fn build(self) -> Node {
        Node {
            kind: NodeKind::Task(Arc::new(TaskSpec {
                id: self.id.unwrap_or_default(),
                output: T::info(),
                exec: self.exec,
                prompt: self.prompt,
                retries: self.retries,
                timeout: self.timeout,
                skip_if: self.skip_if,
                continue_on_fail: self.continue_on_fail,
                needs_approval: self.needs_approval,
                label: self.label,
                meta: self.meta,
            })),
            children: Vec::new(),
        }
    }
}

macro_rules! child_methods {
    () => {
        /// Adds children: a node, an `Option<Node>` or an iterator of nodes.
        pub fn child(mut self, nodes: impl IntoNodes) -> Self {
            nodes.push_into(&mut self.children);
            self
        }
    };
}

/// Builder of `<Workflow>`.
#[must_use = "call `.build()` to get a Node"]
#[derive(Default)]
pub struct Workflow {
    props: WorkflowProps,
    children: Vec<Node>,
}

impl Workflow {
    /// An empty workflow.
    pub fn new() -> Self {
        Self::default()
    }
    /// Workflow name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.props.name = name.into();
        self
    }
    /// Reuse outputs of earlier runs whose inputs match.
    pub fn cache(mut self, cache: bool) -> Self {
        self.props.cache = cache;
        self
    }
    /// Run-wide limit of tasks running at once.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.props.max_concurrency = Some(n);
        self
    }
    child_methods!();
    /// Finishes the node.
    pub fn build(self) -> Node {
        Node {
            kind: NodeKind::Workflow(self.props),
            children: self.children,
        }
    }
}

macro_rules! group_builder {
    ($name:ident, $variant:ident, $doc:literal) => {
        #[doc = $doc]
        #[must_use = "call `.build()` to get a Node"]
        #[derive(Default)]
        pub struct $name {
            props: GroupProps,
            children: Vec<Node>,
        }

        impl $name {
            /// An empty group.
            pub fn new() -> Self {
                Self::default()
            }
            /// Skip the whole group.
            pub fn skip_if(mut self, skip: bool) -> Self {
                self.props.skip_if = skip;
                self
            }
            /// Display label.
            pub fn label(mut self, label: impl Into<String>) -> Self {
                self.props.label = Some(label.into());
                self
            }
            child_methods!();
            /// Finishes the node.
            pub fn build(self) -> Node {
                Node {
                    kind: NodeKind::$variant(self.props),
                    children: self.children,
                }
            }
        }
    };
}

group_builder!(
    Sequence,
    Sequence,
    "Builder of `<Sequence>`: children run in order."
);
group_builder!(
    Parallel,
    Parallel,
    "Builder of `<Parallel>`: children run at once."
);

impl Parallel {
    /// Children of this group running at once.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.props.max_concurrency = Some(n);
        self
    }
}

/// Builder of `<Ralph>`.
#[must_use = "call `.build()` to get a Node"]
pub struct Ralph {
    props: RalphProps,
    children: Vec<Node>,
}

impl Default for Ralph {
    fn default() -> Self {
        Self::new()
    }
}

impl Ralph {
    /// A loop with id `ralph`, `until=false`, `max_iterations=5`, `on_max_reached=ReturnLast`.
    pub fn new() -> Self {
        Ralph {
            props: RalphProps {
                id: "ralph".to_owned(),
                until: false,
                max_iterations: 5,
                on_max_reached: OnMaxReached::ReturnLast,
                skip_if: false,
            },
            children: Vec::new(),
        }
    }
    /// Loop id; required when a workflow has more than one loop.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.props.id = id.into();
        self
    }
    /// Stop condition.
    pub fn until(mut self, until: bool) -> Self {
        self.props.until = until;
        self
    }
    /// Maximum iterations of one pass.
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.props.max_iterations = n;
        self
    }
    /// What to do at the limit.
    pub fn on_max_reached(mut self, on: OnMaxReached) -> Self {
        self.props.on_max_reached = on;
        self
    }
    /// Skip the loop.
    pub fn skip_if(mut self, skip: bool) -> Self {
        self.props.skip_if = skip;
        self
    }
    child_methods!();
    /// Finishes the node.
    pub fn build(self) -> Node {
        Node {
            kind: NodeKind::Ralph(self.props),
            children: self.children,
        }
    }
}

/// Builder of `<Branch if={c}>`: the first child (or `then`) when `c`, else the second (or `else`).
#[must_use = "call `.build()` to get a Node"]
#[derive(Default)]
pub struct Branch {
    props: BranchProps,
    then: Option<Node>,
    otherwise: Option<Node>,
    children: Vec<Node>,
}

impl Branch {
    /// An empty branch (condition false).
    pub fn new() -> Self {
        Self::default()
    }
    /// The condition (`if=` in `workflow!`).
    pub fn cond(mut self, cond: bool) -> Self {
        self.props.cond = cond;
        self
    }
    /// The node mounted when the condition holds.
    pub fn then(mut self, node: impl IntoNodes) -> Self {
        let mut v = Vec::new();
        node.push_into(&mut v);
        self.then = Some(Node {
            kind: NodeKind::Fragment,
            children: v,
        });
        self
    }
    /// The node mounted otherwise (`else=` in `workflow!`).
    pub fn otherwise(mut self, node: impl IntoNodes) -> Self {
        let mut v = Vec::new();
        node.push_into(&mut v);
        self.otherwise = Some(Node {
            kind: NodeKind::Fragment,
            children: v,
        });
        self
    }
    child_methods!();
    /// Finishes the node; its children are `[then, else]`.
    pub fn build(self) -> Node {
        let mut rest = self.children.into_iter();
        let then = self
            .then
            .or_else(|| rest.next())
            .unwrap_or_else(|| Node::fragment(None::<Node>));
        let otherwise = self
            .otherwise
            .or_else(|| rest.next())
            .unwrap_or_else(|| Node::fragment(None::<Node>));
        Node {
            kind: NodeKind::Branch(self.props),
            children: vec![then, otherwise],
        }
    }
}

macro_rules! named_builder {
    ($name:ident, $variant:ident, $doc:literal) => {
        #[doc = $doc]
        #[must_use = "call `.build()` to get a Node"]
        #[derive(Default)]
        pub struct $name {
            props: NamedProps,
            children: Vec<Node>,
        }

        impl $name {
            /// An empty group.
            pub fn new() -> Self {
                Self::default()
            }
            /// Name.
            pub fn name(mut self, name: impl Into<String>) -> Self {
                self.props.name = name.into();
                self
            }
            /// Skip it.
            pub fn skip_if(mut self, skip: bool) -> Self {
                self.props.skip_if = skip;
                self
            }
            /// Called once when it starts (`on_start={|h| h.set_state("phase", "build")}`).
            pub fn on_start(
                mut self,
                hook: impl Fn(&mut HookCtx<'_>) + Send + Sync + 'static,
            ) -> Self {
                self.props.hooks.on_start = Some(Arc::new(hook));
                self
            }
            /// Called once when it completes.
            pub fn on_complete(
                mut self,
                hook: impl Fn(&mut HookCtx<'_>) + Send + Sync + 'static,
            ) -> Self {
                self.props.hooks.on_complete = Some(Arc::new(hook));
                self
            }
            child_methods!();
            /// Finishes the node.
            pub fn build(self) -> Node {
                Node {
                    kind: NodeKind::$variant(self.props),
                    children: self.children,
                }
            }
        }
    };
}

named_builder!(
    Phase,
    Phase,
    "Builder of `<Phase name>`: phases run in declaration order."
);
named_builder!(
    Step,
    Step,
    "Builder of `<Step name>`: a tracked group of tasks run in order."
);
