//! The `smithers` binary: operate runs from the database alone.

use clap::{Parser, Subcommand};
use smithers::cli::{inspect, DbArgs};

#[derive(Parser, Debug)]
#[command(
    name = "smithers",
    about = "Inspect smithers runs from their database",
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
    /// List runs, newest first.
    Runs {
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
    /// Show a run's events.
    Events {
        /// The run (latest by default).
        run_id: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Read or write the `state` table.
    State {
        #[command(subcommand)]
        op: StateOp,
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::init_tracing();
    let cli = Cli::parse();
    if !cli.db.db.exists() {
        eprintln!(
            "error: no database at `{}`; pass --db or run a workflow first",
            cli.db.db.display()
        );
        return std::process::ExitCode::from(2);
    }
    let result = async {
        let store = cli.db.open()?;
        match cli.command {
            Command::Runs { json } => inspect::runs(&*store, json).await,
            Command::Status { run_id, json } => {
                inspect::status(&*store, run_id.as_deref(), json).await
            }
            Command::Events { run_id, json } => {
                inspect::events(&*store, run_id.as_deref(), json).await
            }
            Command::State {
                op: StateOp::Get { key },
            } => {
                match store.state_get(&key).await? {
                    Some(v) => println!("{v}"),
                    None => eprintln!("`{key}` is not set"),
                }
                Ok(())
            }
            Command::State {
                op: StateOp::Set { key, value },
            } => store.state_set(&key, &value).await,
        }
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            std::process::ExitCode::FAILURE
        }
    }
}
