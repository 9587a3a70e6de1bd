//! # Errors you will meet
//!
//! Each message below is quoted as the code prints it, and tests keep it so: a compile error is
//! quoted from its trybuild case in `tests/ui/` (whose `.stderr` the `ui` test compares with
//! what rustc prints; `tests/reference.rs` checks that every quote here is in its `.stderr` and
//! that every case is quoted), and a run error is asserted by the doctest that produces it.
//!
//! ## At compile time
//!
//! **Tags.** A misspelled built-in tag is one error, rustc's, with the similar name (a
//! capitalised tag is a component, so `<Paralel>` is looked up as a type):
//!
//! ```text
//! error[E0433]: cannot find type `Paralel` in this scope
//!   --> tests/ui/workflow_misspelled_parallel.rs:11:14
//!    |
//! 11 |             <Paralel max_concurrency=2>
//!    |              ^^^^^^^ use of undeclared type `Paralel`
//! ```
//! ```text
//! error[E0433]: cannot find type `Sequense` in this scope
//!  --> tests/ui/workflow_misspelled_tag.rs:6:14
//!   |
//! 6 |             <Sequense />
//!   |              ^^^^^^^^ use of undeclared type `Sequense`
//! ```
//!
//! A lowercase tag that is not built in is the macro's error, with the suggestion:
//!
//! ```text
//! error: unknown tag <sequence>; did you mean <Sequence>?
//!   --> tests/ui/workflow_unknown_tag.rs:14:14
//!    |
//! 14 |             <sequence />
//!    |              ^^^^^^^^
//! ```
//!
//! A tag left open is reported once, at the tag, saying where the closing tag goes; a closing
//! tag that matches nothing open is reported at the closing tag:
//!
//! ```text
//! error: <Branch> is not closed: add </Branch> before </Workflow>
//!   --> tests/ui/workflow_unclosed_tag.rs:14:14
//!    |
//! 14 |             <Branch if={ok}>
//!    |              ^^^^^^
//! ```
//! ```text
//! error: mismatched closing tag: expected </Sequence>, found </Parallel>
//!   --> tests/ui/workflow_mismatched_close_tag.rs:14:11
//!    |
//! 14 |         </Parallel>
//!    |           ^^^^^^^^
//! ```
//!
//! **Props.** camelCase, unknown, duplicate, of the wrong type:
//!
//! ```text
//! error: props are snake_case: write `max_iterations` instead of `maxIterations`
//!   --> tests/ui/workflow_camel_case_prop.rs:12:16
//!    |
//! 12 |         <Ralph maxIterations=3>
//!    |                ^^^^^^^^^^^^^
//! ```
//! ```text
//! error: unknown prop `retires` on <Task>; did you mean `retries`?
//!   --> tests/ui/workflow_unknown_prop.rs:12:25
//!    |
//! 12 |         <Task id=REVIEW retires=2 />
//!    |                         ^^^^^^^
//! ```
//! ```text
//! error: duplicate prop `retries` on <Task>
//!   --> tests/ui/workflow_duplicate_prop.rs:12:35
//!    |
//! 12 |         <Task id=REVIEW retries=1 retries=2 />
//!    |                                   ^^^^^^^
//! ```
//! ```text
//! error[E0308]: mismatched types
//!   --> tests/ui/workflow_prop_wrong_type.rs:12:33
//!    |
//! 12 |         <Task id=REVIEW retries="two" />
//!    |                         ------- ^^^^^ expected `u32`, found `&str`
//! ```
//!
//! **Tasks.** A task needs an id and an output type (a string id does not give one), an output
//! type that is an `Output`, a `Ref` id of the same type, and one of `agent`, `run`, `value`:
//!
//! ```text
//! error: <Task> is missing the required prop `id`: a `Ref<T>` (`id=ANALYZE`) or a string with `output=T` (`id="fix" output=Patch`)
//!   --> tests/ui/workflow_missing_id.rs:14:14
//!    |
//! 14 |             <Task output=Review> "Review it." </Task>
//!    |              ^^^^
//! ```
//! ```text
//! error: <Task id="review"> is missing the required prop `output`: a string id does not say what the task returns; add `output=YourType` or use a `Ref<YourType>` as the id
//!   --> tests/ui/workflow_missing_output.rs:14:14
//!    |
//! 14 |             <Task id="review"> "Review it." </Task>
//!    |              ^^^^
//! ```
//! ```text
//! error[E0277]: `Plain` is not a workflow output
//!   --> tests/ui/workflow_output_not_output.rs:17:33
//!    |
//! 17 |         <Task id="plain" output=Plain />
//!    |                                 ^^^^^ not a workflow output
//! ```
//! ```text
//! error[E0277]: `smithers::Ref<Review>` cannot be the id of a task whose output is `Patch`
//!   --> tests/ui/workflow_ref_output_mismatch.rs:17:18
//!    |
//! 17 |         <Task id=REVIEW output=Patch />
//!    |               -- ^^^^^^ this id's output type disagrees with the task's `output`
//! ```
//! ```text
//! error: a <Task> does one thing: `value` and `run` cannot both be given; keep `agent` (an agent answers the prompt), `run` (a compute body) or `value` (a static output)
//!   --> tests/ui/workflow_two_executors.rs:13:15
//!    |
//! 13 |               run={|_t| async move { Ok::<_, String>(Review { approved: false }) }} />
//!    |               ^^^
//! ```
//!
//! **Children.** Text is a prompt, so only a `<Task>` takes it:
//!
//! ```text
//! error: text is only allowed as the prompt of a <Task>
//!   --> tests/ui/workflow_text_in_container.rs:13:13
//!    |
//! 13 |             "Review the patch."
//!    |             ^^^^^^^^^^^^^^^^^^^
//! ```
//!
//! **Components.** A missing prop names itself; an unknown one is a method rustc cannot find; a
//! prop of the wrong type is a type error at the value:
//!
//! ```text
//! error[E0277]: component <CodeReview> is missing the prop `glob`
//!   --> tests/ui/component_missing_prop.rs:19:10
//!    |
//! 19 |         <CodeReview ctx={&ctx} />
//!    |          ^^^^^^^^^^ add `glob=...` to this tag
//! ```
//! ```text
//! error[E0599]: no method named `globs` found for struct `__CodeReviewProps<__S0, __S1>` in the current scope
//!   --> tests/ui/component_unknown_prop.rs:19:43
//!    |
//! 10 | #[component]
//!    | ------------ method `globs` not found for this struct
//! ...
//! 19 |         <CodeReview ctx={&ctx} glob="src" globs="lib" />
//!    |                                           ^^^^^ method not found in `__CodeReviewProps<smithers::__private::Set<&smithers::Ctx<()>>, smithers::__private::Set<&str>>`
//! ```
//! ```text
//! error[E0308]: mismatched types
//!   --> tests/ui/component_prop_wrong_type.rs:18:39
//!    |
//! 18 |         <CodeReview glob="src" rounds="three" />
//!    |                                ------ ^^^^^^^ expected `u32`, found `&str`
//! ```
//!
//! **Outputs** (`#[derive(Output)]`): a struct, whose fields have a column type, none named as a
//! reserved column:
//!
//! ```text
//! error: `#[derive(Output)]` is for structs: an output is one table row; wrap the enum in a struct field (stored as JSON)
//!   --> tests/ui/derive_output_enum.rs:11:1
//!    |
//! 11 | enum Verdict {
//!    | ^^^^
//! ```
//! ```text
//! error[E0277]: `Severity` has no column type: the derive cannot tell how to store it
//!   --> tests/ui/derive_output_field_without_column_type.rs:12:15
//!    |
//! 12 |     severity: Severity,
//!    |               ^^^^^^^^ no column type for `Severity`
//! ```
//! ```text
//! error: `iteration` is a reserved column of every output table (run_id, node_id, iteration); rename the field or add `#[serde(rename = "...")]`
//!   --> tests/ui/derive_output_reserved_column.rs:12:5
//!    |
//! 12 |     iteration: u32,
//!    |     ^^^^^^^^^
//! ```
//!
//! **Prompt templates** (`#[prompt]`): the file must exist beside the declaring file, every
//! placeholder must be a field, the template must parse, and a struct literal must give every
//! field:
//!
//! ```text
//! error: prompt template `no_such_prompt.md` not found in the directory of `prompt_missing_file.rs` (a `#[prompt]` path is relative to the file that declares the struct); create it or fix `path`
//!  --> tests/ui/prompt_missing_file.rs:3:17
//!   |
//! 3 | #[prompt(path = "no_such_prompt.md")]
//!   |                 ^^^^^^^^^^^^^^^^^^^
//! ```
//! ```text
//! error: prompt template `prompt_unknown_placeholder.md` line 3: `feedback` is not a field of `Implement` (its fields: `unit`); add the field or fix the placeholder
//!  --> tests/ui/prompt_unknown_placeholder.rs:4:17
//!   |
//! 4 | #[prompt(path = "prompt_unknown_placeholder.md")]
//!   |                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
//! ```
//! ```text
//! error: expected `endif` to terminate `if` node, found nothing
//!  --> tests/ui/prompt_bad_syntax.md:2:3
//!        "if unit.is_empty() %}\nNothing to do."
//!  --> tests/ui/prompt_bad_syntax.rs:4:17
//!   |
//! 4 | #[prompt(path = "prompt_bad_syntax.md")]
//!   |                 ^^^^^^^^^^^^^^^^^^^^^^
//! ```
//! ```text
//! error[E0063]: missing field `feedback` in initializer of `Implement<'_>`
//!   --> tests/ui/prompt_missing_field.rs:11:13
//!    |
//! 11 |     let _ = Implement { unit: "parse headers" }.to_string();
//!    |             ^^^^^^^^^ missing `feedback`
//! ```
//!
//! ## When a run starts or renders
//!
//! Definition errors are [`Error`](crate::Error)s with a stable [`code`](crate::Error::code).
//! One found before the run is created (the first render: a panic, an unknown loop) is the
//! `Err` of `run`; one found while planning (a duplicate or invalid id) fails the run, with
//! the message in `_smithers_runs.error`. `graph` reports the same ones without running.
//!
//! | code | meaning | what to do |
//! | --- | --- | --- |
//! | `E_DUPLICATE_NODE_ID` | two mounted nodes share an id | make ids unique (prefix them by phase or file) |
//! | `E_INVALID_NODE_ID` | an id that is empty, longer than 256 bytes or has control characters | fix the id |
//! | `E_UNKNOWN_LOOP` | `ctx.iteration(L)` of a loop the tree does not have | give the same `LoopRef` to `<Ralph id=..>` |
//! | `E_MISSING_OUTPUT` | `ctx.output(REF)` before the node has an output in this iteration | use `output_maybe` or `latest` |
//! | `E_OUTPUT_TYPE` | a stored output read as another type | read it with its `output` type |
//! | `E_SCHEMA_CHANGED` | a field removed or retyped since the output table was made | rename the table (`#[output(table = "..")]`) or migrate the rows |
//! | `E_RUN_NOT_FOUND`, `E_RUN_DONE` | resuming a run that does not exist, or that finished | check the id (`smithers runs`) |
//! | `E_NODE_FAILED` | a task failed and nothing lets the run go on | add `retries` or `continue_on_fail` |
//! | `E_MAX_ITERATIONS` | a loop with `on_max_reached=Fail` hit its limit | see [`tags`](super::tags) (`<Ralph>`) |
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::testing::{RunStatus, WorkflowTest};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Note { text: String }
//! const SEED: Ref<Note> = Ref::new("seed");
//! const FIX_LOOP: LoopRef = LoopRef::new("fix");
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Two mounted tasks with one id: the run fails before anything starts.
//! let run = WorkflowTest::new(|_ctx: &Ctx<()>| workflow! {
//!     <Parallel>
//!         <Task id="review" output=Note value={Note { text: "a".into() }} />
//!         <Task id="review" output=Note value={Note { text: "b".into() }} />
//!     </Parallel>
//! }).run(()).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Failed);
//! assert_eq!(run.error(), Some("duplicate node id `review`: used by a <Task output=Note> and by a <Task output=Note>; give each node a unique id"));
//!
//! // An id that cannot be stored.
//! let run = WorkflowTest::new(|_ctx: &Ctx<()>| workflow! {
//!     <Task id="" output=Note value={Note { text: "a".into() }} />
//! }).run(()).await.unwrap();
//! assert_eq!(run.error(), Some("invalid node id \"\": ids must not be empty; give the task an `id` (task with output `Note`)"));
//!
//! // `ctx.iteration` of a loop that is not in the tree (the `<Ralph>` has no `id`).
//! let e = WorkflowTest::new(|ctx: &Ctx<()>| {
//!     let it = ctx.iteration(FIX_LOOP);
//!     workflow! {
//!         <Ralph max_iterations=2>
//!             <Task id="fix" output=Note value={Note { text: format!("fix {it}") }} />
//!         </Ralph>
//!     }
//! }).run(()).await.err().unwrap();
//! assert_eq!(e.code(), "E_UNKNOWN_LOOP");
//! assert_eq!(e.to_string(), "`ctx.iteration(\"fix\")` reads a loop that this workflow does not have (the tree's loops are `ralph`); give the loop's `LoopRef` to both `<Ralph id=..>` and `ctx.iteration(..)` (a `<Ralph>` without `id` is `LoopRef::DEFAULT`)");
//!
//! // `ctx.output` before the node has an output; unwrapping it panics the render.
//! let e = Ctx::empty(()).output(SEED).unwrap_err();
//! assert_eq!(e.code(), "E_MISSING_OUTPUT");
//! assert_eq!(e.to_string(), "node `seed` has no output in iteration 0 yet; use `ctx.output_maybe` or `ctx.latest` when it may be absent");
//! let e = WorkflowTest::new(|ctx: &Ctx<()>| {
//!     let seed = ctx.output(SEED).expect("the seed is there");
//!     workflow! { <Task id=SEED value={seed} /> }
//! }).run(()).await.err().unwrap();
//! assert_eq!(e.to_string(), "the workflow function panicked while rendering: the seed is there: MissingOutput { node: \"seed\", iteration: 0 }");
//! # }
//! ```
//!
//! An output read as the wrong type, and an output type changed under an existing table:
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::testing::{RunStatus, WorkflowTest};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Note { text: String }
//! #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
//! struct Count { n: i64 }
//!
//! /// `Note` as it was changed later: same table, `text` now a number.
//! #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
//! #[output(table = "note")]
//! struct NoteV2 { text: i64 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let test = WorkflowTest::new(|ctx: &Ctx<()>| {
//!     // Reads `note` as a `Count`: once it has an output, that is a type error.
//!     let seen = match ctx.output::<Count>("note") {
//!         Ok(_) => "read".to_owned(),
//!         Err(e) => format!("{}: {e}", e.code()),
//!     };
//!     workflow! {
//!         <Task id="note" output=Note value={Note { text: "hello".into() }} />
//!         <Task id="seen" output=Note value={Note { text: seen }} />
//!     }
//! });
//! let run = test.run(()).await.unwrap();
//! assert_eq!(run.latest::<Note>("seen").await.unwrap().text,
//!            "E_OUTPUT_TYPE: output of node `note` (iteration 0) cannot be read as `rust_out::Count`: missing field `n`");
//!
//! // The same database, the `note` table now declared with `text: i64`.
//! let changed = test.with_workflow(|_ctx: &Ctx<()>| workflow! {
//!     <Task id="note" output=NoteV2 value={NoteV2 { text: 1 }} />
//! });
//! let run = changed.run(()).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Failed);
//! assert_eq!(run.error(), Some("output table `note` no longer matches `NoteV2`: field `text` changed type from `String` (text) to `i64` (integer). Rename the table with #[output(table = \"...\")] or migrate the existing rows"));
//! # }
//! ```
//!
//! Operating runs:
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::testing::{RunStatus, WorkflowTest};
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Note { text: String }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let test = WorkflowTest::new(|_ctx: &Ctx<()>| workflow! {
//!     <Workflow name="fetch">
//!         <Task id="fetch" output=Note retries=1 run={|_t| async move {
//!             Err::<Note, _>(TaskError::terminal("the server answered 404 for /v1/notes"))
//!         }} />
//!     </Workflow>
//! });
//! // A terminal error fails the task at once (its `retries` are not used), and the run with it.
//! let run = test.run(()).await.unwrap();
//! assert_eq!(run.status(), RunStatus::Failed);
//! assert_eq!(run.error(), Some("node `fetch` failed after 1 attempt(s): the server answered 404 for /v1/notes"));
//! let e = test.resume("no-such-run").await.err().unwrap();
//! assert_eq!((e.code(), e.to_string().as_str()),
//!            ("E_RUN_NOT_FOUND", "run `no-such-run` not found in this database; `smithers runs` lists the runs it has"));
//! # }
//! ```
//!
//! **A workflow binary's command line** prints `error: ` and the message, and exits 2 (3 when
//! the run is driven by another process or already done). Its `--input` is checked before
//! anything is written:
//!
//! ```
//! use smithers::cli::parse_input;
//! #[derive(serde::Deserialize)]
//! struct Input { goal: String }
//! let e = parse_input::<Input>(Some(r#"{"goal": "#)).err().unwrap();
//! assert_eq!(e, "--input is not valid JSON: EOF while parsing a value at line 1 column 9 (at line 1, column 9)");
//! let e = parse_input::<Input>(Some(r#"{"gaol": "x"}"#)).err().unwrap();
//! assert_eq!(e, "--input does not match the workflow's input type: missing field `goal`");
//! let e = parse_input::<Input>(None).err().unwrap();
//! assert_eq!(e, "this workflow needs an input: pass --input '<json>' or --input @file.json (missing field `goal` at line 1 column 2)");
//! ```
//!
//! **How a run ends** (status `failed`, the error in `_smithers_runs.error`): `node `x` failed
//! after N attempt(s): ..` (above), `loop `l` reached max_iterations (n) ..` ([`tags`](super::tags),
//! `<Ralph>`), "the workflow function panicked while rendering: .." (above). Operating a run:
//! `E_LEASE_HELD` (another process drives it; exit code 3), `E_RUN_DONE` (resuming a finished
//! run), `E_CANCELLED` (`resume` continues it).
//!
//! **What an attempt's error says** (`_smithers_attempts.error`, and `smithers attempts`):
//!
//! ```
//! use smithers::prelude::*;
//! use smithers::agents::ScriptedAgent;
//! use smithers::testing::WorkflowTest;
//! # #[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)] struct Review { approved: bool }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let agent = ScriptedAgent::new()
//!     .reply("I approve.")                  // no JSON object at all
//!     .reply(r#"{"approved": "yes"}"#)      // JSON of the wrong shape
//!     .fail_retryable("HTTP 529 overloaded") // the agent's own error
//!     .reply(r#"{"approved": true}"#);
//! let a = agent.clone();
//! let test = WorkflowTest::new(move |_ctx: &Ctx<()>| workflow! {
//!     <Task id="review" output=Review agent={a.clone()} retries=3 retry_policy={RetryPolicy::immediate()}>
//!         "Review the change."
//!     </Task>
//! });
//! let run = test.run(()).await.unwrap();
//! let errors: Vec<String> = run
//!     .query("SELECT error FROM _smithers_attempts WHERE run_id = ?1 ORDER BY attempt")
//!     .into_iter()
//!     .map(|r| r[0].as_str().unwrap_or("(none)").to_owned())
//!     .collect();
//! assert_eq!(errors, [
//!     "node `review`: the agent's reply has no JSON object for `Review` (reply began: \"I approve.\")",
//!     "node `review` returned output that does not match `Review`: invalid type: string \"yes\", expected a boolean",
//!     "HTTP 529 overloaded",
//!     "(none)",
//! ]);
//! // The next attempt's prompt quotes what was wrong.
//! assert!(agent.requests()[2].prompt.contains("expected a boolean"));
//! # }
//! ```
//!
//! A timeout reads "timed out after 50ms" ([`tags`](super::tags), `<Task>`); a CLI agent that is
//! not installed, or that exits non-zero, names the binary and quotes its last lines.
