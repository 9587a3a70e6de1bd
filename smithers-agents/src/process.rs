//! Running an agent CLI as a well-behaved child process, shared by every CLI agent.
//!
//! The child gets `/dev/null` as stdin (codex hangs forever on an open stdin pipe), runs in its
//! own process group, and is killed with its whole group (SIGKILL to `-pgid`) when our wall-clock
//! or idle timeout fires, when the request is cancelled, when the leader exits while stragglers
//! still hold its pipes, and when the future is dropped. The leader is always reaped. Every
//! stdout and stderr line goes to the request's progress sink as it arrives; stdout is kept as the
//! raw transcript and the tail of stderr is kept for error messages.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use smithers_core::{AgentError, AgentRequest, TaskError, Usage};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::cli::CliOptions;

/// Most stdout bytes kept as the transcript; later lines still reach the progress sink.
const MAX_TRANSCRIPT_BYTES: usize = 64 << 20;
/// Most stderr bytes kept (the tail: errors come last).
const MAX_STDERR_BYTES: usize = 64 << 10;
/// How long to wait for the pipes to close once the process group is gone.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A command to run: the program and arguments built by one agent for one request.
#[derive(Debug)]
pub(crate) struct CliCommand<'a> {
    pub(crate) options: &'a CliOptions,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
}

/// How a CLI run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The process exited by itself.
    Exited,
    /// Our wall-clock timeout fired.
    TimedOut(Duration),
    /// Nothing on stdout for this long.
    Idle(Duration),
    /// The request was cancelled.
    Cancelled,
}

/// What a CLI run produced.
#[derive(Debug)]
pub(crate) struct CliRun {
    pub(crate) binary: String,
    pub(crate) stdout_lines: Vec<String>,
    pub(crate) stderr_tail: String,
    pub(crate) exit_code: Option<i32>,
    pub(crate) ending: Ending,
}

impl CliRun {
    /// The raw stdout, one line per event: the attempt's transcript.
    pub(crate) fn transcript(&self) -> String {
        let mut t = self.stdout_lines.join("\n");
        if !t.is_empty() {
            t.push('\n');
        }
        t
    }

    /// An agent error carrying this run's transcript and exit code.
    pub(crate) fn error(&self, error: TaskError, usage: Usage) -> AgentError {
        AgentError {
            error,
            usage,
            transcript: Some(self.transcript()),
            exit_code: self.exit_code,
        }
    }

    /// The last non-empty lines of stderr, for error messages.
    pub(crate) fn stderr_summary(&self) -> String {
        let lines: Vec<&str> = self
            .stderr_tail
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let start = lines.len().saturating_sub(12);
        lines[start..].join("\n")
    }

    /// The error of a run we ended ourselves (timeout, idle, cancel), or `None` if it exited.
    pub(crate) fn interrupted(&self, usage: Usage) -> Option<AgentError> {
        let what = match self.ending {
            Ending::Exited => return None,
            Ending::TimedOut(d) => {
                format!("`{}` timed out after {:.1}s", self.binary, d.as_secs_f64())
            }
            Ending::Idle(d) => {
                format!(
                    "`{}` printed nothing for {:.1}s (stalled)",
                    self.binary,
                    d.as_secs_f64()
                )
            }
            Ending::Cancelled => format!("`{}` was cancelled", self.binary),
        };
        let mut message = format!("{what}; its process group was killed");
        if let Some(last) = self
            .stdout_lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
        {
            message.push_str(&format!(
                "; last output: {}",
                crate::stream::truncate(last, 300)
            ));
        }
        let stderr = self.stderr_summary();
        if !stderr.is_empty() {
            message.push_str(&format!("; stderr: {stderr}"));
        }
        Some(self.error(TaskError::retryable(message), usage))
    }
}

/// Kills the process group when dropped (unless disarmed), so a dropped future leaves nothing.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_group(pgid);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(pgid: i32) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    // ESRCH means the group is already gone, which is what we want.
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// Aborts a reader task when dropped: a process outside the group may hold the pipe open.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn_reader(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    tx: mpsc::UnboundedSender<String>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    }))
}

/// Runs the command for `request`, streaming its output to `request.progress`.
///
/// Returns `Err` only when the process cannot be started (a terminal error naming the binary);
/// timeouts and cancellation are reported in [`CliRun::ending`].
pub(crate) async fn run(
    command: CliCommand<'_>,
    request: &AgentRequest,
) -> Result<CliRun, AgentError> {
    let options = command.options;
    let binary = options.binary.display().to_string();
    let mut cmd = tokio::process::Command::new(&options.binary);
    cmd.args(&command.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in command.env.iter().chain(&options.env) {
        cmd.env(k, v);
    }
    if let Some(dir) = &options.cwd {
        cmd.current_dir(dir);
    }
    tracing::debug!(binary = %binary, args = ?command.args, "starting agent CLI");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| spawn_error(&binary, options, e))?;
    let mut guard = GroupGuard {
        pgid: child.id().and_then(|id| i32::try_from(id).ok()),
    };

    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let (err_tx, mut err_rx) = mpsc::unbounded_channel();
    let _readers = (
        child.stdout.take().map(|p| spawn_reader(p, out_tx)),
        child.stderr.take().map(|p| spawn_reader(p, err_tx)),
    );

    let deadline = request
        .timeout
        .or(options.timeout)
        .map(|t| (started + t, t));
    let idle = options.idle_timeout;
    let mut last_activity = Instant::now();
    let mut out = Output::default();
    let mut status: Option<ExitStatus> = None;
    let (mut out_done, mut err_done) = (false, false);
    let mut drain_deadline: Option<Instant> = None;
    let far = started + Duration::from_secs(365 * 24 * 3600);

    let ending = loop {
        if status.is_some() && out_done && err_done {
            break Ending::Exited;
        }
        let idle_at = idle.map_or(far, |d| last_activity + d);
        tokio::select! {
            biased;
            line = out_rx.recv(), if !out_done => match line {
                Some(line) => {
                    last_activity = Instant::now();
                    request.progress.line("stdout", &line);
                    out.push_stdout(line);
                }
                None => out_done = true,
            },
            line = err_rx.recv(), if !err_done => match line {
                Some(line) => {
                    request.progress.line("stderr", &line);
                    out.push_stderr(line);
                }
                None => err_done = true,
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit.map_err(|e| spawn_error(&binary, options, e))?);
                // The leader is gone; whatever is left of its group would only hold the pipes.
                guard.kill();
                drain_deadline = Some(Instant::now() + DRAIN_GRACE);
            },
            _ = sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() => break Ending::Exited,
            _ = sleep_until(deadline.map_or(far, |d| d.0)), if deadline.is_some() && status.is_none() => {
                break Ending::TimedOut(deadline.map_or(Duration::ZERO, |d| d.1));
            },
            _ = sleep_until(idle_at), if idle.is_some() && status.is_none() => {
                break Ending::Idle(idle.unwrap_or_default());
            },
            _ = request.cancel.cancelled() => break Ending::Cancelled,
        }
    };

    if ending != Ending::Exited {
        tracing::debug!(binary = %binary, ?ending, "killing agent CLI process group");
        guard.kill();
        // SIGKILL cannot be ignored, so this returns promptly; it reaps the leader.
        if status.is_none() {
            status = child.wait().await.ok();
        }
        // Keep what was already written to the pipes.
        let drain_until = Instant::now() + DRAIN_GRACE;
        while !(out_done && err_done) {
            tokio::select! {
                line = out_rx.recv(), if !out_done => match line {
                    Some(line) => out.push_stdout(line),
                    None => out_done = true,
                },
                line = err_rx.recv(), if !err_done => match line {
                    Some(line) => out.push_stderr(line),
                    None => err_done = true,
                },
                _ = sleep_until(drain_until) => break,
            }
        }
    }

    Ok(CliRun {
        binary,
        stdout_lines: out.stdout,
        stderr_tail: out.stderr.into_iter().collect::<Vec<_>>().join("\n"),
        exit_code: status.and_then(|s| s.code()),
        ending,
    })
}

#[derive(Default)]
struct Output {
    stdout: Vec<String>,
    stdout_bytes: usize,
    stderr: VecDeque<String>,
    stderr_bytes: usize,
}

impl Output {
    fn push_stdout(&mut self, line: String) {
        if self.stdout_bytes + line.len() <= MAX_TRANSCRIPT_BYTES {
            self.stdout_bytes += line.len() + 1;
            self.stdout.push(line);
        }
    }

    fn push_stderr(&mut self, line: String) {
        self.stderr_bytes += line.len() + 1;
        self.stderr.push_back(line);
        while self.stderr_bytes > MAX_STDERR_BYTES {
            match self.stderr.pop_front() {
                Some(old) => self.stderr_bytes -= old.len() + 1,
                None => break,
            }
        }
    }
}

fn spawn_error(binary: &str, options: &CliOptions, e: io::Error) -> AgentError {
    let hint = options.install_hint;
    let message = match e.kind() {
        io::ErrorKind::NotFound => match &options.cwd {
            Some(dir) if !dir.is_dir() => {
                format!("cannot start `{binary}`: working directory `{}` does not exist", dir.display())
            }
            _ => format!(
                "agent CLI `{binary}` was not found: {hint}, or set its path with `.binary(\"/path/to/{}\")`",
                options.binary.file_name().map_or_else(|| binary.to_owned(), |n| n.to_string_lossy().into_owned())
            ),
        },
        io::ErrorKind::PermissionDenied => {
            format!("agent CLI `{binary}` cannot be executed (permission denied): make it executable")
        }
        _ => format!("cannot start agent CLI `{binary}`: {e}"),
    };
    AgentError::terminal(message)
}

/// A prompt as a command-line value: a leading `-` would be parsed as a flag, so it gets a
/// leading space, which the model does not mind.
pub(crate) fn prompt_arg(prompt: &str) -> OsString {
    if prompt.starts_with('-') {
        format!(" {prompt}").into()
    } else {
        prompt.into()
    }
}
