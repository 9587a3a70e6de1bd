//! Workflow binaries as child processes: a test binary re-executes itself (one `#[test]` entry
//! point, run with `--exact`) with `SMITHERS_CHILD_ARGS` set, and that entry point behaves as a
//! workflow binary over `smithers::cli::main_from`. The tasks of the child's workflow append to
//! an execution log the parent reads.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smithers_core::{Ctx, Node};

/// The entry point of the child: returns at once unless `SMITHERS_CHILD_ARGS` is set; otherwise
/// runs the workflow that `make(log, millis)` builds as a workflow binary and exits with its
/// code.
pub fn run_as_workflow_binary<W>(make: impl FnOnce(PathBuf, u64) -> W)
where
    W: Fn(&Ctx<()>) -> Node + Send + Sync + 'static,
{
    let Ok(args) = std::env::var("SMITHERS_CHILD_ARGS") else {
        return;
    };
    let log = PathBuf::from(std::env::var("SMITHERS_CHILD_LOG").expect("log path"));
    let millis: u64 =
        std::env::var("SMITHERS_CHILD_MILLIS").map_or(40, |m| m.parse().expect("millis"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let argv = std::iter::once("child".to_owned()).chain(args.split(' ').map(str::to_owned));
    let code = rt.block_on(smithers::cli::main_from(argv, make(log, millis)));
    // `ExitCode` cannot be read back: map the codes the CLI uses.
    let raw = [0u8, 2, 3, 130]
        .into_iter()
        .find(|c| code == std::process::ExitCode::from(*c))
        .unwrap_or(1);
    drop(rt);
    std::process::exit(i32::from(raw));
}

/// Appends a line to the execution log, synced so a killed process leaves it complete.
pub fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    // One write(2) per line: `writeln!` on a bare file may split a line over several writes,
    // which other processes appending at once interleave into unparseable lines.
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write log");
    f.sync_data().expect("sync log");
}

/// A temporary directory with the database and the execution log of child processes.
pub struct ChildEnv {
    /// Kept for its lifetime.
    pub dir: tempfile::TempDir,
    /// The database.
    pub db: PathBuf,
    /// The execution log.
    pub log: PathBuf,
    entry: &'static str,
}

impl ChildEnv {
    /// An environment whose children run the test named `entry` of this binary.
    pub fn new(entry: &'static str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        ChildEnv {
            db: dir.path().join("child.db"),
            log: dir.path().join("exec.log"),
            dir,
            entry,
        }
    }

    /// The command of a child running the workflow binary with `args` (after `--quiet --db`),
    /// its tasks taking `millis` each.
    pub fn command(&self, args: &str, millis: u64) -> Command {
        self.command_on(
            &self.db.display().to_string(),
            &format!("--quiet {args}"),
            millis,
        )
    }

    /// [`ChildEnv::command`] on the database `db` (a file or a PostgreSQL URL), with `args`
    /// after `--db` as they are (no `--quiet`).
    pub fn command_on(&self, db: &str, args: &str, millis: u64) -> Command {
        let mut c = Command::new(std::env::current_exe().expect("exe"));
        c.args(["--exact", self.entry, "--nocapture", "--test-threads=1"])
            .env("SMITHERS_CHILD_ARGS", format!("--db {db} {args}"))
            .env("SMITHERS_CHILD_LOG", &self.log)
            .env("SMITHERS_CHILD_MILLIS", millis.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Spawns [`ChildEnv::command`].
    pub fn spawn(&self, args: &str, millis: u64) -> Child {
        self.command(args, millis).spawn().expect("spawn child")
    }

    /// The execution log so far.
    pub fn log_lines(&self) -> Vec<String> {
        match std::fs::File::open(&self.log) {
            Ok(f) => std::io::BufReader::new(f)
                .lines()
                .map(Result::unwrap)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until the log has at least `n` lines starting with `prefix`.
    pub fn wait_for(&self, prefix: &str, n: usize, child: &mut Child) {
        wait_until(&format!("{n} `{prefix}` lines"), child, || {
            self.log_lines()
                .iter()
                .filter(|l| l.starts_with(prefix))
                .count()
                >= n
        });
    }

    /// A connection to the database.
    pub fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).expect("open db")
    }
}

impl Drop for ChildEnv {
    /// Kills what children of this environment still run: a test that failed before reaping
    /// them would otherwise leave workers polling its database long after it ended. A process is
    /// this environment's when its environment names this environment's own execution log (a
    /// path in a fresh temporary directory), so a reused pid of someone else's process is never
    /// touched; descendants that inherited it (an agent CLI a child started) go too.
    fn drop(&mut self) {
        let mark = format!("SMITHERS_CHILD_LOG={}", self.log.display()).into_bytes();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ.split(|b| *b == 0).any(|var| var == mark.as_slice()) {
                // SAFETY: kill(2) on a process that carries this environment's own mark.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Polls `done` until it holds; fails if `child` exits first or after 30 seconds.
pub fn wait_until(what: &str, child: &mut Child, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "child exited before {what}"
        );
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Stops `child` at a moment it holds no SQLite write lock (so the second driver is not held up
/// by a transaction the paused one left open): stop, try to take the lock, and if it is held,
/// let the child run a moment and stop it again.
pub fn stop_outside_a_transaction(env: &ChildEnv, child: &Child) {
    let c = env.conn();
    for _ in 0..200 {
        signal(child, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(20));
        if c.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            return;
        }
        signal(child, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(3));
    }
    panic!("the driver held the write lock at every stop");
}

/// Sends `sig` to a child we spawned.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned and own.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Kills a child with SIGKILL and reaps it.
pub fn kill9(child: &mut Child) {
    signal(child, libc::SIGKILL);
    child.wait().expect("reap child");
}

/// Waits for a child to exit (at most 60 seconds) and returns its exit code and stderr.
pub fn finish(child: Child) -> (Option<i32>, String) {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => {
            let out = out.expect("child output");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: kill(2) with a pid we spawned (not yet reaped: its waiter still runs).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("child {pid} did not exit within 60 s");
        }
    }
}
