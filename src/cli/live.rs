//! Live progress in a terminal: the run's tree (its latest frame) with each task's state,
//! iteration, attempt, elapsed time and last progress line, redrawn in place on stderr as events
//! arrive. Lasting lines (run started, retries, failures, the end) scroll above the tree.
//!
//! The [`Board`] is the model: events in, lines out, no I/O. [`LiveProgress`] owns a task that
//! feeds it, reads frames from the store and redraws.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smithers_core::engine::EventListener;
use smithers_core::events::{Event, EventKind};
use smithers_core::node::FrameNode;
use smithers_core::store::{NodeStatus, Store};
use tokio::sync::mpsc;

/// What a task is doing, as shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Retrying,
    Finished,
    Failed,
    Skipped,
}

impl State {
    fn symbol(self) -> &'static str {
        match self {
            State::Pending => "·",
            State::Running => "▶",
            State::Retrying => "↻",
            State::Finished => "✔",
            State::Failed => "✘",
            State::Skipped => "⤼",
        }
    }

    fn word(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Finished => "finished",
            State::Failed => "failed",
            State::Skipped => "skipped",
        }
    }

    fn is_done(self) -> bool {
        matches!(self, State::Finished | State::Skipped)
    }
}

#[derive(Clone, Debug)]
struct Task {
    state: State,
    iteration: u32,
    attempt: u32,
    started: Option<Instant>,
    took: Option<Duration>,
    last_line: Option<String>,
}

/// One shown line of a frame: a mounted node at its depth (see `FrameNode::lines`).
#[derive(Clone, Debug, PartialEq)]
struct TreeLine {
    depth: usize,
    tag: String,
    /// `id` or `name`.
    label: Option<String>,
    agent: Option<String>,
}

/// The lines of a frame's structure; what the render did not mount is left out.
fn tree_lines(frame: &FrameNode) -> Vec<TreeLine> {
    frame
        .lines()
        .into_iter()
        .map(|l| TreeLine {
            depth: l.depth,
            tag: l.node.tag.clone(),
            label: l.node.display_label().map(str::to_owned),
            agent: l.node.agent.clone(),
        })
        .collect()
}

/// The live view's model: fed events, rendered to lines.
#[derive(Debug, Default)]
pub struct Board {
    tree: Vec<TreeLine>,
    tasks: HashMap<String, Task>,
    /// Tasks seen in events, in order (what is shown before a frame is known).
    order: Vec<String>,
    loops: HashMap<String, u32>,
    ticks: usize,
}

impl Board {
    /// A board with nothing known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows this frame's tree.
    pub fn set_frame(&mut self, frame: &FrameNode) {
        self.tree = tree_lines(frame);
    }

    /// Seeds task states from the store (a resumed run's finished nodes).
    pub fn seed(&mut self, node_id: &str, iteration: u32, status: NodeStatus, attempts: u32) {
        let state = match status {
            NodeStatus::Running => State::Running,
            NodeStatus::Finished => State::Finished,
            NodeStatus::Failed => State::Failed,
            NodeStatus::Skipped => State::Skipped,
            _ => State::Pending,
        };
        let t = self.task(node_id, iteration);
        t.state = state;
        t.attempt = attempts;
    }

    fn task(&mut self, node_id: &str, iteration: u32) -> &mut Task {
        if !self.tasks.contains_key(node_id) {
            self.order.push(node_id.to_owned());
        }
        let t = self.tasks.entry(node_id.to_owned()).or_insert(Task {
            state: State::Pending,
            iteration,
            attempt: 0,
            started: None,
            took: None,
            last_line: None,
        });
        if iteration != t.iteration {
            // A new iteration of a loop body starts from scratch.
            *t = Task {
                state: State::Pending,
                iteration,
                attempt: 0,
                started: None,
                took: None,
                last_line: None,
            };
        }
        t
    }

    /// Applies an event; returns the lines that should stay on screen above the tree.
    pub fn apply(&mut self, e: &Event, now: Instant) -> Vec<String> {
        let lasting = match &e.kind {
            EventKind::RunStarted { .. }
            | EventKind::RunResumed { .. }
            | EventKind::NodeRetrying { .. }
            | EventKind::NodeFailed { .. }
            | EventKind::RunFinished
            | EventKind::RunFailed { .. }
            | EventKind::RunCancelled
            | EventKind::RunQueued { .. } => vec![super::logs::describe(e)],
            _ => Vec::new(),
        };
        if let EventKind::LoopIterated { loop_id, iteration } = &e.kind {
            self.loops.insert(loop_id.clone(), *iteration);
        }
        let (Some(node), Some(it)) = (e.node_id.as_deref(), e.iteration) else {
            return lasting;
        };
        let t = self.task(node, it);
        match &e.kind {
            EventKind::NodeStarted { attempt } => {
                t.state = State::Running;
                t.attempt = *attempt;
                t.started = Some(now);
                t.took = None;
            }
            EventKind::NodeFinished { attempt, .. } => {
                t.state = State::Finished;
                t.attempt = *attempt;
                t.took = t.started.map(|s| now - s);
            }
            EventKind::NodeRetrying { attempt, .. } => {
                t.state = State::Retrying;
                t.attempt = *attempt;
            }
            EventKind::NodeFailed { attempt, .. } => {
                t.state = State::Failed;
                t.attempt = *attempt;
                t.took = t.started.map(|s| now - s);
            }
            EventKind::NodeSkipped => t.state = State::Skipped,
            EventKind::NodeOutput { line, .. } => t.last_line = Some(line.clone()),
            _ => {}
        }
        lasting
    }

    /// Whether something is running (the view then redraws on a timer for elapsed times).
    pub fn is_busy(&self) -> bool {
        self.tasks
            .values()
            .any(|t| matches!(t.state, State::Running | State::Retrying))
    }

    fn task_line(&self, indent: usize, id: &str, agent: Option<&str>, now: Instant) -> String {
        let mut s = format!("{:indent$}", "", indent = indent * 2);
        let Some(t) = self.tasks.get(id) else {
            let _ = write!(s, "· {id}  pending");
            if let Some(a) = agent {
                let _ = write!(s, "  {a}");
            }
            return s;
        };
        let symbol = if t.state == State::Running {
            const SPIN: [&str; 4] = ["◐", "◓", "◑", "◒"];
            SPIN[self.ticks % SPIN.len()]
        } else {
            t.state.symbol()
        };
        let _ = write!(s, "{symbol} {id}");
        if t.iteration > 0 {
            let _ = write!(s, "#{}", t.iteration);
        }
        let _ = write!(s, "  {}", t.state.word());
        if t.attempt > 1 {
            let _ = write!(s, " (attempt {})", t.attempt);
        }
        if let Some(a) = agent {
            let _ = write!(s, "  {a}");
        }
        let elapsed = match (t.took, t.started) {
            (Some(d), _) => Some(d),
            (None, Some(st)) if !t.state.is_done() && t.state != State::Failed => Some(now - st),
            _ => None,
        };
        if let Some(d) = elapsed {
            let _ = write!(s, "  {}", clock(d));
        }
        if matches!(t.state, State::Running | State::Retrying) {
            if let Some(l) = &t.last_line {
                let _ = write!(s, "  │ {l}");
            }
        }
        s
    }

    /// The tree as lines, each at most `width` characters, at most `height` lines: finished
    /// tasks fold into one line first, then the tail is cut.
    pub fn render(&self, now: Instant, width: usize, height: usize) -> Vec<String> {
        let mut lines: Vec<(Fold, String)> = Vec::new();
        if self.tree.is_empty() {
            for id in &self.order {
                lines.push((self.fold(id), self.task_line(1, id, None, now)));
            }
        } else {
            // A task id shows once: the text of a `<Branch>` lists both arms.
            let mut shown = std::collections::HashSet::new();
            for l in &self.tree {
                match (l.tag.as_str(), &l.label) {
                    ("Task", Some(id)) if !shown.insert(id) => {}
                    ("Task", Some(id)) => lines.push((
                        self.fold(id),
                        self.task_line(l.depth, id, l.agent.as_deref(), now),
                    )),
                    (tag, label) => {
                        let mut s = format!("{:indent$}{tag}", "", indent = l.depth * 2);
                        if let Some(label) = label {
                            let _ = write!(s, " {label}");
                        }
                        let loop_it = label.as_ref().and_then(|id| self.loops.get(id));
                        if let Some(it) = loop_it.filter(|_| tag == "Ralph") {
                            let _ = write!(s, " (iteration {it})");
                        }
                        lines.push((Fold::Container, s));
                    }
                }
            }
        }
        let height = height.max(3);
        if lines.len() > height {
            let done = lines.iter().filter(|(d, _)| *d == Fold::Done).count();
            lines.retain(|(d, _)| *d != Fold::Done);
            lines.insert(0, (Fold::Keep, format!("✔ {done} task(s) done")));
        }
        if lines.len() > height {
            lines.retain(|(d, _)| *d != Fold::Container);
        }
        if lines.len() > height {
            let cut = lines.len() - (height - 1);
            lines.truncate(height - 1);
            lines.push((Fold::Keep, format!("… {cut} more line(s)")));
        }
        lines
            .into_iter()
            .map(|(_, l)| smithers_core::text::truncate(&l, width))
            .collect()
    }

    fn fold(&self, id: &str) -> Fold {
        if self.tasks.get(id).is_some_and(|t| t.state.is_done()) {
            Fold::Done
        } else {
            Fold::Keep
        }
    }
}

/// What goes first when the tree is taller than the terminal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fold {
    /// A finished or skipped task: folded into a count.
    Done,
    /// A container line: dropped next.
    Container,
    /// Kept as long as there is room.
    Keep,
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..10 => format!("{:.1}s", d.as_secs_f64()),
        10..60 => format!("{s}s"),
        _ => format!("{}m{:02}s", s / 60, s % 60),
    }
}

/// Columns and rows of the terminal on stderr (100x40 when stderr is not a terminal).
fn term_size() -> (usize, usize) {
    match terminal_size::terminal_size_of(std::io::stderr()) {
        Some((terminal_size::Width(w), terminal_size::Height(h))) if w > 0 && h > 0 => {
            (usize::from(w), usize::from(h))
        }
        _ => (100, 40),
    }
}

/// Whether stderr is a terminal that can be redrawn in place.
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

enum Msg {
    Event(Event),
    /// The run stopped: draw the last state and end (the engine may still hold a listener).
    Finish,
}

/// The live view of one run on stderr.
pub struct LiveProgress {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl LiveProgress {
    /// Starts the view; frames are read from `store`.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(store, rx));
        LiveProgress { tx, task }
    }

    /// The engine's `on_event`: hands each event to the view.
    pub fn listener(&self) -> EventListener {
        let tx = self.tx.clone();
        Arc::new(move |e: &Event| {
            let _ = tx.send(Msg::Event(e.clone()));
        })
    }

    /// Draws the last state and leaves it on screen.
    pub async fn finish(self) {
        let _ = self.tx.send(Msg::Finish);
        let _ = self.task.await;
    }
}

async fn drive(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut board = Board::new();
    let mut screen = Screen::default();
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut finished = false;
    while !finished {
        let mut lasting = Vec::new();
        tokio::select! {
            msg = rx.recv() => {
                let Some(Msg::Event(e)) = msg else { break };
                match &e.kind {
                    EventKind::RunStarted { .. } | EventKind::RunResumed { .. } => {
                        if let Ok(nodes) = store.nodes(&e.run_id).await {
                            for n in nodes {
                                board.seed(&n.node_id, n.iteration, n.status, n.attempts);
                            }
                        }
                        if let Ok(Some(f)) = store.frame(&e.run_id, None).await {
                            board.set_frame(&f.structure);
                        }
                    }
                    EventKind::FrameRendered { frame } => {
                        if let Ok(Some(f)) = store.frame(&e.run_id, Some(*frame)).await {
                            board.set_frame(&f.structure);
                        }
                    }
                    _ => {}
                }
                lasting = board.apply(&e, Instant::now());
                // Take what else is queued before drawing once.
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        Msg::Event(e) => lasting.extend(board.apply(&e, Instant::now())),
                        Msg::Finish => finished = true,
                    }
                }
            }
            _ = tick.tick() => {
                if !board.is_busy() {
                    continue;
                }
                board.ticks += 1;
            }
        }
        screen.draw(&board, &lasting);
    }
    if !finished {
        screen.draw(&board, &[]);
    }
}

/// What was drawn last: how many lines to move up over.
#[derive(Default)]
struct Screen {
    drawn: usize,
}

impl Screen {
    fn draw(&mut self, board: &Board, lasting: &[String]) {
        let (cols, rows) = term_size();
        let tree = board.render(
            Instant::now(),
            cols.saturating_sub(1),
            rows.saturating_sub(2),
        );
        let mut out = String::new();
        if self.drawn > 0 {
            let _ = write!(out, "\r\x1b[{}A", self.drawn);
        }
        out.push_str("\x1b[J");
        for l in lasting {
            out.push_str(l);
            out.push('\n');
        }
        for l in &tree {
            out.push_str(l);
            out.push('\n');
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
        self.drawn = tree.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smithers_core::Timestamp;

    #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct N {
        n: i64,
    }
    impl smithers_core::Output for N {
        const TABLE: &'static str = "n";
        const COLUMNS: &'static [smithers_core::output::Column] = &[];
    }

    fn value_task(id: &str) -> smithers_core::Node {
        smithers_core::node::Task::<N>::new()
            .id(id)
            .value(N { n: 1 })
            .build()
    }

    #[test]
    fn the_unmounted_arm_of_a_branch_is_not_shown() {
        use smithers_core::node::{Branch, Workflow};
        let tree = Workflow::new()
            .name("w")
            .child(
                Branch::new()
                    .cond(true)
                    .then(value_task("yes"))
                    .otherwise(value_task("no"))
                    .build(),
            )
            .child(value_task("after"))
            .build();
        let labels: Vec<Option<String>> = tree_lines(&tree.frame())
            .into_iter()
            .filter(|l| l.tag == "Task")
            .map(|l| l.label)
            .collect();
        assert_eq!(labels, [Some("yes".to_owned()), Some("after".to_owned())]);
    }

    const TREE: &str = r#"<Workflow name="bugfix">
  <Task id="analyze" output=Analysis agent=claude retries=2 />
  <Ralph id="ralph" until=false max_iterations=3 on_max_reached=Fail>
    <Task id="fix" output=Patch agent=codex />
    <Task id="review" output=Review agent=claude continue_on_fail />
  </Ralph>
</Workflow>
"#;

    fn node(id: &str, it: u32, kind: EventKind) -> Event {
        Event::node("r", id, it, Timestamp::default(), kind)
    }

    fn check(events: &[Event], height: usize, expect: &str) {
        let mut b = Board::new();
        b.set_frame(&FrameNode::from_legacy_text(TREE));
        let now = Instant::now();
        let mut lasting = Vec::new();
        for e in events {
            lasting.extend(b.apply(e, now));
        }
        let mut shown = lasting.join("\n");
        shown.push_str("\n--\n");
        shown.push_str(&b.render(now, 60, height).join("\n"));
        assert_eq!(shown.trim(), expect.trim(), "\n{shown}");
    }

    #[test]
    fn the_tree_shows_each_task_state_attempt_and_last_line() {
        check(
            &[
                Event::run(
                    "r",
                    Timestamp::default(),
                    EventKind::RunStarted {
                        workflow: "bugfix".into(),
                    },
                ),
                node("analyze", 0, EventKind::NodeStarted { attempt: 1 }),
                node(
                    "analyze",
                    0,
                    EventKind::NodeFinished {
                        attempt: 1,
                        usage: None,
                    },
                ),
                Event::run(
                    "r",
                    Timestamp::default(),
                    EventKind::LoopIterated {
                        loop_id: "ralph".into(),
                        iteration: 1,
                    },
                ),
                node("fix", 1, EventKind::NodeStarted { attempt: 1 }),
                node(
                    "fix",
                    1,
                    EventKind::NodeRetrying {
                        attempt: 1,
                        error: "HTTP 500".into(),
                    },
                ),
                node("fix", 1, EventKind::NodeStarted { attempt: 2 }),
                node(
                    "fix",
                    1,
                    EventKind::NodeOutput {
                        stream: "stdout".into(),
                        line: "editing src/lib.rs".into(),
                    },
                ),
            ],
            20,
            "
run r started (bugfix)
  ↻ fix#1: HTTP 500
--
Workflow bugfix
  ✔ analyze  finished  claude  0.0s
  Ralph ralph (iteration 1)
    ◐ fix#1  running (attempt 2)  codex  0.0s  │ editing sr…
    · review  pending  claude",
        );
    }

    #[test]
    fn failures_and_skips_stay_visible_and_lines_fit_the_width() {
        check(
            &[
                node("analyze", 0, EventKind::NodeSkipped),
                node("fix", 0, EventKind::NodeStarted { attempt: 3 }),
                node(
                    "fix",
                    0,
                    EventKind::NodeFailed {
                        attempt: 3,
                        error: "no diff".into(),
                    },
                ),
                Event::run(
                    "r",
                    Timestamp::default(),
                    EventKind::RunFailed {
                        error: "node `fix` failed".into(),
                    },
                ),
            ],
            20,
            "
  ✘ fix#0: no diff
run r failed: node `fix` failed
--
Workflow bugfix
  ⤼ analyze  skipped  claude
  Ralph ralph
    ✘ fix  failed (attempt 3)  codex  0.0s
    · review  pending  claude",
        );
    }

    #[test]
    fn a_tall_tree_folds_finished_tasks_first() {
        check(
            &[
                node(
                    "analyze",
                    0,
                    EventKind::NodeFinished {
                        attempt: 1,
                        usage: None,
                    },
                ),
                node("fix", 0, EventKind::NodeStarted { attempt: 1 }),
            ],
            4,
            "
--
✔ 1 task(s) done
    ◐ fix  running  codex  0.0s
    · review  pending  claude",
        );
    }

    #[test]
    fn a_frame_recorded_as_text_reads_to_tags_labels_and_agents() {
        let lines = tree_lines(&FrameNode::from_legacy_text(TREE));
        let got: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.depth,
                    l.tag.as_str(),
                    l.label.as_deref(),
                    l.agent.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "Workflow", Some("bugfix"), None),
                (1, "Task", Some("analyze"), Some("claude")),
                (1, "Ralph", Some("ralph"), None),
                (2, "Task", Some("fix"), Some("codex")),
                (2, "Task", Some("review"), Some("claude")),
            ]
        );
    }
}
