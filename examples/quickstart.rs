//! Quick start: a durable workflow over this repository's own files, with no agent and nothing
//! to set up. A sequence scans the tree, a parallel group measures it three ways, and a branch
//! picks the report that fits what was found.
//!
//! ```text
//! cargo run --example quickstart -- run --input '{"root": "."}'
//! cargo run --example quickstart -- status
//! cargo run --example quickstart -- graph
//! ```
//! Kill it at any moment (Ctrl-C or `kill -9`) and `resume` continues: finished nodes never run again.

use std::path::{Path, PathBuf};

use smithers::prelude::*;

/// What the workflow is asked to look at.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    /// Directory to scan (default: the current directory).
    #[serde(default = "dot")]
    root: String,
}

fn dot() -> String {
    ".".into()
}

/// The Rust sources found under the root.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Scan {
    /// Paths relative to the root, sorted.
    files: Vec<String>,
}

/// Line counts of the scanned files.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Lines {
    total: i64,
    /// The longest file and its line count.
    longest: Option<String>,
    longest_lines: i64,
}

/// `TODO`/`FIXME` markers left in the code.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Markers {
    count: i64,
    /// `path:line` of each marker.
    places: Vec<String>,
}

/// How much of the code is tests.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct TestShare {
    test_files: i64,
    test_functions: i64,
}

/// The report written at the end.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Report {
    path: String,
    headline: String,
}

const SCAN: Ref<Scan> = Ref::new("scan");
const LINES: Ref<Lines> = Ref::new("lines");
const MARKERS: Ref<Markers> = Ref::new("markers");
const TESTS: Ref<TestShare> = Ref::new("tests");
const REPORT: Ref<Report> = Ref::new("report");

fn quickstart(ctx: &Ctx<Input>) -> Node {
    let root = PathBuf::from(&ctx.input().root);
    // Rendering only reads persisted outputs; the file work happens inside tasks.
    let scan = ctx.output_maybe(SCAN);
    let lines = ctx.output_maybe(LINES);
    let markers = ctx.output_maybe(MARKERS);
    let tests = ctx.output_maybe(TESTS);
    let has_markers = markers.as_ref().is_some_and(|m| m.count > 0);
    let files = scan.map(|s| s.files).unwrap_or_default();
    let summary = format!(
        "{} Rust files, {} lines ({} in {}), {} test functions in {} files",
        files.len(),
        lines.as_ref().map_or(0, |l| l.total),
        lines.as_ref().map_or(0, |l| l.longest_lines),
        lines
            .as_ref()
            .and_then(|l| l.longest.clone())
            .unwrap_or_default(),
        tests.as_ref().map_or(0, |t| t.test_functions),
        tests.as_ref().map_or(0, |t| t.test_files),
    );

    workflow! {
        <Workflow name="quickstart">
            <Task id=SCAN run={scan_task(root.clone())} />
            <Parallel max_concurrency=3>
                <Task id=LINES run={lines_task(root.clone(), files.clone())} />
                <Task id=MARKERS run={markers_task(root.clone(), files.clone())} />
                <Task id=TESTS run={tests_task(root.clone(), files.clone())} />
            </Parallel>
            <Branch if={has_markers}>
                <Task id=REPORT run={report_task(root.clone(), summary.clone(), markers.map(|m| m.places))} />
                <Task id=REPORT run={report_task(root.clone(), summary.clone(), None)} />
            </Branch>
        </Workflow>
    }
}

fn scan_task(root: PathBuf) -> impl Fn(TaskCtx) -> futures_like::Ready<Scan> + Send + Sync {
    move |_t| {
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files.sort();
        futures_like::ready(Ok(Scan { files }))
    }
}

fn lines_task(
    root: PathBuf,
    files: Vec<String>,
) -> impl Fn(TaskCtx) -> futures_like::Ready<Lines> + Send + Sync {
    move |_t| {
        let mut total = 0;
        let mut longest = (None, 0);
        for f in &files {
            let n = read(&root, f).lines().count() as i64;
            total += n;
            if n > longest.1 {
                longest = (Some(f.clone()), n);
            }
        }
        futures_like::ready(Ok(Lines {
            total,
            longest: longest.0,
            longest_lines: longest.1,
        }))
    }
}

fn markers_task(
    root: PathBuf,
    files: Vec<String>,
) -> impl Fn(TaskCtx) -> futures_like::Ready<Markers> + Send + Sync {
    move |_t| {
        let (todo, fixme) = (concat!("TO", "DO"), concat!("FIX", "ME"));
        let places: Vec<String> = files
            .iter()
            .flat_map(|f| {
                read(&root, f)
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| l.contains(todo) || l.contains(fixme))
                    .map(|(i, _)| format!("{f}:{}", i + 1))
                    .collect::<Vec<_>>()
            })
            .collect();
        futures_like::ready(Ok(Markers {
            count: places.len() as i64,
            places,
        }))
    }
}

fn tests_task(
    root: PathBuf,
    files: Vec<String>,
) -> impl Fn(TaskCtx) -> futures_like::Ready<TestShare> + Send + Sync {
    move |_t| {
        let mut share = TestShare {
            test_files: 0,
            test_functions: 0,
        };
        for f in &files {
            let n = read(&root, f).matches("#[test]").count()
                + read(&root, f).matches("#[tokio::test]").count();
            if n > 0 {
                share.test_files += 1;
                share.test_functions += n as i64;
            }
        }
        futures_like::ready(Ok(share))
    }
}

fn report_task(
    root: PathBuf,
    summary: String,
    markers: Option<Vec<String>>,
) -> impl Fn(TaskCtx) -> futures_like::Ready<Report> + Send + Sync {
    move |t| {
        let path = root
            .join(".smithers")
            .join(format!("report-{}.md", t.run_id()));
        let mut text = format!("# Repository report\n\n{summary}\n");
        match &markers {
            Some(places) => {
                text.push_str(&format!("\n## {} marker(s) to look at\n\n", places.len()));
                for p in places {
                    text.push_str(&format!("- {p}\n"));
                }
            }
            None => text.push_str("\nNo open markers: the code is clean.\n"),
        }
        let result = std::fs::create_dir_all(path.parent().unwrap_or(&root))
            .and_then(|()| std::fs::write(&path, text))
            .map(|()| Report {
                path: path.display().to_string(),
                headline: summary.clone(),
            })
            .map_err(|e| TaskError::retryable(format!("cannot write {}: {e}", path.display())));
        futures_like::ready(result)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
        }
    }
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file)).unwrap_or_default()
}

/// Compute bodies here do quick synchronous file work, so they return ready futures.
mod futures_like {
    pub(crate) type Ready<T> = std::future::Ready<Result<T, smithers::TaskError>>;
    pub(crate) fn ready<T>(r: Result<T, smithers::TaskError>) -> Ready<T> {
        std::future::ready(r)
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::main(quickstart).await
}
