//! A reusable component: `<FileStats>` measures the files with one extension, and the workflow
//! uses it once per extension inside a `<Parallel>`. Components are plain functions with typed
//! props; a missing or misspelled prop is a compile error at the tag.
//!
//! ```text
//! cargo run --example component -- run --input '{"root": ".", "extensions": ["rs", "md", "toml"]}'
//! ```

use std::path::{Path, PathBuf};

use smithers::prelude::*;

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    root: String,
    extensions: Vec<String>,
}

/// Size of the files with one extension.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct FileStats {
    extension: String,
    files: i64,
    bytes: i64,
}

/// Which extension holds the most bytes.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Biggest {
    extension: String,
    bytes: i64,
}

/// Measures every `*.{extension}` file under `root` into a `FileStats` output with id `id`.
#[component]
fn FileStatsTask(id: String, root: PathBuf, extension: String) -> Node {
    workflow! {
        <Task id={id} output=FileStats run={move |_t: TaskCtx| {
            let (root, extension) = (root.clone(), extension.clone());
            async move {
                let (mut files, mut bytes) = (0, 0);
                visit(&root, &mut |p: &Path| {
                    if p.extension().is_some_and(|x| x == extension.as_str()) {
                        files += 1;
                        bytes += p.metadata().map_or(0, |m| m.len() as i64);
                    }
                });
                Ok::<_, TaskError>(FileStats { extension, files, bytes })
            }
        }} />
    }
}

fn stats_id(ext: &str) -> String {
    format!("stats-{ext}")
}

fn workflow(ctx: &Ctx<Input>) -> Node {
    let input = ctx.input();
    let root = PathBuf::from(&input.root);
    let stats: Vec<FileStats> = input
        .extensions
        .iter()
        .filter_map(|e| ctx.output_maybe::<FileStats>(stats_id(e)))
        .collect();
    let all_measured = stats.len() == input.extensions.len();
    let biggest = stats.iter().max_by_key(|s| s.bytes).map(|s| Biggest {
        extension: s.extension.clone(),
        bytes: s.bytes,
    });

    workflow! {
        <Workflow name="file-stats">
            <Parallel max_concurrency=4>
                { input.extensions.iter().map(|ext| workflow! {
                    <FileStatsTask id={stats_id(ext)} root={root.clone()} extension={ext.clone()} />
                }) }
            </Parallel>
            <Branch if={all_measured}>
                <Task id="biggest" output=Biggest value={biggest.unwrap_or(Biggest { extension: String::new(), bytes: 0 })} />
            </Branch>
        </Workflow>
    }
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') || name == "target" {
            continue;
        }
        if p.is_dir() {
            visit(&p, f);
        } else {
            f(&p);
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::main(workflow).await
}
