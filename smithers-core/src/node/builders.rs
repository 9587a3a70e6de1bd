//! The builders `workflow!` expands to, one per built-in tag: every prop is a method, so rustc
//! checks each at the user's token.

use std::fmt::{Display, Write as _};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// Builder of `<Task>`.
#[must_use = "call `.build()` to get a Node"]
pub struct Task<T> {
    id: Option<Cow<'static, str>>,
    exec: TaskExec,
    prompt: String,
    retries: u32,
    timeout: Option<Duration>,
    retry_policy: Option<crate::retry::RetryPolicy>,
    budget: crate::budget::Budget,
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
            retry_policy: None,
            budget: crate::budget::Budget::default(),
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

    /// A literal task id, kept borrowed: no allocation when the tree is rendered again.
    /// `workflow!` uses this for `id="..."`; a computed id goes through [`Task::id`].
    pub fn id_static(mut self, id: &'static str) -> Self {
        self.id = Some(Cow::Borrowed(id));
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
        self.exec = TaskExec::Value(StaticValue::new(value));
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

    /// How long to wait between attempts: exponential backoff with jitter, at least what a rate
    /// limit asks for (default: the workflow's `retry_policy`, else the engine's).
    pub fn retry_policy(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Most US dollars (reported or estimated) the task may spend over all its attempts.
    pub fn max_cost_usd(mut self, usd: f64) -> Self {
        self.budget.max_cost_usd = Some(usd);
        self
    }

    /// Most input plus output tokens the task may spend over all its attempts.
    pub fn max_tokens(mut self, tokens: u64) -> Self {
        self.budget.max_tokens = Some(tokens);
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
                retry_policy: self.retry_policy,
                budget: self.budget,
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
    /// Most US dollars (reported or estimated) the run may spend.
    pub fn max_cost_usd(mut self, usd: f64) -> Self {
        self.props.budget.max_cost_usd = Some(usd);
        self
    }
    /// Most input plus output tokens the run may spend.
    pub fn max_tokens(mut self, tokens: u64) -> Self {
        self.props.budget.max_tokens = Some(tokens);
        self
    }
    /// What an exceeded budget does: fail the task (default) or park the run.
    pub fn on_budget(mut self, on: crate::budget::OnBudget) -> Self {
        self.props.on_budget = on;
        self
    }
    /// The wait between attempts of the tasks that set no `retry_policy` of their own.
    pub fn retry_policy(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.props.retry_policy = Some(policy);
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
    /// Loop id: a [`LoopRef`](crate::LoopRef) (`id=FIX_LOOP`) or a string; required when a
    /// workflow has more than one loop. Read the loop's counter with
    /// [`Ctx::iteration`](crate::Ctx::iteration) and the same handle.
    pub fn id(mut self, id: impl crate::reference::LoopId) -> Self {
        self.props.id = id.loop_id().to_owned();
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
