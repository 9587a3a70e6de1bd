//! # Tags and props
//!
//! Props are snake_case Rust. A value is a literal (`retries=2`, `name="x"`), a path
//! (`id=REVIEW`, `output=Review`, `on_max_reached=Fail`) or a braced expression
//! (`until={done}`). A prop written alone is `true` (`continue_on_fail`). A camelCase prop is a
//! compile error that names the snake_case one; an unknown or duplicate prop is a compile error
//! at the prop; a prop of the wrong type is rustc's type error at the prop
//! ([`errors`](super::errors) quotes each).
//!
//! Every example on this page runs: it drives a real run on a throwaway database with
//! [`smithers::testing`](crate::testing) and asserts on what the run persisted.
//!
//! ## `<Workflow>`: the root
//!
//! | prop | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `name` | `impl Into<String>` | `"workflow"` | the workflow's name: `_smithers_runs.workflow`, part of the cache key |
//! | `cache` | `bool` | `false` | reuse an agent task's output from an earlier run when workflow, node id, prompt, output schema and agent configuration all match ([`approvals_and_cache`](super::approvals_and_cache)) |
//! | `max_concurrency` | `usize` | the engine's, 16 (`run --max-concurrency`) | run-wide limit of tasks running at once; overrides the engine's |
//! | `retry_policy` | [`RetryPolicy`](crate::RetryPolicy) | the engine's: exponential from 1 s, doubling, at most 5 min, ± 20 % | the wait between attempts of every task that sets no `retry_policy` of its own |
//! | `max_cost_usd` | `f64` | none | most US dollars (reported by the agents, or estimated from the price catalog) the run may spend |
//! | `max_tokens` | `u64` | none | most input plus output tokens the run may spend |
//! | `on_budget` | `Fail` or `Park` ([`OnBudget`](crate::OnBudget)) | `Fail` | what an exceeded budget (the run's or a task's) does: fail the task, or park the run as `waiting-budget` until `smithers budget RUN --add ..` and `resume` |
//!
//! Children: nodes, run in sequence (as in `<Sequence>`).
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
//! use std::sync::Arc;
//! use smithers::prelude::*;
//! use smithers::agents::ScriptedAgent;
//! use smithers::testing::{RunStatus, WorkflowTest};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Note { text: String }
//!
//! /// Tasks running now, and the most ever seen at once.
//! #[derive(Default)]
//! struct Gauge { now: AtomicUsize, max: AtomicUsize }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let gauge = Arc::new(Gauge::default());
//! let writer = ScriptedAgent::new().reply(r#"{"text": "the summary"}"#);
//! let (g, agent) = (gauge.clone(), writer.clone());
//! let test = WorkflowTest::new(move |_ctx: &Ctx<()>| {
//!     let busy = |name: &str| {
//!         let g = g.clone();
//!         let id = format!("busy:{name}");
//!         workflow! {
//!             <Task id={id} output=Note run={move |_t| {
//!                 let g = g.clone();
//!                 async move {
//!                     let n = g.now.fetch_add(1, SeqCst) + 1;
//!                     g.max.fetch_max(n, SeqCst);
//!                     tokio::time::sleep(Duration::from_millis(20)).await;
//!                     g.now.fetch_sub(1, SeqCst);
//!                     Ok::<_, String>(Note { text: "done".into() })
//!                 }
//!             }} />
//!         }
//!     };
//!     workflow! {
//!         <Workflow name="notes" cache max_concurrency=1>
//!             <Task id="summary" output=Note agent={agent.clone()}> "Summarise the notes." </Task>
//!             <Parallel>{["a", "b", "c"].map(busy)}</Parallel>
//!         </Workflow>
//!     }
//! });
//! let first = test.run(()).await.unwrap();
//! assert_eq!(first.status(), RunStatus::Finished);
//! // `name`: recorded on the run.
//! assert_eq!(first.query("SELECT workflow FROM _smithers_runs WHERE run_id = ?1")[0][0], "notes");
//! // `max_concurrency=1`: the three tasks of the `<Parallel>` ran one at a time.
//! assert_eq!(gauge.max.load(SeqCst), 1);
//! // `cache`: a second run on the same database answers `summary` from the first run's output;
//! // the agent is not asked again and the attempt's agent is `cache`.
//! let second = test.run(()).await.unwrap();
//! assert_eq!(second.latest::<Note>("summary").await.unwrap().text, "the summary");
//! assert_eq!(writer.requests().len(), 1);
//! assert_eq!(second.query("SELECT agent FROM _smithers_attempts WHERE run_id = ?1 AND node_id = 'summary'")[0][0], "cache");
//! # }
//! ```
//!
//! Budgets and the wait between attempts:
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::agents::ScriptedAgent;
//! use smithers::testing::{RunStatus, WorkflowTest};
//! use smithers::{AgentResponse, OnBudget, Usage};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Note { text: String }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // The agent reports 1 200 tokens for its first reply.
//! let used = Usage { input_tokens: Some(1_000), output_tokens: Some(200), ..Usage::default() };
//! let agent = ScriptedAgent::new()
//!     .respond(AgentResponse { text: r#"{"text": "a"}"#.into(), usage: used, ..AgentResponse::default() });
//! let flaky = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let (f, a) = (flaky.clone(), agent.clone());
//! let test = WorkflowTest::new(move |_ctx: &Ctx<()>| {
//!     let f = f.clone();
//!     workflow! {
//!         <Workflow name="budget" max_tokens=1000 max_cost_usd=5.0 on_budget=Park
//!                   retry_policy={RetryPolicy::exponential(Duration::from_millis(50)).jitter(0.0)}>
//!             // Fails twice, then succeeds: waits 50 ms, then 100 ms (the workflow's policy).
//!             <Task id="flaky" output=Note retries=2 run={move |_t| {
//!                 let f = f.clone();
//!                 async move {
//!                     match f.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
//!                         0 | 1 => Err("not yet".to_owned()),
//!                         _ => Ok(Note { text: "ok".into() }),
//!                     }
//!                 }
//!             }} />
//!             <Task id="first" output=Note agent={a.clone()}> "One." </Task>
//!             <Task id="second" output=Note agent={a.clone()}> "Two." </Task>
//!         </Workflow>
//!     }
//! });
//! let started = std::time::Instant::now();
//! let run = test.run(()).await.unwrap();
//! assert!(started.elapsed() >= Duration::from_millis(150));
//! assert_eq!(run.query_i64("SELECT COUNT(*) FROM _smithers_attempts WHERE run_id = ?1 AND node_id = 'flaky'"), 3);
//! // `max_tokens=1000` with `on_budget=Park`: `first` spent 1 200, so `second` does not start and
//! // the run waits for `smithers budget RUN --add-tokens N`, then `resume`.
//! assert_eq!(run.status(), RunStatus::WaitingBudget);
//! assert_eq!(run.latest::<Note>("first").await, Some(Note { text: "a".into() }));
//! assert_eq!(run.latest::<Note>("second").await, None);
//! assert_eq!(agent.requests().len(), 1);
//! # }
//! ```
//!
//! ## `<Task>`: one unit of work with a typed output
//!
//! | prop | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `id` | [`Ref<T>`](crate::Ref), `&str` or `String` | required | the node id, unique among the mounted nodes; outputs are keyed by it. A `Ref<T>` also gives the output type |
//! | `output` | a type `T: Output` | required unless `id` is a `Ref<T>` | the output type; its table holds the rows (`output={Vec<T>}` for a type that is not a path) |
//! | `agent` | `impl IntoAgent` | — | an agent task: the agent answers the prompt |
//! | `run` | `Fn(TaskCtx) -> impl Future<Output = Result<T, E>>`, `E: Into<TaskError>` | — | a compute task: the body runs once per attempt |
//! | `value` | `T` | — | a static task: the output itself (built at every render, stored when the task runs) |
//! | children | text and `{expr: Display}` | empty | the prompt of an agent task, in order |
//! | `prompt` | `impl Display` | empty | prompt text given as a prop; appended before the children |
//! | `retries` | `u32` | `0` | extra attempts after a retryable failure or an output that does not parse as `T` (the parse error is quoted in the next prompt) |
//! | `timeout` | [`Duration`](std::time::Duration) | none | per-attempt limit; a timed-out attempt fails with "timed out after ..", a retryable error |
//! | `retry_policy` | [`RetryPolicy`](crate::RetryPolicy) | the workflow's, else the engine's | the wait before each retry |
//! | `max_cost_usd` | `f64` | none | most US dollars the task may spend over all its attempts |
//! | `max_tokens` | `u64` | none | most input plus output tokens the task may spend over all its attempts |
//! | `skip_if` | `bool` | `false` | record the task as `skipped`, with no attempt and no output |
//! | `continue_on_fail` | `bool` | `false` | a failure does not fail the run: the node stays `failed` and what follows goes on |
//! | `needs_approval` | `bool` | `false` | wait for `smithers approve RUN NODE` before running ([`approvals_and_cache`](super::approvals_and_cache)) |
//! | `label` | `impl Into<String>` | none | a display label, recorded in the frame (`_smithers_frames.structure`) |
//! | `meta` | `impl Serialize` | none | free-form JSON kept on the rendered node ([`TaskSpec::meta`](crate::node::TaskSpec::meta)) for code that walks the tree; not persisted |
//!
//! A task has exactly one of `agent`, `run` and `value`; two of them are a compile error (a
//! task with none fails when it runs: "task `x` has nothing to run"). Children are prompt
//! parts; a tag inside a `<Task>` is a compile error.
//!
//! An agent task: the prompt (the `prompt` prop, then the children, then the output's schema
//! and the `REQUIRED OUTPUT` instruction), a reply that does not fit `T` retried with the
//! error quoted back, a label in the frame, metadata on the node:
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::agents::ScriptedAgent;
//! use smithers::testing::{RunStatus, WorkflowTest};
//! use smithers::node::NodeKind;
//!
//! #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
//! struct Review { approved: bool, feedback: String }
//! const REVIEW: Ref<Review> = Ref::new("review");
//!
//! fn review(agent: ScriptedAgent) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
//!     move |_ctx| {
//!         let file = "src/lib.rs";
//!         workflow! {
//!             <Workflow name="review">
//!                 <Task id=REVIEW agent={agent.clone()} retries=1 retry_policy={RetryPolicy::immediate()}
//!                       prompt="You review Rust code.\n" label="first review"
//!                       meta={serde_json::json!({"team": "core"})}>
//!                     "Review " {file} " and say whether it is ready."
//!                 </Task>
//!             </Workflow>
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let agent = ScriptedAgent::new()
//!     .reply("Looks fine to me!")                                // no JSON: attempt 1 fails
//!     .reply(r#"{"approved": true, "feedback": "ship it"}"#);   // attempt 2 (`retries=1`)
//! let run = WorkflowTest::new(review(agent.clone())).run(()).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Finished);
//! assert_eq!(run.latest(REVIEW).await, Some(Review { approved: true, feedback: "ship it".into() }));
//! let prompts: Vec<String> = agent.requests().into_iter().map(|r| r.prompt).collect();
//! assert!(prompts[0].starts_with("You review Rust code.\nReview src/lib.rs and say whether it is ready."));
//! assert!(prompts[0].contains("REQUIRED OUTPUT"));
//! assert!(prompts[1].contains("Looks fine to me!"), "the next attempt quotes the bad reply");
//! let attempts = run.query("SELECT attempt, status FROM _smithers_attempts WHERE run_id = ?1 ORDER BY attempt");
//! assert_eq!(attempts, [[serde_json::json!(1), "failed".into()], [2.into(), "finished".into()]]);
//! // `label` is recorded in the frame; `meta` stays on the node.
//! let frame = run.query("SELECT structure FROM _smithers_frames WHERE run_id = ?1 ORDER BY frame_no LIMIT 1");
//! assert!(frame[0][0].as_str().unwrap().contains(r#""label":"first review""#));
//! let tree = review(ScriptedAgent::new())(&Ctx::empty(()));
//! let NodeKind::Task(spec) = tree.children()[0].kind() else { unreachable!() };
//! assert_eq!(spec.meta, Some(serde_json::json!({"team": "core"})));
//! # }
//! ```
//!
//! A compute task with a `timeout`, `continue_on_fail`, a task budget, `skip_if`:
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::agents::ScriptedAgent;
//! use smithers::testing::{NodeStatus, RunStatus, WorkflowTest};
//! use smithers::{AgentResponse, Usage};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Note { text: String }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let used = Usage { input_tokens: Some(400), output_tokens: Some(200), ..Usage::default() };
//! // The first reply spends 600 tokens and has no JSON; the retry would exceed `max_tokens=500`.
//! let agent = ScriptedAgent::new()
//!     .respond(AgentResponse { text: "An essay without JSON".into(), usage: used, ..AgentResponse::default() })
//!     .reply(r#"{"text": "never sent"}"#);
//! let a = agent.clone();
//! let test = WorkflowTest::new(move |_ctx: &Ctx<()>| workflow! {
//!     <Workflow name="limits">
//!         <Task id="slow" output=Note timeout={Duration::from_millis(50)} continue_on_fail
//!               run={|_t| async move {
//!                   tokio::time::sleep(Duration::from_secs(30)).await;
//!                   Ok::<_, String>(Note { text: "late".into() })
//!               }} />
//!         <Task id="costly" output=Note agent={a.clone()} retries=3 max_tokens=500 max_cost_usd=1.0 continue_on_fail>
//!             "Write a long essay."
//!         </Task>
//!         <Task id="docs" output=Note skip_if=true value={Note { text: "never".into() }} />
//!         <Task id="after" output=Note value={Note { text: "still ran".into() }} />
//!     </Workflow>
//! });
//! let run = test.run(()).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Finished);
//! // `timeout`: the attempt failed; `continue_on_fail`: the node is failed, the run went on.
//! assert_eq!(run.node_status("slow", 0).await, Some(NodeStatus::Failed));
//! let slow_error = run.query("SELECT error FROM _smithers_attempts WHERE run_id = ?1 AND node_id = 'slow'");
//! assert_eq!(slow_error[0][0], "timed out after 50ms");
//! // `max_tokens=500`: after the first attempt's 600 tokens no retry starts; the task fails.
//! assert_eq!(run.node_status("costly", 0).await, Some(NodeStatus::Failed));
//! assert_eq!(agent.requests().len(), 1);
//! let costly = run.query("SELECT last_error FROM _smithers_nodes WHERE run_id = ?1 AND node_id = 'costly'");
//! assert!(costly[0][0].as_str().unwrap().contains("budget"), "{costly:?}");
//! // `skip_if`: skipped, no attempt, no output.
//! assert_eq!(run.node_status("docs", 0).await, Some(NodeStatus::Skipped));
//! assert_eq!(run.query_i64("SELECT COUNT(*) FROM _smithers_attempts WHERE run_id = ?1 AND node_id = 'docs'"), 0);
//! assert_eq!(run.latest::<Note>("after").await.unwrap().text, "still ran");
//! # }
//! ```
//!
//! Two of `agent`, `run` and `value` on one task:
//!
//! ```compile_fail
//! use smithers::prelude::*;
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)] struct Note { text: String }
//! let tree = workflow! {
//!     <Task id="note" output=Note value={Note { text: "a".into() }}
//!           run={|_t| async move { Ok::<_, String>(Note { text: "b".into() }) }} />
//! };
//! ```
//!
//! ## `<Sequence>`: children in order
//!
//! | prop | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `skip_if` | `bool` | `false` | skip the group: it counts as complete and nothing inside is mounted (its tasks get no rows) |
//! | `label` | `impl Into<String>` | none | a label kept on the node; not shown by `graph` or recorded |
//!
//! Children: nodes. The next child starts when the previous one is terminal (finished,
//! skipped, or failed with `continue_on_fail`).
//!
//! ## `<Parallel>`: children at once
//!
//! | prop | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `max_concurrency` | `usize` | unbounded (only the run-wide limit) | tasks of this group running at once |
//! | `skip_if` | `bool` | `false` | as for `<Sequence>` |
//! | `label` | `impl Into<String>` | none | as for `<Sequence>` |
//!
//! Children: nodes, all runnable together; the group is done when every child is terminal.
//! Children are plain iterators, so a fan-out is `{files.iter().map(|f| workflow! {..})}`.
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::testing::{NodeStatus, WorkflowTest};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Size { bytes: u64 }
//! fn sizes(_ctx: &Ctx<()>) -> Node {
//!     let files = ["a.rs", "bb.rs", "ccc.rs"];
//!     workflow! {
//!         <Workflow name="sizes">
//!             <Sequence label="measure">
//!                 <Parallel max_concurrency=2 label="fan-out">
//!                     {files.iter().map(|f| workflow! {
//!                         <Task id={format!("size:{f}")} output=Size value={Size { bytes: f.len() as u64 }} />
//!                     })}
//!                 </Parallel>
//!                 <Task id="total" output=Size value={Size { bytes: 0 }} />
//!             </Sequence>
//!             <Sequence skip_if=true>
//!                 <Task id="publish" output=Size value={Size { bytes: 0 }} />
//!             </Sequence>
//!             <Task id="announce" output=Size skip_if=true value={Size { bytes: 0 }} />
//!         </Workflow>
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let run = WorkflowTest::new(sizes).run(()).await.unwrap();
//! assert_eq!(run.latest::<Size>("size:ccc.rs").await, Some(Size { bytes: 6 }));
//! // A skipped task gets a `skipped` row; the tasks of a skipped group are not mounted: no rows.
//! assert_eq!(run.node_status("announce", 0).await, Some(NodeStatus::Skipped));
//! assert_eq!(run.node_status("publish", 0).await, None);
//! // `total` started only after the whole `<Parallel>` was done.
//! let log = run.event_log().await;
//! let pos = |e: &str| log.iter().position(|l| l == e).unwrap();
//! assert!(pos("node_started:total@0") > pos("node_finished:size:a.rs@0"));
//! assert!(pos("node_started:total@0") > pos("node_finished:size:ccc.rs@0"));
//! # }
//! ```
//!
//! ## `<Ralph>`: a loop
//!
//! | prop | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `id` | [`LoopRef`](crate::LoopRef) or string | `"ralph"` ([`LoopRef::DEFAULT`](crate::LoopRef::DEFAULT)) | the loop's id; its counter is persisted under it and read with `ctx.iteration(LOOP)`. Give each loop its own when there are several |
//! | `until` | `bool` | `false` | stop condition, read at every render; when the children are all terminal and it is false, the loop runs them again |
//! | `max_iterations` | `u32` | `5` | iterations of one pass at most |
//! | `on_max_reached` | `ReturnLast` or `Fail` ([`OnMaxReached`](crate::OnMaxReached)) | `ReturnLast` | at the limit with `until` still false: complete with the last iteration's outputs, or fail the run |
//! | `skip_if` | `bool` | `false` | skip the loop: complete, nothing inside mounted (no rows) |
//!
//! Children: nodes, run in sequence in each iteration. See [`loops`](super::loops).
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::testing::{NodeStatus, RunStatus, WorkflowTest};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Guess { n: i64 }
//! const GUESS: Ref<Guess> = Ref::new("guess");
//! const GUESSING: LoopRef = LoopRef::new("guessing");
//!
//! /// Guesses 1, 2, 3, ... until a guess reaches `target`.
//! fn guess(ctx: &Ctx<i64>) -> Node {
//!     let it = ctx.iteration(GUESSING);
//!     let done = ctx.latest(GUESS).is_some_and(|g| g.n >= *ctx.input());
//!     workflow! {
//!         <Workflow name="guess">
//!             <Ralph id=GUESSING until={done} max_iterations=4 on_max_reached=Fail>
//!                 <Task id=GUESS value={Guess { n: i64::from(it) + 1 }} />
//!             </Ralph>
//!             <Ralph id="never" skip_if=true>
//!                 <Task id="idle" output=Guess value={Guess { n: 0 }} />
//!             </Ralph>
//!         </Workflow>
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let test = WorkflowTest::new(guess);
//! let run = test.run(3).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Finished);
//! assert_eq!(run.outputs(GUESS).await, vec![(0, Guess { n: 1 }), (1, Guess { n: 2 }), (2, Guess { n: 3 })]);
//! assert_eq!(run.node_status("idle", 0).await, None, "a skipped loop mounts nothing");
//! // `on_max_reached=Fail`: four guesses never reach 10, so the run fails.
//! let run = test.run(10).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Failed);
//! assert_eq!(run.error(), Some("loop `guessing` reached max_iterations (4) without its `until` condition becoming true"));
//! # }
//! ```
//!
//! ## `<Branch>`: one of two arms
//!
//! | prop | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `if` | `bool` | `false` | which arm is mounted: the first child (or `then`) when true, else the second (or `else`) |
//! | `then` | a node, `Option<Node>` or iterator of nodes | the first child | the arm mounted when `if` holds |
//! | `else` | a node, `Option<Node>` or iterator of nodes | the second child | the arm mounted otherwise |
//!
//! Children: at most two nodes (then, else). Only the chosen arm is mounted: its tasks run,
//! the other arm's do not and get no rows; a running task whose arm is unmounted by a later
//! render is cancelled. Both arms may use the same ids (ids are unique among mounted nodes).
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::testing::WorkflowTest;
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Note { text: String }
//! fn plan(ctx: &Ctx<u32>) -> Node {
//!     let big = *ctx.input() > 100;
//!     workflow! {
//!         <Workflow name="plan">
//!             // Arms as children: the first when `if` holds, else the second.
//!             <Branch if={big}>
//!                 <Task id="plan" output=Note value={Note { text: "split it".into() }} />
//!                 <Task id="plan" output=Note value={Note { text: "do it".into() }} />
//!             </Branch>
//!             // Arms as props.
//!             <Branch if={big}
//!                     then={workflow! { <Task id="review" output=Note value={Note { text: "two reviewers".into() }} /> }}
//!                     else={None::<Node>} />
//!         </Workflow>
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let test = WorkflowTest::new(plan);
//! let small = test.run(5).await.unwrap();
//! assert_eq!(small.latest::<Note>("plan").await.unwrap().text, "do it");
//! assert_eq!(small.node_status("review", 0).await, None, "an unmounted arm gets no rows");
//! let big = test.run(500).await.unwrap();
//! assert_eq!(big.latest::<Note>("plan").await.unwrap().text, "split it");
//! assert_eq!(big.latest::<Note>("review").await.unwrap().text, "two reviewers");
//! # }
//! ```
//!
//! ## `<Phase>` and `<Step>`
//!
//! | prop | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `name` | `impl Into<String>` | required | unique name; recorded in `_smithers_phases` / `_smithers_steps` |
//! | `skip_if` | `bool` | `false` | skip it: its row says `skipped`; nothing inside is mounted (its tasks get no rows) |
//! | `on_start` | `Fn(&mut HookCtx)` | none | called once when it starts; may set `state` keys ([`HookCtx::set_state`](crate::node::HookCtx::set_state)), persisted with the transition |
//! | `on_complete` | `Fn(&mut HookCtx)` | none | called once when it completes |
//!
//! Children: nodes. Phases run in declaration order and only the active phase's children are
//! mounted; a step's children run in order. See [`phases`](super::phases).
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::testing::WorkflowTest;
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)] struct Done { ok: bool }
//! fn phased(_ctx: &Ctx<()>) -> Node {
//!     workflow! {
//!         <Workflow name="phased">
//!             <Phase name="build" on_start={|h| { let id = h.run_id().to_owned(); h.set_state("build.started", id) }}
//!                    on_complete={|h| { let name = h.name().to_owned(); h.set_state("build.done", name) }}>
//!                 <Step name="compile" on_complete={|h| h.set_state("compiled", "yes")}>
//!                     <Task id="build:compile" output=Done value={Done { ok: true }} />
//!                 </Step>
//!                 <Step name="lint" skip_if=true>
//!                     <Task id="build:lint" output=Done value={Done { ok: true }} />
//!                 </Step>
//!             </Phase>
//!             <Phase name="docs" skip_if=true>
//!                 <Task id="docs:write" output=Done value={Done { ok: true }} />
//!             </Phase>
//!         </Workflow>
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let run = WorkflowTest::new(phased).run(()).await.unwrap();
//! let rows = |sql| -> Vec<String> {
//!     run.query(sql).iter().map(|r| format!("{} {}", r[0], r[1])).collect()
//! };
//! assert_eq!(rows("SELECT name, status FROM _smithers_phases WHERE run_id = ?1 ORDER BY phase_id"),
//!            [r#""build" "completed""#, r#""docs" "skipped""#]);
//! assert_eq!(rows("SELECT name, status FROM _smithers_steps WHERE run_id = ?1 ORDER BY step_id"),
//!            [r#""compile" "completed""#, r#""lint" "skipped""#]);
//! assert_eq!(rows("SELECT key, value FROM state WHERE key IN ('build.done', 'compiled') ORDER BY key"),
//!            [r#""build.done" "build""#, r#""compiled" "yes""#]);
//! assert_eq!(run.query("SELECT value FROM state WHERE key = 'build.started'")[0][0], run.run_id());
//! # }
//! ```
//!
//! ## Children rules, in short
//!
//! - `<Task>`: text and `{expr: Display}` (the prompt). No tags.
//! - Every other tag: tags and `{expr}` where `expr` is a `Node`, an `Option<Node>` or any
//!   `IntoIterator<Item = Node>`. Text there is a compile error.
//! - Several roots in one `workflow!` make a fragment (what a component returns).
//!
//! ```compile_fail
//! # use smithers::prelude::*;
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)] struct Note { text: String }
//! // A tag inside a <Task>: its children are its prompt.
//! let tree = workflow! {
//!     <Task id="outer" output=Note value={Note { text: "a".into() }}>
//!         <Task id="inner" output=Note value={Note { text: "b".into() }} />
//!     </Task>
//! };
//! ```
//!
//! ```compile_fail
//! # use smithers::prelude::*;
//! // Text in a container: only a <Task>'s prompt is text.
//! let tree = workflow! { <Sequence> "hello" </Sequence> };
//! ```
