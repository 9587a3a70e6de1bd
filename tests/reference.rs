//! The reference cannot drift from the code: every compile error it quotes is what rustc prints
//! for a trybuild case (whose `.stderr` the `ui` test compares with the compiler), and every case
//! is quoted. Run errors are asserted by the reference's own doctests.

use std::collections::BTreeSet;
use std::path::Path;

const ERRORS_PAGE: &str = "src/reference/errors.rs";

/// The ```text blocks of a `//!` page, each as lines without the comment prefix.
fn text_blocks(page: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut open: Option<Vec<String>> = None;
    for line in page.lines() {
        let Some(doc) = line.trim_start().strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        match (&mut open, doc.trim()) {
            (None, "```text") => open = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(open.take()),
            (Some(b), _) => b.push(doc.trim_end().to_owned()),
            (None, _) => {}
        }
    }
    blocks
}

/// The trybuild case a quote comes from: its first `--> tests/ui/NAME.rs` line.
fn case_of(block: &[String]) -> Option<String> {
    block.iter().find_map(|l| {
        let path = l.trim().strip_prefix("--> tests/ui/")?;
        let (name, _) = path.split_once(".rs:")?;
        Some(name.to_owned())
    })
}

#[test]
fn every_compile_error_the_reference_quotes_is_what_rustc_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join(ERRORS_PAGE)).unwrap();
    let blocks = text_blocks(&page);
    let mut quoted = BTreeSet::new();
    for block in &blocks {
        let Some(case) = case_of(block) else { continue };
        let stderr_path = root.join(format!("tests/ui/{case}.stderr"));
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_else(|e| {
            panic!(
                "{ERRORS_PAGE} quotes `{case}`, but {}: {e}",
                stderr_path.display()
            )
        });
        let stderr: Vec<&str> = stderr.lines().map(str::trim_end).collect();
        let found = stderr
            .windows(block.len())
            .any(|w| w.iter().zip(block).all(|(a, b)| a == b));
        assert!(
            found,
            "{ERRORS_PAGE} quotes an error of tests/ui/{case}.rs that its .stderr does not have:\n{}\n--- the .stderr:\n{}",
            block.join("\n"),
            stderr.join("\n")
        );
        quoted.insert(case);
    }
    let cases: BTreeSet<String> = std::fs::read_dir(root.join("tests/ui"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".stderr").map(str::to_owned)
        })
        .collect();
    let missing: Vec<&String> = cases.difference(&quoted).collect();
    assert!(
        missing.is_empty(),
        "compile errors with a trybuild case that {ERRORS_PAGE} does not quote: {missing:?}"
    );
    assert!(quoted.len() >= 20, "only {} quotes found", quoted.len());
}
