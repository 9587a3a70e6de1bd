//! # smithers
//!
//! Durable, resumable AI-agent workflows authored in Rust as a JSX-like tree.
//!
//! A workflow is a function from a [`Ctx`] to a [`Node`] tree written with [`workflow!`]. The
//! engine renders it, runs the tasks that are ready, persists each output to SQLite keyed by
//! `(run, node, iteration)`, and renders again. A killed run resumes where it stopped; nothing that
//! finished runs twice.
//!
//! Start with the [`reference`](mod@reference) (every tag, prop, `Ctx` read, error and table, with examples),
//! the `prelude`, the examples in `examples/`, and [`testing`] to test a workflow offline.
//! `smithers init DIR` scaffolds a workflow crate.
//!
//! # Embedding the engine
//!
//! A workflow binary gets its command line from [`cli::main`]. A program of your own drives
//! runs with an [`Engine`] over a [`Store`] ([`SqliteStore`], or `PostgresStore` with the
//! `postgres` feature), reads each [`Event`] as it is persisted, and reads the records back
//! from the store:
//!
//! ```
//! use std::sync::Arc;
//! use smithers::prelude::*;
//! use smithers::{Durability, Engine, EngineOptions, Event, RunStatus, SqliteStore, Store};
//!
//! #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
//! struct Greeting {
//!     text: String,
//! }
//!
//! fn hello(_: &Ctx<()>) -> Node {
//!     workflow! {
//!         <Workflow name="hello">
//!             <Task id="greet" output=Greeting value={Greeting { text: "hi".into() }} />
//!         </Workflow>
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> smithers::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let store: Arc<dyn Store> =
//!     Arc::new(SqliteStore::open(dir.path().join("runs.db"), Durability::Normal)?);
//! let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
//! let log = seen.clone();
//! let options = EngineOptions {
//!     on_event: Some(Arc::new(move |e: &Event| log.lock().unwrap().push(e.kind.name()))),
//!     ..EngineOptions::default()
//! };
//! let report = Engine::new(store.clone(), hello).with_options(options).run(()).await?;
//! assert_eq!(report.status, RunStatus::Finished);
//! assert_eq!(seen.lock().unwrap().first(), Some(&"run_started"));
//! let nodes = store.nodes(&report.run_id).await?;
//! assert_eq!((nodes[0].node_id.as_str(), nodes[0].status.as_str()), ("greet", "finished"));
//! # Ok(())
//! # }
//! ```

extern crate self as smithers;

pub use smithers_core::{
    agent, ctx, error, node, output, Agent, AgentError, AgentRequest, AgentResponse, Budget, Ctx,
    Error, IntoAgent, LoopId, LoopRef, ModelPrice, Node, NodeRef, OnBudget, OnMaxReached, Output,
    PriceCatalog, Ref, Result, RetryPolicy, SharedAgent, TaskCtx, TaskError, Usage,
};

// Embedding: the engine, its options and report, the stores, the events, and the records and
// statuses a program reads back. Everything else of smithers-core (write batches, leases, the
// attempt queue) is the store's and the engine's business.
pub use smithers_core::engine::{
    CancellationToken, Engine, EngineOptions, EventListener, PoolOptions, PoolReport, RunReport,
};
pub use smithers_core::events::{Event, EventKind};
#[cfg(feature = "postgres")]
pub use smithers_core::store::PostgresStore;
pub use smithers_core::store::{
    ApprovalRecord, AttemptRecord, Durability, EventRecord, FrameRecord, NodeRecord, PhaseRecord,
    RestartRecord, RunRecord, SqliteStore, StepRecord, Store, WorkerRecord,
};
pub use smithers_core::{ApprovalStatus, NodeStatus, RunStatus, StoreError, StoreErrorKind};
pub use smithers_macros::{component, prompt, workflow, Output};

/// The attribute that implements [`Agent`]: `#[smithers::async_trait] impl Agent for MyAgent`.
/// Re-exported from [async-trait](https://docs.rs/async-trait) so an agent needs no dependency
/// of its own.
pub use async_trait::async_trait;

pub mod cli;
pub mod reference;
pub mod testing;

/// Agents: coding-agent CLIs, LLM HTTP APIs and a scripted agent for tests.
pub use smithers_agents as agents;

/// Everything a workflow file needs.
pub mod prelude {
    pub use crate::{
        component, prompt, workflow, Ctx, LoopRef, Node, OnBudget, OnMaxReached, Output, Ref,
        RetryPolicy, TaskCtx, TaskError,
    };
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
    pub use std::time::Duration;
    // The tag builders, for building trees in plain Rust; being in scope also lets rustc
    // suggest `Sequence` for a misspelled `<Sequense>` (a capitalised tag is a component).
    pub use smithers_core::node::{Branch, Parallel, Phase, Ralph, Sequence, Step, Task, Workflow};
}

/// What `workflow!`, `#[component]` and `#[derive(Output)]` expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use ::askama;
    pub use ::schemars;
    pub use ::serde;
    pub use ::serde_json;
    pub use smithers_core::node::{
        Branch, IntoNodes, Node, OnMaxReached, Parallel, Phase, Ralph, Sequence, Step, Task,
        TaskId, Workflow,
    };
    pub use smithers_core::output::{Column, ColumnKind, ColumnType, Output, OutputInfo};

    /// The column of a field whose kind its type decides (what `#[derive(Output)]` expands to,
    /// spanned at the field's type, so a type without `ColumnType` is one error there).
    pub const fn column<T: ColumnType + ?Sized>(
        name: &'static str,
        rust_type: &'static str,
        maybe_absent: bool,
    ) -> Column {
        Column {
            name,
            kind: T::KIND,
            nullable: T::NULLABLE || maybe_absent,
            rust_type,
        }
    }
    pub use smithers_core::{Ctx, IntoAgent, OnBudget, Ref};

    /// Compile-time check that `T` implements `Output` (spanned at the user's type).
    pub const fn assert_output<T: Output>() {}

    /// Builder of a fragment: several nodes spliced as one (several roots in `workflow!`, the
    /// children passed to a component, or the placeholder of a tag that failed to compile).
    #[must_use = "call `.build()` to get a Node"]
    #[derive(Default)]
    pub struct Fragment {
        children: ::std::vec::Vec<Node>,
    }

    impl Fragment {
        /// An empty fragment.
        pub fn new() -> Self {
            Self::default()
        }
        /// Adds children: a node, an `Option<Node>` or an iterator of nodes.
        pub fn child(mut self, nodes: impl IntoNodes) -> Self {
            nodes.push_into(&mut self.children);
            self
        }
        /// Finishes the fragment.
        pub fn build(self) -> Node {
            Node::fragment(self.children)
        }
    }

    /// The state of a component prop that has not been given yet (`#[component]` typestate).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Missing;

    /// The state of a component prop that has been given (`#[component]` typestate).
    #[derive(Clone, Copy, Debug)]
    pub struct Set<T>(pub T);

    /// Starts a `<Task output=T>` builder: a real [`Task<T>`] when `T: Output`, otherwise (through
    /// [`TaskOfFallback`]) an [`InertTask`] that accepts every prop, so the only error is the
    /// `assert_output` one at `T` rather than one per prop.
    pub struct TaskOf<T>(::core::marker::PhantomData<fn() -> T>);

    impl<T> TaskOf<T> {
        /// The probe.
        pub const fn new() -> Self {
            TaskOf(::core::marker::PhantomData)
        }
    }

    impl<T> ::core::default::Default for TaskOf<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T: Output> TaskOf<T> {
        /// The typed builder.
        pub fn task(&self) -> Task<T> {
            Task::new()
        }
    }

    /// What [`TaskOf::task`] falls back to when `T` is not an `Output`.
    pub trait TaskOfFallback {
        /// The inert builder.
        fn task(&self) -> InertTask {
            InertTask
        }
    }

    impl<T> TaskOfFallback for TaskOf<T> {}

    /// A task builder that accepts anything and builds an empty fragment: the stand-in for a task
    /// whose `output` type did not compile.
    #[must_use = "call `.build()` to get a Node"]
    pub struct InertTask;

    macro_rules! inert_props {
        ($($prop:ident),*) => {
            impl InertTask {
                $(
                    /// Accepted and ignored.
                    pub fn $prop<A>(self, _: A) -> Self {
                        self
                    }
                )*
                /// Accepted and ignored (typed so that closure parameters still infer).
                pub fn run<F, Fut>(self, _: F) -> Self
                where
                    F: Fn(crate::TaskCtx) -> Fut,
                {
                    self
                }
                /// An empty fragment.
                pub fn build(self) -> Node {
                    Node::fragment(::core::option::Option::None::<Node>)
                }
            }
        };
    }
    inert_props!(
        id,
        id_static,
        agent,
        value,
        prompt,
        retries,
        timeout,
        skip_if,
        continue_on_fail,
        needs_approval,
        label,
        meta
    );
}
