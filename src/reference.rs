//! # The reference: everything a workflow can say, and what the engine does with it
//!
//! Each section is a module so rustdoc gives it a page; every example on these pages is a
//! doctest that `cargo test --doc` compiles (and, unless marked `no_run`, runs).
//!
//! | section | what it covers |
//! | --- | --- |
//! | [`tags`] | every tag of [`workflow!`](crate::workflow) with every prop: type, default, meaning, an example; what children each tag takes |
//! | [`tasks`] | agent, compute and static tasks; prompts; which nodes get rows |
//! | [`components`] | `#[component]` functions used as tags, and prompt templates (`#[prompt]`) |
//! | [`ctx`] | what a render reads from [`Ctx`](crate::Ctx), and which iteration each read sees |
//! | [`loops`] | Ralph loops, typed loop handles, nesting |
//! | [`approvals_and_cache`] | `needs_approval`, `smithers approve`, `<Workflow cache>` |
//! | [`phases`] | `<Phase>` and `<Step>`, hooks, the steps table |
//! | [`agents`] | implementing [`Agent`](crate::Agent) |
//! | [`errors`] | compile errors and run errors a user meets, and what they mean |
//! | [`database`] | the tables and columns a user may query |
//!
//! A workflow is a function `fn(&Ctx<I>) -> Node`. The engine calls it (a *render*), plans what
//! can run, runs it, persists each output in SQLite keyed by `(run, node, iteration)`, and
//! renders again after **each** persisted output while other tasks keep running. Rendering must
//! be pure: read only the `Ctx`; clocks, files and network belong inside tasks.

pub mod tags;

pub mod tasks {
    //! # Agent, compute and static tasks
    //!
    //! - **Agent task** (`agent={..}`): the engine assembles the prompt (the children, then the
    //!   output type's JSON schema and a `REQUIRED OUTPUT` instruction), calls
    //!   [`Agent::generate`](crate::Agent::generate), takes the last JSON object in the reply,
    //!   deserialises it as `T`, and retries with the error appended when it does not fit.
    //! - **Compute task** (`run={|t| async move {..}}`): the body runs once per attempt with a
    //!   [`TaskCtx`](crate::TaskCtx) (run id, node id, iteration, attempt, a cancellation token,
    //!   progress lines). `Err(String)` is retryable; [`TaskError::terminal`](crate::TaskError::terminal)
    //!   fails at once. Move what the body needs into the closure; it cannot borrow the `Ctx`.
    //! - **Static task** (`value={..}`): the value is built at every render (keep it cheap) and
    //!   stored when the task runs. It records an attempt and emits `node_started` and
    //!   `node_finished` like any other task.
    //!
    //! Which nodes get rows: every task that ran gets a row in `_smithers_nodes` (its status) and
    //! one per attempt in `_smithers_attempts`; a finished task also gets a row in its output
    //! table; a skipped task (`skip_if` on the task) gets a `skipped` node row and no attempt, while
    //! the tasks inside a skipped `Sequence`, `Parallel`, `Ralph`, `Phase` or `Step` are not
    //! mounted and get no rows. Containers (`Sequence`,
    //! `Parallel`, `Branch`) get no rows; loops get one row in `_smithers_ralph`; phases and steps
    //! get rows in `_smithers_steps`.
    //!
    //! ```
    //! use smithers::prelude::*;
    //! use smithers::testing::{RunStatus, WorkflowTest};
    //!
    //! #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
    //! struct Count { n: i64 }
    //! const SEED: Ref<Count> = Ref::new("seed");
    //! const DOUBLE: Ref<Count> = Ref::new("double");
    //!
    //! fn counting(ctx: &Ctx<()>) -> Node {
    //!     let seed = ctx.output_maybe(SEED).map_or(0, |c| c.n);
    //!     workflow! {
    //!         <Workflow name="counting">
    //!             <Task id=SEED value={Count { n: 21 }} />
    //!             <Task id=DOUBLE run={move |t| async move {
    //!                 t.progress("doubling");
    //!                 Ok::<_, String>(Count { n: seed * 2 })
    //!             }} />
    //!         </Workflow>
    //!     }
    //! }
    //! # #[tokio::main(flavor = "current_thread")] async fn main() {
    //! let run = WorkflowTest::new(counting).run(()).await.unwrap();
    //! assert_eq!(run.status(), RunStatus::Finished);
    //! assert_eq!(run.latest(DOUBLE).await, Some(Count { n: 42 }));
    //! assert_eq!(run.query_i64("SELECT COUNT(*) FROM _smithers_attempts WHERE run_id = ?1"), 2);
    //! # }
    //! ```
}

pub mod components {
    //! # Components and prompt templates
    //!
    //! `#[component]` turns a function into a tag. Its first parameter may be the `Ctx`; every
    //! other parameter is a prop, given by name (a missing or unknown prop is a compile error
    //! that names it; the order does not matter). A `children: Node` parameter receives the
    //! tag's children. The function returns a `Node`.
    //!
    //! ```
    //! use smithers::prelude::*;
    //! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)] struct Review { approved: bool }
    //!
    //! /// A review of one file, with its id prefixed by the phase.
    //! #[component]
    //! fn FileReview(phase: &str, file: &str) -> Node {
    //!     let id = format!("{phase}:review:{file}");
    //!     workflow! {
    //!         <Task id={id} output=Review value={Review { approved: !file.is_empty() }} />
    //!     }
    //! }
    //!
    //! let tree = workflow! {
    //!     <Workflow name="reviews">
    //!         <FileReview phase="core" file="lib.rs" />
    //!     </Workflow>
    //! };
    //! assert!(tree.to_tree_string().contains("id=\"core:review:lib.rs\""));
    //! ```
    //!
    //! ## Prompt templates (`#[prompt]`)
    //!
    //! A prompt kept in a Markdown file beside its component, rendered from a typed struct by
    //! [askama](https://askama.rs) (Jinja syntax: `{{ field }}`, `{% if cond %}..{% endif %}`,
    //! `{% for x in xs %}..{% endfor %}`). `#[prompt(path = "implement.md")]` resolves the path
    //! relative to the file that declares the struct (as `include_str!` does) and derives
    //! askama's `Template` through smithers, so you add no askama dependency. Output is not
    //! escaped. The struct is `Display`, so it is a prompt child as it is. An unknown placeholder
    //! or a wrong expression in the template, a struct literal missing a field, and a missing
    //! file are compile errors; the engine still appends the output schema and the
    //! `REQUIRED OUTPUT` instruction after the rendered text.
    //!
    //! ```
    //! use smithers::prelude::*;
    //! use smithers::agents::ScriptedAgent;
    //! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)] struct Patch { diff: String }
    //! // src/reference/implement.md (this doctest is compiled as `src/reference.rs`):
    //! //   # Implement {{ unit }}
    //! //   {% if let Some(feedback) = feedback %}
    //! //   Last review said: {{ feedback }}
    //! //   {% endif %}
    //! #[prompt(path = "reference/implement.md")]
    //! struct ImplementPrompt<'a> { unit: &'a str, feedback: Option<&'a str> }
    //!
    //! let prompt = ImplementPrompt { unit: "parse the header", feedback: Some("add a test") };
    //! assert_eq!(prompt.to_string(), "# Implement parse the header\n\nLast review said: add a test\n");
    //! let tree = workflow! {
    //!     <Task id="implement" output=Patch agent={ScriptedAgent::new()}>{prompt}</Task>
    //! };
    //! # let _ = tree;
    //! ```
    //!
    //! `examples/atomic/` uses this for every step (component, schema, template: the 3-file
    //! pattern).
}

pub mod ctx {
    //! # What a render reads
    //!
    //! The workflow function receives a [`Ctx`](crate::Ctx): a read-only view of the run's
    //! persisted state at the start of this render. Reads, and which iteration each sees:
    //!
    //! | read | returns | iteration it sees |
    //! | --- | --- | --- |
    //! | `ctx.input()` | `&I` | — |
    //! | `ctx.output(REF)` | `Result<T>` | the node's *current* iteration (its innermost loop's counter); `Err(MissingOutput)` when absent |
    //! | `ctx.output_maybe(REF)` | `Option<T>` | the current iteration; `None` when absent (use it on the first render) |
    //! | `ctx.latest(REF)` | `Option<T>` | the highest iteration that has an output: for `until`, `skip_if` and cross-iteration decisions |
    //! | `ctx.outputs(REF)` | `Vec<T>` | every iteration, lowest first |
    //! | `ctx.iteration_count(REF)` | `u32` | how many iterations have an output |
    //! | `ctx.iteration(LOOP)` | `u32` | the loop's iteration within its current pass, from 0; an unknown loop fails the render |
    //! | `ctx.run_id()` | `&str` | — |
    //! | `ctx.state().get(key)` / `.set(key, value)` | the `state` table as of this render / a write persisted after it | — |
    //!
    //! `REF` is a [`Ref<T>`](crate::Ref) or a string id with the type given:
    //! `ctx.latest::<Review>("review")`. A stored output that does not deserialise as `T` reads
    //! as absent in the `Option` reads (and is logged); `output` returns the error.
    //!
    //! ```
    //! use smithers::prelude::*;
    //! use smithers::testing::WorkflowTest;
    //! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct N { n: i64 }
    //! const T: Ref<N> = Ref::new("t");
    //! const SEEN: Ref<N> = Ref::new("seen");
    //! const L: LoopRef = LoopRef::new("l");
    //!
    //! fn reads(ctx: &Ctx<()>) -> Node {
    //!     let it = ctx.iteration(L);
    //!     // On the render that starts iteration 2: the current iteration has no `t` yet,
    //!     // `latest` sees iteration 1's, `outputs` sees 0 and 1.
    //!     let seen = N { n: ctx.outputs(T).iter().map(|t| t.n).sum::<i64>() * 100 + i64::from(it) };
    //!     workflow! {
    //!         <Workflow name="reads">
    //!             <Ralph id=L until={ctx.latest(T).is_some_and(|t| t.n >= 2)} max_iterations=5>
    //!                 <Task id=T value={N { n: i64::from(it) }} />
    //!             </Ralph>
    //!             <Task id=SEEN value={seen} />
    //!         </Workflow>
    //!     }
    //! }
    //! # #[tokio::main(flavor = "current_thread")] async fn main() {
    //! let run = WorkflowTest::new(reads).run(()).await.unwrap();
    //! assert_eq!(run.outputs(T).await, vec![(0, N { n: 0 }), (1, N { n: 1 }), (2, N { n: 2 })]);
    //! // After the loop: 0 + 1 + 2 = 3, and the loop's counter stays at its last iteration.
    //! assert_eq!(run.latest(SEEN).await, Some(N { n: 302 }));
    //! # }
    //! ```
}

pub mod loops {
    //! # Loops and nesting
    //!
    //! A `<Ralph>` repeats its children (in sequence) until `until` is true at a render where
    //! they are all terminal, or until `max_iterations`. Each iteration's outputs are kept:
    //! a task in a loop has one row per iteration in its output table.
    //!
    //! **Typed loop handles.** Declare a [`LoopRef`](crate::LoopRef) once and use it in both
    //! places, as [`Ref`](crate::Ref) is used for tasks:
    //! `const FIX_LOOP: LoopRef = LoopRef::new("fix");`, `<Ralph id=FIX_LOOP ..>`,
    //! `ctx.iteration(FIX_LOOP)`. Reading a loop that is neither in the rendered tree nor
    //! recorded in the run fails the render with `E_UNKNOWN_LOOP` and names the loops the tree
    //! has. A `<Ralph>` without `id` is [`LoopRef::DEFAULT`](crate::LoopRef::DEFAULT) (`ralph`).
    //! Code written for the old `ctx.iteration()` (no argument, which read only `ralph`) no
    //! longer compiles: pass the handle.
    //!
    //! **Nesting.** Loops nest. A node's iteration key is its innermost loop's counter, which
    //! keeps growing across passes of the outer loop (so rows never collide), while
    //! `ctx.iteration(INNER)` restarts from 0 at each outer pass. `_smithers_ralph` keeps
    //! `iteration`, `pass_start` and `parent_iteration` per loop.
    //!
    //! **Phase-prefixed ids.** Several phases sharing one loop prefix their node ids
    //! (`format!("{phase}:implement")`) so ids stay unique in the tree.
    //!
    //! ```
    //! use smithers::prelude::*;
    //! use smithers::testing::WorkflowTest;
    //! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct N { n: i64 }
    //! const OUTER: LoopRef = LoopRef::new("outer");
    //! const INNER: LoopRef = LoopRef::new("inner");
    //! fn nested(ctx: &Ctx<()>) -> Node {
    //!     let (o, i) = (ctx.iteration(OUTER), ctx.iteration(INNER));
    //!     workflow! {
    //!         <Workflow name="nested">
    //!             <Ralph id=OUTER max_iterations=2>
    //!                 <Ralph id=INNER max_iterations=2>
    //!                     <Task id="cell" output=N value={N { n: i64::from(o * 10 + i) }} />
    //!                 </Ralph>
    //!             </Ralph>
    //!         </Workflow>
    //!     }
    //! }
    //! # #[tokio::main(flavor = "current_thread")] async fn main() {
    //! let run = WorkflowTest::new(nested).run(()).await.unwrap();
    //! let cells: Vec<(u32, i64)> =
    //!     run.outputs::<N>("cell").await.into_iter().map(|(it, c)| (it, c.n)).collect();
    //! assert_eq!(cells, vec![(0, 0), (1, 1), (2, 10), (3, 11)]);
    //! # }
    //! ```
}

pub mod approvals_and_cache {
    //! # Approvals and the cache
    //!
    //! **Approvals.** A `needs_approval` task is not started until a human decides. When
    //! nothing else can move, the run stops with status `waiting-approval` (a workflow binary's
    //! `run --wait-approval` keeps waiting instead). Decide from any shell with
    //! `smithers approve RUN NODE [--note ..]` or `smithers deny RUN NODE`; then `resume`
    //! continues without re-running anything finished. A denied task fails (with the note as
    //! its error); with `continue_on_fail` the run goes on.
    //!
    //! ```
    //! use smithers::prelude::*;
    //! use smithers::testing::{RunStatus, WorkflowTest};
    //! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Done { ok: bool }
    //! fn release(_ctx: &Ctx<()>) -> Node {
    //!     workflow! {
    //!         <Workflow name="release">
    //!             <Task id="ship" output=Done needs_approval value={Done { ok: true }} />
    //!         </Workflow>
    //!     }
    //! }
    //! # #[tokio::main(flavor = "current_thread")] async fn main() {
    //! let test = WorkflowTest::new(release);
    //! let run = test.run(()).await.unwrap();
    //! assert_eq!(run.status(), RunStatus::WaitingApproval);
    //! test.store().decide_approval(run.run_id(), "ship", None, true, Some("go")).await.unwrap();
    //! let run = test.resume(run.run_id()).await.unwrap();
    //! assert_eq!(run.status(), RunStatus::Finished);
    //! # }
    //! ```
    //!
    //! **Cache.** Under `<Workflow cache>`, before an agent task starts, the engine looks up a
    //! key hashed from the workflow name, node id, rendered prompt, output schema signature and
    //! agent signature ([`Agent::signature`](crate::Agent::signature)). A hit completes the task
    //! with the stored output and an attempt whose agent is `cache`; no agent runs. Compute and
    //! static tasks are never cached. Entries live in `_smithers_cache` and are shared by every
    //! run in the database.
}

pub mod phases {
    //! # Phases and steps
    //!
    //! `<Phase name>` groups work that runs in declaration order: only the active phase's
    //! children are mounted, and a phase completes when everything inside is terminal.
    //! `<Step name>` is a tracked group of tasks run in order. Phases are recorded in
    //! `_smithers_phases` and steps in `_smithers_steps`, each with sequential ids per run,
    //! status (`pending`, `running`, `completed`, `failed`, `skipped`), timings, and for steps
    //! the tasks inside, the working-copy snapshots and the commit an agent made; `smithers steps RUN`
    //! lists them and `smithers step rollback RUN STEP` restores the working copy from before
    //! a step's agent attempts. `on_start` / `on_complete` hooks run once per transition and
    //! may set `state` keys, persisted with the transition.
    //!
    //! **Skipping by name** (seed 004's `SKIP_PHASES`). A workflow binary started with
    //! `--skip-phase NAME` (repeatable, or `--skip-phase a,b`), or with
    //! `SMITHERS_SKIP_PHASES=a,b` in its environment, skips every `<Phase>` and `<Step>` of
    //! those names as if it had `skip_if` (its row says `skipped`, nothing inside runs), and
    //! the workflow reads the names with [`ctx.skips(name)`](crate::Ctx::skips) to skip other
    //! things by name, such as a task. `graph` takes the flag too. It is a setting of the
    //! process, as the environment variable is in Smithers, not of the run: give it again to
    //! `resume` (the environment variable does that by itself), or a skipped phase that has not
    //! been passed yet runs. In code and tests it is
    //! [`EngineOptions::skip_phases`](smithers_core::engine::EngineOptions::skip_phases).
    //!
    //! ```
    //! use smithers::prelude::*;
    //! use smithers::testing::WorkflowTest;
    //! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)] struct Done { ok: bool }
    //! fn release(ctx: &Ctx<()>) -> Node {
    //!     workflow! {
    //!         <Workflow name="release">
    //!             <Phase name="build">
    //!                 <Task id="build:compile" output=Done value={Done { ok: true }} />
    //!                 <Task id="build:refactor" output=Done skip_if={ctx.skips("refactor")} value={Done { ok: true }} />
    //!             </Phase>
    //!             <Phase name="docs">
    //!                 <Task id="docs:write" output=Done value={Done { ok: true }} />
    //!             </Phase>
    //!             <Phase name="publish">
    //!                 <Task id="publish:upload" output=Done value={Done { ok: true }} />
    //!             </Phase>
    //!         </Workflow>
    //!     }
    //! }
    //! # #[tokio::main(flavor = "current_thread")] async fn main() {
    //! // As `release run --skip-phase docs,refactor` (or SMITHERS_SKIP_PHASES=docs,refactor).
    //! let test = WorkflowTest::new(release)
    //!     .options(|o| o.skip_phases = vec!["docs".into(), "refactor".into()]);
    //! let run = test.run(()).await.unwrap();
    //! let phases = run.query("SELECT name, status FROM _smithers_phases WHERE run_id = ?1 ORDER BY phase_id");
    //! let phases: Vec<String> = phases.iter().map(|r| format!("{} {}", r[0], r[1])).collect();
    //! assert_eq!(phases, [r#""build" "completed""#, r#""docs" "skipped""#, r#""publish" "completed""#]);
    //! let ran = run.query("SELECT node_id, status FROM _smithers_nodes WHERE run_id = ?1 ORDER BY node_id");
    //! let ran: Vec<String> = ran.iter().map(|r| format!("{} {}", r[0], r[1])).collect();
    //! assert_eq!(ran, [r#""build:compile" "finished""#, r#""build:refactor" "skipped""#, r#""publish:upload" "finished""#]);
    //! # }
    //! ```
}

pub mod agents {
    //! # Implementing `Agent`
    //!
    //! [`Agent`](crate::Agent) is an async trait written with
    //! [`async-trait`](https://docs.rs/async-trait), re-exported as
    //! [`smithers::async_trait`](crate::async_trait), so you need no dependency of your own.
    //! `generate` gets the assembled prompt (schema and `REQUIRED OUTPUT` already appended),
    //! the output's JSON schema, the timeout and a cancellation token; it returns the reply text
    //! (the engine extracts the JSON) and usage. Return
    //! [`AgentError::retryable`](crate::AgentError::retryable) for failures another attempt
    //! may fix, `terminal` otherwise. Ready-made agents are in [`smithers::agents`](crate::agents):
    //! Claude Code, Codex and Gemini CLIs, Anthropic and OpenAI-compatible HTTP, and
    //! [`ScriptedAgent`](crate::agents::ScriptedAgent) for tests.
    //!
    //! ```
    //! use smithers::{Agent, AgentError, AgentRequest, AgentResponse};
    //!
    //! /// Answers every prompt with an approval.
    //! struct AlwaysApprove;
    //!
    //! #[smithers::async_trait]
    //! impl Agent for AlwaysApprove {
    //!     fn name(&self) -> &str { "always-approve" }
    //!     async fn generate(&self, request: AgentRequest) -> Result<AgentResponse, AgentError> {
    //!         if request.cancel.is_cancelled() {
    //!             return Err(AgentError::retryable("cancelled"));
    //!         }
    //!         Ok(AgentResponse { text: r#"{"approved": true}"#.into(), ..AgentResponse::default() })
    //!     }
    //! }
    //! ```
}

pub mod errors;

pub mod database {
    //! # The database
    //!
    //! One SQLite file (`.smithers/smithers.db` by default, `--db` or `SMITHERS_DB`), WAL mode.
    //! Query it while runs go on (`sqlite3 .smithers/smithers.db`); write only through
    //! `smithers` commands. Times are RFC 3339 text.
    //!
    //! **Output tables**, one per `#[derive(Output)]` type (snake_case of the type name, or
    //! `#[output(table = "..")]`): `run_id`, `node_id`, `iteration` (the primary key), then one
    //! column per field: integers and `bool` as INTEGER, floats REAL, `String` TEXT, `Option<T>`
    //! nullable, anything else (vectors, nested structs, enums) TEXT holding JSON.
    //!
    //! | table | columns |
    //! | --- | --- |
    //! | `_smithers_runs` | `run_id`, `workflow`, `status` (`running`, `finished`, `failed`, `cancelled`, `waiting-approval`), `input_json`, `error`, `created_at`, `updated_at`, `finished_at`, `lease_owner`, `lease_expires_ms`, `lease_epoch`, `cancel_requested`, `parent_run_id`, `parent_frame` (a forked run) |
    //! | `_smithers_nodes` | `run_id`, `node_id`, `iteration`, `status` (`pending`, `running`, `finished`, `failed`, `skipped`), `attempts`, `output_table`, `loop_id`, `last_error`, `updated_at` |
    //! | `_smithers_attempts` | `run_id`, `node_id`, `iteration`, `attempt`, `status`, `owner`, `agent` (`NULL` for compute and static, `cache` for a hit), `started_at`, `finished_at`, `duration_ms`, `error`, `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_write_tokens`, `cost_usd`, `cost_source`, `session_id`, `exit_code`, `model`, `vcs_repo`, `vcs_before`, `vcs_after`, `rolled_back` |
    //! | `_smithers_transcripts` | `run_id`, `node_id`, `iteration`, `attempt`, `transcript` |
    //! | `_smithers_events` | `seq`, `run_id`, `at`, `kind` (`run_started`, `node_started`, `node_finished`, `node_failed`, `node_skipped`, `loop_iterated`, ...), `node_id`, `iteration`, `payload` (JSON) |
    //! | `_smithers_frames` | `run_id`, `frame_no`, `tree_hash`, `tree` (the tree as `graph` prints it), `created_at` |
    //! | `_smithers_ralph` | `run_id`, `loop_id`, `iteration`, `pass_start`, `parent_iteration`, `done` |
    //! | `_smithers_ralph_history` | `run_id`, `loop_id`, `seq`, `iteration`, `pass_start`, `parent_iteration`, `done`: each move of a loop counter |
    //! | `_smithers_rolled_back_outputs` | `run_id`, `node_id`, `iteration`, `output_table`, `output_json`, `rolled_back_at`: outputs a rollback took back |
    //! | `_smithers_approvals` | `run_id`, `node_id`, `iteration`, `status` (`pending`, `approved`, `denied`), `requested_at`, `decided_at`, `note` |
    //! | `_smithers_cache` | `cache_key`, `workflow`, `node_id`, `output_table`, `output_json`, `run_id`, `created_at` |
    //! | `_smithers_phases` | `run_id`, `phase_id`, `name`, `iteration`, `status`, `active`, `started_at`, `completed_at`, `duration_ms`, `created_at` |
    //! | `_smithers_steps` | `run_id`, `step_id`, `parent_step_id`, `active` (0 once rolled back), `source` (`tree` or `api`), `name`, `phase_id`, `phase`, `iteration`, `status`, `task_ids`, `started_at`, `completed_at`, `duration_ms`, `vcs_repo`, `vcs_backend`, `snapshot_before`, `snapshot_after`, `head_before`, `commit_created`, `agent_config_json`, `token_usage_json`, `exit_code` |
    //! | `_smithers_output_tables` | `table_name`, `type_name`, `columns_json`, `signature`, `created_at` |
    //! | `state` | `key`, `value`, `updated_at`; the engine writes `supervisor.status`, `supervisor.summary`, `supervisor.heartbeat`, `supervisor.last_error` |
    //!
    //! Names starting with `_smithers_` or `sqlite_` are reserved: an output table cannot use
    //! them.
    //!
    //! ```
    //! use smithers::prelude::*;
    //! use smithers::testing::WorkflowTest;
    //! #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
    //! struct Finding { file: String, line: Option<u32>, tags: Vec<String> }
    //! fn find(_ctx: &Ctx<()>) -> Node {
    //!     workflow! {
    //!         <Workflow name="find">
    //!             <Task id="f" output=Finding value={Finding { file: "a.rs".into(), line: None, tags: vec!["x".into()] }} />
    //!         </Workflow>
    //!     }
    //! }
    //! # #[tokio::main(flavor = "current_thread")] async fn main() {
    //! let run = WorkflowTest::new(find).run(()).await.unwrap();
    //! assert_eq!(
    //!     run.query("SELECT node_id, iteration, file, line, tags FROM finding WHERE run_id = ?1"),
    //!     vec![vec!["f".into(), 0.into(), "a.rs".into(), serde_json::Value::Null, r#"["x"]"#.into()]]
    //! );
    //! # }
    //! ```
}
