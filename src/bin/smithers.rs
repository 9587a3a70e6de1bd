//! The `smithers` binary: operate runs from the database alone.

use std::io::stdout;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use smithers::cli::logs::{Level, LogOptions};
use smithers::cli::{errln, inspect, logs, outln, DbArgs};
use smithers::RunStatus;

#[derive(Parser, Debug)]
#[command(
    name = "smithers",
    about = "Operate smithers runs from their database",
    version
)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Scaffold a workflow crate in DIR: Cargo.toml, one component in the 3-file pattern
    /// (component, schema, Markdown prompt), a Ralph loop, and a test with a scripted agent.
    Init {
        /// The directory to create (it must not exist or be empty).
        dir: std::path::PathBuf,
        /// The package name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Also depend on a smithers-rs checkout at this path (`path = ".."` beside the version).
        #[arg(long)]
        smithers_path: Option<std::path::PathBuf>,
    },
    /// List runs, newest first.
    Runs {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List live `worker` processes: host, pid, workflow, the runs each drives, last heartbeat.
    Workers {
        /// Also list stale workers (no heartbeat for three periods: killed or hung).
        #[arg(long)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's status, nodes, attempts and usage.
    Status {
        /// The run (latest by default).
        run_id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show what a run did as readable lines, agents' progress included.
    ///
    /// With --follow, waits for new events until the run is finished, failed or cancelled, and
    /// exits 0, 1 or 130 accordingly.
    Logs {
        /// The run (latest by default).
        run_id: Option<String>,
        /// Keep printing new events until the run stops.
        #[arg(long, short)]
        follow: bool,
        /// `debug` adds frames and loop passes.
        #[arg(long, value_enum, default_value_t = Level::Info)]
        level: Level,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's raw events with their payloads.
    Events {
        /// The run (latest by default).
        run_id: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the tree a run rendered (its latest frame by default).
    Frames {
        /// The run (latest by default).
        run_id: Option<String>,
        /// Every frame, oldest first.
        #[arg(long)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show every attempt of a run: agent, duration, usage, error.
    Attempts {
        /// The run (latest by default).
        run_id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run: the process driving it stops it; with none, it is marked cancelled now.
    Cancel {
        /// The run.
        run_id: String,
    },
    /// Raise a run's budget (or one task's, with `--task`) so that `resume` can go on after a
    /// budget stopped it.
    Budget {
        /// The run.
        run_id: String,
        /// US dollars to add to `max_cost_usd`.
        #[arg(long, default_value_t = 0.0)]
        add: f64,
        /// Tokens to add to `max_tokens`.
        #[arg(long, default_value_t = 0)]
        add_tokens: u64,
        /// The task whose budget to raise (default: the run's).
        #[arg(long)]
        task: Option<String>,
    },
    /// Approve a task that waits for approval (`needs_approval`).
    Approve(Decision),
    /// Deny a task that waits for approval: it fails (or is passed over with continue_on_fail).
    Deny(Decision),
    /// Restore the working copy to before a node's agent attempts (HEAD and index untouched).
    Revert {
        /// The run.
        run_id: String,
        /// The node.
        node_id: String,
        /// The iteration (latest by default).
        #[arg(long)]
        iteration: Option<u32>,
        /// The attempt whose `before` snapshot to restore (the first by default).
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// List a run's steps: ids, parents, status, active flag, usage, snapshots.
    Steps {
        /// The run (latest by default).
        run_id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Inspect or roll back one step.
    Step {
        #[command(subcommand)]
        op: StepOp,
    },
    /// Rewind a run to a frame: files back to before the first step after it, later steps
    /// inactive, `resume` re-runs them.
    Rewind {
        /// The run.
        run_id: String,
        /// The frame (from `smithers frames RUN --all`).
        #[arg(long)]
        frame: u32,
        /// Go ahead even though the working copy changed after the run (it is snapshotted
        /// first).
        #[arg(long)]
        force: bool,
    },
    /// Start a new run whose history is this run's up to a frame (the workflow binary's
    /// `resume --run-id NEW` runs the rest).
    Fork {
        /// The run.
        run_id: String,
        /// The frame to fork at.
        #[arg(long)]
        frame: u32,
        /// A different input for the new run (JSON).
        #[arg(long)]
        input: Option<String>,
    },
    /// Show what a step changed in the working copy (the diff of its two snapshots).
    Diff {
        /// The run.
        run_id: String,
        /// The step id.
        step_id: i64,
    },
    /// Read or write the `state` table.
    State {
        #[command(subcommand)]
        op: StateOp,
    },
    /// Work on whole databases.
    Db {
        #[command(subcommand)]
        op: DbOp,
    },
}

#[derive(Subcommand, Debug)]
enum DbOp {
    /// Copy a whole SQLite database (runs, nodes, attempts, events, outputs, state...) into a
    /// PostgreSQL database, in one transaction: all of it or nothing.
    Copy {
        /// The SQLite database file.
        #[arg(long)]
        from: std::path::PathBuf,
        /// The PostgreSQL database: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
        #[arg(long)]
        to: String,
    },
}

/// Which waiting task a decision is about.
#[derive(Args, Debug)]
struct Decision {
    /// The run.
    run_id: String,
    /// The task's node id.
    node_id: String,
    /// The iteration, when several wait.
    #[arg(long)]
    iteration: Option<u32>,
    /// A note kept with the decision (a denial's note becomes the node's error).
    #[arg(long)]
    note: Option<String>,
}

#[derive(Subcommand, Debug)]
enum StepOp {
    /// Its tasks, attempts, usage and snapshots.
    Info {
        /// The run.
        run_id: String,
        /// The step id (from `smithers steps`).
        step_id: i64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Roll the run back to before the step: files restored, it and every later step
    /// inactive, the run resumable (`resume` re-runs them).
    Rollback {
        /// The run.
        run_id: String,
        /// The step id.
        step_id: i64,
        /// Go ahead even though the working copy changed after the run (it is snapshotted
        /// first).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum StateOp {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
}

/// `smithers init`: writes the scaffold and says what to run next.
fn init(
    dir: &std::path::Path,
    name: &Option<String>,
    smithers_path: &Option<std::path::PathBuf>,
) -> ExitCode {
    let opts = smithers::cli::init::InitOptions {
        dir: dir.to_path_buf(),
        name: name.clone(),
        smithers_path: smithers_path.clone(),
    };
    match smithers::cli::init::init(&opts) {
        Ok(files) => {
            for f in files {
                outln(format_args!("created {}", f.display()));
            }
            outln(format_args!(
                "next: cd {} && cargo test && cargo run -- run --input '{{\"change\": \"add retries\"}}'",
                dir.display()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln(format_args!("error: {e}"));
            ExitCode::from(2)
        }
    }
}

fn exit_for(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Finished | RunStatus::Running | RunStatus::WaitingApproval => ExitCode::SUCCESS,
        RunStatus::Cancelled => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    }
}

/// Dies quietly on a closed pipe (`smithers logs | head`) like other Unix tools, instead of
/// panicking on the next write.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first in `main`, before the runtime starts any thread; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            errln(format_args!("error: cannot start the async runtime: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    smithers::cli::init_tracing();
    let cli = Cli::parse();
    if let Command::Init {
        dir,
        name,
        smithers_path,
    } = &cli.command
    {
        return init(dir, name, smithers_path);
    }
    if let Command::Db {
        op: DbOp::Copy { from, to },
    } = &cli.command
    {
        return match smithers::cli::db_copy(from, to).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln(format_args!("error [{}]: {e}", e.code()));
                ExitCode::FAILURE
            }
        };
    }
    if !cli.db.exists() {
        errln(format_args!(
            "error: no database at {}; pass --db or run a workflow first",
            cli.db.describe()
        ));
        return ExitCode::from(2);
    }
    let result = async {
        let store = cli.db.open().await?;
        let store = &*store;
        Ok(match cli.command {
            Command::Runs { json } => inspect::runs(&mut stdout(), store, json)
                .await
                .map(|()| ExitCode::SUCCESS)?,
            Command::Workers { all, json } => {
                smithers::cli::workers::workers(&mut stdout(), store, all, json).await?;
                ExitCode::SUCCESS
            }
            Command::Status { run_id, json } => {
                inspect::status(&mut stdout(), store, run_id.as_deref(), json).await?;
                ExitCode::SUCCESS
            }
            Command::Logs {
                run_id,
                follow,
                level,
                json,
            } => {
                let opts = LogOptions {
                    follow,
                    level,
                    json,
                    poll: Duration::from_millis(500),
                };
                let stopped = logs::logs(&mut stdout(), store, run_id.as_deref(), opts).await?;
                if let Some(note) = &stopped.note {
                    errln(format_args!("{note}"));
                }
                if follow {
                    exit_for(stopped.status)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Command::Events { run_id, json } => {
                inspect::events(&mut stdout(), store, run_id.as_deref(), json).await?;
                ExitCode::SUCCESS
            }
            Command::Frames { run_id, all, json } => {
                inspect::frames(&mut stdout(), store, run_id.as_deref(), all, json).await?;
                ExitCode::SUCCESS
            }
            Command::Attempts { run_id, json } => {
                inspect::attempts(&mut stdout(), store, run_id.as_deref(), json).await?;
                ExitCode::SUCCESS
            }
            Command::Budget {
                run_id,
                add,
                add_tokens,
                task,
            } => {
                inspect::raise_budget(&mut stdout(), store, &run_id, task, add, add_tokens).await?;
                ExitCode::SUCCESS
            }
            Command::Cancel { run_id } => {
                match inspect::cancel(&mut stdout(), store, &run_id).await? {
                    None => ExitCode::SUCCESS,
                    Some(status) => {
                        errln(format_args!(
                            "run {run_id} already {status}; nothing to cancel"
                        ));
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Approve(d) => {
                inspect::decide(
                    &mut stdout(),
                    store,
                    &d.run_id,
                    &d.node_id,
                    d.iteration,
                    true,
                    d.note.as_deref(),
                )
                .await?;
                ExitCode::SUCCESS
            }
            Command::Deny(d) => {
                inspect::decide(
                    &mut stdout(),
                    store,
                    &d.run_id,
                    &d.node_id,
                    d.iteration,
                    false,
                    d.note.as_deref(),
                )
                .await?;
                ExitCode::SUCCESS
            }
            Command::Revert {
                run_id,
                node_id,
                iteration,
                attempt,
            } => {
                inspect::revert(&mut stdout(), store, &run_id, &node_id, iteration, attempt)
                    .await?;
                ExitCode::SUCCESS
            }
            Command::Steps { run_id, json } => {
                inspect::steps(&mut stdout(), store, run_id.as_deref(), json).await?;
                ExitCode::SUCCESS
            }
            Command::Step {
                op:
                    StepOp::Info {
                        run_id,
                        step_id,
                        json,
                    },
            } => {
                inspect::step_info(&mut stdout(), store, &run_id, step_id, json).await?;
                ExitCode::SUCCESS
            }
            Command::Step {
                op:
                    StepOp::Rollback {
                        run_id,
                        step_id,
                        force,
                    },
            } => {
                inspect::step_rollback(&mut stdout(), store, &run_id, step_id, force).await?;
                ExitCode::SUCCESS
            }
            Command::Rewind {
                run_id,
                frame,
                force,
            } => {
                inspect::rewind(&mut stdout(), store, &run_id, frame, force).await?;
                ExitCode::SUCCESS
            }
            Command::Fork {
                run_id,
                frame,
                input,
            } => {
                inspect::fork(&mut stdout(), store, &run_id, frame, input.as_deref()).await?;
                ExitCode::SUCCESS
            }
            Command::Diff { run_id, step_id } => {
                inspect::diff(&mut stdout(), store, &run_id, step_id).await?;
                ExitCode::SUCCESS
            }
            Command::State {
                op: StateOp::Get { key },
            } => match store.state_get(&key).await? {
                Some(v) => {
                    outln(format_args!("{v}"));
                    ExitCode::SUCCESS
                }
                None => {
                    errln(format_args!("error: state key `{key}` is not set"));
                    ExitCode::FAILURE
                }
            },
            Command::State {
                op: StateOp::Set { key, value },
            } => {
                store.state_set(&key, &value).await?;
                ExitCode::SUCCESS
            }
            // Answered above, before any database is needed.
            Command::Init { .. } => ExitCode::SUCCESS,
            Command::Db { .. } => unreachable!("handled before the database is opened"),
        })
    }
    .await;
    match result {
        Ok(code) => code,
        Err::<_, smithers::Error>(e) => {
            errln(format_args!("error [{}]: {e}", e.code()));
            ExitCode::FAILURE
        }
    }
}
