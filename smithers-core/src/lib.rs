//! smithers-core: the node tree, the render context, the scheduler, the engine loop and the
//! SQLite store of smithers-rs.
//!
//! Users reach these through the `smithers` facade; `workflow!` expands to the builders in
//! [`node`].

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
pub mod clock;
pub mod engine;
pub mod events;
pub mod frame;
pub(crate) mod machine;
pub mod plan;
pub mod steps;
pub mod store;
pub(crate) mod time;
pub mod timetravel;
pub mod vcs;
pub mod worker;
