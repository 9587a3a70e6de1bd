//! The architecture invariants that the compiler does not check, checked on the source text:
//! the module graph of smithers-core has no cycle, and the domain model is a leaf.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its path relative to `dir`.
fn rust_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read the source directory") {
            let path: PathBuf = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(dir)
                    .expect("under the source directory")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((
                    rel,
                    std::fs::read_to_string(&path).expect("read a source file"),
                ));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its unit tests (test files and what follows `#[cfg(test)]`)
/// and without comments.
fn non_test_source(rel: &str, text: &str) -> Option<String> {
    if rel.ends_with("tests.rs") {
        return None;
    }
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    Some(
        code.lines()
            .map(|l| match l.find("//") {
                Some(i) => &l[..i],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The crate-level modules each top-level module of smithers-core names with `crate::`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in rust_files(&src) {
        let top = rel
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" {
            continue;
        }
        let Some(code) = non_test_source(&rel, &text) else {
            continue;
        };
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `use crate::{a, b::c}`
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![rest],
            };
            for name in names {
                let m: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !m.is_empty() && m != top {
                    deps.insert(m);
                }
            }
        }
    }
    graph
}

#[test]
fn the_module_graph_of_the_core_has_no_cycle() {
    let graph = module_graph();
    // Kahn's algorithm: peel off modules whose dependencies are all peeled; what is left is on
    // a cycle.
    let mut left = graph.clone();
    loop {
        let free: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if free.is_empty() {
            break;
        }
        for m in free {
            left.remove(&m);
        }
    }
    assert!(
        left.is_empty(),
        "modules on an import cycle: {left:?} (whole graph: {graph:?})"
    );
}

#[test]
fn the_domain_model_imports_nothing_from_the_crate() {
    let graph = module_graph();
    assert_eq!(graph.get("model"), Some(&BTreeSet::new()), "{graph:?}");
}

#[test]
fn planner_events_and_store_depend_on_the_model_not_on_each_other_backwards() {
    let graph = module_graph();
    for (module, forbidden) in [
        ("plan", ["store", "events", "engine"].as_slice()),
        ("events", ["plan", "store", "engine"].as_slice()),
        ("model", ["plan", "store", "events", "engine"].as_slice()),
    ] {
        let deps = &graph[module];
        for f in forbidden {
            assert!(!deps.contains(*f), "`{module}` imports `{f}`: {deps:?}");
        }
    }
}

#[test]
fn the_backend_neutral_engine_names_no_sqlite_item() {
    for dir in ["engine", "worker"] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
        for (rel, text) in rust_files(&src) {
            assert!(
                !text.contains("sqlite"),
                "{dir}/{rel} names the SQLite backend"
            );
        }
    }
}

/// What the decision core (`machine`) and the planner (`plan`) may never name: anything that
/// does I/O or reads a clock.
const IO: &[&str] = &[
    "tokio",
    "SystemTime",
    "Instant",
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::env",
    "crate::clock",
    "crate::vcs",
    "dyn Store",
    "store::Store",
    "store::sqlite",
    "rusqlite",
    "spawn",
];

#[test]
fn the_decision_core_and_the_planner_cannot_do_io_or_read_a_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for dir in ["machine", "plan"] {
        for (rel, text) in rust_files(&src.join(dir)) {
            let Some(code) = non_test_source(&rel, &text) else {
                continue;
            };
            for word in IO {
                assert!(
                    !code.contains(word),
                    "{dir}/{rel} names `{word}`: the decision core does no I/O"
                );
            }
        }
    }
}

#[test]
fn engine_modules_import_explicitly() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for dir in ["engine", "machine", "plan", "worker", "store"] {
        for (rel, text) in rust_files(&src.join(dir)) {
            let Some(code) = non_test_source(&rel, &text) else {
                continue;
            };
            assert!(
                !code.contains("use super::*"),
                "{dir}/{rel} imports everything of its parent"
            );
        }
    }
}
