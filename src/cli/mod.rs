//! Command-line front ends: [`main`] gives every workflow binary `run`, `resume`, `status` and
//! `graph`; the `smithers` binary inspects runs from the database alone. Both stay thin: parsing
//! and printing here, behaviour in `smithers-core`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde::Serialize;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::events::Event;
use smithers_core::store::{is_postgres_url, Durability, RunStatus, SqliteStore, Store};
use smithers_core::{Ctx, Error, Node};

pub mod init;
pub mod inspect;
pub mod live;
pub mod logs;
pub mod workers;

/// The writer an operator view writes to, with each write's I/O error as the view's
/// [`Error::WriteOutput`]: `writeln!(out, ...)?` inside a view that returns
/// [`smithers_core::Result`].
pub(crate) struct Out<'a>(pub(crate) &'a mut (dyn std::io::Write + Send));

impl Out<'_> {
    /// What `write!`/`writeln!` call.
    pub(crate) fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> smithers_core::Result<()> {
        self.0.write_fmt(args).map_err(Error::WriteOutput)
    }
}

/// Options shared by every command.
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// The database: a SQLite file, or a PostgreSQL URL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`).
    #[arg(
        long,
        global = true,
        default_value = ".smithers/smithers.db",
        env = "SMITHERS_DB"
    )]
    pub db: PathBuf,
    /// How hard SQLite works to keep each commit on disk (PostgreSQL: the server's settings).
    #[arg(long, global = true, value_enum, default_value_t = DurabilityArg::Full)]
    pub durability: DurabilityArg,
}

/// `--durability`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DurabilityArg {
    /// fsync every commit (survives power loss).
    Full,
    /// fsync at checkpoints (survives a crash of the process).
    Normal,
    /// never fsync (tests, throwaway runs).
    Off,
}

impl DbArgs {
    /// The PostgreSQL URL, when `--db` names one.
    pub fn postgres_url(&self) -> Option<&str> {
        self.db.to_str().filter(|s| is_postgres_url(s))
    }

    /// Whether there is a database to read: a SQLite file that exists, or a PostgreSQL URL (the
    /// server says whether its database exists when it is opened).
    pub fn exists(&self) -> bool {
        self.postgres_url().is_some() || self.db.exists()
    }

    /// What `--db` names, for messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self.postgres_url() {
            Some(url) => smithers_core::store::redact_url(url),
            None => format!("`{}`", self.db.display()),
        }
    }

    /// Opens the store: PostgreSQL for a `postgres://` URL, SQLite otherwise.
    pub async fn open(&self) -> smithers_core::Result<Arc<dyn Store>> {
        if let Some(url) = self.postgres_url() {
            return open_postgres(url).await;
        }
        let d = match self.durability {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Normal => Durability::Normal,
            DurabilityArg::Off => Durability::Off,
        };
        Ok(Arc::new(SqliteStore::open(&self.db, d)?))
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> smithers_core::Result<Arc<dyn Store>> {
    Ok(Arc::new(
        smithers_core::store::PostgresStore::connect(url).await?,
    ))
}

/// `smithers db copy --from SQLITE --to postgres://...`: moves a whole database, printing what
/// was copied per table.
#[cfg(feature = "postgres")]
pub async fn db_copy(from: &std::path::Path, to: &str) -> smithers_core::Result<()> {
    if !is_postgres_url(to) {
        return Err(Error::InvalidArgument(format!(
            "--to `{to}` is not a PostgreSQL URL; pass postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        )));
    }
    let target = smithers_core::store::PostgresStore::connect(to).await?;
    let report = target.copy_from_sqlite(from).await?;
    outln(format_args!(
        "copied `{}` into {}:",
        from.display(),
        target.target()
    ));
    for (table, rows) in &report.tables {
        outln(format_args!("  {table:<24} {rows:>8} rows"));
    }
    Ok(())
}

/// `smithers db copy` without the `postgres` feature: says how to get it.
#[cfg(not(feature = "postgres"))]
pub async fn db_copy(_from: &std::path::Path, to: &str) -> smithers_core::Result<()> {
    open_postgres(to).await.map(drop)
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> smithers_core::Result<Arc<dyn Store>> {
    Err(Error::Unsupported(format!(
        "`--db {}` names a PostgreSQL database, but this binary was built without the `postgres` feature of smithers-rs; enable it (it is on by default)",
        smithers_core::store::redact_url(url)
    )))
}

#[derive(Parser, Debug)]
#[command(about = "Run and inspect this smithers workflow", version)]
struct WorkflowCli {
    #[command(flatten)]
    db: DbArgs,
    /// Print no progress lines.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// When only `needs_approval` tasks are left, wait for `smithers approve|deny` instead of
    /// stopping with status waiting-approval.
    #[arg(long, global = true)]
    wait_approval: bool,
    /// The directory whose git or jj repository every step is snapshotted in (for `smithers
    /// step rollback`); the current directory by default.
    #[arg(long, global = true, env = "SMITHERS_WORKDIR")]
    workdir: Option<PathBuf>,
    /// Lease period in milliseconds (`EngineOptions::lease_ttl`); for tests that pause a
    /// driver past its lease.
    #[arg(long, global = true, hide = true, value_parser = clap::value_parser!(u64).range(30..))]
    lease_ttl_ms: Option<u64>,
    /// Skip every `<Phase>` and `<Step>` of this name (repeat it, or separate names with
    /// commas); the workflow reads the names with `ctx.skips(name)`. A setting of this
    /// process: give it again to `resume`.
    #[arg(
        long = "skip-phase",
        global = true,
        value_name = "NAME",
        value_delimiter = ',',
        env = "SMITHERS_SKIP_PHASES"
    )]
    skip_phases: Vec<String>,
    /// Pool mode (PostgreSQL): queue the run's attempts for the `worker`s of this workflow
    /// instead of running them in this process; this process still drives the run.
    #[arg(long, global = true)]
    pool: bool,
    #[command(subcommand)]
    command: WorkflowCommand,
}

#[derive(Subcommand, Debug)]
enum WorkflowCommand {
    /// Start a new run.
    Run {
        /// The workflow input: JSON text, or @path to a JSON file.
        #[arg(long)]
        input: Option<String>,
        /// Use this run id instead of a generated one.
        #[arg(long)]
        run_id: Option<String>,
        /// Run-wide limit of tasks running at once.
        #[arg(long, default_value_t = 16)]
        max_concurrency: usize,
        /// Create the run `queued` and exit printing its id: a `worker` of this workflow
        /// drives it.
        #[arg(long)]
        detach: bool,
    },
    /// Drive the runs of this workflow that nobody drives (queued by `run --detach`, or whose
    /// driver died) until SIGTERM or Ctrl-C, restarting crashed runs with a backoff up to a
    /// limit. Stopping hands the runs it drives back to the queue for another worker.
    Worker {
        /// Runs driven at once at most.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
        concurrency: u64,
        /// Milliseconds between looks at the database when nothing happens.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        poll_ms: u64,
        /// Restarts of a run whose driver keeps dying without progress before it is marked
        /// failed (a finished node counts as progress).
        #[arg(long, default_value_t = 5)]
        restart_limit: u32,
        /// The wait before a run's second restart, doubling before each later one (at most
        /// five minutes).
        #[arg(long, default_value_t = 1000)]
        restart_backoff_ms: u64,
        /// Run-wide limit of tasks running at once, in each run it drives.
        #[arg(long, default_value_t = 16)]
        max_concurrency: usize,
        /// On PostgreSQL (pool mode): queued attempts of this workflow's runs executed at once
        /// at most (`--concurrency` by default; 0 executes none). The runs it drives queue their
        /// attempts for every worker.
        #[arg(long)]
        attempts: Option<u64>,
    },
    /// Continue a run that stopped (the latest one by default).
    Resume {
        /// The run to resume.
        #[arg(long)]
        run_id: Option<String>,
        /// Run-wide limit of tasks running at once.
        #[arg(long, default_value_t = 16)]
        max_concurrency: usize,
    },
    /// Start a new run whose history is another run's up to a frame, and run the rest.
    Fork {
        /// The run to fork.
        run_id: String,
        /// The frame to fork at (`smithers frames RUN --all` lists them).
        #[arg(long)]
        frame: u32,
        /// A different input: JSON text, or @path to a JSON file (the parent's by default).
        #[arg(long)]
        input: Option<String>,
        /// Run-wide limit of tasks running at once.
        #[arg(long, default_value_t = 16)]
        max_concurrency: usize,
    },
    /// Show a run: status, nodes, attempts, usage (the latest run by default).
    Status {
        /// The run.
        #[arg(long)]
        run_id: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the rendered tree (of a run's current state, or of a fresh input).
    Graph {
        /// Input to render with, when no run is given or exists.
        #[arg(long)]
        input: Option<String>,
        /// Render over this run's persisted outputs.
        #[arg(long)]
        run_id: Option<String>,
    },
}

/// What `graph` prints over a run: the tree its persisted state renders, each task annotated with
/// its latest state (`[finished#0]`, `[waiting-approval#0]`). A task in an unmounted branch arm
/// that shares its id with a mounted one is not annotated (the state is the mounted task's).
pub async fn run_graph<I, F>(
    store: Arc<dyn Store>,
    workflow: F,
    run_id: &str,
) -> smithers_core::Result<String>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
{
    run_graph_skipping(store, workflow, run_id, &[]).await
}

/// [`run_graph`] with phases and steps skipped as `--skip-phase` skips them.
pub async fn run_graph_skipping<I, F>(
    store: Arc<dyn Store>,
    workflow: F,
    run_id: &str,
    skip_phases: &[String],
) -> smithers_core::Result<String>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
{
    let nodes = store.nodes(run_id).await?;
    let approvals = store.approvals(run_id).await?;
    let mut engine = Engine::new(store, workflow);
    engine.options_mut().skip_phases = skip_phases.to_vec();
    let tree = engine.render_run(run_id).await?;
    let latest = |id: &str| {
        nodes
            .iter()
            .filter(|n| n.node_id == id)
            .max_by_key(|n| n.iteration)
            .map(|n| format!("{}#{}", n.status.as_str(), n.iteration))
            .or_else(|| {
                approvals
                    .iter()
                    .find(|a| {
                        a.node_id == id && a.status == smithers_core::store::ApprovalStatus::Pending
                    })
                    .map(|a| format!("waiting-approval#{}", a.iteration))
            })
    };
    Ok(tree.to_tree_string_with(&|t| latest(&t.id)))
}

/// How every view shows an instant: RFC 3339 UTC to the millisecond
/// (`2026-11-25T06:08:03.123Z`), as the database and `--json` output hold it, so a time on the
/// screen can be looked up in either.
pub fn show_time(at: smithers_core::Timestamp) -> String {
    at.to_string()
}

/// Reads `--input`: JSON text or `@path`. Errors name the source and the position.
pub fn parse_input<I: DeserializeOwned>(raw: Option<&str>) -> Result<I, String> {
    let (text, source) = match raw {
        None => {
            return serde_json::from_str("null").or_else(|_| serde_json::from_str("{}")).map_err(|e| {
                format!("this workflow needs an input: pass --input '<json>' or --input @file.json ({e})")
            })
        }
        Some(s) if s.starts_with('@') => {
            let path = &s[1..];
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read input file `{path}`: {e}"))?;
            (text, format!("input file `{path}`"))
        }
        Some(s) => (s.to_owned(), "--input".to_owned()),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{source} is not valid JSON: {e} (at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    serde_json::from_value(value)
        .map_err(|e| format!("{source} does not match the workflow's input type: {e}"))
}

/// Prints events as progress lines on stderr, one per event (what `smithers logs` shows).
pub fn progress_printer() -> Arc<dyn Fn(&Event) + Send + Sync> {
    Arc::new(|e: &Event| {
        if logs::Level::of(&e.kind) == logs::Level::Info {
            errln(format_args!("{}", logs::describe(e)));
        }
    })
}

/// The `main` of a workflow binary: `run`, `resume`, `status`, `graph`.
///
/// ```no_run
/// use smithers::prelude::*;
/// fn hello(_ctx: &Ctx<()>) -> Node { todo!() }
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode { smithers::cli::main(hello).await }
/// ```
pub async fn main<I, F>(workflow: F) -> std::process::ExitCode
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
{
    main_from(std::env::args_os(), workflow).await
}

/// [`main`] with explicit arguments (the first is the program name).
pub async fn main_from<I, F, A>(args: A, workflow: F) -> std::process::ExitCode
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
    A: IntoIterator,
    A::Item: Into<std::ffi::OsString> + Clone,
{
    let cli = match WorkflowCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            init_tracing();
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A worker says what it takes over and hands back (unless `--quiet`).
    match (&cli.command, cli.quiet) {
        (WorkflowCommand::Worker { .. }, false) => {
            init_tracing_with("error,smithers_core::worker=info")
        }
        _ => init_tracing(),
    }
    match run_cli(cli, workflow).await {
        Ok(code) => code,
        Err(msg) => {
            errln(format_args!("error: {msg}"));
            std::process::ExitCode::from(2)
        }
    }
}

/// The price catalog: the built-in one, overridden by the TOML file named by `SMITHERS_PRICES`
/// (a file that cannot be read or parsed is an error naming it, never a silent zero).
pub fn prices_from_env() -> smithers_core::Result<smithers_core::PriceCatalog> {
    match std::env::var_os("SMITHERS_PRICES") {
        Some(path) if !path.is_empty() => smithers_core::PriceCatalog::load_toml(path),
        _ => Ok(smithers_core::PriceCatalog::builtin()),
    }
}

/// Installs a `tracing` subscriber honouring `RUST_LOG` (errors only by default: progress lines
/// already show every event).
pub fn init_tracing() {
    init_tracing_with("error")
}

/// Installs a `tracing` subscriber honouring `RUST_LOG`, `default` otherwise.
fn init_tracing_with(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its default reports a failed write with `eprintln!`, which panics on the stderr that
        // failed: a log line nobody can read is dropped instead.
        .log_internal_errors(false)
        .try_init();
}

async fn run_cli<I, F>(cli: WorkflowCli, workflow: F) -> Result<std::process::ExitCode, String>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
{
    // Prices for estimated costs: the built-in catalog, overridden by `SMITHERS_PRICES`.
    let prices = Arc::new(prices_from_env().map_err(|e| e.to_string())?);
    // One line per event, or the live tree in a terminal, or nothing.
    let live = |store: &Arc<dyn Store>| {
        (!cli.quiet && live::stderr_is_terminal()).then(|| live::LiveProgress::start(store.clone()))
    };
    let make_engine_with =
        |store: Arc<dyn Store>,
         workflow: F,
         max: usize,
         live: Option<&live::LiveProgress>,
         cancel: smithers_core::engine::CancellationToken| {
            let on_event = match live {
                Some(l) => Some(l.listener()),
                None => (!cli.quiet).then(progress_printer),
            };
            let defaults = EngineOptions::default();
            let opts = EngineOptions {
                max_concurrency: max,
                on_event,
                cancel,
                wait_for_approval: cli.wait_approval,
                workdir: cli.workdir.clone(),
                lease_ttl: cli
                    .lease_ttl_ms
                    .map_or(defaults.lease_ttl, std::time::Duration::from_millis),
                prices: prices.clone(),
                skip_phases: cli.skip_phases.clone(),
                pool: cli.pool,
                ..defaults
            };
            Engine::new(store, workflow).with_options(opts)
        };
    let make_engine =
        |store: Arc<dyn Store>, workflow: F, max: usize, live: Option<&live::LiveProgress>| {
            make_engine_with(store, workflow, max, live, tokio_util_cancel())
        };
    match &cli.command {
        WorkflowCommand::Run {
            input,
            run_id,
            max_concurrency,
            detach: true,
        } => {
            let input: I = parse_input(input.as_deref())?;
            let store = cli.db.open().await.map_err(|e| e.to_string())?;
            let engine = make_engine_with(
                store,
                workflow,
                *max_concurrency,
                None,
                smithers_core::engine::CancellationToken::new(),
            );
            match engine.enqueue(run_id.as_deref(), input).await {
                Ok(id) => {
                    outln(format_args!("{id}"));
                    if !cli.quiet {
                        errln(format_args!(
                            "run {id} queued: a `worker` of this workflow on {} drives it",
                            cli.db.describe()
                        ));
                    }
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    errln(format_args!("error [{}]: {e}", e.code()));
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
        WorkflowCommand::Worker {
            concurrency,
            poll_ms,
            restart_limit,
            restart_backoff_ms,
            max_concurrency,
            attempts,
        } => {
            let store = cli.db.open().await.map_err(|e| e.to_string())?;
            let pool = store.supports_pool();
            let mut engine = make_engine_with(
                store,
                workflow,
                *max_concurrency,
                None,
                smithers_core::engine::CancellationToken::new(),
            );
            // On a store with the attempt queue, the runs a worker drives are pool runs.
            engine.options_mut().pool |= pool;
            let options = smithers_core::worker::WorkerOptions {
                attempts: attempts.unwrap_or(*concurrency) as usize,
                // Claims are held like leases (`--lease-ttl-ms` shortens both, for tests).
                claim_ttl: engine.options().lease_ttl,
                concurrency: *concurrency as usize,
                poll: std::time::Duration::from_millis(*poll_ms),
                restarts: smithers_core::worker::RestartPolicy {
                    limit: *restart_limit,
                    backoff: std::time::Duration::from_millis(*restart_backoff_ms),
                    ..Default::default()
                },
                ..Default::default()
            };
            let worker = smithers_core::worker::Worker::new(engine, options);
            match worker.run(stop_on_signals()).await {
                Ok(report) => {
                    if !cli.quiet {
                        errln(format_args!(
                            "worker {} stopped: {} run(s) driven to a stop, {} handed back, {} marked failed after the restart limit",
                            report.worker_id,
                            report.driven.len(),
                            report.handed_back.len(),
                            report.failed.len()
                        ));
                    }
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    errln(format_args!("error [{}]: {e}", e.code()));
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
        WorkflowCommand::Run {
            input,
            run_id,
            max_concurrency,
            detach: false,
        } => {
            let input: I = parse_input(input.as_deref())?;
            let store = cli.db.open().await.map_err(|e| e.to_string())?;
            let view = live(&store);
            let engine = make_engine(store, workflow, *max_concurrency, view.as_ref());
            let report = match run_id {
                Some(id) => engine.run_with_id(id, input).await,
                None => engine.run(input).await,
            };
            if let Some(v) = view {
                v.finish().await;
            }
            Ok(report_exit(report))
        }
        WorkflowCommand::Resume {
            run_id,
            max_concurrency,
        } => {
            let store = cli.db.open().await.map_err(|e| e.to_string())?;
            let view = live(&store);
            let engine = make_engine(store, workflow, *max_concurrency, view.as_ref());
            let report = engine.resume(run_id.as_deref()).await;
            if let Some(v) = view {
                v.finish().await;
            }
            Ok(report_exit(report))
        }
        WorkflowCommand::Fork {
            run_id,
            frame,
            input,
            max_concurrency,
        } => {
            // The input is checked against the workflow's type before anything is written.
            let input = match input {
                Some(raw) => {
                    let typed: I = parse_input(Some(raw))?;
                    Some(serde_json::to_value(typed).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            let store = cli.db.open().await.map_err(|e| e.to_string())?;
            let view = live(&store);
            let engine = make_engine(store, workflow, *max_concurrency, view.as_ref());
            let report = engine.fork(run_id, *frame, input).await;
            if let Some(v) = view {
                v.finish().await;
            }
            Ok(report_exit(report))
        }
        WorkflowCommand::Status { run_id, json } => {
            let store = cli.db.open().await.map_err(|e| e.to_string())?;
            inspect::status(&mut std::io::stdout(), &*store, run_id.as_deref(), *json)
                .await
                .map_err(|e| e.to_string())?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        WorkflowCommand::Graph { input, run_id } => {
            let text = graph(
                &cli.db,
                workflow,
                input.as_deref(),
                run_id.as_deref(),
                &cli.skip_phases,
            )
            .await?;
            out(&text);
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// What a workflow binary's `graph` prints. Over a run (`run_id`, else the latest run, when the
/// database exists and no `input` is given): the tree its persisted state renders, each task
/// annotated with its latest state (`[finished#0]`). Otherwise: the tree a new run with `input`
/// renders first. Either way the tree is checked as a run checks it before anything starts, and
/// a mistake is the error the run would fail with (`ctx.iteration(L)` of a loop the tree does
/// not have, a duplicate or invalid id, a panic while rendering), not a tree that looks fine.
/// `skip_phases` are skipped as a run skips them (`--skip-phase`).
pub async fn graph<I, F>(
    db: &DbArgs,
    workflow: F,
    input: Option<&str>,
    run_id: Option<&str>,
    skip_phases: &[String],
) -> Result<String, String>
where
    I: Serialize + DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Ctx<I>) -> Node + Send + Sync + 'static,
{
    if let (None, Some(id), false) = (input, run_id, db.exists()) {
        return Err(format!(
            "{} (the database {} does not exist)",
            Error::RunNotFound(id.to_owned()),
            db.describe()
        ));
    }
    if input.is_none() && db.exists() {
        let store = db.open().await.map_err(|e| e.to_string())?;
        let rec = match run_id {
            Some(id) => Some(
                store
                    .run(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| Error::RunNotFound(id.to_owned()).to_string())?,
            ),
            None => store.latest_run().await.map_err(|e| e.to_string())?,
        };
        if let Some(rec) = rec {
            return run_graph_skipping(store, workflow, &rec.run_id, skip_phases)
                .await
                .map_err(|e| e.to_string());
        }
    }
    let input: I = parse_input(input)?;
    smithers_core::engine::render_checked(&workflow, input, skip_phases)
        .map(|tree| tree.to_tree_string())
        .map_err(|e| e.to_string())
}

/// A cancellation token cancelled by the first Ctrl-C (a second one exits at once).
fn tokio_util_cancel() -> smithers_core::engine::CancellationToken {
    let token = smithers_core::engine::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            t.cancel();
            errln(format_args!(
                "cancelling: stopping in-flight work (Ctrl-C again to exit at once)"
            ));
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    token
}

/// A line on stdout, as `println!` writes it, in one write, but a stdout nobody reads any more
/// is no panic: `println!` panics when stdout is a pipe whose reader closed (a supervisor that
/// died, `| head`), and a panic in a drive aborts the run for a log nobody reads. The line is
/// dropped instead.
pub fn outln(line: std::fmt::Arguments<'_>) {
    out(&format!("{line}\n"));
}

/// `text` on stdout as it is, as `print!` writes it, dropped when stdout is gone (see [`outln`]).
pub fn out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// A line on stderr, as `eprintln!` writes it, in one write, dropped when stderr is gone
/// instead of panicking (see [`outln`]). A stop path must not depend on stderr either: a signal
/// task that panicked before acting would leave the process deaf to its signals.
pub fn errln(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// A token cancelled by the first SIGTERM or Ctrl-C (a second one exits at once): a worker's
/// graceful stop. The token is cancelled before anything is written, so a worker whose stderr
/// is gone still stops.
fn stop_on_signals() -> smithers_core::engine::CancellationToken {
    let token = smithers_core::engine::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut signals = StopSignals::listen();
        signals.next().await;
        t.cancel();
        errln(format_args!(
            "stopping: handing back the runs this worker drives (signal again to exit at once)"
        ));
        signals.next().await;
        std::process::exit(130);
    });
    token
}

/// SIGTERM (on Unix) and Ctrl-C.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate())
                .map_err(|e| {
                    errln(format_args!(
                        "warning: cannot listen for SIGTERM ({e}); stop with Ctrl-C"
                    ))
                })
                .ok();
            StopSignals { term }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// The next SIGTERM or Ctrl-C.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn report_exit(
    report: smithers_core::Result<smithers_core::engine::RunReport>,
) -> std::process::ExitCode {
    match report {
        Ok(r) => match r.status {
            RunStatus::Finished => {
                errln(format_args!(
                    "run {} finished: {} node(s) with output",
                    r.run_id, r.finished_nodes
                ));
                std::process::ExitCode::SUCCESS
            }
            RunStatus::Cancelled => std::process::ExitCode::from(130),
            RunStatus::WaitingApproval => {
                errln(format_args!(
                    "run {} is {}: decide with `smithers approve {} NODE` (or `deny`), then `resume --run-id {}`",
                    r.run_id,
                    r.error.as_deref().unwrap_or("waiting for approval"),
                    r.run_id,
                    r.run_id
                ));
                std::process::ExitCode::SUCCESS
            }
            _ => {
                errln(format_args!(
                    "error: run {} {}: {}",
                    r.run_id,
                    r.status,
                    r.error.unwrap_or_default()
                ));
                std::process::ExitCode::FAILURE
            }
        },
        // Another process drives the run (or took it over from this one).
        Err(e @ Error::LeaseHeld { .. })
        | Err(e @ Error::LeaseLost { .. })
        | Err(e @ Error::RunAlreadyDone { .. }) => {
            errln(format_args!("error [{}]: {e}", e.code()));
            std::process::ExitCode::from(3)
        }
        Err(e) => {
            errln(format_args!("error [{}]: {e}", e.code()));
            std::process::ExitCode::FAILURE
        }
    }
}
