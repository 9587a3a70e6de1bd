//! smithers-core: the node tree, the render context, the engine and the stores of smithers-rs.
//!
//! Users reach these through the `smithers` facade, which re-exports what a workflow author and
//! an embedder use; `workflow!` expands to the builders in [`node`].
//!
//! The public modules are the API: authoring ([`node`], [`ctx`], [`output`], [`reference`](mod@reference),
//! [`agent`], [`retry`], [`budget`], [`price`], [`task_ctx`]), running ([`engine`],
//! [`events`], [`worker`], [`clock`]), storage ([`store`]: the [`Store`](store::Store) trait,
//! its records, [`SqliteStore`](store::SqliteStore) and, with the `postgres` feature,
//! `PostgresStore`), and operating runs ([`steps`], [`timetravel`], [`vcs`]), with the leaf
//! [`model`] and [`error`]. The planner, the decision core and the frame model's internals are
//! private to the crate.

pub mod agent;
pub mod budget;
pub mod ctx;
pub mod error;
pub mod model;
pub mod node;
pub mod output;
pub mod price;
pub mod prompt;
pub mod reference;
pub mod retry;
pub mod task_ctx;

pub mod clock;
pub mod engine;
pub mod events;
pub mod steps;
pub mod store;
pub mod timetravel;
pub mod vcs;
pub mod worker;

// Re-exported where it is used: `node::{FrameNode, FrameLine}`.
mod frame;
pub(crate) mod machine;
pub(crate) mod plan;

/// Text helpers shared with `smithers-agents` and the facade's `cli` (one `truncate` for every
/// crate, not a copy per crate). Public only for them: not part of the API.
#[doc(hidden)]
pub mod text;

pub use agent::{
    Agent, AgentError, AgentRequest, AgentResponse, Fallback, IntoAgent, ProgressSink, SharedAgent,
};
pub use budget::{Budget, OnBudget};
pub use ctx::{Ctx, StateView};
pub use error::{Error, Result, StoreBackend, StoreError, StoreErrorKind, TaskError};
pub use model::{
    ApprovalStatus, GroupKind, GroupStatus, LoopState, NodeKey, NodeState, NodeStatus, RunStatus,
    Timestamp, Usage,
};
pub use node::{
    Branch, IntoNodes, Node, NodeKind, OnMaxReached, Parallel, Phase, Ralph, Sequence, StaticValue,
    Step, Task, TaskExec, TaskId, TaskSpec, Workflow,
};
pub use output::{Column, ColumnKind, ColumnType, Output, OutputInfo};
pub use price::{CostSource, ModelPrice, PriceCatalog};
pub use reference::{LoopId, LoopRef, NodeRef, Ref};
pub use retry::RetryPolicy;
pub use task_ctx::TaskCtx;
