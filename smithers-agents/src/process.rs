//! Running an agent CLI as a well-behaved child process, shared by every CLI agent.
//!
//! The child gets `/dev/null` as stdin (codex hangs forever on an open stdin pipe), runs in its
//! own process group, and is killed with its whole group (SIGKILL to `-pgid`) when our wall-clock
//! or idle timeout fires, when the request is cancelled, when the leader exits (stragglers of its
//! group are not waited for), and when the future is dropped. The leader is always reaped.
//!
//! **Stdout and stderr go to files, not pipes.** The Node and Bun CLIs write a slow pipe
//! asynchronously and exit without flushing it: a 5 MB reply arrived cut at a multiple of 64 KiB
//! while the same CLI writing to a file gave all of it. A write to a regular file never blocks or
//! fails with `EAGAIN`, so everything the child wrote is in the file when it exits. We tail the
//! files while the child runs (every line goes to the request's progress sink as it arrives) and
//! read them to the end once it has exited; stdout is kept as the raw transcript and the tail of
//! stderr for error messages.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use smithers_core::{AgentError, AgentRequest, TaskError, Usage};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};

use crate::cli::CliOptions;

/// Most stdout bytes kept as the transcript; later lines still reach the progress sink.
const MAX_TRANSCRIPT_BYTES: usize = 64 << 20;
/// Most stderr bytes kept (the tail: errors come last).
const MAX_STDERR_BYTES: usize = 64 << 10;
/// How long to wait for the output files to be read once the process group is gone.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How often a tailed output file is read again while the child runs.
const TAIL_POLL: Duration = Duration::from_millis(25);

/// A command to run: the program and arguments built by one agent for one request.
pub(crate) struct CliCommand<'a> {
    pub(crate) options: &'a CliOptions,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    /// How to read the CLI's JSON events while it runs.
    pub(crate) watch: Watch,
}

/// What an agent reads from each JSON event while its CLI runs: a line a person can read
/// (reported on the `agent` progress stream instead of the raw line, which stays in the
/// transcript) and the usage so far (reported for the budgets).
#[derive(Clone, Copy)]
pub(crate) struct Watch {
    pub(crate) summarize: fn(&serde_json::Value) -> Option<String>,
    /// Updates the usage so far from an event; true when it changed.
    pub(crate) usage: fn(&mut LiveUsage, &serde_json::Value) -> bool,
}

/// The usage of a running CLI, as its events report it.
#[derive(Debug, Default)]
pub(crate) struct LiveUsage {
    /// The latest usage of each model message (by id); summed for the total.
    pub(crate) per_message: Vec<(String, Usage)>,
    pub(crate) model: Option<String>,
}

impl LiveUsage {
    /// Sets the usage of message `id`.
    pub(crate) fn message(&mut self, id: &str, usage: Usage) {
        match self.per_message.iter_mut().find(|(m, _)| m == id) {
            Some((_, u)) => *u = usage,
            None => self.per_message.push((id.to_owned(), usage)),
        }
    }

    /// The usage so far.
    pub(crate) fn current(&self) -> Usage {
        let mut sum = Usage::default();
        for (_, u) in &self.per_message {
            sum.add(u);
        }
        sum
    }
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
    /// The exit code, or 128 + the signal that killed the process (the shell's convention).
    pub(crate) exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    pub(crate) signal: Option<i32>,
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

    /// An agent error carrying this run's transcript, exit code and the session id it printed.
    pub(crate) fn error(
        &self,
        error: TaskError,
        usage: Usage,
        session_id: Option<String>,
    ) -> AgentError {
        AgentError {
            error,
            usage,
            transcript: Some(self.transcript()),
            exit_code: self.exit_code,
            session_id,
        }
    }

    /// How the process ended, for messages: `exit code 1`, `killed by signal 9`.
    pub(crate) fn exit_description(&self) -> String {
        match (self.signal, self.exit_code) {
            (Some(sig), _) => format!("killed by signal {sig}"),
            (None, Some(code)) => format!("exit code {code}"),
            (None, None) => "no exit status".to_owned(),
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
    /// `errors` are the error events the CLI printed before (its own view of what went wrong).
    pub(crate) fn interrupted(
        &self,
        usage: Usage,
        session_id: Option<String>,
        errors: &[String],
    ) -> Option<AgentError> {
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
        if !errors.is_empty() {
            message.push_str(&format!("; it reported: {}", errors_summary(errors)));
        }
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
        let error = match self.ending {
            // A cancel is a decision, not a failure of the agent: the engine records it as such.
            Ending::Cancelled => TaskError::terminal(message),
            _ => TaskError::retryable(message),
        };
        Some(self.error(error, usage, session_id))
    }
}

/// The error events a CLI printed, for a message: the last few, deduplicated, each cut short.
pub(crate) fn errors_summary(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors.iter().rev() {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
        if seen.len() == 3 {
            break;
        }
    }
    seen.reverse();
    seen.iter()
        .map(|e| crate::stream::truncate(e, 500))
        .collect::<Vec<_>>()
        .join(" | ")
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

/// Aborts a tailing task when dropped (the future of the run was dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A scratch file the child writes one of its streams to, and our handle reading it.
struct Capture {
    /// Deletes the file when dropped (after the run).
    _file: tempfile::NamedTempFile,
    /// The child's end: same file, written from offset 0.
    child: std::fs::File,
    /// Our end: a separate open file description, so its offset is ours.
    reader: std::fs::File,
}

fn capture(stream: &str, binary: &str) -> Result<Capture, AgentError> {
    let io_error = |e: io::Error| {
        AgentError::from(TaskError::io(
            format_args!(
                "cannot create the file capturing the {stream} of `{binary}` in {}",
                std::env::temp_dir().display()
            ),
            &e,
        ))
    };
    let file = tempfile::Builder::new()
        .prefix(&format!("smithers-{stream}-"))
        .tempfile()
        .map_err(io_error)?;
    let child = file.as_file().try_clone().map_err(io_error)?;
    let reader = file.reopen().map_err(io_error)?;
    Ok(Capture {
        _file: file,
        child,
        reader,
    })
}

/// Tails `file` while the child runs, sending each complete line; once `finished` turns true it
/// reads to the end (sending a last unterminated line too) and closes the channel.
fn spawn_tailer(
    file: std::fs::File,
    tx: mpsc::UnboundedSender<String>,
    mut finished: watch::Receiver<bool>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut file = tokio::fs::File::from_std(file);
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 256 << 10];
        let send = |bytes: &[u8]| {
            let mut line = bytes;
            while let [rest @ .., b'\n' | b'\r'] = line {
                line = rest;
            }
            tx.send(String::from_utf8_lossy(line).into_owned()).is_ok()
        };
        loop {
            // Read before checking `finished`: what was written before the exit is all there.
            let done = *finished.borrow_and_update();
            let n = match file.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read an agent CLI's output file");
                    break;
                }
            };
            if n > 0 {
                pending.extend_from_slice(&chunk[..n]);
                let mut start = 0;
                while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
                    if !send(&pending[start..start + i]) {
                        return;
                    }
                    start += i + 1;
                }
                pending.drain(..start);
                continue;
            }
            if done {
                break;
            }
            tokio::select! {
                _ = sleep(TAIL_POLL) => {}
                _ = finished.changed() => {}
            }
        }
        if !pending.is_empty() {
            send(&pending);
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
    let stdout = capture("stdout", &binary)?;
    let stderr = capture("stderr", &binary)?;
    let mut cmd = tokio::process::Command::new(&options.binary);
    cmd.args(&command.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout.child))
        .stderr(Stdio::from(stderr.child))
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

    // Our copies of the child's ends were moved into the command: drop it so only the child
    // holds them.
    drop(cmd);
    let (finished_tx, finished_rx) = watch::channel(false);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let (err_tx, mut err_rx) = mpsc::unbounded_channel();
    let _tailers = (
        spawn_tailer(stdout.reader, out_tx, finished_rx.clone()),
        spawn_tailer(stderr.reader, err_tx, finished_rx),
    );

    let deadline = request
        .timeout
        .or(options.timeout)
        .map(|t| (started + t, t));
    let idle = options.idle_timeout;
    let mut last_activity = Instant::now();
    let mut live = LiveUsage::default();
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
                    watch_line(&command.watch, &mut live, request, &line);
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
                // The leader is gone: what is left of its group is not waited for, and what it
                // wrote is in the files, to be read to the end.
                guard.kill();
                let _ = finished_tx.send(true);
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
        let _ = finished_tx.send(true);
        // Keep what was already written to the files.
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
        exit_code: status.and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.code().or_else(|| s.signal().map(|sig| 128 + sig))
        }),
        signal: status.and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.signal()
        }),
        ending,
    })
}

/// Reports one stdout line: a JSON event as its summary (if it has one) and the usage so far
/// (if it changed); anything else as the raw line.
fn watch_line(watch: &Watch, live: &mut LiveUsage, request: &AgentRequest, line: &str) {
    let Some(event) = crate::stream::parse_line(line) else {
        if !line.trim().is_empty() {
            request.progress.line("stdout", line);
        }
        return;
    };
    if let Some(summary) = (watch.summarize)(&event) {
        request.progress.line("agent", &summary);
    }
    if (watch.usage)(live, &event) {
        request
            .progress
            .usage(&live.current(), live.model.as_deref());
    }
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
